"""Where embedded batches go: a stream or file (``-o``), or a LanceDB table (``--db``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from arrowsmith.plugins.base import EmbeddingModel

from ..io import BatchSink
from .engines import engine_batches
from .params import embedding_meta, resolve_params
from .stats import EmbedStats

log = logging.getLogger("arrowsmith.embed")


def embed_to_sink(batches: Iterable[pa.RecordBatch], model: EmbeddingModel, sink: BatchSink, *,
                  stats: EmbedStats | None = None, engine: str | None = "local", engine_options: Any = None,
                  **options: Any) -> int:
    """Embed into a stream or file: ``sink`` is closed on success (a file renamed into place) and
    discarded on error. Returns the rows written. ``engine``: commands/embed/engines.py."""

    stats = stats if stats is not None else EmbedStats()
    with sink, engine_batches(engine, engine_options) as embed:
        rows = sink.write_all(embed(batches, model, stats=stats, **options))
    _warn_unknown(stats, model)
    return rows


def embed_to_store(batches: Iterable[pa.RecordBatch], model: EmbeddingModel, db: str,
                   table: str = "chunks", *, replace: bool = False, prune: bool = False, wait: bool = False,
                   checkpoint_rows: int = 10_000, stats: EmbedStats | None = None,
                   engine: str | None = "local", engine_options: Any = None, **options: Any):
    """Embed into a LanceDB table, skipping documents whose doc_key is stored. Returns WriteStats."""
    from ..store import StoreWriter

    late_keys = ("late", "prompt", "query_prompt", "dim", "window", "window_overlap", "late_specials",
                 "force", "multivector", "token_precision", "token_pool")
    params = resolve_params(model, **{k: options[k] for k in late_keys if k in options})
    stats = stats if stats is not None else EmbedStats()
    with StoreWriter(db, table, replace=replace, prune=prune, wait=wait,
                     checkpoint_rows=checkpoint_rows) as writer:
        # a different model is refused before anything is read or embedded
        writer.check_meta(embedding_meta(model, params))
        # the engine starts inside the lock (a second writer exits 75 first) and ends before it
        with engine_batches(engine, engine_options, ordered=False) as embed:
            written = writer.write(embed(batches, model, skip_doc=writer.is_current, stats=stats,
                                         group_rows=checkpoint_rows, **options))
    _warn_unknown(stats, model)
    return written


def _warn_unknown(stats: EmbedStats, model: EmbeddingModel) -> None:
    warning = stats.unknown_warning(model.name)
    if warning:
        log.warning("%s", warning)
