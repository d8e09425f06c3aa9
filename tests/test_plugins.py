"""Third-party model plugins: discovered from package metadata, listed unimported, used by `embed`.

The toy plugin package in tests/plugin_pkg is pip-installed (a real build through its
pyproject.toml entry points) into a private --target directory put on sys.path /
PYTHONPATH, not into the shared venv, so test runs in parallel never see it.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, read_ipc, run, run_subprocess

PKG = Path(__file__).parent / "plugin_pkg"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> str:
    work = tmp_path_factory.mktemp("plugin")
    src = work / "src"
    shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True, timeout=120)
    sys.path.insert(0, str(target))
    yield str(target)
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m.startswith("arrowsmith_toy_plugin")]:
        del sys.modules[name]


def test_listed_without_import(plugin_path):
    from arrowsmith.plugins.registry import list_plugins

    names = [p.name for p in list_plugins()]
    assert names[0] == "sentence-transformers"
    assert {"toy", "broken"} <= set(names)
    toy = next(p for p in list_plugins() if p.name == "toy")
    assert (toy.target, toy.distribution, toy.version) == (
        "arrowsmith_toy_plugin:load_model", "arrowsmith-toy-plugin", "0.1.0")
    assert "arrowsmith_toy_plugin" not in sys.modules


def test_models_command_lists_plugins(plugin_path):
    r = run_subprocess(["models", "--json"], env={"PYTHONPATH": plugin_path})
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""  # nothing imported, so the broken plugin says nothing
    doc = json.loads(r.stdout)
    plugins = {p["plugin"]: p for p in doc["plugins"]}
    assert doc["default_model"] == "all-MiniLM-L6-v2"
    assert plugins["sentence-transformers"]["models"] == ["all-MiniLM-L6-v2"]
    assert plugins["toy"]["distribution"] == "arrowsmith-toy-plugin"
    assert plugins["broken"]["target"] == "arrowsmith_toy_plugin.broken:load_model"
    table = run_subprocess(["models"], env={"PYTHONPATH": plugin_path})
    lines = table.stdout.decode().splitlines()
    assert [ln.split("\t")[0] for ln in lines][0] == "sentence-transformers"
    assert {"toy", "broken"} <= {ln.split("\t")[0] for ln in lines}


def test_models_check_warns_once_for_broken(plugin_path):
    r = run(["models", "--check", "--json"])
    assert r.exit_code == 0
    warnings = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1
    assert "'broken' failed to import: ModuleNotFoundError" in warnings[0]
    ok = {p["plugin"]: p["ok"] for p in json.loads(r.stdout)["plugins"]}
    assert ok == {"sentence-transformers": True, "toy": True, "broken": False}


def test_embed_with_plugin_model(plugin_path, tmp_path):
    from arrowsmith_toy_plugin import word_vector

    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "text": "red green blue"}\n{"id": "b", "text": "blue sky"}\n')
    r = run(["embed", str(src), "--model", "toy:words-8", "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    table = read_ipc(r.stdout_bytes)
    assert table.column("id").to_pylist() == ["a#0", "b#0"]
    assert table.schema.field("vector").type.list_size == 8
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(vectors[1], word_vector("blue sky", 8), rtol=1e-6)
    meta = json.loads(table.schema.metadata[b"arrowsmith.model"])
    assert (meta["plugin"], meta["name"], meta["revision"], meta["dim"]) == ("toy", "words-8", "toy-1", 8)


def test_broken_plugin_is_one_line_and_rest_works(plugin_path, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "text": "red green blue"}\n')
    r = run(["embed", str(src), "--model", "broken:anything"])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0] == ("arrowsmith: error: model plugin 'broken' failed to import: ModuleNotFoundError: "
                        "No module named 'arrowsmith_toy_plugin_missing_dependency'")
    assert "Traceback" not in r.stderr
    ok = run(["embed", str(src), "--model", "toy:words", "-f", "jsonl"])
    assert ok.exit_code == 0
    assert json.loads(ok.stdout_bytes)["id"] == "a#0"


def test_unknown_plugin_and_model(tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "text": "x"}\n')
    r = run(["embed", str(src), "--model", "no-such-model-anywhere"])
    assert r.exit_code == 2
    assert "model 'no-such-model-anywhere' is not installed locally and downloads are off" in r.stderr


def _fake_hf_cache(root, name: str, model_dir) -> None:
    """A Hugging Face cache holding ``name``: a stale snapshot and main's (links to the real files)."""
    repo = root / f"models--sentence-transformers--{name}"
    for sha in ("ffff-stale", "0000-main"):
        snap = repo / "snapshots" / sha
        snap.mkdir(parents=True)
        for f in Path(model_dir).rglob("*"):
            if f.is_file():
                target = snap / f.relative_to(model_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0000-main")
    # the stale snapshot sorts last by name: it must not be chosen over refs/main
    (repo / "snapshots" / "ffff-stale" / "config.json").unlink()
    (repo / "snapshots" / "ffff-stale" / "config.json").write_text("{}")


def test_cached_hub_model_is_found_with_and_without_allow_download(tmp_path, monkeypatch, model):
    from arrowsmith.plugins.registry import hf_cached, load_model

    _fake_hf_cache(tmp_path, "cached-minilm", model.path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert hf_cached("cached-minilm").endswith("0000-main")
    for allow in (False, True):  # allowing downloads must not bypass what is cached
        m = load_model("cached-minilm", device="cpu", dtype="fp32", allow_download=allow)
        assert (m.dim, m.max_tokens) == (384, 256) and m.path.endswith("0000-main")
        v = m.encode(["tides follow the moon"])
        assert abs(float(np.linalg.norm(v[0])) - 1) < 1e-5


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    from arrowsmith.commands.errors import UsageError
    from arrowsmith.plugins.registry import load_model

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no machine here reaches the hub; fail at once
    with pytest.raises(UsageError, match="cannot download model 'no-such-model'"):
        load_model("no-such-model", device="cpu", allow_download=True)
    with pytest.raises(UsageError, match="not installed locally and downloads are off"):
        load_model("no-such-model", device="cpu")


def test_dense_projection_sets_the_dim(tmp_path, model):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    from arrowsmith.plugins.registry import load_model

    st = SentenceTransformer(model.path, device="cpu")
    dense = Dense(in_features=384, out_features=128)
    projected = SentenceTransformer(modules=[*st, dense], device="cpu")
    projected.save(str(tmp_path / "projected"))
    m = load_model(str(tmp_path / "projected"), device="cpu", dtype="fp32")
    assert m.dim == 128 and not m.supports_token_embeddings  # late chunking cannot skip the Dense
    texts = ["a short text", "another one"]
    out = m.encode(texts)
    assert out.shape == (2, 128)
    # Normalize comes before the Dense here, so the output is not unit length: neither is ours
    assert not m.normalize
    np.testing.assert_allclose(out, projected.encode(texts), atol=1e-4)


def test_plugin_tokenizer_chunks_and_late_chunking_matches_naive(plugin_path, tmp_path):
    """The whole contract through a third-party plugin: its tokenizer chunks, its token vectors
    late-chunk. Toy token vectors carry no context, so late vectors equal the naive ones."""
    words = " ".join(f"w{i % 37}" for i in range(150))  # longer than one 64-word window
    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"id": "long", "text": words}) + "\n"
                   + json.dumps({"id": "short", "text": "red green blue"}) + "\n")
    chunks = run(["chunk", str(src), "--tokenizer", "model:toy:words-8", "--max-tokens", "20",
                  "-f", "arrows"])
    assert chunks.exit_code == 0, chunks.stderr
    chunked = read_ipc(chunks.stdout_bytes)
    assert max(c["n_tokens"] for doc in chunked.column("chunks").to_pylist() for c in doc) <= 20
    out = {}
    for mode in ("--naive", "--late"):
        r = run(["embed", "--model", "toy:words-8", mode, "-f", "arrows"], input=chunks.stdout_bytes)
        assert r.exit_code == 0, r.stderr
        out[mode] = read_ipc(r.stdout_bytes)
    naive, late = out["--naive"], out["--late"]
    assert late.column("id").to_pylist() == naive.column("id").to_pylist()
    assert len(late) > 8  # the long document spans several windows
    got = np.array(late.column("vector").to_pylist(), dtype=np.float32)
    want = np.array(naive.column("vector").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(got, want, atol=2e-3)
    meta = json.loads(late.schema.metadata[b"arrowsmith.model"])
    assert (meta["late"], meta["window"], "precision" in meta) == (True, 64, False)


def _model_params(tree: ast.AST) -> Iterator[tuple[ast.AST, str]]:
    """(function or class, name) pairs whose ``name`` / ``self.name`` holds an EmbeddingModel."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in [*node.args.args, *node.args.kwonlyargs]:
                if isinstance(arg.annotation, ast.Name) and arg.annotation.id == "EmbeddingModel":
                    yield node, arg.arg
        elif isinstance(node, ast.ClassDef):
            init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
                        None)
            if init and any(isinstance(a.annotation, ast.Name) and a.annotation.id == "EmbeddingModel"
                            for a in init.args.args):
                yield node, "self.model"


def test_everything_a_stage_reads_from_a_model_is_in_the_contract():
    """A plugin author reads plugins/base.py: each attribute the stages use is declared there,
    and no stage probes a model with getattr/hasattr/inspect."""
    from arrowsmith.plugins.base import EmbeddingModel

    read: dict[str, str] = {}
    probes = []
    for path in sorted((ROOT / "commands").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for scope, name in _model_params(tree):
            for node in ast.walk(scope):
                if isinstance(node, ast.Attribute) and ast.unparse(node.value) == name:
                    read.setdefault(node.attr, f"{path.relative_to(ROOT)}:{node.lineno}")
                if isinstance(node, ast.Call) and ast.unparse(node.func) in (
                        "getattr", "hasattr", "inspect.signature") and node.args \
                        and ast.unparse(node.args[0]) in (name, f"{name}.encode_tokens", f"{name}.encode"):
                    probes.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert {"encode", "encode_tokens", "prompt_for", "tokens_seen", "device"} <= set(read)  # the scan works
    undeclared = {a: where for a, where in read.items() if not hasattr(EmbeddingModel, a)}
    assert not undeclared, undeclared
    assert not probes, probes


def test_tokenizer_from_a_model_never_reads_its_weights(tmp_path, monkeypatch, model):
    """`chunk --tokenizer model:DIR` must not hash (read) gigabytes of weights: the revision is lazy."""
    from arrowsmith.commands.chunk.tokenizers import load_tokenizer
    from arrowsmith.plugins import sentence_transformers as st_plugin
    from arrowsmith.plugins.registry import load_model

    copy = tmp_path / "minilm"
    for f in Path(model.path).rglob("*"):
        if f.is_file():
            (copy / f.relative_to(model.path)).parent.mkdir(parents=True, exist_ok=True)
            (copy / f.relative_to(model.path)).symlink_to(f)
    want = model.revision
    hashed = []
    real = st_plugin._sha256_file
    monkeypatch.setattr(st_plugin, "_sha256_file", lambda p: hashed.append(p) or real(p))
    tok = load_tokenizer(f"model:{copy}")
    assert tok.count_tokens(["tides follow the moon"]) == [4]
    (copy / "docs").mkdir()
    (copy / "docs" / "a.txt").write_text("The tide rises. The tide falls.")
    r = run(["chunk", str(copy / "docs"), "--tokenizer", f"model:{copy}", "-f", "jsonl"])
    assert r.exit_code == 0, r.stderr
    assert hashed == []
    m = load_model(str(copy), device="cpu", dtype="fp32")
    assert hashed == []
    assert m.describe()["revision"] == want  # metadata is where the weights get hashed
    assert len(hashed) == 1 and hashed[0].endswith("model.safetensors")


def test_registry_records_plugin_and_factory_options(plugin_path):
    from arrowsmith.plugins.registry import load_model

    m = load_model("toy:words-8", device="cpu", dtype="auto")
    assert (m.plugin, m.name, m.dim) == ("toy", "words-8", 8)
    assert m.factory_options == {"device": "cpu", "dtype": "auto"}  # what an engine's worker rebuilds from
    assert (m.device, m.dtype, m.load_seconds, m.embed_params) == ("cpu", "", 0.0, {})  # the defaults


@pytest.mark.parametrize("flags, warned", [({"avx2", "fma"}, True), ({"avx2", "avx512_bf16"}, False)])
def test_bf16_the_cpu_emulates_is_honoured_with_a_warning(monkeypatch, caplog, flags, warned):
    from arrowsmith.plugins import sentence_transformers as st

    monkeypatch.setattr(st, "_cpu_flags", lambda: flags)
    st._warn_if_emulated.cache_clear()
    with caplog.at_level("WARNING", logger="arrowsmith.plugins"):
        assert st.resolve_dtype("bf16", "cpu") == "bf16"
        assert st.resolve_dtype("bf16", "cpu") == "bf16"
        assert st.resolve_dtype("auto", "cpu") == ("fp32" if warned else "bf16")
    emulated = [r for r in caplog.records if "torch emulates it" in r.getMessage()]
    assert len(emulated) == (1 if warned else 0)  # once per process, not per call
    if warned:
        assert "no native bf16 (amx_bf16 or avx512_bf16)" in emulated[0].getMessage()
    st._warn_if_emulated.cache_clear()
