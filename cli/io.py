"""The CLI's output: the library's readers and writers (commands/io.py) plus the terminal table.

Readers and the data formats live in ``arrowsmith.commands.io``; CLI commands write through this
sink so that stdout on a terminal gets a readable table, never binary Arrow.
"""

from __future__ import annotations

import pyarrow as pa

from arrowsmith.commands import io as _io

OUTPUT_FORMATS = (*_io.OUTPUT_FORMATS, "table")


class BatchSink(_io.BatchSink):
    """:class:`arrowsmith.commands.io.BatchSink` plus ``table``, the default on a terminal."""

    formats = OUTPUT_FORMATS
    terminal_format = "table"

    def __init__(self, dest: str = "-", fmt: str | None = None):
        super().__init__(dest, fmt)
        self._table_widths: list[int] | None = None

    def _write_text(self, batch: pa.RecordBatch) -> bytes:
        if self.fmt != "table":
            return super()._write_text(batch)
        from .table import render_table

        text, self._table_widths = render_table(batch, self._table_widths)
        return text.encode("utf-8", errors="replace")
