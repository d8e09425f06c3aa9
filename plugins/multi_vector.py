"""ColBERT-style models: a sentence-transformers ``MultiVectorEncoder`` directory (its own saves,
PyLate and Stanford checkpoints, ``arrowsmith tune --multivector`` output), served by the built-in
``sentence-transformers`` plugin (its factory tells the directory apart: ``is_multi_vector``).

Everything that makes such a model's token vectors is sentence-transformers' own, run through
``encode_document``/``encode_query``: the projection (its ``Dense`` head, e.g. 128-d), the
query/document prefixes (``prompts``; legacy ``[Q]``/``[D]`` markers are restored by its loader),
query expansion (``[MASK]`` positions scored as query tokens), the document skiplist (punctuation
not scored) and the per-task lengths. This module adds what the contract asks of every model: the
window checked instead of truncated (``TooLongError``), token budgets, bf16 autocast on a CPU that
has it, counters.

One exception, for `query` with a few texts: importing torch and sentence-transformers costs ~5 s
of CPU, more than the 2 s the whole command may take (issue 19 §3). A native save of the usual
shape — a BERT, token-level ``Dense`` heads, ``MultiVectorMask``, ``Normalize`` — has its queries
encoded by :class:`NumpyQueryEncoder` instead: ``encode_query``'s steps (prompt, [MASK] expansion
and its attention mask, the BERT on plugins/bert.py's numpy forward pass, the heads, the kept
positions) read from the directory's config files, checked against ``encode_query`` in
tests/test_multivector_models.py. Anything it does not know (another architecture, a module,
a setting) is encoded by sentence-transformers as before (:func:`numpy_query_plan` says why, at
debug level). Documents are always encoded by sentence-transformers.

The dense vector (the table's ``vector`` column, and a query's dense vector) is the mean of the
text's unit token vectors, L2-normalised. A table always holds a dense vector (ANN index, hybrid
and BM25 fusion, compress and doctor read it) and such a model has no single-vector head; the mean
comes from the same forward pass at no cost. It is a first stage for ``--rerank maxsim``, not a
retriever trained as one: MaxSim is what the model was trained for (benchmarks/RESULTS.md, issue 19).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .base import Kind, TooLongError
from .bert import NumpyBert, _activation, bert_config, mapped_safetensors
from .errors import UsageError
from .sentence_transformers import (
    _LOADED,
    NUMPY_MAX_TOKENS,
    SentenceTransformerModel,
    _one_blas_thread,
    _read_json,
    _weights_sha256,
    default_batch_tokens,
)
from .vectors import l2_normalize

log = logging.getLogger("arrowsmith.plugins")

# PyLate saves name its Dense head ``pylate.models.Dense.Dense``; sentence-transformers loads it as
# its own Dense (MultiVectorEncoder's class aliases), so it is no code of the checkpoint's own
PYLATE_ALIASES = frozenset({"pylate.models.Dense.Dense"})
STANFORD_DIM = 128  # ColBERTConfig's default, for a Stanford checkpoint whose metadata omits it


class MultiVectorModel(SentenceTransformerModel):
    """A ``MultiVectorEncoder``: token vectors of its head's dim, a dense vector that is their mean.

    The tokenizer, device/dtype choice, prompts lookup and weights hashing are the sentence-
    transformers plugin's; encoding is sentence-transformers' ``MultiVectorEncoder``.
    """

    builtin_aliases = PYLATE_ALIASES
    pooling = "token-mean"  # the vector is the mean of the model's own (projected) token vectors
    # late chunking pools the transformer's token vectors over whole-document windows; this model's
    # token vectors are its head's, made from its own (prefixed, length-capped) document inputs
    supports_token_embeddings = False
    token_vector_source = "multi-vector-encoder"
    normalize = True
    _prompts_need_load = False

    def _read_config(self) -> None:
        super()._read_config()
        root = Path(self.path)
        st_cfg = _read_json(root / "sentence_bert_config.json")
        cfg_st = _read_json(root / "config_sentence_transformers.json")
        self.pooling, self.normalize, self.lean_config = "token-mean", True, None
        self.supports_token_embeddings = False
        # the document side's cap (ColBERT's doc_maxlen) when the config records one; the loaded
        # model's own value is what encode checks against
        stanford = _read_json(root / "artifact.metadata")  # Stanford ColBERT: the head is inline
        if stanford or "HF_ColBERT" in (_read_json(root / "config.json").get("architectures") or []):
            self.dim = int(stanford.get("dim") or STANFORD_DIM)
        doc_len = st_cfg.get("document_length") or cfg_st.get("document_length") or stanford.get("doc_maxlen")
        window = self.max_tokens  # the transformer's (sentence-transformers' max_seq_length)
        if isinstance(doc_len, int) and doc_len > 0:
            self.max_tokens = min(self.max_tokens, doc_len)
        # a native save records its prompts; PyLate v3 and Stanford checkpoints keep [Q]/[D] markers
        # elsewhere, which only MultiVectorEncoder's loader turns into prompts: read them from it
        self._prompts_need_load = cfg_st.get("model_type") != "MultiVectorEncoder"
        self.numpy_plan, self.numpy_refusal = numpy_query_plan(root, window)

    @property
    def representations(self) -> tuple[str, ...]:
        return ("dense", "multivector")

    @property
    def prompts(self) -> dict[str, str]:  # type: ignore[override]
        if self._prompts_need_load and self._st is None:
            self._load()
        return self._prompts

    @prompts.setter
    def prompts(self, value: dict[str, str]) -> None:
        self._prompts = dict(value)

    @cached_property
    def revision(self) -> str:  # type: ignore[override]
        """sha256 of the encoder's weights and of each module's (the projection head's) together."""
        root = Path(self.path)
        modules = _read_json(root / "modules.json") if (root / "modules.json").exists() else []
        dirs = [root, *(root / str(m.get("path")) for m in modules if isinstance(m, dict) and m.get("path"))]
        parts = [h for h in (_weights_sha256(d) for d in dirs if d.is_dir()) if h]
        if len(parts) <= 1:
            return parts[0] if parts else self.name
        return hashlib.sha256("+".join(parts).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["model_type"] = "MultiVectorEncoder"
        return out

    # ------------------------------------------------------------ weights
    def _load_weights(self) -> Any:
        import torch
        from sentence_transformers import MultiVectorEncoder
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        key = (self.path, self.device, self.dtype if self.device != "cpu" else "fp32", self.trust_remote_code,
               "multi-vector")
        mve = _LOADED.get(key)
        if mve is None:
            try:
                mve = MultiVectorEncoder(self.path, device=self.device,
                                         trust_remote_code=self.trust_remote_code,
                                         local_files_only=not self.allow_download)
            except OSError as e:
                raise UsageError(f"cannot load model {self.name!r}: {e}",
                                 hint="--allow-download, or give a local directory") from None
            mve.eval()
            if self.device != "cpu" and self.dtype != "fp32":  # as the plugin does: autocast on CPU
                mve.to({"bf16": torch.bfloat16, "fp16": torch.float16}[self.dtype])
            _LOADED[key] = mve
        if mve.get_embedding_dimension() != self.dim:
            raise UsageError(f"model {self.name!r}: its token vectors have {mve.get_embedding_dimension()} "
                             f"dims, its config files say {self.dim}")
        self._st = mve
        self._prompts = {k: v for k, v in mve.prompts.items() if v}
        return mve

    # ------------------------------------------------------------ encoding
    def encode(self, texts: Sequence[str], kind: Kind = "document", *, prompt: str | None = None,
               batch_tokens: int | None = None) -> np.ndarray:
        return _token_mean(self._token_vectors(texts, kind, prompt, batch_tokens), self.dim)

    def encode_token_vectors(self, texts: Sequence[str], kind: Kind = "query", *,
                             prompt: str | None = None) -> list[np.ndarray]:
        return self._token_vectors(texts, kind, prompt, None)

    def encode_with_token_vectors(self, texts: Sequence[str], kind: Kind = "document", *,
                                  prompt: str | None = None, batch_tokens: int | None = None
                                  ) -> tuple[np.ndarray, list[np.ndarray]]:
        tokens = self._token_vectors(texts, kind, prompt, batch_tokens)
        return _token_mean(tokens, self.dim), tokens

    def encode_tokens(self, input_ids: Sequence[Sequence[int]], *, batch_tokens: int | None = None
                      ) -> list[np.ndarray]:
        raise NotImplementedError(f"{self.plugin}:{self.name} is a multi-vector model: its token vectors "
                                  "come from encode_token_vectors, not from the transformer's outputs")

    def _token_vectors(self, texts: Sequence[str], kind: Kind, prompt: str | None,
                       batch_tokens: int | None) -> list[np.ndarray]:
        """The model's own token vectors (``encode_query``/``encode_document``), unit, float32."""
        prompt = self.prompt_for(kind) if prompt is None else prompt
        if not texts:
            return []
        if kind == "query":
            out = self._numpy_query_vectors(texts, prompt)
            if out is not None:
                return out
        mve = self._load()
        lengths = self._check_window(mve, texts, kind, prompt)
        budget = batch_tokens or self.default_batch_tokens or default_batch_tokens(self.device)
        run = mve.encode_query if kind == "query" else mve.encode_document
        with self._autocast():
            out = run(list(texts), prompt=prompt, batch_size=max(1, budget // max(lengths)),
                      convert_to_numpy=True, show_progress_bar=False)
        self.tokens_seen += sum(lengths)
        return [np.asarray(o, dtype=np.float32) for o in out]

    def _numpy_query_vectors(self, texts: Sequence[str], prompt: str) -> list[np.ndarray] | None:
        """``encode_query``'s token vectors from :class:`NumpyQueryEncoder`, or None where it does not
        serve the call (the caller runs sentence-transformers): a model it cannot run, more texts or
        tokens than a numpy forward pass is quick for, a device or half precision asked for by name."""
        plan = self.numpy_plan
        if plan is None or not self._numpy_allowed(len(texts)):
            if plan is None:
                log.debug("%s: query token vectors from sentence-transformers (torch): %s",
                          self.name, self.numpy_refusal)
            return None
        memo = self._last_numpy_query
        if memo is not None and memo[0] == (tuple(texts), prompt):
            return [t.copy() for t in memo[1]]
        rust = self._rust
        ids = [e.ids for e in rust.encode_batch_fast([prompt + t for t in texts], add_special_tokens=True)]
        for i, seq in enumerate(ids):
            if len(seq) > plan.limit:
                raise TooLongError(i, len(seq), plan.limit)
        if sum(plan.width(len(seq)) for seq in ids) > NUMPY_MAX_TOKENS:
            return None
        encoder = self._numpy_query_encoder()
        if encoder is None:
            log.debug("%s: query token vectors from sentence-transformers (torch): a weight the numpy "
                      "forward pass needs is not float32", self.name)
            return None
        self._count_unknown(ids)
        with _one_blas_thread():
            out = [encoder.query_token_vectors(seq) for seq in ids]
        self.tokens_seen += sum(map(len, ids))
        # `query`'s default mode encodes the same text twice, for its dense vector (the tokens'
        # mean) and its token vectors: one forward pass serves both
        self._last_numpy_query = ((tuple(texts), prompt), out)
        return [t.copy() for t in out]

    _last_numpy_query: tuple[tuple, list[np.ndarray]] | None = None

    def _numpy_query_encoder(self) -> NumpyQueryEncoder | None:
        """The numpy query encoder on the mapped weights, loaded once per process; None when a
        weight is not float32."""
        import time

        key = (self.path, "cpu", "fp32", "numpy-multi-vector")
        if key not in _LOADED:
            t0 = time.perf_counter()
            _LOADED[key] = NumpyQueryEncoder.load(Path(self.path), self.numpy_plan, self._rust)
            self.load_seconds += time.perf_counter() - t0
        return _LOADED[key]

    def _check_window(self, mve: Any, texts: Sequence[str], kind: Kind, prompt: str) -> list[int]:
        """Each text's tokens as the model reads it (prompt and special tokens included); a text past
        the model's cap for ``kind`` raises TooLongError instead of being truncated by the model."""
        tok = mve.tokenizer
        ids = tok([prompt + t for t in texts], add_special_tokens=True, verbose=False)["input_ids"]
        self._count_unknown(ids)
        transformer = mve[0]
        expansion = transformer.query_expansion if kind == "query" else None
        if expansion is not None and expansion["strategy"] == "fixed":
            limit = expansion["length"]  # fixed-width queries: a longer one would be cut to it
        else:
            limit = (transformer.query_length if kind == "query" else transformer.document_length) \
                or transformer.max_seq_length
        lengths = [len(x) for x in ids]
        for i, n in enumerate(lengths):
            if limit and n > limit:
                raise TooLongError(i, n, limit)
        return lengths


def _token_mean(tokens: list[np.ndarray], dim: int) -> np.ndarray:
    """The dense vector of each text: the mean of its unit token vectors, L2-normalised."""
    out = np.zeros((len(tokens), dim), np.float32)
    for i, t in enumerate(tokens):
        if len(t):
            out[i] = t.mean(axis=0)
    return l2_normalize(out, in_place=True)


# ------------------------------------------------------------------ queries in numpy

# the module classes NumpyQueryEncoder runs, by their modules.json type
TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
DENSE = "sentence_transformers.base.modules.dense.Dense"
MASK = "sentence_transformers.multi_vector_encoder.modules.multi_vector_mask.MultiVectorMask"
NORMALIZE = "sentence_transformers.base.modules.normalize.Normalize"
# a Dense head's activation by its saved class (no key: Dense's default, Tanh); the name is
# bert._activation's (None: relu; "none": exact gelu, what nn.GELU() is loaded as)
HEAD_ACTIVATIONS = {"torch.nn.modules.linear.Identity": "identity",
                    "torch.nn.modules.activation.Tanh": "tanh",
                    "torch.nn.modules.activation.ReLU": None,
                    "torch.nn.modules.activation.GELU": "none"}
# the Transformer settings whose saved values the plan reads or knows to be harmless
TRANSFORMER_KEYS = {"transformer_task", "modality_config", "module_output_name", "processing_kwargs",
                    "unpad_inputs", "query_length", "document_length", "query_expansion",
                    "max_seq_length", "do_lower_case"}
TOKENS = "token_embeddings"


@dataclass(frozen=True)
class NumpyQueryPlan:
    """What ``encode_query`` does with a native ``MultiVectorEncoder`` save, as its config files
    record it (sentence-transformers 6.3: ``Transformer.preprocess`` and ``MultiVectorMask.forward``)."""

    bert: dict[str, Any]  # config.json
    limit: int  # tokens a query may have (prompt and special tokens included); more are refused
    expansion: dict[str, Any] | None  # the Transformer's query_expansion (strategy, attend, token, length)
    scores_expansion: bool  # a MultiVectorMask follows: the [MASK] positions are kept as query tokens
    # in order: ("dense", (subdir, activation, bias, residual)) or ("normalize", None)
    heads: tuple[tuple[str, Any], ...]

    def width(self, n: int) -> int:
        """Positions a query of ``n`` tokens is run with: "fixed" pads every query to the expansion
        length, "min" pads shorter ones to it (longer ones sit beside their batch's padding, which
        is neither attended to nor kept)."""
        if self.expansion is None:
            return n
        length = self.expansion["length"]
        return length if self.expansion["strategy"] == "fixed" else max(n, length)


def numpy_query_plan(root: Path, window: int) -> tuple[NumpyQueryPlan | None, str]:
    """The plan for ``root``'s queries, or None and why :class:`NumpyQueryEncoder` cannot run them
    exactly. ``window``: the transformer's max_seq_length (the plugin's reading of it)."""
    cfg_st = _read_json(root / "config_sentence_transformers.json")
    if cfg_st.get("model_type") != "MultiVectorEncoder" or (root / "artifact.metadata").exists():
        return None, "not a native MultiVectorEncoder save (PyLate/Stanford: its loader converts it)"
    if cfg_st.get("truncate_dim") is not None:
        return None, "the model truncates its token vectors (truncate_dim)"
    bert = bert_config(root, _read_json(root / "config.json"))
    if bert is None:
        return None, "its transformer is not a BERT with float32 safetensors the numpy forward pass runs"
    modules = _read_json(root / "modules.json") if (root / "modules.json").exists() else []
    types = [str(m.get("type", "")) for m in modules] if isinstance(modules, list) else []
    if not types or types[0] != TRANSFORMER or str(modules[0].get("path", "")) != "":
        return None, f"its first module is {types[0] if types else 'missing'}, not a Transformer in the root"
    st_cfg = _read_json(root / "sentence_bert_config.json")
    if set(st_cfg) - TRANSFORMER_KEYS:
        return None, f"Transformer settings {sorted(set(st_cfg) - TRANSFORMER_KEYS)} are not read here"
    text = (st_cfg.get("modality_config") or {}).get("text", {"method": "forward",
                                                             "method_output_name": "last_hidden_state"})
    if (st_cfg.get("transformer_task", "feature-extraction") != "feature-extraction"
            or set(st_cfg.get("modality_config") or {"text": None}) != {"text"}
            or text != {"method": "forward", "method_output_name": "last_hidden_state"}
            or st_cfg.get("module_output_name", TOKENS) != TOKENS
            or st_cfg.get("processing_kwargs") or st_cfg.get("do_lower_case")):
        return None, "its Transformer is set up otherwise than a plain text encoder"
    expansion = st_cfg.get("query_expansion")
    if expansion is not None:
        expansion = {"strategy": expansion.get("strategy"), "attend": expansion.get("attend", False),
                     "token": expansion.get("token"), "length": expansion.get("length")}
        if (expansion["strategy"] not in ("fixed", "min") or not isinstance(expansion["attend"], bool)
                or not isinstance(expansion["length"], int) or expansion["length"] < 1):
            return None, f"query_expansion {st_cfg['query_expansion']!r} is not one this reads"
    query_length = st_cfg.get("query_length")
    if expansion is not None and expansion["strategy"] == "fixed":
        limit = expansion["length"]  # as the plugin's _check_window: a longer query would be cut to it
    else:
        limit = query_length or window
    heads: list[tuple[str, Any]] = []
    scores_expansion = False
    for module, kind in zip(modules[1:], types[1:], strict=True):
        cfg = _read_json(root / str(module.get("path", "")) / "config.json")
        if kind == DENSE:
            act = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
            if (act not in HEAD_ACTIVATIONS or cfg.get("module_input_name") != TOKENS
                    or cfg.get("module_output_name", TOKENS) != TOKENS):
                return None, f"a Dense module ({module.get('path')}) that is not a token head this reads"
            if not (root / str(module["path"]) / "model.safetensors").is_file():
                return None, f"{module.get('path')} has no model.safetensors"
            heads.append(("dense", (str(module["path"]), HEAD_ACTIVATIONS[act], bool(cfg.get("bias", True)),
                                    bool(cfg.get("use_residual", False)))))
        elif kind == NORMALIZE:
            if cfg.get("module_input_name") != TOKENS or cfg.get("module_output_name", TOKENS) != TOKENS:
                return None, "a Normalize module that does not normalise the token vectors"
            heads.append(("normalize", None))
        elif kind == MASK:
            # the skiplist drops query tokens only where "query" is among its tasks
            tasks = cfg.get("skiplist_tasks", ["document"])
            tasks = [tasks] if isinstance(tasks, str) else tasks
            if "query" in tasks and cfg.get("skiplist_words"):
                return None, "its skiplist applies to queries"
            scores_expansion = True
        else:
            return None, f"module {kind or '?'} is not one the numpy query path runs"
    return NumpyQueryPlan(bert, int(limit), expansion, scores_expansion, tuple(heads)), ""


class NumpyQueryEncoder:
    """``encode_query`` for a :class:`NumpyQueryPlan`, one text at a time, float32 numpy."""

    def __init__(self, plan: NumpyQueryPlan, bert: NumpyBert, heads: list, expansion_id: int | None):
        self.plan, self.bert, self.heads, self.expansion_id = plan, bert, heads, expansion_id

    @classmethod
    def load(cls, root: Path, plan: NumpyQueryPlan, rust: Any) -> NumpyQueryEncoder | None:
        """The mapped weights; None when one is not float32 or the expansion token is unknown."""
        bert = NumpyBert.load(root, plan.bert)
        if bert is None:
            return None
        heads: list[tuple[str, Any]] = []
        for kind, spec in plan.heads:
            if kind == "normalize":
                heads.append((kind, None))
                continue
            path, act, has_bias, residual = spec
            tensors = mapped_safetensors(root / path / "model.safetensors")
            weight = tensors.get("linear.weight")
            if weight is None:
                return None
            # the residual is projected (its own weight) only where the head changes the width
            names = ["linear.weight", *(["linear.bias"] if has_bias else []),
                     *(["residual.weight"] if residual and weight.shape[0] != weight.shape[1] else [])]
            if any(n not in tensors or tensors[n].dtype != np.float32 for n in names):
                return None
            bias = tensors["linear.bias"] if has_bias else np.zeros(weight.shape[0], np.float32)
            heads.append((kind, (weight, bias, act, residual, tensors.get("residual.weight"))))
        expansion_id = None
        if plan.expansion is not None:
            expansion_id = _expansion_token_id(root, plan.expansion["token"], rust)
            if expansion_id is None:
                return None
        return cls(plan, bert, heads, expansion_id)

    def query_token_vectors(self, ids: list[int]) -> np.ndarray:
        """One query's token vectors from its token ids (prompt and special tokens included)."""
        n, plan = len(ids), self.plan
        width = plan.width(n)
        attended = keep = None
        if width > n:  # the padding positions become [MASK]: scored, attended to only with "attend"
            ids = [*ids, *[self.expansion_id] * (width - n)]
            real = np.arange(width) < n
            attended = None if plan.expansion["attend"] else real
            keep = None if plan.scores_expansion or plan.expansion["attend"] else real
        x = self.bert.token_embeddings(ids, attended)
        for kind, head in self.heads:
            if kind == "normalize":  # F.normalize(p=2, dim=-1): eps 1e-12
                x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(1e-12))
                continue
            weight, bias, act, residual, projection = head
            out = x @ weight.T + bias
            if act == "tanh":
                out = np.tanh(out)
            elif act != "identity":
                out = _activation(out, act)
            if residual:
                out = out + (x if weight.shape[0] == weight.shape[1] else x @ projection.T)
            x = out
        return np.ascontiguousarray(x if keep is None else x[keep], dtype=np.float32)


def _expansion_token_id(root: Path, token: str | None, rust: Any) -> int | None:
    """The id the [MASK] expansion writes: the configured token, else the tokenizer's mask token,
    else its EOS token (sentence-transformers' order)."""
    if token is not None:
        return rust.token_to_id(token)
    cfg = _read_json(root / "tokenizer_config.json")
    for key in ("mask_token", "eos_token"):
        value = cfg.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and rust.token_to_id(value) is not None:
            return int(rust.token_to_id(value))
    return None
