"""A complete small arrowsmith model plugin: a deterministic bag-of-words model.

Each word adds 1 to dimension ``word_id(word) % dim``. It implements the whole contract of
``arrowsmith.plugins.base.EmbeddingModel``: a tokenizer with character offsets, ``encode`` (prompts,
and ``TooLongError`` instead of truncation), the token-level methods late chunking needs
(``token_ids``, ``wrap_ids``, ``encode_tokens``) and the ``tokens_seen`` counter. Every other
attribute keeps the base class's default (``device`` "cpu", ``dtype`` "", ``load_seconds`` 0 …).

Its token vectors carry no context (one-hot per word), so a late-chunked vector equals the
naive one: the plugin tests check exactly that.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from arrowsmith.plugins.base import EmbeddingModel, Kind, TextTokenizer, TooLongError

VOCAB = 1 << 20


def word_id(word: str) -> int:
    return int(hashlib.md5(word.lower().encode()).hexdigest(), 16) % VOCAB


class WordTokenizer(TextTokenizer):
    """Whitespace-separated words; offsets are the words' character spans."""

    name = "toy-words"

    def token_offsets(self, text: str) -> np.ndarray:
        spans = [[m.start(), m.end()] for m in re.finditer(r"\S+", text)]
        return np.array(spans, dtype=np.int64).reshape(-1, 2)


def word_vector(text: str, dim: int) -> np.ndarray:
    """The toy's vector of a text: normalised word counts (never all zero)."""
    v = np.zeros(dim, dtype=np.float32)
    for w in text.split():
        v[word_id(w) % dim] += 1.0
    v[0] += 1e-3  # never all zero
    return v / np.linalg.norm(v)


class ToyModel(EmbeddingModel):
    plugin = "toy"
    revision = "toy-1"
    max_tokens = 64  # words per text
    num_special_tokens = 0  # wrap_ids adds none
    pooling = "mean"
    supports_token_embeddings = True

    def __init__(self, name: str, **options):
        # options: device, dtype, trust_remote_code, allow_download; a toy needs none of them
        self.name = name
        tail = name.rsplit("-", 1)[-1]
        self.dim = int(tail) if tail.isdigit() else 16
        self.options = options
        self.tokens_seen = 0
        self._tok = WordTokenizer()

    @property
    def tokenizer(self) -> TextTokenizer:
        return self._tok

    def encode(self, texts: Sequence[str], kind: Kind = "document", *, prompt: str | None = None,
               batch_tokens: int | None = None) -> np.ndarray:
        prompt = self.prompt_for(kind) if prompt is None else prompt
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            n = len((prompt + text).split())
            if n > self.max_tokens:
                raise TooLongError(i, n, self.max_tokens)
            out[i] = word_vector(prompt + text, self.dim)
            self.tokens_seen += n
        return out

    # ---------------------------------------------------------------- late chunking
    def token_ids(self, text: str) -> tuple[list[int], np.ndarray]:
        offsets = self._tok.token_offsets(text)
        return [word_id(text[s:e]) for s, e in offsets], offsets

    def wrap_ids(self, ids: Sequence[int]) -> tuple[list[int], int]:
        return list(ids), 0

    def encode_tokens(self, input_ids: Sequence[Sequence[int]], *, batch_tokens: int | None = None
                      ) -> list[np.ndarray]:
        out = []
        for i, ids in enumerate(input_ids):
            if len(ids) > self.max_tokens:
                raise TooLongError(i, len(ids), self.max_tokens)
            vectors = np.zeros((len(ids), self.dim), dtype=np.float32)
            vectors[np.arange(len(ids)), np.asarray(ids, dtype=np.int64) % self.dim] = 1.0
            out.append(vectors)
            self.tokens_seen += len(ids)
        return out


def load_model(name: str, **options) -> ToyModel:
    """The entry point (``toy = "arrowsmith_toy_plugin:load_model"``): cheap, loads nothing."""
    return ToyModel(name, **options)
