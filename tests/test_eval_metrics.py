"""eval metrics: hand-computed values on tiny qrels, and pytrec_eval (trec_eval) on random runs."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from arrowsmith.commands.evaluate.metrics import docs_from_hits, evaluate_run, rank_documents, truncate_run

QRELS = {"q1": {"d1": 3, "d2": 2, "d3": 0, "d4": 1}, "q2": {"d9": 1}}
# q1 ranks d3 (grade 0), d1 (3), d5 (unjudged), d4 (1), d2 (2); q2 retrieves nothing
RUN = {"q1": {"d3": 0.9, "d1": 0.8, "d5": 0.7, "d4": 0.6, "d2": 0.5}}
IDCG3 = 3 + 2 / math.log2(3) + 1 / 2  # ideal grades 3, 2, 1


def test_hand_computed_values_for_one_query():
    s = evaluate_run(QRELS, RUN, ks=(1, 3, 5))
    q1 = {name: values[0] for name, values in s.values.items()}
    assert q1["ndcg@1"] == 0.0
    assert q1["ndcg@3"] == pytest.approx((3 / math.log2(3)) / IDCG3, abs=1e-12)
    assert q1["ndcg@5"] == pytest.approx((3 / math.log2(3) + 1 / math.log2(5) + 2 / math.log2(6)) / IDCG3,
                                         abs=1e-12)
    assert (q1["recall@1"], q1["recall@3"], q1["recall@5"]) == (0.0, pytest.approx(1 / 3), 1.0)
    assert (q1["mrr@1"], q1["mrr@3"], q1["mrr@5"]) == (0.0, 0.5, 0.5)
    assert q1["map@3"] == pytest.approx((1 / 2) / 3)
    assert q1["map@5"] == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)


def test_unretrieved_judged_query_counts_as_zero_in_the_mean():
    s = evaluate_run(QRELS, RUN, ks=(3,))
    assert s.query_ids == ["q1", "q2"]
    assert s.values["ndcg@3"][1] == 0.0
    assert s.mean()["ndcg@3"] == pytest.approx((3 / math.log2(3)) / IDCG3 / 2)


def test_ties_are_broken_by_doc_id_descending_like_trec_eval():
    assert [d for d, _ in rank_documents({"a": 0.5, "b": 0.5, "c": 0.9})] == ["c", "b", "a"]
    s = evaluate_run({"q": {"a": 1}}, {"q": {"a": 0.5, "b": 0.5}}, ks=(10,))
    assert s.values["mrr@10"][0] == 0.5


def test_perfect_run_scores_one():
    s = evaluate_run({"q": {"a": 2, "b": 1}}, {"q": {"a": 0.9, "b": 0.8, "c": 0.1}}, ks=(1, 10))
    assert s.mean() == {"ndcg@1": 1.0, "ndcg@10": 1.0, "recall@1": 0.5, "recall@10": 1.0, "mrr@1": 1.0,
                        "mrr@10": 1.0, "map@1": 0.5, "map@10": 1.0}


def test_chunk_hits_aggregate_to_the_max_score_per_document():
    run = docs_from_hits(["q", "q", "q", "r"], ["d1", "d2", "d1", "d1"], [0.2, 0.5, 0.7, 0.1])
    assert run == {"q": {"d1": 0.7, "d2": 0.5}, "r": {"d1": 0.1}}
    assert truncate_run(run, 1) == {"q": {"d1": 0.7}, "r": {"d1": 0.1}}


def _random_case(seed: int):
    rng = random.Random(seed)
    qrels, run = {}, {}
    for q in range(60):
        docs = [f"d{i}" for i in range(150)]
        qrels[f"q{q}"] = {d: rng.choice([0, 0, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 20))}
        # every third query has coarse scores, so ties are frequent
        digits = 1 if q % 3 == 0 else 6
        run[f"q{q}"] = {d: round(rng.random(), digits) for d in rng.sample(docs, rng.randint(1, 120))}
    return qrels, run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pytrec_eval_on_random_runs(seed):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels, run = _random_case(seed)
    ks = (1, 3, 5, 10, 100)
    cut = ",".join(map(str, ks))
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{cut}", f"recall.{cut}", f"map_cut.{cut}",
                                                       "recip_rank"})
    ref = evaluator.evaluate(run)
    mine = evaluate_run(qrels, run, ks)
    for name, trec in (("ndcg", "ndcg_cut"), ("recall", "recall"), ("map", "map_cut")):
        for k in ks:
            expected = np.array([ref[q][f"{trec}_{k}"] for q in mine.query_ids])
            np.testing.assert_allclose(mine.values[f"{name}@{k}"], expected, rtol=0, atol=1e-12,
                                       err_msg=f"{name}@{k}")
    # recip_rank has no cut-off: compare on the queries whose first relevant hit is within 100
    rr = np.array([ref[q]["recip_rank"] for q in mine.query_ids])
    within = rr >= 1 / 100
    np.testing.assert_allclose(mine.values["mrr@100"][within], rr[within], atol=1e-12)
    assert (mine.values["mrr@100"][~within] == 0).all()
