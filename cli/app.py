"""The ``arrowsmith`` command: global options, stage composition, errors → exit codes.

Importing this module must stay cheap: no torch, sentence-transformers, lancedb
(or even pyarrow) at import time, so ``--help`` and completion are instant.
Each stage lives in its own small Typer app in ``cli/<stage>.py`` and imports
its library code inside the command body.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from arrowsmith.commands.errors import (
    DISK_ERRNOS,
    EXIT_IO,
    EXIT_RUNTIME,
    EXIT_SIGINT,
    EXIT_USAGE,
    ArrowsmithError,
    Interrupted,
)

from . import chunk, completion, compress, distill, doctor, embed, evaluate, index, models, query, tune
from .settings import SETTINGS, configure_logging


def _error(message: str) -> None:
    sys.stderr.write(f"arrowsmith: error: {message}\n")
    sys.stderr.flush()


def _quiet_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the exit-time flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


GLOBAL_FLAGS = {"-q", "--quiet", "-v", "-vv", "-vvv", "--verbose", "--progress", "--no-progress"}


def hoist_global_flags(args: list[str]) -> list[str]:
    """``arrowsmith embed -q …`` means ``arrowsmith -q embed …``: global flags may follow the command.

    Only flags that no command defines are moved, and nothing after ``--``.
    """
    command = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if command is None:
        return args
    moved, rest = [], []
    tail = args[command + 1:]
    for j, arg in enumerate(tail):
        if arg == "--":
            rest += tail[j:]
            break
        (moved if arg in GLOBAL_FLAGS else rest).append(arg)
    return moved + args[:command + 1] + rest


def _is_click_usage_error(e: Exception) -> bool:
    """Click's (Typer's vendored Click's) UsageError family, told apart without importing Click."""
    return (getattr(e, "exit_code", None) == EXIT_USAGE and hasattr(e, "format_message")
            and type(e).__name__ != "NoArgsIsHelpError")


def _usage_message(e, ctx) -> str:
    """One line, as for the library's errors: ``--mode: 'x' is not one of 'auto', 'vector', …``.

    Click's own message names the option's env var even when the value came from the command line,
    and Typer prefixes validation messages with "Value error, "; both are dropped.
    """
    param = getattr(e, "param", None)
    opts = "/".join(getattr(param, "opts", None) or []) or getattr(param, "name", "") or ""
    if opts and isinstance(getattr(e, "message", None), str):
        message = e.message.removeprefix("Value error, ").rstrip(".")
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str) and envvar in os.environ:
            opts += f" (or ${envvar})"
        text = f"{opts}: {message}" if message else f"missing {opts}"
    else:
        text = e.format_message().rstrip(".")
    command = getattr(getattr(e, "ctx", None), "command_path", None) or ctx.command_path
    return f"{text} (see {command} --help)"


class ArrowsmithGroup(TyperGroup):
    """Maps every error raised by a command to one stderr line and its exit code.

    Done here, not in ``main()``, so that ``CliRunner().invoke(app, …)`` in the
    tests sees exactly what a shell user sees.
    """

    def parse_args(self, ctx, args):  # type: ignore[override]
        return super().parse_args(ctx, hoist_global_flags(args))

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except (ArrowsmithError, Interrupted) as e:  # Interrupted is no Exception: see its docstring
            _error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            _error("interrupted")
            raise typer.Exit(EXIT_SIGINT) from None
        except BrokenPipeError:
            # `arrowsmith chunk … | head`: the reader has all it wants.
            _quiet_stdout()
            raise typer.Exit(0) from None
        except OSError as e:
            # a path that is not there or not a file is the caller's mistake (2); anything else
            # the system refused (permissions, disk, device) is an I/O error (74)
            bad_path = isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError,
                                      FileExistsError))
            where = e.filename or ("disk" if e.errno in DISK_ERRNOS else "I/O")
            _error(f"{where}: {e.strerror or e}")
            raise typer.Exit(EXIT_USAGE if bad_path else EXIT_IO) from None
        except Exception as e:  # noqa: BLE001 - last resort: one line, not a traceback
            if _is_click_usage_error(e):
                _error(_usage_message(e, ctx))
                raise typer.Exit(EXIT_USAGE) from None
            if hasattr(e, "show") and hasattr(e, "exit_code"):
                raise  # Click's other exits (help for a command given no arguments)
            if "No space left on device" in str(e):
                _error(f"disk full: {e}")
                raise typer.Exit(EXIT_IO) from None
            if SETTINGS.verbose:
                raise
            _error(f"{type(e).__name__}: {e} (run with -v for a traceback)")
            raise typer.Exit(EXIT_RUNTIME) from None


app = typer.Typer(
    cls=ArrowsmithGroup,
    name="arrowsmith",
    help="Corpus embedding workflows that stream Apache Arrow between stages.\n\n"
    "  arrowsmith chunk docs/ | arrowsmith embed --late --db store/\n\n"
    "  arrowsmith query --db store/ 'why is the sky blue' --k 5",
    epilog="Exit codes: 0 ok, 1 runtime error, 2 usage, 65 bad input data, 74 I/O error, "
    "75 store locked, 130 interrupted, 143 terminated.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("arrowsmith")
        except PackageNotFoundError:
            v = "unknown"
        typer.echo(f"arrowsmith {v}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", envvar="ARROWSMITH_QUIET",
                                        help="Only errors on stderr: no summaries, no progress.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="More detail on stderr (-vv: debug, tracebacks).")] = 0,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", envvar="ARROWSMITH_PROGRESS", show_default=False,
        help="Progress bars on stderr [default: only when stderr is a terminal].")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    SETTINGS.quiet, SETTINGS.verbose, SETTINGS.progress = quiet, verbose, progress
    configure_logging(quiet, verbose)
    from arrowsmith.commands import signals

    signals.install()


for stage in (chunk, embed, index, query, compress, evaluate, tune, distill, doctor, models, completion):
    app.add_typer(stage.app)


def main() -> None:
    try:
        app()
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    if isinstance(code, str):
        _error(code)
        code = 1
    _exit(int(code or 0))


def _exit(code: int) -> None:
    """Flush and leave without interpreter finalization.

    With torch loaded, Arrow's C++ thread pools (CSV/Parquet readers) can abort in their
    destructors at finalization ("terminate called without an active exception", exit 134:
    apache/arrow#34314), turning a clean exit 0 or 65 into a crash. Every output is complete
    and atomically renamed by now, so only the standard streams need flushing.
    """
    import logging

    logging.shutdown()
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass  # the reader left (exit 0 as for any EPIPE), or stdout was closed
    except OSError as e:  # data still buffered could not be written: never exit 0 on it
        _error(f"stdout: {e.strerror or e}")
        code = code or EXIT_IO
    try:
        sys.stderr.flush()
    except (ValueError, OSError):
        pass
    os._exit(code)


if __name__ == "__main__":
    main()
