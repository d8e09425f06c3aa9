"""eval reports without a model: scoring TREC run files, text/JSON/Markdown output, the PNG plot."""

from __future__ import annotations

import json

import pytest
from conftest import run

from arrowsmith.commands.errors import UsageError
from arrowsmith.commands.evaluate.config import EvalConfig, config_from_spec, load_config_file
from arrowsmith.commands.evaluate.data import read_qrels, read_run
from arrowsmith.commands.evaluate.metrics import evaluate_run


@pytest.fixture
def runs(tmp_path):
    lines = ["query-id\tcorpus-id\tscore"]
    good, bad = [], []
    for q in range(1, 31):
        lines += [f"{q}\tdoc{q}\t2", f"{q}\tdoc{q + 100}\t1"]
        good += [f"{q} Q0 doc{q} 1 0.9 good", f"{q} Q0 doc{q + 100} 2 0.8 good", f"{q} Q0 x{q} 3 0.1 good"]
        # "bad" ranks a non-relevant document first on every other query
        first = 0.95 if q % 2 else 0.05
        bad += [f"{q} Q0 x{q} 1 {first} bad", f"{q} Q0 doc{q} 2 0.5 bad", f"{q} Q0 doc{q + 100} 3 0.4 bad"]
    (tmp_path / "qrels.tsv").write_text("\n".join(lines) + "\n")
    (tmp_path / "good.run").write_text("\n".join(good) + "\n")
    (tmp_path / "bad.run").write_text("\n".join(bad) + "\n")
    return tmp_path


def test_scores_run_files_and_compares_them_as_json(runs):
    result = run(["eval", "--qrels", str(runs / "qrels.tsv"), "--run", str(runs / "good.run"),
                  "--run", str(runs / "bad.run"), "--json", "--resamples", "2000"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout_bytes)
    names = [c["name"] for c in report["configs"]]
    assert names == ["good", "bad"]
    qrels = read_qrels(runs / "qrels.tsv")
    expected = evaluate_run(qrels, read_run(runs / "bad.run")).mean()
    assert report["configs"][1]["metrics"] == pytest.approx(expected)
    assert report["configs"][0]["metrics"]["ndcg@10"] == 1.0
    assert len(report["configs"][0]["per_query"]) == 30
    (cmp,) = report["comparisons"]
    assert (cmp["baseline"], cmp["candidate"], cmp["metric"]) == ("good", "bad", "ndcg@10")
    assert cmp["diff"] == pytest.approx(expected["ndcg@10"] - 1.0)
    assert (cmp["wins"], cmp["ties"], cmp["losses"]) == (0, 15, 15)
    assert cmp["ci_low"] < cmp["diff"] < cmp["ci_high"] < 0 and cmp["p_value"] < 0.001


def test_text_and_markdown_tables(runs):
    args = ["eval", "--qrels", str(runs / "qrels.tsv"), "--run", str(runs / "good.run"),
            "--run", str(runs / "bad.run"), "--resamples", "500"]
    text = run(args)
    assert text.exit_code == 0, text.stderr
    out = text.stdout_bytes.decode()
    assert "nDCG@10" in out and "good" in out and "wins/ties/losses" in out and "0/15/15" in out
    md = run([*args, "--markdown"]).stdout_bytes.decode()
    assert "| config | nDCG@1 |" in md
    assert "| bad | good |" in md  # comparison row: candidate, baseline


def test_plot_writes_a_png(runs, tmp_path):
    png = tmp_path / "ndcg.png"
    result = run(["eval", "--qrels", str(runs / "qrels.tsv"), "--run", str(runs / "good.run"),
                  "--run", str(runs / "bad.run"), "--resamples", "500", "--plot", str(png)])
    assert result.exit_code == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in result.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # written beside, renamed


def test_bad_metric_and_k_are_usage_errors(runs):
    base = ["eval", "--qrels", str(runs / "qrels.tsv"), "--run", str(runs / "good.run")]
    assert run([*base, "--k", "1,x"]).exit_code == 2
    r = run([*base, "--metric", "ndcg@20"])
    assert r.exit_code == 2 and "--metric" in r.stderr


def test_spec_grammar():
    base = EvalConfig(model="m")
    c = config_from_spec("naive,chunk=tokens,max_tokens=128", base)
    assert (c.late, c.chunker, c.max_tokens, c.model) == (False, "tokens", 128, "m")
    c = config_from_spec("late", base)
    assert c.late and c.label() == "late,model=m"
    c = config_from_spec("mode=hybrid,fusion=mix,alpha=0.25,name=h", base)
    assert (c.mode, c.fusion, c.alpha, c.label()) == ("hybrid", "mix", 0.25, "h")
    assert config_from_spec("none").chunker == "none"
    with pytest.raises(UsageError, match="unknown word 'lat'"):
        config_from_spec("lat")
    with pytest.raises(UsageError, match="mode='bm25'"):
        config_from_spec("mode=bm25")
    with pytest.raises(UsageError, match="max_tokens='big'"):
        config_from_spec("max_tokens=big")
    with pytest.raises(UsageError, match="late chunking needs chunks"):
        config_from_spec("none,late")


def test_config_files(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[[config]]\nname = "n"\n\n[[config]]\nlate = true\nmax_tokens = 64\n')
    a, b = load_config_file(toml)
    assert (a.name, a.late, b.late, b.max_tokens) == ("n", False, True, 64)
    js = tmp_path / "c.json"
    js.write_text('[{"mode": "fts"}, {"mode": "hybrid", "fusion": "mix"}]')
    assert [c.mode for c in load_config_file(js)] == ["fts", "hybrid"]


def test_ignore_identical_ids_drops_each_querys_own_document(tmp_path):
    """ArguAna's shape: the query is a corpus document with the query's id, and ranks first."""
    (tmp_path / "qrels.tsv").write_text("".join(f"q{i}\td{i}\t1\n" for i in range(10)))
    lines = []
    for i in range(10):  # the query's own document first, then the relevant one
        lines += [f"q{i} Q0 q{i} 1 0.99 self", f"q{i} Q0 d{i} 2 0.70 self", f"q{i} Q0 x{i} 3 0.10 self"]
    (tmp_path / "self.run").write_text("\n".join(lines) + "\n")
    base = ["eval", "--qrels", str(tmp_path / "qrels.tsv"), "--run", str(tmp_path / "self.run"),
            "--k", "1,10", "--metric", "ndcg@1", "--resamples", "200", "--json"]
    kept = run(base)
    assert kept.exit_code == 0, kept.stderr
    (config,) = json.loads(kept.stdout_bytes)["configs"]
    assert config["metrics"]["ndcg@1"] == 0.0 and config["metrics"]["mrr@10"] == 0.5
    assert any("10 of 10 queries find a document with their own id first" in n for n in config["notes"])
    dropped = run([*base, "--ignore-identical-ids"])
    assert dropped.exit_code == 0, dropped.stderr
    (config,) = json.loads(dropped.stdout_bytes)["configs"]
    assert config["metrics"]["ndcg@1"] == 1.0 and config["metrics"]["mrr@10"] == 1.0
    assert config["notes"] == [
        "--ignore-identical-ids: 10 hits on a document with the query's own id dropped"]
