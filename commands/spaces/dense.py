"""Dense: one L2-normalised vector per chunk, in ``vector`` (``fixed_size_list<float32>[dim]``).

Every table has it: it is what ``index`` builds ANN indexes on, what ``compress`` compresses and
what ``query --mode vector`` searches (cosine). Its dim is the table's ``dim`` setting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from arrowsmith.plugins.vectors import l2_normalize

NAME = "dense"
COLUMN = "vector"


def present(model_meta: dict[str, Any]) -> bool:
    return True


def field(dim: int) -> pa.Field:
    return pa.field(COLUMN, pa.list_(pa.float32(), dim))


def dim_of(schema: pa.Schema) -> int | None:
    """The vector width a schema's column declares (None when it has no fixed width)."""
    if COLUMN not in schema.names:
        return None
    t = schema.field(COLUMN).type
    return t.list_size if pa.types.is_fixed_size_list(t) else None


def truncate(vectors: np.ndarray, dim: int) -> np.ndarray:
    """``[n, dim]`` of wider vectors: a Matryoshka model's first ``dim`` components, re-normalised."""
    if vectors.shape[1] == dim:
        return vectors
    return l2_normalize(np.ascontiguousarray(vectors[:, :dim]), in_place=True)


def column(vectors: np.ndarray, dim: int) -> pa.Array:
    """The batch column of ``[n, dim]`` vectors."""
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, dim)


def decode(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``[n, dim]`` float32 vectors of a column (a copy only where Arrow's buffers cannot be shared)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    dim = col.type.list_size
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(len(col), dim)


# LanceDB's fold-in (its ``optimize``: new rows into an existing IVF index) joins every partition
# under a quarter of its target size (IVF_PQ: 8,192 rows, so 2,048) into its neighbours and splits
# those over four times the target. With partitions ~ sqrt(rows) (1,007 of ~1,000 rows at a million,
# 318 of ~320 at 100k) one fold-in collapsed the index to 32 and 4 partitions: every search then
# scanned all the codes, 5x slower (benchmarks/RESULTS.md, "Issue 20: the fold-in"). Partitions of
# at least 4,096 vectors stay as built.
IVF_MIN_PARTITION_VECTORS = 4_096


def ivf_partitions(vectors: int) -> int:
    """IVF partitions for an index over ``vectors`` vectors: ~sqrt(vectors), but never partitions
    of fewer than IVF_MIN_PARTITION_VECTORS (so below ~16.8M vectors: vectors / 4,096), at least 1."""
    return max(1, min(round(math.sqrt(vectors)), vectors // IVF_MIN_PARTITION_VECTORS))


def pq_sub_vectors(dim: int) -> int:
    """PQ sub-vectors for ``dim``: 8 dims a one-byte code where it divides (48 for 384: 32× smaller
    than float32), else the nearest size that does."""
    for size in (8, 4, 16, 2, 1):
        if dim % size == 0:
            return dim // size
    return 1


def index_config(spec: dict[str, Any]):
    """The LanceDB index ``index`` builds on the column for ``spec`` (``index.choose_vector_index``:
    type, metric, partitions, sub-vectors, IVF training sample rate)."""
    from lancedb.index import IvfHnswSq, IvfPq

    if spec["type"] == "IVF_PQ":
        # a spec recorded before the sample rate was chosen trains at LanceDB's own (256)
        return IvfPq(distance_type=spec["metric"], num_partitions=spec["partitions"],
                     num_sub_vectors=spec["sub_vectors"], sample_rate=spec.get("sample_rate", 256))
    return IvfHnswSq(distance_type=spec["metric"], num_partitions=spec["partitions"])


NORM_TOLERANCE = 1e-3  # float32 normalised vectors are within ~1e-6; 1e-3 catches real damage


def check_batch(col: pa.Array, ids: list, dim: int, normalised: bool, flag: Callable) -> None:
    """``doctor``: null, NaN/inf or (when the model normalises) non-unit vectors, as
    ``flag("vector:<problem>", example ids[, count])``."""
    if col.null_count:
        valid = col.is_valid().to_pylist()
        flag("vector:null vectors", [i for i, v in zip(ids, valid, strict=True) if not v])
        col = col.filter(col.is_valid())
        ids = [i for i, v in zip(ids, valid, strict=True) if v]
    if len(col) == 0:
        return
    values = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    if values.size != len(col) * dim:  # flatten dropped null items inside the lists
        flag("vector:vectors with null components", [], len(col))
        return
    mat = values.reshape(len(col), dim)
    finite = np.isfinite(mat).all(axis=1)
    flag("vector:vectors with NaN or infinite components", [ids[r] for r in np.flatnonzero(~finite)])
    if normalised:
        norms = np.linalg.norm(np.where(np.isfinite(mat), mat, 0), axis=1)
        off = finite & (np.abs(norms - 1.0) > NORM_TOLERANCE)
        flag(f"vector:vectors whose norm is not 1 ± {NORM_TOLERANCE:g} though the model normalises",
             [f"{ids[r]} (norm {norms[r]:.4f})" for r in np.flatnonzero(off)])


def stats(tbl: Any, model_meta: dict[str, Any], rows: int, db: Any = None, table: str | None = None
          ) -> dict[str, Any]:
    """``index --stats``: what this representation stores (``db``/``table``: where, for the files
    a representation keeps beside the table)."""
    dim = dim_of(tbl.schema) or int(model_meta.get("dim") or 0)
    return {"representation": NAME, "column": COLUMN, "dim": dim, "bytes_per_chunk": dim * 4}
