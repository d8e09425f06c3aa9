"""`arrowsmith index`: ingest embedded chunks, build/update indexes, optimize, show stats."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .options import (
    CHECKPOINT_ROWS,
    GRACE,
    TABLE,
    AsJson,
    CheckpointRows,
    DistanceName,
    Grace,
    InputFormat,
    Inputs,
    Prune,
    Replace,
    RequiredDb,
    Table,
    TokenIndexName,
    VectorIndexName,
    Wait,
)

app = typer.Typer()


@app.command("index", rich_help_panel="Build", epilog=(
    "Example:  arrowsmith embed docs.arrows | arrowsmith index --db store/ --scalar lang"))
def index_command(
    ctx: typer.Context,
    inputs: Inputs = None,
    db: RequiredDb = ...,
    table: Table = TABLE,
    input_format: InputFormat = None,
    vector_type: Annotated[VectorIndexName, typer.Option(
        "--type", envvar="ARROWSMITH_INDEX_TYPE",
        help="Vector index. auto: none below 100k rows, else ivf_pq; none drops an existing one.")
    ] = "auto",
    partitions: Annotated[int | None, typer.Option(help="IVF partitions [default: from table size].",
                                                   show_default=False)] = None,
    sub_vectors: Annotated[int | None, typer.Option(help="PQ sub-vectors [default: dim/8].",
                                                    show_default=False)] = None,
    metric: Annotated[DistanceName | None, typer.Option(
        help="Distance of the vector index [default: cosine].", show_default=False)] = None,
    fts: Annotated[bool, typer.Option("--fts/--no-fts", help="BM25 full-text index on text.")] = True,
    scalar: Annotated[list[str] | None, typer.Option(
        "--scalar", help="Also a scalar (BTree) index on this column; repeatable (doc_id and id always).",
        show_default=False)] = None,
    token_index: Annotated[TokenIndexName, typer.Option(
        "--token-index", envvar="ARROWSMITH_TOKEN_INDEX",
        help="Index on float16/float32 token vectors (--mode maxsim). auto: none below 100k token vectors, "
             "else ivf_pq; none drops one. Packed (int4, binary) tokens are scanned.")] = "auto",
    force: Annotated[bool, typer.Option(help="Rebuild every index even if up to date.")] = False,
    optimize: Annotated[bool, typer.Option(
        "--optimize", help="Compact, drop versions older than --keep, remove killed writers' temp files.")
    ] = False,
    keep: Annotated[str, typer.Option(envvar="ARROWSMITH_KEEP",
                                      help="Versions younger than this survive --optimize (1d, 12h, 0).")
                    ] = "1d",
    keep_deleted: Annotated[bool, typer.Option(
        "--keep-deleted", help="Leave deleted rows in their files until 10% of a fragment is deleted "
                               "(LanceDB's rule): cheaper runs, slower vector search until then.")] = False,
    grace: Grace = GRACE,
    stats: Annotated[bool, typer.Option("--stats", help="Only print the table's statistics.")] = False,
    as_json: AsJson = False,
    replace: Replace = False,
    prune: Prune = False,
    checkpoint_rows: CheckpointRows = CHECKPOINT_ROWS,
    wait: Wait = False,
) -> None:
    """Ingest embedded chunks (stdin or files) into the store, then build or update its indexes.

    With nothing piped in, only (re)builds indexes; an unchanged table is left alone.
    """
    from arrowsmith.commands import index as ix

    from .settings import info

    if as_json and not stats:
        from arrowsmith.commands.errors import UsageError

        raise UsageError("--json applies to --stats only", hint="arrowsmith index --db STORE --stats --json")
    _refuse_ignored(ctx, stats=stats, optimize=optimize, vector_type=vector_type)
    if stats:
        _print_stats(ix.table_stats(db, table), as_json)
        return
    from arrowsmith.commands.store import StoreWriter, table_lock
    from arrowsmith.commands.units import parse_duration

    keep_for = parse_duration(keep, "--keep")
    grace_s = parse_duration(grace, "--grace").total_seconds()
    # look for input before locking: an idle open stdin must not hold other writers off
    ingest = bool(inputs) or _stdin_has_data()
    if not ingest:
        from .given import refuse

        refuse(ctx, ("input_format", "replace", "prune", "checkpoint_rows"),
               "without input (nothing is piped in or named): they shape the ingest")
    # one lock from ingest to the last index: no other writer slips in between
    with table_lock(db, table, wait=wait):
        if ingest:
            from arrowsmith.commands.io import read_many

            from .progress import track_rows

            with StoreWriter(db, table, replace=replace, prune=prune, wait=wait,
                             checkpoint_rows=checkpoint_rows) as writer:
                batches = read_many(inputs or ["-"], input_format, whole=prune)  # --prune: checked whole
                stored = writer.write(track_rows(batches, "store"))
            info(f"stored: {stored.summary()}")
        report = ix.build_indexes(db, table, vector_type=vector_type, partitions=partitions,
                                  sub_vectors=sub_vectors, metric=metric, fts=fts, scalar=scalar or [],
                                  token_index=token_index, wait=wait, force=force, keep=keep_for,
                                  keep_deleted=keep_deleted)
        info(report.summary())
        if optimize:
            info(ix.optimize_table(db, table, keep=keep_for, wait=wait, grace_s=grace_s,
                                   keep_deleted=keep_deleted).summary())


def _refuse_ignored(ctx: typer.Context, *, stats: bool, optimize: bool, vector_type: str) -> None:
    """Issue 10: an option that this combination would ignore is refused (exit 2)."""
    from .given import refuse

    if stats:
        refuse(ctx, ("inputs", "input_format", "vector_type", "partitions", "sub_vectors", "metric", "fts",
                     "scalar", "token_index", "force", "optimize", "keep", "keep_deleted", "grace", "replace",
                     "prune", "checkpoint_rows", "wait"), "with --stats (it only reads the table)")
    if not optimize:
        refuse(ctx, ("grace",), "without --optimize (it protects young files from --optimize's cleanup)")
    if vector_type == "none":
        refuse(ctx, ("partitions", "sub_vectors", "metric"), "with --type none (no vector index)")
    elif vector_type == "ivf_hnsw_sq":
        refuse(ctx, ("sub_vectors",), "with --type ivf_hnsw_sq (it has no PQ codes)")


def _stdin_has_data() -> bool:
    """Piped input waiting? A terminal, or an empty stdin (cron's /dev/null), is not input."""
    if sys.stdin is None or sys.stdin.isatty():
        return False
    stdin = getattr(sys.stdin, "buffer", sys.stdin)
    if hasattr(stdin, "peek"):
        return bool(stdin.peek(1))
    if stdin.seekable():
        pos = stdin.tell()
        head = stdin.read(1)
        stdin.seek(pos)
        return bool(head)
    return True


def _print_stats(stats: dict, as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps(stats, indent=2, default=str))
        return
    from arrowsmith.commands.index import format_stats

    sys.stdout.write(format_stats(stats))
