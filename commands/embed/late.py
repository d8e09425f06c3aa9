"""Late chunking (Günther et al. 2024): the whole document through the model once, in
overlapping windows when it is longer than the model's window, each chunk pooled from its tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from arrowsmith.plugins.base import EmbeddingModel

from .params import EmbedParams, prompt_ids


def late_windows(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Content-token windows ``[start, end)`` covering ``n_tokens``; consecutive ones overlap.

    As few windows as windows of ``size`` need, all of one length and evenly spaced, so
    consecutive ones overlap by ``overlap`` (±1) and no more: a document slightly longer than one
    window costs two shorter windows, not two full ones that mostly overlap.
    """
    if n_tokens <= size:
        return [(0, n_tokens)]
    count = -(-(n_tokens - overlap) // (size - overlap))
    length = -(-(n_tokens + (count - 1) * overlap) // count)
    stride = (n_tokens - length) / (count - 1)
    return [(s, s + length) for s in (round(i * stride) for i in range(count))]


def assign_windows(n_tokens: int, windows: Sequence[tuple[int, int]]) -> np.ndarray:
    """For each token, the index of the window in which it is most central.

    "Central" is the context the window gives the token on its poorer side: tokens to the
    window's edge, where an edge that is also the document's edge counts as unlimited
    (there is no context to lose there). Ties go to the earlier window.
    """
    best = np.full(n_tokens, -1.0)
    owner = np.zeros(n_tokens, dtype=np.int64)
    for w, (s, e) in enumerate(windows):
        t = np.arange(s, e)
        left = t - s if s > 0 else np.full(len(t), np.inf)
        right = (e - 1 - t) if e < n_tokens else np.full(len(t), np.inf)
        score = np.minimum(left, right).astype(float)
        better = score > best[s:e]
        best[s:e][better] = score[better]
        owner[s:e][better] = w
    return owner


@dataclass
class LatePlan:
    """How one document goes through the model and how its chunks are pooled."""

    sequences: list[list[int]]  # model inputs, one per window
    content_start: list[int]  # index of the window's first document token in its sequence
    windows: list[tuple[int, int]]
    owner: np.ndarray  # window of each document token
    chunk_tokens: list[tuple[int, int]]  # token range [a, b) of each chunk

    def document_tokens(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """``[n_tokens, dim]``: each document token's vector, from the window it is most central in."""
        dim = outputs[0].shape[1]
        tokens = np.empty((len(self.owner), dim), dtype=np.float32)
        for w, ((s, e), first) in enumerate(zip(self.windows, self.content_start, strict=True)):
            mine = np.nonzero(self.owner[s:e] == w)[0]
            tokens[s + mine] = outputs[w][first + mine]
        return tokens

    def pool(self, outputs: Sequence[np.ndarray], include_specials: bool,
             tokens: np.ndarray | None = None) -> np.ndarray:
        """Chunk vectors (not yet normalised): mean of each chunk's token vectors."""
        dim = outputs[0].shape[1]
        if tokens is None:
            tokens = self.document_tokens(outputs)
        out = np.empty((len(self.chunk_tokens), dim), dtype=np.float32)
        for c, (a, b) in enumerate(self.chunk_tokens):
            used = set(self.owner[a:b].tolist()) if b > a else {self._nearest_window(a)}
            parts = [tokens[a:b]] if b > a else []
            if include_specials or b <= a:
                parts += [self._specials(outputs, w) for w in sorted(used)]
            stacked = np.concatenate(parts)
            out[c] = stacked.mean(axis=0)
        return out

    def _nearest_window(self, token: int) -> int:
        return int(self.owner[min(token, len(self.owner) - 1)]) if len(self.owner) else 0

    def _specials(self, outputs: Sequence[np.ndarray], w: int) -> np.ndarray:
        """The window's prompt and special tokens (everything but document tokens)."""
        s, e = self.windows[w]
        first = self.content_start[w]
        out = outputs[w]
        return np.concatenate([out[:first], out[first + (e - s):]])


def plan_late(model: EmbeddingModel, text: str, spans: Sequence[tuple[int, int]], params: EmbedParams
              ) -> LatePlan:
    """Tokenize the whole document once, map chunk spans to tokens by offsets, cut windows."""
    ids, offsets = model.token_ids(text)
    prompt = prompt_ids(model, params.prompt)
    content = params.window - model.num_special_tokens - len(prompt)
    windows = late_windows(len(ids), content, params.window_overlap or 0)
    owner = assign_windows(len(ids), windows)
    sequences, starts = [], []
    for s, e in windows:
        seq, first = model.wrap_ids([*prompt, *ids[s:e]])
        sequences.append(seq)
        starts.append(first + len(prompt))
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    chunk_tokens = [span_tokens(offsets, a, b) for a, b in spans]
    return LatePlan(sequences, starts, windows, owner, chunk_tokens)


def span_tokens(offsets: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """Token range ``[a, b)`` of the tokens overlapping characters ``[start, end)``."""
    if len(offsets) == 0:
        return 0, 0
    a = int(np.searchsorted(offsets[:, 1], start, side="right"))
    b = int(np.searchsorted(offsets[:, 0], end, side="left"))
    return a, max(a, b)
