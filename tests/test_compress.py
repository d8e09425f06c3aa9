"""`arrowsmith compress`: codecs, Hamming search, rescoring, the companion table, the report."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pyarrow as pa
import pytest
from conftest import run

from arrowsmith.commands.compress import codecs as cx
from arrowsmith.commands.compress import (
    compress_table,
    compressed_info,
    load_compressed,
    parse_method,
)
from arrowsmith.commands.compress import search as sx
from arrowsmith.commands.compress.report import compress_report, pick_for_budget
from arrowsmith.commands.errors import DataError, UsageError
from arrowsmith.plugins.vectors import l2_normalize

N_DOCS = 60  # Cranfield documents in the test store (a few hundred chunks)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def store(tmp_path_factory, cranfield, model):
    """A real store: Cranfield docs → chunk → embed (all-MiniLM-L6-v2) → LanceDB."""
    from arrowsmith.commands.chunk import chunk_documents
    from arrowsmith.commands.embed import embed_to_store
    from arrowsmith.commands.evaluate.data import load_beir

    ds = load_beir(cranfield)
    docs = pa.Table.from_batches(list(ds.corpus_batches())).slice(0, N_DOCS)
    db = tmp_path_factory.mktemp("compress") / "store"
    embed_to_store(chunk_documents(docs.to_batches(), max_tokens=64), model, str(db))
    return db


@pytest.fixture(scope="module")
def stored(store):
    """(ids, doc ids, float vectors) of the test store."""
    from arrowsmith.commands.compress.report import load_corpus

    c = load_corpus(store, "chunks")
    return c.ids, c.doc_ids, c.vectors


@pytest.fixture(scope="module")
def queries(cranfield, model):
    """40 real Cranfield queries, embedded as `query` embeds them."""
    from arrowsmith.commands.evaluate.data import read_queries

    q = read_queries(cranfield / "queries.jsonl")
    ids = list(q)[:40]
    return ids, model.encode([q[i] for i in ids], kind="query")


@pytest.fixture
def store_copy(store, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(store, dst, ignore=shutil.ignore_patterns("*__compressed*"))
    return dst


def _versions(db) -> dict[str, int]:
    from arrowsmith.commands.store import connect

    conn = connect(db)
    names = conn.list_tables()
    names = names.tables if hasattr(names, "tables") else names
    return {n: conn.open_table(n).version for n in names}


def _fit(spec: str, x: np.ndarray) -> tuple[cx.Codec, np.ndarray]:
    s = parse_method(spec)
    calib = cx.Calibration(s.truncate or x.shape[1])
    calib.update(cx.transform(s, x))
    codec = cx.make_codec(s, x.shape[1])
    codec.fit(calib)
    return codec, codec.encode(cx.transform(s, x))


# ------------------------------------------------------------------ methods


def test_parse_method_chains_and_options():
    m = parse_method("truncate:256+binary+rescore:100")
    assert (m.truncate, m.codec, m.rescore, m.rescore_with) == (256, "binary", 100, "int8")
    assert m.label == "truncate:256+binary+rescore:100"
    assert parse_method("binary", rescore=50, rescore_with="float").label == "binary+rescore:50:float"
    assert parse_method("pq", pq_bytes=96).label == "pq:96"
    assert parse_method("fp16").codec == "float16"
    assert parse_method("truncate:128").label == "truncate:128"


@pytest.mark.parametrize("spec", ["foo", "binary+int8", "rescore:10+binary", "binary+truncate:8", "int8:3",
                                  "truncate:0+binary", "pq:x", ""])
def test_parse_method_refuses(spec):
    with pytest.raises(UsageError) as e:
        parse_method(spec)
    assert e.value.exit_code == 2


def test_pq_bytes_must_divide_dim():
    with pytest.raises(UsageError, match="does not divide the vector dimension 384"):
        cx.make_codec(parse_method("pq:7"), 384)
    with pytest.raises(UsageError, match="only applies to pq"):
        parse_method("int8", pq_bytes=96)


# ------------------------------------------------------------------ codecs


def test_float16_and_int8_round_trip(stored):
    x = stored[2]
    f16, codes = _fit("float16", x)
    assert codes.shape == (len(x), 768)
    assert np.abs(f16.decode(codes) - x).max() < 1e-3
    i8, codes = _fit("int8", x)
    assert codes.shape == (len(x), 384) and codes.dtype == np.uint8
    err = np.abs(i8.decode(codes) - x)
    # per-dimension ranges from the corpus: every value is within half a step
    assert (err <= i8.scale / 2 + 1e-6).all()
    assert np.allclose(i8.lo, x.min(axis=0))


def test_int8_asymmetric_scores_equal_decoded_dot(stored):
    x = stored[2]
    i8, codes = _fit("int8", x)
    q = x[:5]
    assert np.allclose(i8.scores(i8.prepare(q), codes), q @ i8.decode(codes).T, atol=1e-4)


def test_pq_reconstructs_and_scores_asymmetrically(stored):
    x = stored[2]
    pq, codes = _fit("pq:96", x)
    assert codes.shape == (len(x), 96)
    rel = np.linalg.norm(pq.decode(codes) - x, axis=1).mean()
    assert rel < 0.35, rel
    q = x[:4]
    assert np.allclose(pq.scores(pq.prepare(q), codes), q @ pq.decode(codes).T, atol=1e-4)


def test_truncate_renormalises():
    rng = np.random.default_rng(1)
    x = l2_normalize(rng.normal(size=(50, 64)))
    t = cx.transform(parse_method("truncate:16"), x)
    assert t.shape == (50, 16)
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-6)


def test_hamming_matches_brute_force():
    rng = np.random.default_rng(2)
    for dim in (64, 384, 100):  # uint64 words, and the uint8 fallback width
        a = rng.normal(size=(7, dim))
        b = rng.normal(size=(300, dim))
        codec = cx.BinaryCodec(dim)
        got = cx.hamming(codec.encode(a), codec.encode(b))
        want = ((a[:, None, :] > 0) != (b[None, :, :] > 0)).sum(axis=2)
        assert got.shape == (7, 300) and (got == want).all()
    assert codec.code_bytes == 13


def test_blocked_topk_equals_full_sort(monkeypatch):
    rng = np.random.default_rng(3)
    x = l2_normalize(rng.normal(size=(5000, 64)))
    q = l2_normalize(rng.normal(size=(9, 64)))
    codec = cx.BinaryCodec(64)
    codes = codec.encode(x)
    monkeypatch.setattr(sx, "BLOCK_BYTES", 4096)  # many small blocks
    assert sx.block_rows(9, 8) < 5000
    pos, scores = sx.topk_scores(codec, q, codes, 25)
    h = cx.hamming(codec.encode(q), codes)
    for i in range(9):
        want = np.lexsort((np.arange(5000), h[i]))[:25]  # distance, then position
        assert pos[i].tolist() == want.tolist()
        assert np.allclose(scores[i], np.cos(np.pi * h[i][want] / 64))


def test_binary_rescoring_restores_recall(stored):
    ids, _, x = stored
    exact = np.argsort(-(x[:100] @ x.T), axis=1)[:, 1:11]  # each chunk's 10 neighbours, not itself
    for spec, floor in (("binary", 0.4), ("binary+rescore:100", 0.95), ("binary+rescore:100:float", 0.97)):
        s = parse_method(spec)
        codec, codes = _fit(spec, x)
        rescorer = None
        if s.rescore:
            i8, i8codes = _fit("int8", x)
            rescorer = sx.ArrayRescorer(i8codes, i8) if s.rescore_with == "int8" else sx.ArrayRescorer(x)
        index = sx.CompressedIndex(s, codec, ids, codes, rescorer)
        pos, _ = index.search_positions(x[:100], 11)
        recall = np.mean([len(set(p[1:11].tolist()) & set(e.tolist())) / 10
                          for p, e in zip(pos, exact, strict=True)])
        assert recall >= floor, (spec, recall)


# ------------------------------------------------------------------ the store


def test_binary_bits_are_signs_about_the_corpus_mean(tmp_path):
    """Vectors sharing one direction (as a static model's do): binary codes are signs about the
    corpus mean, which `compress` stores and `query` reloads, and they find the neighbours that
    signs about zero lose."""
    from arrowsmith.commands.synthetic import clustered_vectors, generated_table

    rng = np.random.default_rng(3)
    common = l2_normalize(rng.standard_normal((1, 64)).astype(np.float32))
    x = l2_normalize(clustered_vectors(4000, dim=64, spread=1.0, seed=3) * 0.5 + common)
    assert np.linalg.norm(x.mean(axis=0)) > 0.8
    exact = np.argsort(-(x[:100] @ x.T), axis=1)[:, 1:11]

    def recall(codes: np.ndarray) -> float:  # of each row's 10 neighbours among its 50 nearest codes
        h = cx.hamming(codes[:100], codes)
        got = np.argsort(h, axis=1, kind="stable")[:, 1:51]
        return float(np.mean([len(set(g.tolist()) & set(e.tolist())) / 10
                              for g, e in zip(got, exact, strict=True)]))

    codec, codes = _fit("binary", x)
    assert np.array_equal(codes, np.packbits(x > x.mean(axis=0), axis=1))
    zero = np.packbits(x > 0, axis=1)
    assert recall(codes) >= 0.9 and recall(zero) < recall(codes) - 0.2  # measured 0.97 and 0.64

    db = tmp_path / "store"
    import lancedb

    lancedb.connect(db).create_table("chunks", generated_table(x))
    compress_table(db, "chunks", "binary")
    loaded = load_compressed(db, "chunks")
    assert np.array_equal(loaded.codes, codes)  # the centre survived the round trip through the store
    assert np.array_equal(loaded.codec.encode(x[:5]), codes[:5])


def test_compress_int8_round_trip_through_query(store_copy, queries):
    from arrowsmith.commands.query import search

    before = _versions(store_copy)
    r = run(["compress", "--db", str(store_copy), "--method", "int8"])
    assert r.exit_code == 0, r.stderr
    assert "compressed" in r.stderr and "384 B/vector (4.0x smaller" in r.stderr
    assert _versions(store_copy)["chunks"] == before["chunks"]  # the source is only read
    info = compressed_info(store_copy, "chunks")
    assert info["method"] == "int8" and info["dim"] == 384 and info["code_bytes"] == 384
    assert info["source"]["version"] == before["chunks"] and info["rows"] == len(load_compressed(store_copy))
    qids, q = queries
    pairs = [(i, f"query {i}") for i in qids]
    comp = search(store_copy, pairs, k=10, query_vectors=q)
    flat = search(store_copy, pairs, k=10, query_vectors=q, use_compressed=False)
    top1 = lambda t: {r["query_id"]: r["id"] for r in t.to_pylist() if r["rank"] == 1}  # noqa: E731
    same = np.mean([top1(comp)[i] == top1(flat)[i] for i in qids])
    assert same >= 0.95
    # scores on the same cosine scale
    a = {(r["query_id"], r["id"]): r["score"] for r in comp.to_pylist()}
    b = {(r["query_id"], r["id"]): r["score"] for r in flat.to_pylist()}
    common = set(a) & set(b)
    assert len(common) > 300 and max(abs(a[c] - b[c]) for c in common) < 0.01


def test_report_matches_what_query_does(store_copy, queries):
    _, q = queries
    rep = compress_report(store_copy, methods=["int8", "binary+rescore:50"], query_vectors=q, keep_hits=True)
    assert [r.method for r in rep.results] == ["float32", "int8", "binary+rescore:50"]
    assert rep.results[0].recall_at_k == 1.0 and rep.results[1].recall_at_k > 0.95
    for method in ("int8", "binary+rescore:50"):
        compress_table(store_copy, "chunks", method)
        index = load_compressed(store_copy, "chunks")
        assert index is not None and index.method == method
        got, _ = index.search_positions(q, 10)
        assert [p.tolist() for p in got] == [p.tolist() for p in rep.hits[method]]


def test_where_filter_on_compressed(store_copy, stored):
    compress_table(store_copy, "chunks", "binary", rescore=20)
    index = load_compressed(store_copy, "chunks")
    ids, docs, x = stored
    hits = index.search(x[:3], 5, where="doc_id = '3'")
    want = set(ids[docs == "3"].tolist())
    assert all(set(h) <= want and len(h) == min(5, len(want)) for h, _ in hits)
    assert all(np.all(np.diff(s) <= 1e-6) for _, s in hits)


def test_stale_compression_falls_back_with_warning(store_copy, caplog):
    from arrowsmith.commands.store import connect

    compress_table(store_copy, "chunks", "int8")
    tbl = connect(store_copy).open_table("chunks")
    from lancedb.index import BTree

    tbl.create_index("chunk_index", config=BTree(), replace=True)  # new version, same vectors
    assert load_compressed(store_copy, "chunks") is not None
    row = tbl.search().limit(1).to_arrow()
    row = row.set_column(row.schema.get_field_index("id"), "id", pa.array(["new#0"]))
    tbl.add(row.select(tbl.schema.names))
    with caplog.at_level(logging.WARNING, logger="arrowsmith.compress"):
        assert load_compressed(store_copy, "chunks") is None
    assert "table changed since it was compressed" in caplog.text
    assert "arrowsmith compress --db" in caplog.text


def test_content_fingerprint_ignores_row_order_not_content(tmp_path):
    """The fingerprint that tells a stale companion: the same rows in another order (as a
    compaction may leave them) match; a changed doc_key or a missing row does not."""
    import lancedb

    from arrowsmith.commands.compress.store import content_fingerprint
    from arrowsmith.commands.synthetic import clustered_vectors, generated_table

    data = generated_table(clustered_vectors(3000, dim=16, seed=5))
    conn = lancedb.connect(tmp_path / "db")
    prints = {}
    for name, t in {"base": data, "reversed": data.take(np.arange(len(data))[::-1]),
                    "fewer": data.slice(1),
                    "rekeyed": data.set_column(data.schema.get_field_index("doc_key"), "doc_key",
                                               pa.array(["k"] * 2999 + ["other"]))}.items():
        prints[name] = content_fingerprint(conn.create_table(name, t))
    assert prints["reversed"] == prints["base"]
    assert len({prints["base"], prints["fewer"], prints["rekeyed"]}) == 3


def test_loaded_codes_are_reused_until_the_table_or_companion_changes(store_copy):
    """One process searching many times reads the codes once, and never serves codes that a
    recompression, a drop or a write has replaced."""
    from arrowsmith.commands.compress import drop_compressed
    from arrowsmith.commands.store import connect

    compress_table(store_copy, "chunks", "binary", rescore=20)
    first = load_compressed(store_copy, "chunks")
    assert load_compressed(store_copy, "chunks") is first
    drop_compressed(store_copy, "chunks")
    assert load_compressed(store_copy, "chunks") is None
    compress_table(store_copy, "chunks", "int8")  # the new companion's versions start again
    assert load_compressed(store_copy, "chunks").method == "int8"
    tbl = connect(store_copy).open_table("chunks")
    row = tbl.search().limit(1).to_arrow()
    row = row.set_column(row.schema.get_field_index("id"), "id", pa.array(["new#0"]))
    tbl.add(row.select(tbl.schema.names))
    assert load_compressed(store_copy, "chunks") is None


@pytest.mark.parametrize("args, message", [
    (["--method", "quantum"], "unknown compression method 'quantum'"),
    (["--method", "pq", "--bytes", "7"], "does not divide the vector dimension 384"),
    (["--method", "int8", "--bytes", "96"], "--bytes only applies to pq"),
    (["--method", "truncate:999+int8"], "larger than the vector dimension 384"),
    (["--method", "int8", "--table", "novec"], "has no 'vector' column"),
    (["--method", "int8", "--table", "missing"], "no table 'missing'"),
    (["--method", "int8", "--report"], "exactly one of"),
])
def test_bad_input_exit_2_store_unchanged(store_copy, args, message):
    from arrowsmith.commands.store import connect

    connect(store_copy).create_table("novec", pa.table({"id": ["a"], "text": ["x"]}))
    before = _versions(store_copy)
    r = run(["compress", "--db", str(store_copy), *args])
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr
    assert _versions(store_copy) == before


def test_report_cli_budget_plot(store_copy, tmp_path):
    png = tmp_path / "q.png"
    r = run(["compress", "--db", str(store_copy), "--report", "--methods", "float16,int8,binary",
             "--sample", "40", "--budget", "40KB", "--plot", str(png), "-f", "jsonl"])
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout_bytes.decode().splitlines()]
    assert [x["method"] for x in rows] == ["float32", "float16", "int8", "binary"]
    assert [x["bytes_per_vector"] for x in rows] == [1536, 768, 384, 48]
    assert rows[2]["recall@10"] > 0.95 and rows[1]["recall@10"] > 0.99
    assert "budget 40KB: binary" in r.stderr  # the only one under 40 KB at this size
    assert png.stat().st_size > 1000
    assert "__compressed" not in " ".join(_versions(store_copy))


def test_budget_choice_explains():
    from arrowsmith.commands.compress.report import MethodResult, Report

    res = [MethodResult("float32", 1536, 1, 1536000, 0, 1.0, 1.0, None, None, 0, 1),
           MethodResult("int8", 384, 4, 384000, 0, 0.99, 1.0, None, None, 0, 1),
           MethodResult("binary+rescore:100", 48, 32, 48000, 0, 0.98, 1.0, None, None, 0, 1)]
    rep = Report("chunks", 1000, 384, 10, 50, "sample", res)
    choice, why = pick_for_budget(rep, 400 << 10)
    assert choice == "int8" and "best recall@10 (0.9900)" in why and "float32 scores 1.0000" in why
    assert pick_for_budget(rep, 100)[0] is None


def test_drop(store_copy):
    compress_table(store_copy, "chunks", "float16")
    r = run(["compress", "--db", str(store_copy), "--drop"])
    assert r.exit_code == 0 and "dropped chunks__compressed" in r.stderr
    assert load_compressed(store_copy, "chunks") is None


# ------------------------------------------------------------------ options are applied or refused (issue 10)


def _report_rows(db, *args) -> list[dict]:
    r = run(["compress", "--db", str(db), "--report", "--sample", "40", "-f", "jsonl", *args])
    assert r.exit_code == 0, r.stderr
    return [json.loads(line) for line in r.stdout_bytes.decode().splitlines()]


def test_report_applies_rescore_and_bytes(store_copy):
    """`--report --methods binary --rescore N` measures binary+rescore:N (it used to measure binary)."""
    plain = {x["method"]: x for x in _report_rows(store_copy, "--methods", "binary,pq")}
    rows = _report_rows(store_copy, "--methods", "binary,pq", "--rescore", "50", "--rescore-with", "float",
                        "--bytes", "48")
    assert [x["method"] for x in rows] == ["float32", "binary+rescore:50:float", "pq:48+rescore:50:float"]
    assert rows[1]["recall@10"] > plain["binary"]["recall@10"]
    # the default spread: its rescored methods take --rescore, its PQ methods --bytes
    spread = [x["method"] for x in _report_rows(store_copy, "--rescore", "30", "--bytes", "96")]
    assert "binary" in spread and "binary+rescore:30" in spread and "pq:96+rescore:30" in spread
    assert not any("rescore:100" in m for m in spread)


@pytest.mark.parametrize("args, message", [
    (["--report", "--methods", "binary+rescore:100", "--rescore", "50"], "rescore:100 and --rescore 50"),
    (["--report", "--methods", "binary,int8", "--bytes", "48"], "--bytes only applies to pq"),
    (["--method", "binary", "--rescore-with", "float"], "--rescore-with needs rescoring"),
    (["--method", "pq:48", "--bytes", "96"], "pq:48 and --bytes 96"),
    (["--method", "int8", "--sample", "10"], "--sample has no effect with --method"),
    (["--method", "int8", "--methods", "binary", "--k", "5", "-o", "x.jsonl"],
     "--methods, --k, --output have no effect with --method"),
    (["--drop", "--rescore", "10"], "--rescore has no effect with --drop"),
    (["--report", "--wait"], "--wait has no effect with --report"),
    (["--report", "--queries", "q.jsonl", "--sample", "10"], "--sample has no effect with --queries"),
])
def test_ignored_options_are_refused(store_copy, args, message):
    before = _versions(store_copy)
    r = run(["compress", "--db", str(store_copy), *args])
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr
    assert _versions(store_copy) == before


def test_method_keeps_its_own_rescore_representation(store_copy):
    """`--method binary+rescore:20:float`: the --rescore-with default no longer overrides ':float'."""
    r = run(["compress", "--db", str(store_copy), "--method", "binary+rescore:20:float"])
    assert r.exit_code == 0, r.stderr
    assert compressed_info(store_copy, "chunks")["spec"]["rescore_with"] == "float"


def test_a_rerun_codes_only_the_change_and_equals_a_full_coding(tmp_path, fake_chunks):
    """After a night (one document re-embedded, one added, one deleted) compress codes the new
    rows only, with the fitted parameters kept: every id's codes equal coding the whole table
    with them, the fingerprint equals a fresh one, and the companion is served."""
    from arrowsmith.commands.compress import store as cs
    from arrowsmith.commands.store import StoreWriter, open_table

    small = {**fake_chunks.model, "dim": 32}
    with StoreWriter(tmp_path) as w:
        w.write([fake_chunks.batch({f"d{i}": (4, "k") for i in range(40)}, model=small)])
    first = compress_table(tmp_path, "chunks", "binary", rescore=20)
    assert first.refitted and first.coded == 160
    with StoreWriter(tmp_path) as w:
        w.write([fake_chunks.batch({"d1": (3, "k2"), "n0": (2, "k")}, model=small)])
    open_table(tmp_path).delete("doc_id = 'd2'")
    night = compress_table(tmp_path, "chunks", "binary", rescore=20)
    assert not night.refitted and (night.coded, night.removed, night.rows) == (5, 8, 157)

    tbl = open_table(tmp_path)
    info = cs.compressed_info(tmp_path, "chunks")
    assert info["source"]["fingerprint"] == cs.content_fingerprint(tbl) and info["rows"] == 157
    codec, rescore = cx.make_codec(cx.parse_method("binary", rescore=20), 32), cx.Int8Codec(32)
    codec.load_params(info["codec"])
    rescore.load_params(info["rescore_codec"])
    rows = tbl.search().select(["id", "vector"]).limit(None).to_arrow()
    x = np.stack(rows.column("vector").to_numpy(zero_copy_only=False))
    want = {i: (c.tobytes(), r.tobytes()) for i, c, r in
            zip(rows.column("id").to_pylist(), codec.encode(x), rescore.encode(x), strict=True)}
    comp = open_table(tmp_path, "chunks__compressed").search().select(["id", "code", "rescore"]).limit(
        None).to_arrow()
    pairs = zip(comp.column("code").to_pylist(), comp.column("rescore").to_pylist(), strict=True)
    got = dict(zip(comp.column("id").to_pylist(), pairs, strict=True))
    assert got == want
    index = cs.load_compressed(tmp_path, "chunks")
    assert index is not None and sorted(index.ids.tolist()) == sorted(want)
    (hit_ids, _), = index.search(x[-1:], 3)  # int8 rescoring reads the updated companion by row ids
    assert hit_ids[0] == rows.column("id")[-1].as_py()

    comp = open_table(tmp_path, "chunks__compressed")  # an update cut short: not served, redone
    cs._set_companion_meta(comp, {**info, "updating": True})
    assert cs.load_compressed(tmp_path, "chunks") is None
    assert compress_table(tmp_path, "chunks", "binary", rescore=20).coded == 157

    with StoreWriter(tmp_path) as w:  # a quarter of the table: fitted and coded again
        w.write([fake_chunks.batch({f"m{i}": (4, "k") for i in range(10)}, model=small)])
    again = compress_table(tmp_path, "chunks", "binary", rescore=20)
    assert again.refitted and again.coded == 197
    assert cs.compressed_info(tmp_path, "chunks").get("fit") is None


def test_an_error_while_coding_is_raised_as_itself_and_nothing_half_written_is_served(
        tmp_path, fake_chunks, monkeypatch):
    """The codes stream into one commit (LanceDB reads them on its own thread): an error raised
    while coding reaches the caller as itself, not as LanceDB's RuntimeError; a full run leaves
    the last companion as it was (served), an update leaves it marked and redone in full."""
    from arrowsmith.commands.compress import store as cs
    from arrowsmith.commands.store import StoreWriter

    small = {**fake_chunks.model, "dim": 32}
    with StoreWriter(tmp_path) as w:
        w.write([fake_chunks.batch({f"d{i}": (4, "k") for i in range(40)}, model=small)])
    assert compress_table(tmp_path, "chunks", "binary", rescore=20).coded == 160
    coding = cs._codes_batch

    def fail(*args, **kwargs):
        raise DataError("vectors of dim 31 where the table's is 32")

    monkeypatch.setattr(cs, "_codes_batch", fail)
    with pytest.raises(DataError, match="dim 31"):
        compress_table(tmp_path, "chunks", "int8")  # another method: a full run
    info = cs.compressed_info(tmp_path, "chunks")
    assert info["method"] == "binary+rescore:20" and cs.load_compressed(tmp_path, "chunks") is not None
    with StoreWriter(tmp_path) as w:
        w.write([fake_chunks.batch({"n0": (2, "k")}, model=small)])
    with pytest.raises(DataError, match="dim 31"):
        compress_table(tmp_path, "chunks", "binary", rescore=20)  # an update
    assert cs.load_compressed(tmp_path, "chunks") is None
    monkeypatch.setattr(cs, "_codes_batch", coding)
    again = compress_table(tmp_path, "chunks", "binary", rescore=20)
    assert again.refitted and again.coded == 162 and cs.load_compressed(tmp_path, "chunks") is not None


def test_changed_rows_match_every_id_and_key_as_a_set_difference_does(monkeypatch):
    """compress's re-run finds the table's rows the companion lacks and the companion's rows the
    table no longer holds by hashes looked up in sorted order; on ids the companion holds more than
    once (a run cut short) and ids shared between batches, it answers what a plain set difference
    of (id, doc_key) pairs does."""
    from arrowsmith.commands.compress import store as cstore

    rng = np.random.default_rng(7)
    ids = [f"d{i}#{j}" for i in range(400) for j in range(3)]
    comp_pairs = [(i, f"k{rng.integers(3)}") for i in ids]
    comp_pairs += [(ids[5], "k9"), (ids[5], "k8"), (ids[77], comp_pairs[77][1] + "x")]  # held twice
    table_pairs = [(i, k if rng.random() > 0.1 else k + "new") for i, k in comp_pairs[:1200]
                   if rng.random() > 0.05]
    table_pairs += [("n1#0", "kn"), (ids[5], "k8")]

    def batches(pairs, first_row_id):
        for start in range(0, len(pairs), 97):  # batches that do not line up with documents
            part = pairs[start:start + 97]
            row_ids = pa.array(range(first_row_id + start, first_row_id + start + len(part)), pa.uint64())
            yield pa.RecordBatch.from_pydict({"id": [p[0] for p in part],
                                              cstore.KEY_COLUMN: [p[1] for p in part], "_rowid": row_ids})

    sources = {"comp": lambda: batches(comp_pairs, 10_000), "table": lambda: batches(table_pairs, 0)}
    monkeypatch.setattr(cstore, "_key_batches", lambda tbl: sources[tbl]())
    added, removed = cstore._changed_rows("table", "comp", len(comp_pairs))
    held = set(comp_pairs)
    assert added.tolist() == [r for r, p in enumerate(table_pairs) if p not in held]
    kept = set(table_pairs)
    assert removed.tolist() == [10_000 + r for r, p in enumerate(comp_pairs) if p not in kept]
    assert len(added) > 100 and len(removed) > 100  # both sides changed, not a vacuous comparison
