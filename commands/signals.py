"""Turn SIGINT/SIGTERM into an exception at a safe point.

Python runs signal handlers in the main thread between bytecodes, but not while
a Rust call (a LanceDB commit) is in progress, and LanceDB consumes Python
generators on its own thread where a KeyboardInterrupt is swallowed and the
add commits anyway (docs/design.md#incremental-and-safe-writes). So writers
never hand LanceDB a generator, and
wrap each commit in :func:`no_interrupt`: a signal arriving inside is deferred
and raised as :class:`Interrupted` right after the commit returns; a signal
arriving anywhere else raises at once, so no uncommitted work is kept.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from .errors import Interrupted

_pending: list[int] = []
_depth = 0


def _handler(signum: int, frame) -> None:  # noqa: ARG001 - signal handler signature
    if _depth > 0:
        _pending.append(signum)
        return
    raise Interrupted(signum)


def install() -> None:
    """Route SIGINT and SIGTERM through :func:`_handler` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def no_interrupt() -> Iterator[None]:
    """Defer SIGINT/SIGTERM until the block (a commit) has finished."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending:
            signum = _pending[0]
            _pending.clear()
            raise Interrupted(signum)


def pending() -> bool:
    """True when a signal is waiting to be raised (for loops that poll)."""
    return bool(_pending)
