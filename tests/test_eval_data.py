"""eval loaders: BEIR layout, TREC qrels and runs; malformed lines name file and line (exit 65)."""

from __future__ import annotations

import json

import pytest
from conftest import run

from arrowsmith.commands.errors import DataError, UsageError
from arrowsmith.commands.evaluate.data import (
    document_text,
    load_beir,
    read_corpus,
    read_qrels,
    read_run,
    write_run,
)


def make_beir(root, corpus=None, queries=None, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\n"):
    (root / "qrels").mkdir(parents=True)
    corpus = corpus if corpus is not None else [
        {"_id": "d1", "title": "Wings", "text": "lift and drag"},
        {"_id": "d2", "title": "", "text": " heat transfer "},
    ]
    queries = queries if queries is not None else [{"_id": "q1", "text": "lift"}, {"_id": "q2", "text": "x"}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


def test_mteb_title_join():
    assert document_text("Wings", "lift and drag") == "Wings lift and drag"
    assert document_text("", " heat ") == "heat"  # MTEB: (title + " " + text).strip()
    assert document_text(None, "heat") == "heat"
    assert document_text("Wings", "lift", title_join=False) == "lift"


def test_load_beir_keeps_judged_queries_and_streams_the_corpus(tmp_path):
    ds = load_beir(make_beir(tmp_path))
    assert ds.queries == {"q1": "lift"}
    assert ds.qrels == {"q1": {"d1": 1, "d2": 2}}
    table = [b.to_pydict() for b in ds.corpus_batches()]
    assert table == [{"id": ["d1", "d2"], "text": ["Wings lift and drag", "heat transfer"]}]


def test_bad_corpus_line_names_file_and_line(tmp_path):
    root = make_beir(tmp_path)
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": \n')
    with pytest.raises(DataError, match=r"corpus\.jsonl: line 2: invalid JSON"):
        list(read_corpus(root / "corpus.jsonl"))


@pytest.mark.parametrize("line, message", [
    ('{"text": "a"}', r"line 2: missing field '_id'"),
    ('{"_id": "d1", "text": "again"}', r"line 2: duplicate document id 'd1'"),
    ('{"_id": "d2", "text": 5}', r"line 2: field 'text' must be a string"),
    ('["d2"]', r"line 2: expected a JSON object"),
])
def test_corpus_field_errors(tmp_path, line, message):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "d1", "text": "a"}\n' + line + "\n")
    with pytest.raises(DataError, match=message):
        list(read_corpus(path))


@pytest.mark.parametrize("text, message", [
    ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n", r"test\.tsv: line 3: expected 3 columns"),
    ("q1\td1\t1\nq1\td2\thigh\n", r"test\.tsv: line 2: relevance 'high' is not an integer"),
    ("query-id\tcorpus-id\tscore\n", r"test\.tsv: no judgements"),
])
def test_bad_qrels_lines(tmp_path, text, message):
    path = tmp_path / "test.tsv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_qrels(path)


def test_qrels_invalid_utf8_names_its_line_deep_in_the_file(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_bytes(b"query-id\tcorpus-id\tscore\n" + b"q1\td1\t1\n" * 3000 + b"q2\td\xe9\t1\n")
    with pytest.raises(DataError, match=r"test\.tsv: line 3002: not valid UTF-8 \(byte 4 of the line\)"):
        read_qrels(path)


def test_trec_qrels_and_run_round_trip(tmp_path):
    qrels = tmp_path / "q.qrels"
    qrels.write_text("1 0 doc-a 2\n1 0 doc-b 0\n2 0 doc-c 1\n")
    assert read_qrels(qrels) == {"1": {"doc-a": 2, "doc-b": 0}, "2": {"doc-c": 1}}
    run_file = tmp_path / "x.run"
    write_run({"1": {"doc-b": 0.25, "doc-a": 0.5}}, run_file, tag="my run")
    assert run_file.read_text() == "1 Q0 doc-a 1 0.5 my_run\n1 Q0 doc-b 2 0.25 my_run\n"
    assert read_run(run_file) == {"1": {"doc-a": 0.5, "doc-b": 0.25}}


def test_bad_run_line(tmp_path):
    path = tmp_path / "bad.run"
    path.write_text("1 Q0 a 1 0.5 t\n1 Q0 b 2 nope t\n")
    with pytest.raises(DataError, match=r"bad\.run: line 2: score 'nope' is not a number"):
        read_run(path)


def test_judged_query_missing_from_queries_is_a_data_error_naming_its_line(tmp_path):
    root = make_beir(tmp_path, qrels="q1\td1\t1\nq1\td2\t1\nq7\td1\t1\nq7\td2\t0\n")
    with pytest.raises(DataError, match=r"test\.tsv: line 3: query id 'q7' is not in .*queries\.jsonl "
                                        r"\(1 judged query id\(s\) missing from it\)"):
        load_beir(root)


def test_a_pair_judged_twice_with_different_grades_names_both_lines(tmp_path):
    """Issue 21: the second grade silently replaced the first."""
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq1\td1\t2\n")
    with pytest.raises(DataError, match=r"test\.tsv: line 4: query 'q1' judges document 'd1' 2, but line 2 "
                                        r"judged it 1") as e:
        read_qrels(path)
    assert e.value.exit_code == 65
    path.write_text("q1\td1\t1\nq1\td1\t1\n")  # the same grade twice: one judgement
    assert read_qrels(path) == {"q1": {"d1": 1}}


def test_cli_duplicate_judgement_is_exit_65(tmp_path):
    root = make_beir(tmp_path, qrels="q1\td1\t1\nq1\td1\t0\n")
    r = run(["eval", str(root), "--run", str(tmp_path / "none.run")])
    assert r.exit_code == 65, r.stderr
    assert "line 2: query 'q1' judges document 'd1' 0, but line 1 judged it 1" in r.stderr


def test_judged_documents_absent_from_the_store_are_counted_and_warned(tmp_path):
    """Issue 21: qrels naming documents the corpus lacks were scored silently."""
    from conftest import chunks_batch

    from arrowsmith.commands.index import build_indexes
    from arrowsmith.commands.store import StoreWriter

    db = tmp_path / "store"
    with StoreWriter(db) as w:
        w.write([chunks_batch({"d1": (1, "k1"), "d2": (1, "k2")},
                              texts={"d1": ["lift and drag"], "d2": ["heat transfer"]})])
    build_indexes(db)
    root = make_beir(tmp_path / "beir", qrels="q1\td1\t1\nq1\tgone\t2\nq2\tgone\t1\nq2\tlost\t0\n")
    r = run(["eval", str(root), "--db", str(db), "--mode", "fts", "--json", "--resamples", "100"])
    assert r.exit_code == 0, r.stderr
    warning = ("2 judged document id(s) (3 judgements) are not in the store: they can never be retrieved "
               "(a relevant one lowers recall and nDCG)")
    assert r.stderr.count(warning) == 1
    (config,) = json.loads(r.stdout_bytes)["configs"]
    assert config["counts"]["qrels_docs_absent"] == 2 and config["counts"]["qrels_judgements_absent"] == 3
    assert warning in config["notes"]


def test_missing_split_suggests_the_existing_ones(tmp_path):
    root = make_beir(tmp_path)
    with pytest.raises(UsageError) as e:
        load_beir(root, split="dev")
    assert "--split test" in str(e.value)


def test_cli_exit_65_names_file_and_line(tmp_path):
    root = make_beir(tmp_path, qrels="q1\td1\t1\nq1\td2\n")
    result = run(["eval", str(root)])
    assert result.exit_code == 65
    assert "test.tsv: line 2: expected 3 columns" in result.stderr
