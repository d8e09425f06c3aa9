"""Process-wide CLI settings set by the global options (``-q``, ``-v``, ``--progress``)."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass


@dataclass
class Settings:
    quiet: bool = False
    verbose: int = 0
    progress: bool | None = None  # None: only when stderr is a TTY

    @property
    def show_progress(self) -> bool:
        if self.quiet:
            return False
        if self.progress is not None:
            return self.progress
        return sys.stderr.isatty()


SETTINGS = Settings()


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        return f"arrowsmith: {level}: {record.getMessage()}"


def configure_logging(quiet: bool, verbose: int) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else
                                         logging.INFO if verbose else logging.WARNING)
    log = logging.getLogger("arrowsmith")
    log.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    # libraries we drive are chatty on stderr; keep them to errors unless -vv
    if verbose < 2:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def info(message: str) -> None:
    """A summary line on stderr, unless --quiet."""
    if not SETTINGS.quiet:
        print(message, file=sys.stderr, flush=True)
