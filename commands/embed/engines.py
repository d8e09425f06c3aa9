"""Embedding engines (docs/design.md#engines-one-committer-many-embedders).

An engine is a function with :func:`arrowsmith.commands.embed.embed_batches`'s signature and
contract: chunked documents in, embedded-chunks batches out (all chunks of a document in one
batch), ``skip_doc`` asked once per document, the same ``EmbedStats``. ``local`` *is*
``embed_batches``; ``ray`` (:mod:`arrowsmith.commands.embed.ray_engine`) decides on the driver and
embeds on Ray actors. The sinks (a stream, a file, the ``StoreWriter``) are the same for both,
so outputs, the summary line, exit codes and the store's guarantees are too.

Importing this module imports neither Ray nor torch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import UsageError

ENGINES = ("local", "ray")
ENV = "ARROWSMITH_ENGINE"


def resolve_engine(engine: str | None) -> str:
    """``engine``, else ``$ARROWSMITH_ENGINE``, else ``local``; UsageError for an unknown name."""
    name = (engine or os.environ.get(ENV) or "local").strip().lower()
    if name not in ENGINES:
        raise UsageError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")
    return name


@contextlib.contextmanager
def engine_batches(engine: str | None = "local", options: Any = None, *, ordered: bool = True
                   ) -> Iterator[Callable[..., Iterator[Any]]]:
    """The engine's ``embed_batches``; leaving the block ends everything the engine started.

    ``ordered`` (a stream or file): batches come out in input order, as the local engine's do; a
    store takes them in any order (``ordered=False``), so a slow or retried group stalls nothing.
    ``options`` is a :class:`arrowsmith.commands.embed.ray_engine.RayOptions` for ``ray``.
    """
    name = resolve_engine(engine)
    if name == "local":
        if options is not None:
            raise UsageError("engine options (--ray-address, --workers, --gpus-per-worker, "
                             "--cpus-per-worker) need --engine ray")
        from .stage import embed_batches

        yield embed_batches
        return
    from .ray_engine import RayEngine

    with RayEngine(options, ordered=ordered) as ray_engine:
        yield ray_engine.embed_batches


def engine_options(engine: str | None, *, address: str | None = None, workers: int | None = None,
                   gpus_per_worker: float | None = None, cpus_per_worker: float | None = None,
                   model_options: dict[str, Any] | None = None) -> tuple[str, Any]:
    """(engine name, its options) from the CLI's flags; a Ray flag with the local engine is exit 2."""
    name = resolve_engine(engine)
    given = [flag for flag, value in (("--ray-address", address), ("--workers", workers),
                                      ("--gpus-per-worker", gpus_per_worker),
                                      ("--cpus-per-worker", cpus_per_worker)) if value is not None]
    if name == "local":
        if given:
            raise UsageError(f"{', '.join(given)} need --engine ray (the local engine embeds here)")
        return name, None
    from .ray_engine import RayOptions, require_ray

    require_ray()  # exit 2 naming the install command, before the model loads or input is read
    options = RayOptions(address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                         cpus_per_worker=cpus_per_worker, model_options=model_options)
    options.check()
    return name, options
