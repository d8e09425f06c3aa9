"""``chunk --db``: documents a table holds unchanged are not chunked again (nightly builds).

A nightly ``chunk SRC | embed --db STORE --prune`` used to chunk the whole corpus to let embed find
the few documents that changed (at a million chunks, chunk was 41 s of the second night's 67 s
pipe; benchmarks/RESULTS.md). With ``--db``, chunk computes each document's doc_key as embed would
(:mod:`arrowsmith.commands.keys`: the same functions, from the table's recorded model settings and
this run's chunker settings) and, where the table holds that key, writes one row marked
``unchanged`` (id, doc_hash, metadata; no text, no chunks) instead of chunking it. embed skips
the row after checking the key against the store itself, and counts the document as present, so
``--prune`` keeps it (commands/embed/grouping.py).

Reading the store stays light: LanceDB is imported only here, and only the doc_id and doc_key
columns are read, in ranges, into a few bytes a document (:func:`store.load_doc_keys`, the scan
embed's writer makes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..keys import changed_settings, document_keys, key_digest
from ..schemas import CHUNKER, MODEL

if TYPE_CHECKING:
    from ..store import DocKeys

log = logging.getLogger("arrowsmith.chunk")


@dataclass
class StoredKeys:
    """The table ``chunk --db`` compares documents against."""

    db: str
    table: str
    model: dict[str, Any] | None = None  # the table's model settings; None: no table (yet)
    keys: DocKeys | None = None  # doc_id → stored doc_key
    digest: str = ""  # key_digest of the table's model settings and this run's chunker

    def describe(self) -> dict[str, Any]:
        """The stream's ``arrowsmith.store`` metadata: what embed checks its own settings against."""
        return {"db": self.db, "table": self.table, "model": self.model}

    def unchanged(self, meta: pa.RecordBatch, ids: Sequence[str], hashes: Sequence[str]) -> list[bool]:
        """Per document: does the table hold it with the key embed would give it?"""
        if not self.keys:
            return [False] * len(hashes)
        keys = document_keys(meta, hashes, self.digest)
        return [i >= 0 and self.keys.holds(i, k) for i, k in zip(self.keys.find_all(ids), keys, strict=True)]


def stored_keys(db: str | os.PathLike, table: str, chunker: dict[str, Any]) -> StoredKeys:
    """The doc_keys of ``db``'s ``table`` and the digest this chunker's documents are keyed with.

    No table yet (a first night) keeps nothing: every document is chunked.
    """
    from ..store import load_doc_keys, model_of, open_table, read_errors, table_exists, table_meta

    stored = StoredKeys(os.path.abspath(db), table)
    if not table_exists(db, table):
        log.info("no table %r in %s yet: every document is chunked", table, db)
        return stored
    with read_errors(db, table):
        tbl = open_table(db, table)
        meta = table_meta(tbl)
        if MODEL not in meta:
            log.warning("table %r in %s records no model settings: every document is chunked", table, db)
            return stored
        stored.model = model_of(meta)
        stored.digest = key_digest(stored.model, chunker)
        recorded = meta.get(CHUNKER)
        if isinstance(recorded, dict) and recorded != chunker:
            changed = ", ".join(changed_settings(recorded, chunker))
            log.warning("table %r was built with other chunk settings (%s): the documents chunked with "
                        "those are chunked again, and embed replaces them", table, changed)
        stored.keys = load_doc_keys(tbl)
    return stored
