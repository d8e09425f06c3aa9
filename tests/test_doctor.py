"""`arrowsmith doctor` on real LanceDB tables, healthy and deliberately damaged.

Damage is done the way it happens in the field: rows added behind the writer's back (what a
concurrent merge_insert without the lock does, lance issue 4585), a killed writer's temp
files, a data file lost from under an old version.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa
import pytest
from conftest import DIM, chunks_batch, run, to_ipc

from arrowsmith.commands.doctor import diagnose
from arrowsmith.commands.errors import UsageError
from arrowsmith.commands.store import StoreWriter, connect, table_lock, table_path

DOCS = {"a": (3, "ka"), "b": (2, "kb"), "c": (1, "kc")}


def make_store(db, *batches) -> None:
    for batch in batches:
        with StoreWriter(db, checkpoint_rows=100) as w:
            w.write([batch])


def raw_add(db, batch: pa.RecordBatch, **kw) -> None:
    """Append rows without the writer: no lock, no doc grouping, no checks."""
    tbl = connect(db).open_table("chunks")
    tbl.add(pa.Table.from_batches([batch]).cast(tbl.schema), **kw)


def doctor(db, *args):
    return run(["doctor", "--db", str(db), *args])


def findings(result) -> list[str]:
    return [line for line in result.stdout_bytes.decode().splitlines() if line]


def age(path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.fixture
def store(tmp_path):
    db = tmp_path / "store"
    make_store(db, chunks_batch(DOCS), chunks_batch({"d": (2, "kd")}))
    return db


def test_healthy_store_exits_0_with_no_findings(store):
    r = doctor(store)
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == b""
    assert "version 2: 8 rows, 4 documents: healthy" in r.stderr


def test_json_report(store):
    r = doctor(store, "--json")
    assert r.exit_code == 0
    report = json.loads(r.stdout_bytes)
    assert (report["healthy"], report["rows"], report["documents"], report["dim"]) == (True, 8, 4, DIM)
    assert report["version"] == 2 and report["findings"] == []


def test_library_scans_in_small_batches(store):
    report = diagnose(store, batch_rows=3)
    assert report.healthy and report.rows == 8 and report.documents == 4


def test_duplicate_chunk_id_is_found(store):
    raw_add(store, chunks_batch({"b": (1, "kb")}))  # b#0 a second time
    r = doctor(store)
    assert r.exit_code == 1
    lines = findings(r)
    assert "rows: 9 rows but 8 distinct chunk ids: 1 ids stored more than once (e.g. 'b#0' ×2)" in lines
    assert any(line.startswith("chunks:") and "b (3 rows, highest index 1)" in line for line in lines)


def test_mixed_doc_keys_and_chunk_gaps_are_found(store):
    batch = chunks_batch({"e": (3, "ke")})
    keys = pa.array(["ke", "ke", "OTHER"])
    raw_add(store, batch.set_column(batch.schema.get_field_index("doc_key"), "doc_key", keys))
    gap = chunks_batch({"f": (3, "kf")}).slice(1, 2)  # f#1 and f#2: chunk 0 is missing
    raw_add(store, gap)
    lines = findings(doctor(store))
    assert "doc_key: 1 documents whose chunks carry different doc_keys (e.g. 'e')" in lines
    assert any(line.startswith("chunks:") and "'f (2 rows, highest index 2)'" in line for line in lines)


def test_bad_vectors_are_found(store):
    batch = chunks_batch({"n": (3, "kn")})
    vec = np.asarray(batch.column("vector").flatten()).reshape(3, DIM).copy()
    vec[0, 5] = np.nan  # LanceDB refuses NaN on add; on_bad_vectors="null" stores a null instead
    vec[1] *= 2.0  # norm 2 in a normalised model's table
    vec[2, 0] = np.inf
    arr = pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), DIM)
    raw_add(store, batch.set_column(batch.schema.get_field_index("vector"), "vector", arr),
            on_bad_vectors="null")
    r = doctor(store)
    assert r.exit_code == 1
    lines = findings(r)
    assert "vector: 1 null vectors (e.g. 'n#0')" in lines
    assert "vector: 1 vectors with NaN or infinite components (e.g. 'n#2')" in lines
    assert "vector: 1 vectors whose norm is not 1 ± 0.001 though the model normalises " \
           "(e.g. 'n#1 (norm 2.0000)')" in lines


def test_stale_temp_files_need_fix_and_fix_removes_them(store):
    data = table_path(store) / "data"
    old = data / ".tmp_killed_writer.lance"
    old.write_bytes(b"x" * 100)
    age(old, 7200)
    young = data / ".tmp_live_writer.lance"
    young.write_bytes(b"y")
    r = doctor(store)
    assert r.exit_code == 1
    assert findings(r) == ["stale: 1 temporary or orphaned files older than 1h (chunks.lance/data/"
                           ".tmp_killed_writer.lance); `arrowsmith doctor --fix` removes them"]
    assert "note: 1 temporary or orphaned files younger than 1h" in r.stderr
    r = doctor(store, "--fix")
    assert r.exit_code == 0, r.stdout_bytes
    assert not old.exists() and young.exists()  # the young one may be a live writer's
    assert f"removed {old}" in r.stderr
    r = doctor(store, "--fix", "--grace", "0")
    assert r.exit_code == 0 and not young.exists()
    assert "younger than" not in r.stderr


def test_fix_takes_the_table_lock(store):
    old = table_path(store) / "data" / ".tmp_x"
    old.write_bytes(b"x")
    age(old, 7200)
    from concurrent.futures import ThreadPoolExecutor

    # the lock nests within one thread, so hold it from another (as another writer would)
    with table_lock(store), ThreadPoolExecutor(1) as pool:
        r = pool.submit(doctor, store, "--fix").result()
    assert r.exit_code == 75
    assert "another writer" in r.stderr and old.exists()


def test_orphan_data_file_of_a_killed_commit_is_stale(store):
    # a data file no manifest mentions: what a writer killed before its commit leaves
    data = table_path(store) / "data"
    src = next(data.glob("*.lance"))
    orphan = data / ("0" * 8 + src.name[8:])
    orphan.write_bytes(src.read_bytes())
    age(orphan, 7200)
    r = doctor(store)
    assert r.exit_code == 1 and orphan.name in r.stdout_bytes.decode()
    assert doctor(store, "--fix").exit_code == 0
    assert not orphan.exists() and src.exists()
    assert doctor(store).exit_code == 0


def test_unreadable_previous_version_is_found(tmp_path):
    db = tmp_path / "store"
    make_store(db, chunks_batch(DOCS))
    v1_files = set((table_path(db) / "data").glob("*.lance"))
    connect(db).open_table("chunks").add(
        pa.Table.from_batches([chunks_batch({"z": (1, "kz")})]).cast(
            connect(db).open_table("chunks").schema), mode="overwrite")
    for p in v1_files:  # only version 1 referenced them
        p.unlink()
    r = doctor(db)
    assert r.exit_code == 1
    assert findings(r)[0].startswith("version: the previous version cannot be read")


def test_missing_table_is_a_usage_error(tmp_path):
    r = doctor(tmp_path / "nothing")
    assert r.exit_code == 2
    assert "no table 'chunks'" in r.stderr


def test_first_write_killed_before_its_first_commit(tmp_path):
    """Only <table>.lock exists (issue 10: was exit 2, "holds no arrowsmith store")."""
    db = tmp_path / "store"
    with table_lock(db):
        pass
    assert sorted(p.name for p in db.iterdir()) == ["chunks.lock"]
    r = doctor(db)
    assert r.exit_code == 1, r.stderr
    (line,) = findings(r)
    assert line.startswith("table: ") and "nothing committed yet" in line and "re-run" in line
    report = json.loads(doctor(db, "--json").stdout_bytes)
    assert report["healthy"] is False and report["findings"][0]["check"] == "table"
    assert doctor(db, "--table", "other").exit_code == 2  # no trace of that table: a usage error


def test_wait_without_fix_is_refused(store):
    r = doctor(store, "--wait")
    assert r.exit_code == 2 and "--wait has no effect without --fix" in r.stderr
    assert doctor(store, "--fix", "--wait").exit_code == 0


def test_table_dir_without_any_version(tmp_path):
    db = tmp_path / "store"
    (table_path(db) / "data").mkdir(parents=True)
    (table_path(db) / "data" / "x.lance").write_bytes(b"partial")
    r = doctor(db)
    assert r.exit_code == 1
    assert findings(r)[0].startswith("table: ") and "holds no committed version" in findings(r)[0]


# ------------------------------------------------------------------ doc_key recomputation (real model)


def embed_rows(db, model, texts: dict[str, str], **kw) -> None:
    from arrowsmith.commands.embed import embed_batches

    docs = pa.table({"id": list(texts), "text": list(texts.values())})
    with StoreWriter(db) as w:
        w.write(embed_batches(docs.to_batches(), model, skip_doc=w.is_current, **kw))


TEXTS = {"a": "Cranes lift containers.", "b": "Ships sail at night.", "c": "Steel is strong."}


def test_doc_keys_of_text_rows_are_recomputed(tmp_path, model):
    db = tmp_path / "store"
    embed_rows(db, model, TEXTS)
    report = diagnose(db)
    assert report.healthy, report.findings
    assert not any("consistency only" in n for n in report.notes)
    tbl = connect(db).open_table("chunks")
    tbl.update(where="doc_id = 'b'", values={"doc_key": "0" * 64})  # a key no parameters give
    lines = findings(doctor(db))
    assert lines == ["doc_key: 1 chunks whose doc_key does not match their document and the table's model "
                     "parameters (embedded with other parameters than the table records?) (e.g. 'b')"]


def test_reembedding_with_another_prompt_is_refused_and_the_table_stays_healthy(tmp_path, model):
    # Found by doctor in an earlier version: a second run with another prompt re-embedded every
    # document but left the first run's metadata, so the table no longer described its vectors.
    db = tmp_path / "store"
    embed_rows(db, model, TEXTS)
    version = connect(db).open_table("chunks").version
    with pytest.raises(UsageError, match=r"prompt='' \(this run: 'passage: '\)"):
        embed_rows(db, model, TEXTS, prompt="passage: ")
    assert connect(db).open_table("chunks").version == version
    assert diagnose(db).healthy
    # --replace rebuilds it: metadata and every doc_key now agree with the new prompt
    with StoreWriter(db, replace=True) as w:
        from arrowsmith.commands.embed import embed_batches, embedding_meta, resolve_params

        w.check_meta(embedding_meta(model, resolve_params(model, prompt="passage: ")))
        w.write(embed_batches(pa.table({"id": list(TEXTS), "text": list(TEXTS.values())}).to_batches(),
                              model, skip_doc=w.is_current, prompt="passage: "))
    table = connect(db).open_table("chunks")
    assert json.loads(table.schema.metadata[b"arrowsmith.model"])["prompt"] == "passage: "
    assert table.count_rows() == 3 and diagnose(db).healthy


# ------------------------------------------------------------------ damage that breaks `query` (issue 21)


@pytest.fixture
def indexed(tmp_path):
    """A store with the indexes `index` builds by default (FTS on text, BTree on doc_id)."""
    from arrowsmith.commands.index import build_indexes

    db = tmp_path / "store"
    make_store(db, chunks_batch(DOCS), chunks_batch({"d": (2, "kd")}))
    build_indexes(db)
    return db


def index_dir(db, name: str):
    """The `_indices/<uuid>/` directory of index ``name`` (found by the file its kind writes; of
    the two BTrees, id's values are chunk ids, the only ones here with a '#')."""
    marker = {"text_fts": "metadata.lance", "doc_id_idx": "page_lookup.lance"}[name]
    found = [p.parent for p in (table_path(db) / "_indices").glob(f"*/{marker}")]
    if name == "doc_id_idx":
        found = [p for p in found if b"#" not in (p / "page_data.lance").read_bytes()]
    (path,) = found
    return path


def fts_query(db):
    return run(["query", "--db", str(db), "--mode", "fts", "chunk", "--format", "jsonl"])


def test_deleted_index_files_are_found_and_index_rebuilds_them_without_force(indexed):
    import shutil

    assert doctor(indexed).exit_code == 0 and fts_query(indexed).exit_code == 0
    shutil.rmtree(index_dir(indexed, "text_fts"))
    r = doctor(indexed)
    assert r.exit_code == 1
    (line,) = findings(r)
    assert line.startswith("index: index text_fts cannot be opened (") and "is missing" in line
    assert line.endswith(f"`arrowsmith index --db {indexed}` rebuilds it")
    assert json.loads(doctor(indexed, "--json").stdout_bytes)["findings"][0]["check"] == "index"
    # query: one line naming the file and the repair, exit 74 (was exit 1, a raw lance error)
    q = fts_query(indexed)
    assert q.exit_code == 74, q.stderr
    error = [line for line in q.stderr.splitlines() if line.startswith("arrowsmith: error:")]
    assert len(error) == 1 and "_indices/" in error[0] and "an index file" in error[0]
    assert "Traceback" not in q.stderr and f"`arrowsmith index --db {indexed}` rebuilds it" in error[0]
    # index: the unreadable index counts as missing (was "indexes up to date")
    version = connect(indexed).open_table("chunks").version
    r = run(["index", "--db", str(indexed)])
    assert r.exit_code == 0, r.stderr
    assert "index text_fts cannot be opened" in r.stderr and "built fts text" in r.stderr
    assert connect(indexed).open_table("chunks").version > version
    assert doctor(indexed).exit_code == 0
    q = fts_query(indexed)
    assert q.exit_code == 0 and b'"id": ' in q.stdout_bytes


def test_deleted_scalar_index_files_are_rebuilt_too(indexed):
    import shutil

    shutil.rmtree(index_dir(indexed, "doc_id_idx"))
    assert findings(doctor(indexed))[0].startswith("index: index doc_id_idx cannot be opened")
    r = run(["index", "--db", str(indexed)])
    assert r.exit_code == 0 and "built scalar doc_id" in r.stderr
    assert doctor(indexed).exit_code == 0


def test_deleted_data_file_is_a_finding_and_query_exits_74(indexed):
    data = sorted((table_path(indexed) / "data").glob("*.lance"))
    assert len(data) == 2  # one per commit
    data[0].unlink()
    r = doctor(indexed)
    assert r.exit_code == 1
    lines = findings(r)
    assert lines[0].startswith(f"data: chunks.lance/data/{data[0].name} is missing (a data file of "
                               "chunks.lance): version ")
    report = json.loads(doctor(indexed, "--json").stdout_bytes)  # a cron job parsing it gets the finding
    assert report["healthy"] is False and report["findings"][0]["check"] == "data"
    assert data[0].name in report["findings"][0]["message"]
    q = fts_query(indexed)
    assert q.exit_code == 74, q.stderr
    error = [line for line in q.stderr.splitlines() if line.startswith("arrowsmith: error:")]
    assert error == [f"arrowsmith: error: chunks.lance/data/{data[0].name} is missing (a data file of "
                     f"chunks.lance): the table cannot be read; `arrowsmith doctor --db {indexed}` "
                     "reports the damage"]
    # a writer opening the table says the same (exit 74), and commits nothing
    version = connect(indexed).open_table("chunks").version
    new = to_ipc(pa.Table.from_batches([chunks_batch({"e": (1, "ke")})]))
    r = run(["index", "--db", str(indexed)], input=new)
    assert r.exit_code == 74, r.stderr
    assert f"{data[0].name} is missing (a data file of chunks.lance)" in r.stderr
    assert connect(indexed).open_table("chunks").version == version


def test_lost_newest_manifest_is_a_version_mismatch(store):
    versions = table_path(store) / "_versions"
    manifests = sorted(versions.glob("*.manifest"), key=lambda p: int(p.stem))
    assert len(manifests) == 2 and len(manifests[0].stem) >= 19  # v2 names count down: newest first
    assert json.loads((store / "chunks.arrowsmith.json").read_text())["committed_version"] == 2
    manifests[0].unlink()
    assert connect(store).open_table("chunks").version == 1  # silently one version back
    r = doctor(store)
    assert r.exit_code == 1
    assert findings(r) == ["version: the table is at version 1 but chunks.arrowsmith.json records "
                           "version 2 committed: the newest manifest(s) are missing from "
                           "chunks.lance/_versions and the later commits are lost; restore _versions "
                           "from a backup, or re-run the build and `arrowsmith index` (they rewrite "
                           "what is missing)"]
    # the re-run writes the lost document again and the record agrees once more
    make_store(store, chunks_batch({"d": (2, "kd")}))
    assert doctor(store).exit_code == 0


def test_a_new_table_starts_a_new_version_record(store):
    import shutil

    shutil.rmtree(table_path(store))  # deleted to rebuild it: version 1 again is no damage
    make_store(store, chunks_batch(DOCS))
    assert json.loads((store / "chunks.arrowsmith.json").read_text()) == {"committed_version": 1}
    assert doctor(store).exit_code == 0


def test_empty_index_directory_of_a_failed_build_is_stale(indexed):
    empty = table_path(indexed) / "_indices" / "0f3c2a64-0000-4000-8000-000000000000"
    empty.mkdir()
    r = doctor(indexed)
    assert r.exit_code == 0 and "note: 1 temporary or orphaned files younger than 1h" in r.stderr
    age(empty, 7200)
    r = doctor(indexed)
    assert r.exit_code == 1
    assert findings(r) == [f"stale: 1 temporary or orphaned files older than 1h (chunks.lance/_indices/"
                           f"{empty.name}); `arrowsmith doctor --fix` removes them"]
    r = doctor(indexed, "--fix")
    assert r.exit_code == 0, r.stdout_bytes
    assert not empty.exists() and f"removed {empty}" in r.stderr
    assert fts_query(indexed).exit_code == 0  # the real indexes untouched


def test_index_on_a_table_with_a_deleted_data_file_is_exit_74_naming_it(indexed):
    data = sorted((table_path(indexed) / "data").glob("*.lance"))
    data[0].unlink()
    for args in (["--stats"], ["--force"], ["--optimize"]):
        r = run(["index", "--db", str(indexed), *args])
        assert r.exit_code == 74, (args, r.stderr)
        assert f"{data[0].name} is missing (a data file of chunks.lance)" in r.stderr
        assert "Traceback" not in r.stderr


def test_deleted_vector_index_is_rebuilt_with_the_recorded_parameters(tmp_path):
    import shutil

    from arrowsmith.commands.index import build_indexes

    db = tmp_path / "store"
    make_store(db, chunks_batch({f"d{i}": (3, f"k{i}") for i in range(100)}))  # 300 rows: enough to train
    build_indexes(db, vector_type="ivf_pq")
    (vector_dir,) = [p.parent for p in (table_path(db) / "_indices").glob("*/auxiliary.idx")]
    shutil.rmtree(vector_dir)
    lines = findings(doctor(db))
    assert len(lines) == 1 and lines[0].startswith("index: index vector_idx cannot be opened (")
    # a plain `index` (--type auto builds no vector index below 100k rows) rebuilds what was asked before
    r = run(["index", "--db", str(db)])
    assert r.exit_code == 0, r.stderr
    assert "built vector IVF_PQ" in r.stderr
    assert {ix.name for ix in connect(db).open_table("chunks").list_indices()} >= {"vector_idx"}
    assert doctor(db).exit_code == 0


def test_a_document_split_across_scanned_batches_is_judged_whole(store):
    """doctor keeps a few numbers per document and batch and merges them: chunks of one document
    that lie in different batches still count together (their keys, their indexes)."""
    raw_add(store, chunks_batch({"g": (2, "kg")}))
    raw_add(store, chunks_batch({"g": (3, "kg")}).slice(2, 1))  # g#2, same key, later rows: whole
    later = chunks_batch({"h": (2, "kh")}).slice(1, 1)
    raw_add(store, chunks_batch({"h": (1, "kh")}))
    raw_add(store, later.set_column(later.schema.get_field_index("doc_key"), "doc_key",
                                    pa.array(["OTHER"])))  # h#1 with another key, in another batch
    raw_add(store, chunks_batch({"i": (3, "ki")}).slice(0, 1))
    raw_add(store, chunks_batch({"i": (3, "ki")}).slice(2, 1))  # i#0 and i#2: i#1 lost
    for rows in (2, 1000):  # documents split across batches, and each in one batch
        report = diagnose(store, batch_rows=rows)
        assert report.rows == 15 and report.documents == 7
        problems = {f.check: f.message for f in report.findings}
        assert problems == {"doc_key": "1 documents whose chunks carry different doc_keys (e.g. 'h')",
                            "chunks": "1 documents whose chunk indexes are not 0..n-1 (chunks lost or "
                                      "duplicated) (e.g. 'i (2 rows, highest index 2)')"}, rows


def test_indexes_of_a_big_table_are_opened_in_a_child_process(indexed, monkeypatch):
    """From index.ISOLATE_MIN_ROWS rows the indexes are opened by a child (the cache it fills
    would stay in doctor's process): a deleted one is found all the same."""
    import shutil

    from arrowsmith.commands import index

    monkeypatch.setattr(index, "ISOLATE_MIN_ROWS", 1)
    monkeypatch.setattr(index, "ISOLATE_MIN_BYTES", 0)  # and the child is started ahead
    assert diagnose(indexed).healthy
    shutil.rmtree(index_dir(indexed, "text_fts"))
    (finding,) = diagnose(indexed).findings
    assert finding.check == "index" and finding.message.startswith("index text_fts cannot be opened (")
    assert "is missing" in finding.message
