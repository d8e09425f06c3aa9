"""Typed errors shared by every stage (defined in ``arrowsmith.plugins.errors``, re-exported here).

Stages raise these; ``arrowsmith.cli`` maps them to one line on stderr and the exit code they carry
(README, "Exit codes"). They are defined with the plugin contract, the bottom layer, so a
plugin raises the same classes without importing ``arrowsmith.commands``.
"""

from __future__ import annotations

import errno

from arrowsmith.plugins.errors import (
    EXIT_DATA,
    EXIT_IO,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
    ArrowsmithError,
    DataError,
    Interrupted,
    LockedError,
    StorageError,
    UsageError,
)

# OSError numbers that mean the disk said no (StorageError, exit 74), not a bug
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})

__all__ = [
    "DISK_ERRNOS",
    "EXIT_DATA", "EXIT_IO", "EXIT_LOCKED", "EXIT_OK", "EXIT_RUNTIME", "EXIT_SIGINT", "EXIT_SIGTERM",
    "EXIT_USAGE", "ArrowsmithError", "DataError", "Interrupted", "LockedError", "StorageError", "UsageError",
]
