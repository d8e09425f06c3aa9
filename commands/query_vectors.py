"""Query vectors from a table's model: what ``query``, ``eval``, ``compress --report`` and
``tune``'s evaluation embed queries with, the way the table's chunks were embedded."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from arrowsmith.plugins.base import EmbeddingModel

from .errors import DataError, UsageError
from .schemas import MODEL
from .spaces import dense

log = logging.getLogger("arrowsmith.query")

_MODELS: dict[str, Any] = {}  # model metadata (JSON) -> loaded model


def embed_queries(texts: list[str], model: EmbeddingModel, *, prompt: str | None = None,
                  dim: int | None = None) -> np.ndarray:
    """Query vectors, with the query prompt and dim the store was built with (``model_from_meta``)."""
    if prompt is None:
        prompt = model.embed_params.get("query_prompt")
    if dim is None:
        dim = model.embed_params.get("dim")
    vectors = np.asarray(model.encode(texts, "query", prompt=prompt), dtype=np.float32)
    return dense.truncate(vectors, dim or model.dim)


def fit_queries(texts: list[str], model: EmbeddingModel, *,
                prompt: str | None = None) -> tuple[list[str], int]:
    """Queries cut where sentence-transformers truncates them (the first ``max_tokens`` tokens,
    prompt and special tokens included), at the character end of the last kept token, and how
    many were cut. What eval does with queries longer than the window, as MTEB does (ArguAna's
    arguments run past 256 tokens); ``query`` refuses them instead, never cutting silently."""
    if prompt is None:
        prompt = model.embed_params.get("query_prompt")
    if prompt is None:
        prompt = model.prompt_for("query")
    limit = model.max_tokens - model.num_special_tokens - len(model.token_ids(prompt)[0] if prompt else ())
    out, cut = [], 0
    for text in texts:
        offsets = model.tokenizer.token_offsets(text)
        if len(offsets) > limit > 0:
            text = text[:int(offsets[limit - 1][1])]
            cut += 1
        out.append(text)
    return out, cut


def model_from_meta(meta: dict[str, Any], **options: Any) -> EmbeddingModel:
    """The model a stream or table names in its ``arrowsmith.model`` metadata."""
    from arrowsmith.plugins.registry import DEFAULT_PLUGIN, load_plugin_model

    info = meta.get(MODEL, meta)
    if isinstance(info, str):
        info = json.loads(info)
    if not isinstance(info, dict) or "name" not in info:
        raise DataError(f"no '{MODEL}' metadata naming a model", hint="--model NAME")
    model = load_plugin_model(info.get("plugin") or DEFAULT_PLUGIN, info["name"], **options)
    if info.get("revision") and model.revision and info["revision"] != model.revision:
        log.warning("model %s differs from the one the table was built with (revision %s, stored %s): "
                    "query vectors may not match", info["name"], model.revision[:12], info["revision"][:12])
    model.embed_params = {"prompt": info.get("prompt"), "query_prompt": info.get("query_prompt"),
                          "dim": info.get("dim")}
    return model


# ------------------------------------------------------------------ a table's queries


def table_model(model_meta: dict, model: EmbeddingModel | None = None) -> EmbeddingModel:
    """``model``, or the table's own, loaded once per process: one process often searches the same
    table many times (eval, a notebook, a server)."""
    if model is not None:
        return model
    if not isinstance(model_meta, dict):
        raise UsageError("the table has no 'arrowsmith.model' metadata, so its query model is unknown",
                         hint="build it with `arrowsmith embed --db`, or use --mode fts")
    key = json.dumps(model_meta, sort_keys=True, default=str)
    return _MODELS.get(key) or _MODELS.setdefault(key, model_from_meta(model_meta))


def dense_query_vectors(texts: list[str], model_meta: dict | None, model: EmbeddingModel | None = None,
                        ids: Sequence[str] = ()) -> np.ndarray:
    """``[n, dim]`` query vectors for a table whose ``arrowsmith.model`` metadata is ``model_meta``:
    its query prompt and dim (a query longer than the window is a DataError naming it)."""
    model = table_model(model_meta, model)
    with naming_long_queries(ids):
        return embed_queries(texts, model, prompt=query_prompt(model_meta), dim=model_meta.get("dim"))


def query_token_vectors(texts: list[str], model_meta: dict | None, model: EmbeddingModel | None = None,
                        ids: Sequence[str] = ()) -> list[np.ndarray]:
    """Each query's token vectors from the table's model (``spaces.multi``: what MaxSim scores)."""
    model = table_model(model_meta, model)
    with naming_long_queries(ids):
        return model.encode_token_vectors(texts, "query", prompt=query_prompt(model_meta))


def query_prompt(model_meta: dict | None) -> str | None:
    """The prompt the table was built with for queries; None = the model's own."""
    prompts = (model_meta or {}).get("query_prompt")
    return prompts if isinstance(prompts, str) else None


@contextmanager
def naming_long_queries(ids: Sequence[str]):
    """A query longer than the window is a DataError naming the query, not its position in one
    encode call."""
    from arrowsmith.plugins.base import TooLongError

    try:
        yield
    except TooLongError as e:
        name = ids[e.index] if e.index < len(ids) else f"#{e.index + 1}"
        raise DataError(f"query {name} has {e.n_tokens} tokens, more than the model's window of {e.limit} "
                        "(prompt and special tokens included); refusing to truncate it",
                        hint="shorten it (eval cuts such queries as MTEB does, and counts them)") from None
