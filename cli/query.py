"""`arrowsmith query`: search a store from the shell (vector, full-text or hybrid)."""

from __future__ import annotations

import sys
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
hybrid mix = alpha·z(dense) + (1−alpha)·z(bm25)."""


@app.command("query", rich_help_panel="Use", epilog=EPILOG)
def query_command(
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
        help="IVF partitions to probe [default: a tenth of them (≥ 20) for IVF_PQ, else LanceDB's].",
        show_default=False)] = None,
    refine_factor: Annotated[int | None, typer.Option(
        envvar="ARROWSMITH_REFINE_FACTOR",
        help="Re-rank refine_factor·k candidates on full vectors [default: 10 for IVF_PQ].",
        show_default=False)] = None,
    ef: Annotated[int | None, typer.Option(
        envvar="ARROWSMITH_EF", help="HNSW search breadth [default: 500 for IVF_HNSW_* indexes].",
        show_default=False)] = None,
    exact: Exact = EXACT,
    compressed: Annotated[bool, typer.Option(
        "--compressed/--no-compressed", help="Use the table's compressed index when there is one.")] = True,
    output: Output = "-",
    fmt: OutputFormat = None,
) -> None:
    """Search a store: top k chunks (or documents) per query, with scores."""
    from arrowsmith.commands.errors import UsageError
    from arrowsmith.commands.query import QueryStats, search

    from .io import BatchSink
    from .settings import info

    items = [(f"q{i}", q) for i, q in enumerate(queries or [], start=1)]
    if file:
        items += _read_queries(file, start=len(items) + 1)
    if not items:
        raise UsageError("no queries: give them as arguments or with --file (one per line, or - for stdin)")
    stats = QueryStats()
    result = search(db, items, table=table, mode=mode, k=k, fusion=fusion, rrf_k=rrf_k, alpha=alpha,
                    where=where, by=by, nprobes=nprobes, refine_factor=refine_factor, ef=ef, exact=exact,
                    use_compressed=compressed, stats=stats)
    with BatchSink(output, fmt) as sink:
        sink.write_all(result.to_batches(max_chunksize=1024), result.schema)
    info(stats.summary())


def _read_queries(source: str, start: int = 1) -> list[tuple[str, str]]:
    """(id, text) pairs from a tabular file (id optional) or plain text, one query per line."""
    from arrowsmith.commands.errors import UsageError
    from arrowsmith.commands.io import format_of, read_batches, read_bytes, sniff

    if source == "-":
        if sys.stdin.isatty():
            raise UsageError("--file -: stdin is a terminal; pipe queries in")
        data = sys.stdin.buffer.read()  # queries are small: read them whole, then sniff
        delimited = _delimited_header(data)
        if delimited:
            return _from_batches(read_bytes(data, delimited), "<stdin>", start)
        fmt = sniff(data[:256])
        if fmt is None:
            return _lines(data, start)
        return _from_batches(read_bytes(data, fmt), "<stdin>", start)
    elif format_of(source) is None:  # .txt, .queries, no extension: one query per line
        try:
            with open(source, "rb") as f:
                return _lines(f.read(), start)
        except FileNotFoundError:
            raise UsageError(f"{source}: no such file") from None
    return _from_batches(read_batches(source), source, start)


def _delimited_header(data: bytes) -> str | None:
    """"csv" or "tsv" when the first line is a header naming a ``text`` column, else None."""
    first = data.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").strip()
    for delimiter, fmt in (("\t", "tsv"), (",", "csv")):
        columns = [c.strip().strip('"') for c in first.split(delimiter)]
        if len(columns) > 1 and "text" in columns:
            return fmt
    return None


def _lines(data: bytes, start: int) -> list[tuple[str, str]]:
    texts = [line.strip() for line in data.decode("utf-8-sig").splitlines()]
    return [(f"q{start + i}", t) for i, t in enumerate(t for t in texts if t)]


def _from_batches(batches, source: str, start: int) -> list[tuple[str, str]]:
    from arrowsmith.commands.errors import DataError

    out: list[tuple[str, str]] = []
    for batch in batches:
        if "text" not in batch.schema.names:
            has = ", ".join(batch.schema.names)
            raise DataError(f"{source}: queries need a 'text' column (it has: {has})")
        texts = batch.column("text").to_pylist()
        ids = batch.column("id").to_pylist() if "id" in batch.schema.names else [None] * len(texts)
        for qid, text in zip(ids, texts, strict=True):
            out.append((str(qid) if qid is not None else f"q{start + len(out)}", text or ""))
    return out
