"""Compare compression methods on the store's own vectors, without changing the store.

A table with token vectors (``embed --multivector``) gets one more row per token precision
(:func:`.tokens.token_report`): bytes a token and a chunk, and MaxSim's recall and nDCG against
its stored tokens decoded to float32.

For each method: bytes per vector, ratio, first-stage memory, recall@k against
exact float search, top-1 agreement, nDCG@k (and its change) when qrels are
given, encode time and query latency. Searches go through the same
:class:`CompressedIndex` code that ``query`` uses, so the numbers are what
``query`` then does.

Memory: the report holds the table's float vectors plus every compared
method's codes (it measures; ``compress`` itself streams).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from arrowsmith.commands.errors import UsageError
from arrowsmith.commands.schemas import MODEL, read_meta
from arrowsmith.commands.spaces import dense, multi
from arrowsmith.commands.units import format_size

from .codecs import SEED, Calibration, Int8Codec, MethodSpec, make_codec, parse_method, transform
from .search import ArrayRescorer, CompressedIndex
from .store import vector_dim, vectors_of

DEFAULT_SAMPLE = 200


@dataclass
class MethodResult:
    method: str
    bytes_per_vector: int
    ratio: float
    memory_bytes: int  # first stage, in memory: codes only
    disk_bytes: int  # codes + rescoring codes written by `compress`
    recall_at_k: float
    top1_agreement: float
    ndcg_at_k: float | None
    ndcg_delta: float | None
    encode_s: float
    query_ms: float


@dataclass
class Report:
    table: str
    rows: int
    dim: int
    k: int
    queries: int
    query_source: str  # "sample" (corpus chunks, each excluding itself) or "file"
    results: list[MethodResult]
    choice: str | None = None
    reason: str | None = None
    hits: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False)
    tokens: list[Any] = field(default_factory=list)  # tokens.TokenResult: a table with token vectors

    @property
    def quality_key(self) -> str:
        return "ndcg_at_k" if any(r.ndcg_at_k is not None for r in self.results) else "recall_at_k"

    def to_arrow(self):
        import pyarrow as pa

        rows = [asdict(r) for r in self.results]
        if self.tokens:  # one row per token precision: bytes a chunk where dense has bytes a vector
            for r in rows:
                r.update(representation="vector", bytes_per_token=None)
            rows += [{"method": t.precision, "bytes_per_vector": round(t.bytes_per_chunk), "ratio": t.ratio,
                      "memory_bytes": t.memory_bytes, "disk_bytes": t.memory_bytes,
                      "recall_at_k": t.recall_at_k, "top1_agreement": t.top1_agreement,
                      "ndcg_at_k": t.ndcg_at_k, "ndcg_delta": t.ndcg_delta, "encode_s": t.encode_s,
                      "query_ms": t.query_ms, "representation": "tokens",
                      "bytes_per_token": t.bytes_per_token} for t in self.tokens]
        names = {"recall_at_k": f"recall@{self.k}", "ndcg_at_k": f"ndcg@{self.k}",
                 "ndcg_delta": f"ndcg@{self.k}_delta"}
        order = (["representation"] if self.tokens else []) + list(asdict(self.results[0])) \
            + (["bytes_per_token"] if self.tokens else [])
        return pa.table({names.get(c, c): [r[c] for r in rows] for c in order})


@dataclass
class Corpus:
    ids: np.ndarray
    doc_ids: np.ndarray
    vectors: np.ndarray
    meta: dict[str, Any]


def default_methods(dim: int, k: int = 10, *, rescore: int | None = None, pq_bytes: int | None = None
                    ) -> list[str]:
    """A spread of every codec; ``rescore`` candidates for the rescored ones [10·k], ``pq_bytes``."""
    from .codecs import default_pq_bytes

    half, rescore = max(1, dim // 2), rescore or 10 * k
    pq = pq_bytes or default_pq_bytes(dim)
    return ["float16", "int8", "binary", f"binary+rescore:{rescore}", f"pq:{pq}",
            f"pq:{pq}+rescore:{rescore}", f"truncate:{half}",
            f"truncate:{half}+binary+rescore:{rescore}"]


def report_specs(methods: list[str] | None, dim: int, k: int = 10, *, rescore: int | None = None,
                 rescore_with: str | None = None, pq_bytes: int | None = None) -> list[MethodSpec]:
    """The methods a report compares, with ``--rescore``/``--rescore-with``/``--bytes`` applied as
    ``compress --method`` applies them (issue 10: the report ignored them).

    Listed methods all take ``rescore``; ``pq_bytes`` goes to the PQ ones (refused when there is
    none). In the default spread, ``rescore`` and ``rescore_with`` set its rescored methods.
    """
    if methods is None:
        specs = [parse_method(m) for m in default_methods(dim, k, rescore=rescore, pq_bytes=pq_bytes)]
        return [replace(s, rescore_with=rescore_with) if s.rescore and rescore_with else s for s in specs]
    codecs = [parse_method(m).codec for m in methods]
    if pq_bytes is not None and "pq" not in codecs:
        raise UsageError(f"--bytes only applies to pq, and --methods {','.join(methods)} names no pq method")
    return [parse_method(m, rescore=rescore, rescore_with=rescore_with,
                         pq_bytes=pq_bytes if codec == "pq" else None)
            for m, codec in zip(methods, codecs, strict=True)]


def load_corpus(db: str | os.PathLike, table: str) -> Corpus:
    from arrowsmith.commands.store import open_table, scan_batches

    tbl = open_table(db, table)
    dim = vector_dim(tbl, table)
    tbl.checkout(tbl.version)
    cols = ["id", dense.COLUMN] + (["doc_id"] if "doc_id" in tbl.schema.names else [])
    ids, docs, vecs = [], [], []
    for batch in scan_batches(tbl, cols):
        ids += batch.column("id").to_pylist()
        docs += batch.column("doc_id").to_pylist() if "doc_id" in cols else batch.column("id").to_pylist()
        vecs.append(vectors_of(batch, dim))
    if not ids:
        raise UsageError(f"table {table!r} is empty: nothing to compare")
    return Corpus(np.asarray(ids, dtype=object), np.asarray(docs, dtype=object),
                  np.concatenate(vecs), read_meta(tbl.schema))


def encode_queries(meta: dict[str, Any], texts: list[str]) -> np.ndarray:
    """Embed query texts with the model the table names (float32, normalised)."""
    from arrowsmith.commands.query_vectors import embed_queries, model_from_meta

    model_meta = meta.get(MODEL) or {}
    # as `query` does: the stored query prompt and dim come with the model (embed.model_from_meta)
    return embed_queries(texts, model_from_meta(model_meta), dim=model_meta.get("dim"))


def compress_report(db: str | os.PathLike, table: str = "chunks", *, methods: list[str] | None = None,
                    queries: dict[str, str] | None = None, query_vectors: np.ndarray | None = None,
                    sample: int = DEFAULT_SAMPLE, qrels: dict[str, dict[str, int]] | None = None,
                    k: int = 10, budget: int | None = None, keep_hits: bool = False,
                    seed: int = SEED, rescore: int | None = None, rescore_with: str | None = None,
                    pq_bytes: int | None = None) -> Report:
    """Measure ``methods`` (default: :func:`default_methods`) on the table; the store is only read.

    ``rescore``, ``rescore_with`` and ``pq_bytes`` are ``compress``'s options (:func:`report_specs`).
    """
    corpus = load_corpus(db, table)
    dim = corpus.vectors.shape[1]
    specs = report_specs(methods, dim, k, rescore=rescore, rescore_with=rescore_with, pq_bytes=pq_bytes)
    for spec in specs:
        make_codec(spec, dim)  # bad --bytes / truncate: refuse before the long part
    qids, q, self_pos, source = _queries(corpus, queries, query_vectors, sample, seed)
    depth = k if qrels is None else doc_depth(corpus, k)
    exact = _evaluate(corpus, MethodSpec("float32"), q, qids, self_pos, depth, qrels, k, None)
    results, hits = [exact.result], {"float32": exact.positions}
    for spec in specs:
        run = _evaluate(corpus, spec, q, qids, self_pos, depth, qrels, k, exact)
        results.append(run.result)
        hits[spec.label] = run.positions
    report = Report(table, len(corpus.ids), dim, k, len(q), source, results,
                    hits=hits if keep_hits else {})
    if multi.present(corpus.meta.get(MODEL) or {}) and (queries or query_vectors is None):
        from .tokens import token_report

        report.tokens = token_report(db, table, query_ids=qids,
                                     query_texts=[queries[i] for i in qids] if queries else None,
                                     sample_rows=self_pos, doc_ids=corpus.doc_ids, qrels=qrels, k=k,
                                     depth=depth)
    if budget is not None:
        report.choice, report.reason = pick_for_budget(report, budget)
    return report


def _queries(corpus: Corpus, queries, query_vectors, sample: int, seed: int):
    """(query ids, vectors, own row per query or None, source)."""
    if query_vectors is not None:
        q = np.asarray(query_vectors, dtype=np.float32)
        ids = list(queries) if queries else [str(i) for i in range(len(q))]
        return ids, q, None, "file"
    if queries:
        ids = list(queries)
        return ids, encode_queries(corpus.meta, [queries[i] for i in ids]), None, "file"
    if sample <= 0:
        raise UsageError("--sample must be positive")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(corpus.ids), size=min(sample, len(corpus.ids)), replace=False))
    return corpus.ids[rows].tolist(), corpus.vectors[rows], rows, "sample"


def doc_depth(corpus: Corpus, k: int) -> int:
    """Chunks to retrieve so that ``k`` documents survive max-per-document aggregation."""
    per_doc = len(corpus.ids) / max(1, len(set(corpus.doc_ids.tolist())))
    return max(k, int(math.ceil(k * 2 * per_doc)))


@dataclass
class _Run:
    result: MethodResult
    positions: list[np.ndarray]
    ndcg: float | None


def build_index(corpus: Corpus, spec: MethodSpec) -> tuple[CompressedIndex, float]:
    """Fit and encode in memory, as ``compress`` does on disk; returns the index and encode seconds."""
    x, dim = corpus.vectors, corpus.vectors.shape[1]
    start = time.perf_counter()
    calib = Calibration(spec.truncate or dim)
    calib.update(transform(spec, x))
    codec = make_codec(spec, dim)
    codec.fit(calib)
    codes = codec.encode(transform(spec, x))
    rescorer = None
    if spec.rescore and spec.rescore_with == "int8":
        full = Calibration(dim)
        full.update(x)
        rcodec = Int8Codec(dim)
        rcodec.fit(full)
        rescorer = ArrayRescorer(rcodec.encode(x), rcodec, "int8")
    elif spec.rescore:
        rescorer = ArrayRescorer(x)
    seconds = time.perf_counter() - start
    return CompressedIndex(spec, codec, corpus.ids, codes, rescorer, {"dim": dim}), seconds


def _evaluate(corpus: Corpus, spec: MethodSpec, q: np.ndarray, qids: list[str], self_pos, depth: int,
              qrels, k: int, exact: _Run | None) -> _Run:
    index, encode_s = build_index(corpus, spec)
    extra = 1 if self_pos is not None else 0
    start = time.perf_counter()
    positions, scores = index.search_positions(q, depth + extra)
    query_ms = 1000 * (time.perf_counter() - start) / max(1, len(q))
    if self_pos is not None:  # a sampled chunk is not its own neighbour
        keep = [p != own for p, own in zip(positions, self_pos, strict=True)]
        positions = [p[m][:depth] for p, m in zip(positions, keep, strict=True)]
        scores = [s[m][:depth] for s, m in zip(scores, keep, strict=True)]
    ndcg = ndcg_of(corpus.doc_ids, qids, positions, scores, qrels, k) if qrels is not None else None
    recall, top1 = agreement(positions, exact.positions if exact else positions, k)
    per = index.codec.code_bytes
    rescore_b = rescore_bytes_per_vector(spec, corpus.vectors.shape[1])
    n = len(corpus.ids)
    base = exact.ndcg if exact else ndcg
    result = MethodResult(spec.label, per, round(4 * corpus.vectors.shape[1] / per, 2), n * per,
                          n * (per + rescore_b), recall, top1, ndcg,
                          None if ndcg is None or base is None else ndcg - base, encode_s, query_ms)
    return _Run(result, positions, ndcg)


def rescore_bytes_per_vector(spec: MethodSpec, dim: int) -> int:
    """Bytes per vector the rescoring step keeps on disk beside the codes (floats are already stored)."""
    return dim if spec.rescore and spec.rescore_with == "int8" else 0


def agreement(positions: list[np.ndarray], ref: list[np.ndarray], k: int) -> tuple[float, float]:
    """(recall@k, top-1 agreement) of each query's ranked rows against the reference ranking."""
    if not positions:
        return 0.0, 0.0
    recall = float(np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / max(1, min(k, len(b)))
                            for a, b in zip(positions, ref, strict=True)]))
    top1 = float(np.mean([a[:1].tolist() == b[:1].tolist() for a, b in zip(positions, ref, strict=True)]))
    return recall, top1


def ndcg_of(doc_ids: np.ndarray, qids, positions, scores, qrels, k: int) -> float:
    """nDCG@k per document (a document's best chunk) of ranked row positions."""
    from arrowsmith.commands.evaluate.metrics import docs_from_hits, evaluate_run

    flat_q, flat_d, flat_s = [], [], []
    for qid, p, s in zip(qids, positions, scores, strict=True):
        flat_q += [qid] * len(p)
        flat_d += doc_ids[p].tolist()
        flat_s += s.tolist()
    run = docs_from_hits(flat_q, flat_d, flat_s)
    judged = {q: r for q, r in qrels.items() if q in set(qids)}
    return evaluate_run(judged, run, ks=(k,), metrics=("ndcg",)).mean()[f"ndcg@{k}"]


# ------------------------------------------------------------------ budget


def pick_for_budget(report: Report, budget: int) -> tuple[str | None, str]:
    """The best-quality method whose first-stage memory fits ``budget``, and why."""
    key = report.quality_key
    label = key.replace("_at_k", f"@{report.k}")
    fits = [r for r in report.results if r.memory_bytes <= budget]
    if not fits:
        smallest = min(report.results, key=lambda r: r.memory_bytes)
        return None, (f"nothing fits {format_size(budget)} for {report.rows} vectors: the smallest, "
                      f"{smallest.method}, needs {format_size(smallest.memory_bytes)}")
    best = max(fits, key=lambda r: (round(getattr(r, key) or 0.0, 4), -r.memory_bytes))
    too_big = [r for r in report.results if r.memory_bytes > budget
               and (getattr(r, key) or 0) > (getattr(best, key) or 0)]
    why = (f"{best.method}: best {label} ({getattr(best, key):.4f}) among the "
           f"{len(fits)} methods that fit {format_size(budget)} "
           f"({format_size(best.memory_bytes)} for {report.rows} vectors, {best.bytes_per_vector} B/vector)")
    if too_big:
        better = max(too_big, key=lambda r: getattr(r, key) or 0)
        why += (f"; {better.method} scores {getattr(better, key):.4f} "
                f"but needs {format_size(better.memory_bytes)}")
    return best.method, why



# ------------------------------------------------------------------ plot


def plot_report(report: Report, path: str) -> None:
    """Quality against bytes per vector (log scale), one labelled point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = report.quality_key
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in report.results:
        ax.scatter(r.bytes_per_vector, getattr(r, key))
        ax.annotate(r.method, (r.bytes_per_vector, getattr(r, key)), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per vector (first stage)")
    ax.set_ylabel(key.replace("_at_k", f"@{report.k}"))
    ax.set_title(f"{report.table}: {report.rows} vectors, dim {report.dim}, {report.queries} queries")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    from arrowsmith.commands.io import atomic_file

    try:
        with atomic_file(path) as tmp:
            # the temp name has no extension: the format is the one path names, as savefig would
            fig.savefig(tmp, dpi=120, format=os.path.splitext(path)[1][1:].lower() or "png")
    finally:
        plt.close(fig)
