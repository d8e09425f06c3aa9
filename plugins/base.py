"""The model plugin contract (docs/design.md#models-the-plugin-contract).

A plugin is an entry point in the group ``arrowsmith.models``::

    [project.entry-points."arrowsmith.models"]
    my-plugin = "my_package.module:load_model"

``load_model(name: str, **options) -> EmbeddingModel``. Options the core may
pass (a plugin ignores what it does not support, and says so if it matters):
``device`` ("auto", "cpu", "cuda", "cuda:N", "mps"), ``dtype`` ("auto",
"fp32", "bf16", "fp16"), ``trust_remote_code`` (bool, never on by default),
``allow_download`` (bool).

The factory must be cheap: a model's tokenizer is usable before its weights are
loaded or even read (``chunk --tokenizer model:NAME`` neither loads nor hashes
weights); weights load on the first ``encode``/``encode_tokens``, and a revision
that hashes them is computed when first read (``describe``).

Everything a stage reads from a model is declared on :class:`EmbeddingModel`
below, with its default. ``tests/plugin_pkg`` is a complete small plugin.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .errors import DataError
from .vectors import l2_normalize

Kind = Literal["document", "query"]

# ``max_tokens`` of a model with no window: a static model (one vector per vocabulary entry,
# averaged) reads a text of any length; int32's largest, so it fits every field that counts tokens
NO_WINDOW = 2**31 - 1


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

    name: str = ""  # how it is recorded in a chunked stream's metadata (the model's: "model:NAME")
    # True only if ``x + " " + y`` (or \t \n \r) always tokenizes as x's tokens then y's: chunk
    # then counts any span from per-word tokens instead of tokenizing every chunk again
    splits_at_whitespace: bool = False

    @abstractmethod
    def token_offsets(self, text: str) -> np.ndarray:
        """``int64 [n_tokens, 2]`` character (start, end) of each token, no special tokens.

        Offsets index into ``text`` (Python ``str`` indices, i.e. code points).
        """

    def batch_offsets(self, texts: Sequence[str]) -> list[np.ndarray]:
        """``token_offsets`` of each text; a tokenizer that batches in parallel overrides it."""
        return [self.token_offsets(t) for t in texts]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens in each text on its own (no special tokens)."""
        return [len(self.token_offsets(t)) for t in texts]


class EmbeddingModel(ABC):
    """What a plugin's factory returns: everything a stage reads from a model is declared here.

    Capabilities are attributes with defaults, as in llm; a plugin sets the ones that differ
    (as class attributes, in ``__init__``, or as properties). Stages never probe a model for
    anything not declared here.
    """

    # identity: what goes into the stream/table metadata (``describe``)
    plugin: str = ""  # the entry-point name; the registry fills it in when a factory leaves it empty
    name: str = ""  # as the user named it
    revision: str = ""  # weights' identity (sha256 of the weights file, commit, version); may be lazy
    # shape of the vectors
    dim: int = 0  # width of ``encode``'s vectors
    normalize: bool = True  # vectors come out L2-normalised
    pooling: str = "mean"  # "mean", "cls", "lasttoken", …: late chunking mean-pools, so needs "mean"
    matryoshka_dims: tuple[int, ...] = ()  # dims the model was trained to be truncated to (``--dim``)
    # the window
    max_tokens: int = 512  # the model's window, special tokens and prompt included
    position_limit: int = 0  # positions the architecture has (0: unknown); windows fit both limits
    num_special_tokens: int = 2  # added around one sequence (CLS + SEP for BERT-likes)
    # prompts
    prompts: dict[str, str] = {}  # kind -> prompt prefix (sentence-transformers ``prompts``)
    # capabilities and runtime
    supports_token_embeddings: bool = False  # token_ids, wrap_ids and encode_tokens work (late chunking)
    # mean pooling counts the prompt's tokens in the mean (sentence-transformers' include_prompt)
    pool_include_prompt: bool = True
    # what a chunk's token vectors are, recorded with them (commands/spaces/multi.py): "token-vectors",
    # the contextual vectors of the text's own tokens, one per token (prompt and specials left out);
    # "multi-vector-encoder", a ColBERT-style model's own output (its markers, query expansion and
    # skiplist decide how many)
    token_vector_source: str = "token-vectors"
    # a token's vector depends on the text around it (a transformer). False for a static model (a
    # table lookup, averaged: ``arrowsmith distill``): it has no window (``max_tokens`` NO_WINDOW,
    # so chunk sizes are chunk's choice) and late chunking would only repeat naive chunking
    contextual: bool = True
    device: str = "cpu"  # where the forward pass runs ("cpu", "cuda", "cuda:N", "mps"); sizes groups
    dtype: str = ""  # what the forward pass computes in ("fp32", "bf16", "fp16"); "" when unknown
    # counters the stages read for their summary line
    tokens_seen: int | None = None  # tokens run through the model so far (no padding); None: not counted
    # of those, the tokenizer's unknown token ([UNK]: text its vocabulary cannot represent); None:
    # not counted (a tokenizer without such a token, e.g. byte-level BPE, counts 0)
    unknown_tokens_seen: int | None = None
    load_seconds: float = 0.0  # seconds spent so far loading the weights (part of the first encode)
    # set by arrowsmith, never by a plugin
    factory_options: dict[str, Any] = {}  # what the factory was called with: rebuilds the model elsewhere
    embed_params: dict[str, Any] = {}  # "prompt", "query_prompt", "dim" of a store (``model_from_meta``)

    @property
    @abstractmethod
    def tokenizer(self) -> TextTokenizer:
        """The model's own tokenizer; must not load the weights."""

    @abstractmethod
    def encode(self, texts: Sequence[str], kind: Kind = "document", *, prompt: str | None = None,
               batch_tokens: int | None = None) -> np.ndarray:
        """``float32 [len(texts), dim]``, normalised when ``normalize``.

        ``prompt`` None means ``prompt_for(kind)``; "" means none. ``batch_tokens`` (None: the
        plugin's choice) bounds the padded tokens per forward pass. A text longer than
        ``max_tokens`` must raise :class:`TooLongError`, never truncate silently.
        """

    @property
    def representations(self) -> tuple[str, ...]:
        """What this model can put in a table (commands/spaces): "dense" always; "multivector"
        (``embed --multivector``: each chunk's token vectors) when its token vectors exist and
        depend on their context. A plugin serving ColBERT-style models overrides it."""
        if self.supports_token_embeddings and self.contextual:
            return ("dense", "multivector")
        return ("dense",)

    def encode_token_vectors(self, texts: Sequence[str], kind: Kind = "query", *,
                             prompt: str | None = None) -> list[np.ndarray]:
        """Each text's content-token vectors ``float32 [n_i, dim]``, L2-normalised, prompt and
        special tokens left out: what MaxSim scores (a query's side; documents' come from
        ``embed --multivector``). A text longer than ``max_tokens`` raises TooLongError."""
        seqs, spans = self.token_vector_inputs(texts, kind, prompt)
        return content_token_vectors(self.encode_tokens(seqs), spans)

    def encode_with_token_vectors(self, texts: Sequence[str], kind: Kind = "document", *,
                                  prompt: str | None = None, batch_tokens: int | None = None
                                  ) -> tuple[np.ndarray, list[np.ndarray]]:
        """``encode``'s vectors and ``encode_token_vectors``' token vectors of the same texts
        (``embed --multivector``), from one forward pass where the model allows.

        A mean-pooled model's vector is the mean of every token it sees (special tokens and, unless
        the model leaves it out, the prompt included: sentence-transformers' Pooling), so one
        ``encode_tokens`` pass gives both; any other pooling runs ``encode`` for the vectors.
        """
        seqs, spans = self.token_vector_inputs(texts, kind, prompt)
        outs = self.encode_tokens(seqs, batch_tokens=batch_tokens)
        prompt = self.prompt_for(kind) if prompt is None else prompt
        if self.pooling == "mean" and (not prompt or self.pool_include_prompt):
            vectors = np.stack([o.mean(axis=0) for o in outs]).astype(np.float32, copy=False) if outs \
                else np.empty((0, self.dim), np.float32)
            if self.normalize:
                l2_normalize(vectors, in_place=True)
        else:
            vectors = np.asarray(self.encode(texts, kind, prompt=prompt, batch_tokens=batch_tokens),
                                 dtype=np.float32)
        return vectors, content_token_vectors(outs, spans)

    def token_vector_inputs(self, texts: Sequence[str], kind: Kind, prompt: str | None
                            ) -> tuple[list[list[int]], list[tuple[int, int]]]:
        """Model inputs for ``encode_token_vectors`` and, per text, (first content token, count)."""
        prompt = self.prompt_for(kind) if prompt is None else prompt
        head = self.token_ids(prompt)[0] if prompt else []
        seqs, spans = [], []
        for text in texts:
            ids = self.token_ids(text)[0]
            seq, first = self.wrap_ids([*head, *ids])
            seqs.append(seq)
            spans.append((first + len(head), len(ids)))
        return seqs, spans

    def prompt_for(self, kind: Kind) -> str:
        """The model's own prompt for ``kind``, "" when it has none."""
        return self.prompts.get(kind, "")

    def encode_tokens(self, input_ids: Sequence[Sequence[int]], *, batch_tokens: int | None = None
                      ) -> list[np.ndarray]:
        """Token vectors ``float32 [len(ids), dim]`` per sequence, before pooling.

        Sequences are complete model inputs (``wrap_ids``: special tokens included, each at most
        ``max_tokens``). Needed for late chunking, with ``supports_token_embeddings``.
        """
        raise NotImplementedError(f"{self.plugin}:{self.name} does not expose token embeddings")

    def token_ids(self, text: str) -> tuple[list[int], np.ndarray]:
        """Token ids of ``text`` without special tokens, and their character offsets (late chunking)."""
        raise NotImplementedError(f"{self.plugin}:{self.name} does not expose token ids")

    def wrap_ids(self, ids: Sequence[int]) -> tuple[list[int], int]:
        """Add special tokens around a window of ids; returns (ids, index of the first content token)."""
        raise NotImplementedError(f"{self.plugin}:{self.name} does not expose token ids")

    def load_options(self) -> dict[str, Any]:
        """The factory options that load this model again in another process (a Ray worker): what
        the caller asked for (``device="auto"``, not the device it resolved to). Default: none."""
        return {}

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


def content_token_vectors(outputs: Sequence[np.ndarray], spans: Sequence[tuple[int, int]]
                          ) -> list[np.ndarray]:
    """The content tokens' rows of each model output (``spans``: first row, count), L2-normalised."""
    vectors = []
    for out, (first, n) in zip(outputs, spans, strict=True):
        v = np.array(out[first:first + n], dtype=np.float32)
        if len(v):
            v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        vectors.append(v)
    return vectors
