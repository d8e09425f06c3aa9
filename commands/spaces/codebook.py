"""The fitted token codec: ColBERTv2's residual compression (Santhanam et al. 2022, PLAID's storage).

Each token vector is stored as the index of its nearest centroid (a uint16), the size of its
residual (vector − centroid; its RMS, a float16) and, per dimension, which of four buckets the
residual falls in, in units of that size (2 bits): 4 + dim/4 bytes, 100 at 384 dims. It decodes
to centroid + size × the bucket's value, normalised. Token vectors cluster by word, so the
centroid carries most of a vector and the residual bits the rest. The per-token size is ours,
not ColBERTv2's: a rare word far from every centroid has a residual several times the typical
one, which fixed buckets clip — and rare words are what tells documents apart (MaxSim on the
LIMIT-style set: fixed buckets 91–100% of float32 depending on the sample, scaled 99.2–100.7%;
benchmarks/RESULTS.md, "Token codecs").

Unlike int4 or binary, the codec has parameters — the centroids (k-means from
k-means|| seeds) and each dimension's bucket cut-offs and values (quantiles of the residuals)
— fitted once on a table's first tokens and then used for every row the table ever gets: one
table, one codebook. It is serialised deterministically (:meth:`Codebook.to_bytes`), named by its
sha256, which the table's ``multivector`` metadata records; the bytes live beside the table as
``<db>/<table>.tokens-<sha256[:16]>.codebook`` and travel inside an Arrow stream's schema
metadata (:data:`STREAM_KEY`), so ``embed -o`` output stays self-contained.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

BITS = 2
LEVELS = 2 ** BITS
# uint16 codes could hold 65,536; each centroid costs a multiply-add per dimension for every token
# coded and k-means time. 2,048 kept 99.0-100.6% of float32 on both collections, 4,096 99.4-100.2%
# for twice the coding and four times the fit (9.5 s: 0.58x plain embed on a new 82k-token table, where
# 2,048 in 3 rounds costs under a second; benchmarks/RESULTS.md, "residual: a codebook a small table
# can afford")
MAX_CENTROIDS = 2048
FIT_SAMPLE = 16_384  # token vectors the k-means sees (a uniform sample of the first group)
TOKENS_PER_CENTROID = 8  # below MAX_CENTROIDS × this, fewer centroids: each needs points to sit on
STREAM_KEY = "arrowsmith.token_codebook"  # base64 codebook bytes in an embedded stream's schema
MAGIC = b"ASCB1\n"
HEAD_BYTES = 4  # a token's uint16 centroid and float16 residual size, before its bucket bits
ENCODE_ROWS = 2_048  # token vectors scored against the centroids at once (2k × 2k × 4 B = 16 MiB)


@dataclass(frozen=True, eq=False)
class Codebook:
    centroids: np.ndarray  # float16 [k, dim]
    cuts: np.ndarray  # float32 [LEVELS - 1, dim]: bucket boundaries of each dimension's residual / size
    values: np.ndarray  # float32 [LEVELS, dim]: what each bucket decodes to, in units of the size
    fitted_tokens: int  # how many token vectors it was fitted on (doctor reports it)

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def size(self) -> int:
        return int(self.centroids.shape[0])

    @cached_property
    def _centroids32(self) -> np.ndarray:
        return self.centroids.astype(np.float32)

    @cached_property
    def _half_norms(self) -> np.ndarray:
        return (self._centroids32 ** 2).sum(axis=1) / 2

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    # -- coding ------------------------------------------------------------------------------
    def nearest(self, x: np.ndarray) -> np.ndarray:
        return nearest(x, self._centroids32, self._half_norms)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """``uint8 [n, 4 + dim/4]``: the centroid (uint16, little-endian), the residual's size
        (float16), then 2 bits a dimension. Coded :data:`ENCODE_ROWS` tokens at a time, so each
        step's arrays stay in cache (one pass over the whole input per step was 0.6 s of 82k
        tokens' 1.5 s)."""
        x = np.ascontiguousarray(x, np.float32)
        n, dim = x.shape
        pad = -dim % 4
        out = np.empty((n, HEAD_BYTES + (dim + pad) // 4), np.uint8)
        buckets = np.zeros((min(n, ENCODE_ROWS), dim + pad), np.uint8)
        for a in range(0, n, ENCODE_ROWS):
            block = x[a:a + ENCODE_ROWS]
            m = len(block)
            codes = self.nearest(block)
            residual = self._centroids32[codes]
            np.subtract(block, residual, out=residual)
            size = residual_size(residual).astype(np.float16)
            residual /= np.maximum(size.astype(np.float32), np.float32(1e-12))
            b = buckets[:m]
            b[:, :dim] = residual > self.cuts[0]
            for cut in self.cuts[1:]:
                b[:, :dim] += residual > cut
            out[a:a + m, 0:2] = codes.astype("<u2").view(np.uint8).reshape(m, 2)
            out[a:a + m, 2:4] = size.astype("<f2").view(np.uint8).reshape(m, 2)
            out[a:a + m, HEAD_BYTES:] = ((b[:, 0::4] << 6) | (b[:, 1::4] << 4)
                                         | (b[:, 2::4] << 2) | b[:, 3::4])
        return out

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """``float32 [n, dim]`` unit vectors from :meth:`encode`'s rows (token vectors are unit, and
        MaxSim compares cosines: a decoded norm off 1 would weigh a token by its coding error;
        ColBERTv2 normalises too — LIMIT-style 98.9% → 100.4% of float32)."""
        n, dim = len(raw), self.dim
        codes = np.ascontiguousarray(raw[:, :2]).view("<u2").reshape(n)
        size = np.ascontiguousarray(raw[:, 2:4]).view("<f2").astype(np.float32).reshape(n, 1)
        packed = raw[:, HEAD_BYTES:]
        buckets = np.empty((n, packed.shape[1] * 4), np.uint8)
        for j, shift in enumerate((6, 4, 2, 0)):
            buckets[:, j::4] = (packed >> shift) & 3
        buckets = buckets[:, :dim]
        out = self._centroids32[codes]
        if n:
            out += size * np.take_along_axis(self.values, buckets.astype(np.intp), axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=out, where=norms > 0)

    # -- bytes -------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        header = json.dumps({"k": self.size, "dim": self.dim, "bits": BITS, "scaled": True,
                             "fitted_tokens": self.fitted_tokens}, sort_keys=True).encode()
        return b"".join([MAGIC, len(header).to_bytes(4, "little"), header,
                         np.ascontiguousarray(self.centroids, "<f2").tobytes(),
                         np.ascontiguousarray(self.cuts, "<f4").tobytes(),
                         np.ascontiguousarray(self.values, "<f4").tobytes()])

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "codebook") -> Codebook:
        if not data.startswith(MAGIC):
            raise ValueError(f"{where}: not an arrowsmith token codebook")
        at = len(MAGIC)
        n = int.from_bytes(data[at:at + 4], "little")
        header = json.loads(data[at + 4:at + 4 + n])
        k, dim, at = int(header["k"]), int(header["dim"]), at + 4 + n
        if header.get("bits") != BITS or header.get("scaled") is not True:
            raise ValueError(f"{where}: {header.get('bits')}-bit residuals; this version reads {BITS}")
        sizes = (k * dim * 2, (LEVELS - 1) * dim * 4, LEVELS * dim * 4)
        if len(data) != at + sum(sizes):
            raise ValueError(f"{where}: truncated ({len(data)} bytes, expected {at + sum(sizes)})")
        cent = np.frombuffer(data, "<f2", k * dim, at).reshape(k, dim).astype(np.float16)
        cuts = np.frombuffer(data, "<f4", (LEVELS - 1) * dim, at + sizes[0]).reshape(LEVELS - 1, dim)
        values = np.frombuffer(data, "<f4", LEVELS * dim, at + sizes[0] + sizes[1]).reshape(LEVELS, dim)
        return cls(cent, cuts.astype(np.float32), values.astype(np.float32), int(header["fitted_tokens"]))

    def to_stream_value(self) -> bytes:
        return base64.b64encode(self.to_bytes())


class Reservoir:
    """A uniform sample of up to ``capacity`` token vectors from a stream of them (Vitter's
    algorithm R, a slice at a time): what a codebook is fitted on, in bounded memory."""

    def __init__(self, capacity: int, dim: int, seed: int = 0):
        self._values = np.empty((capacity, dim), np.float32)
        self._seen = 0
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self._seen, len(self._values))

    def add(self, tokens: list[np.ndarray]) -> None:
        flat = np.concatenate(tokens) if tokens else np.empty((0, self._values.shape[1]), np.float32)
        capacity = len(self._values)
        free = max(0, min(len(flat), capacity - self._seen))
        self._values[self._seen:self._seen + free] = flat[:free]
        rest = flat[free:]
        if len(rest):
            index = self._seen + free + np.arange(len(rest))  # each one's position in the stream
            keep = self._rng.random(len(rest)) < capacity / (index + 1)
            slots = self._rng.integers(0, capacity, int(keep.sum()))
            self._values[slots] = rest[keep]  # a later one replacing an earlier: as one at a time
        self._seen += len(flat)

    def values(self) -> np.ndarray:
        return self._values[:len(self)]


def residual_size(residual: np.ndarray) -> np.ndarray:
    """``[n, 1]``: each residual's root mean square over its dimensions."""
    return np.sqrt((residual * residual).mean(axis=1, keepdims=True))


def centroids_for(tokens: int) -> int:
    """A power of two up to :data:`MAX_CENTROIDS`, with about :data:`TOKENS_PER_CENTROID` tokens each."""
    k = 1
    while k * 2 <= min(MAX_CENTROIDS, tokens // TOKENS_PER_CENTROID):
        k *= 2
    return k


SEED_ROUNDS = 8
LLOYD_ROUNDS = 3  # after D² seeding, 3, 5 or 10 rounds moved nDCG by noise (±0.4%); each is a full product
HELD_OUT_MIN = 512  # tokens held out of the k-means to fit the residual buckets on


def seed_centres(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``k`` initial centres drawn in proportion to the squared distance from those already drawn
    (k-means++'s D² sampling), in :data:`SEED_ROUNDS` rounds of k/rounds at once (k-means||,
    Bahmani et al. 2012) so each round is one BLAS product.

    Why not the alternatives: random initial centres go where tokens are dense (frequent words)
    and leave rare ones — the words that tell documents apart — far from every centroid (MaxSim
    on the LIMIT-style set 97.7% of float32, Cranfield 94.6%); scikit-learn's k-means++ took 1,354 s
    for 4,096 centres on 32k tokens here (one centre at a time).
    """
    rng = np.random.default_rng(seed)
    n = len(x)
    sq = (x * x).sum(axis=1)
    chosen = [int(rng.integers(n))]
    d2 = np.maximum(sq + sq[chosen[0]] - 2 * (x @ x[chosen[0]]), 0)
    per_round = -(-(k - 1) // SEED_ROUNDS)
    while len(chosen) < k:
        take = min(per_round, k - len(chosen))
        p = d2 / d2.sum() if d2.sum() > 0 else None
        new = rng.choice(n, size=take, replace=False, p=p if p is None or np.count_nonzero(p) >= take
                         else None)
        chosen.extend(int(i) for i in new)
        c = x[new]
        dist = sq[:, None] + (c * c).sum(axis=1)[None, :] - 2 * (x @ c.T)
        d2 = np.minimum(d2, np.maximum(dist.min(axis=1), 0))
    return x[np.asarray(chosen[:k])]


def nearest(x: np.ndarray, centroids: np.ndarray, half_norms: np.ndarray | None = None) -> np.ndarray:
    """Each row's nearest centroid (argmin |x − c|² = argmax x·c − |c|²/2: one BLAS product)."""
    if half_norms is None:
        half_norms = (centroids ** 2).sum(axis=1) / 2
    out = np.empty(len(x), np.uint16)
    for a in range(0, len(x), ENCODE_ROWS):
        scores = x[a:a + ENCODE_ROWS] @ centroids.T
        scores -= half_norms
        out[a:a + ENCODE_ROWS] = scores.argmax(axis=1)
    return out


def lloyd(x: np.ndarray, centres: np.ndarray, rounds: int = LLOYD_ROUNDS) -> np.ndarray:
    """k-means: ``rounds`` of assigning each row to its nearest centre and moving each centre to
    its rows' mean; a centre that gets no row stays where it is. (scikit-learn's ``KMeans`` does
    the same rounds; importing it cost 1.5 s of a new table's embed, more than its 5 rounds.)"""
    c = np.array(centres, np.float32)
    for _ in range(rounds):
        labels = nearest(x, c)
        order = np.argsort(labels, kind="stable")
        ranked = labels[order]
        starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
        present = ranked[starts]
        counts = np.diff(np.r_[starts, len(ranked)])
        c[present] = np.add.reduceat(x[order], starts, axis=0) / counts[:, None]
    return c


def fit(tokens: np.ndarray, seed: int = 0) -> Codebook:
    """A codebook fitted on ``tokens`` (``float32 [n, dim]``, unit rows): k-means centroids, then
    each dimension's residual quantiles (ColBERTv2's buckets, one set per dimension here: the
    dimensions of these models differ in spread by up to ~4×)."""
    x = np.ascontiguousarray(tokens, np.float32)
    if len(x) > FIT_SAMPLE:  # evenly spaced: the first batch's documents in proportion
        x = x[np.linspace(0, len(x) - 1, FIT_SAMPLE).astype(np.int64)]
    # the bucket values come from tokens the centroids were not fitted on (ColBERTv2 holds out 5%):
    # in-sample residuals are smaller than those of the tokens the codebook will code
    k, sampled = centroids_for(len(x)), len(x)
    held = np.zeros(len(x), bool)
    if len(x) >= 2 * HELD_OUT_MIN:
        n_held = max(HELD_OUT_MIN, len(x) // 20)
        held[np.random.default_rng(seed).choice(len(x), n_held, replace=False)] = True
    x, heldout = x[~held], (x[held] if held.any() else x)
    if k == 1:
        centroids = x.mean(axis=0, keepdims=True) if len(x) else np.zeros((1, x.shape[1]), np.float32)
    else:
        centroids = lloyd(x, seed_centres(x, k, seed), LLOYD_ROUNDS)
    provisional = Codebook(centroids.astype(np.float16), np.zeros((LEVELS - 1, x.shape[1]), np.float32),
                           np.zeros((LEVELS, x.shape[1]), np.float32), sampled)
    residual = heldout - provisional._centroids32[provisional.nearest(heldout)]
    residual /= np.maximum(residual_size(residual), np.float32(1e-12))
    if len(residual):
        values = np.quantile(residual, (np.arange(LEVELS) + 0.5) / LEVELS, axis=0).astype(np.float32)
    else:
        values = np.zeros((LEVELS, x.shape[1]), np.float32)
    cuts = ((values[1:] + values[:-1]) / 2).astype(np.float32)
    return Codebook(provisional.centroids, cuts, values, sampled)


# ------------------------------------------------------------------ beside the table


def path(db: str | os.PathLike, table: str, sha256: str) -> Path:
    return Path(db) / f"{table}.tokens-{sha256[:16]}.codebook"


_LOADED: dict[tuple[str, str], Codebook] = {}  # (file, sha) → codebook, per process


def load(db: str | os.PathLike, table: str, sha256: str) -> Codebook:
    """The table's codebook, checked against the sha256 its metadata records (DataError, exit 65,
    naming the file when it is missing or another file)."""
    from arrowsmith.commands.errors import DataError

    p = path(db, table, sha256)
    key = (os.path.realpath(p), sha256)
    if key in _LOADED:
        return _LOADED[key]
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: the token codebook of table {table!r} is missing, so its token vectors "
                        "cannot be decoded", hint="restore the file from a backup of the store, or "
                        "rebuild with `arrowsmith embed --multivector --replace`") from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise DataError(f"{p}: sha256 {got[:16]}… is not the {sha256[:16]}… table {table!r} records")
    try:
        book = Codebook.from_bytes(data, str(p))
    except ValueError as e:
        raise DataError(str(e)) from None
    _LOADED[key] = book
    return book


def save(db: str | os.PathLike, table: str, book: Codebook) -> Path:
    """Write the codebook beside the table, atomically (temp file, fsync, rename); a file already
    there with this name holds these bytes (its name is their hash), so it is left."""
    p = path(db, table, book.sha256)
    if p.exists() and hashlib.sha256(p.read_bytes()).hexdigest() == book.sha256:
        return p
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(book.to_bytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    fd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _LOADED[(os.path.realpath(p), book.sha256)] = book
    return p


def from_stream_metadata(metadata: dict[bytes, bytes] | None) -> Codebook | None:
    raw = (metadata or {}).get(STREAM_KEY.encode())
    return None if raw is None else Codebook.from_bytes(base64.b64decode(raw), "stream metadata")
