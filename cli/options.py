"""Options shared by several stages, defined once (sqlite-utils' ``output_options`` in Typer form).

Every option a cron job would set has an ``ARROWSMITH_*`` environment variable,
shown in ``--help``.
"""

from __future__ import annotations

from typing import Annotated

import typer

Inputs = Annotated[
    list[str] | None,
    typer.Argument(help="Input files or directories; '-' or nothing reads stdin.", show_default=False),
]
Output = Annotated[
    str,
    typer.Option("--output", "-o", envvar="ARROWSMITH_OUTPUT",
                 help="Write here instead of stdout ('-'); format from the extension, written atomically."),
]
OutputFormat = Annotated[
    str | None,
    typer.Option("--format", "-f", envvar="ARROWSMITH_FORMAT",
                 help="arrows|arrow|parquet|jsonl|csv|tsv|table [default: table on a terminal, "
                      "else arrows, or the output file's extension].", show_default=False),
]
InputFormat = Annotated[
    str | None,
    typer.Option("--input-format", envvar="ARROWSMITH_INPUT_FORMAT",
                 help="arrows|arrow|parquet|jsonl|csv|tsv [default: from extension, or sniffed on stdin].",
                 show_default=False),
]
Db = Annotated[
    str | None,
    typer.Option("--db", envvar="ARROWSMITH_DB", help="LanceDB store directory.", show_default=False),
]
RequiredDb = Annotated[
    str,
    typer.Option("--db", envvar="ARROWSMITH_DB", help="LanceDB store directory."),
]
Table = Annotated[
    str,
    typer.Option("--table", "-t", envvar="ARROWSMITH_TABLE", help="Table (one per embedding space)."),
]
Model = Annotated[
    str | None,
    typer.Option("--model", "-m", envvar="ARROWSMITH_MODEL",
                 help="Model spec NAME or PLUGIN:NAME [default: all-MiniLM-L6-v2].", show_default=False),
]
Device = Annotated[
    str,
    typer.Option("--device", envvar="ARROWSMITH_DEVICE", help="auto|cpu|cuda|cuda:N|mps."),
]
OnError = Annotated[
    str,
    typer.Option("--on-error", envvar="ARROWSMITH_ON_ERROR",
                 help="fail: stop at the first bad document (exit 65); skip: report it, count it, go on."),
]
Wait = Annotated[
    bool,
    typer.Option(
        "--wait", envvar="ARROWSMITH_WAIT", help="Wait for another writer's lock instead of exit 75."
    ),
]
