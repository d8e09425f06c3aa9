"""End to end on Cranfield: chunk → embed → index → query finds documents its qrels call relevant."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import ROOT, run

sys.path.insert(0, str(ROOT / "benchmarks"))
from query_fusion import build_store, load_beir  # noqa: E402

QUERIES = ["1", "2", "3", "4", "8"]
DISTRACTORS = 120  # the first N documents of the corpus beside the judged ones (~180 docs in all)


@pytest.fixture(scope="session")
def cranfield_store(tmp_path_factory, cranfield, model):
    """The store, built once per session with the real pipeline on a slice of the corpus."""
    _, queries, qrels = load_beir(cranfield)
    keep = {str(i) for i in range(1, DISTRACTORS + 1)}
    for q in QUERIES:
        keep |= set(qrels[q])
    docs, _, _ = load_beir(cranfield, keep)
    db = tmp_path_factory.mktemp("cranfield")
    build_store(str(db), docs, model)
    texts = dict(queries)
    return db, [(q, texts[q]) for q in QUERIES], qrels


@pytest.mark.parametrize("mode", ["vector", "fts", "hybrid"])
def test_relevant_documents_in_top_10(cranfield_store, tmp_path, mode):
    db, queries, qrels = cranfield_store
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps({"id": q, "text": t}) + "\n" for q, t in queries))
    res = run(["query", "--db", str(db), "--file", str(qfile), "--mode", mode, "--by", "doc",
               "--k", "10", "--format", "jsonl"])
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout_bytes.decode().splitlines()]
    top: dict[str, list[str]] = {}
    for r in rows:
        top.setdefault(r["query_id"], []).append(r["doc_id"])
    assert sorted(top) == sorted(QUERIES)
    for q in QUERIES:
        assert len(top[q]) == 10 and len(set(top[q])) == 10
        hits = [d for d in top[q] if d in qrels[q]]
        assert hits, f"{mode}: query {q} has no relevant document in its top 10: {top[q]}"
