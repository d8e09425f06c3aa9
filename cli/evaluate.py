"""`arrowsmith eval`: retrieval quality of one or several configurations on a BEIR dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import Db, Device, Model, Table

app = typer.Typer()

EPILOG = (
    "Example: arrowsmith eval ../shared/data/cranfield --compare naive --compare late "
    "--markdown --plot ndcg.png"
)


@app.command("eval", rich_help_panel="Use", epilog=EPILOG)
def evaluate_command(
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
    table: Table = "chunks",
    model: Model = None,
    chunker: Annotated[str, typer.Option(
        envvar="ARROWSMITH_CHUNKER",
        help="Chunk strategy, or 'none': one chunk per document truncated at the model's window (MTEB).")
    ] = "sentences",
    max_tokens: Annotated[int | None, typer.Option(help="Chunk size [default: the chunker's].",
                                                   show_default=False)] = None,
    overlap: Annotated[int, typer.Option(help="Chunk overlap in tokens.")] = 0,
    late: Annotated[bool, typer.Option("--late/--naive", help="Late or naive chunking.")] = False,
    mode: Annotated[str, typer.Option(help="vector|fts|hybrid.")] = "vector",
    fusion: Annotated[str, typer.Option(help="Hybrid fusion: rrf|mix.")] = "rrf",
    rrf_k: Annotated[int, typer.Option(help="RRF constant.")] = 60,
    alpha: Annotated[float, typer.Option(help="mix: weight of the vector score.")] = 0.5,
    by: Annotated[str, typer.Option(help="chunk: aggregate chunk hits here (max); doc: query's --by doc.")
                  ] = "chunk",
    exact: Annotated[bool, typer.Option("--exact/--ann", help="Exact search (MTEB) or the ANN index.")
                     ] = True,
    compare: Annotated[list[str] | None, typer.Option(
        "--compare", "-c", help="A configuration spec, e.g. 'late' or 'naive,chunk=sentences,max_tokens=128' "
        "or 'mode=hybrid,fusion=mix,alpha=0.5' (repeat to compare).", show_default=False)] = None,
    configs: Annotated[str | None, typer.Option(help="TOML/JSON file of configurations.",
                                                show_default=False)] = None,
    baseline: Annotated[str | None, typer.Option(help="Configuration the others are compared with "
                                                 "[default: the first].", show_default=False)] = None,
    test: Annotated[str, typer.Option(help="bootstrap|permutation (the p-value's test).")] = "bootstrap",
    resamples: Annotated[int, typer.Option(help="Bootstrap/permutation resamples.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed of the resampling.")] = 0,
    no_title: Annotated[bool, typer.Option("--no-title", help="Embed text only, not title + ' ' + text.")
                        ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON report (with per-query scores).")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown report.")] = False,
    plot: Annotated[str | None, typer.Option(help="Also draw a PNG here.", show_default=False)] = None,
    plot_kind: Annotated[str, typer.Option(help="auto|bars|bytes (quality vs bytes/vector).")] = "auto",
    device: Device = "auto",
    dtype: Annotated[str, typer.Option(envvar="ARROWSMITH_DTYPE", help="auto|fp32|bf16|fp16.")] = "auto",
    workdir: Annotated[str | None, typer.Option(help="Keep the built stores here (default: a temp dir).",
                                                show_default=False)] = None,
    save_runs: Annotated[str | None, typer.Option(help="Write each configuration's TREC run here.",
                                                  show_default=False)] = None,
) -> None:
    """Score retrieval (nDCG, recall, MRR, MAP at each --k) and compare configurations with paired CIs.

    Builds each configuration in a temporary store with the same chunk/embed/index code as the
    other commands (or evaluates --db as it is), searches with query's code, and reports a table
    (or --json / --markdown, and --plot).
    """
    from arrowsmith.commands.evaluate import cli_support as cs

    from .settings import info

    options = cs.run_options(k, metric, device, dtype, test, resamples, seed, baseline, workdir, save_runs)
    base = cs.base_config(model=model, chunker=chunker, max_tokens=max_tokens, overlap=overlap, late=late,
                          mode=mode, fusion=fusion, rrf_k=rrf_k, alpha=alpha, by=by, exact=exact, db=db,
                          table=table)
    if run:
        report = cs.score_runs(dataset, split, qrels, run, options)
    else:
        data = cs.load_dataset(dataset, split, qrels, queries, title_join=not no_title)
        report = cs.evaluate(data, cs.configurations(base, compare, configs), options, progress=info)
    cs.emit(report, as_json=as_json, markdown=markdown, plot=plot, plot_kind=plot_kind, info=info)
