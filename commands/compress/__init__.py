"""`arrowsmith compress`: smaller vectors with a measured price.

Codecs (float16, int8, binary, PQ, Matryoshka truncation) in :mod:`.codecs`,
blocked search and rescoring in :mod:`.search`, the companion table in the
store in :mod:`.store`, the method comparison in :mod:`.report`.
"""

from .codecs import CODECS, MethodSpec, make_codec, parse_method
from .search import CompressedIndex
from .store import (
    CompressStats,
    companion_name,
    compress_table,
    compressed_info,
    drop_compressed,
    load_compressed,
)

__all__ = [
    "CODECS",
    "CompressStats",
    "CompressedIndex",
    "MethodSpec",
    "companion_name",
    "compress_table",
    "compressed_info",
    "drop_compressed",
    "load_compressed",
    "make_codec",
    "parse_method",
]
