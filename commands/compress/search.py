"""Searching compressed codes: blocked top-k, then optional rescoring of the candidates.

Memory is bounded by the block size, never by the corpus: codes are scored
``BLOCK_BYTES`` at a time against all queries and only a running top-k is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arrowsmith.plugins.vectors import l2_normalize

from .codecs import Codec, MethodSpec, transform

BLOCK_BYTES = 32 << 20  # per block: queries × rows × bytes of the widest intermediate
QUERY_BLOCK = 256  # queries searched together

log = logging.getLogger("arrowsmith.compress")

HitLists = list[tuple[list[str], np.ndarray]]  # per query: (ids, scores), best first


def block_rows(n_queries: int, code_bytes: int, work_bytes_per_pair: int = 8) -> int:
    """Rows per block so that ``n_queries × rows`` intermediates stay under BLOCK_BYTES."""
    per_row = max(1, n_queries) * max(work_bytes_per_pair, code_bytes)
    return max(256, BLOCK_BYTES // per_row)


def topk_scores(codec: Codec, queries: np.ndarray, codes: np.ndarray, k: int,
                rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` rows per query by ``codec.scores``: (positions int64 [nq, k], scores [nq, k]).

    ``rows`` restricts the search to those positions (a ``where`` filter).
    Ties are broken by position, so results are deterministic.
    """
    nq = len(queries)
    n = len(codes) if rows is None else len(rows)
    k = min(k, n)
    best_s = np.full((nq, 0), -np.inf, dtype=np.float32)
    best_p = np.zeros((nq, 0), dtype=np.int64)
    if k == 0 or nq == 0:
        return best_p, best_s
    prepared = codec.prepare(queries)
    step = block_rows(nq, codec.code_bytes)
    for start in range(0, n, step):
        pos = np.arange(start, min(start + step, n)) if rows is None else rows[start:start + step]
        s = codec.scores(prepared, codes[pos] if rows is not None else codes[start:start + step])
        best_p, best_s = _merge(best_p, best_s, np.broadcast_to(pos, s.shape), s, k)
    return best_p, best_s


def _merge(p1: np.ndarray, s1: np.ndarray, p2: np.ndarray, s2: np.ndarray, k: int):
    p = np.concatenate([p1, p2], axis=1)
    s = np.concatenate([s1, s2], axis=1).astype(np.float32)
    if s.shape[1] > k:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(s, part, 1).min(axis=1)
        tied = np.flatnonzero((s >= kth[:, None]).sum(axis=1) > k)
        for i in tied:  # ties across the cut (Hamming distances are integers): lowest positions win
            cand = np.flatnonzero(s[i] >= kth[i])
            part[i] = cand[np.lexsort((p[i, cand], -s[i, cand]))[:k]]
        p, s = np.take_along_axis(p, part, 1), np.take_along_axis(s, part, 1)
    order = np.lexsort((p, -s), axis=1)
    return np.take_along_axis(p, order, 1), np.take_along_axis(s, order, 1)


class Rescorer:
    """Finer vectors for a handful of candidate positions (int8 codes or the stored floats)."""

    name = ""

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        """``float32 [len(positions), dim]`` for sorted unique ``positions``."""
        raise NotImplementedError


@dataclass
class ArrayRescorer(Rescorer):
    """Rescoring vectors held in memory (the report), or int8 codes decoded on demand."""

    vectors: np.ndarray
    codec: Codec | None = None
    name: str = "float"

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        rows = self.vectors[positions]
        return self.codec.decode(rows) if self.codec is not None else np.asarray(rows, np.float32)


@dataclass
class CompressedIndex:
    """Compressed codes in memory, searched with float queries; results on the cosine scale.

    ``search(query_vectors, k, where=None)`` returns, per query, the ids of the
    best ``k`` rows and their scores. With a rescorer, the best ``rescore``
    candidates of the first stage are re-ranked by finer vectors (int8 codes
    or the float vectors kept on disk).
    """

    spec: MethodSpec
    codec: Codec
    ids: np.ndarray  # object array of str, row order of the codes
    codes: np.ndarray  # uint8 [n, code_bytes]
    rescorer: Rescorer | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    filter_rows: Callable[[str], np.ndarray] | None = None  # where → sorted positions

    @property
    def method(self) -> str:
        return self.spec.label

    @property
    def dim(self) -> int:
        return int(self.meta.get("dim") or (self.spec.truncate or self.codec.dim))

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def memory_bytes(self) -> int:
        """What the first stage holds: the codes (ids and rescoring vectors are not counted)."""
        return int(self.codes.nbytes)

    def search(self, query_vectors: np.ndarray, k: int = 10, where: str | None = None) -> HitLists:
        positions, scores = self.search_positions(query_vectors, k, where)
        return [(self.ids[p].tolist(), s) for p, s in zip(positions, scores, strict=True)]

    def search_positions(self, query_vectors: np.ndarray, k: int = 10,
                         where: str | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
        q = l2_normalize(np.atleast_2d(np.asarray(query_vectors, dtype=np.float32)))
        rows = self._rows(where)
        first_k = max(k, self.spec.rescore) if self.rescorer is not None else k
        positions: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        for i in range(0, len(q), QUERY_BLOCK):  # bounds lookup tables and rescoring gathers
            qb = q[i:i + QUERY_BLOCK]
            pos, sc = topk_scores(self.codec, transform(self.spec, qb), self.codes, first_k, rows)
            if self.rescorer is not None and pos.size:
                pos, sc = self._rescore(qb, pos, k)
            positions += list(pos)
            scores += list(sc)
        return positions, scores

    def _rows(self, where: str | None) -> np.ndarray | None:
        if not where:
            return None
        if self.filter_rows is None:
            from arrowsmith.commands.errors import UsageError

            raise UsageError("this compressed index cannot evaluate a where filter (no source table)")
        return self.filter_rows(where)

    def _rescore(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        unique, inverse = np.unique(cand, return_inverse=True)
        vectors = self.rescorer.fetch(unique)  # one read for every query's candidates
        exact = np.einsum("qcd,qd->qc", vectors[inverse.reshape(cand.shape)], q)
        k = min(k, cand.shape[1])
        order = np.lexsort((cand, -exact), axis=1)[:, :k]
        return np.take_along_axis(cand, order, 1), np.take_along_axis(exact, order, 1).astype(np.float32)
