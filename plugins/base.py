"""The model plugin contract (DESIGN.md, "Models: the plugin contract").

A plugin is an entry point in the group ``arrowsmith.models``::

    [project.entry-points."arrowsmith.models"]
    my-plugin = "my_package.module:load_model"

``load_model(name: str, **options) -> EmbeddingModel``. Options the core may
pass (a plugin ignores what it does not support, and says so if it matters):
``device`` ("auto", "cpu", "cuda", "cuda:N", "mps"), ``dtype`` ("auto",
"fp32", "bf16", "fp16"), ``trust_remote_code`` (bool, never on by default),
``allow_download`` (bool).

The factory must be cheap: a model's tokenizer is usable before its weights are
loaded (``chunk --tokenizer model:NAME`` never loads weights); weights load on
the first ``encode``/``encode_tokens``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .errors import DataError

Kind = Literal["document", "query"]


class TooLongError(DataError):
    """A text does not fit the model's window; ``index`` is its position in the ``encode`` call.

    Raised instead of truncating. ``embed_batches`` re-raises it naming the chunk id.
    """

    def __init__(self, index: int, n_tokens: int, limit: int):
        super().__init__(f"text {index} has {n_tokens} tokens, the model's window is {limit} "
                         "(special tokens and prompt included)")
        self.index, self.n_tokens, self.limit = index, n_tokens, limit


class TextTokenizer(ABC):
    """A tokenizer that reports character offsets (what chunking and late chunking need)."""

    name: str = ""

    @abstractmethod
    def token_offsets(self, text: str) -> np.ndarray:
        """``int64 [n_tokens, 2]`` character (start, end) of each token, no special tokens.

        Offsets index into ``text`` (Python ``str`` indices, i.e. code points).
        """

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens in each text on its own (no special tokens)."""
        return [len(self.token_offsets(t)) for t in texts]


class EmbeddingModel(ABC):
    """What a plugin's factory returns. Capabilities are attributes, as in llm."""

    plugin: str = ""
    name: str = ""  # as the user named it
    revision: str = ""  # weights' identity (sha256 of the weights file, commit, version)
    dim: int = 0
    max_tokens: int = 512  # the model's window, special tokens included
    num_special_tokens: int = 2  # added around one sequence (CLS + SEP for BERT-likes)
    pooling: str = "mean"  # "mean", "cls", "lasttoken", …
    normalize: bool = True  # vectors come out L2-normalised
    prompts: dict[str, str] = {}  # kind -> prompt prefix (sentence-transformers `prompts`)
    matryoshka_dims: tuple[int, ...] = ()  # dims the model was trained to be truncated to
    supports_token_embeddings: bool = False  # encode_tokens available (late chunking)

    @property
    @abstractmethod
    def tokenizer(self) -> TextTokenizer:
        """The model's own tokenizer; must not load the weights."""

    @abstractmethod
    def encode(self, texts: Sequence[str], kind: Kind = "document", *, prompt: str | None = None,
               batch_tokens: int | None = None) -> np.ndarray:
        """``float32 [len(texts), dim]``, normalised when ``normalize``.

        ``prompt`` None means the model's own prompt for ``kind``; "" means none.
        A text longer than ``max_tokens`` must raise, never truncate silently.
        """

    def encode_tokens(self, input_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Token vectors ``float32 [len(ids), dim]`` per sequence, before pooling.

        Sequences are complete model inputs (special tokens included, each at most
        ``max_tokens``). Needed for late chunking; optional.
        """
        raise NotImplementedError(f"{self.plugin}:{self.name} does not expose token embeddings")

    def token_ids(self, text: str) -> tuple[list[int], np.ndarray]:
        """Token ids of ``text`` without special tokens, and their character offsets."""
        raise NotImplementedError

    def wrap_ids(self, ids: Sequence[int]) -> tuple[list[int], int]:
        """Add special tokens around a window of ids; returns (ids, index of the first content token)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What goes into the stream/table metadata under ``arrowsmith.model``."""
        return {
            "plugin": self.plugin,
            "name": self.name,
            "revision": self.revision,
            "dim": self.dim,
            "max_tokens": self.max_tokens,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "prompts": dict(self.prompts),
        }
