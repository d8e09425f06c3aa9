"""Fault injection on the store write path, through the real `arrowsmith index` ingest (issue 7).

Each test runs a real process on a real LanceDB table, kills it at a fault point
(``ARROWSMITH_FAULT=<point>:<n>`` → ``os._exit(137)``, what kill -9 leaves), then checks:
doctor passes, a re-run exits 0, the table equals a fault-free run's (ids, doc_keys,
vectors within 1e-6) and the re-run wrote exactly the documents that were not committed.

Vectors here are seeded unit vectors (the store does not care where they came from);
tests/test_reliability.py runs the same faults through `embed --db` with the real model.
"""

from __future__ import annotations

import shutil
import signal
import time

import pyarrow as pa
import pytest
from conftest import run, run_subprocess, to_ipc
from test_reliability_helpers import (
    FAULT,
    assert_same_table,
    corpus,
    embedded_stream,
    popen,
    snapshot,
    stored_summary,
    version,
    wait_for,
)
from test_store_helpers import chunks_batch

from arrowsmith.commands.doctor import diagnose
from arrowsmith.commands.store import StoreWriter, table_lock

pytestmark = pytest.mark.slow

BASE = {**{d: v for d, v in list(corpus(12).items())[:6]}, "gone": (2, "kg")}
INPUT = {**{d: v for d, v in list(corpus(12).items())[:3]},  # unchanged
         **{d: v for d, v in list(corpus(12, key="k2").items())[3:6]},  # changed
         **{d: v for d, v in list(corpus(12).items())[6:]}}  # new
TO_WRITE = [d for d in INPUT if BASE.get(d) != INPUT[d]]  # 9 documents: 3 changed, 6 new
INGEST = ["index", "--checkpoint-rows", "5", "--prune", "--type", "none", "--no-fts"]


def ingest(db, *extra, env=None, input=None):
    return run_subprocess([*INGEST, "--db", str(db), *extra], input=input or embedded_stream(INPUT),
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def base_store(tmp_path_factory):
    db = tmp_path_factory.mktemp("base") / "store"
    with StoreWriter(db) as w:
        w.write([chunks_batch(BASE)])
    return db


@pytest.fixture(scope="module")
def reference(base_store, tmp_path_factory):
    """The table a fault-free run produces."""
    db = tmp_path_factory.mktemp("ref") / "store"
    shutil.copytree(base_store, db)
    r = ingest(db)
    assert r.returncode == 0, r.stderr.decode()
    assert stored_summary(r.stderr.decode())["written"] == len(TO_WRITE)
    return snapshot(db)


def committed(db) -> set[str]:
    """Documents of TO_WRITE whose new version is already in the table."""
    rows = snapshot(db)
    return {d for d in TO_WRITE if any(v[0] == d and v[1] == INPUT[d][1] for v in rows.values())}


@pytest.mark.parametrize("fault, expect_committed", [
    # checkpoints of >= 5 rows commit 3, 2, 2 and 2 documents (doc00-02 are unchanged, skipped)
    ("after_read:1", 0),  # died before any commit
    ("before_commit:3", 5),  # two checkpoints went in
    ("after_commit:1", 3),
    ("after_commit:3", 7),
    ("during_prune:1", 9),  # all data committed, "gone" not yet deleted
    ("during_index:1", 9),
])
def test_kill_at_fault_point_then_rerun_converges(fault, expect_committed, base_store, reference, tmp_path):
    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    r = ingest(db, env={FAULT: fault})
    assert r.returncode == 137, r.stderr.decode()
    assert f"fault injected at {fault.split(':')[0]}" in r.stderr.decode()

    done = committed(db)
    assert len(done) == expect_committed
    assert diagnose(db, fix=True, grace_s=0).healthy, diagnose(db).findings
    assert ("gone#0" in snapshot(db)) is (fault != "during_index:1")  # pruned only once all is read

    r = ingest(db)
    assert r.returncode == 0, r.stderr.decode()
    stats = stored_summary(r.stderr.decode())
    assert stats["written"] == len(TO_WRITE) - len(done)  # only what the killed run had not committed
    assert stats["unchanged"] == len(INPUT) - stats["written"]
    assert_same_table(snapshot(db), reference)
    assert run(["doctor", "--db", str(db), "--grace", "0"]).exit_code == 0


def test_truncated_input_never_prunes(base_store, tmp_path):
    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    before = snapshot(db)
    r = ingest(db, input=embedded_stream(INPUT)[:-100])
    assert r.returncode == 65
    assert "truncated or corrupt Arrow IPC stream" in r.stderr.decode()
    after = snapshot(db)
    assert "gone#0" in after  # a partial read never prunes
    for i, (doc, key, vec) in before.items():  # nothing stored is lost; only whole documents changed
        if doc not in TO_WRITE:
            assert after[i][1] == key and (after[i][2] == vec).all()
    assert diagnose(db, grace_s=0).healthy


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_keeps_committed_checkpoints(sig, code, tmp_path):
    db = tmp_path / "store"
    docs = corpus(8)
    items = list(docs.items())
    p = popen([*INGEST, "--db", str(db)])
    first = pa.Table.from_batches([chunks_batch(dict(items[:3]))])  # 7 rows ≥ 5: one checkpoint
    stream = to_ipc(first)
    p.stdin.write(stream[:-8])  # the stream stays open: no end-of-stream marker yet
    p.stdin.flush()
    wait_for(lambda: version(db) == 1)
    # the next batch is read but holds fewer rows than a checkpoint: pending, not committed
    more = to_ipc(pa.Table.from_batches([chunks_batch(dict(items[3:4]))]))
    p.stdin.write(_batch_message(more))
    p.stdin.flush()
    time.sleep(1.0)
    sent = time.monotonic()
    p.send_signal(sig)
    _, err = p.communicate(timeout=10)
    assert time.monotonic() - sent < 5
    assert p.returncode == code, err.decode()
    assert f"interrupted by {sig.name}" in err.decode()
    rows = snapshot(db)
    assert {v[0] for v in rows.values()} == {d for d, _ in items[:3]}  # doc03 was never committed
    assert version(db) == 1
    assert diagnose(db, grace_s=0).healthy


def _batch_message(stream: bytes) -> bytes:
    """The record-batch message of a one-batch IPC stream (schema message and EOS stripped)."""
    import pyarrow as pa

    reader = pa.ipc.open_stream(stream)
    batch = reader.read_next_batch()
    return batch.serialize().to_pybytes()


def test_second_writer_exits_75_and_wait_waits(base_store, tmp_path):
    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    with table_lock(db):
        r = ingest(db)
        assert r.returncode == 75
        assert "another writer" in r.stderr.decode() and "--wait" in r.stderr.decode()
        p = popen([*INGEST, "--db", str(db), "--wait"])
        p.stdin.write(embedded_stream(INPUT))
        p.stdin.close()
        time.sleep(1.5)
        assert p.poll() is None  # still waiting for the lock
    assert p.wait(timeout=60) == 0, p.stderr.read().decode()
    assert diagnose(db).healthy


def test_two_concurrent_writers_never_duplicate_rows(base_store, reference, tmp_path):
    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    procs = [popen([*INGEST, "--db", str(db), "--wait"]) for _ in range(2)]
    for p in procs:
        p.stdin.write(embedded_stream(INPUT))
        p.stdin.close()
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0], [p.stderr.read().decode() for p in procs]
    report = diagnose(db)
    assert report.healthy, report.findings
    assert_same_table(snapshot(db), reference)


def test_disk_full_exits_74_and_keeps_the_previous_version(tmp_path):
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.decode().strip()}): needs root")
    try:
        db = mnt / "store"
        with StoreWriter(db) as w:
            w.write([chunks_batch(corpus(4))])
        before = snapshot(db)
        big = {f"big{i:03d}": (4, "kb") for i in range(200)}  # 800 × 384 floats ≈ 1.2 MB > what is left
        # one checkpoint for all: the commit that fails is the only one
        r = ingest(db, "--checkpoint-rows", "100000", input=embedded_stream(big, docs_per_batch=50))
        assert r.returncode == 74, r.stderr.decode()
        assert "No space left on device" in r.stderr.decode() or "disk full" in r.stderr.decode()
        assert_same_table(snapshot(db), before)
        assert diagnose(db, fix=True, grace_s=0).healthy  # the failed write's partial files are removed
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        r = ingest(db, input=embedded_stream(big, docs_per_batch=50))
        assert r.returncode == 0, r.stderr.decode()
        assert len(snapshot(db)) == 800  # --prune: the four first documents were not in this input
        assert diagnose(db, fix=True, grace_s=0).healthy
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_queries_and_optimize_while_a_writer_commits(base_store, tmp_path):
    from arrowsmith.commands.query import search

    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    docs = corpus(40, key="k9")
    items = list(docs.items())
    # --wait: the ingest and its index step take the lock in turn, and the optimizer may hold it
    writer = popen([*INGEST, "--db", str(db), "--checkpoint-rows", "5", "--wait"])
    optimizer = None
    vec = next(iter(snapshot(db).values()))[2][None, :]
    first = to_ipc(pa.Table.from_batches([chunks_batch(dict(items[:2]))]))
    writer.stdin.write(first[:-8])
    answered = 0
    for i in range(2, len(items), 2):  # one checkpoint per two documents, fed while we query
        part = pa.Table.from_batches([chunks_batch(dict(items[i:i + 2]))])
        writer.stdin.write(_batch_message(to_ipc(part)))
        writer.stdin.flush()
        if i == 10:
            optimizer = popen(["index", "--db", str(db), "--optimize", "--wait", "--keep", "0", "--no-fts"])
            optimizer.stdin.close()
        out = search(db, ["q"], query_vectors=vec, k=20)
        assert out.num_rows > 0
        answered += 1
    writer.stdin.write(b"\xff\xff\xff\xff\x00\x00\x00\x00")  # end of stream
    writer.stdin.close()
    assert writer.wait(timeout=120) == 0, writer.stderr.read().decode()
    assert optimizer.wait(timeout=120) == 0, optimizer.stderr.read().decode()
    assert answered == 19
    report = diagnose(db)
    assert report.healthy, report.findings
    assert {v[0] for v in snapshot(db).values()} == set(docs)  # --prune: only this input's documents
