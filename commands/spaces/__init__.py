"""Representations of a chunk: what a table may store beside its text, one module each.

A representation owns everything the stages would otherwise hard-code about its column: the
Arrow field and the settings recorded in the table's ``arrowsmith.model`` metadata, how a batch
column is built from vectors and read back, what ``doctor`` checks, and how it is scored. Stages
ask :func:`of_meta` which representations a table holds and dispatch to them.

- :mod:`.dense` — one vector per chunk (``vector``), always present: ANN/flat search, compress.
- :mod:`.multi` — the chunk's token vectors (``tokens``, ``embed --multivector``): MaxSim, as a
  rerank stage over any first stage's candidates or over the whole table.

docs/design.md, "Adding a representation", says how to add one (a sparse one, say).
"""

from __future__ import annotations

from typing import Any

from . import dense, multi

ALL = (dense, multi)


def of_meta(model_meta: dict[str, Any] | None) -> list[Any]:
    """The representation modules a table (or stream) with this ``arrowsmith.model`` holds."""
    return [r for r in ALL if r.present(model_meta or {})]

COLUMNS = tuple(r.COLUMN for r in ALL)  # columns a representation owns: never carried as metadata
