"""`chunk | embed`: embed reads its input ahead of the model (issue 12), with the same results.

``read_ahead`` is the thread that lets `chunk` keep working while a group is embedded; these tests
check what it must not change (order, errors at their place, a bounded reach, a reader that stops)
and that a real pipe stores exactly what embed on the pre-chunked file stores. No timing.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pyarrow as pa
import pytest
from conftest import store_rows

from arrowsmith.commands.embed import read_ahead
from arrowsmith.commands.errors import DataError


def batches(n: int, rows: int = 10) -> list[pa.RecordBatch]:
    return [pa.record_batch({"id": [f"b{i}-{r}" for r in range(rows)]}) for i in range(n)]


class Source:
    """An input that records how far it was read and whether it was closed."""

    def __init__(self, items: list[pa.RecordBatch], fail_at: int | None = None):
        self.items, self.fail_at = items, fail_at
        self.pulled = 0
        self.closed = threading.Event()

    def __iter__(self):
        try:
            for i, b in enumerate(self.items):
                if i == self.fail_at:
                    raise DataError(f"bad row in batch {i}")
                self.pulled += 1
                yield b
        finally:
            self.closed.set()


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "arrowsmith-read"]


def test_read_ahead_keeps_order_and_bounds_its_reach():
    items = batches(20)
    size = items[0].nbytes
    src = Source(items)
    got = []
    for b in read_ahead(src, max_bytes=3 * size):
        got.append(b)
        # consumed + at most 3 queued + the one the reader holds while it waits for room
        assert src.pulled <= len(got) + 3 + 1
    assert [b.column("id").to_pylist() for b in got] == [b.column("id").to_pylist() for b in items]
    assert src.closed.wait(30)


def test_a_batch_larger_than_the_budget_still_passes():
    items = batches(3, rows=1000)
    assert [b.num_rows for b in read_ahead(iter(items), max_bytes=1)] == [1000, 1000, 1000]


def test_an_input_error_is_raised_at_its_place():
    src = Source(batches(5), fail_at=3)
    got = []
    with pytest.raises(DataError, match="bad row in batch 3"):
        for b in read_ahead(src):
            got.append(b)
    assert len(got) == 3  # every batch before the bad one was handed on first


def test_closing_early_stops_and_closes_the_reader():
    src = Source(batches(50))
    size = src.items[0].nbytes
    ahead = read_ahead(src, max_bytes=2 * size)
    next(ahead)
    ahead.close()
    assert src.closed.wait(30)  # the reader closed the input in its own thread
    for t in reader_threads():
        t.join(30)
    assert not reader_threads()
    assert src.pulled < 50


def _arrowsmith(*args: str) -> list[str]:
    return [sys.executable, "-m", "arrowsmith.cli", *args]


def _stored(db) -> pa.Table:
    import lancedb

    return lancedb.connect(str(db)).open_table("chunks").to_arrow().sort_by("id")


def test_chunk_piped_into_embed_stores_what_embed_on_the_file_stores(tmp_path):
    docs = tmp_path / "docs.jsonl"
    words = "wing slipstream lift propeller flow boundary layer shock pressure drag".split()
    lines = []
    for d in range(40):
        text = ". ".join(" ".join(words[(d + k + j) % len(words)] for j in range(8)) for k in range(6)) + "."
        lines.append(f'{{"id": "d{d}", "text": "{text}"}}\n')
    docs.write_text("".join(lines))
    chunked = tmp_path / "chunked.arrows"
    subprocess.run(_arrowsmith("chunk", str(docs), "--max-tokens", "24", "-o", str(chunked)), check=True,
                   capture_output=True, timeout=300)
    alone = subprocess.run(_arrowsmith("embed", str(chunked), "--dtype", "fp32", "--db", str(tmp_path / "a")),
                           capture_output=True, timeout=600)
    assert alone.returncode == 0, alone.stderr.decode()
    chunk = subprocess.Popen(_arrowsmith("chunk", str(docs), "--max-tokens", "24"), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
    piped = subprocess.run(_arrowsmith("embed", "--dtype", "fp32", "--db", str(tmp_path / "p")),
                           stdin=chunk.stdout, capture_output=True, timeout=600)
    chunk.stdout.close()
    assert chunk.wait(60) == 0
    assert piped.returncode == 0, piped.stderr.decode()
    a, p = _stored(tmp_path / "a"), _stored(tmp_path / "p")
    assert a.num_rows == p.num_rows > 40  # several chunks per document
    for col in ("id", "doc_id", "chunk_index", "text", "start", "end", "doc_key"):
        assert a.column(col).to_pylist() == p.column(col).to_pylist(), col
    va = np.array(a.column("vector").to_pylist(), np.float32)
    vp = np.array(p.column("vector").to_pylist(), np.float32)
    assert np.abs(va - vp).max() <= 1e-6


# ------------------------------------------------------------------ the store's per-document memory


def test_store_writer_keeps_no_input_id_set_without_prune_and_counts_as_before(tmp_path, fake_chunks):
    from arrowsmith.commands.store import StoreWriter

    docs = {"a": (2, "ka"), "b": (1, "kb"), "c": (3, "kc")}
    with StoreWriter(tmp_path / "db") as w:
        assert not w.is_current("a", "ka")
        stats = w.write([fake_chunks.batch(docs)])
        assert stats.docs_written == 3 and stats.docs_skipped == 0
        # a document written in this run is current now, and still not counted as unchanged
        assert w.is_current("a", "ka") and w.stats.docs_skipped == 0
        assert not w._seen  # issue 12: the input's ids are kept only for --prune (O(documents))
    with StoreWriter(tmp_path / "db", prune=True) as w:
        assert w.is_current("a", "ka") and w.is_current("a", "ka")  # asked twice, counted once
        stats = w.write([fake_chunks.batch({"b": (1, "kb2")})])
        counts = stats.docs_skipped, stats.docs_written, stats.docs_replaced, stats.docs_pruned
        assert counts == (1, 1, 1, 1)
    assert sorted(store_rows(tmp_path / "db")) == ["a#0", "a#1", "b#0"]  # c pruned, b replaced
