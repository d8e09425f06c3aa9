"""`arrowsmith chunk`: files, directories or tables → chunked documents."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from .options import (
    ID_COL,
    OVERLAP,
    TABLE,
    TEXT_COL,
    IdCol,
    InputFormat,
    Inputs,
    MaxTokens,
    OnError,
    Output,
    OutputFormat,
    Overlap,
    StrategyName,
    Table,
    TextCol,
)

app = typer.Typer()

EPILOG = (
    "Example: `arrowsmith chunk docs/ --strategy markdown --max-tokens 200 | arrowsmith embed --db store/`"
    "\n\nText files (.txt .md .markdown .rst .html .htm): one file = one document, id = path relative "
    "to the directory given. Tables (.jsonl .csv .tsv .parquet .arrow .arrows, or stdin) need an id and "
    "a text column; other columns are kept as metadata."
    "\n\nNightly: `arrowsmith chunk docs/ --db store/ | arrowsmith embed --db store/ --prune` chunks only "
    "the documents that are new or changed; the others pass as rows marked `unchanged` (no text), "
    "which embed skips and --prune keeps."
)


@app.command("chunk", rich_help_panel="Build", epilog=EPILOG)
def chunk_command(
    ctx: typer.Context,
    inputs: Inputs = None,
    strategy: Annotated[StrategyName, typer.Option(
        "--strategy", "-s", envvar="ARROWSMITH_STRATEGY",
        help="tokens: fixed windows (with --overlap); sentences: whole sentences packed up to "
             "--max-tokens; markdown: headings, then paragraphs, then sentences.")] = "sentences",
    max_tokens: MaxTokens = None,
    overlap: Overlap = OVERLAP,
    tokenizer: Annotated[str | None, typer.Option(
        "--tokenizer", envvar="ARROWSMITH_TOKENIZER", show_default=False,
        help="model:NAME (a model's own tokenizer; no weights are loaded) or a tiktoken encoding such as "
             "cl100k_base [default: the default model's, see ARROWSMITH_MODEL].")] = None,
    glob: Annotated[list[str] | None, typer.Option(
        "--glob", "-g", envvar="ARROWSMITH_GLOB", show_default=False,
        help="File pattern(s) to take from directories, repeatable or comma-separated "
             "[default: `*.txt,*.md,*.markdown,*.rst,*.html,*.htm`].")] = None,
    id_col: IdCol = ID_COL,
    text_col: TextCol = TEXT_COL,
    input_format: InputFormat = None,
    explode: Annotated[bool, typer.Option(
        "--explode", envvar="ARROWSMITH_EXPLODE",
        help="One row per chunk (id `DOC#INDEX`, text, start, end, n_tokens) instead of one per document.")
    ] = False,
    on_error: OnError = "fail",
    db: Annotated[str | None, typer.Option(
        "--db", show_default=False,
        help="Store that `embed --db` will write: a document its --table holds unchanged (same "
             "text, metadata and settings: the same doc_key) is not chunked but written as one row "
             "marked `unchanged`, for `embed --db` with the same store. Not read from ARROWSMITH_DB: "
             "the marked rows have no text, so they are only for a store.")] = None,
    table: Table = TABLE,
    output: Output = "-",
    fmt: OutputFormat = None,
) -> None:
    """Split documents into chunks of at most --max-tokens tokens, keeping each whole text and its spans."""
    from arrowsmith.cli.io import BatchSink
    from arrowsmith.cli.progress import track_rows
    from arrowsmith.cli.settings import info
    from arrowsmith.commands.chunk import ChunkStats, chunk_documents, make_chunker, read_sources
    from arrowsmith.commands.errors import UsageError
    from arrowsmith.commands.io import is_tabular, read_many, stream_path

    paths = [p for p in (inputs or ["-"])]
    # a pipe (<(...), /dev/stdin) carries a table as stdin does, whatever its name
    tables = [p for p in paths
              if p == "-" or (input_format and not os.path.isdir(p)) or is_tabular(p) or stream_path(p)]
    if tables and len(tables) < len(paths):
        raise UsageError("give either tables (JSONL/CSV/Parquet/Arrow/stdin) or text files and directories, "
                         "not both in one run")
    _refuse_ignored(ctx, tables=bool(tables), db=db)
    globs = [g.strip() for value in (glob or []) for g in value.split(",") if g.strip()]
    stats = ChunkStats()
    chunker = make_chunker(strategy, tokenizer, max_tokens, overlap)  # bad options fail before reading
    stored = None
    if db is not None:
        from arrowsmith.commands.chunk.stored import stored_keys

        stored = stored_keys(db, table, chunker.describe())
    docs = read_many(paths, input_format) if tables else read_sources(paths, glob=globs, on_error=on_error,
                                                                       stats=stats)
    with BatchSink(output, fmt) as sink:
        # a terminal shows one row per chunk (docs/design.md#schemas: every human format does)
        out = chunk_documents(track_rows(docs, "chunk", "docs"), strategy=strategy,
                              tokenizer=chunker.tokenizer, max_tokens=chunker.max_tokens, overlap=overlap,
                              id_col=id_col, text_col=text_col, on_error=on_error, stats=stats,
                              explode=explode or sink.fmt == "table", stored=stored)
        sink.write_all(out)
    info(stats.summary())


def _refuse_ignored(ctx: typer.Context, *, tables: bool, db: str | None) -> None:
    """Issue 10: an option that these inputs would ignore is refused (exit 2)."""
    from .given import refuse

    if db is None:
        refuse(ctx, ("table",), "without --db")
    if tables:
        refuse(ctx, ("glob",), "with table inputs (it picks files from directories)")
    else:
        refuse(ctx, ("id_col", "text_col", "input_format"),
               "with text files and directories (the id is the path, the text the file's)")
