"""Multi-vector: each chunk's token vectors, in ``tokens``, scored by MaxSim (late interaction).

``embed --multivector`` stores, beside the dense vector, one vector per content token of the
chunk (prompt and special tokens left out, L2-normalised): for a mean-pooled model its own
contextual token vectors (the zero-shot case: no training), with ``--late`` taken from the
whole-document windows exactly as the chunk's mean is. A query is scored against a chunk by
MaxSim (ColBERT, Khattab & Zaharia 2020): for each query token its best cosine among the chunk's
tokens, averaged over the query's tokens — the mean rather than ColBERT's sum, so that a score
lies in [-1, 1] like the dense cosine and reads the same for a short query and a long one (the
order within one query is the same either way).

Storage (``--token-precision``; bytes per token at 384 dims):

- ``float32`` (1,536) and ``float16`` (768): ``list<fixed_size_list<float{32,16}>[dim]>``,
  LanceDB's multivector type, which its own MaxSim search reads (``query --mode maxsim``).
- ``int4`` (194, the default before ``residual``): each token's scale (largest |component| / 7.5,
  a float16) and 16 levels a component, two to a byte (``list<fixed_size_list<uint8>[2 + dim/2]>``).
  It kept 99.8% of float32's nDCG@10 on the LIMIT-style set and 99.5% on Cranfield (benchmarks/RESULTS.md).
- ``residual`` (100, the default): ColBERTv2's residual compression — each token's nearest of up
  to 2,048 centroids (a uint16), the residual's size (a float16) and 2 bits a dimension for what the
  centroid misses (``list<fixed_size_list<uint8>[4 + dim/4]>``). Its codebook is fitted on the table's first
  batch and kept beside the table (:mod:`.codebook`); the ``multivector`` metadata names it by
  its sha256.
- ``binary`` (48): the sign of each dimension, packed (``list<fixed_size_list<uint8>[dim/8]>``);
  a float query token is scored against the signs (asymmetric, as binary dense search is) and
  divided by sqrt(dim), so scores stay in [-1, 1]. 96.3% of float32 on the LIMIT-style set, 98.7%
  on Cranfield.

``--token-pool F`` keeps about 1/F of a chunk's tokens, merging similar ones with
sentence-transformers' ``HierarchicalTokenPooling`` (Ward clustering, PyLate's recipe).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from typing import Any

import numpy as np
import pyarrow as pa

from . import codebook as codebooks

NAME = "multivector"
COLUMN = "tokens"
META_KEY = "multivector"  # in the arrowsmith.model metadata: the settings below, part of doc_key
PRECISIONS = ("int4", "residual", "binary", "float16", "float32")
# residual: the one precision measured at ≥ 99% of float32's nDCG@10 (MaxSim over the whole table,
# Cranfield and the LIMIT-style set) at ≤ 128 bytes a token (benchmarks/RESULTS.md, "Token codecs")
DEFAULT_PRECISION = "residual"
UNRECORDED_PRECISION = "int4"  # what a table's metadata without one meant (the default until then)
BYTES_PER_DIM = {"float32": 4.0, "float16": 2.0}
PRECISIONS_BY_SIZE = ("float32", "float16", "int4", "residual", "binary")
PACKED_PRECISIONS = ("int4", "residual", "binary")  # uint8 codes, two or more dims a byte
FITTED_PRECISIONS = ("residual",)  # codecs with parameters fitted on the table's tokens (a codebook)
FLOAT_PRECISIONS = ("float16", "float32")  # LanceDB's multivector type: its own MaxSim search reads them
INT4_SCALE_BYTES = 2  # int4 rows lead with the token's scale, a float16


@dataclass(frozen=True)
class TokenSettings:
    dim: int
    precision: str = DEFAULT_PRECISION
    pool: float = 1.0  # keep ~1/pool of the tokens (1: every token)
    source: str = "token-vectors"  # the model's token_vector_source (plugins/base.py)
    codebook: str | None = None  # fitted precisions: the sha256 of the table's codebook, once fitted
    codec: codebooks.Codebook | None = dc_field(default=None, compare=False, repr=False)

    def as_meta(self) -> dict[str, Any]:
        meta = {"dim": self.dim, "precision": self.precision, "pool": self.pool, "source": self.source}
        if self.codebook:
            meta["codebook"] = self.codebook
        return meta

    @property
    def fitted(self) -> bool:
        """A precision whose codec is fitted on the tokens (it needs :attr:`codec` to code)."""
        return self.precision in FITTED_PRECISIONS

    def with_codec(self, book: codebooks.Codebook) -> TokenSettings:
        return replace(self, codebook=book.sha256, codec=book)

    @property
    def bytes_per_token(self) -> float:
        return _bytes(self.dim, self.precision)


def present(model_meta: dict[str, Any]) -> bool:
    return isinstance(model_meta.get(META_KEY), dict)


def settings_of(model_meta: dict[str, Any], db: Any = None, table: str | None = None
                ) -> TokenSettings | None:
    """The token settings a table or stream records; with ``db`` and ``table``, a fitted
    precision's codebook is loaded from beside the table (checked against its sha256)."""
    s = model_meta.get(META_KEY)
    if not isinstance(s, dict):
        return None
    out = TokenSettings(int(s["dim"]), s.get("precision", UNRECORDED_PRECISION), float(s.get("pool", 1.0)),
                        s.get("source", "token-vectors"), s.get("codebook"))
    if out.fitted and out.codebook and db is not None and table is not None:
        out = out.with_codec(codebooks.load(db, table, out.codebook))
    return out


def at_precision(s: TokenSettings, precision: str) -> TokenSettings:
    """``s`` recoded at ``precision`` (another precision has no codebook until one is fitted)."""
    return s if precision == s.precision else replace(s, precision=precision, codebook=None, codec=None)


def fit_codec(s: TokenSettings, flat: np.ndarray) -> TokenSettings:
    """``s`` with a codebook fitted on ``flat`` (``float32 [n, dim]`` token vectors), if its
    precision needs one and it has none yet."""
    if not s.fitted or s.codec is not None:
        return s
    return s.with_codec(codebooks.fit(flat))


def check_settings(precision: str, pool: float) -> None:
    """``UsageError`` (exit 2) for a precision or pooling no token column can have."""
    from arrowsmith.commands.errors import UsageError

    if precision not in PRECISIONS:
        raise UsageError(f"--token-precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if not 1.0 <= pool <= 64:
        raise UsageError(f"--token-pool {pool}: must be between 1 (every token) and 64")


def field(s: TokenSettings) -> pa.Field:
    if s.precision in PACKED_PRECISIONS:
        inner = pa.list_(pa.uint8(), _width(s.dim, s.precision))
    else:
        inner = pa.list_(pa.float16() if s.precision == "float16" else pa.float32(), s.dim)
    return pa.field(COLUMN, pa.list_(inner))


def _bytes(dim: int, precision: str) -> float:
    return _width(dim, precision) if precision in PACKED_PRECISIONS else dim * BYTES_PER_DIM[precision]


def _width(dim: int, precision: str) -> int:
    """Bytes a token of the packed precisions: 1 bit a dim (binary); a float16 scale, then 4 bits a
    dim (int4); a uint16 centroid and a float16 residual size, then 2 bits a dim (residual)."""
    if precision == "binary":
        return -(-dim // 8)
    if precision == "residual":
        return codebooks.HEAD_BYTES + -(-dim * codebooks.BITS // 8)
    return INT4_SCALE_BYTES + -(-dim // 2)


# ------------------------------------------------------------------ building the column


def pool_tokens(tokens: list[np.ndarray], pool: float) -> list[np.ndarray]:
    """About 1/pool of each chunk's token vectors (sentence-transformers' hierarchical pooling)."""
    if pool <= 1.0 or not tokens:
        return tokens
    import torch
    from sentence_transformers.multi_vector_encoder.modules.token_pooling import HierarchicalTokenPooling

    pooler = HierarchicalTokenPooling(pool_factor=pool, num_protected_tokens=0)
    out = pooler.pool([torch.from_numpy(np.ascontiguousarray(t, np.float32)) for t in tokens])
    return [o.float().numpy() for o in out]


def column(tokens: list[np.ndarray], s: TokenSettings) -> pa.Array:
    """The batch column for one chunk's ``float32 [n_i, dim]`` unit token vectors per row."""
    counts = np.fromiter((len(t) for t in tokens), np.int64, len(tokens))
    flat = np.concatenate(tokens) if len(tokens) and counts.sum() else np.empty((0, s.dim), np.float32)
    return column_of(flat, counts, s)


def column_of(flat: np.ndarray, counts: np.ndarray, s: TokenSettings,
              mask: np.ndarray | None = None) -> pa.Array:
    """The column from every row's token vectors at once (``flat``), ``counts`` a row; rows where
    ``mask`` is true are null."""
    if s.precision == "binary":
        width = _width(s.dim, "binary")
        values = pa.array(np.packbits(flat > 0, axis=1).reshape(-1), pa.uint8())
    elif s.precision == "int4":
        width = _width(s.dim, "int4")
        values = pa.array(_int4_encode(flat).reshape(-1), pa.uint8())
    elif s.precision == "residual":
        width = _width(s.dim, "residual")
        values = pa.array(_codec(s).encode(flat).reshape(-1) if len(flat) else [], pa.uint8())
    else:
        width = s.dim
        values = pa.array(flat.astype(np.float16 if s.precision == "float16" else np.float32).reshape(-1))
    inner = pa.FixedSizeListArray.from_arrays(values, width)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, inner, type=field(s).type,
                                    mask=None if mask is None or not mask.any() else pa.array(mask))


def coarser(s: TokenSettings) -> list[str]:
    """The precisions a column stored at ``s.precision`` can be re-encoded to without claiming
    more than it holds: itself and the smaller ones, largest first."""
    return [p for p in PRECISIONS_BY_SIZE if _bytes(s.dim, p) <= s.bytes_per_token]


def convert(col: pa.Array | pa.ChunkedArray, s: TokenSettings, to: TokenSettings) -> pa.Array:
    """``col`` (stored at ``s``) re-encoded at ``to``'s precision from its decoded floats; null
    rows stay null. Signs survive int4 exactly, so int4 → binary equals float32 → binary."""
    if isinstance(col, pa.ChunkedArray):
        col = pa.concat_arrays(col.chunks) if col.num_chunks else pa.array([], field(s).type)
    flat, offsets = decode(col, s)
    mask = np.asarray(col.is_null()) if col.null_count else None
    return column_of(flat, np.diff(offsets), to, mask)


# ------------------------------------------------------------------ reading and scoring


def decode(col: pa.Array | pa.ChunkedArray, s: TokenSettings) -> tuple[np.ndarray, np.ndarray]:
    """(``float32 [total_tokens, dim]``, ``int64 [rows + 1]`` offsets) of a ``tokens`` column.

    Binary codes decode to ±1/sqrt(dim) per dimension: unit vectors, so a query token's dot
    product with one is its asymmetric cosine estimate.
    """
    if isinstance(col, pa.ChunkedArray):
        col = pa.concat_arrays(col.chunks) if col.num_chunks else pa.array([], field(s).type)
    if col.null_count:
        col = col.fill_null(pa.scalar([], field(s).type))
    counts = np.asarray(col.value_lengths().fill_null(0), np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    inner = col.flatten()
    width = inner.type.list_size
    raw = np.asarray(inner.flatten().to_numpy(zero_copy_only=False)).reshape(-1, width)
    if s.precision == "binary":
        bits = np.unpackbits(raw, axis=1, count=s.dim).astype(np.float32)
        return (bits * 2.0 - 1.0) / math.sqrt(s.dim), offsets
    if s.precision == "int4":
        return _int4_decode(raw, s.dim), offsets
    if s.precision == "residual":
        return _codec(s).decode(raw), offsets
    return raw.astype(np.float32, copy=False), offsets


def _codec(s: TokenSettings) -> codebooks.Codebook:
    if s.codec is None:  # a caller's bug: settings_of(meta, db, table) or fit_codec loads one
        raise ValueError(f"{s.precision} token codes need the table's codebook, which was not loaded")
    if s.codec.dim != s.dim:
        raise ValueError(f"the token codebook has {s.codec.dim} dims, the tokens {s.dim}")
    return s.codec


def _int4_encode(x: np.ndarray) -> np.ndarray:
    """``uint8 [n, 2 + dim/2]``: each token's scale (its largest |component| / 7.5, float16), then 16
    levels a component, (q + 0.5)·scale for q in −8..7, two to a byte."""
    n, dim = x.shape
    scale = (np.abs(x).max(axis=1, keepdims=True) / 7.5).astype(np.float16)
    s32 = np.maximum(scale.astype(np.float32), np.float32(1e-12))
    q = np.clip(np.floor(x / s32), -8, 7).astype(np.int8) + 8  # 0..15
    if dim % 2:
        q = np.concatenate([q, np.full((n, 1), 8, np.int8)], axis=1)
    packed = (q[:, 0::2].astype(np.uint8) << 4) | q[:, 1::2].astype(np.uint8)
    return np.concatenate([scale.view(np.uint8).reshape(n, INT4_SCALE_BYTES), packed], axis=1)


def _int4_decode(raw: np.ndarray, dim: int) -> np.ndarray:
    scale = np.ascontiguousarray(raw[:, :INT4_SCALE_BYTES]).view(np.float16).astype(np.float32)
    packed = raw[:, INT4_SCALE_BYTES:]
    q = np.empty((len(raw), packed.shape[1] * 2), np.float32)
    q[:, 0::2] = packed >> 4
    q[:, 1::2] = packed & 0x0F
    return (q[:, :dim] - 8 + 0.5) * scale


def maxsim(queries: list[np.ndarray], tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``float32 [len(queries), n_chunks]``: for each query and chunk, the mean over the query's
    tokens of the best cosine among the chunk's tokens. A chunk (or query) without tokens scores -1.
    """
    n = len(offsets) - 1
    out = np.full((len(queries), n), -1.0, np.float32)
    if n == 0 or len(tokens) == 0:
        return out
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    starts = offsets[:-1][nonempty]
    for i, q in enumerate(queries):
        if len(q) == 0:
            continue
        sims = q.astype(np.float32, copy=False) @ tokens.T  # [query tokens, all chunk tokens]
        best = np.maximum.reduceat(sims, starts, axis=1)  # [query tokens, non-empty chunks]
        out[i, nonempty] = best.mean(axis=0)
    return out


# ------------------------------------------------------------------ the index on the column

INDEX_NAME = f"{COLUMN}_idx"
INDEX_TYPES = ("auto", "ivf_pq", "none")
# auto: below this many token vectors, MaxSim over the whole table is LanceDB's flat multivector
# scan (recall 1); from it, IVF_PQ. A flat scan is slow long before a dense one (64k float16 tokens:
# p50 435 ms, against 107 ms through the index at recall@10 0.986), and the build is slow too (355 s
# for those 64k on 2 busy cores, growing ~tokens^1.5): here it costs what the dense index costs at
# its own threshold (benchmarks/RESULTS.md, "Issue 19", token index)
AUTO_MIN_TOKENS = 100_000
COUNT_SAMPLE_ROWS = 1_000  # rows read to estimate a table's token count (tokens a chunk × rows)
PACKED_SEARCH = ("--mode maxsim scans {precision} token vectors exhaustively (LanceDB indexes float "
                 "multivectors only); --rerank maxsim, auto's default, is the scalable path")


def index_spec(tokens: int, s: TokenSettings, kind: str = "auto") -> dict[str, Any] | None:
    """The index to build on the token column (a JSON-able spec), or None: ``--mode maxsim`` scans.

    LanceDB indexes a multivector column of floats, cosine only: IVF_PQ over every token vector,
    partitions as the dense index's (:func:`dense.ivf_partitions`: ≈ sqrt(token vectors), never
    under 4,096 vectors each, which LanceDB's fold-in would join), PQ sub-vectors dim / 8 as the
    dense index; a search probes the partitions for each query token
    and re-scores its candidates' full MaxSim (``query``'s refine). Packed precisions get none.
    """
    from arrowsmith.commands.errors import UsageError

    from .dense import ivf_partitions, pq_sub_vectors

    if kind not in INDEX_TYPES:
        raise UsageError(f"unknown token index type {kind!r} (use {'|'.join(INDEX_TYPES)})")
    packed = s.precision not in FLOAT_PRECISIONS
    if kind == "none" or (kind == "auto" and (packed or tokens < AUTO_MIN_TOKENS)):
        return None
    if packed:
        raise UsageError(f"--token-index {kind}: the table's token vectors are {s.precision} codes, which "
                         "LanceDB cannot index; " + PACKED_SEARCH.format(precision=s.precision),
                         hint="embed --multivector --token-precision float16 --replace, for an indexed "
                              "--mode maxsim")
    if tokens < 256:
        raise UsageError(f"a token index needs at least 256 token vectors to train (table has {tokens})",
                         hint="--token-index none: the flat scan is fast at this size")
    return {"type": "IVF_PQ", "metric": "cosine", "partitions": ivf_partitions(tokens),
            "sub_vectors": pq_sub_vectors(s.dim)}


def index_config(spec: dict[str, Any]):
    """The LanceDB index ``index`` builds on the column for ``spec`` (:func:`index_spec`)."""
    from lancedb.index import IvfPq

    return IvfPq(distance_type="cosine", num_partitions=spec["partitions"],
                 num_sub_vectors=spec["sub_vectors"])


def estimate_tokens(tbl: Any, rows: int) -> int:
    """The table's token vectors, estimated from its first rows' (reading every list would read
    the whole column; the threshold and the partitions need the size, not the count)."""
    if not rows:
        return 0
    import pyarrow.compute as pc

    head = tbl.search().select([COLUMN]).limit(min(rows, COUNT_SAMPLE_ROWS)).to_arrow().column(COLUMN)
    lengths = np.asarray(pc.list_value_length(head).fill_null(0), np.int64)
    return round(float(lengths.mean()) * rows) if len(lengths) else 0


# ------------------------------------------------------------------ doctor


def check_batch(batch: pa.RecordBatch, ids: list, s: TokenSettings, flag: Callable,
                count_tokens: Callable | None = None) -> None:
    """``doctor``: one non-empty list of token vectors per chunk, finite and unit (float precisions),
    and — naive chunks without pooling, ``count_tokens`` given — one vector per token of the text."""
    if COLUMN not in batch.schema.names:
        flag("tokens:the table records token vectors but has no 'tokens' column", [], 1)
        return
    col = batch.column(COLUMN)
    counts = np.asarray(col.value_lengths().fill_null(-1), np.int64)
    flag("tokens:chunks without token vectors (null)", [ids[r] for r in np.flatnonzero(counts < 0)])
    flag("tokens:chunks with an empty list of token vectors", [ids[r] for r in np.flatnonzero(counts == 0)])
    if count_tokens is not None:
        want = np.asarray(count_tokens(batch.column("text").to_pylist()), np.int64)
        wrong = np.flatnonzero((counts >= 0) & (counts != want))
        flag("tokens:chunks whose token vectors are not one per token of their text",
             [f"{ids[r]} ({counts[r]} for {want[r]} tokens)" for r in wrong])
    if s.precision not in FLOAT_PRECISIONS or not len(col):
        return  # packed codes: no NaN to find, and their norms are the quantizer's
    tokens, offsets = decode(col, s)
    bad = ~np.isfinite(tokens).all(axis=1)
    norms = np.linalg.norm(np.where(np.isfinite(tokens), tokens, 0), axis=1)
    # float16 storage rounds each component: a unit vector's norm moves by up to ~1e-3
    bad |= np.abs(norms - 1.0) > (4e-3 if s.precision == "float16" else 1e-3)
    rows = np.unique(np.searchsorted(offsets, np.flatnonzero(bad), side="right") - 1)
    flag("tokens:chunks with NaN, infinite or non-unit token vectors", [ids[r] for r in rows])


def stats(tbl: Any, model_meta: dict[str, Any], rows: int, db: Any = None, table: str | None = None
          ) -> dict[str, Any]:
    """``index --stats``: token vectors stored, bytes per token and per chunk (one scan of the
    column's list lengths, in bounded batches), and a fitted precision's codebook: how many
    centroids, fitted on how many tokens (a table keeps the codebook of its first run)."""
    from arrowsmith.commands.store import scan_batches

    s = settings_of(model_meta)
    tokens = sum(int(np.asarray(b.column(COLUMN).value_lengths().fill_null(0)).sum())
                 for b in scan_batches(tbl, [COLUMN]))
    per_chunk = tokens / rows if rows else 0.0
    out = {"representation": NAME, "column": COLUMN, "dim": s.dim, "precision": s.precision,
           "pool": s.pool, "tokens": tokens, "tokens_per_chunk": round(per_chunk, 1),
           "bytes_per_token": s.bytes_per_token, "bytes_per_chunk": round(per_chunk * s.bytes_per_token, 1),
           "maxsim_search": _maxsim_search(tbl, s)}
    if s.fitted and s.codebook and db is not None and table is not None:
        from arrowsmith.commands.errors import DataError

        out["codebook"] = {"file": codebooks.path(db, table, s.codebook).name}
        try:
            book = codebooks.load(db, table, s.codebook)
        except DataError as e:  # stats still answer; doctor reports it as a finding
            out["codebook"]["problem"] = str(e)
        else:
            out["codebook"].update(centroids=book.size, fitted_tokens=book.fitted_tokens)
    return out


def _maxsim_search(tbl: Any, s: TokenSettings) -> str:
    """How ``query --mode maxsim`` searches this table, for ``index --stats``."""
    if s.precision not in FLOAT_PRECISIONS:
        return "exhaustive scan: " + PACKED_SEARCH.format(precision=s.precision)
    if any(ix.name == INDEX_NAME for ix in tbl.list_indices()):
        return f"indexed ({INDEX_NAME})"
    return (f"flat (LanceDB's exact multivector scan; `index` builds {INDEX_NAME} from "
            f"{AUTO_MIN_TOKENS:,} token vectors, or with --token-index ivf_pq)")
