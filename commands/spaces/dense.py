"""Dense: one L2-normalised vector per chunk, in ``vector`` (``fixed_size_list<float32>[dim]``).

Every table has it: it is what ``index`` builds ANN indexes on, what ``compress`` compresses and
what ``query --mode vector`` searches (cosine). Its dim is the table's ``dim`` setting.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

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


def column(vectors: np.ndarray, dim: int) -> pa.Array:
    """The batch column of ``[n, dim]`` vectors."""
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, dim)
