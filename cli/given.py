"""Options given on the command line that a combination would ignore are refused (exit 2).

"No option may be silently ignored": a command names the options that have no effect in the
combination it was given, and :func:`refuse` turns those the user typed into one usage error.
Environment variables (``ARROWSMITH_*``) are settings for every run, so they apply where they
apply and are never refused.
"""

from __future__ import annotations

from collections.abc import Iterable

import typer


def given(ctx: typer.Context, *names: str) -> list[str]:
    """The flags (``--fusion``) of the parameters ``names`` that were typed on the command line."""
    out = []
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":
            out.append(flag(ctx, name))
    return out


def flag(ctx: typer.Context, name: str) -> str:
    for param in ctx.command.params:
        if param.name == name:
            opts = sorted(param.opts, key=len, reverse=True)[:1] + list(param.secondary_opts)
            return "/".join(opts) if opts and opts[0].startswith("-") else name.upper()
    return f"--{name.replace('_', '-')}"


def refuse(ctx: typer.Context, names: Iterable[str], why: str, hint: str | None = None) -> None:
    """Exit 2 when any of ``names`` was given: they have no effect ``why`` (e.g. "without --fix")."""
    from arrowsmith.commands.errors import UsageError

    flags = given(ctx, *names)
    if flags:
        verb = "has" if len(flags) == 1 else "have"
        raise UsageError(f"{', '.join(flags)} {verb} no effect {why}", hint=hint)
