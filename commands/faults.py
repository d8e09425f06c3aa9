"""Fault injection for the write path (issue 7): die like ``kill -9`` at a named point.

Tests set ``ARROWSMITH_FAULT=<point>:<n>`` and the process calls ``os._exit(137)``
the n-th time (1-based; default 1) it passes :func:`hit` with that point. With
the variable unset, ``hit`` is one dict lookup: cheap enough for every batch.

Points used by the store and index writers: ``after_read`` (first input batch
read), ``before_commit`` (data ready, nothing committed), ``after_commit`` (a
checkpoint committed), ``during_prune`` (before each pruning delete),
``during_index`` (between index builds).
"""

from __future__ import annotations

import os
import sys

ENV = "ARROWSMITH_FAULT"
EXIT = 137  # what a shell reports for a process killed by SIGKILL
_counts: dict[str, int] = {}


def _spec() -> tuple[str, int] | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    point, _, nth = raw.partition(":")
    return point, int(nth or 1)


def hit(point: str) -> None:
    """Exit the process at once (no cleanup, no flush) on the configured n-th hit of ``point``."""
    spec = _spec()
    if spec is None or spec[0] != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] >= spec[1]:
        sys.stderr.write(f"arrowsmith: fault injected at {point} (hit {_counts[point]})\n")
        sys.stderr.flush()
        os._exit(EXIT)
