"""Faults through the real pipeline: `chunk` output → `embed --db` with the real model (issue 7).

Kill -9 at each fault point of the embed write path, SIGINT/SIGTERM, and the security
cases. Store-level faults with several checkpoints (and prune, index, disk full, concurrent
writers) are in tests/test_reliability_store.py, which runs without loading the model.
Only the runs a fault point or a signal ends are real processes; set-up and re-runs go through
the same CLI in this process (each process pays a torch import and a model load).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from conftest import EOS_MARKER, SAMPLES, read_ipc, run, run_subprocess, to_ipc

from arrowsmith.commands.doctor import diagnose
from arrowsmith.commands.faults import ENV as FAULT

pytestmark = pytest.mark.slow

EMBED = ["embed", "--dtype", "fp32", "--device", "cpu"]


def embed(db, data: bytes, *extra, env=None):
    """A real ``arrowsmith embed`` process: what a fault point (``os._exit(137)``) must kill."""
    return run_subprocess([*EMBED, "--db", str(db), *extra], input=data, env=env, timeout=300)


@dataclass(frozen=True)
class Embedded:
    returncode: int
    stderr: bytes


def embed_here(db, data: bytes, *extra) -> Embedded:
    """The same `embed --db` run in this process (no fault, no signal: no process needed), so it
    does not pay a fresh interpreter's torch import and model load each time."""
    r = run([*EMBED, "--db", str(db), *extra], input=data)
    return Embedded(r.exit_code, r.stderr.encode())


def embedded(stderr: bytes) -> int:
    m = re.search(r"(\d+) embedded", stderr.decode())
    assert m, stderr.decode()
    return int(m.group(1))


def files_under(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


@pytest.fixture(scope="module")
def chunked() -> pa.Table:
    r = run(["chunk", str(SAMPLES), "--max-tokens", "64"])
    assert r.exit_code == 0, r.stderr
    return read_ipc(r.stdout_bytes)


@pytest.fixture(scope="module")
def half_store(chunked, tmp_path_factory):
    """A store holding the first half of the documents: what an earlier cron run left."""
    db = tmp_path_factory.mktemp("half") / "store"
    r = embed_here(db, to_ipc(chunked.slice(0, chunked.num_rows // 2)))
    assert r.returncode == 0, r.stderr.decode()
    return db


@pytest.fixture(scope="module")
def reference(half_store, chunked, tmp_path_factory, stored):
    db = tmp_path_factory.mktemp("ref") / "store"
    shutil.copytree(half_store, db)
    r = embed_here(db, to_ipc(chunked))
    assert r.returncode == 0, r.stderr.decode()
    assert embedded(r.stderr) == chunked.num_rows - chunked.num_rows // 2
    return db, stored.snapshot(db)


@pytest.mark.parametrize("fault, committed", [
    # after_read, during_prune and multi-checkpoint cases: test_reliability_store.py (no model load)
    ("before_commit:1", False),  # all embedding done, nothing committed
    ("after_commit:1", True),  # embed commits one checkpoint for this small corpus
])
def test_embed_killed_at_fault_point_converges(fault, committed, chunked, half_store, reference, stored,
                                               tmp_path):
    db = tmp_path / "store"
    shutil.copytree(half_store, db)
    before = stored.snapshot(db)
    r = embed(db, to_ipc(chunked), env={FAULT: fault})
    assert r.returncode == 137, r.stderr.decode()
    report = diagnose(db, fix=True, grace_s=0)
    assert report.healthy, report.findings
    if not committed:
        stored.assert_same(stored.snapshot(db), before)  # what the earlier run stored is all there
    r = embed_here(db, to_ipc(chunked))
    assert r.returncode == 0, r.stderr.decode()
    new = chunked.num_rows - chunked.num_rows // 2
    assert embedded(r.stderr) == (0 if committed else new)  # only what was not committed
    stored.assert_same(stored.snapshot(db), reference[1])
    assert run(["doctor", "--db", str(db)]).exit_code == 0


def stored_model(db) -> dict:
    import json

    from arrowsmith.commands.store import open_table

    return json.loads(open_table(db).schema.metadata[b"arrowsmith.model"])


@pytest.mark.parametrize("fault", ["before_commit:1", "after_commit:1"])
def test_multivector_build_killed_at_fault_point_converges(fault, chunked, stored, tmp_path):
    """embed --multivector goes through the same writer: killed at a commit point, the table is
    healthy (token column included) and a re-run ends with the fault-free table, tokens and all."""
    mv = ["--multivector", "--checkpoint-rows", "8"]
    half = to_ipc(chunked.slice(0, chunked.num_rows // 2))
    clean, db = tmp_path / "clean", tmp_path / "store"
    for target in (clean, db):
        assert embed_here(target, half, *mv).returncode == 0
    assert embed_here(clean, to_ipc(chunked), *mv).returncode == 0
    r = embed(db, to_ipc(chunked), *mv, env={FAULT: fault})
    assert r.returncode == 137, r.stderr.decode()
    report = diagnose(db, fix=True, grace_s=0)
    assert report.healthy, report.findings
    r = embed_here(db, to_ipc(chunked), *mv)
    assert r.returncode == 0, r.stderr.decode()
    stored.assert_same(stored.snapshot(db), stored.snapshot(clean))
    from arrowsmith.commands.spaces import multi
    from arrowsmith.commands.store import open_table

    # the default precision (residual): the same first group fits the same codebook, and the
    # killed run's file (written before its first commit) is the one the re-run adopts or rewrites
    settings = [multi.settings_of(stored_model(p), p, "chunks") for p in (db, clean)]
    assert settings[0].codebook == settings[1].codebook and settings[0].precision == "residual"
    assert sorted(x.name for x in db.glob("*.codebook")) == sorted(x.name for x in clean.glob("*.codebook"))
    (a, oa), (b, ob) = (multi.decode(open_table(p).to_arrow().sort_by("id").column("tokens"), s)
                        for p, s in zip((db, clean), settings, strict=True))
    assert (oa == ob).all()  # every chunk, one vector per token
    # the same tokens: float noise between batchings may move a token to a neighbouring centroid
    assert np.mean((a * b).sum(axis=1) > 0.99) > 0.99
    assert run(["doctor", "--db", str(db)]).exit_code == 0


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_embedding_keeps_earlier_checkpoints_and_commits_nothing_more(
        sig, code, chunked, half_store, reference, cli_process, stored, tmp_path):
    """With a checkpoint per document, the signal comes as the 3rd new document is about to be
    committed: the process announces that point (a fault that pauses) instead of the test
    guessing it with a sleep, which on a fast machine let every checkpoint in (issue 10)."""
    db = tmp_path / "store"
    shutil.copytree(half_store, db)
    before, v = stored.snapshot(db), stored.version(db)
    new_docs = chunked.column("id").to_pylist()[chunked.num_rows // 2:]
    assert len(new_docs) >= 3
    data = tmp_path / "chunked.arrows"  # a file, not a pipe: a paused reader never blocks the test
    data.write_bytes(to_ipc(chunked))
    p = cli_process([*EMBED, "--db", str(db), "--checkpoint-rows", "1", str(data)],
                    env={FAULT: "before_commit:3:pause"})
    p.wait_for_stderr("paused at before_commit (hit 3)")
    sent = time.monotonic()
    p.signal(sig)
    returncode, err = p.finish(timeout=60)
    assert time.monotonic() - sent < 5  # README: exit 130 / 143 within 5 s
    assert returncode == code, err
    assert f"interrupted by {sig.name}" in err and "Traceback" not in err
    # the two checkpoints committed before the signal are intact, the third is not in
    assert stored.version(db) == v + 2
    rows = stored.snapshot(db)
    kept = {i: r for i, r in reference[1].items() if r[0] in new_docs[:2]}
    stored.assert_same(rows, {**before, **kept})
    assert not {r[0] for r in rows.values()} & set(new_docs[2:])
    doctor = run(["doctor", "--db", str(db), "--grace", "0"])
    assert doctor.exit_code == 0, doctor.stdout_bytes.decode() + doctor.stderr
    # a re-run embeds only the documents that were not committed and ends with the fault-free table
    r = embed_here(db, to_ipc(chunked))
    assert r.returncode == 0, r.stderr.decode()
    assert embedded(r.stderr) == len(new_docs) - 2
    stored.assert_same(stored.snapshot(db), reference[1])


# ------------------------------------------------------------------ bad input into a store


def test_bad_input_into_a_store_loses_nothing(chunked, half_store, bad_input, stored, tmp_path):
    db = tmp_path / "store"
    shutil.copytree(half_store, db)
    before, v = stored.snapshot(db), stored.version(db)
    # each case costs a model load: the two that reach the store; the rest are in test_bad_input.py
    cases = {
        "truncated stream": (bad_input.truncated_ipc(to_ipc(chunked)),
                             "<stdin>: truncated or corrupt Arrow IPC"),
        "type drift": (bad_input.drift_ipc(pa.table({"id": ["a"], "text": ["fine text"]})), "<stdin>"),
        # every batch whole, no end-of-stream marker: a producer killed between two batches
        "stream cut at a batch boundary": (bad_input.unterminated_ipc(to_ipc(chunked)),
                                           "<stdin>: truncated Arrow IPC stream: stream 1 ended after row 8"),
    }
    for what, (data, message) in cases.items():
        r = embed_here(db, data, "--prune")  # --prune: a partial read must never delete
        assert r.returncode == 65, (what, r.stderr.decode())
        assert message in r.stderr.decode(), (what, r.stderr.decode())
        assert stored.version(db) == v, what
        stored.assert_same(stored.snapshot(db), before)


# ------------------------------------------------------------------ a producer that dies (issue 21)


def _whole_batches(data: bytes) -> int:
    """How many record batches of an IPC stream (possibly cut short) are whole in ``data``."""
    n = 0
    try:
        reader = pa.ipc.open_stream(io.BytesIO(data))
        while True:
            reader.read_next_batch()
            n += 1
    except (StopIteration, pa.ArrowInvalid, OSError):
        return n


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_chunk_killed_mid_stream_into_embed_prune_prunes_nothing(sig, chunked, stored, tmp_path):
    """`chunk - | embed --db --prune` with chunk killed after its first batch: before, embed read the
    cut stream as complete, exited 0 and pruned every document chunk had not sent yet. The test is
    the pipe between the two: it forwards what chunk wrote, and kills chunk once a whole batch has
    come out (an observable event, not a sleep)."""
    docs = chunked.select(["id", "text"])
    full = run(["chunk", "--max-tokens", "64"], input=to_ipc(docs))
    assert full.exit_code == 0, full.stderr
    assert full.stdout_bytes.endswith(EOS_MARKER)  # a stage that finishes always writes the marker
    db = tmp_path / "store"
    r = embed_here(db, full.stdout_bytes, "--prune")
    assert r.returncode == 0, r.stderr.decode()
    before, v = stored.snapshot(db), stored.version(db)

    chunk = subprocess.Popen([sys.executable, "-m", "arrowsmith.cli", "chunk", "--max-tokens", "64"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first_half = to_ipc(docs.slice(0, docs.num_rows // 2))[:-len(EOS_MARKER)]
        chunk.stdin.write(first_half)  # stdin stays open: chunk waits for more after this batch
        chunk.stdin.flush()
        out = b""
        while _whole_batches(out) < 1:
            data = os.read(chunk.stdout.fileno(), 1 << 16)
            assert data, chunk.stderr.read().decode()
            out += data
        chunk.send_signal(sig)
        out += chunk.stdout.read()
        assert chunk.wait(timeout=60) == (-sig if sig == signal.SIGKILL else 143)
    finally:
        chunk.kill()
        chunk.communicate()
    assert not out.endswith(EOS_MARKER)  # a stage stopped by a signal never writes the marker
    assert read_ipc_rows(out) == docs.num_rows // 2

    r = embed_here(db, out, "--prune")
    assert r.returncode == 65, r.stderr.decode()
    assert "truncated Arrow IPC stream" in r.stderr.decode()
    assert stored.version(db) == v
    stored.assert_same(stored.snapshot(db), before)  # nothing pruned
    # the re-run of the whole pipeline converges: nothing to embed, nothing to prune
    r = embed_here(db, full.stdout_bytes, "--prune")
    assert r.returncode == 0, r.stderr.decode()
    assert "0 embedded, 0 pruned" in r.stderr.decode()
    stored.assert_same(stored.snapshot(db), before)


def read_ipc_rows(data: bytes) -> int:
    """Rows in the whole batches of a (cut) IPC stream."""
    reader = pa.ipc.open_stream(io.BytesIO(data))
    n = 0
    for _ in range(_whole_batches(data)):
        n += reader.read_next_batch().num_rows
    return n


# ------------------------------------------------------------------ security


def test_model_with_custom_code_is_refused_without_trust(tmp_path):
    from arrowsmith.plugins.sentence_transformers import resolve_model_path

    src = resolve_model_path("all-MiniLM-L6-v2")
    model_dir = tmp_path / "custom-model"
    shutil.copytree(src, model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (model_dir / "config.json").write_text(json.dumps(cfg))
    (model_dir / "modeling_evil.py").write_text("raise SystemExit('custom code ran')\n")
    data = to_ipc(pa.table({"id": ["a"], "text": ["hello"]}))
    r = run(["embed", "--model", str(model_dir)], input=data)
    assert r.exit_code == 2, r.stderr
    assert "ships its own Python code; refusing to run it" in r.stderr
    assert "--trust-remote-code" in r.stderr
    assert "custom code ran" not in r.stderr + r.stdout


def test_where_filters_cannot_inject_sql(reference, tmp_path):
    from arrowsmith.commands.errors import UsageError
    from arrowsmith.commands.query import search
    from arrowsmith.commands.store import open_table

    db = tmp_path / "store"
    shutil.copytree(reference[0], db)
    n = open_table(db).count_rows()
    vec = next(iter(reference[1].values()))[2][None, :]
    v = open_table(db).version
    for where in ("1=1; DROP TABLE chunks", "doc_id = 'x'; DELETE FROM chunks"):
        # LanceDB would parse one expression and silently drop what follows ';': refused, exit 2
        with pytest.raises(UsageError, match="bad --where filter") as e:
            search(db, ["q"], where=where, query_vectors=vec, k=50)
        assert e.value.exit_code == 2
        assert open_table(db).count_rows() == n and open_table(db).version == v
    # a quote inside a value stays inside the value
    out = search(db, ["q"], where="doc_id = 'sky.md'' OR ''1''=''1'", query_vectors=vec, k=50)
    assert out.num_rows == 0
    out = search(db, ["q"], where="doc_id = 'sky.md' OR 1=1", query_vectors=vec, k=50)
    assert out.num_rows == n  # a filter can widen its own results, nothing else
    assert open_table(db).count_rows() == n and diagnose(db).healthy


def test_path_ids_stay_in_the_store_and_duplicate_ids_across_runs_replace(stored, tmp_path):
    db = tmp_path / "area" / "store"
    db.parent.mkdir()
    outside = files_under(tmp_path)
    ids = ["../../etc/passwd", "/etc/passwd", "..\\..\\win.ini", "a/../../../b", "quote'id",
           "nul\x00id", "dup"]
    texts = [f"Text number {i}." for i in range(len(ids))]
    r = embed_here(db, to_ipc(pa.table({"id": ids, "text": texts})))
    assert r.returncode == 0, r.stderr.decode()
    new = files_under(tmp_path) - outside
    assert all(f.startswith("area/store/") for f in new), sorted(new)
    assert {v[0] for v in stored.snapshot(db).values()} == set(ids)
    # a second run: the same ids, "dup" with another text; --prune deletes through SQL id lists
    texts[-1] = "Second, changed version of dup."
    r = embed_here(db, to_ipc(pa.table({"id": ids, "text": texts})), "--prune")
    assert r.returncode == 0, r.stderr.decode()
    assert embedded(r.stderr) == 1  # only the changed document
    rows = stored.snapshot(db)
    assert [i for i, v in rows.items() if v[0] == "dup"] == ["dup#0"] and len(rows) == len(ids)
    assert diagnose(db).healthy
