"""Store ingest and index build, measured side by side in one run.

    .venv/bin/python benchmarks/ingest.py [--rows 200000] [--index-rows 100000] [--dim 384]

1. Ingest rows/s of precomputed unit vectors (10 chunks per document) through
   ``StoreWriter`` (lock, doc_key bookkeeping, checkpoints), against a bare
   ``lancedb create_table`` of the same Arrow table (ratio = our overhead).
2. A re-run of the same input (every document current: must write nothing), and an
   update where 10% of the documents changed (merge_insert path).
3. Index build time at ``--index-rows``: FTS + scalar, IVF_PQ and IVF_HNSW_SQ at the
   parameters ``index --type`` derives, with recall@10 against exact search (100
   queries, default nprobes, refine_factor 0 and 5) to justify the ``auto`` choice.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from arrowsmith.commands.index import build_indexes, choose_vector_index  # noqa: E402
from arrowsmith.commands.schemas import embedded_fields, stage_metadata  # noqa: E402
from arrowsmith.commands.store import StoreWriter, open_table  # noqa: E402

CHUNKS_PER_DOC = 10
MODEL = {"plugin": "sentence-transformers", "name": "all-MiniLM-L6-v2", "revision": None}


def corpus(rows: int, dim: int, *, seed: int = 0, key: str = "k", clusters: int = 1000) -> pa.Table:
    """Clustered unit vectors (closer to text embeddings than uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    v = centres[rng.integers(0, clusters, rows)]
    v += 0.6 * rng.standard_normal((rows, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    doc = np.arange(rows) // CHUNKS_PER_DOC
    doc_ids = pa.array([f"doc{d}" for d in doc])
    cols = {
        "id": pa.array([f"doc{d}#{i % CHUNKS_PER_DOC}" for i, d in enumerate(doc)]),
        "doc_id": doc_ids,
        "chunk_index": pa.array(np.arange(rows) % CHUNKS_PER_DOC, pa.int32()),
        "text": pa.array([f"chunk {i} about topic {i % 97} and wing {i % 13}" for i in range(rows)]),
        "start": pa.array(np.zeros(rows, np.int32)),
        "end": pa.array(np.full(rows, 10, np.int32)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), dim),
        "doc_key": pa.array([key] * rows),
    }
    schema = pa.schema(embedded_fields(dim), metadata=stage_metadata("embed", model={**MODEL, "dim": dim}))
    return pa.table([cols[f.name] for f in schema], schema=schema)


def batches(table: pa.Table) -> list[pa.RecordBatch]:
    """Whole documents per batch (1,000 rows), as embed emits them."""
    return table.to_batches(max_chunksize=1000)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_ingest(root: Path, rows: int, dim: int, repeat: int = 3) -> list[str]:
    """Best of ``repeat`` interleaved runs: a shared 2-core box is noisy, the minimum is the signal."""
    import lancedb

    table = corpus(rows, dim)
    data = batches(table)
    lancedb.connect(str(root / "warm")).create_table("chunks", table.slice(0, 1000))  # warm-up
    best: dict[str, float] = {}
    info: dict[str, tuple] = {}
    for r in range(repeat):
        t, _ = timed(lambda r=r: lancedb.connect(str(root / f"raw{r}")).create_table("chunks", table))
        best["bare"] = min(best.get("bare", t), t)
        for ckpt in (10_000, 100_000):
            db = root / f"w{ckpt}_{r}"
            t, stats = timed(lambda db=db, ckpt=ckpt: _write(db, data, ckpt))
            best[f"w{ckpt}"] = min(best.get(f"w{ckpt}", t), t)
            info[f"w{ckpt}"] = (stats.checkpoints, len(open_table(db).list_versions()))
        db = root / f"w100000_{r}"
        version = open_table(db).version
        t, stats = timed(lambda db=db: _write(db, data, 100_000))
        assert stats.rows_added == 0 and open_table(db).version == version
        best["noop"] = min(best.get("noop", t), t)
        changed = table.set_column(table.schema.get_field_index("doc_key"), "doc_key", pa.array(
            np.where((np.arange(rows) // CHUNKS_PER_DOC) % 10 == 0, f"k{r + 2}", "k")))
        t, stats = timed(lambda db=db, changed=changed: _write(db, batches(changed), 100_000))
        best["merge"] = min(best.get("merge", t), t)
        info["merge"] = (stats.rows_added, stats.checkpoints)
    bare = best["bare"]
    out = [f"| ingest (best of {repeat}) | rows | seconds | rows/s | vs bare | commits |",
           "|---|---|---|---|---|---|",
           f"| bare lancedb create_table (one commit) | {rows:,} | {bare:.2f} | {rows / bare:,.0f} "
           "| 1.00× | 1 |"]
    for ckpt in (10_000, 100_000):
        t = best[f"w{ckpt}"]
        out.append(f"| StoreWriter, checkpoint_rows={ckpt:,} | {rows:,} | {t:.2f} | {rows / t:,.0f} | "
                   f"{bare / t:.2f}× | {info[f'w{ckpt}'][0]} |")
    t = best["noop"]
    out.append(f"| same input again (all current: no-op) | {rows:,} | {t:.2f} | {rows / t:,.0f} | | 0 |")
    t = best["merge"]
    out.append(f"| 10% of documents changed (merge_insert) | {rows:,} read, {info['merge'][0]:,} written | "
               f"{t:.2f} | {rows / t:,.0f} read | | {info['merge'][1]} |")
    return out


def _write(db, data, checkpoint_rows: int):
    with StoreWriter(db, checkpoint_rows=checkpoint_rows) as w:
        return w.write(data)


def bench_index(root: Path, rows: int, dim: int) -> list[str]:
    table = corpus(rows, dim, seed=1)
    rng = np.random.default_rng(2)
    vecs = table.column("vector").combine_chunks().flatten().to_numpy().reshape(rows, dim)
    q = vecs[rng.integers(0, rows, 100)] + 0.1 * rng.standard_normal((100, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = np.argsort(-(q @ vecs.T), axis=1)[:, :10]
    ids = np.array(table.column("id").to_pylist())
    out = [f"| index at {rows:,} rows × {dim} dims | build seconds | recall@10 (refine 0 / 5) | ms/query |",
           "|---|---|---|---|"]
    db = root / "idx"
    with StoreWriter(db, checkpoint_rows=rows) as w:
        w.write(batches(table))
    t, _ = timed(lambda: build_indexes(db, vector_type="none", fts=True))
    out.append(f"| FTS (text) + BTree (doc_id) | {t:.1f} | | |")
    for kind in ("ivf_pq", "ivf_hnsw_sq"):
        spec = choose_vector_index(rows, dim, kind=kind)
        t, _ = timed(lambda kind=kind: build_indexes(db, vector_type=kind, fts=True))
        tbl = open_table(db)
        recalls, ms = [], 0.0
        for refine in (None, 5):
            hit = 0
            t0 = time.perf_counter()
            for i in range(len(q)):
                s = tbl.search(q[i]).distance_type("cosine").limit(10).select(["id"])
                if refine:
                    s = s.refine_factor(refine)
                got = set(s.to_arrow().column("id").to_pylist())
                hit += len(got & set(ids[exact[i]]))
            ms = (time.perf_counter() - t0) * 1000 / len(q)
            recalls.append(hit / (10 * len(q)))
        params = ", ".join(f"{k}={v}" for k, v in spec.items() if k not in ("type", "metric"))
        out.append(f"| {spec['type']} ({params}) | {t:.1f} | {recalls[0]:.3f} / {recalls[1]:.3f} "
                   f"| {ms:.1f} |")
    return out


def machine() -> str:
    try:
        cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
        cpu = cpu.split(":", 1)[1].strip()
    except (IndexError, OSError):
        cpu = "unknown CPU"
    return f"{cpu}, {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--index-rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--skip-index", action="store_true")
    args = ap.parse_args()
    print(f"machine: {machine()}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="arrowsmith-bench-"))
    try:
        print("\n".join(bench_ingest(root, args.rows, args.dim)), flush=True)
        if not args.skip_index:
            print()
            print("\n".join(bench_index(root, args.index_rows, args.dim)), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
