"""plugins/bert.py (issue 12): the lean BERT path's vectors against plain sentence-transformers, the
persistent revision cache, and what `query` and `embed -o` import."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import CRANFIELD, modules_loaded_by, read_ipc, run, to_ipc

from arrowsmith.plugins import sentence_transformers as st_plugin


def cos(a, b) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Real abstracts (cut to fit the 256-token window) and a few short and empty texts."""
    with open(CRANFIELD / "corpus.jsonl") as f:
        docs = [json.loads(line)["text"][:700] for _, line in zip(range(48), f, strict=False)]
    return docs + ["", "short", "why is the sky blue", "a much longer sentence about tides " * 6]


@pytest.fixture(scope="module")
def reference(texts):
    from sentence_transformers import SentenceTransformer

    from arrowsmith.plugins.registry import packaged_path

    return SentenceTransformer(packaged_path("all-MiniLM-L6-v2"), device="cpu").encode(texts, batch_size=32)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_lean_vectors_match_plain_sentence_transformers(texts, reference, dtype):
    from arrowsmith.plugins.registry import load_model

    model = load_model(None, device="cpu", dtype=dtype)
    assert model.lean_config is not None  # the packaged MiniLM runs on plugins/bert.py
    ours = model.encode(texts, batch_tokens=1024)  # several padded batches
    assert ours.shape == reference.shape and ours.dtype == np.float32
    assert cos(ours, reference).min() >= (0.99999 if dtype == "fp32" else 0.9999)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_lean_token_vectors_match_the_sentence_transformers_stack(texts, dtype):
    from arrowsmith.plugins.registry import load_model

    lean = load_model(None, device="cpu", dtype=dtype)
    plain = load_model(None, device="cpu", dtype="fp32")
    plain.lean_config = None  # the sentence-transformers module stack
    ids = [lean.wrap_ids(lean.token_ids(t)[0])[0] for t in texts[:12]]
    ours, ref = lean.encode_tokens(ids, batch_tokens=512), plain.encode_tokens(ids, batch_tokens=512)
    for a, b, s in zip(ours, ref, ids, strict=True):
        assert a.shape == b.shape == (len(s), 384)
        assert cos(a, b).min() >= (0.99999 if dtype == "fp32" else 0.999)


def test_revision_cache_survives_processes_and_detects_a_changed_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    monkeypatch.setattr(st_plugin, "_SHA_CACHE", {})
    first = st_plugin._sha256_file(str(weights))
    assert (tmp_path / "cache" / "arrowsmith" / "revisions.json").exists()

    def no_hashing():
        raise AssertionError("hashed again")

    with monkeypatch.context() as m:  # a new process: the file is not hashed again
        m.setattr(st_plugin, "_SHA_CACHE", {})
        m.setattr(st_plugin.hashlib, "sha256", no_hashing)
        assert st_plugin._sha256_file(str(weights)) == first
    stat = weights.stat()
    weights.write_bytes(b"b" * 1000)  # same size, mtime put back: the ctime still changes
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    monkeypatch.setattr(st_plugin, "_SHA_CACHE", {})
    assert st_plugin._sha256_file(str(weights)) != first


def _loaded(args: list[str], modules: tuple[str, ...]) -> list[str]:
    return modules_loaded_by(args, modules)[0]


def test_query_imports_neither_sentence_transformers_nor_transformers(tmp_path):
    from arrowsmith.commands.embed import embed_batches  # noqa: F401 - warm import for the in-process run

    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "Tides follow the moon."}\n'
                    '{"id": "b", "text": "Bread needs yeast."}\n')
    chunked = run(["chunk", str(docs)])
    assert chunked.exit_code == 0, chunked.stderr
    built = run(["embed", "--db", str(tmp_path / "db")], input=chunked.stdout_bytes)
    assert built.exit_code == 0, built.stderr
    out = tmp_path / "hits.arrows"
    loaded = _loaded(["query", "--db", str(tmp_path / "db"), "what pulls the tides", "-o", str(out)],
                     ("sentence_transformers", "transformers", "sklearn"))
    assert loaded == []
    assert read_ipc(out.read_bytes()).column("doc_id").to_pylist()[0] == "a"


def test_embed_to_a_file_does_not_import_lancedb(tmp_path):
    import pyarrow as pa

    src = tmp_path / "in.arrows"
    src.write_bytes(to_ipc(pa.table({"id": ["a"], "text": ["Tides follow the moon."]})))
    out = tmp_path / "out.arrows"
    assert _loaded(["embed", str(src), "-o", str(out)], ("lancedb",)) == []
    assert read_ipc(out.read_bytes()).num_rows == 1
