"""`arrowsmith compress`: write a compressed representation into the store, or compare methods."""

from __future__ import annotations

from typing import Annotated

import typer

from .embed import TokenPrecision
from .options import TABLE, Output, OutputFormatName, RequiredDb, RescoreWithName, Table, Wait

app = typer.Typer()

# issue 20: a report is for people, like eval's: text wherever stdout goes (`compress --report | tail`
# printed binary Arrow into the pipe); data only when asked for, by -f or by -o FILE's extension
ReportFormat = Annotated[
    OutputFormatName | None,
    typer.Option("--format", "-f", envvar="ARROWSMITH_FORMAT",
                 help="Report format [default: a text table, on a terminal or in a pipe; with -o, the file's "
                      "extension, else text]; arrows|jsonl|csv|… for data.", show_default=False),
]


@app.command("compress", rich_help_panel="Use", epilog=(
    "Examples:  arrowsmith compress --db store/ --report --qrels qrels/test.tsv --queries queries.jsonl\n\n"
    "           arrowsmith compress --db store/ --method binary --rescore 100\n\n"
    "           arrowsmith compress --db store/ --tokens binary"))
def compress_command(
    ctx: typer.Context,
    db: RequiredDb = ...,
    table: Table = TABLE,
    method: Annotated[str | None, typer.Option(
        "--method", envvar="ARROWSMITH_COMPRESS_METHOD",
        help="float16|int8|binary|pq[:BYTES]|truncate:N, combined with '+' (truncate:256+binary); "
             "written into the store as <table>__compressed.", show_default=False)] = None,
    tokens: Annotated[TokenPrecision | None, typer.Option(
        "--tokens", envvar="ARROWSMITH_COMPRESS_TOKENS",
        help="Re-encode the token vectors (embed --multivector) at a smaller precision, in place "
             "(one commit; indexes rebuilt). --method leaves them as they are.",
        show_default=False)] = None,
    rescore: Annotated[int | None, typer.Option(
        envvar="ARROWSMITH_RESCORE", help="Re-rank this many first-stage candidates with finer vectors.",
        show_default=False)] = None,
    rescore_with: Annotated[RescoreWithName | None, typer.Option(
        help="int8: codes stored beside; float: the stored vectors [default: int8].",
        show_default=False)] = None,
    pq_bytes: Annotated[int | None, typer.Option(
        "--bytes", help="pq: bytes per vector (must divide the dimension) [default: dim/4].",
        show_default=False)] = None,
    report: Annotated[bool, typer.Option("--report", help="Compare methods; the store is not changed.")
                      ] = False,
    methods: Annotated[str | None, typer.Option(
        help="--report: comma-separated methods [default: a spread of all of them].",
        show_default=False)] = None,
    queries: Annotated[str | None, typer.Option(
        help="--report: queries file, as query --file reads it (id or BEIR _id, text; one per line; "
        "- = stdin) [default: sample corpus chunks].",
        show_default=False)] = None,
    sample: Annotated[int, typer.Option(help="--report: corpus chunks to use as queries.")] = 200,
    qrels: Annotated[str | None, typer.Option(
        help="--report: relevance judgements (BEIR tsv or TREC) for nDCG.", show_default=False)] = None,
    k: Annotated[int, typer.Option("--k", help="--report: cut-off for recall and nDCG.")] = 10,
    budget: Annotated[str | None, typer.Option(
        help="--report: first-stage memory budget (e.g. 64MB): pick the best method that fits.",
        show_default=False)] = None,
    plot: Annotated[str | None, typer.Option(help="--report: draw quality vs bytes/vector to this PNG.",
                                             show_default=False)] = None,
    drop: Annotated[bool, typer.Option("--drop", help="Remove the table's compressed representation.")
                    ] = False,
    output: Output = "-",
    fmt: ReportFormat = None,
    wait: Wait = False,
) -> None:
    """Store vectors smaller (float16, int8, binary + rescoring, PQ, truncation), or measure the price.

    `query` uses the compressed form automatically where the table has no ANN index (`query
    --compressed` always, `--no-compressed` never); a table changed since compression is never
    served stale: `query` warns and searches the floats.
    Token vectors are compressed only with --tokens; --report compares their precisions too.
    """
    from arrowsmith.commands import compress as cz
    from arrowsmith.commands.errors import UsageError

    from .settings import info

    if sum(bool(x) for x in (method, tokens, report, drop)) != 1:
        raise UsageError("give exactly one of --method, --tokens, --report or --drop",
                         hint="arrowsmith compress --db STORE --report")
    _refuse_ignored(ctx, method=bool(method), tokens=bool(tokens), drop=drop, queries=queries)
    if tokens:
        from arrowsmith.commands.compress.tokens import convert_tokens

        info(convert_tokens(db, table, tokens, wait=wait).summary())
        return
    if drop:
        info(f"dropped {cz.companion_name(table)}" if cz.drop_compressed(db, table, wait=wait)
             else f"{table!r} has no compressed representation")
        return
    if method:
        from arrowsmith.commands.isolated import hold_memory

        hold_memory()  # before LanceDB's threads make arenas and its first scan reads the budget
        stats = cz.compress_table(db, table, method, rescore=rescore, rescore_with=rescore_with,
                                  pq_bytes=pq_bytes, wait=wait)
        info(stats.summary())
        return
    _report(db, table, methods, queries, sample, qrels, k, budget, plot, output, fmt,
            rescore=rescore, rescore_with=rescore_with, pq_bytes=pq_bytes)


REPORT_ONLY = ("methods", "queries", "sample", "qrels", "k", "budget", "plot", "output", "fmt")


def _refuse_ignored(ctx: typer.Context, *, method: bool, tokens: bool, drop: bool, queries: str | None
                    ) -> None:
    """Issue 10: every option either acts in the chosen mode or is refused (exit 2)."""
    from .given import refuse

    if tokens:
        refuse(ctx, REPORT_ONLY, "with --tokens (they are --report's)")
        refuse(ctx, ("rescore", "rescore_with", "pq_bytes"),
               "with --tokens (they shape --method's dense codes)")
    elif drop:
        refuse(ctx, (*REPORT_ONLY, "rescore", "rescore_with", "pq_bytes"), "with --drop")
    elif method:
        refuse(ctx, REPORT_ONLY, "with --method (they are --report's)")
    else:
        refuse(ctx, ("wait",), "with --report (it only reads the store, without the lock)")
        if queries:
            refuse(ctx, ("sample",), "with --queries (the queries are given, not sampled)")


def _report(db, table, methods, queries, sample, qrels, k, budget, plot, output, fmt, **options) -> None:
    from arrowsmith.commands.compress.report import compress_report, plot_report
    from arrowsmith.commands.io import format_of
    from arrowsmith.commands.units import parse_size

    from .io import BatchSink
    from .settings import info

    wanted = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    q, judged = _read_queries(queries, qrels)
    result = compress_report(db, table, methods=wanted, queries=q, sample=sample, qrels=judged, k=k,
                             budget=parse_size(budget, "--budget") if budget else None, **options)
    with BatchSink(output, fmt or format_of(output) or "table") as sink:
        for batch in result.to_arrow().to_batches():
            sink.write(batch)
    sampled = "corpus-sampled " if result.query_source == "sample" else ""
    info(f"{result.rows} vectors, dim {result.dim}, {result.queries} {sampled}queries, "
         f"recall@{k} against exact float")
    if result.tokens:
        info(f"token vectors ({result.tokens[0].precision} stored): a row per precision they can be "
             f"re-encoded to (compress --tokens); bytes_per_vector is bytes a chunk, recall@{k} is "
             "MaxSim's against the stored tokens decoded to float32")
    if budget:
        info(f"budget {budget}: {result.reason}")
    if plot:
        plot_report(result, plot)
        info(f"plot: {plot}")


def _read_queries(queries: str | None, qrels: str | None):
    from arrowsmith.commands.errors import UsageError
    from arrowsmith.commands.evaluate.data import read_qrels
    from arrowsmith.commands.query import read_queries_file

    judged = read_qrels(qrels) if qrels else None
    if judged is not None and not queries:
        raise UsageError("--qrels needs --queries (the judged queries' texts)")
    q = dict(read_queries_file(queries)) if queries else None
    if q is not None and judged is not None:
        q = {qid: text for qid, text in q.items() if qid in judged}
    return q, judged
