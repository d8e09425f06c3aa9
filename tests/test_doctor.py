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
from conftest import DIM, chunks_batch, run

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
