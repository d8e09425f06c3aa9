"""Ranking metrics, per query and mean, defined exactly as trec_eval (pytrec_eval) and MTEB do.

- ``ndcg@k``: trec_eval's ``ndcg_cut.k`` with linear gain (gain = relevance grade, discount
  ``log2(rank + 1)``), the ideal ranking built from *all* judged relevant documents. This is the
  nDCG that BEIR and MTEB report (they call pytrec_eval).
- ``recall@k``: relevant documents in the top k / all relevant documents (``recall.k``).
- ``map@k``: trec_eval's ``map_cut.k``: precision at each relevant rank ≤ k, summed, divided by the
  number of relevant documents (not by min(k, n_rel)).
- ``mrr@k``: 1 / rank of the first relevant document within the top k, else 0 (MTEB's ``MRR@k``).

A document is relevant when its grade is ≥ 1 (trec_eval's default relevance level). Documents are
ranked as trec_eval ranks them: score descending, ties broken by document id descending — the
rank column of a run file is ignored. Every judged query counts; a query with no retrieved
documents scores 0 (as ``trec_eval -c``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .data import Qrels, Run

METRICS = ("ndcg", "recall", "mrr", "map")
DEFAULT_KS = (1, 3, 5, 10, 100)


def rank_documents(scores: dict[str, float]) -> list[tuple[str, float]]:
    """(doc_id, score) in trec_eval order: score descending, then doc id descending."""
    return sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)


def metric_names(ks: Iterable[int], metrics: Sequence[str] = METRICS) -> list[str]:
    return [f"{m}@{k}" for m in metrics for k in ks]


@dataclass
class QueryScores:
    """Metric values per judged query: ``values[name][i]`` belongs to ``query_ids[i]``."""

    query_ids: list[str]
    values: dict[str, np.ndarray]

    def mean(self) -> dict[str, float]:
        return {name: float(v.mean()) if len(v) else 0.0 for name, v in self.values.items()}

    def per_query(self) -> list[dict]:
        return [{"query_id": q, **{n: float(v[i]) for n, v in self.values.items()}}
                for i, q in enumerate(self.query_ids)]


def evaluate_run(qrels: Qrels, run: Run, ks: Sequence[int] = DEFAULT_KS,
                 metrics: Sequence[str] = METRICS) -> QueryScores:
    """Score ``run`` against ``qrels`` for every judged query."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError("cut-offs must be positive integers")
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; known: {', '.join(METRICS)}")
    query_ids = list(qrels)
    table = {name: np.zeros(len(query_ids)) for name in metric_names(ks, metrics)}
    for i, qid in enumerate(query_ids):
        for name, value in _query_metrics(qrels[qid], run.get(qid, {}), ks, metrics).items():
            table[name][i] = value
    return QueryScores(query_ids, table)


def _query_metrics(judged: dict[str, int], scores: dict[str, float], ks: list[int],
                   metrics: Sequence[str]) -> dict[str, float]:
    depth = ks[-1]
    ranked = rank_documents(scores)[:depth]
    grades = np.array([judged.get(doc, 0) for doc, _ in ranked], dtype=np.float64)
    relevant = grades >= 1
    n_rel = sum(1 for g in judged.values() if g >= 1)
    ranks = np.arange(1, len(ranked) + 1)
    discount = 1.0 / np.log2(ranks + 1)
    dcg = np.cumsum(np.maximum(grades, 0) * discount)
    ideal = np.sort(np.array([g for g in judged.values() if g > 0], dtype=np.float64))[::-1][:depth]
    idcg = np.cumsum(ideal / np.log2(np.arange(2, len(ideal) + 2)))
    hits = np.cumsum(relevant)
    precision_sum = np.cumsum(np.where(relevant, hits / ranks, 0.0))
    first = int(np.argmax(relevant)) + 1 if relevant.any() else 0

    out: dict[str, float] = {}
    for k in ks:
        n = min(k, len(ranked))
        if "ndcg" in metrics:
            ideal_k = idcg[min(k, len(idcg)) - 1] if len(idcg) else 0.0
            out[f"ndcg@{k}"] = float(dcg[n - 1] / ideal_k) if n and ideal_k > 0 else 0.0
        if "recall" in metrics:
            out[f"recall@{k}"] = float(hits[n - 1] / n_rel) if n and n_rel else 0.0
        if "mrr" in metrics:
            out[f"mrr@{k}"] = 1.0 / first if first and first <= k else 0.0
        if "map" in metrics:
            out[f"map@{k}"] = float(precision_sum[n - 1] / n_rel) if n and n_rel else 0.0
    return out


def docs_from_hits(query_ids: Sequence[str], doc_ids: Sequence[str], scores: Sequence[float]) -> Run:
    """Aggregate chunk hits to documents: a document scores the max over its chunks."""
    run: Run = {}
    for qid, doc, score in zip(query_ids, doc_ids, scores, strict=True):
        per_query = run.setdefault(qid, {})
        s = float(score)
        if doc not in per_query or s > per_query[doc]:
            per_query[doc] = s
    return run


def drop_identical_ids(run: Run) -> Run:
    """The run without each query's hit on the document of its own id: what BEIR's evaluation does
    by default, and MTEB for ArguAna and Quora, whose queries are documents of the corpus."""
    return {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}


def self_hits(run: Run) -> int:
    """Queries whose first document has the query's own id (a sign that the queries are in the corpus)."""
    return sum(1 for q, docs in run.items() if docs and rank_documents(docs)[0][0] == q)


def truncate_run(run: Run, k: int) -> Run:
    """Keep each query's top k documents (trec_eval order)."""
    return {q: dict(rank_documents(docs)[:k]) for q, docs in run.items()}
