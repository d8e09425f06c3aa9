"""Fault injection on the store write path, through the real `arrowsmith index` ingest (issue 7).

Each test runs a real process on a real LanceDB table, kills it at a fault point
(``ARROWSMITH_FAULT=<point>:<n>`` → ``os._exit(137)``, what kill -9 leaves), then checks:
doctor passes, a re-run (the same CLI, in-process) exits 0, the table equals a fault-free
run's (ids, doc_keys, vectors within 1e-6) and the re-run wrote exactly the documents that
were not committed.
Signals are sent at a point the process announces (``<point>:<n>:pause``, a line on stderr),
never after a sleep (issue 10).

Vectors here are seeded unit vectors (the store does not care where they came from);
tests/test_reliability.py runs the same faults through `embed --db` with the real model.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from dataclasses import dataclass

import pyarrow as pa
import pytest
from conftest import run, run_subprocess, to_ipc

from arrowsmith.commands.doctor import diagnose
from arrowsmith.commands.faults import ENV as FAULT
from arrowsmith.commands.store import StoreWriter, open_table, table_lock

pytestmark = pytest.mark.slow


def corpus(n_docs: int = 12, key: str = "k1", chunks: int = 2) -> dict[str, tuple[int, str]]:
    """doc_id → (chunks, doc_key): 2 or 3 chunks a document."""
    return {f"doc{i:02d}": (chunks + i % 2, f"{key}-{i}") for i in range(n_docs)}


BASE = {**{d: v for d, v in list(corpus(12).items())[:6]}, "gone": (2, "kg")}
INPUT = {**{d: v for d, v in list(corpus(12).items())[:3]},  # unchanged
         **{d: v for d, v in list(corpus(12, key="k2").items())[3:6]},  # changed
         **{d: v for d, v in list(corpus(12).items())[6:]}}  # new
TO_WRITE = [d for d in INPUT if BASE.get(d) != INPUT[d]]  # 9 documents: 3 changed, 6 new
INGEST = ["index", "--checkpoint-rows", "5", "--prune", "--type", "none", "--no-fts"]


def stored_summary(stderr: str) -> dict[str, int]:
    """Numbers of the store writer's summary line (WriteStats.summary)."""
    m = re.search(r"(\d+) documents written \((\d+) replaced\), (\d+) unchanged, (\d+) pruned; "
                  r"(\d+) rows written, (\d+) deleted in (\d+) commits", stderr)
    assert m, stderr
    keys = ("written", "replaced", "unchanged", "pruned", "rows_added", "rows_deleted", "commits")
    return dict(zip(keys, map(int, m.groups()), strict=True))


def ingest(db, data: bytes, *extra, env=None):
    """A real ``arrowsmith index`` process: what a fault point (``os._exit(137)``) must kill."""
    return run_subprocess([*INGEST, "--db", str(db), *extra], input=data, env=env, timeout=120)


@dataclass(frozen=True)
class Ingested:
    returncode: int
    stderr: bytes


def ingest_here(db, data: bytes, *extra) -> Ingested:
    """The same ingest through the CLI in this process: for runs no fault or signal ends and no
    other process's lock must stop (a fresh interpreter per run costs its imports)."""
    r = run([*INGEST, "--db", str(db), *extra], input=data)
    return Ingested(r.exit_code, r.stderr.encode())


@pytest.fixture(scope="module")
def stream(fake_chunks) -> bytes:
    return fake_chunks.stream(INPUT)


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, fake_chunks):
    db = tmp_path_factory.mktemp("base") / "store"
    with StoreWriter(db) as w:
        w.write([fake_chunks.batch(BASE)])
    return db


@pytest.fixture(scope="module")
def reference(base_store, stream, tmp_path_factory, stored):
    """The table a fault-free run produces."""
    db = tmp_path_factory.mktemp("ref") / "store"
    shutil.copytree(base_store, db)
    r = ingest_here(db, stream)
    assert r.returncode == 0, r.stderr.decode()
    assert stored_summary(r.stderr.decode())["written"] == len(TO_WRITE)
    return stored.snapshot(db)


def committed(rows: dict) -> set[str]:
    """Documents of TO_WRITE whose new version is in the snapshot ``rows``."""
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
def test_kill_at_fault_point_then_rerun_converges(fault, expect_committed, base_store, reference, stream,
                                                  stored, tmp_path):
    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    r = ingest(db, stream, env={FAULT: fault})
    assert r.returncode == 137, r.stderr.decode()
    assert f"fault injected at {fault.split(':')[0]}" in r.stderr.decode()

    done = committed(stored.snapshot(db))
    assert len(done) == expect_committed
    assert diagnose(db, fix=True, grace_s=0).healthy, diagnose(db).findings
    assert ("gone#0" in stored.snapshot(db)) is (fault != "during_index:1")  # pruned only once all is read

    r = ingest_here(db, stream)
    assert r.returncode == 0, r.stderr.decode()
    stats = stored_summary(r.stderr.decode())
    assert stats["written"] == len(TO_WRITE) - len(done)  # only what the killed run had not committed
    assert stats["unchanged"] == len(INPUT) - stats["written"]
    stored.assert_same(stored.snapshot(db), reference)
    assert run(["doctor", "--db", str(db), "--grace", "0"]).exit_code == 0


def test_kill_between_a_changed_documents_add_and_its_delete_is_repaired_by_the_rerun(
        fake_chunks, stored, tmp_path):
    """A changed document is written in two commits (its new chunks added, then its old rows deleted
    by row id). Killed between them, the table holds both, with two doc_keys: doctor says so, the
    document is never "current", and the re-run leaves exactly what a clean run does."""
    db = tmp_path / "store"
    with StoreWriter(db) as w:
        w.write([fake_chunks.batch({"keep": (2, "kk"), "shrink": (3, "k1")})])
    shrunk = fake_chunks.stream({"keep": (2, "kk"), "shrink": (2, "k2")})
    r = ingest(db, shrunk, env={FAULT: "between_add_and_delete"})
    assert r.returncode == 137, r.stderr.decode()
    rows = stored.snapshot(db)
    assert sorted(i for i, v in rows.items() if v[0] == "shrink") == ["shrink#0", "shrink#1", "shrink#2"]
    assert {v[1] for v in rows.values() if v[0] == "shrink"} == {"k1", "k2"}  # mixed: not current
    assert open_table(db).count_rows() == 2 + 3 + 2  # nothing lost: "keep", the old "shrink", the new
    assert not diagnose(db, grace_s=0).healthy
    r = ingest_here(db, shrunk)
    assert r.returncode == 0, r.stderr.decode()
    assert stored_summary(r.stderr.decode())["written"] == 1  # "shrink" again; "keep" unchanged
    rows = stored.snapshot(db)
    assert sorted(rows) == ["keep#0", "keep#1", "shrink#0", "shrink#1"]
    assert {v[1] for v in rows.values() if v[0] == "shrink"} == {"k2"}
    assert diagnose(db, grace_s=0).healthy


def test_truncated_input_never_prunes(base_store, stream, stored, tmp_path):
    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    before = stored.snapshot(db)
    r = ingest_here(db, stream[:-100])
    assert r.returncode == 65
    assert "truncated or corrupt Arrow IPC stream" in r.stderr.decode()
    after = stored.snapshot(db)
    assert "gone#0" in after  # a partial read never prunes
    for i, (doc, key, vec) in before.items():  # nothing stored is lost; only whole documents changed
        if doc not in TO_WRITE:
            assert after[i][1] == key and (after[i][2] == vec).all()
    assert diagnose(db, grace_s=0).healthy


def test_stream_cut_at_a_batch_boundary_never_prunes(base_store, fake_chunks, bad_input, stored, tmp_path):
    """Issue 21: the producer died between two batches. pyarrow reads such a stream as complete;
    before, `index --prune` then deleted every stored document the producer never sent."""
    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    before, v = stored.snapshot(db), stored.version(db)
    sent = dict(list(BASE.items())[:3])  # 3 of the 7 stored documents, unchanged, 2 per batch
    data = bad_input.unterminated_ipc(fake_chunks.stream(sent))
    r = ingest(db, data)  # a real process, as cron runs it
    assert r.returncode == 65, r.stderr.decode()
    err = r.stderr.decode()
    assert "<stdin>: truncated Arrow IPC stream: stream 1 ended after row" in err
    assert "without its end-of-stream marker" in err and "Traceback" not in err
    assert stored.version(db) == v  # nothing pruned, nothing committed
    stored.assert_same(stored.snapshot(db), before)
    # the same documents, the stream whole: prune deletes the 4 not sent (what --prune is for)
    r = ingest_here(db, fake_chunks.stream(sent))
    assert r.returncode == 0, r.stderr.decode()
    assert stored_summary(r.stderr.decode())["pruned"] == len(BASE) - 3


def test_stream_cut_after_some_checkpoints_keeps_them_and_the_rerun_converges(
        base_store, reference, stream, bad_input, stored, tmp_path):
    """Cut after its last whole batch, with documents to write: the checkpoints committed before
    the end stay (as after any interrupted run), nothing is pruned, the re-run finishes the rest."""
    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    r = ingest_here(db, bad_input.unterminated_ipc(stream))
    assert r.returncode == 65, r.stderr.decode()
    rows = stored.snapshot(db)
    assert committed(rows)  # checkpoints went in before the end of the input
    assert "gone#0" in rows  # never pruned
    assert diagnose(db, grace_s=0).healthy
    r = ingest_here(db, stream)
    assert r.returncode == 0, r.stderr.decode()
    assert stored_summary(r.stderr.decode())["written"] == len(TO_WRITE) - len(committed(rows))
    stored.assert_same(stored.snapshot(db), reference)


def test_prune_refuses_jsonl_from_a_pipe(base_store, stored, tmp_path):
    """JSONL has no end marker: from a pipe, a producer killed at a line boundary reads like one that
    finished, so --prune asks for a file (whose end is the end) or an Arrow stream."""
    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    v = stored.version(db)
    r = ingest_here(db, b'{"id": "doc00#0", "doc_id": "doc00"}\n', "--input-format", "jsonl")
    assert r.returncode == 2, r.stderr.decode()
    err = r.stderr.decode()
    assert "--prune needs an input whose end can be checked: <stdin> is jsonl from a pipe" in err
    assert stored.version(db) == v


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("where", ["checkpoint ready", "waiting for input"])
def test_signal_mid_run_keeps_committed_checkpoints(sig, code, where, cli_process, fake_chunks, stored,
                                                    tmp_path):
    db = tmp_path / "store"
    items = list(corpus(8).items())
    first = to_ipc(pa.Table.from_batches([fake_chunks.batch(dict(items[:3]))]))  # 7 rows ≥ 5: commit 1
    doc03 = _batch_message(to_ipc(pa.Table.from_batches([fake_chunks.batch(dict(items[3:4]))])))  # 3 rows
    doc04 = _batch_message(to_ipc(pa.Table.from_batches([fake_chunks.batch(dict(items[4:5]))])))  # 2 rows
    if where == "checkpoint ready":
        # doc03 + doc04 fill the second checkpoint: the writer stops right before committing it
        p = cli_process([*INGEST, "--db", str(db)], env={FAULT: "before_commit:2:pause"})
        p.write(first[:-8] + doc03 + doc04)  # no end-of-stream marker: the input stays open
        p.wait_for_stderr("paused at before_commit (hit 2)")
    else:
        # the first checkpoint is committed (its debug line), then the writer reads on: doc03 is
        # pending or not yet read, and the stream is open, so it waits for more input
        p = cli_process(["-vv", *INGEST, "--db", str(db)])
        p.write(first[:-8] + doc03)
        p.wait_for_stderr("checkpoint 1: 7 rows")
    sent = time.monotonic()
    p.signal(sig)
    returncode, err = p.finish(timeout=60)
    assert time.monotonic() - sent < 5  # README: exit 130 / 143 within 5 s
    assert returncode == code, err
    assert f"interrupted by {sig.name}" in err and "Traceback" not in err
    assert {v[0] for v in stored.snapshot(db).values()} == {d for d, _ in items[:3]}  # the first checkpoint
    assert stored.version(db) == 1  # and nothing after it
    assert diagnose(db, grace_s=0).healthy


def test_a_signal_inside_a_log_write_is_not_swallowed():
    """logging's emit catches Exception: an Interrupted that were one would be printed as a
    "Logging error" and lost, and the run would go on to commit (issue 10; found by the
    "waiting for input" case above, whose signal lands while the writer logs at -vv)."""
    import io
    import logging
    import os

    from arrowsmith.commands import signals
    from arrowsmith.commands.errors import Interrupted

    class SignalOnWrite(io.StringIO):
        def write(self, text: str) -> int:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs right here, inside emit
            return super().write(text)

    log = logging.getLogger("arrowsmith.test.signal")
    log.addHandler(logging.StreamHandler(SignalOnWrite()))
    log.propagate = False
    signals.install()
    try:
        with pytest.raises(Interrupted) as e:
            log.warning("checkpoint 1: 7 rows, version 1")
        assert e.value.exit_code == 143
        with pytest.raises(Interrupted):  # nor does a guard that catches every Exception
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except Exception:  # noqa: BLE001 - what the guards in the library do
                pass
    finally:
        log.handlers.clear()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _batch_message(stream: bytes) -> bytes:
    """The record-batch message of a one-batch IPC stream (schema message and EOS stripped)."""
    reader = pa.ipc.open_stream(stream)
    batch = reader.read_next_batch()
    return batch.serialize().to_pybytes()


def test_second_writer_exits_75_and_wait_waits(base_store, stream, cli_process, stored, tmp_path):
    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    v = stored.version(db)
    with table_lock(db):
        r = ingest(db, stream)
        assert r.returncode == 75
        assert "another writer" in r.stderr.decode() and "--wait" in r.stderr.decode()
        p = cli_process(["-v", *INGEST, "--db", str(db), "--wait"])
        p.write(stream, close=True)
        p.wait_for_stderr("waiting for the lock on")  # it found the lock held and blocks on it
        assert p.poll() is None and stored.version(db) == v
    returncode, err = p.finish()
    assert returncode == 0, err
    assert stored_summary(err)["written"] == len(TO_WRITE)
    assert diagnose(db).healthy


def test_two_concurrent_writers_never_duplicate_rows(base_store, reference, stream, cli_process, stored,
                                                     tmp_path):
    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    procs = [cli_process([*INGEST, "--db", str(db), "--wait"]) for _ in range(2)]
    for p in procs:
        p.write(stream, close=True)
    results = [p.finish() for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    # whichever took the lock first wrote everything; the other found it all current
    assert sorted(stored_summary(err)["written"] for _, err in results) == [0, len(TO_WRITE)]
    report = diagnose(db)
    assert report.healthy, report.findings
    stored.assert_same(stored.snapshot(db), reference)


def test_disk_full_exits_74_and_keeps_the_previous_version(fake_chunks, stored, tmp_path):
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.decode().strip()}): needs root")
    try:
        db = mnt / "store"
        with StoreWriter(db) as w:
            w.write([fake_chunks.batch(corpus(4))])
        before = stored.snapshot(db)
        big = {f"big{i:03d}": (4, "kb") for i in range(200)}  # 800 × 384 floats ≈ 1.2 MB > what is left
        # one checkpoint for all: the commit that fails is the only one
        r = ingest(db, fake_chunks.stream(big, docs_per_batch=50), "--checkpoint-rows", "100000")
        assert r.returncode == 74, r.stderr.decode()
        assert "No space left on device" in r.stderr.decode() or "disk full" in r.stderr.decode()
        stored.assert_same(stored.snapshot(db), before)
        assert diagnose(db, fix=True, grace_s=0).healthy  # the failed write's partial files are removed
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        r = ingest(db, fake_chunks.stream(big, docs_per_batch=50))
        assert r.returncode == 0, r.stderr.decode()
        assert len(stored.snapshot(db)) == 800  # --prune: the four first documents were not in this input
        assert diagnose(db, fix=True, grace_s=0).healthy
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_queries_and_optimize_while_a_writer_commits(base_store, cli_process, fake_chunks, stored, tmp_path):
    from arrowsmith.commands.query import search

    db = tmp_path / "store"
    shutil.copytree(base_store, db)
    docs = corpus(40, key="k9")
    items = list(docs.items())
    # --wait: the ingest and its index step take the lock in turn, and the optimizer may hold it
    writer = cli_process([*INGEST, "--db", str(db), "--checkpoint-rows", "5", "--wait"])
    optimizer = None
    vec = next(iter(stored.snapshot(db).values()))[2][None, :]
    first = to_ipc(pa.Table.from_batches([fake_chunks.batch(dict(items[:2]))]))
    writer.write(first[:-8])
    answered = 0
    for i in range(2, len(items), 2):  # one checkpoint per two documents, fed while we query
        part = pa.Table.from_batches([fake_chunks.batch(dict(items[i:i + 2]))])
        writer.write(_batch_message(to_ipc(part)))
        if i == 10:
            optimizer = cli_process(["index", "--db", str(db), "--optimize", "--wait", "--keep", "0",
                                     "--no-fts"])
            optimizer.write(b"", close=True)
        out = search(db, ["q"], query_vectors=vec, k=20)
        assert out.num_rows > 0
        answered += 1
    writer.write(b"\xff\xff\xff\xff\x00\x00\x00\x00", close=True)  # end of stream
    for p in (writer, optimizer):
        returncode, err = p.finish()
        assert returncode == 0, err
    assert answered == 19
    report = diagnose(db)
    assert report.healthy, report.findings
    assert {v[0] for v in stored.snapshot(db).values()} == set(docs)  # --prune: only this input's documents
