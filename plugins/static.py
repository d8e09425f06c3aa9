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
GATHER_TOKENS = 1 << 16  # token rows gathered per step: 64 MiB at dim 256, whatever the text count


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
        ``nn.EmbeddingBag`` does)."""
        start = 0
        while start < len(seqs):
            stop, n = start, 0
            while stop < len(seqs) and (stop == start or n + len(seqs[stop]) <= GATHER_TOKENS):
                n += len(seqs[stop])
                stop += 1
            self._pool(seqs[start:stop], out[start:stop])
            start = stop
        return out

    def _pool(self, seqs: Sequence[Sequence[int]], out: np.ndarray) -> None:
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        out[:] = 0.0
        full = lengths > 0
        if not full.any():
            return
        ids = np.fromiter((i for s in seqs for i in s), dtype=np.int64, count=int(lengths.sum()))
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[full]
        sums = np.add.reduceat(self.table[ids], starts, axis=0)
        out[full] = sums / lengths[full, None].astype(np.float32)
