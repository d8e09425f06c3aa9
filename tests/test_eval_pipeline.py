"""eval end to end with the real model and LanceDB: MTEB parity, modes, --db, and Cranfield late vs naive."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cranfield_subset, run

from arrowsmith.commands.evaluate.data import load_beir
from arrowsmith.commands.evaluate.metrics import evaluate_run

# parity with MTEB's recipe holds query by query at any size: 50 abstracts (10k tokens, 11 of them
# past the 256-token window) are encoded twice, by eval and by the reference, in half the time of 100
N_DOCS = 50


@pytest.fixture(scope="module")
def small(cranfield, tmp_path_factory):
    """The first 50 Cranfield documents and the queries judged on them (a real, tiny BEIR set)."""
    return cranfield_subset(cranfield, tmp_path_factory.mktemp("cran50"), N_DOCS)


@pytest.fixture(scope="module")
def modes(small, tmp_path_factory):
    """One no-chunking build (fp32, as MTEB) searched three ways; the store is kept for --db."""
    work = tmp_path_factory.mktemp("evalwork")
    result = run(["eval", str(small), "--chunker", "none", "--dtype", "fp32", "--device", "cpu",
                  "--compare", "vector", "--compare", "fts", "--compare", "mode=hybrid,fusion=rrf",
                  "--workdir", str(work), "--resamples", "500", "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout_bytes), work


def _reference_run(small, model_path):
    """MTEB's recipe written independently: SentenceTransformer.encode (it truncates at
    max_seq_length), (title + " " + text).strip(), cosine, exact search over the whole corpus."""
    from sentence_transformers import SentenceTransformer

    ds = load_beir(small)
    rows = [json.loads(line) for line in (small / "corpus.jsonl").read_text().splitlines()]
    st = SentenceTransformer(model_path, device="cpu")
    docs = st.encode([(r["title"] + " " + r["text"]).strip() for r in rows], normalize_embeddings=True)
    qs = st.encode(list(ds.queries.values()), normalize_embeddings=True)
    scores = qs @ docs.T
    run_ = {q: {rows[j]["_id"]: float(scores[i, j]) for j in np.argsort(-scores[i])[:100]}
            for i, q in enumerate(ds.queries)}
    return ds, run_


@pytest.mark.slow
def test_no_chunking_reproduces_the_mteb_recipe(small, modes, model):
    report, _ = modes
    vector = report["configs"][0]
    assert vector["name"] == "naive,chunker=none"
    ds, reference = _reference_run(small, model.path)
    expected = evaluate_run(ds.qrels, reference)
    got = {row["query_id"]: row for row in vector["per_query"]}
    for i, q in enumerate(expected.query_ids):
        assert got[q]["ndcg@10"] == pytest.approx(expected.values["ndcg@10"][i], abs=1e-6), q
    assert vector["metrics"]["ndcg@10"] == pytest.approx(expected.mean()["ndcg@10"], abs=1e-6)
    assert vector["counts"]["docs"] == vector["counts"]["chunks"] == N_DOCS
    truncated = vector["counts"]["truncated_docs"]
    assert truncated > 0
    assert any(f"{truncated} of {N_DOCS} documents truncated at 256 tokens" in n for n in vector["notes"])


@pytest.mark.slow
def test_fts_and_hybrid_share_the_build(modes):
    report, _ = modes
    vector, fts, hybrid = report["configs"]
    assert [c["config"]["mode"] for c in report["configs"]] == ["vector", "fts", "hybrid"]
    # one build: the same store, tokens and chunks; only fts/hybrid needed the BM25 index
    assert vector["counts"] == fts["counts"] == hybrid["counts"]
    assert "index" in fts["timing_s"] and "index" not in vector["timing_s"]
    assert all(c["metrics"]["ndcg@10"] > 0.3 for c in report["configs"])
    assert [c["candidate"] for c in report["comparisons"]] == [fts["name"], hybrid["name"]]


@pytest.mark.slow
def test_existing_db_scores_what_is_stored(small, modes):
    report, work = modes
    result = run(["eval", str(small), "--db", str(work / "store-0"), "--resamples", "200", "--json",
                  "--device", "cpu", "--dtype", "fp32"])
    assert result.exit_code == 0, result.stderr
    again = json.loads(result.stdout_bytes)["configs"][0]
    assert again["metrics"] == pytest.approx(report["configs"][0]["metrics"], abs=1e-6)


@pytest.mark.slow
def test_late_window_overlap_is_a_build_setting(cranfield, tmp_path):
    """late,window_overlap=0 builds its own store with windows that share no token: fewer tokens
    embedded than the default overlap on the same spans, and the store records the setting."""
    from arrowsmith.commands.schemas import MODEL
    from arrowsmith.commands.store import open_table, table_meta

    # Cranfield's first 20 abstracts: four of them (1, 6, 8, 13) are longer than one 254-token window
    (tmp_path / "cran20").mkdir()
    tiny = cranfield_subset(cranfield, tmp_path / "cran20", 20)
    work = tmp_path / "work"
    result = run(["eval", str(tiny), "--compare", "late", "--compare", "late,window_overlap=0",
                  "--device", "cpu", "--dtype", "fp32", "--resamples", "200", "--workdir", str(work),
                  "--json"])
    assert result.exit_code == 0, result.stderr
    default, no_overlap = json.loads(result.stdout_bytes)["configs"]
    assert no_overlap["name"] == "late,window_overlap=0"
    assert default["counts"]["chunks"] == no_overlap["counts"]["chunks"]  # the same spans
    # some of these abstracts are longer than one 254-token window, so the default overlap costs tokens
    assert no_overlap["counts"]["tokens_embedded"] < default["counts"]["tokens_embedded"]
    stored = [table_meta(open_table(str(work / f"store-{i}"), "chunks"))[MODEL] for i in (0, 1)]
    assert [m["window_overlap"] for m in stored] == [15, 0]
    assert no_overlap["metrics"]["ndcg@10"] > 0


@pytest.mark.slow
def test_queries_longer_than_the_window_are_truncated_as_mteb_does_and_counted(cranfield, tmp_path):
    """ArguAna-like: a query past 256 tokens was exit 65 for the whole run; MTEB's encode truncates
    it, so eval does the same and says how many it cut."""
    root = tmp_path / "cran20"
    root.mkdir()
    tiny = cranfield_subset(cranfield, root, 20)
    queries = [json.loads(q) for q in (tiny / "queries.jsonl").read_text().splitlines()]
    queries[0]["text"] += " and" + " how the shock wave interacts with the boundary layer" * 40
    (tiny / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    result = run(["eval", str(tiny), "--device", "cpu", "--dtype", "fp32", "--resamples", "200", "--json"])
    assert result.exit_code == 0, result.stderr
    (config,) = json.loads(result.stdout_bytes)["configs"]
    assert config["counts"]["truncated_queries"] == 1
    assert f"1 of {len(queries)} queries truncated at 256 tokens" in " ".join(config["notes"])
    fts = run(["eval", str(tiny), "--mode", "fts", "--resamples", "200", "--json"])
    assert fts.exit_code == 0, fts.stderr  # BM25 takes the whole query: nothing is cut
    assert "truncated_queries" not in json.loads(fts.stdout_bytes)["configs"][0]["counts"]


@pytest.mark.slow
def test_ignore_identical_ids_on_a_store_keeps_k_documents_without_the_querys_own(cranfield, tmp_path):
    """ArguAna's shape from Cranfield's first 40 abstracts: queries 0-19 are documents 0-19 (same id,
    same text), each relevant to document i + 20. The query's own document would rank first."""
    from arrowsmith.commands.evaluate.data import read_run

    rows = [json.loads(d) for d in (cranfield / "corpus.jsonl").read_text().splitlines()[:40]]
    data = tmp_path / "argu"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    queries = [{"_id": r["_id"], "text": f"{r['title']} {r['text']}"} for r in rows[:20]]
    (data / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (data / "qrels" / "test.tsv").write_text("".join(f"{r['_id']}\t{rows[i + 20]['_id']}\t1\n"
                                                     for i, r in enumerate(rows[:20])))
    result = run(["eval", str(data), "--chunker", "none", "--device", "cpu", "--dtype", "fp32", "--k", "1,10",
                  "--resamples", "200", "--ignore-identical-ids", "--save-runs", str(tmp_path / "runs"),
                  "--json"])
    assert result.exit_code == 0, result.stderr
    (config,) = json.loads(result.stdout_bytes)["configs"]
    assert "--ignore-identical-ids: 20 hits on a document with the query's own id dropped" in config["notes"]
    (saved,) = (tmp_path / "runs").iterdir()
    scored = read_run(saved)
    assert len(scored) == 20
    assert all(len(docs) == 10 and q not in docs for q, docs in scored.items())  # k kept, self gone


@pytest.mark.slow
def test_cranfield_late_vs_naive(cranfield, tmp_path):
    """A sixth of the Cranfield collection (documents 240-479, one of them empty, and the 101
    queries judged on them) through chunk → embed → store → query, naive and late. A part: the
    whole collection took 2.5 of the suite's 12 minutes, documents 0-479 a minute of its 7.4;
    benchmarks/eval.py scores all of it (benchmarks/results/eval.md)."""
    part = cranfield_subset(cranfield, tmp_path, 240, start=240)
    result = run(["eval", str(part), "--compare", "naive", "--compare", "late", "--dtype", "auto",
                  "--device", "cpu", "--k", "10,100", "--resamples", "2000", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout_bytes)
    assert (report["n_queries"], report["n_docs"]) == (101, 240)
    naive, late = report["configs"]
    # auto: bf16 autocast where the CPU has native bf16, else fp32 (emulated bf16 on an AVX2-only
    # CPU took 30 min here instead of ~4). Measured on this part (fp32): naive 0.5463, late 0.5374
    # (bf16: 0.5457, 0.5374; the whole collection: naive 0.3826, late 0.3902, bf16). Late is behind
    # here and ahead on documents 0-479 (0.4756 against 0.4628): which wins is benchmarks/eval.py's
    # claim on the whole collection; this test pins the pipeline's numbers. Bands are ± 0.01:
    # bf16 vs fp32 moved nDCG@10 by 0.001 on the whole collection, kernels differ across CPUs by
    # less; a change of chunking, title joining or aggregation moves it by more (there: no chunking
    # 0.381, 128-token naive chunks 0.367, BM25 ≈ 0.317 per PROVENANCE.md).
    assert 0.536 <= naive["metrics"]["ndcg@10"] <= 0.556
    assert 0.527 <= late["metrics"]["ndcg@10"] <= 0.547
    assert naive["counts"]["docs_skipped"] == 1  # one of these documents is empty
    assert naive["counts"]["chunks"] == late["counts"]["chunks"] == 304  # identical spans
    assert late["counts"]["tokens_embedded"] > naive["counts"]["tokens_embedded"]  # window overlap
    assert late["timing_s"]["embed"] > 0
    (cmp,) = report["comparisons"]
    assert (cmp["baseline"], cmp["candidate"]) == ("naive", "late")
    assert cmp["ci_low"] <= cmp["diff"] <= cmp["ci_high"]
    assert cmp["wins"] + cmp["ties"] + cmp["losses"] == 101
    assert 0 < cmp["p_value"] <= 1
