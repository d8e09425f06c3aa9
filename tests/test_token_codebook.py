"""The fitted token precision ``residual`` (ColBERTv2's residual codes) and its codebook, with the
real model and LanceDB: one codebook per table, fitted on the first batch, kept beside the table
under its sha256, reused by every continuing run, carried by ``-o`` streams, checked by doctor."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import read_ipc, run

from arrowsmith.commands.spaces import codebook as codebooks
from arrowsmith.commands.spaces import multi
from arrowsmith.commands.store import open_table

EMBED = ["embed", "--dtype", "fp32", "--device", "cpu", "--multivector"]
RESIDUAL = [*EMBED, "--token-precision", "residual"]


@pytest.fixture(scope="module")
def chunked(samples_chunked_64) -> bytes:
    return samples_chunked_64


@pytest.fixture(scope="module")
def stores(chunked, tmp_path_factory) -> dict[str, Path]:
    """The samples' token vectors stored at float32 (the reference) and as residual codes."""
    root = tmp_path_factory.mktemp("codebook")
    return {"f32": embedded(root / "f32", chunked, "float32"),
            "residual": embedded(root / "residual", chunked)}


def embedded(db: Path, chunked: bytes, precision: str = "residual") -> Path:
    r = run([*EMBED, "--db", str(db), "--token-precision", precision], input=chunked)
    assert r.exit_code == 0, r.stderr
    return db


def model_meta(db: Path) -> dict:
    return json.loads(open_table(db).schema.metadata[b"arrowsmith.model"])


def codebook_files(db: Path) -> list[Path]:
    return sorted(db.glob("chunks.tokens-*.codebook"))


def sorted_tokens(db: Path, s: multi.TokenSettings) -> tuple[list[str], np.ndarray, np.ndarray]:
    t = open_table(db).to_arrow().sort_by("id")
    flat, offsets = multi.decode(t.column(multi.COLUMN), s)
    return t.column("id").to_pylist(), flat, offsets


def test_codebook_bytes_are_deterministic_and_decode_what_encode_wrote():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 40)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    book = codebooks.fit(x)
    assert book.size == codebooks.centroids_for(3000) == 256
    again = codebooks.Codebook.from_bytes(book.to_bytes())
    assert again.sha256 == book.sha256 == hashlib.sha256(book.to_bytes()).hexdigest()
    codes = book.encode(x)
    assert codes.shape == (3000, 4 + 40 // 4) and codes.dtype == np.uint8
    np.testing.assert_array_equal(again.decode(codes), book.decode(codes))
    decoded = book.decode(codes)
    cos = (decoded * x).sum(axis=1) / np.linalg.norm(decoded, axis=1)
    assert cos.mean() > 0.9  # random vectors: the hardest case for centroids
    with pytest.raises(ValueError, match="truncated"):
        codebooks.Codebook.from_bytes(book.to_bytes()[:-4])


def test_residual_table_has_one_codebook_named_by_its_sha_and_tokens_close_to_float32(stores):
    db = stores["residual"]
    s = multi.settings_of(model_meta(db), db, "chunks")
    assert (s.precision, s.bytes_per_token) == ("residual", 100)
    [path] = codebook_files(db)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == s.codebook
    assert path == codebooks.path(db, "chunks", s.codebook)
    assert b"arrowsmith.token_codebook" not in open_table(db).schema.metadata  # the file holds it
    ids, flat, offsets = sorted_tokens(db, s)
    ref_ids, ref, ref_offsets = sorted_tokens(stores["f32"], multi.settings_of(model_meta(stores["f32"])))
    assert ids == ref_ids
    np.testing.assert_array_equal(offsets, ref_offsets)  # a code per token
    cos = (flat * ref).sum(axis=1) / np.linalg.norm(flat, axis=1)
    assert cos.mean() > 0.9 and cos.min() > 0.6


def test_residual_maxsim_finds_what_float32_finds(stores):
    for q in ["why is the sky blue", "what makes the tides", "how do volcanoes erupt"]:
        tops = []
        for name in ("f32", "residual"):
            r = run(["query", "--db", str(stores[name]), q, "--mode", "maxsim", "--k", "3", "-f", "arrows"])
            assert r.exit_code == 0, r.stderr
            tops.append(read_ipc(r.stdout_bytes).column("doc_id").to_pylist())
        assert tops[0][0] == tops[1][0], q


def test_a_continuing_run_codes_with_the_tables_codebook(stores, chunked, tmp_path):
    db = tmp_path / "db"
    first = run([*RESIDUAL, "--db", str(db)], input=chunked)
    assert first.exit_code == 0, first.stderr
    sha = model_meta(db)["multivector"]["codebook"]
    again = run([*RESIDUAL, "--db", str(db)], input=chunked)
    assert again.exit_code == 0, again.stderr
    assert "0 embedded" in again.stderr  # the codebook is not part of a document's key
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "extra.txt").write_text("Glaciers carve valleys as they slide downhill.")
    more = run(["chunk", str(tmp_path / "more"), "--max-tokens", "64"])
    added = run([*RESIDUAL, "--db", str(db)], input=more.stdout_bytes)
    assert added.exit_code == 0, added.stderr
    assert model_meta(db)["multivector"]["codebook"] == sha
    assert [p.name for p in codebook_files(db)] == [f"chunks.tokens-{sha[:16]}.codebook"]
    s = multi.settings_of(model_meta(db), db, "chunks")
    t = open_table(db).to_arrow()
    row = t.filter(np.asarray(t.column("doc_id").to_pylist()) == "extra.txt")
    flat, _ = multi.decode(row.column(multi.COLUMN), s)
    book = s.codec
    from arrowsmith.plugins.registry import load_model

    model = load_model(None, device="cpu", dtype="fp32")
    ref = model.encode_token_vectors(["Glaciers carve valleys as they slide downhill."], "document")[0]
    np.testing.assert_allclose(flat, book.decode(book.encode(ref)), atol=1e-5)


def test_a_stream_carries_its_codebook_into_a_store(chunked, tmp_path):
    out = tmp_path / "embedded.arrows"
    r = run([*RESIDUAL, "-o", str(out)], input=chunked)
    assert r.exit_code == 0, r.stderr
    stream = read_ipc(out.read_bytes())
    book = codebooks.from_stream_metadata(stream.schema.metadata)
    assert book.sha256 == json.loads(stream.schema.metadata[b"arrowsmith.model"])["multivector"]["codebook"]
    db = tmp_path / "db"
    r = run(["index", "--db", str(db), str(out)])
    assert r.exit_code == 0, r.stderr
    assert model_meta(db)["multivector"]["codebook"] == book.sha256
    assert codebooks.path(db, "chunks", book.sha256).read_bytes() == book.to_bytes()
    r = run(["query", "--db", str(db), "why is the sky blue", "--mode", "maxsim", "--k", "1", "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    assert read_ipc(r.stdout_bytes).column("doc_id").to_pylist() == ["sky.md"]


def test_a_missing_codebook_is_named_by_doctor_and_query_and_dense_search_still_works(stores, tmp_path):
    import shutil

    db = tmp_path / "db"
    shutil.copytree(stores["residual"], db)
    [path] = codebook_files(db)
    path.unlink()
    r = run(["doctor", "--db", str(db)])
    assert r.exit_code != 0
    assert path.name in r.stderr + r.stdout
    r = run(["query", "--db", str(db), "why is the sky blue", "--mode", "maxsim"])
    assert r.exit_code == 65 and path.name in r.stderr
    r = run(["query", "--db", str(db), "why is the sky blue", "--mode", "vector",
             "--k", "1", "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    assert read_ipc(r.stdout_bytes).column("doc_id").to_pylist() == ["sky.md"]
    path.write_bytes(b"ASCB1\nnot this table's codebook")
    r = run(["query", "--db", str(db), "why is the sky blue", "--mode", "maxsim"])
    assert r.exit_code == 65 and "sha256" in r.stderr


def test_compress_tokens_residual_fits_on_the_table_and_back_to_binary_drops_it(stores, tmp_path):
    import shutil

    db = tmp_path / "db"
    shutil.copytree(stores["f32"], db)
    r = run(["compress", "--db", str(db), "--tokens", "residual"])
    assert r.exit_code == 0, r.stderr
    s = multi.settings_of(model_meta(db), db, "chunks")
    assert s.precision == "residual" and codebook_files(db) == [codebooks.path(db, "chunks", s.codebook)]
    assert run(["doctor", "--db", str(db)]).exit_code == 0
    r = run(["query", "--db", str(db), "what makes the tides", "--mode", "maxsim", "--k", "1",
             "-f", "arrows"])
    assert r.exit_code == 0 and read_ipc(r.stdout_bytes).column("doc_id").to_pylist() == ["tides.txt"]
    r = run(["compress", "--db", str(db), "--tokens", "binary"])
    assert r.exit_code == 0, r.stderr
    assert "codebook" not in model_meta(db)["multivector"]


def test_token_vectors_packed_slice_by_slice_equal_one_pass(stores, chunked, tmp_path, monkeypatch):
    """A group's texts are encoded and packed in slices (bounded float32 memory): the stored token
    vectors and chunk vectors are those of one pass over the group."""
    from arrowsmith.commands.embed import embedder

    monkeypatch.setattr(embedder, "TOKEN_SLICE", 40)  # a slice every chunk or two
    assert len(embedder._token_slices(["x" * 200] * 10)) == 10
    db = tmp_path / "db"
    r = run([*EMBED, "--token-precision", "float32", "--db", str(db)], input=chunked)
    assert r.exit_code == 0, r.stderr
    s = multi.settings_of(model_meta(db))
    ids, flat, offsets = sorted_tokens(db, s)
    ref_ids, ref, ref_offsets = sorted_tokens(stores["f32"], s)
    assert ids == ref_ids
    np.testing.assert_array_equal(offsets, ref_offsets)
    np.testing.assert_allclose(flat, ref, atol=1e-5)
    got = open_table(db).to_arrow().sort_by("id").column("vector").to_pylist()
    want = open_table(stores["f32"]).to_arrow().sort_by("id").column("vector").to_pylist()
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_a_new_tables_codebook_is_fitted_on_its_whole_first_group(chunked, tmp_path, monkeypatch):
    """Encoded a slice at a time, the first group's tokens are all sampled for the codebook (the
    first slice alone would be a few chunks of the first document)."""
    from arrowsmith.commands.embed import embedder

    monkeypatch.setattr(embedder, "TOKEN_SLICE", 40)
    db = tmp_path / "db"
    r = run([*RESIDUAL, "--db", str(db)], input=chunked)
    assert r.exit_code == 0, r.stderr
    s = multi.settings_of(model_meta(db), db, "chunks")
    n_tokens = sum(len(t) for t in open_table(db).to_arrow().column(multi.COLUMN).to_pylist())
    assert s.codec.fitted_tokens == n_tokens < codebooks.FIT_SAMPLE


def test_residual_is_the_default_and_a_table_goes_on_at_its_own_precision(chunked, tmp_path):
    """A new table gets residual; one built at int4 (the default before) is continued at int4 when
    no precision is named — nothing re-embedded, nothing refused — and a named other one is refused."""
    new = tmp_path / "new"
    r = run([*EMBED, "--db", str(new)], input=chunked)
    assert r.exit_code == 0, r.stderr
    assert model_meta(new)["multivector"]["precision"] == "residual"
    old = tmp_path / "old"
    assert run([*EMBED, "--token-precision", "int4", "--db", str(old)], input=chunked).exit_code == 0
    before = open_table(old).version
    r = run([*EMBED, "--db", str(old)], input=chunked)
    assert r.exit_code == 0, r.stderr
    assert "0 embedded" in r.stderr and open_table(old).version == before
    assert model_meta(old)["multivector"]["precision"] == "int4" and not codebook_files(old)
    r = run([*EMBED, "--token-precision", "residual", "--db", str(old)], input=chunked)
    assert r.exit_code == 2 and "'precision': 'int4'" in r.stderr


def test_index_stats_names_the_codebook_and_what_it_was_fitted_on(stores, tmp_path):
    """`index --stats` says which codebook a residual table codes with, its centroids and how many
    tokens it saw (a table keeps its first run's codebook), and still answers when it is missing."""
    import json
    import shutil

    from arrowsmith.commands.index import table_stats

    db = stores["residual"]
    s = multi.settings_of(model_meta(db), db, "chunks")
    tokens = [r for r in table_stats(db)["representations"] if r["representation"] == multi.NAME][0]
    assert tokens["codebook"] == {"file": codebooks.path(db, "chunks", s.codebook).name,
                                  "centroids": s.codec.size, "fitted_tokens": s.codec.fitted_tokens}
    assert 0 < s.codec.fitted_tokens <= tokens["tokens"]
    r = run(["index", "--db", str(db), "--stats"])
    assert r.exit_code == 0, r.stderr
    assert f"{s.codec.size:,} centroids fitted on {s.codec.fitted_tokens:,} tokens" in r.stdout
    copy = tmp_path / "copy"
    shutil.copytree(db, copy)
    codebooks.path(copy, "chunks", s.codebook).unlink()
    r = run(["index", "--db", str(copy), "--stats", "--json"])
    assert r.exit_code == 0, r.stderr
    book = [x for x in json.loads(r.stdout)["representations"] if "codebook" in x][0]["codebook"]
    assert "missing" in book["problem"]
