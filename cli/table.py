"""A readable table for terminals: what a person sees instead of binary Arrow."""

from __future__ import annotations

import shutil
import sys

import pyarrow as pa

MAX_CELL = 60


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        if value and all(isinstance(v, float) for v in value[:4]):
            head = ", ".join(f"{v:.3f}" for v in value[:3])
            return f"[{head}, …] ({len(value)})"
        return f"[{len(value)} items]"
    text = str(value).replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def render_table(batch: pa.RecordBatch, widths: list[int] | None) -> tuple[str, list[int]]:
    """Render a batch; the first call fixes the column widths and prints a header."""
    names = batch.schema.names
    rows = [
        [_cell(v) for v in row.values()] for row in batch.to_pylist()
    ]
    header = widths is None
    if widths is None:
        widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
        widths = [min(w, MAX_CELL) for w in widths]
        # on a terminal, shrink the widest columns until the table fits it; a pipe or a file gets
        # whole headers whatever COLUMNS an outer tool exported (a report piped to `tail`)
        if sys.stdout.isatty():
            total = shutil.get_terminal_size((160, 24)).columns
            while sum(widths) + 2 * (len(widths) - 1) > total and max(widths) > 8:
                widths[widths.index(max(widths))] -= 1
    out = []
    if header:
        out.append("  ".join(n[:w].ljust(w) for n, w in zip(names, widths, strict=True)))
        out.append("  ".join("-" * w for w in widths))
    for r in rows:
        out.append("  ".join((c if len(c) <= w else c[: max(w - 1, 0)] + "…").ljust(w)
                             for c, w in zip(r, widths, strict=True)).rstrip())
    return ("\n".join(out) + "\n") if out else "", widths
