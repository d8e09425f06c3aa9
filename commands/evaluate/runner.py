"""Run configurations end to end: build (or open) a store, search it, score the runs, compare.

Builds go through the very code the CLI stages use — ``chunk_documents`` → ``embed_batches`` →
``StoreWriter`` (→ the FTS index for fts/hybrid) — in a temporary directory; searches go through
``commands.query.search``. What configurations can share, they share: one model load per model
spec, one set of query vectors per model, one chunking per (model, chunker, max_tokens, overlap)
(so naive and late chunking embed *identical* spans), and one store per build.

``chunker="none"`` is MTEB's setting: one chunk per document, cut at the model's window exactly
where sentence-transformers truncates (the first ``max_seq_length - 2`` tokens for BERT-likes).
The cut is made at the character end of the last kept token; the number of truncated documents
is reported, never hidden.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from arrowsmith.commands.errors import UsageError
from arrowsmith.commands.keys import text_hash
from arrowsmith.commands.spaces import dense

from .config import NO_CHUNKING, EvalConfig, unique_labels
from .data import Dataset, Run
from .metrics import DEFAULT_KS, docs_from_hits, drop_identical_ids, evaluate_run, self_hits, truncate_run
from .report import ConfigResult, EvalReport, add_confidence_intervals
from .stats import paired_test

log = logging.getLogger("arrowsmith.eval")

Progress = Callable[[str], None]


@dataclass
class RunOptions:
    ks: tuple[int, ...] = DEFAULT_KS
    primary: str = "ndcg@10"
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int | None = None
    method: str = "bootstrap"
    n_resamples: int = 10_000
    seed: int = 0
    baseline: str | None = None  # label of the configuration the others are compared with
    workdir: str | None = None  # keep the built stores here (default: a temp dir, removed)
    save_runs: str | None = None  # write each configuration's TREC run file into this directory
    ignore_identical_ids: bool = False  # drop the hit on the document whose id is the query's (BEIR)


@dataclass
class _Chunked:
    path: Path
    seconds: float
    docs: int
    chunks: int
    truncated: int = 0
    truncation_mismatch: int = 0
    corpus_docs: int = 0  # documents read; the chunker skips empty ones (counted in docs_skipped)
    corpus_ids: set[str] = field(default_factory=set)  # what judged documents are looked up in


@dataclass
class _Built:
    db: str
    table: str
    model: Any
    timing: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fts: bool = False  # the BM25 index exists
    had_fts: bool = False  # ... before eval built one: what mode=auto looks at, as query does
    dim: int | None = None  # of the stored vectors


class Evaluator:
    """Evaluates configurations on one dataset, sharing models, chunks and stores between them."""

    def __init__(self, dataset: Dataset, options: RunOptions | None = None, progress: Progress | None = None):
        self.dataset = dataset
        self.options = options or RunOptions()
        self.progress = progress or (lambda msg: log.info("%s", msg))
        self._models: dict[str | None, Any] = {}
        self._query_vectors: dict[int, tuple[np.ndarray, float]] = {}
        self._queries_truncated: dict[int, int] = {}  # per model: queries cut to fit its window
        self._chunked: dict[tuple, _Chunked] = {}
        self._built: dict[tuple, _Built] = {}
        self._warned_absent = False
        self._stack = contextlib.ExitStack()
        self.workdir = self._workdir()

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _workdir(self) -> Path:
        if self.options.workdir:
            path = Path(self.options.workdir)
            path.mkdir(parents=True, exist_ok=True)
            return path
        tmp = tempfile.TemporaryDirectory(prefix="arrowsmith-eval-")
        self._stack.callback(tmp.cleanup)
        return Path(tmp.name)

    # ---------------------------------------------------------------- public
    def run(self, configs: list[EvalConfig]) -> EvalReport:
        configs = unique_labels(configs)
        if not configs:
            raise UsageError("nothing to evaluate")
        results = [self.evaluate_config(c) for c in configs]
        return self.report(results)

    def report(self, results: list[ConfigResult]) -> EvalReport:
        o = self.options
        if o.primary not in results[0].scores.values:
            raise UsageError(f"primary metric {o.primary!r} is not computed (cut-offs {list(o.ks)})")
        first_model = next((r.config.model for r in results), None)
        model = self._models.get(first_model)
        report = EvalReport(
            dataset=self.dataset.name, split=self.dataset.split, n_queries=len(self.dataset.qrels),
            n_docs=self.dataset.n_docs or None, ks=sorted(o.ks), primary=o.primary, results=results,
            model=model.describe() if model is not None and hasattr(model, "describe") else None,
        )
        add_confidence_intervals(report, o.n_resamples, o.seed)
        report.comparisons = compare_results(results, o.primary, baseline=o.baseline, method=o.method,
                                             n_resamples=o.n_resamples, seed=o.seed)
        return report

    def evaluate_config(self, config: EvalConfig) -> ConfigResult:
        self.progress(f"eval: {config.label()}")
        start = time.perf_counter()
        built = self._build(config)
        mode = search_mode(config, built)
        run, timing = self._search(config, built, mode)
        run, id_notes = score_ready(run, self.options)
        if self.options.save_runs:
            from .data import write_run

            Path(self.options.save_runs).mkdir(parents=True, exist_ok=True)
            write_run(run, Path(self.options.save_runs) / f"{_file_name(config.label())}.run", config.label())
        scores = evaluate_run(self.dataset.qrels, run, self.options.ks)
        result = ConfigResult(config=config, scores=scores, timing={**built.timing, **timing},
                              counts=dict(built.counts), notes=list(built.notes) + id_notes,
                              bytes_per_vector=_bytes_per_vector(built, config, mode))
        if config.mode == "auto":
            why = "has a full-text index" if built.had_fts else "has no full-text index"
            rerank = search_rerank(config, built)
            then = f", reranked by {rerank} (it has token vectors)" if rerank else ""
            result.notes.append(f"mode auto: {mode}{then}, as query does (the table {why})")
        cut = self._queries_truncated.get(id(built.model), 0) if mode != "fts" else 0
        if cut:
            result.counts["truncated_queries"] = cut
            result.notes.append(f"{cut:,} of {len(self.dataset.queries):,} queries truncated at "
                                f"{built.model.max_tokens} tokens (as sentence-transformers/MTEB do)")
        result.timing["total"] = sum(v for k, v in result.timing.items() if k != "total")
        result.timing["wall"] = time.perf_counter() - start
        return result

    # ---------------------------------------------------------------- models
    def model(self, spec: str | None) -> Any:
        if spec not in self._models:
            from arrowsmith.plugins.registry import load_model

            options: dict[str, Any] = {"device": self.options.device, "dtype": self.options.dtype}
            if self.options.batch_tokens:
                options["batch_tokens"] = self.options.batch_tokens
            model = load_model(spec, **options)
            start = time.perf_counter()
            model.encode(["warm-up"])  # load the weights now: no configuration's time includes it
            self.model_load_seconds = getattr(self, "model_load_seconds", 0.0) + time.perf_counter() - start
            self._models[spec] = model
        return self._models[spec]

    def fitted_queries(self, model: Any) -> list[str]:
        """The query texts cut at the model's window as sentence-transformers/MTEB cut them."""
        from arrowsmith.commands.query_vectors import fit_queries

        return fit_queries(list(self.dataset.queries.values()), model)[0]

    def query_vectors(self, model: Any) -> tuple[np.ndarray, float]:
        """One encoding of the queries per model, shared by every configuration that uses it."""
        key = id(model)
        if key not in self._query_vectors:
            from arrowsmith.commands.query_vectors import embed_queries, fit_queries

            start = time.perf_counter()
            texts, self._queries_truncated[key] = fit_queries(list(self.dataset.queries.values()), model)
            vectors = embed_queries(texts, model)
            self._query_vectors[key] = (vectors, time.perf_counter() - start)
        return self._query_vectors[key]

    # ---------------------------------------------------------------- build
    def _build(self, config: EvalConfig) -> _Built:
        key = config.build_key()
        if key in self._built:
            return self._built[key]
        if config.db:
            built = self._open_existing(config)
        else:
            built = self._build_store(config)
        self._built[key] = built
        return built

    def _open_existing(self, config: EvalConfig) -> _Built:
        from arrowsmith.commands.query_vectors import model_from_meta
        from arrowsmith.commands.schemas import MODEL
        from arrowsmith.commands.store import open_table, table_meta

        table = open_table(config.db, config.table)
        meta = table_meta(table)
        model = None
        if config.mode != "fts" and MODEL in meta:
            model = model_from_meta(meta[MODEL], device=self.options.device, dtype=self.options.dtype)
        from arrowsmith.commands.query import _has_fts

        rows = table.count_rows()
        doc_ids = _doc_ids(table)
        docs = len(doc_ids)
        self.dataset.n_docs = self.dataset.n_docs or docs
        built = _Built(db=config.db, table=config.table, model=model, counts={"docs": docs, "chunks": rows},
                       fts=True,  # an existing store is searched as it is: `arrowsmith index` makes FTS
                       had_fts=_has_fts(table), dim=dense.dim_of(table.schema))
        self._count_absent(built, doc_ids, "the store")
        return built

    def _count_absent(self, built: _Built, corpus_ids: set[str], where: str) -> None:
        """Issue 21: qrels naming documents the corpus lacks were scored silently."""
        from .data import judged_absent

        docs, judgements = judged_absent(self.dataset.qrels, corpus_ids)
        if not docs:
            return
        built.counts["qrels_docs_absent"] = docs
        built.counts["qrels_judgements_absent"] = judgements
        message = (f"{docs:,} judged document id(s) ({judgements:,} judgements) are not in {where}: "
                   "they can never be retrieved (a relevant one lowers recall and nDCG)")
        built.notes.append(message)
        if not self._warned_absent:
            self._warned_absent = True
            log.warning("%s", message)

    def _build_store(self, config: EvalConfig) -> _Built:
        # the very code of `chunk | embed --db` (issue 10: a private copy recorded model.describe()
        # instead of embedding_meta(), so a kept store lacked its prompt and late-chunking settings)
        from arrowsmith.commands.embed import EmbedStats, embed_to_store

        model = self.model(config.model)
        chunked = self._chunk(config, model)
        db = self.workdir / f"store-{len(self._built)}"
        embed_stats = EmbedStats()
        late_options: dict[str, Any] = {} if config.window_overlap is None else {
            "window_overlap": config.window_overlap}
        if config.multivector:
            late_options.update(multivector=True, token_precision=config.token_precision,
                                token_pool=config.token_pool)
        self.progress(f"eval: embedding {chunked.chunks:,} chunks ({'late' if config.late else 'naive'})")
        start = time.perf_counter()
        # one checkpoint: the commit comes after the embedding generator is exhausted, so
        # embed_stats.seconds is the embedding and the rest is the store's
        stats = embed_to_store(_read_spool(chunked.path), model, str(db), config.table,
                               checkpoint_rows=1 << 30, late=config.late, stats=embed_stats,
                               **late_options)
        total = time.perf_counter() - start
        embed_s = min(total, embed_stats.seconds)
        timing = {"chunk": chunked.seconds, "embed": embed_s, "store": max(0.0, total - embed_s)}
        counts = {"docs": chunked.docs, "chunks": chunked.chunks, "rows": stats.rows_added,
                  "tokens_embedded": int(embed_stats.tokens)}
        notes = []
        skipped = chunked.corpus_docs - chunked.docs
        if skipped:
            counts["docs_skipped"] = skipped
            notes.append(f"{skipped} empty document(s) have no chunk, so they are never retrieved")
        if config.chunker == NO_CHUNKING:
            counts["truncated_docs"] = chunked.truncated
            notes.append(f"no chunking: {chunked.truncated:,} of {chunked.docs:,} documents truncated at "
                         f"{model.max_tokens} tokens (as sentence-transformers/MTEB do)")
            if chunked.truncation_mismatch:
                notes.append(f"{chunked.truncation_mismatch} truncated documents re-tokenize differently "
                             "at the cut (token-level vs character-level truncation)")
        self.dataset.n_docs = self.dataset.n_docs or chunked.corpus_docs
        built = _Built(db=str(db), table=config.table, model=model, timing=timing, counts=counts, notes=notes,
                       dim=model.dim)
        self._count_absent(built, chunked.corpus_ids, "the corpus")
        return built

    def _fts_index(self, db: str, table: str) -> float:
        """The BM25 index fts/hybrid search needs, built by `arrowsmith index`'s code; no ANN index
        (exact vector search, as MTEB)."""
        from arrowsmith.commands.index import build_indexes

        return build_indexes(db, table, vector_type="none", fts=True).seconds

    def _chunk(self, config: EvalConfig, model: Any) -> _Chunked:
        key = config.chunk_key()
        if key in self._chunked:
            return self._chunked[key]
        path = self.workdir / f"chunks-{len(self._chunked)}.arrows"
        start = time.perf_counter()
        read = _ChunkCounter(chunks=False, ids=True)
        docs = read.wrap(self.dataset.corpus_batches())
        counter = _ChunkCounter()
        if config.chunker == NO_CHUNKING:
            trunc = _Truncation()
            batches = whole_document_chunks(docs, model, trunc)
        else:
            from arrowsmith.commands.chunk import chunk_documents, load_tokenizer

            tokenizer = load_tokenizer(f"model:{config.model}" if config.model else None)
            kwargs: dict[str, Any] = {"strategy": config.chunker, "tokenizer": tokenizer,
                                      "overlap": config.overlap}
            if config.max_tokens is not None:
                kwargs["max_tokens"] = config.max_tokens
            batches = chunk_documents(docs, **kwargs)
            trunc = None
        _spool(counter.wrap(batches), path)
        result = _Chunked(path=path, seconds=time.perf_counter() - start, docs=counter.docs,
                          chunks=counter.chunks, corpus_docs=read.docs, corpus_ids=read.ids)
        if trunc is not None:
            result.truncated, result.truncation_mismatch = trunc.truncated, trunc.mismatch
        self._chunked[key] = result
        return result

    # ---------------------------------------------------------------- search
    def _search(self, config: EvalConfig, built: _Built, mode: str) -> tuple[Run, dict[str, float]]:
        from arrowsmith.commands.query import Searcher

        queries = list(self.dataset.queries.items())
        timing: dict[str, float] = {}
        if mode in ("fts", "hybrid") and not built.fts:
            timing["index"] = self._fts_index(built.db, built.table)
            built.fts = True
        vectors = None
        if mode != "fts" and built.model is not None:
            vectors, seconds = self.query_vectors(built.model)
            timing["query_embed"] = seconds
        # one deeper with --ignore-identical-ids: the query's own document may be among the hits
        depth = max(self.options.ks) + (1 if self.options.ignore_identical_ids else 0)
        n_docs = built.counts.get("docs") or self.dataset.n_docs or depth
        n_chunks = built.counts.get("chunks") or n_docs
        # one searcher for the configuration: retrieve_documents may search again, deeper
        searcher = Searcher(built.db, built.table, model=built.model, nprobes=config.nprobes,
                            refine_factor=config.refine_factor, ef=config.ef, exact=config.exact,
                            use_compressed=None if config.use_compressed else False)
        options = dict(mode=mode, fusion=config.fusion, rrf_k=config.rrf_k, alpha=config.alpha, by=config.by,
                       rerank=search_rerank(config, built))
        if built.model is not None:
            # the texts MaxSim embeds token by token: cut at the window, as the query vectors were
            fitted = self.fitted_queries(built.model)
            queries = [(qid, text) for (qid, _), text in zip(queries, fitted, strict=True)]
        start = time.perf_counter()

        def fetch(idx: list[int], k: int) -> pa.Table:
            qv = vectors[idx] if vectors is not None else None
            return searcher.search([queries[i] for i in idx], k=k, query_vectors=qv, **options)

        run = retrieve_documents(fetch, [q for q, _ in queries], depth, n_docs=n_docs, n_chunks=n_chunks,
                                 by_doc=config.by == "doc")
        timing["search"] = time.perf_counter() - start
        return run, timing


# -------------------------------------------------------------------- retrieval depth


SELF_HIT_HINT_SHARE = 0.5  # of queries whose first hit has their own id: suggest the option


def score_ready(run: Run, options: RunOptions) -> tuple[Run, list[str]]:
    """The run as it is scored: without self-hits under ``ignore_identical_ids``, cut to the deepest
    cut-off; plus a note when, without it, most queries find a document of their own id first."""
    if options.ignore_identical_ids:
        dropped = sum(1 for q, docs in run.items() if q in docs)
        return truncate_run(drop_identical_ids(run), max(options.ks)), [
            f"--ignore-identical-ids: {dropped:,} hits on a document with the query's own id dropped"]
    own = self_hits(run)
    if run and own >= SELF_HIT_HINT_SHARE * len(run):
        return run, [f"{own:,} of {len(run):,} queries find a document with their own id first: the "
                     "queries look like documents of the corpus (ArguAna, Quora), where BEIR and MTEB "
                     "score with --ignore-identical-ids"]
    return run, []


def retrieve_documents(fetch: Callable[[list[int], int], pa.Table], query_ids: list[str], depth: int, *,
                       n_docs: int, n_chunks: int, by_doc: bool = False) -> Run:
    """Each query's top ``depth`` documents, a document scoring the max over its chunks.

    Chunk hits are fetched deep enough that ``depth`` distinct documents remain: first
    ``depth × (chunks per document) × 2`` chunks, then, for the queries still short of documents
    whose result list was full, twice as many, until the table is exhausted. The top ``depth``
    documents by max chunk score are exact once that many distinct documents are in the hits.
    """
    want = min(depth, n_docs)
    if by_doc:
        table = fetch(list(range(len(query_ids))), depth)
        return truncate_run(_hits_to_run(table), depth)
    k = min(n_chunks, max(depth, math.ceil(depth * n_chunks / max(n_docs, 1) * 2)))
    pending = list(range(len(query_ids)))
    run: Run = {}
    while pending:
        table = fetch(pending, k)
        part = _hits_to_run(table)
        hits_per_query = _count_by_query(table)
        short = []
        for i in pending:
            qid = query_ids[i]
            docs = part.get(qid, {})
            run[qid] = docs
            if len(docs) < want and hits_per_query.get(qid, 0) >= k and k < n_chunks:
                short.append(i)
        pending, k = short, min(n_chunks, k * 2)
    return truncate_run(run, depth)


def _hits_to_run(table: pa.Table) -> Run:
    return docs_from_hits(table.column("query_id").to_pylist(), table.column("doc_id").to_pylist(),
                          table.column("score").to_pylist())


def _count_by_query(table: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for q in table.column("query_id").to_pylist():
        counts[q] = counts.get(q, 0) + 1
    return counts


# -------------------------------------------------------------------- comparisons


def compare_results(results: list[ConfigResult], metric: str, *, baseline: str | None = None,
                    method: str = "bootstrap", n_resamples: int = 10_000, seed: int = 0) -> list:
    """Every configuration against the baseline (the first, unless named), paired by query."""
    if len(results) < 2:
        if baseline is not None:  # issue 10: it used to be ignored
            raise UsageError("--baseline needs two or more configurations to compare")
        return []
    labels = [r.label for r in results]
    if baseline is not None and baseline not in labels:
        raise UsageError(f"--baseline {baseline!r} is not one of the configurations: {', '.join(labels)}")
    base = results[labels.index(baseline)] if baseline else results[0]
    out = []
    for r in results:
        if r is base:
            continue
        if r.scores.query_ids != base.scores.query_ids:
            raise UsageError(f"{r.label} and {base.label} were scored on different queries")
        out.append(paired_test(base.scores.values[metric], r.scores.values[metric], metric=metric,
                               baseline_name=base.label, candidate_name=r.label, method=method,
                               n_resamples=n_resamples, seed=seed))
    return out


# -------------------------------------------------------------------- no chunking (MTEB)


@dataclass
class _Truncation:
    truncated: int = 0
    mismatch: int = 0


def whole_document_chunks(batches: Iterable[pa.RecordBatch], model: Any,
                          stats: _Truncation | None = None) -> Iterator[pa.RecordBatch]:
    """Chunked documents with one chunk each, cut where sentence-transformers truncates.

    sentence-transformers tokenizes with ``truncation=True, max_length=max_seq_length``: the
    special tokens stay and the first ``max_seq_length - specials`` content tokens are kept. The
    chunk ends at the character end of the last kept token (WordPiece's greedy longest match
    re-tokenizes such a prefix to the same ids; a rare exception is counted in ``mismatch``).
    """
    from arrowsmith.commands.chunk import Chunker, chunked_schema
    from arrowsmith.commands.schemas import CHUNK_SPAN

    stats = stats if stats is not None else _Truncation()
    limit = int(model.max_tokens) - int(model.num_special_tokens)
    tokenizer = model.tokenizer
    # the chunker's own schema and metadata (issue 10: a hand-built copy wrote "version": 1, an int)
    schema = chunked_schema(Chunker(NO_CHUNKING, tokenizer, limit, 0))
    for batch in batches:
        texts = batch.column("text").to_pylist()
        spans = []
        for text in texts:
            offsets = tokenizer.token_offsets(text)
            n = len(offsets)
            end = len(text)
            if n > limit:
                end = int(offsets[limit - 1][1])
                n = limit
                stats.truncated += 1
                if len(tokenizer.token_offsets(text[:end])) != limit:
                    stats.mismatch += 1
            spans.append([{"start": 0, "end": end, "n_tokens": n}])
        hashes = [text_hash(t) for t in texts]
        yield pa.RecordBatch.from_arrays(
            [batch.column("id"), batch.column("text"), pa.array(hashes, pa.string()),
             pa.array(spans, pa.list_(CHUNK_SPAN))], schema=schema)


# -------------------------------------------------------------------- helpers


class _ChunkCounter:
    def __init__(self, chunks: bool = True, ids: bool = False) -> None:
        self.docs = 0
        self.chunks = 0
        self.count_chunks = chunks
        self.keep_ids = ids
        self.ids: set[str] = set()  # with ids=True: one entry per document, never the texts

    def wrap(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.compute as pc

        for b in batches:
            self.docs += b.num_rows
            if self.keep_ids:
                self.ids.update(b.column("id").to_pylist())
            if self.count_chunks:
                self.chunks += int(pc.sum(pc.list_value_length(b.column("chunks"))).as_py() or 0)
            yield b


def _spool(batches: Iterable[pa.RecordBatch], path: Path) -> None:
    writer = None
    try:
        for b in batches:
            if writer is None:
                writer = pa.ipc.new_stream(str(path), b.schema)
            writer.write_batch(b)
    finally:
        if writer is not None:
            writer.close()


def _read_spool(path: Path) -> Iterator[pa.RecordBatch]:
    with pa.OSFile(str(path), "rb") as f:
        yield from pa.ipc.open_stream(f)


def _doc_ids(table: Any) -> set[str]:
    data = table.search().select(["doc_id"]).limit(None).to_arrow()
    return set(data.column("doc_id").to_pylist())


def search_mode(config: EvalConfig, built: _Built) -> str:
    """The mode searched: ``auto`` is query's default, hybrid when the table has a full-text index
    (before eval built one for another configuration, so the order of configurations is moot)."""
    if config.mode != "auto":
        return config.mode
    return _auto(config, built)[0]


def search_rerank(config: EvalConfig, built: _Built) -> str | None:
    """The rerank searched: ``auto`` on a table with token vectors reranks as query's auto does."""
    if config.rerank or config.mode != "auto":
        return config.rerank
    rerank = _auto(config, built)[1]
    return f"{rerank[0]}:{rerank[1]}" if rerank else None


def _auto(config: EvalConfig, built: _Built) -> tuple[str, tuple[str, int] | None]:
    from arrowsmith.commands.query import auto_mode
    from arrowsmith.commands.spaces import multi
    from arrowsmith.commands.store import open_table

    has_tokens = config.multivector or multi.COLUMN in open_table(built.db, built.table).schema.names
    return auto_mode(built.had_fts, has_tokens)


def _bytes_per_vector(built: _Built, config: EvalConfig, mode: str) -> float | None:
    """Bytes per vector the first stage reads: the compressed codes when search uses them (as
    query does: not with exact search, nor where an ANN index serves), else float32."""
    if mode == "fts":
        return None
    if config.use_compressed and not config.exact:
        from arrowsmith.commands.compress import load_compressed
        from arrowsmith.commands.query import _vector_index
        from arrowsmith.commands.store import open_table

        index = load_compressed(built.db, built.table)
        if index is not None and _vector_index(open_table(built.db, built.table))[0] is None:
            return float(index.codec.code_bytes)
    return float(built.dim * 4) if built.dim else None


def _file_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in label)[:120] or "config"


def evaluate(dataset: Dataset, configs: list[EvalConfig], options: RunOptions | None = None,
             progress: Progress | None = None) -> EvalReport:
    """Evaluate ``configs`` on ``dataset`` in one process (models, chunks and stores shared)."""
    with Evaluator(dataset, options, progress) as ev:
        return ev.run(configs)


def run_files_report(dataset_name: str, split: str, qrels: dict, runs: dict[str, Run],
                     options: RunOptions | None = None) -> EvalReport:
    """Score existing TREC runs (no model, no store) and compare them."""
    o = options or RunOptions()
    results = []
    for name, run in runs.items():
        run, notes = score_ready(run, o)
        results.append(ConfigResult(config=EvalConfig(name=name), scores=evaluate_run(qrels, run, o.ks),
                                    notes=notes))
    if o.primary not in results[0].scores.values:
        raise UsageError(f"primary metric {o.primary!r} is not computed (cut-offs {list(o.ks)})")
    report = EvalReport(dataset=dataset_name, split=split, n_queries=len(qrels), n_docs=None,
                        ks=sorted(o.ks), primary=o.primary, results=results)
    add_confidence_intervals(report, o.n_resamples, o.seed)
    report.comparisons = compare_results(results, o.primary, baseline=o.baseline, method=o.method,
                                         n_resamples=o.n_resamples, seed=o.seed)
    return report
