"""`arrowsmith eval`: retrieval quality of one or several configurations on a BEIR dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import (
    ALPHA,
    BY,
    DEVICE,
    DTYPE,
    FUSION,
    OVERLAP,
    RRF_K,
    TABLE,
    Alpha,
    AsJson,
    By,
    ChunkerName,
    Db,
    Device,
    Dtype,
    Exact,
    Fusion,
    Late,
    MaxTokens,
    Mode,
    Model,
    Overlap,
    PlotKindName,
    RrfK,
    Table,
    TestName,
)

app = typer.Typer()

EPILOG = (
    "Example: arrowsmith eval ../shared/data/cranfield --compare naive --compare late "
    "--markdown --plot ndcg.png"
)


@app.command("eval", rich_help_panel="Use", epilog=EPILOG)
def evaluate_command(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Argument(
        help="BEIR dataset directory (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv).",
        show_default=False)] = None,
    split: Annotated[str, typer.Option(envvar="ARROWSMITH_EVAL_SPLIT", help="Qrels split.")] = "test",
    k: Annotated[str, typer.Option("--k", envvar="ARROWSMITH_EVAL_K", help="Cut-offs.")] = "1,3,5,10,100",
    metric: Annotated[str, typer.Option(help="Metric compared, plotted and CI'd.")] = "ndcg@10",
    qrels: Annotated[str | None, typer.Option(help="Qrels file (BEIR tsv or TREC) instead of the split's.",
                                              show_default=False)] = None,
    queries: Annotated[str | None, typer.Option(help="queries.jsonl instead of the dataset's.",
                                                show_default=False)] = None,
    run: Annotated[list[str] | None, typer.Option(
        "--run", help="Score this TREC run file instead of searching (repeat to compare).",
        show_default=False)] = None,
    db: Db = None,
    table: Table = TABLE,
    model: Model = None,
    chunker: Annotated[ChunkerName, typer.Option(
        envvar="ARROWSMITH_CHUNKER",
        help="Chunk strategy, or 'none': one chunk per document truncated at the model's window (MTEB).")
    ] = "sentences",
    max_tokens: MaxTokens = None,
    overlap: Overlap = OVERLAP,
    late: Late = False,
    mode: Mode = "vector",  # not query's auto: eval's default is MTEB's protocol, dense exact search
    fusion: Fusion = FUSION,
    rrf_k: RrfK = RRF_K,
    alpha: Alpha = ALPHA,
    by: By = BY,
    exact: Exact = True,
    compare: Annotated[list[str] | None, typer.Option(
        "--compare", "-c", help="A configuration spec, e.g. 'late' or 'naive,chunk=sentences,max_tokens=128' "
        "or 'mode=hybrid,fusion=mix,alpha=0.5' (repeat to compare).", show_default=False)] = None,
    configs: Annotated[str | None, typer.Option(help="TOML/JSON file of configurations.",
                                                show_default=False)] = None,
    baseline: Annotated[str | None, typer.Option(help="Configuration the others are compared with "
                                                 "[default: the first].", show_default=False)] = None,
    test: Annotated[TestName, typer.Option(help="The p-value's test.")] = "bootstrap",
    resamples: Annotated[int, typer.Option(help="Bootstrap/permutation resamples.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed of the resampling.")] = 0,
    no_title: Annotated[bool, typer.Option("--no-title", help="Embed text only, not title + ' ' + text.")
                        ] = False,
    as_json: AsJson = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown report.")] = False,
    plot: Annotated[str | None, typer.Option(help="Also draw a PNG here.", show_default=False)] = None,
    plot_kind: Annotated[PlotKindName, typer.Option(help=(
        "bars: the metric per configuration; bytes: the metric against bytes/vector; auto: bytes when "
        "the configurations differ in size, else bars."))] = "auto",
    device: Device = DEVICE,
    dtype: Dtype = DTYPE,
    workdir: Annotated[str | None, typer.Option(help="Keep the built stores here (default: a temp dir).",
                                                show_default=False)] = None,
    save_runs: Annotated[str | None, typer.Option(help="Write each configuration's TREC run here.",
                                                  show_default=False)] = None,
    ignore_identical_ids: Annotated[bool, typer.Option(
        "--ignore-identical-ids", help="Drop each query's hit on the document of its own id before "
        "scoring, as BEIR does and MTEB for ArguAna and Quora (their queries are corpus documents).")
    ] = False,
) -> None:
    """Score retrieval (nDCG, recall, MRR, MAP at each --k) and compare configurations with paired CIs.

    Builds each configuration in a temporary store with the same chunk/embed/index code as the
    other commands (or evaluates --db as it is), searches with query's code, and reports a table
    (or --json / --markdown, and --plot). With --by chunk, a document scores as its best chunk hit.
    """
    import sys

    from arrowsmith.commands.evaluate import cli_support as cs

    from .settings import info

    cs.check_output(as_json=as_json, markdown=markdown, plot_kind=plot_kind)
    _refuse_unused(ctx, run=bool(run), qrels=qrels, plot=plot)
    options = cs.run_options(k, metric, device, dtype, test, resamples, seed, baseline, workdir, save_runs,
                             ignore_identical_ids)
    if run:
        _refuse_with_configurations(ctx, n=len(run))
        report = cs.score_runs(dataset, split, qrels, run, options)
    else:
        base = cs.base_config(model=model, chunker=chunker, max_tokens=max_tokens, overlap=overlap, late=late,
                              mode=mode, fusion=fusion, rrf_k=rrf_k, alpha=alpha, by=by, exact=exact, db=db,
                              table=table)
        configurations = cs.configurations(base, compare, configs)
        _refuse_with_configurations(ctx, n=len(configurations), configurations=configurations)
        data = cs.load_dataset(dataset, split, qrels, queries, title_join=not no_title)
        report = cs.evaluate(data, configurations, options, progress=info)
    sys.stdout.write(cs.render(report, as_json=as_json, markdown=markdown))
    sys.stdout.flush()
    if plot:
        info(f"eval: wrote {plot} ({cs.plot(report, plot, plot_kind)})")


BUILD = ("model", "chunker", "max_tokens", "overlap", "late", "no_title", "workdir")
SEARCH = (*BUILD, "mode", "fusion", "rrf_k", "alpha", "by", "exact", "compare", "configs", "db", "table",
          "queries", "device", "dtype", "save_runs")


def _refuse_unused(ctx: typer.Context, *, run: bool, qrels: str | None, plot: str | None) -> None:
    """Issue 10: an option given on the command line either acts or is refused (exit 2)."""
    from .given import refuse

    if run:
        refuse(ctx, SEARCH, "with --run (the run files are scored as they are)")
    if qrels:
        refuse(ctx, ("split",), "with --qrels (the file names the judgements)")
    if not plot:
        refuse(ctx, ("plot_kind",), "without --plot")


def _refuse_with_configurations(ctx: typer.Context, *, n: int, configurations=()) -> None:
    from arrowsmith.commands.evaluate.config import HYBRID_MODES

    from .given import refuse

    if n < 2:
        refuse(ctx, ("test", "baseline"), "with one configuration (nothing is compared)")
    if not configurations:
        return
    if all(c.db for c in configurations):
        refuse(ctx, BUILD, "with --db (the store is searched as it is)")
    hybrid = [c for c in configurations if c.mode in HYBRID_MODES]
    if not hybrid:
        refuse(ctx, ("fusion", "rrf_k", "alpha"), "without a hybrid configuration (--mode hybrid or auto)")
    if not any(c.fusion == "mix" for c in hybrid):
        refuse(ctx, ("alpha",), "without fusion=mix (it weighs the mix)")
    if not any(c.fusion == "rrf" for c in hybrid):
        refuse(ctx, ("rrf_k",), "without fusion=rrf (it is the RRF constant)")
    if all(c.mode == "fts" for c in configurations):
        refuse(ctx, ("exact",), "with mode fts only (no vector search)")
        if all(c.db for c in configurations):
            refuse(ctx, ("device", "dtype"), "with mode fts on an existing store (no model is loaded)")
