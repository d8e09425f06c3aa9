"""What a vector query reads at scale (issue 20): result rows taken by the row ids the search
returned (not found by a filtered scan of the id column), and the ANN index searched before a
table's compressed codes unless `--compressed` asks for them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run

from arrowsmith.commands.compress import compress_table
from arrowsmith.commands.index import build_indexes
from arrowsmith.commands.query import QueryStats, Searcher, default_nprobes, search
from arrowsmith.commands.store import connect
from arrowsmith.commands.synthetic import clustered_vectors, generated_table, query_vectors


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """5,000 generated rows with an IVF_PQ index (8 partitions) and binary codes (`compress`)."""
    db = tmp_path_factory.mktemp("paths") / "store"
    base = clustered_vectors(5_000, fields=8)
    connect(db).create_table("chunks", generated_table(base))
    build_indexes(db, vector_type="ivf_pq", partitions=8, fts=False)
    compress_table(db, "chunks", "binary", rescore=100)
    return db, query_vectors(base, 20)


def _texts(n: int) -> list[str]:
    return [f"v{i}" for i in range(n)]


def test_result_rows_taken_by_row_id_equal_rows_found_by_id(indexed):
    db, queries = indexed
    searcher = Searcher(db)
    hits = searcher.search(_texts(len(queries)), k=10, query_vectors=queries)
    ids = hits["id"].to_pylist()
    assert len(ids) == 10 * len(queries)
    assert set(ids) <= set(searcher.row_of)  # the search returned each hit's row id
    unique = list(dict.fromkeys(ids))
    found = Searcher(db).rows_for(unique).sort_by("id")  # a fresh searcher knows no row ids
    # a vector search at depth k read the results' columns with the hits
    assert searcher.rows_for(unique).sort_by("id").equals(found)
    searcher._result_rows = None
    taken = searcher.rows_for(unique).sort_by("id")  # by row id
    assert taken.column_names == found.column_names == searcher.columns
    assert taken.equals(found) and found.num_rows == len(unique)
    # and the result's text is its own row's
    assert hits["text"].to_pylist() == [f"generated row {i.split('#')[0]}" for i in ids]
    deeper = Searcher(db)  # --by doc searches deeper than k: the rows are taken afterwards
    by_doc = deeper.search(_texts(len(queries)), k=10, by="doc", query_vectors=queries)
    assert deeper._result_rows is None and by_doc["text"].to_pylist() == [
        f"generated row {i.split('#')[0]}" for i in by_doc["id"].to_pylist()]


def test_ann_index_is_searched_before_compressed_codes(indexed):
    db, queries = indexed
    texts = _texts(len(queries))
    default, floats, forced = QueryStats(), QueryStats(), QueryStats()
    got = search(db, texts, k=10, query_vectors=queries, stats=default)
    ref = search(db, texts, k=10, query_vectors=queries, use_compressed=False, stats=floats)
    codes = search(db, texts, k=10, query_vectors=queries, use_compressed=True, stats=forced)
    assert not default.compressed and not floats.compressed and forced.compressed
    assert got["id"].to_pylist() == ref["id"].to_pylist()
    assert np.array_equal(got["score"].to_numpy(), ref["score"].to_numpy())
    assert codes["id"].to_pylist() != ref["id"].to_pylist()  # binary codes rank otherwise
    # --nprobes tunes the index the default search uses; with --compressed it is refused
    assert Searcher(db, nprobes=8).compressed is None
    res = run(["query", "--db", str(db), "wing", "--k", "3", "--format", "jsonl", "--compressed"])
    assert res.exit_code == 0, res.stderr
    assert "compressed index" in res.stderr
    rows = [json.loads(line) for line in res.stdout_bytes.decode().splitlines()]
    assert len(rows) == 3
    res = run(["query", "--db", str(db), "wing", "--nprobes", "8", "--compressed"])
    assert res.exit_code == 2 and "--no-compressed" in res.stderr, res.stderr


def test_default_probes_grow_with_the_root_of_the_partitions(indexed):
    """4·√partitions, at least LanceDB's 20, at most all: 63 of the 248 partitions of a million
    rows (recall@10 0.925, benchmarks/RESULTS.md), 20 of the 24 `index` makes at 100k."""
    assert [default_nprobes(p) for p in (1, 8, 24, 25, 244, 248, 1_007)] == [1, 8, 20, 20, 63, 63, 127]
    db, _ = indexed
    searcher = Searcher(db)
    assert (searcher.index_type, searcher.nprobes, searcher.refine_factor) == ("IVF_PQ", 8, 30)
    assert Searcher(db, nprobes=3, refine_factor=5).tuning == (3, 5, None)
