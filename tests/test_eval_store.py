"""eval's builds are `chunk | embed --db` builds: same table metadata, same hits (issue 10)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from conftest import cranfield_subset, read_ipc, run, to_ipc

from arrowsmith.commands.evaluate.data import load_beir
from arrowsmith.commands.schemas import CHUNKER, MODEL, read_meta
from arrowsmith.commands.store import open_table

N_DOCS = 30
QUERIES = ["flow over a flat plate", "heat transfer at hypersonic speed"]


@pytest.fixture(scope="module")
def tiny(cranfield, tmp_path_factory):
    """The first 30 Cranfield documents and the queries judged on them."""
    return cranfield_subset(cranfield, tmp_path_factory.mktemp("cran30"), N_DOCS)


def _documents(root) -> bytes:
    """The documents eval embeds (title + " " + text), as an Arrow stream for `chunk`."""
    return to_ipc(pa.Table.from_batches(list(load_beir(root).corpus_batches())))


def _query(db) -> pa.Table:
    result = run(["query", "--db", str(db), *QUERIES, "--k", "5", "--format", "arrows"])
    assert result.exit_code == 0, result.stderr
    return read_ipc(result.stdout_bytes).select(["query_id", "rank", "id", "score"])


@pytest.mark.slow
@pytest.mark.parametrize("late", [False, True], ids=["naive", "late"])
def test_kept_store_equals_chunk_embed_db(tiny, tmp_path, late):
    flag = "--late" if late else "--naive"
    work = tmp_path / "work"
    result = run(["eval", str(tiny), flag, "--max-tokens", "64", "--device", "cpu", "--dtype", "fp32",
                  "--workdir", str(work), "--resamples", "100", "--json"])
    assert result.exit_code == 0, result.stderr

    chunked = run(["chunk", "-", "--max-tokens", "64", "--format", "arrows"], input=_documents(tiny))
    assert chunked.exit_code == 0, chunked.stderr
    db = tmp_path / "cli"
    embedded = run(["embed", "-", flag, "--device", "cpu", "--dtype", "fp32", "--db", str(db)],
                   input=chunked.stdout_bytes)
    assert embedded.exit_code == 0, embedded.stderr

    kept, built = read_meta(open_table(work / "store-0").schema), read_meta(open_table(db).schema)
    assert kept[MODEL] == built[MODEL]
    assert kept[MODEL]["late"] is late and "query_prompt" in kept[MODEL]
    assert late == ("window" in kept[MODEL])
    assert kept[CHUNKER] == built[CHUNKER] and kept[CHUNKER]["version"] == "1"
    assert kept == built
    assert _query(work / "store-0").equals(_query(db))


@pytest.mark.slow
def test_no_chunking_store_records_chunker_like_chunk(tiny, tmp_path):
    work = tmp_path / "work"
    result = run(["eval", str(tiny), "--chunker", "none", "--device", "cpu", "--dtype", "fp32",
                  "--workdir", str(work), "--resamples", "100", "--json"])
    assert result.exit_code == 0, result.stderr
    meta = read_meta(open_table(work / "store-0").schema)
    assert meta[CHUNKER]["strategy"] == "none" and meta[CHUNKER]["version"] == "1"
    assert set(meta[CHUNKER]) == {"strategy", "tokenizer", "max_tokens", "overlap", "version"}
    assert "prompt" in meta[MODEL] and meta[MODEL]["late"] is False


@pytest.fixture(scope="module")
def indexed(tiny, tmp_path_factory, model):
    """A store of the tiny corpus with a BM25 index and a binary compressed representation."""
    from arrowsmith.commands.chunk import chunk_documents
    from arrowsmith.commands.compress import compress_table
    from arrowsmith.commands.embed import embed_to_store
    from arrowsmith.commands.index import build_indexes

    db = tmp_path_factory.mktemp("indexed") / "store"
    embed_to_store(chunk_documents(load_beir(tiny).corpus_batches(), max_tokens=64), model, str(db))
    build_indexes(str(db), "chunks", vector_type="none", fts=True)
    compress_table(str(db), "chunks", "binary")
    return db


def _eval_db(tiny, db, *args) -> list[dict]:
    result = run(["eval", str(tiny), "--db", str(db), "--device", "cpu", "--dtype", "fp32",
                  "--resamples", "100", "--json", *args])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout_bytes)["configs"]


@pytest.mark.slow
def test_compressed_configuration_reports_its_code_bytes(tiny, indexed):
    """Binary codes are dim/8 bytes; exact search and use_compressed=false read float32 (dim·4)."""
    configs = _eval_db(tiny, indexed, "--compare", "ann", "--compare", "exact",
                       "--compare", "ann,use_compressed=false", "--compare", "fts")
    assert [c["bytes_per_vector"] for c in configs] == [384 / 8, 384 * 4, 384 * 4, None]
    assert configs[0]["metrics"] != configs[1]["metrics"]  # the binary codes were searched


@pytest.mark.slow
def test_mode_auto_is_query_default(tiny, indexed, tmp_path):
    """auto = hybrid RRF on a table with a full-text index, vector on a fresh build (as query)."""
    on_db = _eval_db(tiny, indexed, "--mode", "auto", "--compare", "auto", "--compare", "mode=hybrid")
    assert on_db[0]["metrics"] == on_db[1]["metrics"]
    assert any("mode auto: hybrid" in n for n in on_db[0]["notes"])
    result = run(["eval", str(tiny), "--max-tokens", "64", "--device", "cpu", "--dtype", "fp32",
                  "--compare", "fts", "--compare", "mode=auto", "--compare", "vector",
                  "--resamples", "100", "--json"])
    assert result.exit_code == 0, result.stderr
    fts, auto, vector = json.loads(result.stdout_bytes)["configs"]
    # the BM25 index eval built for `fts` does not turn the later auto into hybrid
    assert auto["metrics"] == vector["metrics"] and auto["metrics"] != fts["metrics"]
    assert any("mode auto: vector" in n for n in auto["notes"])
