"""Exit codes where a traceback used to leak (issue 21, section 4), each through the real CLI.

Every case: the exact exit code, one `arrowsmith: error:` line naming what is wrong (and the
option that fixes it), no traceback, nothing written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import chunks_batch, run, to_ipc

from arrowsmith.commands.store import StoreWriter, connect


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("arrowsmith: error:")]


def no_traceback(result) -> bool:
    rest = result.stderr.replace("arrowsmith: error:", "")
    return "Traceback" not in rest and "Error:" not in rest


# ------------------------------------------------------------------ a text column that is not text

INT_TEXT = pa.table({"id": ["a", "b"], "text": pa.array([1, 2], pa.int64())})


@pytest.mark.parametrize("stage", ["embed", "chunk"])
@pytest.mark.parametrize("how", ["parquet", "stdin"])
def test_a_text_column_that_is_not_text_is_exit_65_naming_it(tmp_path, stage, how):
    """`embed` failed with exit 1 `TypeError: object of type 'int' has no len()`; `chunk` said 65."""
    if how == "parquet":
        pq.write_table(INT_TEXT, tmp_path / "docs.parquet")
        r = run([stage, str(tmp_path / "docs.parquet"), "-o", str(tmp_path / "out.arrows")])
    else:
        r = run([stage, "-", "-o", str(tmp_path / "out.arrows")], input=to_ipc(INT_TEXT))
    assert r.exit_code == 65, r.stderr
    assert errors(r) == ["arrowsmith: error: text column 'text' is int64, not text"]
    assert "--text-col NAME" in r.stderr and no_traceback(r)
    assert not (tmp_path / "out.arrows").exists()


# ------------------------------------------------------------------ --model that is no model / custom code


def test_a_directory_that_is_no_model_is_exit_2(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0\n")
    r = run(["embed", "--model", str(tmp_path / "etc"), "-o", str(tmp_path / "out.arrows")],
            input=to_ipc(pa.table({"id": ["a"], "text": ["hello"]})))
    assert r.exit_code == 2, r.stderr
    assert errors(r) == [f"arrowsmith: error: model '{tmp_path / 'etc'}': {tmp_path / 'etc'} is not a model "
                         "directory (no config.json or modules.json)"]
    assert no_traceback(r) and len(r.stderr.strip().splitlines()) == 1


def test_a_custom_module_class_in_modules_json_is_refused_naming_trust_remote_code(tmp_path):
    """sentence-transformers 6 raised ValueError "... pass trust_remote_code=True" (exit 1)."""
    from arrowsmith.plugins.sentence_transformers import resolve_model_path

    model_dir = tmp_path / "custom-module"
    shutil.copytree(resolve_model_path("all-MiniLM-L6-v2"), model_dir)
    modules = json.loads((model_dir / "modules.json").read_text())
    modules[1]["type"] = "evil_pooling.EvilPooling"
    (model_dir / "modules.json").write_text(json.dumps(modules))
    (model_dir / "evil_pooling.py").write_text("raise SystemExit('custom code ran')\n")
    r = run(["embed", "--model", str(model_dir), "-o", str(tmp_path / "out.arrows")],
            input=to_ipc(pa.table({"id": ["a"], "text": ["hello"]})))
    assert r.exit_code == 2, r.stderr
    assert errors(r) == [f"arrowsmith: error: model '{model_dir}' ships its own Python code (modules.json "
                         "names 'evil_pooling.EvilPooling'); refusing to run it"]
    assert "--trust-remote-code" in r.stderr and "custom code ran" not in r.stderr + r.stdout
    assert no_traceback(r)


# ------------------------------------------------------------------ --table names


@pytest.fixture
def store(tmp_path):
    db = tmp_path / "store"
    with StoreWriter(db) as w:
        w.write([chunks_batch({"a": (2, "ka")})])
    return db


@pytest.mark.parametrize("name, why", [
    ("t" * 300, "300 characters, at most 128"),  # was exit 74 "File name too long"
    ("chunks.lance", "use letters, digits, '-' and '_'"),  # was accepted: chunks.lance.lance
    ("../x", "use letters, digits, '-' and '_'"),
])
@pytest.mark.parametrize("command", ["query", "index", "doctor", "embed"])
def test_table_names_follow_the_rule_the_message_states(store, name, why, command):
    before = sorted(p.name for p in store.iterdir())
    args = {"query": ["query", "--db", str(store), "--mode", "fts", "x"],
            "index": ["index", "--db", str(store)],
            "doctor": ["doctor", "--db", str(store)],
            "embed": ["embed", "-", "--db", str(store)]}[command]
    r = run([*args, "--table", name], input=to_ipc(pa.table({"id": ["a"], "text": ["hello"]})))
    assert r.exit_code == 2, r.stderr
    (line,) = errors(r)
    assert line.startswith("arrowsmith: error: invalid table name") and why in line
    assert sorted(p.name for p in store.iterdir()) == before  # nothing created


def test_the_longest_allowed_table_name_works(store):
    name = "t" * 128
    with StoreWriter(store, name) as w:
        w.write([chunks_batch({"a": (1, "ka")})])
    assert connect(store).open_table(name).count_rows() == 1
    assert run(["doctor", "--db", str(store), "--table", name]).exit_code == 0


def test_an_unknown_table_names_the_tables_there(store):
    r = run(["doctor", "--db", str(store), "--table", "other"])
    assert r.exit_code == 2
    assert errors(r) == [f"arrowsmith: error: no table 'other' in {store} (it has tables: chunks)"]


# ------------------------------------------------------------------ stdin that is a directory


def test_stdin_that_is_a_directory_dies_in_python_before_arrowsmith_runs(tmp_path):
    """CPython's own start-up refuses it ("init_sys_streams: <stdin> is a directory") before any
    of our code runs, so it cannot be caught (docs/reliability.md). Pinned: if Python ever lets
    it through, this test says so and arrowsmith must then refuse it itself."""
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        r = subprocess.run([sys.executable, "-m", "arrowsmith.cli", "chunk", "-"], stdin=fd,
                           capture_output=True, timeout=60)
    finally:
        os.close(fd)
    assert r.returncode == 1
    assert b"Fatal Python error: init_sys_streams: <stdin> is a directory" in r.stderr
    assert r.stdout == b""
