"""`arrowsmith models` (not built yet)."""

from __future__ import annotations

import typer

from ._notbuilt import not_built

app = typer.Typer()


@app.command("models", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def models_command(ctx: typer.Context) -> None:
    """Not built yet."""
    not_built("models")
