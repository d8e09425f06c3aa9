"""StoreWriter on a real LanceDB in tmp_path: incremental, atomic per doc, locked, checkpointed."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pyarrow as pa
import pytest
from conftest import DIM, MODEL, chunks_batch, run_subprocess, store_rows, to_ipc

from arrowsmith.commands import signals
from arrowsmith.commands.errors import DataError, Interrupted, LockedError, UsageError
from arrowsmith.commands.store import (
    StoreWriter,
    lock_path,
    open_table,
    stale_files,
    table_lock,
    table_meta,
    table_path,
)

DOCS = {"a": (3, "ka1"), "b": (2, "kb1"), "c": (1, "kc1")}


def write(db, *batches, **kw):
    with StoreWriter(db, **kw) as w:
        return w.write(list(batches))


def versions(db, table="chunks") -> int:
    return open_table(db, table).version


def test_first_write_creates_table_with_model_metadata(tmp_path):
    stats = write(tmp_path, chunks_batch(DOCS))
    assert (stats.docs_written, stats.docs_replaced, stats.docs_skipped) == (3, 0, 0)
    assert (stats.rows_added, stats.rows_deleted, stats.checkpoints) == (6, 0, 1)
    tbl = open_table(tmp_path)
    assert tbl.count_rows() == 6 and tbl.version == stats.version == 1
    meta = table_meta(tbl)
    assert meta["arrowsmith.model"]["name"] == "all-MiniLM-L6-v2"
    assert meta["arrowsmith.model"]["dim"] == DIM
    assert tbl.schema.field("vector").type == pa.list_(pa.float32(), DIM)
    assert sorted(store_rows(tmp_path)) == ["a#0", "a#1", "a#2", "b#0", "b#1", "c#0"]
    assert lock_path(tmp_path).exists() and not (table_path(tmp_path) / "chunks.lock").exists()


def test_same_input_twice_changes_nothing(tmp_path):
    write(tmp_path, chunks_batch(DOCS))
    before = versions(tmp_path)
    stats = write(tmp_path, chunks_batch(DOCS), prune=True)
    assert (stats.docs_written, stats.docs_skipped, stats.docs_pruned) == (0, 3, 0)
    assert (stats.rows_added, stats.rows_deleted, stats.checkpoints) == (0, 0, 0)
    assert versions(tmp_path) == before
    assert len(open_table(tmp_path).list_versions()) == 1
    assert open_table(tmp_path).count_rows() == 6


def test_is_current_lets_embed_skip_and_counts(tmp_path):
    write(tmp_path, chunks_batch(DOCS))
    with StoreWriter(tmp_path) as w:
        assert w.is_current("a", "ka1") is True
        assert w.is_current("b", "other") is False
        assert w.is_current("new", "k") is False
        stats = w.write([chunks_batch({"b": (1, "kb2"), "new": (2, "k")})])
    assert (stats.docs_written, stats.docs_replaced, stats.docs_skipped) == (2, 1, 1)


def test_changed_doc_with_fewer_chunks_loses_its_old_extra_chunks(tmp_path):
    write(tmp_path, chunks_batch(DOCS))
    before = versions(tmp_path)
    stats = write(tmp_path, chunks_batch({"a": (1, "ka2"), "b": (2, "kb1"), "d": (2, "kd1")}))
    assert (stats.docs_written, stats.docs_replaced, stats.docs_skipped) == (2, 1, 1)
    assert (stats.rows_added, stats.rows_deleted, stats.checkpoints) == (3, 2, 1)
    # a's new chunk added (one commit), then its old rows deleted by row id (the next)
    assert versions(tmp_path) == before + 2
    rows = store_rows(tmp_path)
    assert sorted(rows) == ["a#0", "b#0", "b#1", "c#0", "d#0", "d#1"]
    assert rows["a#0"] == ("a", "ka2")
    tbl = open_table(tmp_path)
    stored = tbl.search().where("id = 'a#0'").select(["vector"]).to_arrow().column("vector")[0].as_py()
    expected = chunks_batch({"a": (1, "ka2")}).column("vector")[0].as_py()
    np.testing.assert_allclose(stored, expected, atol=1e-7)


def test_changes_replace_rows_found_through_the_index_and_rows_written_after_it(tmp_path):
    # `index` builds BTrees on doc_id and id, and the writer finds a changed document's rows
    # through the doc_id index; rows written after the index are not in it, and a changed
    # document's rows in either place are replaced
    from arrowsmith.commands.index import build_indexes

    write(tmp_path, chunks_batch(DOCS))
    build_indexes(tmp_path, fts=False)
    assert {ix.name for ix in open_table(tmp_path).list_indices()} == {"doc_id_idx", "id_idx"}
    write(tmp_path, chunks_batch({"a": (2, "ka2"), "d": (2, "kd1")}))  # a's rows now after the index
    stats = write(tmp_path, chunks_batch({"a": (3, "ka3"), "b": (2, "kb2"), "d": (1, "kd2")}))
    assert (stats.docs_written, stats.docs_replaced, stats.rows_added, stats.rows_deleted) == (3, 3, 6, 1)
    rows = store_rows(tmp_path)
    assert rows == {"a#0": ("a", "ka3"), "a#1": ("a", "ka3"), "a#2": ("a", "ka3"), "b#0": ("b", "kb2"),
                    "b#1": ("b", "kb2"), "c#0": ("c", "kc1"), "d#0": ("d", "kd2")}
    assert open_table(tmp_path).count_rows() == len(rows)  # no id stored twice


def test_the_users_malloc_arena_max_and_lance_buffer_are_kept(monkeypatch):
    from arrowsmith.commands.isolated import CHILD_ENV, hold_arenas, hold_memory

    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert hold_arenas() is False
    monkeypatch.setenv("LANCE_DEFAULT_IO_BUFFER_SIZE", "12345")
    assert hold_memory() is False and os.environ["LANCE_DEFAULT_IO_BUFFER_SIZE"] == "12345"
    monkeypatch.delenv("LANCE_DEFAULT_IO_BUFFER_SIZE")
    hold_memory()
    assert os.environ["LANCE_DEFAULT_IO_BUFFER_SIZE"] == CHILD_ENV["LANCE_DEFAULT_IO_BUFFER_SIZE"]


def test_prune_with_an_empty_input_keeps_the_table(tmp_path, caplog):
    write(tmp_path, chunks_batch(DOCS))
    empty = chunks_batch(DOCS).slice(0, 0)
    with caplog.at_level("WARNING", logger="arrowsmith.store"):
        stats = write(tmp_path, empty, prune=True)
    assert stats.docs_pruned == 0 and len(store_rows(tmp_path)) == 6
    assert "input had no documents: not pruning the 3 stored" in caplog.text


def test_prune_after_full_read_only(tmp_path):
    write(tmp_path, chunks_batch(DOCS))

    def broken():
        yield chunks_batch({"a": (3, "ka1")})
        raise DataError("input.jsonl: line 7: truncated JSON")

    with pytest.raises(DataError), StoreWriter(tmp_path, prune=True) as w:
        w.write(broken())
    assert len(store_rows(tmp_path)) == 6  # nothing pruned after a partial read
    stats = write(tmp_path, chunks_batch({"a": (3, "ka1")}), prune=True)
    assert (stats.docs_pruned, stats.rows_deleted, stats.docs_skipped) == (2, 3, 1)
    assert sorted(store_rows(tmp_path)) == ["a#0", "a#1", "a#2"]


def test_prune_counts_docs_seen_only_through_is_current(tmp_path):
    write(tmp_path, chunks_batch(DOCS))
    with StoreWriter(tmp_path, prune=True) as w:
        w.is_current("a", "ka1")  # embed skipped it: it never reaches write()
        stats = w.write([chunks_batch({"b": (2, "kb1")})])
    assert stats.docs_pruned == 1
    assert sorted({d for d, _ in store_rows(tmp_path).values()}) == ["a", "b"]


def test_checkpoints_commit_separately(tmp_path):
    batches = [chunks_batch({f"d{i}": (2, "k")}) for i in range(6)]
    stats = write(tmp_path, *batches, checkpoint_rows=4)
    assert stats.checkpoints == 3 and stats.rows_added == 12
    assert len(open_table(tmp_path).list_versions()) == 3
    assert open_table(tmp_path).count_rows() == 12


def test_duplicate_chunk_id_is_a_data_error(tmp_path):
    batch = chunks_batch({"a": (2, "k")})
    dup = pa.Table.from_batches([batch, batch]).combine_chunks().to_batches()[0]
    with pytest.raises(DataError, match="chunk id 'a#0' appears more than once"), StoreWriter(tmp_path) as w:
        w.write([dup])
    assert not table_path(tmp_path).exists()


def test_document_in_two_batches_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="document 'a' appears in two batches"), StoreWriter(tmp_path) as w:
        w.write([chunks_batch({"a": (1, "k")}), chunks_batch({"a": (1, "k")})])


def test_model_mismatch_refused_unless_replace(tmp_path):
    write(tmp_path, chunks_batch(DOCS))
    other = {**MODEL, "name": "bge-small-en-v1.5", "dim": 16}
    with pytest.raises(UsageError, match="bge-small-en-v1.5") as e, StoreWriter(tmp_path) as w:
        w.write([chunks_batch({"x": (1, "k")}, model=other)])
    assert e.value.exit_code == 2
    assert versions(tmp_path) == 1 and open_table(tmp_path).count_rows() == 6
    stats = write(tmp_path, chunks_batch({"x": (2, "k")}, model=other), replace=True)
    assert (stats.docs_written, stats.rows_added, stats.rows_deleted) == (1, 2, 6)
    tbl = open_table(tmp_path)
    assert tbl.count_rows() == 2 and tbl.schema.field("vector").type.list_size == 16
    assert table_meta(tbl)["arrowsmith.model"]["name"] == "bge-small-en-v1.5"
    tbl.checkout(1)  # the old version stays in Lance's history until --optimize
    assert tbl.count_rows() == 6


def test_check_meta_before_write(tmp_path):
    write(tmp_path, chunks_batch(DOCS))
    with StoreWriter(tmp_path) as w:
        w.check_meta(MODEL)
        with pytest.raises(UsageError):
            w.check_meta({"arrowsmith.model": {**MODEL, "dim": 768}})


def test_jsonl_style_list_vectors_are_cast(tmp_path):
    batch = chunks_batch({"a": (2, "k")})
    vec = pa.array(batch.column("vector").to_pylist(), pa.list_(pa.float64()))
    loose = batch.set_column(batch.schema.get_field_index("vector"), "vector", vec)
    loose = loose.replace_schema_metadata(batch.schema.metadata)
    write(tmp_path, loose)
    assert open_table(tmp_path).schema.field("vector").type == pa.list_(pa.float32(), DIM)


def test_wrong_dim_vectors_are_a_data_error(tmp_path):
    write(tmp_path, chunks_batch(DOCS))
    small = chunks_batch({"z": (1, "k")}, model={**MODEL, "dim": 8})
    plain = small.replace_schema_metadata({})
    with pytest.raises(DataError, match=r"vector: fixed_size_list<item: float>\[8\] \(expected "
                       r"fixed_size_list<item: float>\[384\]\)"), StoreWriter(tmp_path) as w:
        w.write([plain])


def test_lock_second_writer_raises_locked(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def second_writer():
        with StoreWriter(tmp_path):
            pass

    with StoreWriter(tmp_path), ThreadPoolExecutor(1) as pool:
        # another thread is another writer (the lock nests only within one thread)
        with pytest.raises(LockedError, match=f"pid {os.getpid()}") as e:
            pool.submit(second_writer).result()
        assert e.value.exit_code == 75


def test_lock_is_held_once_from_ingest_through_index_build(tmp_path):
    from arrowsmith.commands.index import build_indexes

    with table_lock(tmp_path):
        # the same process nests the lock (as `index` does around ingest + build) ...
        write(tmp_path, chunks_batch(DOCS))
        report = build_indexes(tmp_path, fts=False)
        assert report is not None
        # ... while another process still finds it held, and names this pid
        res = run_subprocess(["index", "--db", str(tmp_path), "--no-fts"], input=b"", timeout=120)
        assert res.returncode == 75 and f"pid {os.getpid()}" in res.stderr.decode()
    assert lock_path(tmp_path).read_text() == f"{os.getpid()}\n"
    with StoreWriter(tmp_path):  # released: free for the next writer
        pass


def test_interrupt_during_commit_keeps_the_checkpoint(tmp_path, monkeypatch):
    """A SIGINT that arrives inside a commit is deferred: the checkpoint lands, then Interrupted."""
    signals.install()
    try:
        real = StoreWriter._commit_data
        calls = []

        def commit_with_signal(self, data, changed):
            calls.append(data.num_rows)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGINT)  # handled at once, in the no_interrupt block
            return real(self, data, changed)

        monkeypatch.setattr(StoreWriter, "_commit_data", commit_with_signal)
        batches = [chunks_batch({f"d{i}": (2, "k")}) for i in range(5)]
        with pytest.raises(Interrupted) as e, StoreWriter(tmp_path, checkpoint_rows=2) as w:
            w.write(batches)
        assert e.value.exit_code == 130
        assert calls == [2, 2]  # stopped before the third commit
        assert sorted(store_rows(tmp_path)) == ["d0#0", "d0#1", "d1#0", "d1#1"]
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_stale_temp_files_found_after_grace(tmp_path):
    write(tmp_path, chunks_batch(DOCS))
    data = table_path(tmp_path) / "data"
    tmp = data / ".tmpab12cd"
    orphan = data / ("0" * 26 + "deadbeefdeadbeefdeadbeef.lance")
    for p in (tmp, orphan):
        p.write_bytes(b"x")
        os.utime(p, (time.time() - 7200,) * 2)
    fresh = data / ".tmpfresh"
    fresh.write_bytes(b"x")
    assert stale_files(tmp_path, grace_s=3600) == sorted([orphan, tmp])
    assert open_table(tmp_path).count_rows() == 6


def test_cli_ingest_and_lock_exit_75(tmp_path):
    payload = to_ipc(pa.Table.from_batches([chunks_batch(DOCS)]))
    with table_lock(tmp_path):
        res = run_subprocess(["index", "--db", str(tmp_path), "--no-fts"], input=payload, timeout=120)
        assert res.returncode == 75, res.stderr
        assert f"pid {os.getpid()}" in res.stderr.decode()
    assert not table_path(tmp_path).exists()


def test_cli_wait_waits_for_the_lock(tmp_path, cli_process):
    payload = to_ipc(pa.Table.from_batches([chunks_batch(DOCS)]))
    with table_lock(tmp_path):
        proc = cli_process(["-v", "index", "--db", str(tmp_path), "--wait", "--no-fts"])
        proc.write(payload, close=True)
        proc.wait_for_stderr("waiting for the lock on")  # it found the lock held (not a sleep: issue 10)
        assert proc.poll() is None and not table_path(tmp_path).exists()
    returncode, err = proc.finish()
    assert returncode == 0, err
    assert open_table(tmp_path).count_rows() == 6


def _embedded(model, texts: dict[str, str], key_suffix: str = "") -> pa.RecordBatch:
    """One chunk per document, embedded by the real model."""
    from arrowsmith.commands.schemas import embedded_fields, stage_metadata

    ids = list(texts)
    vectors = model.encode([texts[i] for i in ids], kind="document")
    dim = vectors.shape[1]
    cols = {"id": [f"{i}#0" for i in ids], "doc_id": ids, "chunk_index": [0] * len(ids),
            "text": [texts[i] for i in ids], "start": [0] * len(ids), "end": [len(texts[i]) for i in ids],
            "doc_key": [f"{hash(texts[i]) & 0xffff:x}{key_suffix}" for i in ids]}
    fields = embedded_fields(dim)
    arrays = [pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim) if f.name == "vector"
              else pa.array(cols[f.name], f.type) for f in fields]
    schema = pa.schema(fields, metadata=stage_metadata("embed", model=model.describe()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def test_real_model_vectors_stored_and_searchable(tmp_path, model):
    texts = {"paris": "Paris is the capital of France.", "rust": "Rust is a systems programming language.",
             "tea": "Green tea is brewed from unoxidised leaves."}
    stats = write(tmp_path, _embedded(model, texts))
    assert stats.rows_added == 3
    tbl = open_table(tmp_path)
    dim = tbl.schema.field("vector").type.list_size
    assert table_meta(tbl)["arrowsmith.model"]["dim"] == model.dim == dim
    query = model.encode(["Which language is good for writing operating systems?"], kind="query")[0]
    hit = tbl.search(query).distance_type("cosine").limit(1).to_arrow()
    assert hit.column("doc_id")[0].as_py() == "rust"
    vec = np.array(tbl.search().select(["vector"]).limit(None).to_arrow().column("vector").to_pylist())
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   RuntimeError("LanceError(IO): No space left on device (os error 28)")])
def test_disk_full_is_storage_error_and_table_intact(tmp_path, monkeypatch, error):
    from arrowsmith.commands.errors import StorageError

    write(tmp_path, chunks_batch(DOCS))

    def full(self, data, changed):
        raise error

    monkeypatch.setattr(StoreWriter, "_commit_data", full)
    with pytest.raises(StorageError, match="version is intact") as e, StoreWriter(tmp_path) as w:
        w.write([chunks_batch({"z": (2, "kz")})])
    assert e.value.exit_code == 74
    assert versions(tmp_path) == 1 and len(store_rows(tmp_path)) == 6


def test_scan_batches_reads_every_row_once_in_table_order(tmp_path):
    """The bounded scan (ranges of row offsets) after deletions and several commits: every live
    row once, in the table's order, in batches of at most batch_rows, only the columns asked for."""
    import lancedb

    from arrowsmith.commands.store import scan_batches
    from arrowsmith.commands.synthetic import clustered_vectors, generated_table

    data = generated_table(clustered_vectors(9000, dim=8, seed=2))
    tbl = lancedb.connect(tmp_path / "db").create_table("chunks", data.slice(0, 5000))
    tbl.add(data.slice(5000))
    tbl.delete("doc_id IN ('g3', 'g4999', 'g5000', 'g8999')")
    batches = list(scan_batches(tbl, ["id", "vector"], batch_rows=2048))
    assert [b.num_rows for b in batches] == [2048, 2048, 2048, 2048, 804]
    assert all(b.schema.names == ["id", "vector"] for b in batches)
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    assert ids == tbl.to_arrow().column("id").to_pylist()
    assert len(ids) == 8996 and "g3#0" not in ids and "g5001#0" in ids


def test_doc_keys_read_in_small_batches_equal_the_whole_table_and_prune_the_same(tmp_path, monkeypatch):
    """Issue 20: the doc_id → doc_key scan is reduced batch by batch (memory flat at a million rows).
    With 2-row batches every document's chunks straddle batches, a changed one's lie apart (its
    rows are rewritten at the table's end) and a tampered one has mixed keys across batches and
    within one: the answers equal a dict built from the whole table, and a prune run skips,
    replaces and prunes exactly as before."""
    from arrowsmith.commands import store

    write(tmp_path, chunks_batch({"a": (3, "ka"), "b": (2, "kb"), "c": (1, "kc"), "m": (3, "km"),
                                  "n": (2, "kn"), "p": (1, "kp"), "é/ü 'q'": (2, "kq")}))
    write(tmp_path, chunks_batch({"b": (3, "kb2")}))  # b's rows are rewritten at the end
    tbl = open_table(tmp_path)
    tbl.update(where="id = 'm#2'", values={"doc_key": "other"})  # m: mixed across batches
    tbl.update(where="id = 'n#1'", values={"doc_key": "zz"})
    monkeypatch.setattr(store, "SCAN_ROWS", 2)
    keys = store.load_doc_keys(open_table(tmp_path))
    rows = open_table(tmp_path).to_arrow().select(["doc_id", "doc_key"]).to_pylist()
    whole: dict[str, set[str]] = {}
    for r in rows:
        whole.setdefault(r["doc_id"], set()).add(r["doc_key"])
    assert len(keys) == len(whole) == 7
    for doc, found in whole.items():
        i = keys.find(doc)
        assert i >= 0 and keys.ids[i].as_py() == doc
        for key in ("ka", "kb", "kb2", "kc", "km", "kn", "kp", "kq", "other", "zz"):
            assert keys.holds(i, key) == (found == {key}), (doc, key)
    assert keys.find("x") == keys.find("a#0") == -1 and keys.find_all(["p", "x", "a"]) == [keys.find("p"), -1,
                                                                                              keys.find("a")]
    # a night: a unchanged (seen only through is_current), b and m changed, n kept although mixed
    # keys never make it current, c, p and q gone
    with StoreWriter(tmp_path, prune=True) as w:
        assert w.is_current("a", "ka") and not w.is_current("n", "kn")
        stats = w.write([chunks_batch({"b": (1, "kb3"), "m": (2, "km"), "n": (2, "kn"), "new": (1, "k")})])
    assert (stats.docs_skipped, stats.docs_written, stats.docs_replaced, stats.docs_pruned) == (1, 4, 3, 3)
    assert sorted(store_rows(tmp_path)) == ["a#0", "a#1", "a#2", "b#0", "m#0", "m#1", "n#0", "n#1", "new#0"]
    assert {d: k for d, k in store_rows(tmp_path).values()} == {"a": "ka", "b": "kb3", "m": "km", "n": "kn",
                                                                "new": "k"}
