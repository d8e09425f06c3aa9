"""The wire contract between stages (DESIGN.md, "Schemas").

Columns may be added, never silently renamed. Every stream carries schema
metadata under ``arrowsmith.*``; a stage checks what it needs with
:func:`require_meta` and refuses a stream it cannot interpret.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

FORMAT_VERSION = "1"
META_PREFIX = "arrowsmith."
# metadata keys
STAGE = "arrowsmith.stage"
VERSION = "arrowsmith.format_version"
CHUNKER = "arrowsmith.chunker"  # JSON: strategy, tokenizer, max_tokens, overlap
MODEL = "arrowsmith.model"  # JSON: plugin, name, revision, dim, pooling, dtype, prompt, late...
SOURCE = "arrowsmith.source"  # in memory only: the input file a batch came from, for messages

CHUNK_SPAN = pa.struct(
    [
        pa.field("start", pa.int32()),
        pa.field("end", pa.int32()),
        pa.field("n_tokens", pa.int32()),
    ]
)
# markdown chunks also carry the heading path they sit under
CHUNK_SPAN_WITH_HEADING = pa.struct(list(CHUNK_SPAN) + [pa.field("heading", pa.string())])

DOCUMENT_FIELDS = [pa.field("id", pa.string()), pa.field("text", pa.string())]

CHUNKED_FIELDS = [
    pa.field("id", pa.string()),
    pa.field("text", pa.string()),
    pa.field("doc_hash", pa.string()),
]

EMBEDDED_CORE = ("id", "doc_id", "chunk_index", "text", "start", "end", "vector", "doc_key")


def embedded_fields(dim: int) -> list[pa.Field]:
    return [
        pa.field("id", pa.string()),
        pa.field("doc_id", pa.string()),
        pa.field("chunk_index", pa.int32()),
        pa.field("text", pa.string()),
        pa.field("start", pa.int32()),
        pa.field("end", pa.int32()),
        pa.field("vector", pa.list_(pa.float32(), dim)),
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


def require_meta(schema: pa.Schema, key: str, what: str) -> Any:
    """Return metadata ``key`` or raise DataError naming it."""
    from .errors import DataError

    meta = read_meta(schema)
    if key not in meta:
        raise DataError(
            f"input stream has no '{key}' schema metadata, so {what} cannot be interpreted",
            hint="pipe the output of the previous arrowsmith stage, not a hand-made table",
        )
    return meta[key]


def require_columns(schema: pa.Schema, columns: list[str] | tuple[str, ...], what: str) -> None:
    from .errors import DataError

    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DataError(
            f"{what}: input has no column(s) {', '.join(missing)} (it has: {', '.join(schema.names)})"
        )
