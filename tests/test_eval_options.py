"""eval refuses an option that its combination would ignore (exit 2, before any work; issue 10)."""

from __future__ import annotations

import pytest
from conftest import run

from arrowsmith.commands.errors import UsageError
from arrowsmith.commands.evaluate.config import EvalConfig, config_from_spec
from arrowsmith.commands.evaluate.runner import compare_results


@pytest.mark.parametrize("args, message", [
    (["--run", "a.run", "--late"], "--late/--naive has no effect with --run"),
    (["--run", "a.run", "--mode", "hybrid", "--db", "s"], "--mode, --db have no effect with --run"),
    (["--qrels", "q.tsv", "--split", "dev"], "--split has no effect with --qrels"),
    (["--plot-kind", "bytes"], "--plot-kind has no effect without --plot"),
    (["--fusion", "mix"], "--fusion has no effect without a hybrid configuration"),
    (["--mode", "hybrid", "--fusion", "rrf", "--alpha", "0.3"], "--alpha has no effect without fusion=mix"),
    (["--mode", "hybrid", "--rrf-k", "10"], "--rrf-k has no effect without fusion=rrf"),  # mix: the default
    (["--mode", "fts", "--ann"], "--exact/--ann has no effect with mode fts only"),
    (["--test", "permutation"], "--test has no effect with one configuration"),
    (["--baseline", "late"], "--baseline has no effect with one configuration"),
    (["--db", "s", "--late", "--workdir", "w"], "--late/--naive, --workdir have no effect with --db"),
    (["--db", "s", "--compare", "late"], "late= has no effect on an existing store"),
    (["--compare", "vector,fusion=mix"], "fusion= has no effect with mode=vector"),
    (["--compare", "hybrid,fusion=rrf,alpha=0.2"], "alpha= has no effect with fusion=rrf"),
    (["--compare", "nprobes=20"], "nprobes= has no effect with exact search"),
    (["--compare", "naive,window_overlap=0"], "window_overlap= has no effect with naive chunking"),
    (["--compare", "late,window_overlap=-1"], "window_overlap must be 0 or more"),
    (["--db", "s", "--compare", "late,window_overlap=0"], "has no effect on an existing store"),
    (["--json", "--markdown"], "--json and --markdown are exclusive"),
    (["--db", "s", "--mode", "fts", "--dtype", "fp32"], "--dtype has no effect with mode fts on an existing"),
])
def test_ignored_option_is_refused_before_any_work(tmp_path, args, message):
    r = run(["eval", str(tmp_path / "no-such-dataset"), *args])
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr


def test_options_that_apply_are_accepted():
    """A setting that applies to one of the configurations is not refused."""
    assert config_from_spec("hybrid,fusion=mix,alpha=0.2").alpha == 0.2
    assert config_from_spec("auto,fusion=rrf,rrf_k=10").rrf_k == 10
    assert config_from_spec("hybrid,alpha=0.2").alpha == 0.2  # mix is the default fusion
    assert config_from_spec("ann,nprobes=20").nprobes == 20
    assert config_from_spec("late", EvalConfig()).late  # a build
    assert config_from_spec("late,window-overlap=0").window_overlap == 0
    assert config_from_spec("late").window_overlap is None  # embed's default
    assert config_from_spec("late,window_overlap=0").build_key() != config_from_spec("late").build_key()


def test_baseline_needs_two_configurations():
    with pytest.raises(UsageError, match="--baseline needs two or more"):
        compare_results([object()], "ndcg@10", baseline="x")
