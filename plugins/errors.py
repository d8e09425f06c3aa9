"""Typed errors shared by every stage and every model plugin.

Stages and plugins raise these; ``arrowsmith.cli`` maps them to one line on stderr and the
exit code they carry (README, "Exit codes"). They live in ``plugins/`` because that is
the bottom layer (cli → commands → plugins): a plugin raises them without importing the stages,
and ``arrowsmith.commands.errors`` re-exports them for the stages and the CLI.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_DATA = 65  # EX_DATAERR: bad input data
EXIT_IO = 74  # EX_IOERR: disk full, unreadable file
EXIT_LOCKED = 75  # EX_TEMPFAIL: another writer holds the table
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class ArrowsmithError(Exception):
    """Base class: a message a user can act on, and the exit code to use."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  It's often worth trying: {self.hint}"
        return self.message


class UsageError(ArrowsmithError):
    """Options that cannot work together, an unknown model, a bad filter."""

    exit_code = EXIT_USAGE


class DataError(ArrowsmithError):
    """Input that cannot be interpreted: names the file, line or row."""

    exit_code = EXIT_DATA


class StorageError(ArrowsmithError):
    """The disk said no (full, read-only, permissions)."""

    exit_code = EXIT_IO


class LockedError(ArrowsmithError):
    """Another process holds the table's write lock."""

    exit_code = EXIT_LOCKED


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; raised at a point where nothing is half-committed.

    A BaseException, as KeyboardInterrupt is, so that no ``except Exception`` on the way
    swallows it: logging's ``emit`` is one, and a signal that landed inside a log write was
    printed as "--- Logging error ---" while the run went on to commit (issue 10). The CLI
    maps it like an ArrowsmithError: its message, exit 128 + the signal number.
    """

    hint = None

    def __init__(self, signum: int):
        import signal

        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}")
        self.message = f"interrupted by {name}"
        self.signum = signum
        self.exit_code = 128 + signum
