"""Generated embedded-chunks tables, and how well a search finds their exact neighbours.

``benchmarks/query.py`` measures ANN latency and recall on these tables and the index/query
defaults were chosen on them (200k rows); ``tests/test_query_ann.py`` asserts that recall on a
120k-row table from the same generator (past the 100k rows where ``index`` builds IVF_PQ). Both
import them from here (issue 10: tests used to import the benchmark script).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DIM = 384
# the default model, so `query` can embed text queries against a generated table
MODEL_META = {"plugin": "sentence-transformers", "name": "all-MiniLM-L6-v2", "dim": DIM,
              "normalize": True, "pooling": "mean", "prompts": {}}


def clustered_vectors(n: int, *, dim: int = DIM, cluster_size: int = 20, spread: float = 0.3,
                      fields: int | None = None, field_spread: float = 1.0, seed: int = 0) -> np.ndarray:
    """Unit vectors clustered in two levels, like chunk embeddings: fields, then topics in a field.

    Uniform random vectors in 384 dims have no neighbours worth the name (every pair is at
    cosine ≈ 0), and independent clusters have no coarse structure for an IVF index to
    partition; real embeddings group by field, then by topic. ``fields`` defaults to
    sqrt(n) / 2 (about two IVF partitions per field at the index's sqrt(rows) partitions).
    """
    rng = np.random.default_rng(seed)
    n_topics = -(-n // cluster_size)
    n_fields = fields or max(1, round(np.sqrt(n) / 2))
    field_centers = rng.standard_normal((n_fields, dim), dtype=np.float32)
    topics = field_centers[rng.integers(0, n_fields, n_topics)]
    topics += field_spread * rng.standard_normal(topics.shape, dtype=np.float32)
    v = np.repeat(topics, cluster_size, axis=0)[:n]
    v += spread * rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def query_vectors(base: np.ndarray, n: int, *, spread: float = 0.15, seed: int = 1) -> np.ndarray:
    """Queries near stored vectors (a query is about some topic in the store)."""
    rng = np.random.default_rng(seed)
    q = base[rng.choice(len(base), n, replace=False)].copy()
    q += spread * rng.standard_normal(q.shape, dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def generated_table(vectors: np.ndarray) -> pa.Table:
    """One one-chunk document per vector (ids ``g<i>#0``), in the embedded-chunks schema."""
    from .schemas import embedded_fields, stage_metadata

    n, dim = vectors.shape
    ids = pa.array([f"g{i}" for i in range(n)])
    cols = {
        "id": pc.binary_join_element_wise(ids, pa.scalar("0"), "#"), "doc_id": ids,
        "chunk_index": pa.array(np.zeros(n, np.int32)),
        "text": pc.binary_join_element_wise(pa.scalar("generated row"), ids, " "),
        "start": pa.array(np.zeros(n, np.int32)), "end": pa.array(np.full(n, 10, np.int32)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        "doc_key": pa.array(["k"] * n),
    }
    meta = stage_metadata("embed", model={**MODEL_META, "dim": dim})
    return pa.table(cols, schema=pa.schema(embedded_fields(dim), metadata=meta))


def recall_at_k(db: str, queries: np.ndarray, k: int = 10, **options) -> float:
    """Mean recall@k of ``search(**options)`` against exact search, all queries in one batch."""
    from .query import search

    texts = [f"v{i}" for i in range(len(queries))]
    got = _ids_by_query(search(db, texts, k=k, query_vectors=queries, **options))
    exact = _ids_by_query(search(db, texts, k=k, query_vectors=queries, exact=True))
    return float(np.mean([len(got.get(q, set()) & ids) / len(ids) for q, ids in exact.items()]))


def _ids_by_query(hits: pa.Table) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for q, i in zip(hits["query_id"].to_pylist(), hits["id"].to_pylist(), strict=True):
        out.setdefault(q, set()).add(i)
    return out
