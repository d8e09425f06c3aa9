"""Unit tests of the helpers the stages share (one implementation per job, issue 10)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from arrowsmith.commands.store import id_filters, scan_batches, sql_in
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
