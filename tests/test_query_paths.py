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
from arrowsmith.commands.query import QueryStats, Searcher, search
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
    taken = searcher.rows_for(ids).sort_by("id")
    found = Searcher(db).rows_for(ids).sort_by("id")  # a fresh searcher knows no row ids
    assert taken.column_names == found.column_names == searcher.columns
    assert taken.equals(found)
    # and the result's text is its own row's
    assert hits["text"].to_pylist() == [f"generated row {i.split('#')[0]}" for i in ids]


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
