"""``doc_key``: what a stored document is checked against, so that an unchanged one is left alone.

A document's key is the sha256 of its text's hash, the model, chunker and embedding settings
(:func:`key_digest`) and its carried metadata. ``embed --db`` compares it with the stored key to
skip a document (docs/design.md#incremental-and-safe-writes); ``chunk --db`` computes the same key
from the table's settings to leave such a document unchunked (:mod:`.chunk.stored`). One
implementation for both: a copy that drifted would make chunk keep what embed must re-embed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from . import spaces
from .schemas import EMBEDDED_CORE, UNCHANGED
from .spaces import multi

# informational only: a touched but unchanged file is not re-embedded (its stored mtime stays)
VOLATILE_METADATA = ("mtime",)


def text_hash(text: str) -> str:
    """A document's ``doc_hash``: sha256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def key_digest(meta: dict[str, Any], chunker: Any) -> str:
    """The settings part of every document's key: the ``arrowsmith.model`` settings (as embed
    makes them, or as a table records them) and the chunker's (``"rows"`` for text rows)."""
    # precision (bf16 vs fp16) and device are left out: describe()'s dtype class is in
    keyed = {k: v for k, v in meta.items() if k not in ("precision", "query_prompt")}
    if isinstance(keyed.get(multi.META_KEY), dict):
        # which codebook coded the tokens is the table's (one for its life), not the document's:
        # a table's first run fits it after the keys of its first documents were made
        keyed[multi.META_KEY] = {k: v for k, v in keyed[multi.META_KEY].items() if k != "codebook"}
    return json.dumps({"model": keyed, "chunker": chunker}, sort_keys=True)


def changed_settings(table: dict[str, Any], this_run: dict[str, Any]) -> list[str]:
    """'key=this run's (table: the table's)' for each setting that differs, for the messages that
    say why a table's keys and this run's cannot match."""
    return [f"{k}={this_run.get(k)!r} (table: {table.get(k)!r})"
            for k in sorted(set(table) | set(this_run)) if table.get(k) != this_run.get(k)]


def doc_key(doc_hash: str, digest: str, metadata: str = "") -> str:
    """What a stored document is checked against: text, model/chunker settings, metadata."""
    key = f"{doc_hash}\0{digest}" + (f"\0{metadata}" if metadata else "")
    return hashlib.sha256(key.encode()).hexdigest()


def document_keys(batch: pa.RecordBatch, hashes: Sequence[str], digest: str, id_col: str = "id",
                  text_col: str = "text") -> list[str]:
    """The doc_key of each row of ``batch`` (documents, chunked or not), given each row's doc_hash."""
    carried = metadata_columns(batch.schema.names, id_col, text_col)
    if not carried:
        return [doc_key(h, digest) for h in hashes]
    rows = batch.select(carried).to_pylist()
    return [doc_key(h, digest, metadata_digest(m)) for h, m in zip(hashes, rows, strict=True)]


def carried_columns(names: Sequence[str], id_col: str = "id", text_col: str = "text") -> list[str]:
    """Input columns that embed carries into its output as metadata, in input order."""
    skip = {id_col, text_col, "chunks", "doc_hash", UNCHANGED, *EMBEDDED_CORE, *spaces.COLUMNS}
    return [n for n in names if n not in skip]


def metadata_columns(names: Sequence[str], id_col: str = "id", text_col: str = "text") -> list[str]:
    """The carried metadata columns whose values are part of a document's doc_key.

    A change of metadata alone (a new ``lang`` or ``url``) must reach the store, so it changes
    the key and the document's rows are replaced.
    """
    return sorted(n for n in carried_columns(names, id_col, text_col) if n not in VOLATILE_METADATA)


def metadata_digest(values: dict[str, Any]) -> str:
    if not values:
        return ""
    text = json.dumps(values, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
