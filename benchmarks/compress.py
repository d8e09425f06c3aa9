"""Compression methods side by side on a BEIR dataset (real model) and on generated vectors.

    .venv/bin/python benchmarks/compress.py --data ../shared/data/cranfield --db /tmp/bench-cranfield

Builds the store once (chunk → embed all-MiniLM-L6-v2 → LanceDB) unless it exists, then prints:
1. the `compress --report` table with the dataset's queries and qrels (ΔnDCG@10 vs float32);
2. the round trip: `compress --method int8`, then `query` with and without the compressed
   form, top-1 agreement on corpus-sampled queries (each chunk's nearest *other* chunk) and on
   the dataset's queries, and whether the report's int8 rankings equal what `query` returned;
3. the same report on generated data (clustered, anisotropic unit vectors).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from arrowsmith.commands.compress import compress_table, load_compressed
from arrowsmith.commands.compress.report import Report, compress_report, default_methods


def build_store(data: Path, db: Path) -> float:
    from arrowsmith.commands.chunk import chunk_documents
    from arrowsmith.commands.embed import embed_to_store
    from arrowsmith.commands.evaluate.data import load_beir
    from arrowsmith.plugins.registry import load_model

    start = time.perf_counter()
    model = load_model(None)
    embed_to_store(chunk_documents(load_beir(data).corpus_batches()), model, str(db))
    return time.perf_counter() - start


def markdown(report: Report) -> str:
    t = report.to_arrow().to_pylist()
    cols = list(t[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in t:
        lines.append("| " + " | ".join(_fmt(c, row[c]) for c in cols) + " |")
    return "\n".join(lines)


def _fmt(col: str, v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if col.endswith("_delta"):
            return f"{v:+.4f}"
        return f"{v:.1f}" if col == "ratio" else f"{v:.3f}" if col.endswith(("_s", "_ms")) else f"{v:.4f}"
    return str(v)


def round_trip(db: Path, qids: list[str], q: np.ndarray, report: Report, sample: int = 200) -> None:
    from arrowsmith.commands.compress.report import load_corpus
    from arrowsmith.commands.query import search

    compress_table(db, "chunks", "int8")
    assert load_compressed(db, "chunks") is not None
    corpus = load_corpus(db, "chunks")
    rng = np.random.default_rng(0)
    rows = rng.choice(len(corpus.ids), size=min(sample, len(corpus.ids)), replace=False)
    pairs = [(str(corpus.ids[r]), "sampled chunk") for r in rows]

    def nearest_other(table: pa.Table) -> dict[str, str]:
        out: dict[str, str] = {}
        for r in table.to_pylist():  # rank order: keep the first hit that is not the query chunk
            if r["id"] != r["query_id"] and r["query_id"] not in out:
                out[r["query_id"]] = r["id"]
        return out

    a = nearest_other(search(db, pairs, k=2, query_vectors=corpus.vectors[rows]))
    b = nearest_other(search(db, pairs, k=2, query_vectors=corpus.vectors[rows], use_compressed=False))
    same = np.mean([a[i] == b[i] for i in b])
    print(f"- int8 round trip, {len(rows)} corpus-sampled queries (nearest other chunk): "
          f"same top-1 as float {same:.1%}")
    pairs = [(i, "q") for i in qids]
    comp = search(db, pairs, k=10, query_vectors=q)
    flat = search(db, pairs, k=10, query_vectors=q, use_compressed=False)
    top = lambda t: {r["query_id"]: r["id"] for r in t.to_pylist() if r["rank"] == 1}  # noqa: E731
    print(f"- int8 round trip, {len(qids)} dataset queries: same top-1 as float "
          f"{np.mean([top(comp)[i] == top(flat)[i] for i in qids]):.1%}")
    got = {}
    for r in comp.to_pylist():
        got.setdefault(r["query_id"], []).append(r["id"])
    want = {qid: corpus.ids[p[:10]].tolist() for qid, p in zip(qids, report.hits["int8"], strict=True)}
    print(f"- report's int8 top-10 (chunk ids, in order) equal to `query`'s: "
          f"{np.mean([got[i] == want[i] for i in qids]):.1%} of queries")


def generated(db: Path, n: int, dim: int, k: int) -> Report:
    """Clustered, anisotropic unit vectors (like real embeddings: a shared mean direction)."""
    import lancedb

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(64, dim)) + 2.0 * rng.normal(size=dim)
    x = centers[rng.integers(0, 64, n)] + 0.8 * rng.normal(size=(n, dim)) * rng.uniform(0.2, 1.5, dim)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim)
    lancedb.connect(str(db)).create_table(
        "chunks", pa.table({"id": [f"g{i}" for i in range(n)], "vector": vec}), mode="overwrite")
    return compress_report(db, "chunks", methods=default_methods(dim, k) + ["pq:48"], sample=300, k=k)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/cranfield")
    ap.add_argument("--db", default="/tmp/bench-compress-cranfield")
    ap.add_argument("--gen-db", default="/tmp/bench-compress-generated")
    ap.add_argument("--gen-rows", type=int, default=50_000)
    args = ap.parse_args()
    from arrowsmith.commands.evaluate.data import load_beir
    from arrowsmith.commands.store import table_exists

    data, db = Path(args.data), Path(args.db)
    if not table_exists(db, "chunks"):
        print(f"built store {db} in {build_store(data, db):.0f}s", file=sys.stderr)
    ds = load_beir(data)
    qids = list(ds.queries)
    from arrowsmith.commands.compress.report import encode_queries, load_corpus

    q = encode_queries(load_corpus(db, "chunks").meta, [ds.queries[i] for i in qids])
    methods = default_methods(384) + ["pq:48", "binary+rescore:100:float", "truncate:256+binary+rescore:100"]
    report = compress_report(db, "chunks", methods=methods, queries=dict.fromkeys(qids),
                             query_vectors=q, qrels=ds.qrels, keep_hits=True)
    print(f"## {data.name}: {report.rows} chunks, dim {report.dim}, {report.queries} queries with qrels\n")
    print(markdown(report))
    print()
    round_trip(db, qids, q, report)
    print(f"\n## generated: {args.gen_rows} clustered unit vectors, dim 384, 300 corpus-sampled queries\n")
    print(markdown(generated(Path(args.gen_db), args.gen_rows, 384, 10)))


if __name__ == "__main__":
    main()
