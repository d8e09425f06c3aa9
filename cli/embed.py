"""`arrowsmith embed`: chunked documents (or any text table) → embedded chunks, to a stream or a store."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from .options import (
    CHECKPOINT_ROWS,
    DEVICE,
    DTYPE,
    ID_COL,
    TABLE,
    TEXT_COL,
    CheckpointRows,
    Db,
    Device,
    Dtype,
    IdCol,
    InputFormat,
    Inputs,
    Late,
    LateSpecialsName,
    Model,
    Output,
    OutputFormat,
    Prune,
    Replace,
    Table,
    TextCol,
    Wait,
)

app = typer.Typer()

EngineName = Literal["local", "ray"]  # commands/embed/engines.py
TokenPrecision = Literal["int4", "residual", "binary", "float16", "float32"]  # commands/spaces/multi.py

EPILOG = (
    "Example: `arrowsmith chunk docs/ | arrowsmith embed --late --db store/`\n\n"
    "Input: the output of `chunk` (each span is embedded), or any table with id and text columns "
    "(each row is one chunk). A chunk longer than the model's window is an error (exit 65), never "
    "truncated. With --db, documents whose doc_key is already stored are not embedded again."
)


def _opt(*names: str, env: str, help: str, **kw):
    return typer.Option(*names, envvar=f"ARROWSMITH_{env}", help=help, **kw)


@app.command("embed", rich_help_panel="Build", epilog=EPILOG)
def embed_command(
    ctx: typer.Context,
    inputs: Inputs = None,
    model_spec: Model = None,
    late: Late = False,
    batch_tokens: Annotated[int | None, _opt("--batch-tokens", env="BATCH_TOKENS", show_default=False, help=(
        "Padded tokens per forward pass [default: 2048 on CPU, 65536 on GPU]."))] = None,
    device: Device = DEVICE,
    dtype: Dtype = DTYPE,
    prompt: Annotated[str | None, _opt("--prompt", env="PROMPT", show_default=False, help=(
        "Document prompt prefix [default: the model's own 'document' prompt, if any]; '' for none."))] = None,
    query_prompt: Annotated[str | None, _opt("--query-prompt", env="QUERY_PROMPT", show_default=False, help=(
        "Query prompt recorded for `query` [default: the model's own 'query' prompt]."))] = None,
    dim: Annotated[int | None, _opt("--dim", env="DIM", show_default=False, help=(
        "Truncate vectors to N dims and re-normalise (Matryoshka)."))] = None,
    window: Annotated[int | None, _opt("--window", env="WINDOW", show_default=False, help=(
        "Late: tokens per model window, prompt and specials included; at most the model's window "
        "(its max_seq_length: 256 for all-MiniLM-L6-v2) [default: the model's window]."))] = None,
    window_overlap: Annotated[int | None, _opt("--window-overlap", env="WINDOW_OVERLAP", show_default=False,
                                               help="Late: tokens shared by consecutive windows; 0 runs "
                                                    "at naive's speed [default: a sixteenth of a window's "
                                                    "text tokens; with --db, an existing table's own]."
                                               )] = None,
    late_specials: Annotated[LateSpecialsName, _opt("--late-specials", env="LATE_SPECIALS", help=(
        "Late: leave prompt and special tokens out of chunk means, or include them."))] = "exclude",
    force: Annotated[bool, _opt("--force", env="FORCE", help="Late-chunk a model that is not mean-pooled.")
                     ] = False,
    multivector: Annotated[bool, _opt("--multivector", env="MULTIVECTOR", rich_help_panel="Token vectors",
                                      help="Also store each chunk's token vectors (column `tokens`), "
                                           "for `query --rerank maxsim` / `--mode maxsim`.")] = False,
    token_precision: Annotated[TokenPrecision | None, _opt("--token-precision", env="TOKEN_PRECISION",
                                                           rich_help_panel="Token vectors", help=(
        "How token vectors are stored: residual (100 bytes a token at 384 dims, a codebook fitted on "
        "the first group and kept beside the table; 99.0-100.6% of float32's MaxSim nDCG@10 "
        "measured), int4 (194; 99.8-100.2%), binary (48; 96.7-99.9%), float16 (768), float32 (1,536); "
        "benchmarks/RESULTS.md. float16/float32 can be searched by LanceDB's own MaxSim. "
        "[default: the table's own when continuing one, else residual]"), show_default=False)] = None,
    token_pool: Annotated[float, _opt("--token-pool", env="TOKEN_POOL", rich_help_panel="Token vectors",
                                      help="Keep about 1/F of each chunk's token vectors, merging "
                                           "similar ones (hierarchical pooling); 1 keeps all.")] = 1.0,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help=(
        "Run Python code shipped with the model (never on by default)."))] = False,
    allow_download: Annotated[bool, _opt("--allow-download", env="ALLOW_DOWNLOAD", help=(
        "Download a model that is not installed locally."))] = False,
    id_col: IdCol = ID_COL,
    text_col: TextCol = TEXT_COL,
    input_format: InputFormat = None,
    output: Output = "-",
    fmt: OutputFormat = None,
    db: Db = None,
    table: Table = TABLE,
    replace: Replace = False,
    prune: Prune = False,
    wait: Wait = False,
    checkpoint_rows: CheckpointRows = CHECKPOINT_ROWS,
    engine: Annotated[EngineName, _opt("--engine", env="ENGINE", rich_help_panel="Engine", help=(
        "local: embed in this process. ray: on Ray actors, this process still the only writer "
        "(pip install 'arrowsmith[ray]')."))] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", rich_help_panel="Engine",
                                                    show_default=False, help=(
        "Ray cluster to use [default: $RAY_ADDRESS, else a local Ray started for this run]."))] = None,
    workers: Annotated[int | None, typer.Option("--workers", rich_help_panel="Engine", show_default=False,
                                                help="Ray actors, each holding the model [default: one "
                                                     "per GPU, else cluster CPUs / --cpus-per-worker]."
                                                )] = None,
    gpus_per_worker: Annotated[float | None, typer.Option("--gpus-per-worker", rich_help_panel="Engine",
                                                          show_default=False, help=(
        "GPUs per actor [default: 1 when the cluster has GPUs, else 0]."))] = None,
    cpus_per_worker: Annotated[float | None, typer.Option("--cpus-per-worker", rich_help_panel="Engine",
                                                          show_default=False, help=(
        "CPUs per actor; fractions share cores [default: 1 with a GPU; with --workers N, the cluster's "
        "CPUs / N (at least 1); else up to 4]."))] = None,
) -> None:
    """Embed chunks with a sentence-transformers (or plugin) model; write a stream or upsert into --db."""
    from arrowsmith.cli.io import BatchSink
    from arrowsmith.cli.progress import track_rows
    from arrowsmith.commands.embed import EmbedStats, embed_to_sink, embed_to_store
    from arrowsmith.commands.embed.engines import engine_options
    from arrowsmith.commands.errors import UsageError
    from arrowsmith.commands.io import read_many
    from arrowsmith.plugins.registry import load_model

    from .settings import info

    if db is None and (replace or prune):
        raise UsageError("--replace and --prune need --db")
    _refuse_ignored(ctx, late=late, db=db, multivector=multivector)
    load_options = dict(device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                        allow_download=allow_download)
    engine, engine_opts = engine_options(engine, address=ray_address, workers=workers,
                                         gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                                         model_options=load_options)
    if db is not None:
        from arrowsmith.commands.isolated import hold_memory

        hold_memory()  # before the model's and LanceDB's threads make arenas
    model = load_model(model_spec, **load_options)
    options = dict(late=late, batch_tokens=batch_tokens, prompt=prompt, query_prompt=query_prompt, dim=dim,
                   window=window, window_overlap=window_overlap, late_specials=late_specials, force=force,
                   multivector=multivector, token_precision=token_precision, token_pool=token_pool,
                   id_col=id_col, text_col=text_col, engine=engine, engine_options=engine_opts)
    stats = EmbedStats()
    batches = track_rows(read_many(inputs or ["-"], input_format, whole=prune), "embed", "docs")
    if db is None:
        embed_to_sink(batches, model, BatchSink(output, fmt), stats=stats, **options)
        info(stats.summary())
    else:
        written = embed_to_store(batches, model, db, table, replace=replace, prune=prune, wait=wait,
                                 checkpoint_rows=checkpoint_rows, stats=stats, **options)
        info(stats.summary(pruned=written.docs_pruned) + f"; {db}/{table}: {written.rows_added} rows "
             f"written, {written.rows_deleted} deleted in {written.checkpoints} commits")


def _refuse_ignored(ctx: typer.Context, *, late: bool, db: str | None, multivector: bool) -> None:
    """Issue 10: an option that this combination would ignore is refused (exit 2)."""
    from .given import refuse

    if not multivector:
        refuse(ctx, ("token_precision", "token_pool"), "without --multivector (they shape token vectors)",
               hint="--multivector")
    if not late:
        refuse(ctx, ("window", "window_overlap", "late_specials", "force"),
               "with --naive (they shape late chunking)", hint="--late")
    if db is None:
        refuse(ctx, ("table", "wait", "checkpoint_rows"), "without --db (they shape the store write)")
    else:
        refuse(ctx, ("output", "fmt"), "with --db (the chunks go into the store)")
