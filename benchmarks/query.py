"""Query benchmark: ANN latency and recall@10 against exact search, and batch throughput.

    .venv/bin/python benchmarks/query.py [--sizes 100000,250000] [--index ivf_pq,auto] [--queries 100]

For each size: a generated table of clustered unit vectors (384 dims, the embedded-chunks
schema, tagged with all-MiniLM-L6-v2 so `query` can embed text against it), indexed with
`arrowsmith.commands.index.build_indexes` at its defaults for the given type; then single-query
p50/p99 latency and recall@10 of the default ANN search against ``exact=True``, side by side.
Finally 1,000 text queries through one `arrowsmith query` process (embedding included).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

DIM = 384
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
    from arrowsmith.commands.schemas import embedded_fields, stage_metadata

    n, dim = vectors.shape
    ids = pa.array([f"g{i}" for i in range(n)])
    cols = {
        "id": pa.compute.binary_join_element_wise(ids, pa.scalar("0"), "#"), "doc_id": ids,
        "chunk_index": pa.array(np.zeros(n, np.int32)), "text": pa.compute.binary_join_element_wise(
            pa.scalar("generated row"), ids, " "),
        "start": pa.array(np.zeros(n, np.int32)), "end": pa.array(np.full(n, 10, np.int32)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        "doc_key": pa.array(["k"] * n),
    }
    meta = stage_metadata("embed", model={**MODEL_META, "dim": dim})
    schema = pa.schema(embedded_fields(dim), metadata=meta)
    return pa.table(cols, schema=schema)


def build(db: str, vectors: np.ndarray, index: str) -> float:
    """Write the table (one add) and index it; returns the index build seconds."""
    import lancedb

    from arrowsmith.commands.index import build_indexes

    lancedb.connect(db).create_table("chunks", generated_table(vectors), mode="overwrite")
    t0 = time.perf_counter()
    build_indexes(db, vector_type=index, fts=False)
    return time.perf_counter() - t0


def recall_at_10(db: str, queries: np.ndarray, **options) -> float:
    """Mean recall@10 of search(**options) against exact search, over all queries in one batch."""
    from arrowsmith.commands.query import search

    texts = [f"v{i}" for i in range(len(queries))]
    got = search(db, texts, k=10, query_vectors=queries, **options)
    exact = search(db, texts, k=10, query_vectors=queries, exact=True)
    return _overlap(got, exact, len(queries))


def _overlap(got: pa.Table, exact: pa.Table, n: int) -> float:
    def groups(t: pa.Table) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for q, i in zip(t["query_id"].to_pylist(), t["id"].to_pylist(), strict=True):
            out.setdefault(q, set()).add(i)
        return out

    g, e = groups(got), groups(exact)
    return float(np.mean([len(g.get(q, set()) & e[q]) / len(e[q]) for q in e]))


def latencies(db: str, queries: np.ndarray, **options) -> np.ndarray:
    """Seconds per single-query search (vector given: the search alone, no embedding)."""
    from arrowsmith.commands.query import search

    out = []
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        search(db, [f"v{i}"], k=10, query_vectors=q[None, :], **options)
        out.append(time.perf_counter() - t0)
    return np.asarray(out)


def throughput(db: str, n_queries: int = 1000) -> tuple[float, str]:
    """1,000 text queries through one `arrowsmith query` process: queries/s over its wall time."""
    root = Path(__file__).resolve().parent.parent
    topics = [line.split('"text": "')[1].split('"')[0] for line in
              (root.parent / "shared/data/cranfield/queries.jsonl").read_text().splitlines()] \
        if (root.parent / "shared/data/cranfield/queries.jsonl").exists() else ["wing lift at high speed"]
    texts = [f"{topics[i % len(topics)]} ({i})" for i in range(n_queries)]
    with tempfile.TemporaryDirectory() as tmp:
        qfile, out = Path(tmp) / "q.txt", Path(tmp) / "out.arrows"
        qfile.write_text("\n".join(texts) + "\n")
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "arrowsmith.cli", "query", "--db", db, "--file",
                              str(qfile), "--k", "10", "-o", str(out)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(res.stderr)
    return n_queries / wall, res.stderr.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,250000")
    ap.add_argument("--index", default="ivf_pq,auto", help="index types to compare (build_indexes --type)")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--throughput", type=int, default=1000, help="text queries through one process (0: skip)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print("| rows | index | build s | recall@10 | p50 ms | p99 ms | exact p50 ms | exact p99 ms |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    last_db = None
    for n in map(int, args.sizes.split(",")):
        base = clustered_vectors(n)
        queries = query_vectors(base, args.queries)
        for index in args.index.split(","):
            db = tempfile.mkdtemp(prefix=f"query-bench-{n}-")
            build_s = build(db, base, index)
            recall = recall_at_10(db, queries)
            ann = latencies(db, queries) * 1000
            exact = latencies(db, queries, exact=True) * 1000
            print(f"| {n:,} | {index} | {build_s:.1f} | {recall:.3f} | {np.percentile(ann, 50):.1f} | "
                  f"{np.percentile(ann, 99):.1f} | {np.percentile(exact, 50):.1f} | "
                  f"{np.percentile(exact, 99):.1f} |", flush=True)
            last_db = db
    if args.throughput and last_db:
        qps, summary = throughput(last_db, args.throughput)
        print(f"\n{args.throughput} text queries through one `arrowsmith query` process on the last table: "
              f"{qps:.1f} queries/s (wall, start-up and model load included)\n  {summary}")


if __name__ == "__main__":
    main()
