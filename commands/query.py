"""Search a store: dense vectors, full-text (BM25) and their fusion, for many queries at once.

The model and its query prompt come from the table's ``arrowsmith.model`` metadata, so a
caller never names a model. All queries are embedded in one batch and, in vector mode, sent
to LanceDB as one multi-vector search. Hybrid search runs both lists to a candidate depth and
fuses them here in numpy (LanceDB's own hybrid reranker would hide the per-list scores).

Scores (documented in docs/query.md):
  vector  cosine similarity in [-1, 1], whatever metric the vector index was built with
  fts     BM25 (LanceDB's inverted index), unbounded, comparable within one query only
  hybrid  mix (default): alpha * z(dense) + (1 - alpha) * z(bm25), each list z-normalised over its
          candidates; rrf: sum of 1 / (rrf_k + rank) over the two lists (rank from 1)
  rerank  maxsim: MaxSim (token vectors); maxsim-mix / maxsim-rrf: MaxSim's scores as one more list,
          mixed with the first stage's lists (equal weights) / fused by RRF
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from . import spaces
from .errors import DataError, UsageError
from .query_vectors import dense_query_vectors, query_token_vectors
from .schemas import MODEL, read_meta, stage_metadata
from .spaces import dense, multi

log = logging.getLogger("arrowsmith.query")

MODES = ("auto", "vector", "fts", "hybrid", "maxsim")
# --rerank maxsim without :N: MaxSim over this many first-stage candidates per query. On Cranfield
# and the LIMIT-style set the relevant chunks that BM25 or the dense vector find at all are within
# their first 100 (benchmarks/RESULTS.md); scoring 100 chunks' tokens costs a few ms
RERANK_DEPTH = 100
# maxsim: order the candidates by MaxSim; maxsim-rrf / maxsim-mix: MaxSim's scores as one more list,
# fused with the first stage's own lists (dense and BM25 for hybrid) by RRF / by an equal-weight
# mix of z-scores: a rerank that keeps what a first-stage list knows that token vectors do not.
# The mix keeps the scores' margins where RRF keeps only ranks, so a list that is noise for a query
# (dense on "who likes X?") cannot outvote two that agree (benchmarks/RESULTS.md, "Issue 19")
RERANKERS = ("maxsim", "maxsim-rrf", "maxsim-mix")
FUSIONS = ("rrf", "mix")
BYS = ("chunk", "doc")
# hybrid's default fusion: z-scores mixed (alpha 0.5) tie RRF on Cranfield (nDCG@10 0.4193 vs 0.4194)
# and keep a list that is right when the other is noise: 0.9933 vs RRF's 0.5441 on the LIMIT-style
# set, where BM25 alone is 0.9933 (docs/query.md; benchmarks/RESULTS.md "Issue 19"). RRF keeps only
# ranks, so the dense list's confident-looking noise outvotes BM25's large score margins.
DEFAULT_FUSION = "mix"
HYBRID_DEPTH_MIN = 50  # candidates per list before fusion: max(4 k, 50)
HYBRID_DEPTH_FACTOR = 4
# IVF_PQ defaults (no --nprobes / --refine-factor given), measured on a generated 200k × 384
# clustered table (benchmarks/query.py, 447 partitions, 48 sub-vectors): recall@10 vs exact is
# 0.55 from PQ codes alone at any nprobes, and with refine 10: 0.964 at 20 probes, 0.989 at 40.
# Real vectors (a static model's, 256-d; benchmarks/scale.py) need more of both: refine 30, and
# probes growing with the partitions, slower than a fixed fraction of them: recall@10 0.911 at 64
# of 318 partitions (100k rows; 0.846 at a tenth), 0.914 at 101 of 1,007 (1M rows; 0.943 at 201,
# ~3 ms more), refine 20 losing 0.03 (benchmarks/RESULTS.md, "Issue 20: query latency"); with
# the partitions `index` makes now (≥ 4,096 rows each, which LanceDB's fold-in keeps), 0.925 at
# 63 of 248 (1M rows, p50 16.8 ms), 0.903 at 8 of 25 (100k). So: re-rank 30·k candidates on
# full vectors, probe 4·√partitions (63 of 248 at a million), never fewer than LanceDB's own 20
# (20 of the 24 at 100k rows).
DEFAULT_PQ_REFINE = 30
PQ_PROBES_PER_ROOT_PARTITION = 4
TOKEN_PQ_PROBE_FRACTION = 1 / 10  # the token index's partitions probed per query token
MIN_NPROBES = 20  # LanceDB's own default
# IVF_HNSW_* (what `index` builds by default above 100k rows), no --ef given: LanceDB's own ef
# reached recall@10 0.46 on the generated 100k table; ef 300: 0.91, 500: 0.94, 1000: 0.96.
DEFAULT_HNSW_EF = 500
HIDDEN_COLUMNS = (*spaces.COLUMNS, "doc_key")  # stored, but not what a reader of results wants
_UNLOADED = object()


@dataclass
class QueryStats:
    queries: int = 0
    rows: int = 0
    mode: str = "vector"
    compressed: bool = False
    embed_s: float = 0.0
    search_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        total = self.embed_s + self.search_s
        qps = self.queries / total if total else 0.0
        via = " (compressed index)" if self.compressed else ""
        return (f"query: {self.queries} queries, {self.rows} results, mode {self.mode}{via}; "
                f"embed {self.embed_s:.2f}s, search {self.search_s:.2f}s ({qps:.3g} queries/s)")


@dataclass
class Hits:
    """One query's ranked list: row ids (the table's `id`) and scores, best first; after a rerank,
    each hit's rank (from 1) and score in the first stage too."""

    ids: list[str]
    scores: np.ndarray
    first_ranks: np.ndarray | None = None
    first_scores: np.ndarray | None = None

    def take(self, idx) -> Hits:
        idx = np.asarray(idx, dtype=np.int64)
        return Hits([self.ids[j] for j in idx], self.scores[idx],
                    None if self.first_ranks is None else self.first_ranks[idx],
                    None if self.first_scores is None else self.first_scores[idx])


def parse_rerank(spec: str | None) -> tuple[str, int] | None:
    """``maxsim`` or ``maxsim:N`` → ("maxsim", N); None for no rerank."""
    if not spec:
        return None
    name, _, depth = spec.partition(":")
    if name not in RERANKERS:
        raise UsageError(f"--rerank {spec!r}: choose maxsim[:N], maxsim-rrf[:N] or maxsim-mix[:N]")
    try:
        n = int(depth) if depth else RERANK_DEPTH
    except ValueError:
        raise UsageError(f"--rerank {spec!r}: N must be a whole number of candidates") from None
    if n < 1:
        raise UsageError(f"--rerank {spec!r}: N must be at least 1")
    return name, n


# ------------------------------------------------------------------ public API


def search(db, queries: Sequence[str] | Sequence[tuple[str, str]], *, table: str = "chunks",
           mode: str = "vector", k: int = 10, fusion: str = DEFAULT_FUSION, rrf_k: float = 60,
           alpha: float = 0.5, where: str | None = None, by: str = "chunk", nprobes: int | None = None,
           refine_factor: int | None = None, ef: int | None = None, exact: bool = False,
           use_compressed: bool | None = None, model=None, query_vectors: np.ndarray | None = None,
           rerank: str | None = None, stats: QueryStats | None = None) -> pa.Table:
    """Top ``k`` results per query as one table: query_id, rank, score, id, doc_id, text + metadata.

    One call, one :class:`Searcher` (its arguments are split between the searcher's and
    :meth:`Searcher.search`'s, which documents them); a caller searching one table many times keeps
    a Searcher instead. A data or index file deleted from under the table is a StorageError (exit
    74) naming it.
    """
    from .store import read_errors

    with read_errors(db, table):
        searcher = Searcher(db, table, model=model, nprobes=nprobes, refine_factor=refine_factor, ef=ef,
                            exact=exact, use_compressed=use_compressed)
        return searcher.search(queries, mode=mode, k=k, fusion=fusion, rrf_k=rrf_k, alpha=alpha, where=where,
                               by=by, query_vectors=query_vectors, rerank=rerank, stats=stats)


def read_queries_file(source: str, start: int = 1) -> list[tuple[str, str]]:
    """(id, text) pairs from a file or ``-`` (stdin): a table with a ``text`` column and an
    optional ``id`` (or BEIR's ``_id``) column, in any format `arrowsmith` reads, or plain text,
    one query per line. Queries without an id are numbered ``q<start>``, ``q<start + 1>``, …;
    two queries with one id are a DataError."""
    from .io import format_of, read_batches, read_bytes, sniff

    if source == "-":
        if sys.stdin.isatty():
            raise UsageError("--file -: stdin is a terminal; pipe queries in")
        data = sys.stdin.buffer.read()  # queries are small: read them whole, then sniff
        fmt = _delimited_header(data) or sniff(data[:256])
        pairs = _query_lines(data, "<stdin>", start) if fmt is None else \
            _queries_of(read_bytes(data, fmt), "<stdin>", start)
    elif format_of(source) is None:  # .txt, .queries, no extension: one query per line
        try:
            with open(source, "rb") as f:
                pairs = _query_lines(f.read(), source, start)
        except FileNotFoundError:
            raise UsageError(f"{source}: no such file") from None
    else:
        pairs = _queries_of(read_batches(source), source, start)
    seen: set[str] = set()
    for qid, _ in pairs:
        if qid in seen:
            raise DataError(f"{'<stdin>' if source == '-' else source}: two queries have the id {qid!r}")
        seen.add(qid)
    return pairs


def _delimited_header(data: bytes) -> str | None:
    """"csv" or "tsv" when the first line is a header naming a ``text`` column, else None."""
    first = data.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").strip()
    for delimiter, fmt in (("\t", "tsv"), (",", "csv")):
        columns = [c.strip().strip('"') for c in first.split(delimiter)]
        if len(columns) > 1 and "text" in columns:
            return fmt
    return None


def _query_lines(data: bytes, source: str, start: int) -> list[tuple[str, str]]:
    texts = []
    for lineno, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
        except UnicodeDecodeError as e:
            raise DataError(f"{source}: line {lineno}: not valid UTF-8 (byte {e.start} of the line)"
                            ) from None
        if line:
            texts.append(line)
    return [(f"q{start + i}", t) for i, t in enumerate(texts)]


def _queries_of(batches, source: str, start: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for batch in batches:
        names = batch.schema.names
        if "text" not in names:
            raise DataError(f"{source}: queries need a 'text' column (it has: {', '.join(names)})")
        texts = batch.column("text").to_pylist()
        id_col = "id" if "id" in names else "_id" if "_id" in names else None
        ids = batch.column(id_col).to_pylist() if id_col else [None] * len(texts)
        for qid, text in zip(ids, texts, strict=True):
            out.append((str(qid) if qid is not None else f"q{start + len(out)}", text or ""))
    return out


# ------------------------------------------------------------------ checks and inputs


def _check_options(mode: str, fusion: str, by: str, k: int, alpha: float, rrf_k: float) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r} (use {'|'.join(MODES)})")
    if fusion not in FUSIONS:
        raise UsageError(f"unknown fusion {fusion!r} (use {'|'.join(FUSIONS)})")
    if by not in BYS:
        raise UsageError(f"unknown --by {by!r} (use {'|'.join(BYS)})")
    if k < 1:
        raise UsageError(f"--k must be at least 1 (got {k})")
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1] (got {alpha})")
    if rrf_k < 0:
        raise UsageError(f"--rrf-k must be ≥ 0 (got {rrf_k})")


def _split_queries(queries) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    for i, q in enumerate(queries, start=1):
        qid, text = (f"q{i}", q) if isinstance(q, str) else (str(q[0]), q[1])
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"query {qid} is empty")
        ids.append(qid)
        texts.append(text)
    return ids, texts


def _check_where(tbl, where: str) -> None:
    """Plan a one-row scan with the filter, so a bad filter fails before any work, exit 2."""
    if _has_statement_separator(where):
        # LanceDB parses up to the ';' and silently drops the rest: refuse rather than guess
        raise UsageError(f"bad --where filter {where!r}: ';' outside a quoted string",
                         hint="one SQL expression, e.g. \"doc_id = 'a.md' AND chunk > 2\"")
    try:
        tbl.search().where(where).select(["id"]).limit(1).to_arrow()
    except Exception as e:  # noqa: BLE001 - LanceDB raises ValueError/RuntimeError/OSError variously
        hint = "an SQL expression over the table's columns, e.g. \"doc_id = 'a.md'\""
        raise UsageError(f"bad --where filter {where!r}: {_error_line(e)}", hint=hint) from None


def _has_statement_separator(where: str) -> bool:
    quote = None
    for ch in where:
        if quote:
            if ch == quote:  # '' inside a string ends and reopens it: same result
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == ";":
            return True
    return False


def _error_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def auto_mode(has_fts: bool, has_tokens: bool) -> tuple[str, tuple[str, int] | None]:
    """What ``--mode auto`` searches: (first stage, rerank). Without token vectors, hybrid (the
    default fusion, mix) when the table has a full-text index, else vector. With them and a full-text
    index: hybrid's dense and BM25 candidates (100 each), their scores mixed with MaxSim's over the
    union (``maxsim-mix:100``): the best measured on both Cranfield (0.4192; hybrid 0.4194) and the
    LIMIT-style set (0.9933, BM25's; RRF fusions lose 0.1-0.45 there) (benchmarks/RESULTS.md "Issue
    19"). Without a full-text index: dense candidates ordered by MaxSim."""
    if has_tokens:
        return ("hybrid", ("maxsim-mix", RERANK_DEPTH)) if has_fts else ("vector", ("maxsim", RERANK_DEPTH))
    return ("hybrid" if has_fts else "vector"), None


def default_nprobes(partitions: int) -> int:
    """IVF partitions a dense IVF_PQ search probes when --nprobes is not given: 4·√partitions, at
    least 20 (LanceDB's own default), at most all of them."""
    probes = math.ceil(PQ_PROBES_PER_ROOT_PARTITION * math.sqrt(partitions))
    return min(max(1, partitions), max(MIN_NPROBES, probes))


def _cut(hits: Hits, depth: int) -> Hits:
    return hits.take(np.arange(min(depth, len(hits.ids))))


# ------------------------------------------------------------------ the searcher


class Searcher:
    """One table opened for searching, kept between searches: the open table, its indexes and
    their tuning, its compressed representation, its query model, and what searches learnt (each
    chunk's document, each candidate's row id). ``query`` makes one per call; ``eval`` keeps one per
    configuration, and a server keeps one per table and calls :meth:`search` for each request
    (:meth:`refresh` picks up what writers committed since).

    ``nprobes``/``refine_factor``/``ef`` tune the table's ANN index (an option the table's search
    would ignore is exit 2); ``exact`` scans every vector; ``use_compressed`` True searches the
    table's ``compress`` representation when it has one, False never, None (the default) only when
    the table has no ANN index on its vectors (:meth:`compressed`); ``model`` replaces the table's
    own query model.
    """

    def __init__(self, db, table: str = "chunks", *, model=None, nprobes: int | None = None,
                 refine_factor: int | None = None, ef: int | None = None, exact: bool = False,
                 use_compressed: bool | None = None):
        self.db, self.table, self.model = db, table, model
        self.tuning = (nprobes, refine_factor, ef)
        self.exact, self.use_compressed = exact, use_compressed
        from .store import open_table

        self.tbl = open_table(db, table)
        self._load()

    def _token_codec(self) -> multi.TokenSettings:
        """The token settings, with the table's codebook when its precision has one (loaded when
        token vectors are first decoded: a dense-only search does not need the file)."""
        if self._decodable_tokens is None:
            self._decodable_tokens = multi.settings_of(self.model_meta, self.db, self.table)
        return self._decodable_tokens

    def _load(self) -> None:
        """What the searcher knows of the table's current version."""
        tbl = self.tbl
        self.version = tbl.version
        self._schema = tbl.schema  # a round trip to LanceDB's event loop per read
        self.meta = read_meta(self._schema)
        model_meta = self.meta.get(MODEL)
        self.model_meta = model_meta if isinstance(model_meta, dict) else None
        self.tokens = multi.settings_of(self.model_meta) if self.model_meta else None
        self._decodable_tokens: multi.TokenSettings | None = None  # with a fitted codec's codebook
        self.has_fts = _has_fts(tbl)
        self.columns = [c for c in self._schema.names if c not in HIDDEN_COLUMNS]
        self.index_type, self.metric = _vector_index(tbl)
        nprobes, refine_factor, ef = self.tuning
        self.nprobes, self.refine_factor, self.ef = nprobes, refine_factor, ef
        if self.index_type == "IVF_PQ":
            partitions = _partitions(self.db, self.table, tbl)
            self.nprobes = nprobes or default_nprobes(partitions)
            self.refine_factor = refine_factor or DEFAULT_PQ_REFINE
        elif (self.index_type or "").startswith("IVF_HNSW"):
            self.ef = ef or DEFAULT_HNSW_EF
        # (nprobes, refine) of the token index `index` builds (IVF_PQ): --mode maxsim probes each query
        # token's partitions, then re-scores the candidates' full MaxSim, as dense IVF_PQ re-ranks
        self.token_tuning = None
        if self.tokens is not None and any(ix.name == multi.INDEX_NAME for ix in tbl.list_indices()):
            partitions = _partitions(self.db, self.table, tbl, "tokens_spec")
            probes = math.ceil(partitions * TOKEN_PQ_PROBE_FRACTION)
            self.token_tuning = (nprobes or max(MIN_NPROBES, probes), refine_factor or DEFAULT_PQ_REFINE)
        self._compressed: Any = _UNLOADED
        self.rows = tbl.count_rows()
        self.doc_of: dict[str, str] = {}  # chunk id -> doc_id, learnt from every search (for --by doc)
        # chunk id -> LanceDB row id, learnt from first stages: results and a rerank's tokens are taken
        # by it; valid for this version of the table (row ids move on compaction)
        self.row_of: dict[str, int] = {}
        self._result_rows: pa.Table | None = None  # the output columns of the last dense(with_rows=True)

    def refresh(self) -> bool:
        """Move to the table's newest version (what writers committed since); True if it changed."""
        self.tbl.checkout_latest()
        if self.tbl.version == self.version:
            return False
        self._load()
        return True

    @property
    def compressed(self):
        """The table's compressed representation that dense search reads, or None; loaded once.

        By default not where the table has an ANN index on its vectors: the index is a compressed
        first stage too, re-ranked on the full vectors, and measured better and faster than binary
        codes + rescore 100 at 100k and a million rows (benchmarks/RESULTS.md, "Issue 20: query
        latency"). ``use_compressed=True`` (``--compressed``) searches the codes all the same."""
        if self._compressed is _UNLOADED:
            wanted = not self.exact and (self.use_compressed is True
                                         or (self.use_compressed is None and self.index_type is None))
            if self.use_compressed is None and self.index_type is not None and not self.exact \
                    and _has_compressed(self.db, self.table):
                log.info("searching the %s index of %s, not its compressed codes (--compressed searches "
                         "them)", self.index_type, self.table)
            self._compressed = _load_compressed(self.db, self.table) if wanted else None
        return self._compressed

    def search(self, queries: Sequence[str] | Sequence[tuple[str, str]], *, mode: str = "vector", k: int = 10,
               fusion: str = DEFAULT_FUSION, rrf_k: float = 60, alpha: float = 0.5, where: str | None = None,
               by: str = "chunk", query_vectors: np.ndarray | None = None, rerank: str | None = None,
               stats: QueryStats | None = None) -> pa.Table:
        """Top ``k`` results per query as one table: query_id, rank, score, id, doc_id, text + metadata.

        ``queries`` are texts (ids q1..qn) or (id, text) pairs. ``by="doc"`` returns the best chunk
        of each of ``k`` distinct documents. ``query_vectors`` skips embedding (one row per query).
        ``mode="auto"`` is hybrid (RRF) when the table has a full-text index, else vector: hybrid
        scored best on Cranfield (nDCG@10 0.420 vs 0.382 dense, docs/query.md); on a table with
        token vectors (``embed --multivector``) see :func:`auto_mode`.
        ``rerank="maxsim[:N]"``: N first-stage candidates per query, ordered by MaxSim over their
        token vectors; ``"maxsim-mix[:N]"`` / ``"maxsim-rrf[:N]"``: MaxSim's scores as one more list,
        mixed (z-scores, equal weights) / fused by RRF with the first stage's own lists; the output
        then has ``first_rank`` and ``first_score`` too.
        ``mode="maxsim"``: MaxSim over the whole table.
        """
        from .store import read_errors

        with read_errors(self.db, self.table):
            return self._search(queries, mode=mode, k=k, fusion=fusion, rrf_k=rrf_k, alpha=alpha,
                                where=where, by=by, query_vectors=query_vectors, rerank=rerank, stats=stats)

    def _search(self, queries, *, mode: str, k: int, fusion: str, rrf_k: float, alpha: float,
                where: str | None, by: str, query_vectors: np.ndarray | None, rerank: str | None,
                stats: QueryStats | None) -> pa.Table:
        _check_options(mode, fusion, by, k, alpha, rrf_k)
        reranker = parse_rerank(rerank)
        ids, texts = _split_queries(queries)
        stats = stats if stats is not None else QueryStats()
        if mode == "auto":
            mode, auto_rerank = auto_mode(self.has_fts, self.tokens is not None)
            reranker = reranker or auto_rerank
        if (reranker or mode == "maxsim") and self.tokens is None:
            what = "--mode maxsim" if mode == "maxsim" else "--rerank maxsim"
            raise UsageError(f"{what}: table {self.table!r} has no token vectors", hint=(
                f"rebuild it with `arrowsmith embed --multivector --db {self.db} --table {self.table} "
                "--replace`"))
        if mode == "maxsim" and reranker:
            raise UsageError("--rerank with --mode maxsim: the whole table is already ranked by MaxSim")
        stats.queries, stats.mode = len(ids), mode + (f"+{reranker[0]}:{reranker[1]}" if reranker else "")
        if where:
            _check_where(self.tbl, where)
        _refuse_unused_tuning(self, mode)
        vectors = q_tokens = None
        if ids:
            t0 = time.perf_counter()
            if mode not in ("fts", "maxsim"):
                vectors = self._query_vectors(texts, query_vectors, ids)
            if reranker or mode == "maxsim":
                q_tokens = query_token_vectors(texts, self.model_meta, self.model, ids)
            stats.embed_s = time.perf_counter() - t0
        t0 = time.perf_counter()

        def first_stage(depth: int, todo: list[int]) -> list[Hits]:
            if mode == "maxsim":
                return [self.maxsim_all(q_tokens[i], depth, where) for i in todo]
            return _ranked(self, mode, texts, vectors, todo, depth, k, fusion, rrf_k, alpha, where)

        def ranked(depth: int, todo: list[int]) -> list[Hits]:
            if reranker is None:
                return first_stage(depth, todo)
            if reranker[0] == "maxsim":
                first = first_stage(max(depth, reranker[1]), todo)
                return [_cut(self.rerank_maxsim(q_tokens[i], hits), depth)
                        for i, hits in zip(todo, first, strict=True)]
            lists = _first_stage_lists(self, mode, texts, vectors, todo, max(depth, reranker[1]), k, where)
            out = []
            for i, parts in zip(todo, lists, strict=True):
                first = _fused(parts, fusion, rrf_k, alpha)  # the candidates, and the ranks reported
                by_maxsim = self.rerank_maxsim(q_tokens[i], first)
                fuse = _rrf if reranker[0] == "maxsim-rrf" else _mix_equal
                out.append(_cut(_with_first(fuse([*parts, by_maxsim], rrf_k), first), depth))
            return out

        hits = _collect(ranked, len(ids), k, by, self)
        params = _params(mode, k, fusion, rrf_k, alpha, where, by)
        if reranker:
            params["rerank"] = f"{reranker[0]}:{reranker[1]}"
        result = _assemble(self, ids, hits, self.meta, params)
        stats.search_s = time.perf_counter() - t0
        dense_searched = mode in ("vector", "hybrid")
        stats.rows, stats.compressed = result.num_rows, dense_searched and self.compressed is not None
        return result

    def _query_vectors(self, texts: list[str], given, ids: Sequence[str]) -> np.ndarray:
        if given is None:
            return dense_query_vectors(texts, self.model_meta, self.model, ids)
        vectors = np.asarray(given, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise UsageError(f"query_vectors must be [{len(texts)}, dim], got {vectors.shape}")
        return vectors

    def dense(self, vectors: np.ndarray, depth: int, where: str | None = None,
              with_rows: bool = False) -> list[Hits]:
        """Each query's best ``depth`` rows by the dense vector. ``with_rows``: the hits are the
        results (no fusion, no rerank, no deeper search follows), so the search reads their output
        columns too and :meth:`rows_for` takes them from there: LanceDB reads them for the hits
        only, and a second read of the same rows cost 3-8 ms of a 20-26 ms query at 1M rows."""
        if self.compressed is not None:
            out = self.compressed.search(vectors, depth, where=where)
            return [Hits(list(ids), np.asarray(scores, np.float32)) for ids, scores in out]
        q = self.tbl.search(vectors if len(vectors) > 1 else vectors[0], vector_column_name=dense.COLUMN)
        q = q.distance_type(self.metric)
        # naming _distance keeps lance quiet
        q = q.select([*(self.columns if with_rows else ["id", "doc_id"]), "_distance"]).limit(depth)
        q = q.with_row_id(True)  # the results' rows (and a rerank's tokens) are then taken by row id
        if where:
            q = q.where(where, prefilter=True)
        if self.exact:
            q = q.bypass_vector_index()
        else:
            q = _tune(q, self.nprobes, self.refine_factor, self.ef and max(self.ef, depth))
        res = q.to_arrow()
        if with_rows:
            self._result_rows = res.select(self.columns)
        qi = (res["query_index"].to_numpy() if "query_index" in res.column_names
              else np.zeros(res.num_rows, np.int32))
        scores = _cosine(res["_distance"].to_numpy(zero_copy_only=False), self.metric)
        row_ids = res["id"].to_pylist()
        self.doc_of.update(zip(row_ids, res["doc_id"].to_pylist(), strict=True))
        self._learn_row_ids(res)
        out = []
        for i in range(len(vectors)):
            sel = np.flatnonzero(qi == i)  # LanceDB returns each query's rows best first
            out.append(Hits([row_ids[j] for j in sel], scores[sel]))
        return out

    def fts(self, text: str, depth: int, where: str | None = None) -> Hits:
        q = self.tbl.search(text, query_type="fts").select(["id", "doc_id", "_score"]).limit(depth)
        q = q.with_row_id(True)
        if where:
            q = q.where(where, prefilter=True)
        try:
            res = q.to_arrow()
        except ValueError as e:
            if "INVERTED index" in str(e) or "full text search" in str(e).lower():
                hint = f"arrowsmith index --db {self.db} (builds it), or --mode vector"
                raise UsageError("the table has no full-text (BM25) index on 'text'", hint=hint) from None
            raise
        ids = res["id"].to_pylist()
        self.doc_of.update(zip(ids, res["doc_id"].to_pylist(), strict=True))
        self._learn_row_ids(res)
        return Hits(ids, res["_score"].to_numpy(zero_copy_only=False).astype(np.float32))

    def _learn_row_ids(self, res: pa.Table) -> None:
        if "_rowid" in res.column_names:
            self.row_of.update(zip(res["id"].to_pylist(), res["_rowid"].to_pylist(), strict=True))

    def token_rows(self, ids: list[str]) -> pa.Table:
        """(id, tokens) of these chunks (:meth:`rows_for`)."""
        return self.rows_for(ids, columns=["id", multi.COLUMN])

    def rerank_maxsim(self, query: np.ndarray, hits: Hits) -> Hits:
        """The first stage's candidates ordered by MaxSim; their first-stage rank and score kept."""
        if not hits.ids:
            return Hits([], np.empty(0, np.float32), np.empty(0, np.int32), np.empty(0, np.float32))
        rows = self.token_rows(hits.ids)
        pos = {rid: i for i, rid in enumerate(rows["id"].to_pylist())}
        tokens, offsets = multi.decode(rows[multi.COLUMN], self._token_codec())
        scores = multi.maxsim([query], tokens, offsets)[0]
        # a candidate deleted since the first stage scores below every other
        mine = np.array([scores[pos[r]] if r in pos else -np.inf for r in hits.ids], np.float32)
        order = np.argsort(-mine, kind="stable")  # ties keep the first stage's order
        return Hits([hits.ids[j] for j in order], mine[order], (order + 1).astype(np.int32),
                    np.asarray(hits.scores, np.float32)[order])

    def maxsim_all(self, query: np.ndarray, depth: int, where: str | None = None) -> Hits:
        """MaxSim over the whole table: LanceDB's multivector search for float token vectors (through
        the token index when `index` built one), an exhaustive scan in bounded batches for packed
        ones (LanceDB's reads floats only)."""
        if len(query) == 0:
            return Hits([], np.empty(0, np.float32))
        if self.tokens.precision in multi.FLOAT_PRECISIONS:
            q = self.tbl.search(query, vector_column_name=multi.COLUMN).distance_type("cosine")
            q = q.select(["id", "doc_id", "_distance"]).limit(depth)
            if where:
                q = q.where(where, prefilter=True)
            if self.exact:
                q = q.bypass_vector_index()
            elif self.token_tuning:
                q = _tune(q, *self.token_tuning, None)
            res = q.to_arrow()
            ids = res["id"].to_pylist()
            self.doc_of.update(zip(ids, res["doc_id"].to_pylist(), strict=True))
            # LanceDB's multivector distance is Σ over query tokens of (1 − best cosine)
            dist = res["_distance"].to_numpy(zero_copy_only=False).astype(np.float32)
            return Hits(ids, 1.0 - dist / len(query))
        from .store import SCAN_ROWS

        best_ids: list[str] = []
        best = np.empty(0, np.float32)
        scan = self.tbl.search()
        if where:
            scan = scan.where(where)
        for batch in scan.select(["id", "doc_id", multi.COLUMN]).limit(None).to_batches(SCAN_ROWS):
            tokens, offsets = multi.decode(batch.column(multi.COLUMN), self._token_codec())
            scores = multi.maxsim([query], tokens, offsets)[0]
            keep = np.argsort(-scores, kind="stable")[:depth]
            ids, docs = batch.column("id").to_pylist(), batch.column("doc_id").to_pylist()
            self.doc_of.update((ids[j], docs[j]) for j in keep.tolist())
            best_ids += [ids[j] for j in keep]
            best = np.concatenate([best, scores[keep]])
            top = np.argsort(-best, kind="stable")[:depth]
            best_ids, best = [best_ids[j] for j in top], best[top]
        return Hits(best_ids, best)

    def rows_for(self, ids: list[str], columns: list[str] | None = None) -> pa.Table:
        """The stored rows (minus vectors) of these ids, in no particular order: taken by the row ids
        a first stage returned (a read of those rows only), else found by id (a filtered scan of the
        id column: about 95 of a query's 125 ms at a million rows; the compressed codes give ids only)."""
        from .store import id_filters

        columns = columns or self.columns
        if not ids:
            return pa.table({c: pa.array([], self._schema.field(c).type) for c in columns})
        if columns == self.columns and self._result_rows is not None:  # dense(with_rows=True)'s
            at = {rid: i for i, rid in enumerate(self._result_rows["id"].to_pylist())}
            if all(i in at for i in ids):
                return self._result_rows.take(pa.array([at[i] for i in ids], pa.int64()))
        known = [self.row_of[i] for i in ids if i in self.row_of]
        parts = [self.tbl.take_row_ids(known).select(columns).to_arrow()] if known else []
        rest = [i for i in ids if i not in self.row_of]
        parts += [self.tbl.search().where(where).select(columns).limit(len(part)).to_arrow()
                  for part, where in id_filters(rest)]
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def _refuse_unused_tuning(searcher: Searcher, mode: str) -> None:
    """ANN settings that this search would ignore are exit 2 (issue 10)."""
    nprobes, refine_factor, ef = searcher.tuning
    given = [f for f, v in (("--nprobes", nprobes), ("--refine-factor", refine_factor), ("--ef", ef))
             if v is not None]
    if not given or searcher.exact:
        return
    if mode == "maxsim" and searcher.token_tuning:
        if ef is not None:
            raise UsageError("--ef: no effect on the token index (IVF_PQ)",
                             hint="--nprobes and --refine-factor tune it")
        return
    if mode not in ("vector", "hybrid"):
        raise UsageError(f"{', '.join(given)}: no effect, --mode {mode} searches no vector index",
                         hint="--mode vector or hybrid, or leave them out")
    if searcher.compressed is not None:
        raise UsageError(f"{', '.join(given)}: no effect, the table's compressed representation "
                         f"({searcher.compressed.method}) is searched", hint="--no-compressed")
    if searcher.index_type is None:
        raise UsageError(f"{', '.join(given)}: no effect, the table has no vector index (a flat scan)",
                         hint="arrowsmith index --type ivf_pq, or leave them out")
    if ef is not None and not searcher.index_type.startswith("IVF_HNSW"):
        raise UsageError(f"--ef: no effect on the table's {searcher.index_type} index (it is an HNSW "
                         "search's breadth)", hint="--nprobes and --refine-factor tune IVF_PQ")


def _tune(q, nprobes, refine_factor, ef):
    if nprobes:
        q = q.nprobes(nprobes)
    if refine_factor:
        q = q.refine_factor(refine_factor)
    if ef:
        q = q.ef(ef)
    return q


def _has_fts(tbl) -> bool:
    return any(list(ix.columns) == ["text"] and str(ix.index_type) in ("FTS", "INVERTED")
               for ix in tbl.list_indices())


def _vector_index(tbl) -> tuple[str | None, str]:
    """(index type, metric) of the index on `vector`; (None, "cosine") when there is none."""
    for ix in tbl.list_indices():
        if list(ix.columns) == [dense.COLUMN]:
            kind = {"IvfPq": "IVF_PQ", "IvfHnswSq": "IVF_HNSW_SQ", "IvfHnswPq": "IVF_HNSW_PQ",
                    "IvfFlat": "IVF_FLAT", "IvfSq": "IVF_SQ"}.get(str(ix.index_type), str(ix.index_type))
            try:
                metric = tbl.index_stats(ix.name).distance_type or "cosine"
            except Exception:  # noqa: BLE001 - stats are advisory; cosine is what index builds
                metric = "cosine"
            return kind, metric
    return None, "cosine"


def _partitions(db, table: str, tbl, spec_key: str = "vector_spec") -> int:
    """IVF partitions of the vector (or token) index: as `index` recorded them, else as it chooses
    them for the table's rows."""
    from .store import state_path

    try:
        spec = json.loads(state_path(db, table).read_text()).get(spec_key) or {}
        if spec.get("partitions"):
            return int(spec["partitions"])
    except (OSError, ValueError):
        pass
    return dense.ivf_partitions(tbl.count_rows())


def _cosine(distance: np.ndarray, metric: str) -> np.ndarray:
    """LanceDB distance → cosine similarity (vectors are L2-normalised in the store)."""
    d = distance.astype(np.float32)
    if metric == "l2":
        return 1.0 - d / 2.0  # LanceDB's l2 is squared: |a-b|² = 2 - 2 cos for unit vectors
    return 1.0 - d  # cosine distance, and dot's 1 - a·b


def _load_compressed(db, table: str):
    from .compress import load_compressed

    return load_compressed(db, table)


def _has_compressed(db, table: str) -> bool:
    from .compress.store import companion_name
    from .store import table_exists

    return table_exists(db, companion_name(table))


# ------------------------------------------------------------------ ranking and fusion


def _ranked(searcher: Searcher, mode: str, texts: list[str], vectors, todo: list[int], depth: int,
            k: int, fusion: str, rrf_k: float, alpha: float, where: str | None) -> list[Hits]:
    """Ranked hits for queries ``todo`` at candidate depth ``depth``."""
    return [_fused(parts, fusion, rrf_k, alpha)
            for parts in _first_stage_lists(searcher, mode, texts, vectors, todo, depth, k, where)]


def _fused(parts: list[Hits], fusion: str, rrf_k: float, alpha: float) -> Hits:
    """One first stage's ranked list: its only list, or hybrid's two fused."""
    if len(parts) == 1:
        return parts[0]
    fuse = fuse_rrf if fusion == "rrf" else fuse_mix
    return fuse(*parts, rrf_k=rrf_k, alpha=alpha)


def _first_stage_lists(searcher: Searcher, mode: str, texts: list[str], vectors, todo: list[int],
                       depth: int, k: int, where: str | None) -> list[list[Hits]]:
    """Each query's first-stage ranked lists before any fusion: [dense, BM25] for hybrid."""
    if mode == "vector":  # at depth k these hits are the results (a rerank or --by doc asks deeper)
        return [[h] for h in searcher.dense(vectors[todo], depth, where, with_rows=depth <= k)]
    if mode == "fts":
        return [[searcher.fts(texts[i], depth, where)] for i in todo]
    list_depth = max(depth, HYBRID_DEPTH_FACTOR * k, HYBRID_DEPTH_MIN)
    dense = searcher.dense(vectors[todo], list_depth, where)
    return [[d, searcher.fts(texts[i], list_depth, where)] for i, d in zip(todo, dense, strict=True)]


def _with_first(fused: Hits, first: Hits) -> Hits:
    """``fused`` with each hit's rank and score in ``first``, the first stage's own order."""
    place = {rid: j for j, rid in enumerate(first.ids)}
    ranks = np.array([place.get(r, -1) + 1 for r in fused.ids], np.int32)
    firsts = np.asarray(first.scores, np.float32)
    return Hits(fused.ids, fused.scores, ranks,
                np.array([firsts[r - 1] if r > 0 else np.nan for r in ranks], np.float32))


def fuse_rrf(dense: Hits, sparse: Hits, *, rrf_k: float = 60, **_: Any) -> Hits:
    """Reciprocal rank fusion (Cormack et al., 2009): Σ 1 / (rrf_k + rank), rank from 1."""
    return _rrf([dense, sparse], rrf_k)


def _rrf(lists: list[Hits], rrf_k: float) -> Hits:
    scores: dict[str, float] = {}
    for hits in lists:
        for rank, rid in enumerate(hits.ids, start=1):
            scores[rid] = scores.get(rid, 0.0) + 1.0 / (rrf_k + rank)
    return _sorted(scores)


def fuse_mix(dense: Hits, sparse: Hits, *, alpha: float = 0.5, **_: Any) -> Hits:
    """alpha · z(dense) + (1 − alpha) · z(bm25), z over each list's candidates.

    A candidate missing from one list gets that list's lowest z-score: it ranked below every
    candidate there, and 0 (the mean) would reward it for being absent.
    """
    return _mix([dense, sparse], [alpha, 1 - alpha])


def _mix_equal(lists: list[Hits], _rrf_k: float = 0) -> Hits:
    """``maxsim-mix``: the lists' z-scores summed with equal weights."""
    return _mix(lists, [1.0] * len(lists))


def _mix(lists: list[Hits], weights: list[float]) -> Hits:
    """Σ weight · z(score) over the lists, z over each list's candidates; a candidate missing from a
    list gets that list's lowest z-score (it ranked below every candidate there, and 0, the mean,
    would reward it for being absent). Candidates scored -inf (deleted since) count as missing."""
    parts = []
    for hits in lists:
        raw = np.asarray(hits.scores, dtype=np.float64)
        ok = np.isfinite(raw)
        zs = _z(raw[ok])
        ids = [rid for rid, keep in zip(hits.ids, ok.tolist(), strict=True) if keep]
        parts.append((dict(zip(ids, zs.tolist(), strict=True)), float(zs.min()) if len(zs) else 0.0))
    candidates = dict.fromkeys(rid for mine, _ in parts for rid in mine)
    weighted = list(zip(weights, parts, strict=True))
    return _sorted({rid: sum(w * mine.get(rid, floor) for w, (mine, floor) in weighted)
                    for rid in candidates})


def _z(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return scores
    sd = scores.std()
    return (scores - scores.mean()) / sd if sd > 0 else np.zeros_like(scores)


def _sorted(scores: dict[str, float]) -> Hits:
    ids = list(scores)
    vals = np.fromiter(scores.values(), dtype=np.float64, count=len(ids))
    order = np.argsort(-vals, kind="stable")  # ties keep first-seen order: dense before sparse
    return Hits([ids[i] for i in order], vals[order].astype(np.float32))


# ------------------------------------------------------------------ chunks → documents


def _collect(ranked: Callable[[int, list[int]], list[Hits]], n: int, k: int, by: str,
             searcher: Searcher) -> list[Hits]:
    """k chunks per query, or the best chunk of k distinct documents (fetching deeper as needed)."""
    if n == 0:
        return []
    if by == "chunk":
        return [_cut(h, k) for h in ranked(k, list(range(n)))]
    out: list[Hits | None] = [None] * n
    todo, depth = list(range(n)), 4 * k
    while todo:
        results = ranked(depth, todo)
        _learn_docs(searcher, results)
        left = []
        for i, hits in zip(todo, results, strict=True):
            best = _best_per_doc(hits, searcher.doc_of, k)
            # fewer hits than asked for means the (filtered) table is exhausted
            if len(best.ids) >= k or len(hits.ids) < depth or depth >= searcher.rows:
                out[i] = best
            else:
                left.append(i)
        todo, depth = left, depth * 4
    return out  # type: ignore[return-value]


def _learn_docs(searcher: Searcher, results: list[Hits]) -> None:
    """Document ids of hits that came without them (a compressed index returns chunk ids only)."""
    missing = list({rid for h in results for rid in h.ids if rid not in searcher.doc_of})
    if missing:
        rows = searcher.rows_for(missing)
        searcher.doc_of.update(zip(rows["id"].to_pylist(), rows["doc_id"].to_pylist(), strict=True))


def _best_per_doc(hits: Hits, doc_of: dict[str, str], k: int) -> Hits:
    seen: set[str] = set()
    keep = []
    for j, rid in enumerate(hits.ids):  # hits are best first, so the first chunk seen is the best
        doc = doc_of.get(rid, rid)
        if doc not in seen:
            seen.add(doc)
            keep.append(j)
            if len(keep) == k:
                break
    return hits.take(keep)


# ------------------------------------------------------------------ output table


def _params(mode, k, fusion, rrf_k, alpha, where, by) -> dict[str, Any]:
    p: dict[str, Any] = {"mode": mode, "k": k, "by": by, "where": where}
    if mode == "hybrid":
        p.update(fusion=fusion, rrf_k=rrf_k if fusion == "rrf" else None,
                 alpha=alpha if fusion == "mix" else None)
    return p


def _assemble(searcher: Searcher, query_ids: list[str], hits: list[Hits], meta: dict,
              params: dict[str, Any]) -> pa.Table:
    all_ids = list(dict.fromkeys(rid for h in hits for rid in h.ids))
    rows = searcher.rows_for(all_ids)
    pos = {rid: i for i, rid in enumerate(rows["id"].to_pylist())}
    reranked = "rerank" in params
    take, qids, ranks, scores, first_ranks, first_scores = [], [], [], [], [], []
    for qid, h in zip(query_ids, hits, strict=True):
        rank = 0
        for j, (rid, score) in enumerate(zip(h.ids, h.scores.tolist(), strict=True)):
            if rid not in pos:  # deleted between the search and the fetch: skip, keep ranks dense
                continue
            rank += 1
            take.append(pos[rid])
            qids.append(qid)
            ranks.append(rank)
            scores.append(score)
            if reranked:
                first_ranks.append(int(h.first_ranks[j]))
                first_scores.append(float(h.first_scores[j]))
    body = rows.take(pa.array(take, pa.int64())) if take else rows.slice(0, 0)
    lead = {"query_id": pa.array(qids, pa.string()), "rank": pa.array(ranks, pa.int32()),
            "score": pa.array(scores, pa.float32())}
    if reranked:  # what the rerank changed: each hit's place and score in the first stage
        lead.update(first_rank=pa.array(first_ranks, pa.int32()),
                    first_score=pa.array(first_scores, pa.float32()))
    cols = {**lead, **{c: body[c] for c in ("id", "doc_id", "text") if c in body.column_names}}
    cols.update({c: body[c] for c in body.column_names if c not in cols})
    out = pa.table(cols)
    extra = {"query": params}
    if MODEL in meta:
        extra[MODEL] = meta[MODEL]
    return out.replace_schema_metadata(stage_metadata("query", **extra))
