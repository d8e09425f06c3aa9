"""`arrowsmith models`: installed model plugins and the models they serve, without importing plugins."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import AsJson

app = typer.Typer()

EPILOG = ("Example: `arrowsmith models --json`\n\nPlugins register in the entry-point group "
          "`arrowsmith.models`; use one with `--model PLUGIN:NAME`.")


@app.command("models", rich_help_panel="Maintain", epilog=EPILOG)
def models_command(
    as_json: AsJson = False,
    check: Annotated[bool, typer.Option("--check", help=(
        "Import each plugin to check it loads (a broken one gets one warning line on stderr)."))] = False,
) -> None:
    """List installed model plugins (read from package metadata, nothing imported) and their local models."""
    import json
    import logging

    from arrowsmith.plugins.registry import (
        DEFAULT_MODEL,
        DEFAULT_PLUGIN,
        check_plugin,
        known_models,
        list_plugins,
    )

    log = logging.getLogger("arrowsmith.plugins")
    rows = []
    for p in list_plugins():
        row = {"plugin": p.name, "target": p.target, "distribution": p.distribution, "version": p.version,
               "default": p.name == DEFAULT_PLUGIN, "models": known_models(p.name)}
        if check:
            problem = check_plugin(p.name)
            row["ok"] = problem is None
            if problem:
                log.warning("%s", problem)
        rows.append(row)
    if as_json:
        typer.echo(json.dumps({"default_model": DEFAULT_MODEL, "plugins": rows}, indent=2))
        return
    for row in rows:
        models = ", ".join(row["models"]) or "-"
        status = "" if not check else ("  ok" if row["ok"] else "  BROKEN")
        typer.echo(f"{row['plugin']}\t{row['distribution']} {row['version']}\t{models}{status}")
