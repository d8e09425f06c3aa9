"""`query` start-up (issue 12): a few query texts are embedded by plugins/bert.py's numpy forward
pass, so the process imports no torch; the hits and scores are those plain sentence-transformers
vectors give, and more texts (or a non-float32 model) take the torch path with the same vectors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import CRANFIELD, modules_loaded_by, read_ipc, run

from arrowsmith.plugins import sentence_transformers as st_plugin
from arrowsmith.plugins.registry import load_model, packaged_path

QUERIES = ["wing lift at high speed", "boundary layer transition on a flat plate", "heat transfer",
           "supersonic flow with shock wave interaction in a laminar boundary layer near the nose"]
HEAVY = ("torch", "sentence_transformers", "transformers", "sklearn", "scipy",
         "lance_namespace_urllib3_client.api")  # lancedb's REST client (commands/lancedb_import.py)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """40 Cranfield abstracts cut at 128 tokens, embedded into a LanceDB store."""
    root = tmp_path_factory.mktemp("startup")
    docs = root / "docs.jsonl"
    with open(CRANFIELD / "corpus.jsonl") as f, open(docs, "w") as out:
        for _, line in zip(range(40), f, strict=False):
            d = json.loads(line)
            out.write(json.dumps({"id": d["_id"], "text": d["text"]}) + "\n")
    chunked = run(["chunk", str(docs), "--max-tokens", "128"])
    assert chunked.exit_code == 0, chunked.stderr
    # fp32 documents whatever the CPU: the hits are compared with plain sentence-transformers'
    built = run(["embed", "--dtype", "fp32", "--db", str(root / "db")], input=chunked.stdout_bytes)
    assert built.exit_code == 0, built.stderr
    return str(root / "db")


@pytest.fixture(scope="module")
def st_vectors() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(packaged_path("all-MiniLM-L6-v2"), device="cpu").encode(QUERIES)


def hits(table: pa.Table) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    for row in table.select(["query_id", "id", "score"]).to_pylist():
        out.setdefault(row["query_id"], []).append((row["id"], row["score"]))
    return out


def test_query_hits_and_scores_are_plain_sentence_transformers_ones(store, st_vectors):
    from arrowsmith.commands.query import search

    r = run(["query", "--db", store, *QUERIES, "--k", "10", "--format", "arrows"])
    assert r.exit_code == 0, r.stderr
    ours = hits(read_ipc(r.stdout_bytes))
    ref = hits(search(store, QUERIES, k=10, query_vectors=st_vectors))
    assert list(ours) == list(ref) == ["q1", "q2", "q3", "q4"]
    for qid in ref:
        assert [i for i, _ in ours[qid]] == [i for i, _ in ref[qid]], qid
        for (_, a), (_, b) in zip(ours[qid], ref[qid], strict=True):
            assert abs(a - b) <= 1e-6
            if abs(a * 1e4 % 1 - 0.5) > 0.05:  # not on a rounding edge: the terminal table's digits
                assert f"{a:.4f}" == f"{b:.4f}"


def test_query_process_imports_no_torch(store):
    loaded, proc = modules_loaded_by(["query", "--db", store, QUERIES[0], "--format", "jsonl"], HEAVY)
    assert loaded == [], proc.stderr
    assert "q1" in proc.stdout


@pytest.mark.parametrize("args", [["index"], ["doctor"], ["compress", "--method", "binary"]])
def test_store_commands_import_lancedb_without_its_rest_client(store, args, tmp_path):
    """Every process that opens a store goes through store.connect: the REST client's API modules
    (~0.55 s of each process's start-up, issue 20's nightly run has six such processes) stay out."""
    copy = shutil.copytree(store, tmp_path / "db")  # the module's store stays as the other tests expect
    rest_client = ("lancedb", "lance_namespace_urllib3_client.api")
    loaded, proc = modules_loaded_by([*args, "--db", str(copy)], rest_client)
    assert proc.returncode == 0, proc.stderr
    assert loaded == ["lancedb"], proc.stderr


_OVERRIDES_PROBE = """
import importlib, overrides
impl = importlib.import_module("overrides.overrides")  # the module (the package exports a function so named)
calls = []
scan = impl._get_base_class_names
impl._get_base_class_names = lambda frame: calls.append(1) or scan(frame)
checking = overrides.override
from arrowsmith.commands.lancedb_import import import_lancedb
lancedb = import_lancedb()
from lancedb.db import LanceDBConnection
assert overrides.override is checking, "overrides.override was not put back"
assert LanceDBConnection.table_names.__override__ is True  # marked, as typing.override marks
print("SCANS", len(calls))
class Base: pass
try:
    class Child(Base):
        @overrides.override
        def method(self): pass
except TypeError as e:
    print("CHECKED", e)
"""


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="lancedb uses typing.override from 3.12")
def test_lancedb_is_imported_without_overrides_checks_which_stay_for_everyone_else():
    """On Python < 3.12 lancedb's import lends ``overrides.override`` a marking decorator (~0.1 s
    of every store process's start-up) and puts the checking one back for other code."""
    proc = subprocess.run([sys.executable, "-c", _OVERRIDES_PROBE], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SCANS 0" in proc.stdout  # no base-class scan while lancedb's classes were defined
    assert "CHECKED" in proc.stdout and "No super class method found" in proc.stdout


def test_numpy_path_matches_the_torch_path_and_sentence_transformers(st_vectors):
    model = load_model(None, dtype="fp32")  # the torch side in fp32 also on a CPU with native bf16
    queries = model.encode(QUERIES, "query")  # numpy (few texts)
    assert st_plugin._LOADED.get((model.path, "cpu", "fp32", "numpy")) is not None
    documents = model.encode(QUERIES, "document")  # torch, plugins/bert.py's LeanBert
    assert queries.dtype == np.float32 and queries.shape == (len(QUERIES), 384)
    assert np.abs(queries - documents).max() <= 1e-6
    assert np.abs(queries - st_vectors).max() <= 1e-6


def test_many_queries_take_the_torch_path_with_the_same_vectors(monkeypatch, st_vectors):
    model = load_model(None, dtype="fp32")  # torch in fp32 also on a CPU with native bf16
    few = model.encode(QUERIES, "query")
    monkeypatch.setattr(st_plugin, "NUMPY_MAX_TEXTS", 2)
    monkeypatch.setattr(model, "_encode_numpy", None)  # would raise if called
    many = model.encode(QUERIES, "query")
    assert np.abs(few - many).max() <= 1e-6


def test_query_vectors_with_bf16_requested_do_not_use_numpy():
    model = load_model(None, dtype="bf16")
    assert not model._numpy_ready(1)
    assert load_model(None, device="cpu", dtype="fp32")._numpy_ready(1)


def test_half_precision_weights_fall_back_to_torch(tmp_path, st_vectors):
    """A re-saved fp16 model cannot run in numpy's float32 pass: the torch path computes it."""
    from safetensors.numpy import save_file

    from arrowsmith.plugins.bert import NumpyBert, mapped_safetensors

    src = packaged_path("all-MiniLM-L6-v2")
    dst = tmp_path / "half"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.onnx", "onnx",
                                                            "openvino", "*.bin", "*.h5"))
    tensors = mapped_safetensors(Path(src) / "model.safetensors")
    save_file({k: v.astype(np.float16) if v.dtype == np.float32 else np.array(v)
               for k, v in tensors.items()}, str(dst / "model.safetensors"))
    model = load_model(str(dst))
    assert NumpyBert.load(dst, model.lean_config) is None
    vectors = model.encode(QUERIES, "query")
    assert (vectors * st_vectors).sum(1).min() >= 0.999  # fp16 weights, fp32 compute


def test_lancedb_rest_client_loads_in_full_when_used_after_a_query(store):
    """The REST client package's __init__ is only deferred: reading from it runs it."""
    code = f"""
import sys
from arrowsmith.commands.query import search
assert search({store!r}, ["wing lift"], k=1).num_rows == 1
assert "lance_namespace_urllib3_client.api" not in sys.modules
from lance_namespace_urllib3_client import ApiClient, Configuration
assert "lance_namespace_urllib3_client.api" in sys.modules
print(ApiClient.__name__, Configuration.__name__)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ApiClient", "Configuration"]
