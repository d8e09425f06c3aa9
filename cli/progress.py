"""Progress bars: tqdm on stderr, only when wanted (TTY, --progress, ARROWSMITH_PROGRESS)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

import pyarrow as pa

from .settings import SETTINGS


def track_rows(batches: Iterable[pa.RecordBatch], desc: str, unit: str = "rows",
               total: int | None = None) -> Iterator[pa.RecordBatch]:
    """Pass batches through, advancing a bar by their row counts."""
    if not SETTINGS.show_progress:
        yield from batches
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=f" {unit}", file=sys.stderr, dynamic_ncols=True,
              leave=False) as bar:
        for batch in batches:
            bar.update(batch.num_rows)
            yield batch
