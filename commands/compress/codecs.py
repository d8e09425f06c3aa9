"""Vector codecs: what a compressed vector is, how it is fitted, encoded and scored.

Every codec turns float32 vectors ``[n, dim]`` into fixed-size byte codes
``uint8 [n, code_bytes]`` and scores float queries against codes on the cosine
scale (an estimate of ``q · x`` for unit vectors): queries stay float
(asymmetric scoring), except for the binary codec's Hamming first stage.

A *method* is a chain parsed from a spec such as ``truncate:256+binary+rescore:100``:
an optional Matryoshka truncation, one codec, an optional rescoring step.
"""

from __future__ import annotations

import base64
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from arrowsmith.commands.errors import UsageError
from arrowsmith.plugins.vectors import l2_normalize

CODECS = ("float32", "float16", "int8", "binary", "pq")
RESCORE_WITH = ("int8", "float")
PQ_CENTROIDS = 256
PQ_ITERATIONS = 15
PQ_TRAIN_ROWS = 16_384  # k-means sample: 64 points per centroid
SAMPLE_ROWS = 32_768  # calibration sample kept for PQ training
SEED = 0


# ------------------------------------------------------------------ arrays in JSON metadata


def pack_array(a: np.ndarray) -> dict[str, Any]:
    """An array as JSON-able base64 (exact, unlike decimal floats)."""
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}


def unpack_array(d: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(d["b64"])
    return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


# ------------------------------------------------------------------ calibration


class Calibration:
    """Streaming statistics a codec is fitted on: per-dimension min/max/mean and a row sample.

    One pass over the corpus, memory bounded by ``SAMPLE_ROWS`` (reservoir sampling).
    """

    def __init__(self, dim: int, sample_rows: int = SAMPLE_ROWS, seed: int = SEED):
        self.dim = dim
        self.n = 0
        self.lo = np.full(dim, np.inf, dtype=np.float32)
        self.hi = np.full(dim, -np.inf, dtype=np.float32)
        self.total = np.zeros(dim, dtype=np.float64)
        self.sample = np.empty((0, dim), dtype=np.float32)
        self.sample_rows = sample_rows
        self._rng = np.random.default_rng(seed)

    def update(self, x: np.ndarray) -> None:
        if not len(x):
            return
        self.lo = np.minimum(self.lo, x.min(axis=0))
        self.hi = np.maximum(self.hi, x.max(axis=0))
        self.total += x.sum(axis=0, dtype=np.float64)
        self._reservoir(x)
        self.n += len(x)

    def _reservoir(self, x: np.ndarray) -> None:
        room = self.sample_rows - len(self.sample)
        if room > 0:
            self.sample = np.concatenate([self.sample, x[:room]])
            x, start = x[room:], self.n + room
        else:
            start = self.n
        if not len(x):
            return
        # row i (0-based, global) replaces a random slot with probability sample_rows / (i + 1)
        slots = self._rng.integers(0, np.arange(start, start + len(x)) + 1)
        keep = slots < self.sample_rows
        self.sample[slots[keep]] = x[keep]

    @property
    def mean(self) -> np.ndarray:
        return (self.total / max(self.n, 1)).astype(np.float32)


# ------------------------------------------------------------------ codecs


class Codec(ABC):
    """Fitted on a :class:`Calibration`, then encodes and scores blocks of vectors."""

    name: str = ""
    dim: int = 0

    @property
    @abstractmethod
    def code_bytes(self) -> int: ...

    def fit(self, calib: Calibration) -> None:  # noqa: B027 - most codecs need no fitting
        """Learn parameters (ranges, codebooks) from the corpus statistics."""

    @abstractmethod
    def encode(self, x: np.ndarray) -> np.ndarray:
        """``float32 [n, dim]`` → ``uint8 [n, code_bytes]``."""

    @abstractmethod
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Approximate float32 vectors back (for rescoring and round-trip checks)."""

    def prepare(self, q: np.ndarray) -> Any:
        """Per-query state reused across blocks (lookup tables, scaled queries)."""
        return q

    def scores(self, prepared: Any, codes: np.ndarray) -> np.ndarray:
        """``float32 [nq, len(codes)]`` cosine-scale scores, higher is better."""
        return prepared @ self.decode(codes).T

    def params(self) -> dict[str, Any]:
        return {}

    def load_params(self, params: dict[str, Any]) -> None:  # noqa: B027 - parameterless codecs
        """Restore what :meth:`params` saved."""


class _FloatCodec(Codec):
    """Little-endian floats of ``dtype``, decoded to float32."""

    dtype = "<f4"

    def __init__(self, dim: int):
        self.dim = dim

    @property
    def code_bytes(self) -> int:
        return np.dtype(self.dtype).itemsize * self.dim

    def encode(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=self.dtype).view(np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(codes).view(self.dtype).astype(np.float32, copy=False)


class Float32Codec(_FloatCodec):
    name = "float32"
    dtype = "<f4"


class Float16Codec(_FloatCodec):
    name = "float16"
    dtype = "<f2"


class Int8Codec(Codec):
    """Scalar quantisation: each dimension's corpus range [lo, hi] cut into 256 steps.

    Stored as uint8 ``u = round((x - lo) / scale)``; a float query scores
    ``q · (lo + u * scale) = (q * scale) · u + q · lo`` without decoding.
    """

    name = "int8"

    def __init__(self, dim: int):
        self.dim = dim
        self.lo = np.zeros(dim, dtype=np.float32)
        self.scale = np.ones(dim, dtype=np.float32)

    @property
    def code_bytes(self) -> int:
        return self.dim

    def fit(self, calib: Calibration) -> None:
        lo, hi = calib.lo.astype(np.float32), calib.hi.astype(np.float32)
        self.lo = lo
        # a constant dimension still needs a non-zero step
        self.scale = np.where(hi > lo, (hi - lo) / 255.0, 1.0).astype(np.float32)

    def encode(self, x: np.ndarray) -> np.ndarray:
        # vectors outside the calibrated range (added after compression) are clipped
        return np.clip(np.rint((x - self.lo) / self.scale), 0, 255).astype(np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.lo + codes.astype(np.float32) * self.scale

    def prepare(self, q: np.ndarray) -> Any:
        return q * self.scale, q @ self.lo

    def scores(self, prepared: Any, codes: np.ndarray) -> np.ndarray:
        qs, offset = prepared
        return qs @ codes.astype(np.float32).T + offset[:, None]

    def params(self) -> dict[str, Any]:
        return {"lo": pack_array(self.lo), "scale": pack_array(self.scale)}

    def load_params(self, params: dict[str, Any]) -> None:
        self.lo, self.scale = unpack_array(params["lo"]), unpack_array(params["scale"])


class BinaryCodec(Codec):
    """One sign bit per dimension, packed 8 to a byte; searched by Hamming distance.

    The first stage binarises the query too (XOR + popcount is what makes it
    cheap); the Hamming distance ``h`` is mapped to the cosine scale by the
    sign-random-projection identity ``cos(pi * h / dim)``. Rescoring then
    restores float precision on the candidates.

    The bits are signs about the corpus mean, not about zero: embeddings share a
    common direction (a static model's chunk vectors had cosine ≈ 0.84 with their
    mean), and signs about zero then spend most bits on it. Centring raised the
    recall@10 of 100 Hamming candidates from 0.65 to 0.73 on such a table
    (benchmarks/RESULTS.md, "A million chunks").
    """

    name = "binary"

    def __init__(self, dim: int):
        self.dim = dim
        self.center = np.zeros(dim, dtype=np.float32)  # companions written before centring: zero

    @property
    def code_bytes(self) -> int:
        return (self.dim + 7) // 8

    def fit(self, calib: Calibration) -> None:
        self.center = calib.mean

    def params(self) -> dict[str, Any]:
        return {"center": pack_array(self.center)}

    def load_params(self, params: dict[str, Any]) -> None:
        if "center" in params:
            self.center = unpack_array(params["center"])

    def encode(self, x: np.ndarray) -> np.ndarray:
        return np.packbits(x > self.center, axis=1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        bits = np.unpackbits(codes, axis=1, count=self.dim).astype(np.float32)
        return (2.0 * bits - 1.0) / math.sqrt(self.dim)

    def prepare(self, q: np.ndarray) -> Any:
        return self.encode(q)

    def scores(self, prepared: Any, codes: np.ndarray) -> np.ndarray:
        return np.cos(np.pi * hamming(prepared, codes) / self.dim).astype(np.float32)


class PQCodec(Codec):
    """Product quantisation: ``m`` sub-vectors, each replaced by one of 256 k-means centroids.

    Scored asymmetrically: a per-query table of ``q_sub · centroid`` is summed
    over the ``m`` codes of each vector.
    """

    name = "pq"

    def __init__(self, dim: int, m: int):
        if m <= 0 or dim % m:
            raise UsageError(f"pq: --bytes {m} does not divide the vector dimension {dim}",
                             hint="one of " + ", ".join(str(d) for d in _divisors(dim)))
        self.dim, self.m, self.sub = dim, m, dim // m
        self.centroids = np.zeros((m, PQ_CENTROIDS, self.sub), dtype=np.float32)

    @property
    def code_bytes(self) -> int:
        return self.m

    def fit(self, calib: Calibration) -> None:
        rng = np.random.default_rng(SEED)
        x = calib.sample[:PQ_TRAIN_ROWS]
        self.centroids = kmeans(x.reshape(len(x), self.m, self.sub), PQ_CENTROIDS, rng)

    def encode(self, x: np.ndarray) -> np.ndarray:
        return nearest(x.reshape(len(x), self.m, self.sub), self.centroids).astype(np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        parts = [self.centroids[j][codes[:, j]] for j in range(self.m)]
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(codes), 0), np.float32)

    def prepare(self, q: np.ndarray) -> Any:
        # lut[j, qi, c] = q_j · centroid_{j,c}
        return np.einsum("qjs,jcs->jqc", q.reshape(len(q), self.m, self.sub), self.centroids)

    def scores(self, prepared: Any, codes: np.ndarray) -> np.ndarray:
        out = np.zeros((prepared.shape[1], len(codes)), dtype=np.float32)
        for j in range(self.m):
            out += prepared[j][:, codes[:, j]]
        return out

    def params(self) -> dict[str, Any]:
        return {"m": self.m, "centroids": pack_array(self.centroids)}

    def load_params(self, params: dict[str, Any]) -> None:
        self.centroids = unpack_array(params["centroids"])


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int = PQ_ITERATIONS) -> np.ndarray:
    """Lloyd's k-means in every subspace at once: ``x [n, m, s]`` → centroids ``[m, k, s]``.

    With fewer points than ``k`` the extra centroids repeat points; an empty
    cluster takes a random point instead of dying.
    """
    x = np.asarray(x, dtype=np.float32)
    n, m, s = x.shape
    if n == 0:
        return np.zeros((m, k, s), dtype=np.float32)
    c = np.ascontiguousarray(x[rng.choice(n, size=k, replace=n < k)].transpose(1, 0, 2))
    for _ in range(iterations):
        assign = nearest(x, c)  # [n, m]
        for j in range(m):
            counts = np.bincount(assign[:, j], minlength=k)
            # per-dimension bincount: much faster than np.add.at for the cluster sums
            sums = np.stack([np.bincount(assign[:, j], weights=x[:, j, d], minlength=k) for d in range(s)],
                            axis=1)
            full = counts > 0
            c[j, full] = sums[full] / counts[full, None]
            c[j, ~full] = x[rng.integers(0, n, size=int((~full).sum())), j]
    return c


def nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Nearest centroid (squared L2) per row and subspace: ``x [n, m, s]``, ``c [m, k, s]`` → ``[n, m]``."""
    n, m, _ = x.shape
    out = np.empty((n, m), dtype=np.int64)
    cc = (c * c).sum(axis=2)  # [m, k]
    step = max(1, (16 << 20) // max(1, m * c.shape[1]))  # rows per block: n×m×k floats bounded
    for i in range(0, n, step):
        xb = x[i:i + step]
        # sub-vectors are short (a few dims): broadcasting beats batched matmul/einsum here
        d = np.broadcast_to(cc[None], (len(xb), *cc.shape)).copy()
        for j in range(x.shape[2]):
            d -= 2.0 * xb[:, :, j, None] * c[None, :, :, j]
        out[i:i + step] = d.argmin(axis=2)
    return out


# ------------------------------------------------------------------ Hamming distance

_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount(a: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(a)
    return _POPCOUNT8[a.view(np.uint8)].reshape(*a.shape, -1).sum(axis=-1)


def hamming(qbits: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``int32 [nq, n]`` Hamming distances between packed bit rows (XOR + popcount).

    Rows are viewed as uint64 words when the width allows (8× fewer XORs);
    the caller bounds memory by passing blocks of ``codes``.
    """
    width = qbits.shape[1]
    if width % 8 == 0:
        qbits = np.ascontiguousarray(qbits).view(np.uint64)
        codes = np.ascontiguousarray(codes).view(np.uint64)
    x = np.bitwise_xor(qbits[:, None, :], codes[None, :, :])
    return popcount(x).sum(axis=2, dtype=np.int32)


# ------------------------------------------------------------------ methods


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method: ``[truncate:N+]codec[:arg][+rescore:N[:int8|float]]``."""

    codec: str
    truncate: int | None = None
    pq_bytes: int | None = None
    rescore: int = 0
    rescore_with: str = "int8"

    @property
    def label(self) -> str:
        parts = [f"truncate:{self.truncate}"] if self.truncate else []
        if self.codec == "pq":
            parts.append(f"pq:{self.pq_bytes}" if self.pq_bytes else "pq")
        elif self.codec != "float32" or not self.truncate:
            parts.append(self.codec)
        if self.rescore:
            parts.append(f"rescore:{self.rescore}" + (":float" if self.rescore_with == "float" else ""))
        return "+".join(parts)


def parse_method(spec: str, *, rescore: int | None = None, rescore_with: str | None = None,
                 pq_bytes: int | None = None) -> MethodSpec:
    """Parse ``spec``; keyword options (``--rescore``, ``--rescore-with``, ``--bytes``) fill what it
    leaves out. One that contradicts the spec, or has nothing to apply to, is refused (exit 2)."""
    truncate, codec, pq_arg, resc, resc_with, how = None, None, None, 0, "int8", ""
    steps = [s.strip().lower() for s in spec.split("+") if s.strip()]
    if not steps:
        raise UsageError("empty --method", hint=_known())
    for i, step in enumerate(steps):
        head, _, arg = step.partition(":")
        head = _METHOD_ALIASES.get(head, head)
        if head == "truncate":
            if i != 0 or truncate is not None:
                raise UsageError(f"method {spec!r}: truncate:N must come first", hint=_known())
            truncate = _positive(arg, f"method {spec!r}: truncate needs a dimension, e.g. truncate:256")
        elif head == "rescore":
            if i != len(steps) - 1:
                raise UsageError(f"method {spec!r}: rescore:N must come last", hint=_known())
            n, _, how = arg.partition(":")
            resc = _positive(n, f"method {spec!r}: rescore needs a candidate count, e.g. rescore:100")
            resc_with = how or "int8"
        elif head in CODECS:
            if codec is not None:
                raise UsageError(f"method {spec!r} names two codecs ({codec}, {head})", hint=_known())
            codec = head
            if arg:
                if head != "pq":
                    raise UsageError(f"method {spec!r}: {head} takes no argument", hint=_known())
                pq_arg = _positive(arg, f"method {spec!r}: pq:BYTES needs a byte count")
        else:
            raise UsageError(f"unknown compression method {step!r}", hint=_known())
    codec = codec or ("float32" if truncate else None)
    if codec is None:
        raise UsageError(f"method {spec!r} names no codec", hint=_known())
    # issue 10: an option that the spec contradicts used to win (or be dropped) silently
    if pq_bytes is not None:
        if codec != "pq":
            raise UsageError(f"--bytes only applies to pq, not {codec}")
        if pq_arg is not None and pq_arg != pq_bytes:
            raise UsageError(f"method {spec!r} says pq:{pq_arg} and --bytes {pq_bytes}: give one")
        pq_arg = pq_bytes
    if rescore:
        if resc and resc != rescore:
            raise UsageError(f"method {spec!r} says rescore:{resc} and --rescore {rescore}: give one")
        resc = rescore
    if rescore_with:
        if not resc:
            raise UsageError(f"--rescore-with needs rescoring: --rescore N, or {spec}+rescore:N")
        if how and how != rescore_with:
            raise UsageError(f"method {spec!r} rescores with {how} and --rescore-with {rescore_with}: "
                             "give one")
        resc_with = rescore_with
    if resc_with not in RESCORE_WITH:
        raise UsageError(f"unknown rescoring representation {resc_with!r} (int8 or float)")
    return MethodSpec(codec, truncate, pq_arg, resc, resc_with)


_METHOD_ALIASES = {"f16": "float16", "fp16": "float16", "half": "float16", "f32": "float32",
                   "float": "float32", "fp32": "float32", "uint8": "int8", "sq8": "int8", "bin": "binary",
                   "ubinary": "binary"}


def _known() -> str:
    return ("float16, int8, binary, pq[:BYTES], truncate:N, combined with '+', "
            "e.g. truncate:256+binary+rescore:100")


def _positive(text: str, message: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(message) from None
    if value <= 0:
        raise UsageError(message)
    return value


def make_codec(spec: MethodSpec, dim: int) -> Codec:
    """An unfitted codec for vectors of ``dim`` (after truncation)."""
    if spec.truncate and spec.truncate > dim:
        raise UsageError(f"truncate:{spec.truncate} is larger than the vector dimension {dim}")
    d = spec.truncate or dim
    if spec.codec == "pq":
        return PQCodec(d, spec.pq_bytes or default_pq_bytes(d))
    return {"float32": Float32Codec, "float16": Float16Codec, "int8": Int8Codec,
            "binary": BinaryCodec}[spec.codec](d)


def default_pq_bytes(dim: int) -> int:
    """16× smaller than float32 (dim / 4 bytes) when that divides, else the nearest divisor."""
    target = max(1, dim // 4)
    return min(_divisors(dim), key=lambda d: (abs(d - target), d))


def transform(spec: MethodSpec, x: np.ndarray) -> np.ndarray:
    """What the codec sees: truncated (Matryoshka) and re-normalised when asked."""
    return l2_normalize(x[:, :spec.truncate]) if spec.truncate else x
