"""Before/after: the base and the tuned model scored with ``eval``'s own code.

Each model gets a store built from the evaluation corpus with embed's code (one vector per
document cut at the model's window: eval's ``none`` chunker, MTEB's setting, which is also how
the training positives are seen). Both stores are then searched and scored by
``commands.evaluate`` (exact search, trec_eval metrics, paired bootstrap CI of the difference).
With ``--matryoshka`` the same stores' vectors are truncated to each dim (and re-normalised, as
``embed --dim`` does) and scored again: the tuned model against the base truncated alike.

Training on the queries one evaluates on proves nothing: :func:`check_overlap` refuses (exit 2)
evaluation queries that are training queries, by id (same queries file, or a pairs file's query
ids) or by text (case and spacing ignored), unless allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arrowsmith.commands.errors import UsageError

from .pairs import PairSet

KS = (1, 3, 5, 10, 100)
PRIMARY = "ndcg@10"
QUERY_BLOCK = 64  # queries scored at once against all documents (bounds memory)


@dataclass
class DimResult:
    dim: int
    base: float
    tuned: float
    comparison: Any  # evaluate.stats.Comparison


@dataclass
class BeforeAfter:
    dataset: str
    split: str
    n_queries: int
    n_docs: int
    report: Any  # evaluate.report.EvalReport: base and tuned at full dim
    dim: int = 0  # the models' full dim
    dims: list[DimResult] = field(default_factory=list)
    overlap_note: str | None = None

    @property
    def comparison(self):
        return self.report.comparisons[0]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "n_queries": self.n_queries,
                "n_docs": self.n_docs,
                "metrics": {r.label: r.means for r in self.report.results},
                "comparison": self.comparison.to_dict(),
                "dims": [{"dim": d.dim, "base": d.base, "tuned": d.tuned, **{
                    k: getattr(d.comparison, k) for k in ("diff", "ci_low", "ci_high", "p_value")}}
                    for d in self.dims],
                "overlap": self.overlap_note}


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def check_overlap(pair_set: PairSet, eval_dir: str | Path, split: str, *, allow: bool = False) -> str | None:
    """Refuse evaluation queries that are also training queries; returns a note when allowed."""
    from arrowsmith.commands.evaluate.data import load_beir

    data = load_beir(eval_dir, split)
    eval_queries_file = (Path(eval_dir) / "queries.jsonl").resolve()
    train_ids = {p.query_id for p in pair_set.pairs if p.query_id is not None}
    same_id_space = pair_set.kind == "pairs" or pair_set.queries_file == eval_queries_file
    by_id = sorted(set(data.queries) & train_ids) if same_id_space else []
    train_texts = {_norm(p.query) for p in pair_set.pairs}
    by_text = sorted(q for q, text in data.queries.items() if _norm(text) in train_texts and q not in by_id)
    if not by_id and not by_text:
        return None
    n = len(set(by_id) | set(by_text))
    first = (by_id or by_text)[0]
    what = (f"{n} of the {len(data.queries)} evaluation queries ({eval_dir}, split {split}) are training "
            f"queries ({len(by_id)} by id, {len(by_text)} by text; first: {first!r})")
    if not allow:
        raise UsageError(what + ": their scores would measure memorisation, not the tuning",
                         hint="--eval-split with queries kept out of training, or --allow-overlap")
    return what


def before_after(eval_dir: str | Path, split: str, base: Any, tuned: Any, workdir: Path, *, seed: int = 0,
                  device: str = "auto", dims: tuple[int, ...] = (), n_resamples: int = 10_000,
                 progress=None, multivector: bool = False) -> BeforeAfter:
    """Score ``base`` and ``tuned`` (loaded plugin models) on a BEIR split, with paired CIs.

    ``multivector`` (``tune --multivector``): both stores hold token vectors (float32, so the
    models are compared and not a storage precision), searched by MaxSim over the whole table: the
    base model's own contextual token vectors (zero-shot) against the trained head's."""
    from arrowsmith.commands.evaluate.config import EvalConfig
    from arrowsmith.commands.evaluate.data import load_beir
    from arrowsmith.commands.evaluate.runner import RunOptions, evaluate

    data = load_beir(eval_dir, split)
    if data.corpus_path is None:
        raise UsageError(f"--eval {eval_dir}: no corpus.jsonl to search")
    from arrowsmith.commands.store import open_table, table_exists

    stores = {}
    for label, model in (("base", base), ("tuned", tuned)):
        # one store per model and dataset: a caller passing the same workdir reuses the base model's
        stores[label] = str(workdir / f"eval-{data.name}-{model.revision[:16]}{'-mv' if multivector else ''}")
        if table_exists(stores[label], "chunks"):
            n_docs = open_table(stores[label], "chunks").count_rows()
            continue
        if progress:
            progress(f"tune: embedding {data.name} with the {label} model")
        n_docs = _build_store(data, model, stores[label], multivector)
    configs = [EvalConfig(name=label, db=db, mode="maxsim" if multivector else "vector")
               for label, db in stores.items()]
    options = RunOptions(ks=KS, primary=PRIMARY, device=device, seed=seed, n_resamples=n_resamples)
    report = evaluate(data, configs, options)
    result = BeforeAfter(data.name, split, len(data.qrels), n_docs, report, dim=base.dim)
    for dim in (d for d in dims if d < base.dim):
        result.dims.append(_dim_result(data, stores, {"base": base, "tuned": tuned}, dim, seed, n_resamples))
    return result


def _build_store(data: Any, model: Any, db: str, multivector: bool = False) -> int:
    from arrowsmith.commands.embed import embed_batches, embedding_meta, resolve_params
    from arrowsmith.commands.evaluate.runner import whole_document_chunks
    from arrowsmith.commands.store import StoreWriter

    tokens = {"multivector": True, "token_precision": "float32"} if multivector else {}
    with StoreWriter(db, "chunks", checkpoint_rows=1 << 30) as writer:
        # the table records its token settings (what --mode maxsim reads)
        writer.check_meta(embedding_meta(model, resolve_params(model, **tokens)) if tokens
                          else model.describe())
        chunks = whole_document_chunks(data.corpus_batches(), model)
        stats = writer.write(embed_batches(chunks, model, **tokens))
    return stats.rows_added


def _dim_result(data: Any, stores: dict[str, str], models: dict[str, Any], dim: int, seed: int,
                n_resamples: int) -> DimResult:
    from arrowsmith.commands.evaluate.metrics import evaluate_run
    from arrowsmith.commands.evaluate.stats import paired_test

    scores = {}
    for label, db in stores.items():
        run = truncated_run(db, models[label], data.queries, dim, max(KS))
        scores[label] = evaluate_run(data.qrels, run, KS)
    a, b = scores["base"].values[PRIMARY], scores["tuned"].values[PRIMARY]
    comp = paired_test(a, b, metric=PRIMARY, baseline_name=f"base@{dim}", candidate_name=f"tuned@{dim}",
                       n_resamples=n_resamples, seed=seed)
    return DimResult(dim, float(a.mean()), float(b.mean()), comp)


def truncated_run(db: str, model: Any, queries: dict[str, str], dim: int, depth: int) -> dict:
    """Exact search over a store's vectors cut to ``dim`` and re-normalised (what ``embed --dim`` stores)."""
    from arrowsmith.commands.evaluate.metrics import docs_from_hits, truncate_run
    from arrowsmith.commands.query_vectors import embed_queries
    from arrowsmith.commands.spaces import dense
    from arrowsmith.commands.store import open_table

    data = open_table(db, "chunks").search().select(["doc_id", dense.COLUMN]).limit(None).to_arrow()
    doc_ids = data.column("doc_id").to_pylist()
    vectors = dense.decode(data.column(dense.COLUMN))[:, :dim]
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    qids = list(queries)
    qv = embed_queries([queries[q] for q in qids], model, dim=dim)
    k = min(depth * 4, len(doc_ids))
    hit_q, hit_d, hit_s = [], [], []
    for start in range(0, len(qids), QUERY_BLOCK):
        sims = qv[start:start + QUERY_BLOCK] @ vectors.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(doc_ids) else np.tile(
            np.arange(len(doc_ids)), (len(sims), 1))
        for row, idx in enumerate(top):
            for j in idx:
                hit_q.append(qids[start + row])
                hit_d.append(doc_ids[j])
                hit_s.append(float(sims[row, j]))
    return truncate_run(docs_from_hits(hit_q, hit_d, hit_s), depth)


def render(result: BeforeAfter) -> str:
    """The before/after table (Markdown: it goes into the model card as it is printed)."""
    from arrowsmith.commands.evaluate.report import pretty

    base, tuned = result.report.results[0].means, result.report.results[1].means
    c = result.comparison
    metrics = ["ndcg@10", "recall@10", "mrr@10", "recall@100"]
    lines = [f"{result.dataset} (split {result.split}, {result.n_queries} queries, "
             f"{result.n_docs:,} documents)",
             "", "| metric | base | tuned | Δ |", "|---|---:|---:|---:|"]
    for m in metrics:
        lines.append(f"| {pretty(m)} | {base[m]:.4f} | {tuned[m]:.4f} | {tuned[m] - base[m]:+.4f} |")
    lines += ["", f"Δ {pretty(PRIMARY)} {c.diff:+.4f}, 95% CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}], "
              f"p {c.p_value:.4f} (paired bootstrap, {c.n_resamples:,} resamples); "
              f"wins/ties/losses {c.wins}/{c.ties}/{c.losses}"]
    if result.dims:
        lines += ["", f"| dim | base {pretty(PRIMARY)} | tuned | Δ | 95% CI |", "|---:|---:|---:|---:|---|",
                  f"| {result.dim} | {base[PRIMARY]:.4f} | "
                  f"{tuned[PRIMARY]:.4f} | {c.diff:+.4f} | [{c.ci_low:+.4f}, {c.ci_high:+.4f}] |"]
        for d in result.dims:
            k = d.comparison
            lines.append(f"| {d.dim} | {d.base:.4f} | {d.tuned:.4f} | {k.diff:+.4f} | "
                         f"[{k.ci_low:+.4f}, {k.ci_high:+.4f}] |")
    if result.overlap_note:
        lines += ["", f"Warning: {result.overlap_note} (--allow-overlap)."]
    return "\n".join(lines) + "\n"
