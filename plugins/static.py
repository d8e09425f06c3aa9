"""Static embedding models: one vector per vocabulary entry, averaged over a text's tokens.

A sentence-transformers directory whose first module is ``StaticEmbedding`` (``arrowsmith
distill``, model2vec) computes nothing but a lookup and a mean, so the built-in plugin runs it
here in numpy, from the weights file, without importing torch or sentence-transformers: the
vectors are ``SentenceTransformer.encode``'s (``nn.EmbeddingBag`` in mean mode) to float32
rounding, and the cost is the tokenizer's.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

STATIC_MODULES = (["StaticEmbedding"], ["StaticEmbedding", "Normalize"])
WEIGHTS = "model.safetensors"
TENSOR = "embedding.weight"  # StaticEmbedding's state dict (model2vec's own layout is folded into it)


def is_static(module_types: list[str]) -> bool:
    """A StaticEmbedding (optionally normalised) and nothing else: what :class:`StaticTable` runs."""
    return module_types in STATIC_MODULES


def static_dim(root: Path) -> int:
    """The vectors' width from the safetensors header alone (the factory never reads weights)."""
    try:
        with open(root / WEIGHTS, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        return int(header[TENSOR]["shape"][1])
    except (OSError, KeyError, IndexError, ValueError, struct.error):
        return 0


class StaticTable:
    """The embedding table of a static model; ``pooled`` is its whole forward pass."""

    def __init__(self, root: Path):
        from safetensors.numpy import load_file

        self.table = np.ascontiguousarray(load_file(str(root / WEIGHTS))[TENSOR], dtype=np.float32)

    def pooled(self, seqs: Sequence[Sequence[int]], out: np.ndarray) -> np.ndarray:
        """Mean of each sequence's rows into ``out`` (an empty sequence gives a zero vector, as
        ``nn.EmbeddingBag`` does). One gather and sum per text: 6x faster than one ``np.add.reduceat``
        over the gathered rows of all of them (9,000 chunk-length texts: 0.37 s against 2.1 s)."""
        table = self.table
        for i, ids in enumerate(seqs):
            if len(ids):
                np.divide(table[ids].sum(0), len(ids), out=out[i])
            else:
                out[i] = 0.0
        return out
