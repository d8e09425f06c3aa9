"""Reports and statistics are for people (issue 20): text wherever stdout goes, data when asked.

`compress --report | tail` used to write binary Arrow into the pipe. Every command that prints a
report or statistics runs here as a real process with stdout a pipe: its default output is text,
and its data option (`-f`/`-o FILE` for compress's report table, `--json` for the others) still
gives data. Stages whose output is data (chunk, embed, query) keep Arrow off a terminal.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import SAMPLES, chunks_batch, read_ipc, run_subprocess

from arrowsmith.commands.io import IPC_STREAM_MAGIC
from arrowsmith.commands.store import StoreWriter, connect

DOCS = {f"d{i}": (3, f"k{i}") for i in range(30)}
REPORT = ["--report", "--sample", "10", "--methods", "int8,binary"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A healthy store of seeded vectors (no model needed)."""
    db = tmp_path_factory.mktemp("reports") / "store"
    with StoreWriter(db) as w:
        w.write([chunks_batch(DOCS)])
    return db


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Path:
    """A store with a chunk id stored twice, so that doctor has a finding to print."""
    db = tmp_path_factory.mktemp("reports") / "damaged"
    with StoreWriter(db) as w:
        w.write([chunks_batch({"a": (2, "ka"), "b": (1, "kb")})])
    tbl = connect(db).open_table("chunks")
    tbl.add(pa.Table.from_batches([chunks_batch({"b": (1, "kb")})]).cast(tbl.schema))
    return db


@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> tuple[Path, Path]:
    """A TREC run and its qrels: eval scores them without a model."""
    root = tmp_path_factory.mktemp("eval")
    (root / "run.txt").write_text("q1 Q0 d1 1 0.9 r\nq1 Q0 d2 2 0.8 r\nq2 Q0 d3 1 0.9 r\n")
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return root / "run.txt", root / "qrels.tsv"


def piped(args: list[str], ok: tuple[int, ...] = (0,)) -> bytes:
    """stdout of the real command, stdout a pipe (not a terminal)."""
    r = run_subprocess(args, timeout=120)
    assert r.returncode in ok, r.stderr.decode()
    return r.stdout


def assert_text(out: bytes) -> str:
    assert out, "nothing on stdout"
    assert not out.startswith(IPC_STREAM_MAGIC) and b"\0" not in out, out[:80]
    return out.decode("utf-8")


def test_compress_report_is_a_text_table_on_a_pipe(store):
    text = assert_text(piped(["compress", "--db", str(store), *REPORT]))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["method", "bytes_per_vector", "ratio"]
    assert [line.split()[0] for line in lines[2:]] == ["float32", "int8", "binary"]


@pytest.mark.parametrize("data", [["-f", "jsonl"], ["-f", "arrows"], ["-f", "csv"], ["-o", "report.jsonl"],
                                  ["-o", "report.arrows"]], ids=lambda a: " ".join(a))
def test_compress_report_gives_data_when_asked(store, tmp_path, data):
    args = [data[0], str(tmp_path / data[1])] if data[0] == "-o" else data
    out = piped(["compress", "--db", str(store), *REPORT, *args])
    if data[0] == "-o":
        assert out == b""
        out = (tmp_path / data[1]).read_bytes()
    fmt = data[1].rsplit(".", 1)[-1]
    if fmt == "arrows":
        methods = read_ipc(out).column("method").to_pylist()
    elif fmt == "jsonl":
        methods = [json.loads(line)["method"] for line in out.decode().splitlines()]
    else:
        methods = [row["method"] for row in csv.DictReader(io.StringIO(out.decode()))]
    assert methods == ["float32", "int8", "binary"]


def test_compress_report_to_a_file_without_a_data_extension_is_text(store, tmp_path):
    assert piped(["compress", "--db", str(store), *REPORT, "-o", str(tmp_path / "report.txt")]) == b""
    assert assert_text((tmp_path / "report.txt").read_bytes()).startswith("method ")


def test_index_stats_is_text_and_json_on_request(store):
    assert "rows      90" in assert_text(piped(["index", "--db", str(store), "--stats"]))
    assert json.loads(piped(["index", "--db", str(store), "--stats", "--json"]))["rows"] == 90


def test_doctor_findings_are_text_and_json_on_request(damaged):
    text = assert_text(piped(["doctor", "--db", str(damaged)], ok=(1,)))
    assert text.startswith("rows: 4 rows but 3 distinct chunk ids")
    assert json.loads(piped(["doctor", "--db", str(damaged), "--json"], ok=(1,)))["healthy"] is False


def test_eval_is_text_and_json_on_request(judged):
    run_file, qrels = judged
    args = ["eval", "--run", str(run_file), "--qrels", str(qrels), "--k", "1,10", "--resamples", "100"]
    assert "nDCG@10" in assert_text(piped(args))
    assert json.loads(piped([*args, "--json"]))["n_queries"] == 2


def test_models_is_text_and_json_on_request():
    assert "sentence-transformers" in assert_text(piped(["models"]))
    assert json.loads(piped(["models", "--json"]))["default_model"]


def test_a_stage_still_streams_arrow_on_a_pipe_with_its_statistics_on_stderr():
    # chunk's output is data for the next stage (docs/design.md, wire format), not a report
    r = run_subprocess(["chunk", str(SAMPLES), "--max-tokens", "32"], timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert read_ipc(r.stdout).num_rows > 0
    assert "chunk:" in r.stderr.decode()
