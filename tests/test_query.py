"""`arrowsmith query`: vector, full-text and hybrid search over a real store, real model."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import read_ipc, run, to_ipc

from arrowsmith.commands.query import Hits, fuse_mix, fuse_rrf, search
from arrowsmith.commands.schemas import embedded_fields, read_meta, stage_metadata

# doc_id -> (topic, chunks); each chunk is about its document's topic only
CORPUS = {
    "cats": ("pets", ["Cats are small carnivorous mammals that purr and hunt mice.",
                      "A kitten sleeps most of the day and plays with yarn."]),
    "dogs": ("pets", ["Dogs are loyal companions that bark and fetch sticks.",
                      "Puppies need training, walks and a lot of attention."]),
    "rust": ("code", ["Rust is a systems programming language with a borrow checker."]),
    "python": ("code", ["Python is a dynamically typed language popular for data science.",
                        "The Global Interpreter Lock serialises Python threads."]),
    "bread": ("food", ["Sourdough bread rises with a wild yeast starter and flour."]),
    "volcano": ("earth", ["A volcano erupts molten lava, ash and sulfur gases."]),
}
LEAD = ["query_id", "rank", "score", "id", "doc_id", "text"]


def embedded_batch(model, corpus: dict = CORPUS) -> pa.RecordBatch:
    """The embedded-chunks stream `embed` would produce (real model vectors)."""
    rows: dict[str, list] = {k: [] for k in ("id", "doc_id", "chunk_index", "text", "start", "end",
                                             "doc_key", "topic")}
    for doc_id, (topic, chunks) in corpus.items():
        offset = 0
        for i, text in enumerate(chunks):
            rows["id"].append(f"{doc_id}#{i}")
            rows["doc_id"].append(doc_id)
            rows["chunk_index"].append(i)
            rows["text"].append(text)
            rows["start"].append(offset)
            rows["end"].append(offset + len(text))
            rows["doc_key"].append(f"key-{doc_id}")
            rows["topic"].append(topic)
            offset += len(text) + 1
    vectors = model.encode(rows["text"], kind="document")
    dim = vectors.shape[1]
    fields = embedded_fields(dim) + [pa.field("topic", pa.string())]
    arrays = [pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim)
              if f.name == "vector" else pa.array(rows[f.name], f.type) for f in fields]
    meta = stage_metadata("embed", model={**model.describe(), "dim": dim})
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))


@pytest.fixture(scope="module")
def store(tmp_path_factory, model):
    """A store built through the real writer and `arrowsmith index` (FTS + scalar indexes)."""
    db = tmp_path_factory.mktemp("qstore")
    res = run(["index", "--db", str(db)], input=to_ipc(pa.Table.from_batches([embedded_batch(model)])))
    assert res.exit_code == 0, res.stderr
    return db


def query(store, *args: str, input: bytes | None = None):
    mode = [] if "--mode" in args else ["--mode", "vector"]  # the CLI's default is auto
    return run(["query", "--db", str(store), "--format", "jsonl", *mode, *args], input=input)


def rows_of(res) -> list[dict]:
    assert res.exit_code == 0, res.stderr
    return [json.loads(line) for line in res.stdout_bytes.decode().splitlines()]


# ------------------------------------------------------------------ modes


def test_vector_mode_scores_are_cosine_similarities(store, model):
    res = search(store, ["a feline that purrs"], k=3, model=model)
    assert res.column_names[:6] == LEAD
    assert res.column("id").to_pylist()[0] == "cats#0"
    assert res.column("rank").to_pylist() == [1, 2, 3]
    q = model.encode(["a feline that purrs"], kind="query")[0]
    docs = model.encode(res.column("text").to_pylist(), kind="document")
    np.testing.assert_allclose(res.column("score").to_numpy(), docs @ q, atol=1e-4)
    assert read_meta(res.schema)["arrowsmith.query"]["mode"] == "vector"


def test_cli_vector_argument_queries_get_ids_and_metadata(store):
    rows = rows_of(query(store, "lava and ash from a mountain", "borrow checker memory safety", "--k", "2"))
    assert [(r["query_id"], r["rank"]) for r in rows] == [("q1", 1), ("q1", 2), ("q2", 1), ("q2", 2)]
    assert rows[0]["id"] == "volcano#0" and rows[2]["id"] == "rust#0"
    assert rows[0]["topic"] == "earth" and rows[0]["chunk_index"] == 0 and "vector" not in rows[0]
    assert rows[0]["score"] > rows[1]["score"]


def test_fts_mode_bm25(store):
    rows = rows_of(query(store, "sourdough starter", "--mode", "fts", "--k", "5"))
    assert rows[0]["id"] == "bread#0"
    assert len(rows) == 1  # BM25 returns only documents with a query term
    assert rows[0]["score"] > 0


@pytest.mark.parametrize("fusion", ["rrf", "mix"])
def test_hybrid_mode(store, fusion):
    rows = rows_of(query(store, "interpreter lock threads", "--mode", "hybrid", "--fusion", fusion,
                         "--k", "3"))
    assert rows[0]["id"] == "python#1"
    if fusion == "rrf":  # first in both lists: 2 / (60 + 1)
        assert rows[0]["score"] == pytest.approx(2 / 61, rel=1e-5)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_rrf_k_changes_scores(store):
    rows = rows_of(query(store, "interpreter lock threads", "--mode", "hybrid", "--fusion", "rrf",
                         "--rrf-k", "10", "--k", "1"))
    assert rows[0]["score"] == pytest.approx(2 / 11, rel=1e-5)


def test_fusion_functions():
    dense = Hits(["a", "b", "c"], np.array([0.9, 0.5, 0.4], np.float32))
    sparse = Hits(["c", "d"], np.array([12.0, 3.0], np.float32))
    rrf = fuse_rrf(dense, sparse, rrf_k=60)
    assert rrf.ids[0] == "c" and rrf.scores[0] == pytest.approx(1 / 63 + 1 / 61)
    assert set(rrf.ids) == {"a", "b", "c", "d"}
    only_dense = fuse_mix(dense, sparse, alpha=1.0)
    assert only_dense.ids[0] == "a"
    only_sparse = fuse_mix(dense, sparse, alpha=0.0)
    assert only_sparse.ids[0] == "c"
    # z-scores: dense a = (0.9 - 0.6) / std; a is absent from sparse, so it gets sparse's floor (-1)
    mix = fuse_mix(dense, sparse, alpha=0.5)
    za = (0.9 - 0.6) / np.std([0.9, 0.5, 0.4])
    assert mix.scores[mix.ids.index("a")] == pytest.approx(0.5 * za + 0.5 * -1.0, rel=1e-5)


# ------------------------------------------------------------------ filters and documents


def test_where_prefilters(store):
    rows = rows_of(query(store, "a feline that purrs", "--where", "topic = 'code'", "--k", "10"))
    assert {r["doc_id"] for r in rows} == {"rust", "python"} and len(rows) == 3
    fts = rows_of(query(store, "language", "--mode", "fts", "--where", "doc_id = 'rust'"))
    assert [r["id"] for r in fts] == ["rust#0"]


def test_bad_where_exits_2_with_lancedb_message(store):
    res = query(store, "cats", "--where", "no_such_column = 1")
    assert res.exit_code == 2
    assert "bad --where filter" in res.stderr and "no_such_column" in res.stderr
    assert res.stdout_bytes == b""


def test_where_with_a_second_statement_is_refused(store):
    # LanceDB would silently filter by "1=1" alone and drop the rest
    res = query(store, "cats", "--where", "1=1; DROP TABLE chunks")
    assert res.exit_code == 2 and "';' outside a quoted string" in res.stderr
    assert res.stdout_bytes == b""
    # a ';' inside a string literal is data, not a separator
    ok = query(store, "cats", "--where", "doc_id = 'a;b'")
    assert ok.exit_code == 0, ok.stderr
    assert rows_of(ok) == []


def test_by_doc_returns_k_distinct_documents(store):
    chunks = rows_of(query(store, "pets: cats and dogs", "--k", "4"))
    docs = rows_of(query(store, "pets: cats and dogs", "--k", "4", "--by", "doc"))
    assert len({r["doc_id"] for r in chunks}) < 4  # chunks of the same documents crowd the top 4
    assert len(docs) == 4 and len({r["doc_id"] for r in docs}) == 4
    assert [r["rank"] for r in docs] == [1, 2, 3, 4]
    # each document's row is its best chunk: the same score it has among chunks
    best = {}
    for r in rows_of(query(store, "pets: cats and dogs", "--k", "20")):
        best.setdefault(r["doc_id"], r["score"])
    assert all(r["score"] == pytest.approx(best[r["doc_id"]]) for r in docs)


def test_by_doc_stops_when_table_exhausted(store):
    docs = rows_of(query(store, "anything", "--k", "50", "--by", "doc"))
    assert len(docs) == len(CORPUS)


def test_fts_without_index_names_arrowsmith_index(tmp_path, model):
    import lancedb

    lancedb.connect(str(tmp_path)).create_table("chunks", pa.Table.from_batches([embedded_batch(model)]))
    res = query(tmp_path, "cats", "--mode", "fts")
    assert res.exit_code == 2 and "arrowsmith index" in res.stderr


def test_a_query_longer_than_the_window_is_refused_by_its_id(store):
    # never cut silently (eval cuts such queries, as MTEB does, and counts them)
    res = query(store, "harbour cranes", "the wing lift " * 200, "--mode", "vector")
    assert res.exit_code == 65, res.stderr
    assert "query q2 has 602 tokens, more than the model's window of 256" in res.stderr
    assert res.stdout_bytes == b""


def test_missing_table_exits_2(tmp_path):
    res = query(tmp_path, "cats")
    assert res.exit_code == 2 and "no table 'chunks'" in res.stderr


@pytest.mark.parametrize("args", [["--k", "0"], ["--mode", "dense"], ["--fusion", "max"], ["--by", "page"]])
def test_bad_options_exit_2(store, args):
    assert query(store, "cats", *args).exit_code == 2


@pytest.mark.parametrize("exact", [[], ["--exact"]])
def test_vector_search_is_the_brute_force_cosine_ranking(store, model, exact):
    """Default (a flat scan below 100k rows: no vector index) and --exact both return what numpy
    ranks over the stored vectors: ids in order, cosine scores (issue 10: this compared the two
    searches with each other, so a wrong ranking in both could not fail it)."""
    from arrowsmith.commands.store import open_table

    t = open_table(store).search().select(["id", "vector"]).limit(None).to_arrow()
    ids = np.asarray(t.column("id").to_pylist())
    vecs = np.asarray(t.column("vector").combine_chunks().flatten()).reshape(t.num_rows, -1)
    q = model.encode(["yeast"], kind="query")[0]
    cosine = (vecs @ q) / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(q))
    order = np.argsort(-cosine, kind="stable")
    assert np.diff(cosine[order[:6]]).max() < -1e-4  # no near-ties: the top 5 and their order are defined
    order = order[:5]
    rows = rows_of(query(store, "yeast", "--k", "5", *exact))
    assert [r["id"] for r in rows] == ids[order].tolist()
    np.testing.assert_allclose([r["score"] for r in rows], cosine[order], atol=1e-5)


# ------------------------------------------------------------------ inputs and outputs


def test_queries_from_text_file_and_stdin(store, tmp_path):
    f = tmp_path / "queries.txt"
    f.write_text("molten lava\n\nwild yeast bread\n")
    rows = rows_of(query(store, "--file", str(f), "--k", "1"))
    assert [(r["query_id"], r["doc_id"]) for r in rows] == [("q1", "volcano"), ("q2", "bread")]
    rows = rows_of(query(store, "--file", "-", "--k", "1", input=b"puppies and walks\n"))
    assert [(r["query_id"], r["doc_id"]) for r in rows] == [("q1", "dogs")]


def test_queries_from_jsonl_and_arrow_keep_ids(store, tmp_path):
    jsonl = b'{"id": "Q-7", "text": "molten lava"}\n{"id": "Q-9", "text": "kitten and yarn"}\n'
    rows = rows_of(query(store, "--file", "-", "--k", "1", input=jsonl))
    assert [(r["query_id"], r["id"]) for r in rows] == [("Q-7", "volcano#0"), ("Q-9", "cats#1")]
    ipc = to_ipc(pa.table({"id": ["x"], "text": ["sourdough"]}))
    rows = rows_of(query(store, "--file", "-", "--k", "1", input=ipc))
    assert [(r["query_id"], r["id"]) for r in rows] == [("x", "bread#0")]
    # CSV with a header naming `text` (was: each line a query, the header too)
    rows = rows_of(query(store, "--file", "-", "--k", "1", input=b"id,text\nc1,molten lava\n"))
    assert [(r["query_id"], r["id"]) for r in rows] == [("c1", "volcano#0")]
    # Parquet needs random access: stdin is read whole, then read as Parquet (was: parsed as CSV)
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["p"], "text": ["molten lava"]}), buf)
    rows = rows_of(query(store, "--file", "-", "--k", "1", input=buf.getvalue()))
    assert [(r["query_id"], r["id"]) for r in rows] == [("p", "volcano#0")]


def test_default_mode_is_hybrid_with_a_text_index_else_vector(store, model, tmp_path):
    plain = run(["query", "--db", str(store), "molten lava", "--k", "3", "--format", "jsonl"])
    hybrid = query(store, "molten lava", "--k", "3", "--mode", "hybrid")
    assert "mode hybrid" in plain.stderr
    assert rows_of(plain) == rows_of(hybrid) and rows_of(plain)[0]["id"] == "volcano#0"
    # no full-text index: auto falls back to vector, scores are cosine similarities
    res = run(["index", "--db", str(tmp_path), "--no-fts"],
              input=to_ipc(pa.Table.from_batches([embedded_batch(model)])))
    assert res.exit_code == 0, res.stderr
    plain = run(["query", "--db", str(tmp_path), "molten lava", "--k", "3", "--format", "jsonl"])
    assert "mode vector" in plain.stderr
    assert rows_of(plain) == rows_of(query(tmp_path, "molten lava", "--k", "3"))
    assert 0.3 < rows_of(plain)[0]["score"] <= 1.0


def test_csv_and_arrows_output(store):
    res = run(["query", "--db", str(store), "molten lava", "--k", "2", "--format", "csv"])
    assert res.exit_code == 0, res.stderr
    table = list(csv.DictReader(io.StringIO(res.stdout_bytes.decode())))
    assert list(table[0])[:6] == LEAD and table[0]["id"] == "volcano#0" and len(table) == 2
    res = run(["query", "--db", str(store), "molten lava", "--k", "2", "--format", "arrows"])
    out = read_ipc(res.stdout_bytes)
    assert out.column_names[:6] == LEAD and out.schema.field("score").type == pa.float32()
    assert read_meta(out.schema)["arrowsmith.stage"] == "query"


def test_no_queries_is_usage_error(store):
    res = query(store)
    assert res.exit_code == 2 and "no queries" in res.stderr


def test_compressed_index_is_used_unless_disabled(tmp_path, model):
    from arrowsmith.commands.compress import compress_table
    from arrowsmith.commands.query import QueryStats

    assert run(["index", "--db", str(tmp_path)],
               input=to_ipc(pa.Table.from_batches([embedded_batch(model)]))).exit_code == 0
    compress_table(tmp_path, method="int8")
    stats, plain = QueryStats(), QueryStats()
    got = search(tmp_path, ["molten lava"], k=3, model=model, stats=stats)
    ref = search(tmp_path, ["molten lava"], k=3, model=model, use_compressed=False, stats=plain)
    assert stats.compressed and not plain.compressed
    assert got.column("id").to_pylist()[0] == ref.column("id").to_pylist()[0] == "volcano#0"
    # int8 scores stay on the cosine scale
    exact = dict(zip(ref.column("id").to_pylist(), ref.column("score").to_pylist(), strict=True))
    assert got.column("score").to_pylist()[0] == pytest.approx(exact["volcano#0"], abs=0.02)
    res = query(tmp_path, "molten lava", "--k", "1", "--no-compressed")
    assert rows_of(res)[0]["id"] == "volcano#0" and "compressed" not in res.stderr


# ------------------------------------------------------------------ a long-lived searcher


def test_a_kept_searcher_answers_like_search_and_sees_new_rows_after_refresh(tmp_path, model):
    """What eval and a server do: one Searcher, many searches; rows committed by a writer after it
    opened the table are invisible until refresh(), then found."""
    from arrowsmith.commands.query import Searcher
    from arrowsmith.commands.store import StoreWriter

    db = tmp_path / "kept"
    first = {k: v for k, v in CORPUS.items() if k != "volcano"}
    res = run(["index", "--db", str(db)], input=to_ipc(pa.Table.from_batches([embedded_batch(model, first)])))
    assert res.exit_code == 0, res.stderr
    searcher = Searcher(db, model=model)
    queries = ["a feline that purrs", "lava and ash from a mountain"]
    kept = searcher.search(queries, k=3, mode="hybrid")
    once = search(db, queries, k=3, mode="hybrid", model=model)
    assert kept.column("id").to_pylist() == once.column("id").to_pylist()
    assert kept.column("id").to_pylist()[0] == "cats#0"
    assert searcher.search(queries, k=3, where="doc_id = 'dogs'").column("doc_id").to_pylist() == ["dogs"] * 4

    with StoreWriter(str(db), "chunks") as writer:
        writer.write([embedded_batch(model, {"volcano": CORPUS["volcano"]})])
    before = searcher.search(queries[1:], k=1, mode="vector")
    assert before.column("doc_id").to_pylist() != ["volcano"]  # the version it opened
    assert searcher.refresh() is True
    after = searcher.search(queries[1:], k=1, mode="vector")
    assert after.column("doc_id").to_pylist() == ["volcano"]
    assert searcher.refresh() is False


def test_ann_tuning_with_a_mode_that_searches_no_vector_index_is_refused(store, model):
    """The library refuses what the CLI refuses: an ANN setting the search would ignore."""
    from arrowsmith.commands.errors import UsageError

    with pytest.raises(UsageError, match="--nprobes: no effect, --mode fts searches no vector index"):
        search(store, ["cats"], mode="fts", nprobes=5, model=model)
