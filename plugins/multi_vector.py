"""ColBERT-style models: a sentence-transformers ``MultiVectorEncoder`` directory (its own saves,
PyLate and Stanford checkpoints, ``arrowsmith tune --multivector`` output), served by the built-in
``sentence-transformers`` plugin (its factory tells the directory apart: ``is_multi_vector``).

Everything that makes such a model's token vectors is sentence-transformers' own, run through
``encode_document``/``encode_query``: the projection (its ``Dense`` head, e.g. 128-d), the
query/document prefixes (``prompts``; legacy ``[Q]``/``[D]`` markers are restored by its loader),
query expansion (``[MASK]`` positions scored as query tokens), the document skiplist (punctuation
not scored) and the per-task lengths. Nothing here re-implements them; this module adds what the
contract asks of every model: the window checked instead of truncated (``TooLongError``), token
budgets, bf16 autocast on a CPU that has it, counters.

The dense vector (the table's ``vector`` column, and a query's dense vector) is the mean of the
text's unit token vectors, L2-normalised. A table always holds a dense vector (ANN index, hybrid
and BM25 fusion, compress and doctor read it) and such a model has no single-vector head; the mean
comes from the same forward pass at no cost. It is a first stage for ``--rerank maxsim``, not a
retriever trained as one: MaxSim is what the model was trained for (benchmarks/RESULTS.md, issue 19).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .base import Kind, TooLongError
from .errors import UsageError
from .sentence_transformers import (
    _LOADED,
    SentenceTransformerModel,
    _read_json,
    _weights_sha256,
    default_batch_tokens,
)
from .vectors import l2_normalize

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
        if isinstance(doc_len, int) and doc_len > 0:
            self.max_tokens = min(self.max_tokens, doc_len)
        # a native save records its prompts; PyLate v3 and Stanford checkpoints keep [Q]/[D] markers
        # elsewhere, which only MultiVectorEncoder's loader turns into prompts: read them from it
        self._prompts_need_load = cfg_st.get("model_type") != "MultiVectorEncoder"

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
        mve = self._load()
        lengths = self._check_window(mve, texts, kind, prompt)
        budget = batch_tokens or self.default_batch_tokens or default_batch_tokens(self.device)
        run = mve.encode_query if kind == "query" else mve.encode_document
        with self._autocast():
            out = run(list(texts), prompt=prompt, batch_size=max(1, budget // max(lengths)),
                      convert_to_numpy=True, show_progress_bar=False)
        self.tokens_seen += sum(lengths)
        return [np.asarray(o, dtype=np.float32) for o in out]

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
