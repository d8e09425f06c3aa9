"""Glue between ``arrowsmith eval``'s options and the library (keeps the Typer command thin).

Nothing here writes to stdout: :func:`render` returns the text, and the CLI prints it.
"""

from __future__ import annotations

from pathlib import Path

from arrowsmith.commands.errors import UsageError

from .config import EvalConfig, config_from_spec, load_config_file, make_config
from .data import Dataset, load_beir, read_qrels, read_run
from .metrics import METRICS
from .report import EvalReport, render_json, render_markdown, render_text
from .report import plot as draw_plot
from .runner import RunOptions, evaluate, run_files_report

__all__ = ["base_config", "check_output", "configurations", "evaluate", "load_dataset", "parse_ks", "plot",
           "render", "run_options", "score_runs"]


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise UsageError(f"--k {text!r}: expected comma-separated integers, e.g. 1,3,5,10,100") from None
    if not ks or ks[0] < 1:
        raise UsageError(f"--k {text!r}: cut-offs must be positive")
    return ks


def run_options(k: str, metric: str, device: str, dtype: str, test: str, resamples: int, seed: int,
                baseline: str | None, workdir: str | None, save_runs: str | None,
                ignore_identical_ids: bool = False) -> RunOptions:
    ks = parse_ks(k)
    metric = metric.lower()
    name, _, cut = metric.partition("@")
    if name not in METRICS or not cut.isdigit() or int(cut) not in ks:
        raise UsageError(f"--metric {metric!r}: expected one of {', '.join(METRICS)} at a cut-off in --k "
                         f"({','.join(map(str, ks))}), e.g. ndcg@10")
    if test not in ("bootstrap", "permutation"):
        raise UsageError(f"--test {test!r}: bootstrap or permutation")
    if resamples < 100:
        raise UsageError("--resamples: at least 100")
    return RunOptions(ks=ks, primary=metric, device=device, dtype=dtype, method=test, n_resamples=resamples,
                      seed=seed, baseline=baseline, workdir=workdir, save_runs=save_runs,
                      ignore_identical_ids=ignore_identical_ids)


def base_config(**values) -> EvalConfig:
    """The command's own options as a configuration (``--compare`` specs start from it)."""
    values = {k: v for k, v in values.items() if v is not None}
    return make_config(values, where="options", explicit=False)  # the command checks its own options


def configurations(base: EvalConfig, compare: list[str] | None, configs_file: str | None) -> list[EvalConfig]:
    out: list[EvalConfig] = []
    if configs_file:
        out += load_config_file(configs_file, base)
    out += [config_from_spec(spec, base) for spec in compare or []]
    return out or [base]


def load_dataset(dataset: str | None, split: str, qrels: str | None, queries: str | None,
                 title_join: bool = True) -> Dataset:
    if dataset is None and (qrels is None or queries is None):
        raise UsageError("give a BEIR dataset directory, or --qrels and --queries (with --db)",
                         hint="arrowsmith eval ../shared/data/cranfield")
    return load_beir(dataset or Path(qrels).parent, split, title_join=title_join, qrels_path=qrels,
                     queries_path=queries)


def score_runs(dataset: str | None, split: str, qrels: str | None, runs: list[str],
               options: RunOptions) -> EvalReport:
    """``--run`` files scored against ``--qrels`` (or the dataset's split)."""
    if qrels is None:
        if dataset is None:
            raise UsageError("--run needs --qrels FILE or a dataset directory")
        qrels = str(Path(dataset) / "qrels" / f"{split}.tsv")
    judged = read_qrels(qrels)
    named = {}
    for path in runs:
        name = Path(path).stem
        while name in named:
            name += "'"
        named[name] = read_run(path)
    label = Path(dataset).name if dataset else Path(qrels).stem
    return run_files_report(label, split, judged, named, options)


def check_output(*, as_json: bool, markdown: bool, plot_kind: str) -> None:
    """Refuse a bad output choice before any work (not after the evaluation)."""
    if as_json and markdown:
        raise UsageError("--json and --markdown are exclusive (stdout carries one format)")
    if plot_kind not in ("auto", "bars", "bytes"):
        raise UsageError(f"--plot-kind {plot_kind!r}: auto, bars or bytes")


def render(report: EvalReport, *, as_json: bool = False, markdown: bool = False) -> str:
    """The report as the text the CLI prints: a table, JSON (with per-query scores) or Markdown."""
    check_output(as_json=as_json, markdown=markdown, plot_kind="auto")
    return render_json(report) if as_json else render_markdown(report) if markdown else render_text(report)


def plot(report: EvalReport, path: str, kind: str = "auto") -> str:
    """Draw the report's PNG to ``path``; returns the kind drawn (bars or bytes)."""
    check_output(as_json=False, markdown=False, plot_kind=kind)
    return draw_plot(report, path, kind)
