"""`arrowsmith doctor`: check a stored table (rows, vectors, doc_keys, files, indexes, versions)."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import GRACE, TABLE, AsJson, Grace, RequiredDb, Table, Wait

app = typer.Typer()

EPILOG = (
    "Example (cron, after the nightly build):  arrowsmith doctor --db store/ --fix || mail -s 'store' me"
    "\n\nExit 0: healthy. Exit 1: one finding per line on stdout (`check: message`), or --json."
)


@app.command("doctor", rich_help_panel="Maintain", epilog=EPILOG)
def doctor_command(
    ctx: typer.Context,
    db: RequiredDb = ...,
    table: Table = TABLE,
    fix: Annotated[bool, typer.Option(
        "--fix", envvar="ARROWSMITH_FIX",
        help="Remove temporary/orphaned files killed writers left (older than --grace), under the lock.")
    ] = False,
    grace: Grace = GRACE,
    as_json: AsJson = False,
    wait: Wait = False,
) -> None:
    """Check that a table is whole: one row per chunk id, sound vectors, consistent doc_keys,
    readable data files and indexes, no lost version, a readable previous version, no stale
    temporary files."""
    import json

    from arrowsmith.commands.doctor import check_grace, diagnose
    from arrowsmith.commands.units import parse_duration

    from .given import refuse
    from .settings import info

    if not fix:  # only --fix takes the lock (issue 10: --wait alone was ignored)
        refuse(ctx, ("wait",), "without --fix (only --fix takes the table's lock)")
    grace_s = check_grace(parse_duration(grace, "--grace").total_seconds())
    report = diagnose(db, table, fix=fix, grace_s=grace_s, wait=wait)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=1, default=str))
    else:
        for finding in report.findings:
            typer.echo(str(finding))
    for path in report.fixed:
        info(f"removed {path}")
    for note in report.notes:
        info(f"note: {note}")
    info(report.summary())
    if not report.healthy:
        raise typer.Exit(1)
