"""Which documents to embed, in bounded groups: reading ahead, keys, skips, the output schema."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from arrowsmith.plugins.base import EmbeddingModel

from ..errors import DataError, UsageError
from ..keys import carried_columns, changed_settings, document_keys, key_digest, text_hash
from ..schemas import (
    CHUNKER,
    EMBEDDED_CORE,
    MODEL,
    STORE,
    UNCHANGED,
    embedded_fields,
    read_meta,
    require_text,
    stage_metadata,
)
from ..spaces import multi
from .params import EmbedParams, embedding_meta
from .stats import EmbedStats

log = logging.getLogger("arrowsmith.embed")

GROUP_CHUNKS = 2048  # chunks embedded (and emitted) together: bounds memory, feeds the length sort
GROUP_LATE_TOKENS = 65536  # document tokens per late group: bounds the token-vector buffer
# input read ahead while a group is embedded (bytes of Arrow batches; one batch even if larger):
# without it, `chunk | embed` chunks only while embed reads, as the pipe holds just 64 KiB
PREFETCH_BYTES = 32 << 20


@dataclass
class EmbedDoc:
    """One input document as embed sees it: its chunks' spans and the key the store checks."""

    id: str
    text: str
    doc_hash: str
    spans: list[tuple[int, int]]  # character [start, end) of each chunk; one span for a text row
    source: pa.RecordBatch  # the input batch, whose row ``row`` holds the carried metadata
    row: int
    key: str = ""  # doc_key: what decides whether a stored copy is current
    unchanged: bool = False  # `chunk --db` found it stored with this key: no text, no spans


def read_ahead(batches: Iterable[pa.RecordBatch], max_bytes: int = PREFETCH_BYTES
               ) -> Iterator[pa.RecordBatch]:
    """``batches``, read by a thread up to ``max_bytes`` ahead of the consumer, in order.

    Embedding a group takes seconds during which nobody reads the input: over a pipe the
    producer (`chunk`) fills the pipe's buffer and waits. Reading ahead lets it run alongside
    (reading, parsing and the producer's own work overlap the model's). An exception of the
    input is raised here at its place in the stream; closing this generator stops the reader.
    """
    cond = threading.Condition()
    queue: list[tuple[str, Any]] = []  # ("batch", b) | ("error", exc) | ("end", None)
    state = {"bytes": 0, "stop": False}

    def produce() -> None:
        source = iter(batches)
        try:
            for batch in source:
                size = batch.nbytes
                with cond:
                    while queue and state["bytes"] + size > max_bytes and not state["stop"]:
                        cond.wait()
                    if state["stop"]:
                        break
                    queue.append(("batch", batch))
                    state["bytes"] += size
                    cond.notify_all()
            item: tuple[str, Any] = ("end", None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            item = ("error", e)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # files opened by the reader are closed in the reader's thread
        with cond:
            queue.append(item)
            cond.notify_all()

    reader = threading.Thread(target=produce, name="arrowsmith-read", daemon=True)
    reader.start()
    try:
        while True:
            with cond:
                while not queue:
                    cond.wait()
                kind, value = queue.pop(0)
                if kind == "batch":
                    state["bytes"] -= value.nbytes
                cond.notify_all()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()


def document_groups(batches: Iterable[pa.RecordBatch], model: EmbeddingModel, params: EmbedParams, *,
                    id_col: str = "id", text_col: str = "text",
                    skip_doc: Callable[[str, str], bool] | None = None, group_rows: int | None = None,
                    stats: EmbedStats | None = None) -> Iterator[tuple[list[EmbedDoc], pa.Schema]]:
    """The documents to embed, in input order and in bounded groups, with the output schema.

    Decides per document: empty text rows are skipped (warned), and so is a document for which
    ``skip_doc(id, doc_key)`` is true (the store: that key is already stored, so it is unchanged).
    Each group holds whole documents (a document's chunks are never split) up to a token or chunk
    budget, and at most ``group_rows`` chunks once it holds more than one document. An input with
    nothing to embed still yields one empty group, so the output carries the schema and metadata.
    """
    stats = stats if stats is not None else EmbedStats()
    meta = embedding_meta(model, params)
    # on an accelerator, larger groups let the model tokenize the next window while computing
    scale = 1 if model.device == "cpu" else 4
    limit = (GROUP_LATE_TOKENS if params.late else GROUP_CHUNKS) * scale
    schema: pa.Schema | None = None
    digest = ""
    group: list[EmbedDoc] = []
    weight = rows = 0
    emitted = False
    for batch in batches:
        if schema is None:
            schema, chunker = _output_schema(batch.schema, params.dim, meta, id_col, text_col)
            digest = key_digest(meta, chunker)
            _check_unchanged_input(batch.schema, digest, chunker, skip_doc)
        for doc in keyed_documents(batch, digest, id_col, text_col):
            stats.documents_seen += 1
            if doc.unchanged:
                _skip_unchanged(doc, batch.schema, skip_doc)
                stats.documents_skipped += 1
                continue
            if not doc.text.strip() and "chunks" not in batch.schema.names:
                # "" and " " embed to one meaningless vector that would match any query
                stats.documents_empty += 1
                log.warning("document %s: empty text, skipped", doc.id)
                continue
            if skip_doc is not None and skip_doc(doc.id, doc.key):
                stats.documents_skipped += 1
                continue
            group.append(doc)
            weight += group_weight(doc, params.late)
            rows += max(1, len(doc.spans))
            if weight >= limit or (group_rows is not None and rows >= group_rows):
                yield group, schema
                group, weight, rows, emitted = [], 0, 0, True
    if schema is None:
        raise DataError("empty input: no record batches to embed")
    if group or not emitted:  # an empty batch still carries the schema (and model metadata)
        yield group, schema


def group_weight(doc: EmbedDoc, late: bool) -> int:
    # late groups are bounded by their token vectors; ~4 chars per token is close enough here
    return max(1, len(doc.text) // 4) if late else max(1, len(doc.spans))


def _output_schema(schema: pa.Schema, dim: int, meta: dict[str, Any], id_col: str, text_col: str
                   ) -> tuple[pa.Schema, Any]:
    for col in (id_col, text_col):
        if col not in schema.names:
            raise DataError(f"embed: input has no {col!r} column (it has: {', '.join(schema.names)})",
                            hint="--id-col / --text-col to name them")
    chunked = "chunks" in schema.names
    in_meta = read_meta(schema)
    chunker = in_meta.get(CHUNKER) if chunked else "rows"
    dropped = [n for n in schema.names if n in EMBEDDED_CORE and n not in (id_col, text_col)]
    if dropped:
        log.warning("input column(s) %s clash with embedded-chunk columns and are not carried",
                    ", ".join(dropped))
    carried = set(carried_columns(schema.names, id_col, text_col))
    extra = [f for f in schema if f.name in carried]
    entries: dict[str, Any] = {MODEL: meta}
    if chunked and chunker is not None:
        entries[CHUNKER] = chunker
    tokens = multi.settings_of(meta)
    fields = embedded_fields(dim) + ([multi.field(tokens)] if tokens else [])
    out = pa.schema(fields + extra, metadata=stage_metadata("embed", **entries))
    return out, chunker


def keyed_documents(batch: pa.RecordBatch, digest: str, id_col: str = "id", text_col: str = "text"
                    ) -> Iterator[EmbedDoc]:
    """The documents of one input batch with their spans and doc_key.

    ``digest`` is the model, chunker and embedding settings (``key_digest``); the key adds the
    text's hash and the carried metadata (``keys.document_keys``), so changing any of them
    re-embeds. A row ``chunk --db`` marked unchanged has no text: its key comes from its doc_hash.
    """
    require_text(batch.schema.field(text_col).type, text_col)  # the check `chunk` makes
    ids = batch.column(id_col).to_pylist()
    texts = batch.column(text_col).to_pylist()
    chunked = "chunks" in batch.schema.names
    spans = batch.column("chunks").to_pylist() if chunked else None
    hashes = batch.column("doc_hash").to_pylist() if "doc_hash" in batch.schema.names else None
    marked = batch.column(UNCHANGED).to_pylist() if UNCHANGED in batch.schema.names else None
    rows = []
    for row, (doc_id, text) in enumerate(zip(ids, texts, strict=True)):
        if doc_id is None:
            raise DataError(f"row {row} of a batch: {id_col!r} is null")
        unchanged = bool(marked and marked[row])
        doc_hash = hashes[row] if hashes else None
        if unchanged and not doc_hash:
            raise DataError(f"document {doc_id}: marked {UNCHANGED!r} but it has no doc_hash")
        if text is None and not unchanged:
            raise DataError(f"document {doc_id}: {text_col!r} is null")
        rows.append((str(doc_id), text or "", doc_hash or text_hash(text), unchanged))
    keys = document_keys(batch, [h for _, _, h, _ in rows], digest, id_col, text_col)
    for row, ((doc_id, text, doc_hash, unchanged), key) in enumerate(zip(rows, keys, strict=True)):
        if unchanged:
            doc_spans = []
        elif chunked:
            doc_spans = _check_spans(doc_id, text, spans[row] or [])
        else:
            doc_spans = [(0, len(text))]
        yield EmbedDoc(doc_id, text, doc_hash, doc_spans, batch, row, key=key, unchanged=unchanged)


def _check_unchanged_input(schema: pa.Schema, digest: str, chunker: Any,
                           skip_doc: Callable[[str, str], bool] | None) -> None:
    """A stream from `chunk --db` (its rows may be marked unchanged: no text) needs the store, and
    this run's settings must be the table's that chunk kept documents under; refused before any
    document is embedded (exit 2)."""
    if UNCHANGED not in schema.names:
        return
    if skip_doc is None:
        raise UsageError("the input comes from `chunk --db`: documents the store holds unchanged are "
                         "marked, without their text, so they can only be skipped in that store",
                         hint="embed --db STORE (the store chunk read), or chunk without --db")
    store = read_meta(schema).get(STORE) or {}
    table_model = store.get("model")
    table_digest = key_digest(table_model, chunker) if isinstance(table_model, dict) else digest
    if table_digest == digest:
        return
    changed = changed_settings(json.loads(table_digest)["model"], json.loads(digest)["model"])
    raise UsageError(f"`chunk --db` kept the documents table {store.get('table')!r} holds unchanged "
                     f"under its settings, but this run embeds with {', '.join(changed)}: every "
                     "document would need embedding again, and the kept ones carry no text",
                     hint="embed with the table's settings, or chunk without --db to embed everything")


def _skip_unchanged(doc: EmbedDoc, schema: pa.Schema, skip_doc: Callable[[str, str], bool] | None) -> None:
    """A document marked unchanged is skipped (and counted as present, for --prune) only when the
    store agrees: chunk read the table earlier, maybe another one."""
    if skip_doc is not None and skip_doc(doc.id, doc.key):
        return
    store = read_meta(schema).get(STORE) or {}
    raise DataError(f"document {doc.id}: `chunk --db {store.get('db')} --table {store.get('table')}` "
                    "marked it unchanged, but the table this run writes does not hold it with that "
                    "doc_key (it changed after chunk read it, or it is another store or table)",
                    hint="run chunk | embed again, with the same --db and --table on both sides")


def _check_spans(doc_id: str, text: str, spans: list[dict]) -> list[tuple[int, int]]:
    out = []
    for i, span in enumerate(spans):
        start, end = span.get("start"), span.get("end")
        if start is None or end is None or not 0 <= start <= end <= len(text):
            raise DataError(f"chunk {doc_id}#{i}: span [{start}, {end}) is outside the document's "
                            f"{len(text)} characters")
        out.append((int(start), int(end)))
    return out
