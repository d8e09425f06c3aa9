"""Helpers for the reliability tests: corpora, table snapshots, subprocess writers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
from conftest import to_ipc
from test_store_helpers import chunks_batch

FAULT = "ARROWSMITH_FAULT"


def corpus(n_docs: int = 12, key: str = "k1", chunks: int = 2) -> dict[str, tuple[int, str]]:
    """doc_id → (chunks, doc_key): the plumbing corpus for store-level tests."""
    return {f"doc{i:02d}": (chunks + i % 2, f"{key}-{i}") for i in range(n_docs)}


def embedded_stream(docs: dict[str, tuple[int, str]], docs_per_batch: int = 2) -> bytes:
    """Embedded chunks as one IPC stream, a few documents per batch (documents never split)."""
    items = list(docs.items())
    batches = [chunks_batch(dict(items[i:i + docs_per_batch])) for i in range(0, len(items), docs_per_batch)]
    return to_ipc(pa.Table.from_batches(batches))


def snapshot(db, table: str = "chunks") -> dict[str, tuple[str, str, np.ndarray]]:
    """id → (doc_id, doc_key, vector) of the stored table."""
    from arrowsmith.commands.store import open_table

    t = open_table(db, table).search().select(["id", "doc_id", "doc_key", "vector"]).limit(None).to_arrow()
    vecs = np.asarray(t.column("vector").combine_chunks().flatten()).reshape(t.num_rows, -1)
    return {i: (d, k, vecs[r]) for r, (i, d, k) in enumerate(zip(
        t.column("id").to_pylist(), t.column("doc_id").to_pylist(), t.column("doc_key").to_pylist(),
        strict=True))}


def assert_same_table(got: dict, want: dict, atol: float = 1e-6) -> None:
    assert sorted(got) == sorted(want), (sorted(set(got) ^ set(want)))
    for i, (doc, key, vec) in want.items():
        assert got[i][:2] == (doc, key), i
        np.testing.assert_allclose(got[i][2], vec, atol=atol, err_msg=i)
    assert len(got) == len(want)  # no id twice (a dict would hide it: doctor checks that)


def version(db, table: str = "chunks") -> int | None:
    from arrowsmith.commands.store import open_table, table_exists

    return open_table(db, table).version if table_exists(db, table) else None


def wait_for(cond, timeout: float = 30, step: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(step)


def popen(args: list[str], env: dict | None = None) -> subprocess.Popen:
    """A real `arrowsmith` process with stdin we feed batch by batch."""
    return subprocess.Popen([sys.executable, "-m", "arrowsmith.cli", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


def stored_summary(stderr: str) -> dict[str, int]:
    """Numbers of the store writer's summary line (WriteStats.summary)."""
    m = re.search(r"(\d+) documents written \((\d+) replaced\), (\d+) unchanged, (\d+) pruned; "
                  r"(\d+) rows written, (\d+) deleted in (\d+) commits", stderr)
    assert m, stderr
    keys = ("written", "replaced", "unchanged", "pruned", "rows_added", "rows_deleted", "commits")
    return dict(zip(keys, map(int, m.groups()), strict=True))


def files_under(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}
