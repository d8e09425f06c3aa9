"""Issue 20: late chunking's default window overlap changed; tables built at the old default go on.

A late table records its window and overlap, and both are part of every document's doc_key, so
`embed --late --db` without `--window-overlap` continues a table at its recorded overlap (no
refusal, nothing re-embedded), while new tables and streams get the new default.
"""

from __future__ import annotations

import json

import lancedb
import numpy as np
import pytest
from conftest import read_ipc, run

OLD_DEFAULT = 63  # a quarter of all-MiniLM-L6-v2's 254 text tokens, the default before issue 20
NEW_DEFAULT = 15  # a sixteenth of them since issue 20 (commands/embed/params.py says why)


def long_text(k: int, sentences: int = 45) -> str:
    # ~600 tokens: three 254-token windows, so the overlap decides vectors near two cuts
    return " ".join(f"Sentence {i} of report {k} says the tide at pier {i % 7} rose by {i + k} cm."
                    for i in range(sentences))


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    """chunk output of the first run's documents (a long and a short one) and the second's (the
    same two, unchanged, and a new long one)."""
    root = tmp_path_factory.mktemp("late-overlap")
    docs = {"d0": long_text(0), "d1": "A short note about the harbour.", "d2": long_text(2)}
    out = {}
    for name, ids in (("first", ["d0", "d1"]), ("second", ["d0", "d1", "d2"])):
        src = root / f"{name}.jsonl"
        src.write_text("".join(json.dumps({"id": i, "text": docs[i]}) + "\n" for i in ids))
        out[name] = root / f"{name}.arrows"
        r = run(["chunk", str(src), "--max-tokens", "64", "-o", str(out[name])])
        assert r.exit_code == 0, r.stderr
    return out


def embed(*args: str):
    return run(["embed", "--late", "--dtype", "fp32", *args])


def meta_of(schema) -> dict:
    return json.loads(schema.metadata[b"arrowsmith.model"])


def vectors_by_id(table) -> dict[str, np.ndarray]:
    """id → vector of an embedded-chunks table (a stream's or a store's)."""
    return {r["id"]: np.asarray(r["vector"]) for r in table.select(["id", "vector"]).to_pylist()}


def test_a_table_at_the_old_default_overlap_goes_on_at_it(chunked, tmp_path):
    db = str(tmp_path / "store")
    first = embed(str(chunked["first"]), "--window-overlap", str(OLD_DEFAULT), "--db", db)
    assert first.exit_code == 0, first.stderr
    table = lancedb.connect(db).open_table("chunks")
    assert meta_of(table.schema)["window_overlap"] == OLD_DEFAULT
    before = vectors_by_id(table.to_arrow())

    # no --window-overlap: the table's overlap, so d0 and d1 are current and only d2 is embedded
    again = embed(str(chunked["second"]), "--db", db)
    assert again.exit_code == 0, again.stderr
    assert "3 documents: 2 unchanged, 1 embedded" in again.stderr
    table = lancedb.connect(db).open_table("chunks")
    meta = meta_of(table.schema)
    assert (meta["window"], meta["window_overlap"]) == (256, OLD_DEFAULT)
    stored = vectors_by_id(table.to_arrow())
    assert all(np.array_equal(stored[i], v) for i, v in before.items())  # d0, d1 untouched

    # d2's vectors are those of an explicit run at the table's overlap, not the new default's
    explicit = read_ipc(embed(str(chunked["second"]), "--window-overlap", str(OLD_DEFAULT)).stdout_bytes)
    fresh = read_ipc(embed(str(chunked["second"])).stdout_bytes)
    assert meta_of(fresh.schema)["window_overlap"] == NEW_DEFAULT  # a stream gets the new default
    want, other = vectors_by_id(explicit), vectors_by_id(fresh)
    new_ids = sorted(set(stored) - set(before))
    assert len(new_ids) > 3 and all(i.startswith("d2#") for i in new_ids)
    cos = [float(stored[i] @ want[i]) for i in new_ids]
    assert min(cos) > 0.99999, cos
    assert min(float(stored[i] @ other[i]) for i in new_ids) < 0.9999  # the overlap mattered here


def test_an_explicit_other_overlap_is_refused_and_a_new_table_gets_the_default(chunked, tmp_path):
    db = str(tmp_path / "store")
    assert embed(str(chunked["first"]), "--window-overlap", str(OLD_DEFAULT), "--db", db).exit_code == 0
    version = lancedb.connect(db).open_table("chunks").version
    other = embed(str(chunked["second"]), "--window-overlap", "0", "--db", db)
    assert other.exit_code == 2
    assert f"window_overlap={OLD_DEFAULT} (this run: 0)" in other.stderr
    assert "--replace" in other.stderr
    assert lancedb.connect(db).open_table("chunks").version == version  # nothing written

    new = embed(str(chunked["first"]), "--db", db, "--table", "fresh")
    assert new.exit_code == 0, new.stderr
    assert meta_of(lancedb.connect(db).open_table("fresh").schema)["window_overlap"] == NEW_DEFAULT
