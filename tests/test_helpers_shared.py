"""Unit tests of the helpers the stages share (one implementation per job, issue 10)."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

from arrowsmith.commands.errors import DataError, UsageError
from arrowsmith.commands.query import read_queries_file
from arrowsmith.commands.schemas import conform_batch
from arrowsmith.commands.store import id_filters, scan_batches, sql_in
from arrowsmith.commands.units import format_duration, format_size, parse_duration, parse_size
from arrowsmith.plugins.vectors import l2_normalize

# ------------------------------------------------------------------ l2_normalize


def test_l2_normalize_returns_unit_float32_rows_and_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-2.0, 0.0]])  # float64 in
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], atol=1e-7)
    assert x[0, 0] == 3.0  # the input is untouched


def test_l2_normalize_in_place_divides_the_given_array():
    x = np.array([[1.0, 1.0], [0.0, 5.0]], dtype=np.float32)
    out = l2_normalize(x, in_place=True)
    assert out is x
    np.testing.assert_allclose(x, [[2 ** -0.5, 2 ** -0.5], [0.0, 1.0]], atol=1e-7)


# ------------------------------------------------------------------ id filters and table scans


def test_sql_in_doubles_quotes_so_ids_stay_data():
    assert sql_in("doc_id", ["a", "o'neil"]) == "doc_id IN ('a', 'o''neil')"


def test_id_filters_cover_every_value_once_in_bounded_slices():
    values = [f"d{i}" for i in range(7)]
    got = list(id_filters(values, "doc_id", batch=3))
    assert [list(part) for part, _ in got] == [values[0:3], values[3:6], values[6:7]]
    assert got[2][1] == "doc_id IN ('d6')"
    assert list(id_filters([], "id")) == []


def test_id_filters_and_scan_batches_on_a_real_table(tmp_path):
    import lancedb

    ids = [f"x'{i}" for i in range(25)]
    tbl = lancedb.connect(tmp_path).create_table("t", pa.table({"id": ids, "n": list(range(25))}))
    found = []
    for _, where in id_filters(ids[::2], batch=4):
        found += tbl.search().where(where).select(["id"]).limit(None).to_arrow()["id"].to_pylist()
    assert sorted(found) == sorted(ids[::2])
    batches = list(scan_batches(tbl, ["n"], batch_rows=10))
    assert all(b.num_rows <= 10 for b in batches) and batches[0].schema.names == ["n"]
    assert sorted(v for b in batches for v in b.column("n").to_pylist()) == list(range(25))


# ------------------------------------------------------------------ conform_batch


SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("v", pa.list_(pa.float32(), 2))],
                   metadata={b"k": b"1"})


def test_conform_batch_reorders_and_casts_to_the_schema_with_its_metadata():
    batch = pa.record_batch({"v": pa.array([[1.0, 2.0]], pa.list_(pa.float64())), "id": ["a"]})
    out = conform_batch(batch, SCHEMA)
    assert out.schema.equals(SCHEMA, check_metadata=True)
    assert out.to_pylist() == [{"id": "a", "v": [1.0, 2.0]}]
    same = pa.record_batch({"id": ["a"], "v": pa.array([[1.0, 2.0]], SCHEMA.field("v").type)})
    assert conform_batch(same, SCHEMA) is same


@pytest.mark.parametrize("batch, expected", [
    (pa.record_batch({"id": ["a"], "w": [1]}), "b.arrows: schema differs from table 't': missing ['v'], "
                                              "extra ['w']"),
    (pa.record_batch({"id": ["a"], "v": pa.array([[1.0]], pa.list_(pa.float32(), 1))}),
     "b.arrows: schema differs from table 't': v: fixed_size_list<item: float>[1] "
     "(expected fixed_size_list<item: float>[2])"),
])
def test_conform_batch_names_the_input_and_what_it_had_to_match(batch, expected):
    with pytest.raises(DataError) as e:
        conform_batch(batch, SCHEMA, "b.arrows", "table 't'")
    assert str(e.value) == expected


# ------------------------------------------------------------------ sizes and durations


@pytest.mark.parametrize("text, size", [("500000", 500000), ("512KB", 512 << 10), ("64MB", 64 << 20),
                                        ("2gib", 2 << 30), (" 1.5 k ", 1536), ("10b", 10)])
def test_parse_size_reads_binary_units(text, size):
    assert parse_size(text) == size


def test_parse_size_error_names_the_option():
    with pytest.raises(UsageError, match=r"--budget 'lots': expected a size such as 500000, 512KB"):
        parse_size("lots", "--budget")


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                     (64 << 20, "64.0 MiB"), (3 << 40, "3072.0 GiB")])
def test_format_size(n, text):
    assert format_size(n) == text


@pytest.mark.parametrize("text, seconds", [("1d", 86400), ("90m", 5400), ("12h", 43200), ("45s", 45),
                                           ("2w", 1209600), ("0", 0), ("1.5", 1.5)])
def test_parse_duration(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


def test_parse_duration_error_names_the_option():
    with pytest.raises(UsageError, match="--keep: cannot read 'soon' as a duration"):
        parse_duration("soon", "--keep")


@pytest.mark.parametrize("seconds, text", [(3600, "1h"), (5400, "90m"), (90, "90s"), (0, "0s"),
                                           (86400, "1d"), (1.5, "1.5s")])
def test_format_duration_round_trips(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text).total_seconds() == seconds


# ------------------------------------------------------------------ read_queries_file


def test_read_queries_file_reads_lines_tables_and_beir_ids(tmp_path):
    lines = tmp_path / "q.txt"
    lines.write_bytes(b"molten lava\n\n  wild yeast  \n")
    assert read_queries_file(str(lines), start=3) == [("q3", "molten lava"), ("q4", "wild yeast")]
    beir = tmp_path / "queries.jsonl"
    beir.write_text('{"_id": 7, "text": "lava", "metadata": {}}\n{"_id": 12, "text": "yeast"}\n')
    assert read_queries_file(str(beir)) == [("7", "lava"), ("12", "yeast")]  # numeric BEIR ids
    table = tmp_path / "q.csv"
    table.write_text("text\nno ids here\n")
    assert read_queries_file(str(table)) == [("q1", "no ids here")]


@pytest.mark.parametrize("name, data, message", [
    ("dup.jsonl", b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "two queries have the id 'a'"),
    ("notext.jsonl", b'{"id": "a", "query": "x"}\n', "queries need a 'text' column (it has: id, query)"),
    ("bad.txt", b"fine\n\xff\xfe\n", "line 2: not valid UTF-8"),
])
def test_read_queries_file_errors_name_the_file(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: .*{re.escape(message)}"):
        read_queries_file(str(path))
    with pytest.raises(UsageError, match="no such file"):
        read_queries_file(str(tmp_path / "missing.txt"))
