"""No option may be silently ignored: each command refuses one its combination would ignore (exit 2,
naming the option and why), before any work (issue 10). eval and compress: their own test files."""

from __future__ import annotations

import pytest
from conftest import chunks_batch, run

from arrowsmith.commands.store import StoreWriter


@pytest.fixture
def store(tmp_path):
    """A 3-document table without any index (seeded vectors)."""
    db = tmp_path / "store"
    with StoreWriter(db) as w:
        w.write([chunks_batch({"a": (2, "ka"), "b": (1, "kb"), "c": (1, "kc")})])
    return db


@pytest.fixture
def textdir(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text("One sentence. Another one.")
    return root


def _refused(args, message, input=None):
    r = run(args, input=input)
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    assert message in r.stderr, r.stderr


@pytest.mark.parametrize("args, message", [
    (["--id-col", "path"], "--id-col has no effect with text files and directories"),
    (["--text-col", "body", "--input-format", "jsonl"], "--text-col, --input-format have no effect"),
])
def test_chunk_directory_refuses_table_options(textdir, args, message):
    _refused(["chunk", str(textdir), *args], message)


def test_chunk_table_refuses_glob():
    _refused(["chunk", "-", "--glob", "*.md"], "--glob has no effect with table inputs",
             input=b'{"id": "a", "text": "x"}\n')


@pytest.mark.parametrize("args, message", [
    (["--window", "128"], "--window has no effect with --naive"),
    (["--late-specials", "include", "--force"], "--late-specials, --force have no effect with --naive"),
    (["--table", "late"], "--table has no effect without --db"),
    (["--checkpoint-rows", "5", "--wait"], "--wait, --checkpoint-rows have no effect without --db"),
    (["--db", "s", "-o", "x.arrows"], "--output has no effect with --db"),
])
def test_embed_refuses(args, message):
    _refused(["embed", "-", *args], message, input=b'{"id": "a", "text": "x"}\n')


@pytest.mark.parametrize("args, message", [
    (["--stats", "--type", "ivf_pq"], "--type has no effect with --stats"),
    (["--grace", "1h"], "--grace has no effect without --optimize"),
    (["--type", "none", "--partitions", "4"], "--partitions has no effect with --type none"),
    (["--type", "none", "--metric", "dot"], "--metric has no effect with --type none"),
    (["--type", "ivf_hnsw_sq", "--sub-vectors", "8"], "--sub-vectors has no effect with --type ivf_hnsw_sq"),
    (["--replace"], "--replace has no effect without input"),
])
def test_index_refuses(store, args, message):
    before = sorted(p.name for p in store.iterdir())
    _refused(["index", "--db", str(store), *args], message)
    assert sorted(p.name for p in store.iterdir()) == before


def test_index_auto_on_a_small_table_says_partitions_wait_for_the_threshold(store):
    # a cron job's --partitions must not fail while the table is small: a warning, not exit 2
    r = run(["index", "--db", str(store), "--partitions", "4", "--no-fts"])
    assert r.exit_code == 0, r.stderr
    assert "--partitions: not used yet" in r.stderr
    assert "on 4 rows" in r.stderr


def test_index_auto_on_a_small_table_says_metric_waits_for_the_threshold(store):
    # --metric is the index's distance: no index yet, so it is not used either (it was silent)
    r = run(["index", "--db", str(store), "--metric", "dot", "--sub-vectors", "8", "--no-fts"])
    assert r.exit_code == 0, r.stderr
    assert "--sub-vectors/--metric: not used yet: --type auto builds no vector index on 4 rows" in r.stderr
    r = run(["index", "--db", str(store), "--no-fts"])
    assert r.exit_code == 0 and "not used yet" not in r.stderr, r.stderr


def test_vector_index_settings_without_an_index_are_refused_by_the_library():
    from arrowsmith.commands.errors import UsageError
    from arrowsmith.commands.index import choose_vector_index

    with pytest.raises(UsageError, match="--metric: no effect with --type none"):
        choose_vector_index(1_000, 384, kind="none", metric="dot")
    assert choose_vector_index(1_000, 384, kind="ivf_pq")["metric"] == "cosine"
    assert choose_vector_index(1_000, 384, kind="ivf_pq", metric="dot")["metric"] == "dot"


@pytest.mark.parametrize("args, message", [
    (["--mode", "vector", "--fusion", "mix"], "--fusion has no effect with --mode vector"),
    (["--mode", "fts", "--rrf-k", "10"], "--rrf-k has no effect with --mode fts"),
    (["--mode", "hybrid", "--fusion", "rrf", "--alpha", "0.3"], "--alpha has no effect with --fusion rrf"),
    (["--mode", "hybrid", "--rrf-k", "5"], "--rrf-k has no effect with --fusion mix"),  # mix: the default
    (["--exact", "--nprobes", "20"], "--nprobes has no effect with --exact"),
    (["--mode", "fts", "--no-compressed"], "--compressed/--no-compressed has no effect with --mode fts"),
    (["--mode", "fts", "--ann"], "--exact/--ann has no effect with --mode fts"),
    (["--fusion", "mix"], "with --mode auto on a table without a full-text index"),
])
def test_query_refuses(store, args, message):
    _refused(["query", "--db", str(store), "chunk", *args], message)


def test_query_refuses_ann_settings_the_table_cannot_use(store):
    _refused(["query", "--db", str(store), "chunk", "--mode", "vector", "--nprobes", "5"],
             "--nprobes: no effect, the table has no vector index")
    from arrowsmith.commands.compress import compress_table

    compress_table(str(store), "chunks", "binary")
    _refused(["query", "--db", str(store), "chunk", "--mode", "vector", "--refine-factor", "2"],
             "--refine-factor: no effect, the table's compressed representation (binary) is searched")


@pytest.mark.slow
def test_query_auto_takes_fusion_options_when_the_table_is_hybrid(store):
    from arrowsmith.commands.index import build_indexes

    build_indexes(str(store), "chunks", vector_type="none", fts=True)
    r = run(["query", "--db", str(store), "chunk", "--fusion", "mix", "--alpha", "0.3", "-f", "jsonl"])
    assert r.exit_code == 0, r.stderr
    assert b'"a#0"' in r.stdout_bytes or b'"b#0"' in r.stdout_bytes
