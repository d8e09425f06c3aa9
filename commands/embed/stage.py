"""The stage itself: :func:`document_groups` then :class:`GroupEmbedder` on each group."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa

from arrowsmith.plugins.base import EmbeddingModel

from .embedder import GroupEmbedder
from .grouping import document_groups, read_ahead
from .params import resolve_params
from .stats import EmbedStats


def embed_batches(batches: Iterable[pa.RecordBatch], model: EmbeddingModel, *, late: bool = False,
                  batch_tokens: int | None = None, prompt: str | None = None,
                  query_prompt: str | None = None, dim: int | None = None, window: int | None = None,
                  window_overlap: int | None = None, late_specials: str = "exclude", force: bool = False,
                  multivector: bool = False, token_precision: str | None = None,
                  token_pool: float = 1.0, token_codebook=None, id_col: str = "id", text_col: str = "text",
                  skip_doc: Callable[[str, str], bool] | None = None,
                  group_rows: int | None = None,
                  stats: EmbedStats | None = None) -> Iterator[pa.RecordBatch]:
    """Embedded-chunks batches for chunked documents or text rows (see module docstring).

    The stage is :func:`document_groups` (which documents to embed, grouped) followed by
    :meth:`GroupEmbedder.embed` on each group. ``group_rows`` caps the chunks per emitted batch (a
    store's checkpoint size), so work that a crash can lose is bounded by the checkpoint.
    """
    stats = stats if stats is not None else EmbedStats()
    params = resolve_params(model, late=late, prompt=prompt, query_prompt=query_prompt, dim=dim,
                            window=window, window_overlap=window_overlap, late_specials=late_specials,
                            force=force, multivector=multivector, token_precision=token_precision,
                            token_pool=token_pool, token_codebook=token_codebook)
    embedder = GroupEmbedder(model, params, batch_tokens, stats)
    t0 = time.perf_counter()
    ahead = read_ahead(batches)
    try:
        for docs, schema in document_groups(ahead, model, params, id_col=id_col, text_col=text_col,
                                            skip_doc=skip_doc, group_rows=group_rows, stats=stats):
            yield embedder.embed(docs, schema)
    finally:
        ahead.close()
        stats.seconds += time.perf_counter() - t0
