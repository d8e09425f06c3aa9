"""A deterministic bag-of-words model: each word adds 1 to dimension md5(word) mod dim."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from arrowsmith.plugins.base import EmbeddingModel, TextTokenizer, TooLongError


class WordTokenizer(TextTokenizer):
    name = "toy-words"

    def token_offsets(self, text: str) -> np.ndarray:
        spans = [[m.start(), m.end()] for m in re.finditer(r"\S+", text)]
        return np.array(spans, dtype=np.int64).reshape(-1, 2)


def word_vector(text: str, dim: int) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    for w in text.lower().split():
        v[int(hashlib.md5(w.encode()).hexdigest(), 16) % dim] += 1.0
    v[0] += 1e-3  # never all zero
    return v / np.linalg.norm(v)


class ToyModel(EmbeddingModel):
    plugin = "toy"
    revision = "toy-1"
    max_tokens = 64
    pooling = "mean"

    def __init__(self, name: str, **options):
        self.name = name
        self.dim = int(name.rsplit("-", 1)[-1]) if name.rsplit("-", 1)[-1].isdigit() else 16
        self.options = options
        self._tok = WordTokenizer()

    @property
    def tokenizer(self) -> TextTokenizer:
        return self._tok

    def encode(self, texts, kind="document", *, prompt=None, batch_tokens=None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            if len(text.split()) > self.max_tokens:
                raise TooLongError(i, len(text.split()), self.max_tokens)
            out[i] = word_vector((prompt or "") + text, self.dim)
        return out


def load_model(name: str, **options) -> ToyModel:
    return ToyModel(name, **options)
