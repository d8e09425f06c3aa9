"""Evaluation results and their renderings: a terminal table, JSON, Markdown and a PNG plot."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .config import EvalConfig
from .metrics import QueryScores
from .stats import Comparison, bootstrap_ci

PRETTY = {"ndcg": "nDCG", "recall": "R", "mrr": "MRR", "map": "MAP"}


@dataclass
class ConfigResult:
    """One configuration's scores, with what it cost to build and search."""

    config: EvalConfig
    scores: QueryScores
    timing: dict[str, float] = field(default_factory=dict)  # seconds: chunk, embed, store, index, search…
    counts: dict[str, int] = field(default_factory=dict)  # docs, chunks, tokens_embedded, truncated_docs
    bytes_per_vector: float | None = None
    notes: list[str] = field(default_factory=list)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> 95% CI of the mean

    @property
    def label(self) -> str:
        return self.config.label()

    @property
    def means(self) -> dict[str, float]:
        return self.scores.mean()

    def to_dict(self, per_query: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.label,
            "config": self.config.to_dict(),
            "metrics": self.means,
            "ci95": {k: list(v) for k, v in self.ci.items()},
            "timing_s": self.timing,
            "counts": self.counts,
            "bytes_per_vector": self.bytes_per_vector,
            "notes": self.notes,
        }
        if per_query:
            out["per_query"] = self.scores.per_query()
        return out


@dataclass
class EvalReport:
    dataset: str
    split: str
    n_queries: int
    n_docs: int | None
    ks: list[int]
    primary: str  # e.g. "ndcg@10": what comparisons, CIs and plots are about
    results: list[ConfigResult]
    comparisons: list[Comparison] = field(default_factory=list)
    model: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self, per_query: bool = True) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "split": self.split, "n_queries": self.n_queries, "n_docs": self.n_docs,
            "ks": self.ks, "primary_metric": self.primary, "model": self.model, "notes": self.notes,
            "configs": [r.to_dict(per_query) for r in self.results],
            "comparisons": [c.to_dict() for c in self.comparisons],
        }


def add_confidence_intervals(report: EvalReport, n_resamples: int = 10_000, seed: int = 0) -> None:
    """Bootstrap CI of every configuration's mean on the primary metric."""
    for r in report.results:
        r.ci[report.primary] = bootstrap_ci(r.scores.values[report.primary], n_resamples=n_resamples,
                                            seed=seed)


# ---------------------------------------------------------------- text


def pretty(metric: str) -> str:
    name, k = metric.split("@")
    return f"{PRETTY.get(name, name)}@{k}"


def table_metrics(report: EvalReport) -> list[str]:
    """nDCG at every cut-off, then recall at the deepest, MRR and MAP at the primary cut-off."""
    k_primary = report.primary.split("@")[1]
    k_max = max(report.ks)
    cols = [f"ndcg@{k}" for k in report.ks]
    extra = [f"recall@{k_max}", f"mrr@{k_primary}", f"map@{k_primary}"]
    available = report.results[0].scores.values if report.results else {}
    return [c for c in cols + extra if c in available]


def _seconds(r: ConfigResult) -> float:
    return r.timing.get("total", sum(v for k, v in r.timing.items() if k != "total"))


def _rows(report: EvalReport) -> tuple[list[str], list[list[str]]]:
    metrics = table_metrics(report)
    header = ["config", *map(pretty, metrics), f"95% CI {pretty(report.primary)}", "chunks", "tokens",
              "time"]
    rows = []
    for r in report.results:
        means = r.means
        ci = r.ci.get(report.primary)
        rows.append([
            r.label, *(f"{means[m]:.4f}" for m in metrics),
            f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "",
            _int(r.counts.get("chunks")), _int(r.counts.get("tokens_embedded")), f"{_seconds(r):.1f}s",
        ])
    return header, rows


def _int(v: int | None) -> str:
    return "" if v is None else f"{v:,}"


def _comparison_rows(report: EvalReport) -> tuple[list[str], list[list[str]]]:
    header = ["candidate", "baseline", f"Δ {pretty(report.primary)}", "95% CI", "p", "wins/ties/losses"]
    rows = [[c.candidate, c.baseline, f"{c.diff:+.4f}", f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]",
             _p(c.p_value), f"{c.wins}/{c.ties}/{c.losses}"] for c in report.comparisons]
    return header, rows


def _p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _title(report: EvalReport) -> str:
    docs = f", {report.n_docs:,} docs" if report.n_docs else ""
    model = f" · {report.model.get('name')}" if report.model and report.model.get("name") else ""
    return f"{report.dataset} ({report.split}, {report.n_queries:,} queries{docs}){model}"


def render_text(report: EvalReport) -> str:
    """Aligned columns for a terminal."""
    out = [_title(report), ""]
    out += _aligned(*_rows(report))
    if report.comparisons:
        c = report.comparisons[0]
        out += ["", f"paired {c.method} ({c.n_resamples:,} resamples, {c.n_queries} queries):"]
        out += _aligned(*_comparison_rows(report))
    out += _notes(report)
    return "\n".join(out) + "\n"


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                              strict=True)))
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _notes(report: EvalReport) -> list[str]:
    notes = list(report.notes)
    for r in report.results:
        notes += [f"{r.label}: {n}" for n in r.notes]
    return (["", *(f"note: {n}" for n in notes)]) if notes else []


def render_markdown(report: EvalReport) -> str:
    out = [f"### {_title(report)}", ""]
    out += _md_table(*_rows(report))
    if report.comparisons:
        c = report.comparisons[0]
        out += ["", f"Paired {c.method} test over {c.n_queries} queries ({c.n_resamples:,} resamples, "
                    f"two-sided; Δ = candidate − baseline):", ""]
        out += _md_table(*_comparison_rows(report))
    timing = _timing_rows(report)
    if timing:
        out += ["", "Time per configuration (seconds):", ""]
        out += _md_table(*timing)
    notes = _notes(report)
    if notes:
        out += ["", *(f"- {n.removeprefix('note: ')}" for n in notes if n)]
    return "\n".join(out) + "\n"


def _timing_rows(report: EvalReport) -> tuple[list[str], list[list[str]]] | None:
    keys: list[str] = []
    for r in report.results:
        keys += [k for k in r.timing if k not in keys]
    if not keys:
        return None
    return ["config", *keys], [[r.label, *(f"{r.timing[k]:.2f}" if k in r.timing else "" for k in keys)]
                               for r in report.results]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    sep = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"
    return [line(header), sep, *(line(r) for r in rows)]


def render_json(report: EvalReport, per_query: bool = True) -> str:
    return json.dumps(report.to_dict(per_query), indent=2, default=_jsonable, allow_nan=False) + "\n"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# ---------------------------------------------------------------- plot


def plot(report: EvalReport, path: str, kind: str = "auto") -> str:
    """Save a PNG: ``bars`` (primary metric per configuration with 95% CIs) or ``bytes``
    (primary metric against bytes per vector, for compression settings). Returns the kind drawn."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        from arrowsmith.commands.errors import UsageError

        raise UsageError("--plot needs matplotlib", hint="pip install 'arrowsmith[plot]'") from None
    matplotlib.use("Agg")  # files only: never open a window, works without a display
    import matplotlib.pyplot as plt

    sizes = {r.bytes_per_vector for r in report.results if r.bytes_per_vector}
    if kind == "auto":
        kind = "bytes" if len(sizes) > 1 else "bars"
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.9 * len(report.results)), 4.0), dpi=120)
    try:
        if kind == "bytes":
            _plot_bytes(ax, report)
        else:
            _plot_bars(ax, report)
        ax.set_title(_title(report), fontsize=9)
        fig.tight_layout()
        from arrowsmith.commands.io import atomic_file

        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return kind


def _errors(report: EvalReport) -> tuple[list[float], list[list[float]]]:
    means = [r.means[report.primary] for r in report.results]
    low, high = [], []
    for r, m in zip(report.results, means, strict=True):
        ci = r.ci.get(report.primary, (m, m))
        low.append(max(0.0, m - ci[0]))
        high.append(max(0.0, ci[1] - m))
    return means, [low, high]


def _plot_bars(ax: Any, report: EvalReport) -> None:
    means, err = _errors(report)
    x = range(len(means))
    ax.bar(x, means, yerr=err, capsize=4, color="#4c72b0")
    ax.set_xticks(list(x), [r.label for r in report.results], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{pretty(report.primary)} (95% CI)")
    top = max((m + e for m, e in zip(means, err[1], strict=True)), default=1.0)
    ax.set_ylim(0, min(1.0, top * 1.15) if top > 0 else 1.0)


def _plot_bytes(ax: Any, report: EvalReport) -> None:
    means, err = _errors(report)
    xs = [r.bytes_per_vector or math.nan for r in report.results]
    ax.errorbar(xs, means, yerr=err, fmt="o", capsize=4)
    for x, y, r in zip(xs, means, report.results, strict=True):
        ax.annotate(r.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per vector")
    ax.set_ylabel(f"{pretty(report.primary)} (95% CI)")
