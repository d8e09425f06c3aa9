"""Embedding parameters and keys: what besides the model and the text changes a vector.

:func:`resolve_params` checks the options against the model; :func:`embedding_meta` is the
``arrowsmith.model`` metadata a stream or table carries. :func:`doc_key`, what a stored document
is checked against (text, model and chunker settings, carried metadata), is in commands/keys.py
(`chunk --db` computes it too) and re-exported here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from arrowsmith.plugins.base import EmbeddingModel

from ..errors import UsageError
from ..keys import (  # noqa: F401
    VOLATILE_METADATA,
    carried_columns,
    doc_key,
    key_digest,
    metadata_columns,
    metadata_digest,
)
from ..spaces import multi

log = logging.getLogger("arrowsmith.embed")

LATE_SPECIALS = ("exclude", "include")


@dataclass(frozen=True)
class EmbedParams:
    """Everything besides the model and the text that changes a vector (part of ``doc_key``)."""

    prompt: str
    query_prompt: str
    dim: int
    late: bool
    window: int | None = None
    window_overlap: int | None = None
    late_specials: str | None = None
    tokens: multi.TokenSettings | None = None  # embed --multivector: the chunks' token vectors too


# ------------------------------------------------------------------ parameters


def resolve_params(model: EmbeddingModel, *, late: bool = False, prompt: str | None = None,
                   query_prompt: str | None = None, dim: int | None = None, window: int | None = None,
                   window_overlap: int | None = None, late_specials: str = "exclude",
                   force: bool = False, multivector: bool = False,
                   token_precision: str | None = None, token_pool: float = 1.0,
                   token_codebook: Any = None) -> EmbedParams:
    """Check options against the model and fill in its defaults. ``token_codebook``: the fitted
    token codec a table already has (``spaces.codebook``), which a continuing run must code with."""
    doc_prompt = model.prompt_for("document") if prompt is None else prompt
    q_prompt = model.prompt_for("query") if query_prompt is None else query_prompt
    dim = _check_dim(model, dim)
    tokens = _token_settings(model, multivector, token_precision or multi.DEFAULT_PRECISION, token_pool)
    if tokens is not None and tokens.fitted and token_codebook is not None:
        tokens = tokens.with_codec(token_codebook)
    if not late:
        return EmbedParams(doc_prompt, q_prompt, dim, False, tokens=tokens)
    if late_specials not in LATE_SPECIALS:
        raise UsageError(f"--late-specials {late_specials!r}: choose exclude or include")
    if not model.contextual:
        raise UsageError(f"{model.name} is a static model: its token vectors do not depend on their "
                         "context, so late chunking would only repeat naive chunking", hint="drop --late")
    if not model.supports_token_embeddings:
        if multi.NAME in model.representations:  # a ColBERT-style model (plugins/multi_vector.py)
            raise UsageError(f"--late: {model.plugin}:{model.name} is a multi-vector model: its token "
                             "vectors come from its head over its own (prefixed, length-capped) chunk "
                             "inputs, not from the transformer outputs late chunking pools over "
                             "whole-document windows",
                             hint="--naive")
        raise UsageError(f"{model.plugin}:{model.name} does not expose token vectors, so it cannot "
                         "late-chunk", hint="--naive")
    if model.pooling != "mean" and not force:
        raise UsageError(f"late chunking mean-pools token vectors, but {model.name} is {model.pooling}-"
                         "pooled: its token vectors were not trained to be averaged",
                         hint="--force, or --naive")
    # the model's own window (sentence-transformers max_seq_length), which encode_tokens enforces;
    # positions past it exist (512 for all-MiniLM-L6-v2) but the model was not trained on them
    limit = min(model.max_tokens, model.position_limit or model.max_tokens)
    window = window or limit
    if window > limit:
        raise UsageError(f"--window {window} exceeds the model's window of {limit} tokens")
    content = _content_window(model, doc_prompt, window)
    # Default overlap a sixteenth of the text tokens (15 of all-MiniLM-L6-v2's 254). Each token
    # takes its vector from the window where it is most central, so a token at a cut keeps
    # overlap/2 tokens of context on that side; the overlap is computed twice, on every document
    # longer than one window. On real reST manuals (all longer than a window; benchmarks/RESULTS.md,
    # "Issue 20: the default window overlap") the old quarter (63) computed 1.29x naive's tokens
    # and ran late at 0.70x naive, a sixteenth 1.06x and 0.94x (an eighth, 31: 1.12x and
    # 0.845x, short of the issue's 0.85x). What the quarter bought was small: chunk vectors'
    # mean cosine to a large-overlap reference 0.971 at a quarter, 0.961 at a sixteenth, 0.958
    # at none, where naive chunking is at 0.925; Cranfield nDCG@10 at 15, 0.3854, was not told
    # apart from 0.3899 at 63 (-0.0045 [-0.0102, +0.0010]). A table built at another overlap
    # goes on at it (embed/sinks.py).
    overlap = content // 16 if window_overlap is None else window_overlap
    if not 0 <= overlap < content:
        raise UsageError(f"--window-overlap {overlap} must be between 0 and {content - 1} "
                         f"(the window's {content} content tokens)")
    return EmbedParams(doc_prompt, q_prompt, dim, True, window, overlap, late_specials, tokens)


def _token_settings(model: EmbeddingModel, multivector: bool, precision: str, pool: float
                    ) -> multi.TokenSettings | None:
    if not multivector:
        return None
    multi.check_settings(precision, pool)
    if multi.NAME not in model.representations:
        why = ("a static model's token vectors do not depend on their context" if not model.contextual
               else "it does not expose token vectors")
        raise UsageError(f"--multivector: {model.plugin}:{model.name} produces no token vectors ({why})",
                         hint="a transformer model such as all-MiniLM-L6-v2, or drop --multivector")
    return multi.TokenSettings(model.dim, precision, pool, model.token_vector_source)


def _check_dim(model: EmbeddingModel, dim: int | None) -> int:
    if dim is None or dim == model.dim:
        return model.dim
    if not 0 < dim < model.dim:
        raise UsageError(f"--dim {dim}: must be between 1 and the model's {model.dim}")
    trained = tuple(model.matryoshka_dims)
    if dim not in trained:
        log.warning("%s is not known to be trained for --dim %d (Matryoshka dims: %s): truncated "
                    "vectors may lose much of their quality", model.name, dim,
                    ", ".join(map(str, trained)) or "none declared")
    return dim


def _content_window(model: EmbeddingModel, prompt: str, window: int) -> int:
    n_prompt = len(prompt_ids(model, prompt))
    content = window - model.num_special_tokens - n_prompt
    if content < 8:
        raise UsageError(f"--window {window} leaves {content} tokens for text after the prompt "
                         f"({n_prompt} tokens) and special tokens")
    return content


def prompt_ids(model: EmbeddingModel, prompt: str) -> list[int]:
    return model.token_ids(prompt)[0] if prompt else []


def embedding_meta(model: EmbeddingModel, params: EmbedParams) -> dict[str, Any]:
    """The ``arrowsmith.model`` metadata: model identity + everything that shaped the vectors."""
    meta = model.describe()
    meta.update({
        "model_dim": model.dim,
        "dim": params.dim,
        "prompt": params.prompt,
        "query_prompt": params.query_prompt,
        "late": params.late,
    })
    if params.late:
        meta.update(window=params.window, window_overlap=params.window_overlap,
                    late_specials=params.late_specials)
    if params.tokens is not None:
        meta[multi.META_KEY] = params.tokens.as_meta()
    if model.dtype:
        meta["precision"] = model.dtype
    return meta
