"""Atomic model directories and resumable checkpoints.

The model is written into a hidden temporary directory beside ``-o DIR`` and renamed into place
only once it is complete (model, tokenizer, card): a Ctrl-C, a kill or a crash leaves no half
model, and Make never sees one. Checkpoints (``--checkpoint-steps``) live in ``DIR.checkpoints``
with a fingerprint of the run (base model, pairs, options): the same command run again resumes
from the newest complete one; a different run refuses them instead of mixing two trainings.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from arrowsmith.commands.errors import UsageError
from arrowsmith.commands.io import output_mode
from arrowsmith.commands.signals import no_interrupt

FINGERPRINT = "fingerprint.json"


class AtomicDir:
    """``with AtomicDir(dest) as tmp: …write into tmp…; commit()`` — all or nothing."""

    def __init__(self, dest: str | Path, *, overwrite: bool = False):
        self.dest = Path(dest)
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self.committed = False

    def check(self) -> None:
        """Refuse an existing non-empty destination before any work is done (exit 2)."""
        if self.dest.exists() and not self.dest.is_dir():
            raise UsageError(f"-o {self.dest}: exists and is not a directory")
        if self.dest.is_dir() and any(self.dest.iterdir()) and not self.overwrite:
            raise UsageError(f"-o {self.dest}: directory exists and is not empty",
                             hint="--overwrite to replace it")
        if not self.dest.parent.is_dir():
            raise UsageError(f"-o {self.dest}: {self.dest.parent} is not a directory")

    def __enter__(self) -> Path:
        self.check()
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.tmp-", dir=self.dest.parent))
        os.chmod(self.tmp, output_mode(self.dest, directory=True))  # not mkdtemp's 0700
        return self.tmp

    def commit(self) -> None:
        assert self.tmp is not None
        with no_interrupt():  # a signal here waits for the renames: old model or new, never neither
            old = None
            if self.dest.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.old-", dir=self.dest.parent))
                os.rmdir(old)
                os.replace(self.dest, old)
            os.replace(self.tmp, self.dest)
            self.committed = True
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        if not self.committed and self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def checkpoint_dir(dest: str | Path) -> Path:
    dest = Path(dest)
    return dest.parent / f"{dest.name}.checkpoints"


def prepare_checkpoints(directory: Path, fingerprint: dict[str, Any], *, resume: bool = True) -> Path | None:
    """Create ``directory`` for this run's checkpoints; return the checkpoint to resume from, if any."""
    stamp = directory / FINGERPRINT
    fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))  # as stored: tuples become lists
    if directory.exists():
        try:
            stored = json.loads(stamp.read_text())
        except (OSError, json.JSONDecodeError):
            stored = None
        if not resume:
            shutil.rmtree(directory)
        elif stored != fingerprint:
            raise UsageError(f"{directory} holds checkpoints of another run (other base model, data or "
                             "options)",
                             hint=f"--no-resume to discard them, or rm -r {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
    return latest_checkpoint(directory)


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest ``checkpoint-N`` whose trainer state was written (the trainer writes it last)."""
    found = []
    for p in directory.glob("checkpoint-*"):
        step = p.name.rsplit("-", 1)[-1]
        if not step.isdigit():
            continue
        try:
            json.loads((p / "trainer_state.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue  # cut short by a kill while saving
        found.append((int(step), p))
    return max(found)[1] if found else None


def remove_checkpoints(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
