"""The wire contract between stages (docs/design.md#schemas).

Columns may be added, never silently renamed. Every stream carries schema
metadata under ``arrowsmith.*``; a stage reads it with :func:`read_meta`, checks
what it needs and refuses a stream it cannot interpret, naming the missing key.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from .spaces import dense

FORMAT_VERSION = "1"
META_PREFIX = "arrowsmith."
# metadata keys
STAGE = "arrowsmith.stage"
VERSION = "arrowsmith.format_version"
CHUNKER = "arrowsmith.chunker"  # JSON: strategy, tokenizer, max_tokens, overlap
MODEL = "arrowsmith.model"  # JSON: plugin, name, revision, dim, pooling, dtype, prompt, late...
SOURCE = "arrowsmith.source"  # in memory only: the input file a batch came from, for messages
STORE = "arrowsmith.store"  # JSON (chunk --db): db, table, and the table's model settings keyed against

CHUNK_SPAN = pa.struct(
    [
        pa.field("start", pa.int32()),
        pa.field("end", pa.int32()),
        pa.field("n_tokens", pa.int32()),
    ]
)
# markdown chunks also carry the heading path they sit under
CHUNK_SPAN_WITH_HEADING = pa.struct(list(CHUNK_SPAN) + [pa.field("heading", pa.string())])

CHUNKED_FIELDS = [
    pa.field("id", pa.string()),
    pa.field("text", pa.string()),
    pa.field("doc_hash", pa.string()),
]
# chunk --db: true on a row for a document the table holds unchanged (same doc_key). Such a row
# carries id, doc_hash and metadata, no text and no chunks: `embed --db` skips the document and
# counts it as present for --prune (docs/chunk.md, "Nightly builds")
UNCHANGED = "unchanged"

# the dense vector is always there (the representation every table has); others: spaces.COLUMNS
EMBEDDED_CORE = ("id", "doc_id", "chunk_index", "text", "start", "end", dense.COLUMN, "doc_key")


def embedded_fields(dim: int) -> list[pa.Field]:
    return [
        pa.field("id", pa.string()),
        pa.field("doc_id", pa.string()),
        pa.field("chunk_index", pa.int32()),
        pa.field("text", pa.string()),
        pa.field("start", pa.int32()),
        pa.field("end", pa.int32()),
        dense.field(dim),
        pa.field("doc_key", pa.string()),
    ]


def stage_metadata(stage: str, **entries: Any) -> dict[bytes, bytes]:
    """Schema metadata for a stage's output; dict values are stored as JSON."""
    meta = {STAGE: stage, VERSION: FORMAT_VERSION}
    for key, value in entries.items():
        full = key if key.startswith(META_PREFIX) else META_PREFIX + key
        meta[full] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return {k.encode(): v.encode() for k, v in meta.items()}


def read_meta(schema: pa.Schema) -> dict[str, Any]:
    """The ``arrowsmith.*`` metadata of a schema, JSON values decoded."""
    out: dict[str, Any] = {}
    for k, v in (schema.metadata or {}).items():
        key = k.decode()
        if not key.startswith(META_PREFIX):
            continue
        text = v.decode()
        try:
            out[key] = json.loads(text) if text[:1] in "{[" else text
        except json.JSONDecodeError:
            out[key] = text
    return out


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema, what: str = "input",
                  target: str = "the expected schema") -> pa.RecordBatch:
    """``batch`` with ``schema``'s column order, types and metadata, or DataError saying why not.

    Same columns in another order, or types that cast losslessly (int32 → int64, a list of floats
    → a fixed-size list), conform; a missing or extra column, or a failed cast, is an error that
    names ``what`` (the input) and ``target`` (what it had to match).
    """
    from .errors import DataError

    if batch.schema.equals(schema, check_metadata=False):
        return batch
    have, want = set(batch.schema.names), set(schema.names)
    if have != want:
        raise DataError(f"{what}: schema differs from {target}: missing {sorted(want - have) or 'none'}, "
                        f"extra {sorted(have - want) or 'none'}")
    try:
        return batch.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        wrong = [f"{f.name}: {f.type} (expected {schema.field(f.name).type})"
                 for f in batch.schema if f.type != schema.field(f.name).type]
        raise DataError(f"{what}: schema differs from {target}: {'; '.join(wrong)}") from None


def require_text(dtype: pa.DataType, column: str, *, hint: str = "--text-col NAME") -> None:
    """DataError (exit 65) naming the column unless ``dtype`` holds text (string, large string, or
    all-null). One check for every stage that reads a text column (issue 21: `embed` failed with a
    TypeError on an int column that `chunk` reported as bad input)."""
    from .errors import DataError

    if not (pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_null(dtype)):
        raise DataError(f"text column {column!r} is {dtype}, not text", hint=hint)


def require_columns(schema: pa.Schema, columns: list[str] | tuple[str, ...], what: str) -> None:
    from .errors import DataError

    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DataError(
            f"{what}: input has no column(s) {', '.join(missing)} (it has: {', '.join(schema.names)})"
        )
