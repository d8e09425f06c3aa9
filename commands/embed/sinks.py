"""Where embedded batches go: a stream or file (``-o``), or a LanceDB table (``--db``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from arrowsmith.plugins.base import EmbeddingModel

from ..io import BatchSink
from .engines import engine_batches
from .params import EmbedParams, embedding_meta, resolve_params
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
    """Embed into a LanceDB table, skipping documents whose doc_key is stored. Returns WriteStats.

    Without ``window_overlap``, a late table of the same model is continued at its recorded
    window and overlap (see :func:`_table_window`); given, it must match (or ``replace``).
    """
    from ..store import StoreWriter

    # options are checked before the lock is waited for and the table's keys are read
    params = resolve_params(model, **_param_options(options))
    stats = stats if stats is not None else EmbedStats()
    with StoreWriter(db, table, replace=replace, prune=prune, wait=wait,
                     checkpoint_rows=checkpoint_rows) as writer:
        adopted = {**_table_window(writer.table, model, params, options),
                   **_table_tokens(writer, params, options)}
        if adopted:
            options = {**options, **adopted}  # the engine (local or ray) resolves the same params
            params = resolve_params(model, **_param_options(options))
        # a different model is refused before anything is read or embedded
        writer.check_meta(embedding_meta(model, params))
        # the engine starts inside the lock (a second writer exits 75 first) and ends before it
        with engine_batches(engine, engine_options, ordered=False) as embed:
            written = writer.write(embed(batches, model, skip_doc=writer.is_current, stats=stats,
                                         group_rows=checkpoint_rows, **options))
    _warn_unknown(stats, model)
    return written


PARAM_KEYS = ("late", "prompt", "query_prompt", "dim", "window", "window_overlap", "late_specials",
              "force", "multivector", "token_precision", "token_pool", "token_codebook")


def _param_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in PARAM_KEYS if k in options}


def _table_window(table: Any, model: EmbeddingModel, params: EmbedParams, options: dict[str, Any]
                  ) -> dict[str, int]:
    """The recorded ``window``/``window_overlap`` of a late table of this model, when the run gives
    no overlap (and no other window): the default overlap changed (issue 20), and the overlap is
    part of every stored document's doc_key, so a table built at the old default must go on at it
    rather than be refused or re-embedded. An explicit overlap is the user's and is checked as given."""
    from ..store import model_identity, model_of, table_meta

    if table is None or not params.late or options.get("window_overlap") is not None:
        return {}
    stored = model_of(table_meta(table))
    window, overlap = stored.get("window"), stored.get("window_overlap")
    if (not stored.get("late") or overlap is None or window is None
            or model_identity(stored) != model_identity(embedding_meta(model, params))
            or options.get("window") not in (None, window)):
        return {}
    if (window, overlap) == (params.window, params.window_overlap):
        return {}
    log.info("table records window %d, overlap %d: continuing with them (a new table's default "
             "overlap is %d)", window, overlap, params.window_overlap)
    return {"window": window, "window_overlap": overlap}


def _table_tokens(writer: Any, params: EmbedParams, options: dict[str, Any]) -> dict[str, Any]:
    """What a run with token vectors takes from the table it continues:

    - its recorded precision, when the run names none: the default changed (int4 → residual,
      issue 19) and the precision is part of every document's doc_key, so a table goes on at its
      own rather than be refused (a named one is checked as given);
    - its codebook, at a fitted precision (``residual``): one table, one codebook (a new one is
      fitted only for a new table or one replaced with other settings).
    """
    from ..spaces import codebook as codebooks
    from ..spaces import multi
    from ..store import model_of, table_meta

    if writer.table is None or params.tokens is None:
        return {}
    stored = multi.settings_of(model_of(table_meta(writer.table)))
    if stored is None:
        return {}
    out: dict[str, Any] = {}
    precision = params.tokens.precision
    if options.get("token_precision") is None and stored.precision != precision:
        log.info("table records token precision %s: continuing with it (a new table's default is %s)",
                 stored.precision, precision)
        out["token_precision"] = precision = stored.precision
    if stored.fitted and stored.codebook and stored.precision == precision:
        out["token_codebook"] = codebooks.load(writer.db, writer.table_name, stored.codebook)
    return out  # another precision: check_meta refuses it as a changed setting


def _warn_unknown(stats: EmbedStats, model: EmbeddingModel) -> None:
    warning = stats.unknown_warning(model.name)
    if warning:
        log.warning("%s", warning)
