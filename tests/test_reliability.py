"""Faults through the real pipeline: `chunk` output → `embed --db` with the real model (issue 7).

Kill -9 at each fault point of the embed write path, SIGINT/SIGTERM, and the security
cases. Store-level faults with several checkpoints (and prune, index, disk full, concurrent
writers) are in tests/test_reliability_store.py, which runs without loading the model.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time

import pyarrow as pa
import pytest
from conftest import SAMPLES, read_ipc, run, run_subprocess, to_ipc
from test_reliability_helpers import FAULT, assert_same_table, files_under, popen, snapshot, version

from arrowsmith.commands.doctor import diagnose

pytestmark = pytest.mark.slow

EMBED = ["embed", "--dtype", "fp32", "--device", "cpu"]


def embed(db, data: bytes, *extra, env=None):
    return run_subprocess([*EMBED, "--db", str(db), *extra], input=data, env=env, timeout=180)


def embedded(stderr: bytes) -> int:
    m = re.search(r"(\d+) embedded", stderr.decode())
    assert m, stderr.decode()
    return int(m.group(1))


@pytest.fixture(scope="module")
def chunked() -> pa.Table:
    r = run(["chunk", str(SAMPLES), "--max-tokens", "64"])
    assert r.exit_code == 0, r.stderr
    return read_ipc(r.stdout_bytes)


@pytest.fixture(scope="module")
def half_store(chunked, tmp_path_factory):
    """A store holding the first half of the documents: what an earlier cron run left."""
    db = tmp_path_factory.mktemp("half") / "store"
    r = embed(db, to_ipc(chunked.slice(0, chunked.num_rows // 2)))
    assert r.returncode == 0, r.stderr.decode()
    return db


@pytest.fixture(scope="module")
def reference(half_store, chunked, tmp_path_factory):
    db = tmp_path_factory.mktemp("ref") / "store"
    shutil.copytree(half_store, db)
    r = embed(db, to_ipc(chunked))
    assert r.returncode == 0, r.stderr.decode()
    assert embedded(r.stderr) == chunked.num_rows - chunked.num_rows // 2
    return db, snapshot(db)


@pytest.mark.parametrize("fault, committed", [
    # after_read, during_prune and multi-checkpoint cases: test_reliability_store.py (no model load)
    ("before_commit:1", False),  # all embedding done, nothing committed
    ("after_commit:1", True),  # embed commits one checkpoint for this small corpus
])
def test_embed_killed_at_fault_point_converges(fault, committed, chunked, half_store, reference, tmp_path):
    db = tmp_path / "store"
    shutil.copytree(half_store, db)
    before = snapshot(db)
    r = embed(db, to_ipc(chunked), env={FAULT: fault})
    assert r.returncode == 137, r.stderr.decode()
    report = diagnose(db, fix=True, grace_s=0)
    assert report.healthy, report.findings
    if not committed:
        assert_same_table(snapshot(db), before)  # what the earlier run stored is all there
    r = embed(db, to_ipc(chunked))
    assert r.returncode == 0, r.stderr.decode()
    new = chunked.num_rows - chunked.num_rows // 2
    assert embedded(r.stderr) == (0 if committed else new)  # only what was not committed
    assert_same_table(snapshot(db), reference[1])
    assert run(["doctor", "--db", str(db)]).exit_code == 0


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_embedding_exits_fast_and_commits_nothing(sig, code, chunked, half_store, tmp_path):
    db = tmp_path / "store"
    shutil.copytree(half_store, db)
    before, v = snapshot(db), version(db)
    p = popen([*EMBED, "--db", str(db), "--checkpoint-rows", "1"])
    stream = to_ipc(chunked)
    p.stdin.write(stream[:-8])  # the input stays open: the run is mid-way through it
    p.stdin.flush()
    time.sleep(4)  # model loaded, input read up to here
    sent = time.monotonic()
    p.send_signal(sig)
    _, err = p.communicate(timeout=15)
    assert time.monotonic() - sent < 5
    assert p.returncode == code, err.decode()
    assert "Traceback" not in err.decode()
    assert version(db) == v
    assert_same_table(snapshot(db), before)


# ------------------------------------------------------------------ bad input into a store


def test_bad_input_into_a_store_loses_nothing(chunked, half_store, tmp_path):
    import badinput as bi

    db = tmp_path / "store"
    shutil.copytree(half_store, db)
    before, v = snapshot(db), version(db)
    # each case costs a model load: the two that reach the store; the rest are in test_bad_input.py
    cases = {
        "truncated stream": (bi.truncated_ipc(to_ipc(chunked)), "<stdin>: truncated or corrupt Arrow IPC"),
        "type drift": (bi.drift_ipc(pa.table({"id": ["a"], "text": ["fine text"]})), "<stdin>"),
    }
    for what, (data, message) in cases.items():
        r = embed(db, data, "--prune")  # --prune: a partial read must never delete
        assert r.returncode == 65, (what, r.stderr.decode())
        assert message in r.stderr.decode(), (what, r.stderr.decode())
        assert version(db) == v, what
        assert_same_table(snapshot(db), before)


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
    r = run_subprocess(["embed", "--model", str(model_dir)], input=data, timeout=120)
    assert r.returncode == 2, r.stderr.decode()
    assert "ships its own Python code; refusing to run it" in r.stderr.decode()
    assert "--trust-remote-code" in r.stderr.decode()
    assert "custom code ran" not in r.stderr.decode()


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


def test_path_ids_stay_in_the_store_and_duplicate_ids_across_runs_replace(tmp_path):
    db = tmp_path / "area" / "store"
    db.parent.mkdir()
    outside = files_under(tmp_path)
    ids = ["../../etc/passwd", "/etc/passwd", "..\\..\\win.ini", "a/../../../b", "quote'id",
           "nul\x00id", "dup"]
    texts = [f"Text number {i}." for i in range(len(ids))]
    r = embed(db, to_ipc(pa.table({"id": ids, "text": texts})))
    assert r.returncode == 0, r.stderr.decode()
    new = files_under(tmp_path) - outside
    assert all(f.startswith("area/store/") for f in new), sorted(new)
    assert {v[0] for v in snapshot(db).values()} == set(ids)
    # a second run: the same ids, "dup" with another text; --prune deletes through SQL id lists
    texts[-1] = "Second, changed version of dup."
    r = embed(db, to_ipc(pa.table({"id": ids, "text": texts})), "--prune")
    assert r.returncode == 0, r.stderr.decode()
    assert embedded(r.stderr) == 1  # only the changed document
    rows = snapshot(db)
    assert [i for i, v in rows.items() if v[0] == "dup"] == ["dup#0"] and len(rows) == len(ids)
    assert diagnose(db).healthy
