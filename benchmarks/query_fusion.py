"""Pick hybrid search's default fusion: nDCG@10 on Cranfield for dense, BM25, RRF and score mixes.

    .venv/bin/python benchmarks/query_fusion.py [--data ../shared/data/cranfield] [--db /tmp/cranfield-db]

Builds the store with the real pipeline (chunk → embed → the store writer → index), then runs
all 225 queries through ``arrowsmith.commands.query.search`` in each mode and scores the
rankings with pytrec_eval (BEIR's nDCG@10: graded qrels, documents ranked by their best chunk).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cranfield"


def load_beir(data: Path, doc_ids: set[str] | None = None):
    """(documents table id,text; queries [(id, text)]; qrels {qid: {docid: grade}})."""
    ids, texts = [], []
    with open(data / "corpus.jsonl") as f:
        for line in f:
            d = json.loads(line)
            if doc_ids is None or d["_id"] in doc_ids:
                ids.append(d["_id"])
                texts.append(f"{d.get('title', '')} {d['text']}".strip())
    with open(data / "queries.jsonl") as f:
        queries = [(q["_id"], q["text"]) for q in map(json.loads, f)]
    qrels: dict[str, dict[str, int]] = {}
    with open(data / "qrels" / "test.tsv") as f:
        next(f)
        for line in f:
            qid, did, grade = line.split("\t")
            qrels.setdefault(qid, {})[did] = int(grade)
    return pa.table({"id": ids, "text": texts}), queries, qrels


def build_store(db: str, docs: pa.Table, model) -> None:
    """chunk → embed → store writer → indexes (FTS, scalar; vector only above 100k rows)."""
    from arrowsmith.commands.chunk import chunk_documents, load_tokenizer
    from arrowsmith.commands.embed import embed_batches
    from arrowsmith.commands.index import build_indexes
    from arrowsmith.commands.store import StoreWriter

    chunked = chunk_documents(docs.to_batches(max_chunksize=256), tokenizer=load_tokenizer(None))
    with StoreWriter(db) as writer:
        writer.write(embed_batches(chunked, model, skip_doc=writer.is_current))
    build_indexes(db)


def run_modes(db: str, queries, qrels, model, configs) -> dict[str, float]:
    import pytrec_eval

    from arrowsmith.commands.query import search

    judged = [q for q in queries if q[0] in qrels]
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    out = {}
    for label, kwargs in configs:
        t0 = time.perf_counter()
        res = search(db, judged, k=10, by="doc", model=model, **kwargs)
        run: dict[str, dict[str, float]] = {}
        for qid, did, score in zip(res["query_id"].to_pylist(), res["doc_id"].to_pylist(),
                                   res["score"].to_pylist(), strict=True):
            run.setdefault(qid, {})[did] = float(score)
        per_query = evaluator.evaluate(run)
        ndcg = sum(per_query.get(q, {}).get("ndcg_cut_10", 0.0) for q, _ in judged) / len(judged)
        out[label] = ndcg
        print(f"{label:<28} nDCG@10 {ndcg:.4f}  ({time.perf_counter() - t0:.1f}s)", flush=True)
    return out


CONFIGS = [
    ("vector (dense)", {"mode": "vector"}),
    ("fts (BM25)", {"mode": "fts"}),
    ("hybrid rrf k=60", {"mode": "hybrid", "fusion": "rrf", "rrf_k": 60}),
    ("hybrid rrf k=20", {"mode": "hybrid", "fusion": "rrf", "rrf_k": 20}),
    ("hybrid mix alpha=0.3", {"mode": "hybrid", "fusion": "mix", "alpha": 0.3}),
    ("hybrid mix alpha=0.5", {"mode": "hybrid", "fusion": "mix", "alpha": 0.5}),
    ("hybrid mix alpha=0.7", {"mode": "hybrid", "fusion": "mix", "alpha": 0.7}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--db", default=None, help="reuse/build the store here [default: a temp dir]")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from arrowsmith.commands.store import table_exists
    from arrowsmith.plugins.registry import load_model

    docs, queries, qrels = load_beir(Path(args.data))
    db = args.db or tempfile.mkdtemp(prefix="cranfield-db-")
    model = load_model(None, device="cpu")
    if not table_exists(db):
        t0 = time.perf_counter()
        build_store(db, docs, model)
        print(f"built {db}: {docs.num_rows} docs in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    run_modes(db, queries, qrels, model, CONFIGS)


if __name__ == "__main__":
    main()
