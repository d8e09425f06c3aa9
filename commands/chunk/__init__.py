"""Chunking: documents → chunked documents (whole text + character spans).

Library API (the CLI in ``cli/chunk.py`` is a thin shell over it)::

    from arrowsmith.commands.chunk import read_sources, chunk_documents, load_tokenizer

    docs = read_sources(["docs/"])
    for batch in chunk_documents(docs, strategy="sentences", tokenizer=load_tokenizer("cl100k_base")):
        ...
"""

from .core import CHUNKER_VERSION, Chunker, chunk_documents, chunked_schema, make_chunker
from .sources import DEFAULT_GLOBS, html_to_text, iter_files, read_sources
from .stats import ChunkStats
from .strategies import STRATEGIES, plan_chunks
from .tokenizers import ChunkTokenizer, ModelTokenizer, TiktokenTokenizer, load_tokenizer

__all__ = [
    "CHUNKER_VERSION", "DEFAULT_GLOBS", "STRATEGIES", "ChunkStats", "ChunkTokenizer", "Chunker",
    "ModelTokenizer", "TiktokenTokenizer", "chunk_documents", "chunked_schema", "html_to_text",
    "iter_files", "load_tokenizer", "make_chunker", "plan_chunks", "read_sources",
]
