"""The ``embed`` stage: chunked documents (or any text table) → embedded chunks.

Input is either the chunked-documents schema (one row per document with its
``chunks`` spans; each span ``text[start:end]`` is embedded) or any table with a
text column (each row is one chunk). Output is the embedded-chunks schema
(docs/design.md#schemas), one row per chunk, all chunks of a document in the same batch.

Naive mode embeds each chunk on its own. Late chunking (``late=True``, Günther
et al. 2024) runs the whole document through the model once (in overlapping
windows when it is longer than the model's window) and mean-pools each chunk's
tokens, so a chunk's vector carries the context of its document.

The package, in the order data flows through it:

- :mod:`.params` — options checked against the model, the metadata and ``doc_key`` they make;
- :mod:`.grouping` — input read ahead, which documents to embed (keys, skips), in bounded groups;
- :mod:`.late` — late chunking's windows and pooling;
- :mod:`.embedder` — one group through the model into one batch (what an engine's worker runs);
- :mod:`.stage` — :func:`embed_batches`, the stage: grouping then the embedder;
- :mod:`.engines`, :mod:`.ray_engine` — who runs the embedder (this process, or Ray actors);
- :mod:`.sinks` — where the batches go: a stream or file, or a LanceDB table.

Each module imports only the ones above it in this list; this one re-exports the public API.
"""

from .embedder import GroupEmbedder
from .grouping import GROUP_CHUNKS, GROUP_LATE_TOKENS, EmbedDoc, document_groups, keyed_documents, read_ahead
from .late import LatePlan, assign_windows, late_windows, plan_late, span_tokens
from .params import (
    LATE_SPECIALS,
    EmbedParams,
    carried_columns,
    doc_key,
    embedding_meta,
    key_digest,
    metadata_columns,
    metadata_digest,
    resolve_params,
)
from .sinks import embed_to_sink, embed_to_store
from .stage import embed_batches
from .stats import EmbedStats

__all__ = [
    "GROUP_CHUNKS", "GROUP_LATE_TOKENS", "LATE_SPECIALS", "EmbedDoc", "EmbedParams", "EmbedStats",
    "GroupEmbedder", "LatePlan", "assign_windows", "carried_columns", "doc_key", "document_groups",
    "embed_batches", "embed_to_sink", "embed_to_store", "embedding_meta", "keyed_documents",
    "key_digest", "late_windows", "metadata_columns", "metadata_digest", "plan_late", "read_ahead",
    "resolve_params", "span_tokens",
]
