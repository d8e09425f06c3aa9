"""Nightly builds (issue 20): `chunk --db` leaves documents the table holds unchanged unchunked,
`embed --db --prune` skips and keeps them; `index` compacts a new table before its first build.

Real model (all-MiniLM-L6-v2, fp32), real LanceDB, a handful of documents.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import chunks_batch, read_ipc, run, store_rows

EMBED = ["embed", "--dtype", "fp32", "--device", "cpu"]
NIGHT1 = {
    "a": "Alpha is the first letter of the Greek alphabet. It stands for beginnings.",
    "b": "Bravo is a word of praise, shouted at the end of a good performance.",
    "c": "Charlie was a common name in radio alphabets before the NATO one.",
    "d": "Delta is where a river meets the sea and drops its sand.",
}
# b changed, c deleted, e new; a and d as they were
NIGHT2 = {"a": NIGHT1["a"], "b": "Bravo, now rewritten: a cheer for the players.", "d": NIGHT1["d"],
          "e": "Echo is a sound that comes back from a far wall."}


def jsonl(path, docs: dict[str, str]) -> str:
    path.write_text("".join(json.dumps({"id": k, "text": v, "lang": "en"}) + "\n" for k, v in docs.items()))
    return str(path)


def chunk(*args: str):
    r = run(["chunk", *args, "--max-tokens", "32"])
    assert r.exit_code == 0, r.stderr
    return r


def embed(stream: bytes, *args: str):
    return run([*EMBED, *args], input=stream)


def vectors(db) -> dict[str, list[float]]:
    from arrowsmith.commands.store import open_table

    t = open_table(db).search().select(["id", "vector"]).limit(None).to_arrow()
    return dict(zip(t.column("id").to_pylist(), t.column("vector").to_pylist(), strict=True))


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Night 1 (a first build through `chunk --db`), then night 2 through the same command."""
    root = tmp_path_factory.mktemp("nightly")
    db = root / "store"
    first = chunk(jsonl(root / "night1.jsonl", NIGHT1), "--db", str(db))
    r = embed(first.stdout_bytes, "--db", str(db), "--prune")
    assert r.exit_code == 0, r.stderr
    before_rows, before_vectors = store_rows(db), vectors(db)
    second = chunk(jsonl(root / "night2.jsonl", NIGHT2), "--db", str(db))
    r = embed(second.stdout_bytes, "--db", str(db), "--prune")
    assert r.exit_code == 0, r.stderr
    return {"root": root, "db": db, "first": first, "second": second, "embed2": r,
            "before": before_rows, "before_vectors": before_vectors}


def test_first_night_has_no_table_so_every_document_is_chunked(nights):
    out = read_ipc(nights["first"].stdout_bytes)
    assert out.column("unchanged").to_pylist() == [False] * 4
    assert sorted(out.column("id").to_pylist()) == ["a", "b", "c", "d"]
    assert "unchanged" not in nights["first"].stderr


def test_unchanged_documents_are_marked_not_chunked(nights):
    out = read_ipc(nights["second"].stdout_bytes).to_pylist()
    marked = {r["id"]: r for r in out if r["unchanged"]}
    assert sorted(marked) == ["a", "d"]
    assert all(r["text"] is None and r["chunks"] is None and r["lang"] == "en" for r in marked.values())
    assert marked["a"]["doc_hash"] == [r for r in read_ipc(nights["first"].stdout_bytes).to_pylist()
                                       if r["id"] == "a"][0]["doc_hash"]
    assert sorted(r["id"] for r in out if not r["unchanged"]) == ["b", "e"]
    assert "2 chunked, 2 unchanged" in nights["second"].stderr


def test_unchanged_are_kept_changed_replaced_deleted_pruned(nights):
    after, before = store_rows(nights["db"]), nights["before"]
    docs = {doc for doc, _ in after.values()}
    assert docs == {"a", "b", "d", "e"}  # c pruned; a and d, which embed never saw the text of, kept
    for doc in ("a", "d"):  # not re-embedded: same rows, same keys, same vectors
        rows = {i: v for i, v in after.items() if v[0] == doc}
        assert rows == {i: v for i, v in before.items() if v[0] == doc}
        assert all(nights["before_vectors"][i] == vectors(nights["db"])[i] for i in rows)
    key_b = {k for d, k in after.values() if d == "b"}
    assert key_b.isdisjoint({k for d, k in before.values() if d == "b"})
    assert "2 unchanged, 2 embedded, 1 pruned" in nights["embed2"].stderr


def test_the_store_equals_a_full_rebuild_of_the_second_night(nights, tmp_path):
    """The keys chunk --db compares are embed's own: a plain pipe into a new store gives the same
    ids and doc_keys as the two nights did."""
    full = chunk(str(nights["root"] / "night2.jsonl"))
    r = embed(full.stdout_bytes, "--db", str(tmp_path / "ref"))
    assert r.exit_code == 0, r.stderr
    assert store_rows(tmp_path / "ref") == store_rows(nights["db"])


def test_a_rerun_embeds_nothing_and_changes_no_row(nights):
    stream = chunk(str(nights["root"] / "night2.jsonl"), "--db", str(nights["db"])).stdout_bytes
    assert read_ipc(stream).column("unchanged").to_pylist() == [True] * 4
    before = store_rows(nights["db"])
    r = embed(stream, "--db", str(nights["db"]), "--prune")
    assert r.exit_code == 0 and "4 unchanged, 0 embedded, 0 pruned" in r.stderr
    assert store_rows(nights["db"]) == before


def test_a_batch_is_marked_at_once_and_the_rest_chunked_in_slices(nights):
    """chunk --db checks a whole input batch against the store, then chunks what changed in
    slices: every document comes out once, the changed and new ones in input order with their
    chunks, with one row per chunk (--explode) the unchanged ones not at all."""
    import pyarrow as pa

    from arrowsmith.commands.chunk import ChunkStats, chunk_documents, make_chunker
    from arrowsmith.commands.chunk.stored import stored_keys

    docs = {**NIGHT2, "b": "Bravo, rewritten once more.", "f": "Foxtrot is a dance.", "g": "Golf is a game."}
    batch = pa.RecordBatch.from_pylist([{"id": k, "text": v, "lang": "en"} for k, v in docs.items()])
    chunker = make_chunker("sentences", None, 32, 0)
    stored = stored_keys(nights["db"], "chunks", chunker.describe())
    stats = ChunkStats()
    out = pa.Table.from_batches(list(chunk_documents([batch], max_tokens=32, stored=stored, stats=stats,
                                                     batch_docs=1)))
    rows = out.to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(docs)
    assert [r["id"] for r in rows if r["unchanged"]] == ["a", "d", "e"]
    assert [(r["id"], r["text"]) for r in rows if not r["unchanged"]] == [(d, docs[d]) for d in "bfg"]
    assert all(r["chunks"] for r in rows if not r["unchanged"]) and stats.unchanged == 3
    exploded = pa.Table.from_batches(list(chunk_documents([batch], max_tokens=32, stored=stored, explode=True,
                                                          batch_docs=2)))
    assert sorted(set(exploded.column("doc_id").to_pylist())) == ["b", "f", "g"]


def test_other_chunk_settings_chunk_everything_and_say_so(nights):
    r = run(["chunk", str(nights["root"] / "night2.jsonl"), "--max-tokens", "48", "--db", str(nights["db"])])
    assert r.exit_code == 0, r.stderr
    assert read_ipc(r.stdout_bytes).column("unchanged").to_pylist() == [False] * 4
    assert "max_tokens=48 (table: 32)" in r.stderr and "chunked again" in r.stderr


def test_a_marked_stream_needs_the_store_it_was_keyed_against(nights, tmp_path):
    stream = chunk(str(nights["root"] / "night2.jsonl"), "--db", str(nights["db"])).stdout_bytes
    # without a store the marked documents could only be dropped: refused before anything is embedded
    r = embed(stream, "-o", str(tmp_path / "out.arrows"))
    assert r.exit_code == 2 and "comes from `chunk --db`" in r.stderr
    assert not (tmp_path / "out.arrows").exists()
    # settings that change every key (another precision class) would need the texts chunk left out
    r = run(["embed", "--dtype", "bf16", "--device", "cpu", "--db", str(nights["db"])], input=stream)
    assert r.exit_code == 2 and "dtype='half' (table: 'fp32')" in r.stderr
    # another store does not hold the marked documents: bad input, nothing written
    r = embed(stream, "--db", str(tmp_path / "other"))
    assert r.exit_code == 65 and "marked it unchanged" in r.stderr
    assert not (tmp_path / "other" / "chunks.lance").exists()


def test_table_without_db_is_refused(tmp_path):
    r = run(["chunk", jsonl(tmp_path / "d.jsonl", NIGHT1), "--table", "t"])
    assert r.exit_code == 2 and "--table has no effect without --db" in r.stderr


def test_files_are_kept_by_the_same_key_a_touch_is_not_a_change(tmp_path):
    src, db = tmp_path / "docs", tmp_path / "store"
    src.mkdir()
    (src / "one.md").write_text("# One\n\nThe first file, about tides and the moon.\n")
    (src / "two.txt").write_text("The second file is about volcanoes and their ash.\n")
    r = embed(chunk(str(src), "--db", str(db)).stdout_bytes, "--db", str(db))
    assert r.exit_code == 0, r.stderr
    os.utime(src / "one.md", (1, 1))  # mtime is not part of the key
    (src / "two.txt").write_text("The second file, edited: volcanoes, ash and lava.\n")
    out = read_ipc(chunk(str(src), "--db", str(db)).stdout_bytes).to_pylist()
    assert {r["id"]: r["unchanged"] for r in out} == {"one.md": True, "two.txt": False}


def test_index_compacts_a_new_table_before_its_first_build_only(tmp_path, monkeypatch):
    """A table of many checkpoints is one fragment after its first `index`, answering the same ids;
    a later night's rows are compacted among themselves, the indexed fragment is not rewritten."""
    from arrowsmith.commands import index
    from arrowsmith.commands.store import StoreWriter

    monkeypatch.setattr(index, "COMPACT_MIN_ROWS", 0)  # 100k rows in the product: too slow here
    db = tmp_path / "store"

    def night(*parts: int) -> None:
        for part in parts:  # one commit (one fragment) each, as checkpoints make them
            with StoreWriter(db) as w:
                w.write([chunks_batch({f"d{part}-{i}": (3, f"k{part}-{i}") for i in range(10)})])

    night(0, 1, 2, 3)
    probes = [vectors(db)[i] for i in ("d0-0#0", "d3-9#2")]
    before = [nearest(db, v) for v in probes]
    assert len(fragments(db)) == 4
    index.build_indexes(db)
    (compacted,) = fragments(db)
    assert [nearest(db, v) for v in probes] == before
    night(4, 5)
    assert len(fragments(db)) == 3
    index.build_indexes(db)
    assert fragments(db)[0] == compacted and len(fragments(db)) == 2
    assert len(store_rows(db)) == 6 * 30


def test_the_text_is_stored_uncompressed_through_appends_and_the_nights_rewrite(tmp_path, monkeypatch):
    """Every night's `index` rewrites the fragments that hold deleted rows; Lance's string compression
    was half the CPU of that rewrite (benchmarks/RESULTS.md). Text that Lance would compress to less
    than half keeps its full size on disk in the first commit, in appended ones and after the rewrite."""
    from arrowsmith.commands import index
    from arrowsmith.commands.store import StoreWriter, table_path

    monkeypatch.setattr(index, "COMPACT_MIN_ROWS", 0)
    db = tmp_path / "store"

    def commit(part: int, prune: bool = False) -> int:
        docs = {f"d{part}-{i}": (4, f"k{part}") for i in range(25)}
        texts = {d: [f"{d} {c} " + "compressible " * 400 for c in range(4)] for d in docs}
        with StoreWriter(db, prune=prune) as w:
            w.write([chunks_batch(docs, texts=texts)])
        return sum(len(t) for d in docs for t in texts[d])

    def data_bytes() -> int:
        return sum(f.stat().st_size for f in (table_path(db) / "data").iterdir())

    text_bytes = commit(0) + commit(1)
    assert data_bytes() >= text_bytes  # compressed, this 1 MB of text and the vectors took 0.46 MB
    index.build_indexes(db, fts=False)
    before = data_bytes()
    commit(1, prune=True)  # the night: part 1 unchanged, part 0 gone
    index.build_indexes(db, fts=False)
    assert len(store_rows(db)) == 100
    assert data_bytes() - before >= text_bytes / 2  # part 1's text, rewritten in full


def fragments(db) -> list[int]:
    """The ids of the fragments holding rows (a row address is fragment id << 32 | offset)."""
    from arrowsmith.commands.store import open_table

    t = open_table(db).search().select(["id", "_rowaddr"]).limit(None).to_arrow()
    return sorted({a >> 32 for a in t.column("_rowaddr").to_pylist()})


def nearest(db, vector) -> list[str]:
    from arrowsmith.commands.store import open_table

    return open_table(db).search(vector).limit(10).select(["id"]).to_arrow().column("id").to_pylist()


def test_a_scan_after_a_prune_reads_every_live_row_once_in_table_order(tmp_path):
    """doctor and compress scan by ranges of row ids; a night's --prune leaves deleted rows in the
    compacted fragment, where ranges of row offsets were 150x slower (benchmarks/RESULTS.md)."""
    from arrowsmith.commands.store import StoreWriter, open_table, scan_batches

    db = tmp_path / "store"
    docs = {f"d{i}": (3, f"k{i}") for i in range(40)}
    with StoreWriter(db) as w:
        w.write([chunks_batch(docs)])
    with StoreWriter(db, prune=True) as w:
        w.write([chunks_batch({d: v for i, (d, v) in enumerate(docs.items()) if i % 7})])
    tbl = open_table(db)
    got = [i for b in scan_batches(tbl, ["id", "doc_id"], batch_rows=16) for i in b.column("id").to_pylist()]
    assert got == tbl.search().select(["id"]).limit(None).to_arrow().column("id").to_pylist()
    assert len(got) == len(set(got)) == 34 * 3 and not any(i.startswith("d7#") for i in got)
