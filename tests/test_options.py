"""Shared options: one definition each, and fixed value sets that match what the library accepts."""

from __future__ import annotations

import pytest
from conftest import run

from arrowsmith.cli import options as o


def _library_choices():
    from arrowsmith.commands import index, io, query
    from arrowsmith.commands.chunk import STRATEGIES
    from arrowsmith.commands.embed import LATE_SPECIALS
    from arrowsmith.commands.evaluate.config import BYS, FUSIONS, NO_CHUNKING
    from arrowsmith.commands.spaces import multi
    from arrowsmith.plugins.sentence_transformers import DTYPES

    return [
        (o.InputFormatName, io.INPUT_FORMATS),
        (o.OutputFormatName, (*io.OUTPUT_FORMATS, "table")),
        (o.StrategyName, STRATEGIES),
        (o.ChunkerName, (*STRATEGIES, NO_CHUNKING)),
        (o.DtypeName, DTYPES),
        (o.LateSpecialsName, LATE_SPECIALS),
        (o.VectorIndexName, index.VECTOR_TYPES),
        (o.TokenIndexName, multi.INDEX_TYPES),
        (o.DistanceName, index.DISTANCE_METRICS),
        (o.ModeName, query.MODES),
        (o.FusionName, query.FUSIONS),
        (o.FusionName, FUSIONS),
        (o.ByName, query.BYS),
        (o.ByName, BYS),
    ]


def test_fixed_choices_match_the_library():
    """The CLI spells the choices out (importing the library would slow --help); they must agree."""
    for literal, library in _library_choices():
        assert set(o.choices(literal)) == set(library), (literal, library)


def _params(command: str) -> dict[str, object]:
    from typer.main import get_command

    from arrowsmith.cli.app import app

    return {p.name: p for p in get_command(app).commands[command].params}


SHARED = {
    ("query", "eval"): ["mode", "fusion", "rrf_k", "alpha", "by", "exact"],
    ("embed", "eval"): ["dtype", "late", "device"],
    ("chunk", "eval"): ["max_tokens", "overlap"],
    ("chunk", "embed"): ["id_col", "text_col", "input_format", "output", "fmt"],
    ("embed", "index"): ["replace", "prune", "checkpoint_rows", "wait", "input_format"],
    ("index", "doctor"): ["grace", "as_json", "wait", "table"],
    ("doctor", "models"): ["as_json"],
    ("eval", "models"): ["as_json"],
}


@pytest.mark.parametrize(("commands", "names"), SHARED.items(), ids=lambda v: "-".join(v))
def test_shared_options_have_one_type_and_one_env_var(commands, names):
    a, b = (_params(c) for c in commands)
    for name in names:
        pa, pb = a[name], b[name]
        assert (pa.opts, pa.secondary_opts) == (pb.opts, pb.secondary_opts), name
        assert pa.type_descriptor.annotation == pb.type_descriptor.annotation, name
        assert pa.envvar == pb.envvar and pa.help == pb.help, name


def test_shared_defaults_agree_except_evals_documented_protocol():
    query, ev = _params("query"), _params("eval")
    for name in ("fusion", "rrf_k", "alpha", "by"):
        assert query[name].default == ev[name].default, name
    # eval's default configuration is MTEB's (dense, exact); `--mode auto --ann` measures query's
    assert (query["mode"].default, query["exact"].default) == ("auto", False)
    assert (ev["mode"].default, ev["exact"].default) == ("vector", True)
    assert isinstance(ev["rrf_k"].default, float)


@pytest.mark.parametrize("args", [
    ["query", "--db", "nowhere", "--mode", "dense", "q"],
    ["chunk", "--strategy", "words"],
    ["index", "--db", "nowhere", "--type", "hnsw"],
    ["embed", "--dtype", "float32"],
    ["eval", "--plot-kind", "lines"],
])
def test_a_value_outside_the_choices_is_a_usage_error_naming_them(args):
    result = run(args)
    assert result.exit_code == 2
    assert "is not one of" in result.stderr, result.stderr


def test_index_refuses_json_without_stats(tmp_path):
    result = run(["index", "--db", str(tmp_path / "store"), "--json"])
    assert result.exit_code == 2
    assert "--json applies to --stats" in result.stderr


# the same flag on two commands is one option (one type, one env var) unless it means something
# else there; these do, and say why
HOMONYMS = {
    ("compress", "--k"): "the report's cut-off, not query's results per query",
    ("eval", "--k"): "a list of cut-offs",
    ("eval", "--metric"): "the retrieval metric compared; index's is the vector distance",
    ("index", "--force"): "rebuild every index; embed's late-chunks a model that is not mean-pooled",
    ("tune", "--output"): "the model directory to write, not a data stream",
    ("tune", "--split"): "the training split (default train); eval's is the judged one (test)",
    ("tune", "--db"): "only a source of pairs or negatives: a pipeline's ARROWSMITH_DB must not pick it",
    ("chunk", "--db"): "only the store whose unchanged documents are marked, not chunked: a pipeline's "
                       "ARROWSMITH_DB must not put marked rows into a stream meant for another reader",
    ("tune", "--id-col"): "--corpus columns, detected (id, else _id) when not given",
    ("tune", "--text-col"): "--corpus columns, detected when not given",
    ("distill", "--output"): "the model directory to write, not a data stream (as tune's)",
    ("distill", "--dim"): "the static model's width (PCA of the base's vectors), not embed's truncation",
    ("distill", "--text-col"): "the --corpus table's text column, detected when not given (as tune's)",
    ("tune", "--multivector"): "train a ColBERT-style head, not store token vectors: a pipeline's "
                               "ARROWSMITH_MULTIVECTOR (embed's) must not switch what tune trains",
}


def test_a_flag_means_one_option_on_every_command():
    from typer.main import get_command

    from arrowsmith.cli.app import app

    uses: dict[str, list[tuple[str, object]]] = {}
    for name, command in get_command(app).commands.items():
        for p in command.params:
            if p.param_type_name == "option" and (name, p.opts[0]) not in HOMONYMS:
                uses.setdefault(p.opts[0], []).append((name, p))
    problems = []
    for flag, found in sorted(uses.items()):
        kinds = {(p.envvar, str(p.type_descriptor.annotation)) for _, p in found}
        if len(kinds) > 1:
            problems.append(f"{flag}: " + "; ".join(f"{n}: {p.envvar} {p.type_descriptor.annotation}"
                                                    for n, p in found))
    assert not problems, ("define these once in cli/options.py (or list a homonym with its reason):\n"
                          + "\n".join(problems))
