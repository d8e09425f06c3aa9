"""End to end on Cranfield: chunk → embed → index → query finds documents its qrels call relevant."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import run

from arrowsmith.commands.chunk import chunk_documents
from arrowsmith.commands.embed import embed_to_store
from arrowsmith.commands.evaluate.data import load_beir
from arrowsmith.commands.index import build_indexes

QUERIES = ["1", "2", "3", "4", "8"]
DISTRACTORS = 120  # the first N documents of the corpus beside the judged ones (~180 docs in all)


@pytest.fixture(scope="session")
def cranfield_store(tmp_path_factory, cranfield, model):
    """The store, built once per session with the library `chunk | embed --db | index` runs."""
    data = load_beir(cranfield)
    keep = {str(i) for i in range(1, DISTRACTORS + 1)}
    for q in QUERIES:
        keep |= set(data.qrels[q])
    wanted = pa.array(sorted(keep))
    docs = (b.filter(pc.is_in(b.column("id"), wanted)) for b in data.corpus_batches())
    db = tmp_path_factory.mktemp("cranfield")
    embed_to_store(chunk_documents(docs), model, str(db))
    build_indexes(db)
    return db, [(q, data.queries[q]) for q in QUERIES], data.qrels


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
