"""Fault injection for the write path (issue 7): die like ``kill -9``, or stop, at a named point.

Tests set ``ARROWSMITH_FAULT=<point>[:<n>[:<action>]]``; the n-th time (1-based; default 1)
the process passes :func:`hit` with that point it acts:

* ``exit`` (the default): ``os._exit(137)``, what kill -9 leaves (no cleanup, no flush);
* ``pause``: one line ``arrowsmith: paused at <point> (hit <n>)`` on stderr, then wait for
  SIGINT/SIGTERM, so a test can send a signal at a known point instead of after a sleep
  (issue 10: a sleep let a fast machine commit checkpoints the test thought were pending).

With the variable unset, ``hit`` is one dict lookup: cheap enough for every batch.

Points used by the store and index writers: ``after_read`` (first input batch read),
``before_commit`` (data ready, nothing committed), ``after_commit`` (a checkpoint committed),
``during_prune`` (before each pruning delete), ``during_index`` (between index builds),
``between_add_and_delete`` (a changed document's new chunks committed, its old rows not yet
deleted). They run
in the thread that commits, the main one (signals.py), where a signal becomes an exception.
"""

from __future__ import annotations

import os
import sys
import time

from . import signals
from .errors import UsageError

ENV = "ARROWSMITH_FAULT"
EXIT = 137  # what a shell reports for a process killed by SIGKILL
ACTIONS = ("exit", "pause")
_counts: dict[str, int] = {}


def _spec() -> tuple[str, int, str] | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    point, _, rest = raw.partition(":")
    nth, _, action = rest.partition(":")
    action = action or "exit"
    if (nth and not nth.isdigit()) or action not in ACTIONS:
        raise UsageError(f"{ENV}={raw!r}: expected POINT[:N[:{'|'.join(ACTIONS)}]]")
    return point, int(nth or 1), action


def hit(point: str) -> None:
    """Act as configured (exit or pause) on the n-th hit of ``point``; otherwise return at once."""
    spec = _spec()
    if spec is None or spec[0] != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] < spec[1]:
        return
    if spec[2] == "pause":
        _pause(point, _counts[point])
        return
    sys.stderr.write(f"arrowsmith: fault injected at {point} (hit {_counts[point]})\n")
    sys.stderr.flush()
    os._exit(EXIT)


def _pause(point: str, n: int) -> None:
    """Announce the pause, then wait for a signal: its handler raises Interrupted out of the sleep.

    A short sleep in a loop rather than ``signal.pause()``: a signal that lands between the
    announcement and the pause call would otherwise leave the process waiting for a second one.
    A signal deferred by :func:`signals.no_interrupt` ends the wait too (the block raises it).
    """
    sys.stderr.write(f"arrowsmith: paused at {point} (hit {n})\n")
    sys.stderr.flush()
    while not signals.pending():
        time.sleep(0.1)
