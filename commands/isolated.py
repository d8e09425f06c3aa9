"""Run one memory-heavy LanceDB call in a child process, so that the memory it takes dies with it.

LanceDB keeps much of what a call allocated after it returns (neither glibc's ``malloc_trim`` nor a
new connection gives it back), so in one process the first ``index`` of a million-row table piled
its phases up: 1,054 MiB peak where no phase alone needed more than 752 (benchmarks/RESULTS.md,
"Issue 20: index memory, flat"). A child runs one call and exits; the parent keeps the table's
write lock (the lock file's descriptor is not inherited) and sees the new table version after
``checkout_latest``.

The child

* gets the call as a pickle on stdin and answers with a pickle on stdout: the result, or the
  exception it raised, which :func:`call` raises again in the parent, inside the parent's own
  ``read_errors``/``disk_errors``, so a failure maps to the same typed error and exit code as
  in one process;
* dies with the parent: ``PR_SET_PDEATHSIG`` (Linux) and a thread that ends the process when
  its stdin closes, so no orphan writes to a table whose lock died with its parent;
* defers SIGINT/SIGTERM until the call returns (:func:`signals.no_interrupt`), as the parent
  does around the same call;
* runs with a smaller LanceDB read-ahead and glibc's allocator held to fewer arenas
  (:data:`CHILD_ENV`: both are read once, at process start, so they are given to the child only).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .errors import EXIT_RUNTIME, ArrowsmithError, Interrupted

# The child's environment (a value the user set is kept). LANCE_DEFAULT_IO_BUFFER_SIZE: LanceDB's
# read-ahead budget, 2 GiB by default, let the compaction's reader run ahead of its writer.
# MALLOC_ARENA_MAX (glibc's, read at process start): LanceDB's threads allocate from up to 8 arenas
# a core, and what is freed in one arena is not reused by another. A million-row table's
# compaction alone: 808 MiB peak with neither, 580 with the buffer, 412 with 2 arenas too; its
# IVF_PQ build 892, 583, 493; the whole first `index` 445 MiB against 958 in one process, at 1.03x
# its wall. A fixed MALLOC_MMAP_THRESHOLD_ of 1 MiB (large buffers given back when freed) took that
# to 405 MiB, but at 1.16x the wall and 1.25x the CPU, so it is left to the user's environment
# (benchmarks/RESULTS.md, "Issue 20: index memory, flat")
CHILD_ENV = {"LANCE_DEFAULT_IO_BUFFER_SIZE": str(32 * 1024 * 1024), "MALLOC_ARENA_MAX": "2"}
M_ARENA_MAX = -8  # glibc's mallopt parameter for MALLOC_ARENA_MAX
log = logging.getLogger("arrowsmith.isolated")

_BOOT = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
         "from arrowsmith.commands.isolated import main; main(int(sys.argv[2]))")


def hold_memory() -> bool:
    """:data:`CHILD_ENV` for this process, for one that reads or writes a big table itself
    (``embed --db``, ``compress``): LanceDB's read-ahead budget (read at its first scan; a value the
    user set is kept) and :func:`hold_arenas`; True when the arenas were capped. The second night's
    ``compress`` re-run at a million rows peaked at 297 MiB without either, 279 with the arenas,
    271 with both, in one process (100k rows: 232, 226, 224; benchmarks/RESULTS.md, "Issue 20:
    compress re-run and embed --prune memory")."""
    os.environ.setdefault("LANCE_DEFAULT_IO_BUFFER_SIZE", CHILD_ENV["LANCE_DEFAULT_IO_BUFFER_SIZE"])
    return hold_arenas()


def hold_arenas() -> bool:
    """Hold this process to :data:`CHILD_ENV`'s glibc arenas from now on; True when it was set.

    For a process that writes LanceDB itself (``embed --db``): glibc reads MALLOC_ARENA_MAX only
    at start, but ``mallopt`` caps the arenas created after it, and before this process has threads
    enough to contend it has one or two. The second night's ``embed --db --prune`` at a million
    rows peaked at 615 MiB with glibc's default, 549 with this (100k rows: 369, 355;
    benchmarks/RESULTS.md, "Issue 20: the second night's embed, measured alone"). A value the user
    set in the environment is glibc's already and is kept; elsewhere than glibc, nothing.
    """
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a libc without mallopt (musl has it as a no-op)
        return False
    return mallopt(M_ARENA_MAX, int(CHILD_ENV["MALLOC_ARENA_MAX"])) == 1


class ChildDied(ArrowsmithError):
    """The child process ended without an answer (killed: out of memory, kill -9)."""

    exit_code = EXIT_RUNTIME


_warm: list[subprocess.Popen] = []  # a child started ahead of its call (warm_child)


@contextlib.contextmanager
def warm_child(start: bool = True) -> Iterator[None]:
    """Start the next :func:`call`'s child now (when ``start``), so that its interpreter and its
    import of LanceDB (~1 s) run on the other core while this process starts; a child that no call
    took is ended on leaving. The night's `index` at a million rows spent 1.7 s before it started
    its child and the child 1.1 s more before LanceDB began (benchmarks/RESULTS.md, "Issue 20: a
    child started ahead")."""
    if start and not _warm:
        _warm.append(_spawn())
    try:
        yield
    finally:
        while _warm:
            proc = _warm.pop()
            proc.stdin.close()  # at the end of its stdin before a job, the child exits at once
            proc.stdout.close()
            proc.wait()


def _spawn() -> subprocess.Popen:
    env = {**CHILD_ENV, **os.environ}
    return subprocess.Popen([sys.executable, "-c", _BOOT, json.dumps(sys.path), str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)


def call(what: str, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` in a child process; its result, or its exception raised here.

    ``func`` must be a module-level function (pickled by name); ``what`` names the step in the
    message when the child dies without answering. The child's peak RSS is logged at debug level.
    """
    job = pickle.dumps((func, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    proc = _warm.pop() if _warm else _spawn()
    answer = b""
    try:
        proc.stdin.write(job)
        proc.stdin.flush()  # stdin stays open: its end tells the child that the parent is gone
        answer = proc.stdout.read()
    finally:
        # normally the child has exited by now; if this process is leaving early (an exception
        # while waiting), closing stdin ends the child before the lock goes, as kill -9 would
        proc.stdin.close()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss: Linux counts this process's RSS at the spawn in it (the high-water mark before exec)
    log.debug("%s: child peak RSS %d MiB, exit %d", what, usage.ru_maxrss // 1024, proc.returncode)
    if not answer:
        code = proc.returncode
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}")
        raise ChildDied(f"{what}: the child process that ran it {how} without finishing; "
                        "the table is as it was before this step",
                        hint="if the system ran out of memory, free some and run it again")
    kind, value = pickle.loads(answer)
    if kind == "ok":
        return value
    if kind == "interrupted":
        raise Interrupted(value)
    raise value


# ------------------------------------------------------------------ the child


def main(parent: int) -> None:
    """The child's entry point (``_BOOT``): one call from stdin, its outcome to stdout."""
    _die_with(parent)
    from . import signals

    signals.install()
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the answer
    from .lancedb_import import import_lancedb

    import_lancedb()  # every call here is a LanceDB call; a warm child imports it before its job
    try:
        func, args, kwargs = pickle.load(sys.stdin.buffer)
    except EOFError:  # a warm child that no call took (warm_child)
        os._exit(0)
    threading.Thread(target=_exit_when_orphaned, daemon=True).start()
    try:
        with signals.no_interrupt():
            answer = ("ok", func(*args, **kwargs))
    except Interrupted as e:
        answer = ("interrupted", e.signum)
    except Exception as e:  # noqa: BLE001 - every failure goes back to the parent, which raises it
        answer = ("error", e)
    try:
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - an exception that does not pickle: its type and text
        err = answer[1]
        data = pickle.dumps(("error", RuntimeError(f"{type(err).__name__}: {err}")))
    out.write(data)
    out.flush()
    os._exit(0)  # no interpreter teardown: LanceDB's threads have nothing left to do


def _die_with(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(EXIT_RUNTIME)


def _exit_when_orphaned() -> None:
    sys.stdin.buffer.read()  # returns at EOF: the parent closed it or died
    os._exit(EXIT_RUNTIME)
