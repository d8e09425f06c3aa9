"""`arrowsmith query`: search a store from the shell (vector, full-text or hybrid)."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import (
    ALPHA,
    BY,
    EXACT,
    FUSION,
    MODE,
    RRF_K,
    TABLE,
    Alpha,
    By,
    Exact,
    Fusion,
    Mode,
    Output,
    OutputFormat,
    RequiredDb,
    RrfK,
    Table,
)

app = typer.Typer()

EPILOG = """Example:

    arrowsmith query --db store/ 'why is the sky blue' --k 5 --mode hybrid

Scores: vector = cosine similarity; fts = BM25; hybrid rrf = Σ 1/(rrf_k + rank);
hybrid mix = alpha·z(dense) + (1−alpha)·z(bm25); maxsim (and --rerank maxsim) = mean over
the query's tokens of each one's best cosine among the chunk's tokens, in [-1, 1]."""


@app.command("query", rich_help_panel="Use", epilog=EPILOG)
def query_command(
    ctx: typer.Context,
    queries: Annotated[list[str] | None, typer.Argument(help="Query texts (ids q1..qn).",
                                                        show_default=False)] = None,
    db: RequiredDb = ...,
    table: Table = TABLE,
    file: Annotated[str | None, typer.Option(
        "--file", "-F", help="Queries: one per line, or JSONL/Arrow/Parquet/CSV with id,text; '-' = stdin.",
        show_default=False)] = None,
    k: Annotated[int, typer.Option("--k", "-k", envvar="ARROWSMITH_K", help="Results per query.")] = 10,
    mode: Mode = MODE,
    fusion: Fusion = FUSION,
    rrf_k: RrfK = RRF_K,
    alpha: Alpha = ALPHA,
    where: Annotated[str | None, typer.Option(
        help="SQL filter applied before ranking, e.g. \"doc_id LIKE 'a%'\".", show_default=False)] = None,
    by: By = BY,
    nprobes: Annotated[int | None, typer.Option(
        envvar="ARROWSMITH_NPROBES",
        help="IVF partitions to probe [default: 4·√partitions (≥ 20) for IVF_PQ, else LanceDB's].",
        show_default=False)] = None,
    refine_factor: Annotated[int | None, typer.Option(
        envvar="ARROWSMITH_REFINE_FACTOR",
        help="Re-rank refine_factor·k candidates on full vectors [default: 30 for IVF_PQ].",
        show_default=False)] = None,
    ef: Annotated[int | None, typer.Option(
        envvar="ARROWSMITH_EF", help="HNSW search breadth [default: 500 for IVF_HNSW_* indexes].",
        show_default=False)] = None,
    exact: Exact = EXACT,
    rerank: Annotated[str | None, typer.Option(
        "--rerank", envvar="ARROWSMITH_RERANK", show_default=False,
        help="maxsim[:N]: order the first stage's N candidates (default 100) by MaxSim over their token "
             "vectors (embed --multivector); maxsim-mix[:N]: mix MaxSim's scores with the first stage's "
             "lists (z-scores, equal weights); maxsim-rrf[:N]: fuse by RRF instead "
             "[default with --mode auto on such a table: --mode hybrid, maxsim-mix:100].")] = None,
    compressed: Annotated[bool | None, typer.Option(
        "--compressed/--no-compressed", show_default=False,
        help="Search the table's compressed codes (arrowsmith compress) / never [default: when it has "
             "them and no ANN index: an IVF_PQ index measured better and faster than binary codes].")] = None,
    output: Output = "-",
    fmt: OutputFormat = None,
) -> None:
    """Search a store: top k chunks (or documents) per query, with scores."""
    from arrowsmith.commands.errors import UsageError
    from arrowsmith.commands.query import QueryStats, read_queries_file, search

    from .io import BatchSink
    from .settings import info

    items = [(f"q{i}", q) for i, q in enumerate(queries or [], start=1)]
    if file:
        items += read_queries_file(file, start=len(items) + 1)
    if not items:
        raise UsageError("no queries: give them as arguments or with --file (one per line, or - for stdin)")
    _refuse_ignored(ctx, db, table, mode=mode, fusion=fusion, exact=exact, rerank=rerank)
    stats = QueryStats()
    result = search(db, items, table=table, mode=mode, k=k, fusion=fusion, rrf_k=rrf_k, alpha=alpha,
                    where=where, by=by, nprobes=nprobes, refine_factor=refine_factor, ef=ef, exact=exact,
                    use_compressed=compressed, rerank=rerank, stats=stats)
    with BatchSink(output, fmt) as sink:
        sink.write_all(result.to_batches(max_chunksize=1024), result.schema)
    info(stats.summary())


def _refuse_ignored(ctx: typer.Context, db: str, table: str, *, mode: str, fusion: str, exact: bool,
                    rerank: str | None = None) -> None:
    """Issue 10: a search option that this mode/fusion/--exact would ignore is refused (exit 2)."""
    from .given import given, refuse

    if mode == "auto" and given(ctx, "fusion", "rrf_k", "alpha"):
        from arrowsmith.commands.query import _has_fts, auto_mode
        from arrowsmith.commands.schemas import MODEL, read_meta
        from arrowsmith.commands.spaces import multi
        from arrowsmith.commands.store import open_table

        tbl = open_table(db, table)
        has_fts = _has_fts(tbl)
        mode, auto_rerank = auto_mode(has_fts, multi.present(read_meta(tbl.schema).get(MODEL) or {}))
        rerank = rerank or (auto_rerank and auto_rerank[0])
        if not has_fts:
            refuse(ctx, ("fusion", "rrf_k", "alpha"), "with --mode auto on a table without a full-text "
                   "index (auto is vector search there)", hint=f"arrowsmith index --db {db} --table {table}")
    if rerank and rerank.startswith("maxsim-mix"):
        refuse(ctx, ("fusion", "rrf_k", "alpha"), "with --rerank maxsim-mix (it sums the lists' z-scores, "
               "each list weighing the same)")
    elif rerank and rerank.startswith("maxsim-rrf") and mode != "hybrid":
        # its RRF takes --rrf-k; --fusion and --alpha weigh hybrid's two lists, which it has not
        refuse(ctx, ("fusion", "alpha"), f"with --mode {mode} and --rerank maxsim-rrf (they fuse hybrid's "
               "lists; maxsim-rrf's own fusion is RRF with --rrf-k)")
    elif mode != "hybrid":
        refuse(ctx, ("fusion", "rrf_k", "alpha"), f"with --mode {mode} (they fuse hybrid results)")
    elif fusion == "rrf":
        refuse(ctx, ("alpha",), "with --fusion rrf (it weighs --fusion mix)")
    else:
        refuse(ctx, ("rrf_k",), "with --fusion mix (it is the RRF constant)")
    ann = ("nprobes", "refine_factor", "ef", "compressed")
    if mode == "fts":
        refuse(ctx, (*ann, "exact"), "with --mode fts (no vector search)")
    elif exact:
        refuse(ctx, ann, "with --exact (a flat scan uses no index)")
