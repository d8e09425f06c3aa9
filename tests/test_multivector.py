"""Token vectors in the store and MaxSim as a query stage (issue 19), with the real model and LanceDB.

Stored token vectors are checked against the plugin's own ``encode_tokens`` (the content tokens
of each chunk, prompt and specials left out, L2-normalised), MaxSim scores against a numpy
reference, and a store written before the representation layer is queried exactly as then.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import SAMPLES, read_ipc, run

from arrowsmith.commands.spaces import multi
from arrowsmith.commands.store import open_table

DATA = Path(__file__).parent / "data"
EMBED = ["embed", "--dtype", "fp32", "--device", "cpu"]
QUERIES = ["why is the sky blue", "what makes the tides"]


@pytest.fixture(scope="module")
def chunked(samples_chunked_64) -> bytes:
    return samples_chunked_64


@pytest.fixture(scope="module")
def stores(chunked, tmp_path_factory) -> dict[str, Path]:
    """One store per (chunking, precision), each with its full-text index."""
    root = tmp_path_factory.mktemp("mv")
    out = {}
    for name, extra in {"naive-f32": ["--multivector", "--token-precision", "float32"],
                        "late-f32": ["--late", "--multivector", "--token-precision", "float32"],
                        "naive-f16": ["--multivector", "--token-precision", "float16"],
                        "naive-bin": ["--multivector", "--token-precision", "binary"],
                        "naive-int4": ["--multivector", "--token-precision", "int4"],
                        "plain": []}.items():
        db = root / name
        r = run([*EMBED, "--db", str(db), *extra], input=chunked)
        assert r.exit_code == 0, r.stderr
        assert run(["index", "--db", str(db)]).exit_code == 0
        out[name] = db
    return out


@pytest.fixture(scope="module")
def model():
    """The stores' model in fp32 (the session's `model` is auto: bf16 on a CPU with avx512_bf16)."""
    from arrowsmith.plugins.registry import load_model

    return load_model(None, device="cpu", dtype="fp32")


def stored(db: Path) -> pa.Table:
    return open_table(db).to_arrow().sort_by("id")


def reference_tokens(model, texts: list[str]) -> list[np.ndarray]:
    """Each chunk text's content-token vectors from the plugin's encode_tokens, normalised."""
    seqs, spans = model.token_vector_inputs(texts, "document", "")
    out = []
    for o, (first, n) in zip(model.encode_tokens(seqs), spans, strict=True):
        v = o[first:first + n].astype(np.float32)
        out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return out


def test_stored_token_vectors_are_encode_tokens_content_tokens(stores, model):
    t = stored(stores["naive-f32"])
    settings = multi.settings_of(json.loads(t.schema.metadata[b"arrowsmith.model"]))
    assert settings == multi.TokenSettings(384, "float32", 1.0)
    assert multi.settings_of(json.loads(stored(stores["naive-int4"]).schema.metadata[b"arrowsmith.model"])
                             ).precision == "int4"
    tokens, offsets = multi.decode(t.column("tokens"), settings)
    ref = reference_tokens(model, t.column("text").to_pylist())
    assert [len(r) for r in ref] == np.diff(offsets).tolist()  # one vector per content token
    assert np.abs(tokens - np.concatenate(ref)).max() < 1e-5
    # the dense vector is the one a plain run stores (one forward pass gives both)
    plain = stored(stores["plain"])
    assert plain.column("id").to_pylist() == t.column("id").to_pylist()
    a, b = (np.stack(x.column("vector").to_numpy(zero_copy_only=False)) for x in (t, plain))
    assert np.abs(a - b).max() < 1e-5


def test_float16_and_binary_tokens_are_the_float32_ones_at_their_precision(stores):
    f32 = stored(stores["naive-f32"])
    s32 = multi.TokenSettings(384, "float32")
    t32, off = multi.decode(f32.column("tokens"), s32)
    t16, off16 = multi.decode(stored(stores["naive-f16"]).column("tokens"),
                              multi.TokenSettings(384, "float16"))
    tb, offb = multi.decode(stored(stores["naive-bin"]).column("tokens"), multi.TokenSettings(384, "binary"))
    assert (off == off16).all() and (off == offb).all()
    assert np.abs(t16 - t32).max() < 1e-3  # float16's half-ulp at |x| < 1
    assert ((tb > 0) == (t32 > 0)).all()  # the sign bits
    assert np.allclose(np.abs(tb), 1 / np.sqrt(384))
    t4, off4 = multi.decode(stored(stores["naive-int4"]).column("tokens"), multi.TokenSettings(384, "int4"))
    assert (off == off4).all()
    step = np.abs(t32).max(axis=1, keepdims=True) / 7.5  # 16 levels over each token's range
    assert (np.abs(t4 - t32) <= step / 2 + 1e-3).all()
    assert stored(stores["naive-bin"]).column("tokens").nbytes < f32.column("tokens").nbytes / 30


def test_late_token_vectors_come_from_the_document_windows(stores, model):
    """With --late a chunk's tokens are taken from the whole document's pass: they differ from the
    chunk embedded alone (context from outside the chunk), and have the same count."""
    late, naive = stored(stores["late-f32"]), stored(stores["naive-f32"])
    s = multi.TokenSettings(384, "float32")
    tl, ol = multi.decode(late.column("tokens"), s)
    tn, on = multi.decode(naive.column("tokens"), s)
    assert (np.diff(ol) == np.diff(on)).all()
    assert np.allclose(np.linalg.norm(tl, axis=1), 1, atol=1e-5)
    assert np.abs(tl - tn).max() > 0.05


def numpy_maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float((q @ d.T).max(axis=1).mean())


@pytest.mark.parametrize("store", ["naive-f32", "naive-bin", "naive-int4"])
def test_rerank_scores_are_maxsim_and_order_the_first_stage(stores, store, model):
    db = stores[store]
    r = run(["query", "--db", str(db), *QUERIES, "--mode", "vector", "--rerank", "maxsim:20", "-k", "5",
             "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    hits = read_ipc(r.stdout_bytes)
    assert {"first_rank", "first_score"} <= set(hits.column_names)
    t = stored(db)
    settings = multi.settings_of(json.loads(t.schema.metadata[b"arrowsmith.model"]))
    tokens, offsets = multi.decode(t.column("tokens"), settings)
    row = {rid: i for i, rid in enumerate(t.column("id").to_pylist())}
    queries = model.encode_token_vectors(QUERIES, "query")
    dense = run(["query", "--db", str(db), *QUERIES, "--mode", "vector", "-k", "20", "-f", "arrows"])
    first = read_ipc(dense.stdout_bytes)
    for qi, qid in enumerate(("q1", "q2")):
        mine = hits.filter(pa.compute.equal(hits["query_id"], qid)).to_pylist()
        ref = {rid: numpy_maxsim(queries[qi], tokens[offsets[i]:offsets[i + 1]]) for rid, i in row.items()}
        candidates = [x["id"] for x in first.filter(pa.compute.equal(first["query_id"], qid)).to_pylist()]
        best = sorted(candidates, key=lambda c: -ref[c])[:5]
        assert [h["id"] for h in mine] == best  # the first stage's 20, ordered by MaxSim
        for h in mine:
            assert abs(h["score"] - ref[h["id"]]) < 1e-5
            assert candidates[h["first_rank"] - 1] == h["id"]


def test_mode_maxsim_float16_uses_lancedb_and_scores_as_numpy(stores, model):
    db = stores["naive-f16"]
    r = run(["query", "--db", str(db), QUERIES[0], "--mode", "maxsim", "-k", "4", "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    hits = read_ipc(r.stdout_bytes).to_pylist()
    t = stored(db)
    tokens, offsets = multi.decode(t.column("tokens"), multi.TokenSettings(384, "float16"))
    q = model.encode_token_vectors(QUERIES[:1], "query")[0]
    ref = sorted(((numpy_maxsim(q, tokens[offsets[i]:offsets[i + 1]]), rid)
                  for i, rid in enumerate(t.column("id").to_pylist())), reverse=True)[:4]
    assert [h["id"] for h in hits] == [rid for _, rid in ref]
    assert np.allclose([h["score"] for h in hits], [s for s, _ in ref], atol=2e-3)  # float16 tokens


def test_auto_on_a_table_with_token_vectors_is_hybrid_mixed_with_maxsim(stores):
    r = run(["query", "--db", str(stores["naive-int4"]), QUERIES[0], "-k", "3", "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    out = read_ipc(r.stdout_bytes)
    assert "first_rank" in out.column_names
    assert json.loads(out.schema.metadata[b"arrowsmith.query"])["rerank"] == "maxsim-mix:100"
    assert "mode hybrid+maxsim-mix:100" in r.stderr
    plain = run(["query", "--db", str(stores["plain"]), QUERIES[0], "-k", "3", "-f", "arrows"])
    assert "first_rank" not in read_ipc(plain.stdout_bytes).column_names  # no token vectors: as before


def test_refusals(stores, chunked, tmp_path):
    r = run(["query", "--db", str(stores["plain"]), "x", "--rerank", "maxsim"])
    assert r.exit_code == 2 and "has no token vectors" in r.stderr and "embed --multivector" in r.stderr
    r = run(["query", "--db", str(stores["plain"]), "x", "--mode", "maxsim"])
    assert r.exit_code == 2 and "embed --multivector" in r.stderr
    r = run(["query", "--db", str(stores["naive-bin"]), "x", "--rerank", "maxsim:0"])
    assert r.exit_code == 2 and "at least 1" in r.stderr
    r = run(["query", "--db", str(stores["naive-bin"]), "x", "--rerank", "colbert"])
    assert r.exit_code == 2 and "maxsim-mix" in r.stderr
    # maxsim-rrf's RRF takes --rrf-k, and nothing weighs hybrid's lists there: --alpha is refused
    db = str(stores["naive-int4"])
    assert run(["query", "--db", db, "x", "--mode", "fts", "--rerank", "maxsim-rrf", "--rrf-k", "30"]
               ).exit_code == 0
    r = run(["query", "--db", db, "x", "--mode", "fts", "--rerank", "maxsim-rrf", "--alpha", "0.3"])
    assert r.exit_code == 2 and "--rerank maxsim-rrf" in r.stderr
    # maxsim-mix (auto's rerank here) weighs every list the same: no fusion option applies
    for option in (["--rrf-k", "30"], ["--alpha", "0.3"], ["--fusion", "rrf"]):
        r = run(["query", "--db", db, "x", *option])
        assert r.exit_code == 2 and "--rerank maxsim-mix" in r.stderr, option
    r = run([*EMBED, "--token-precision", "float16"], input=chunked)
    assert r.exit_code == 2 and "without --multivector" in r.stderr
    # a table with token vectors continued without them (and the reverse) is refused, nothing written
    for db, extra in ((stores["naive-bin"], []), (stores["plain"], ["--multivector"])):
        db2 = tmp_path / db.name
        shutil.copytree(db, db2)
        v = open_table(db2).version
        r = run([*EMBED, "--db", str(db2), *extra], input=chunked)
        assert r.exit_code == 2, r.stderr
        assert "multivector=" in r.stderr
        assert open_table(db2).version == v
    r = run([*EMBED, "--db", str(tmp_path / "rebuilt"), "--multivector", "--token-precision", "float16"],
            input=chunked)
    assert r.exit_code == 0
    r = run([*EMBED, "--db", str(tmp_path / "rebuilt"), "--multivector"], input=chunked)
    assert r.exit_code == 0 and "0 embedded" in r.stderr  # no precision named: the table's own
    r = run([*EMBED, "--db", str(tmp_path / "rebuilt"), "--multivector", "--token-precision", "int4"],
            input=chunked)
    assert r.exit_code == 2 and "'precision': 'float16'" in r.stderr


def test_multivector_with_a_model_without_token_vectors_is_exit_2(chunked, tmp_path):
    from arrowsmith.plugins.base import EmbeddingModel

    class NoTokens(EmbeddingModel):  # the contract's default: no token vectors
        name, plugin, dim = "no-tokens", "test", 4

        @property
        def tokenizer(self):
            raise AssertionError("not needed")

        def encode(self, texts, kind="document", *, prompt=None, batch_tokens=None):
            raise AssertionError("not needed")

    from arrowsmith.commands.embed import resolve_params
    from arrowsmith.commands.errors import UsageError

    assert NoTokens().representations == ("dense",)
    with pytest.raises(UsageError, match="test:no-tokens produces no token vectors"):
        resolve_params(NoTokens(), multivector=True)


def test_a_store_written_before_the_layer_queries_exactly_as_then(tmp_path):
    db = tmp_path / "store"
    shutil.copytree(DATA / "store-wave2", db)
    for line in (DATA / "store-wave2.expected.jsonl").read_text().splitlines():
        expected = json.loads(line)
        # hybrid's default fusion was RRF then (mix since issue 19): the search it recorded is asked for
        fusion = ["--fusion", "rrf"] if expected["mode"] == "hybrid" else []
        r = run(["query", "--db", str(db), "--mode", expected["mode"], *fusion, "-k", "5", "-f", "jsonl",
                 *QUERIES])
        assert r.exit_code == 0, r.stderr
        rows = [json.loads(x) for x in r.stdout_bytes.decode().splitlines()]
        assert [[x["query_id"], x["rank"], x["id"]] for x in rows] == [h[:3] for h in expected["hits"]]
        # the expected scores were recorded on a CPU with avx512_bf16, where that code embedded the
        # queries in bf16; fp32 query vectors (an AVX2 CPU, or numpy's path now) differ by up to ~2e-3
        assert np.allclose([x["score"] for x in rows], [h[3] for h in expected["hits"]], atol=3e-3)
        assert "first_rank" not in rows[0]
    assert run(["doctor", "--db", str(db)]).exit_code == 0


def test_eval_spec_keys():
    from arrowsmith.commands.errors import UsageError
    from arrowsmith.commands.evaluate.config import config_from_spec

    c = config_from_spec("hybrid,multivector,rerank=maxsim:50,token_precision=float16")
    assert (c.mode, c.multivector, c.rerank, c.token_precision) == ("hybrid", True, "maxsim:50", "float16")
    assert config_from_spec("multivector,maxsim").mode == "maxsim"
    with pytest.raises(UsageError, match="needs token vectors: add multivector"):
        config_from_spec("hybrid,rerank=maxsim")
    with pytest.raises(UsageError, match="token_precision= has no effect without multivector"):
        config_from_spec("token_precision=float16")


def test_doctor_checks_the_token_column(stores, tmp_path):
    """A chunk's token list emptied, another's cut by one token, a third's made NaN, behind the
    writer's back: doctor names each; the undamaged table is healthy."""
    assert run(["doctor", "--db", str(stores["naive-f32"])]).exit_code == 0
    db = tmp_path / "store"
    shutil.copytree(stores["naive-f32"], db)
    tbl = open_table(db)
    rows = tbl.to_arrow().sort_by("id").slice(0, 3).to_pylist()
    rows[0]["tokens"] = []
    rows[1]["tokens"] = rows[1]["tokens"][:-1]
    rows[2]["tokens"][0] = [float("nan")] * 384
    ids = [r["id"] for r in rows]
    tbl.delete("id IN (" + ", ".join(f"'{i}'" for i in ids) + ")")
    tbl.add(pa.Table.from_pylist(rows, schema=tbl.schema))
    r = run(["doctor", "--db", str(db), "--json"])
    assert r.exit_code == 1
    messages = [f["message"] for f in json.loads(r.stdout_bytes)["findings"] if f["check"] == "tokens"]
    assert len(messages) == 3, r.stdout_bytes
    assert any("1 chunks with an empty list of token vectors" in m and ids[0] in m for m in messages)
    assert any("not one per token of their text" in m and ids[1] in m for m in messages)
    assert any("NaN, infinite or non-unit" in m and ids[2] in m for m in messages)


def test_index_stats_shows_bytes_per_token_and_per_chunk(stores):
    from arrowsmith.commands.index import table_stats

    reps = {r["representation"]: r for r in table_stats(stores["naive-bin"])["representations"]}
    t = stored(stores["naive-bin"])
    n_tokens = sum(len(x) for x in t.column("tokens").to_pylist())
    assert reps["dense"]["bytes_per_chunk"] == 384 * 4
    assert (reps["multivector"]["tokens"], reps["multivector"]["bytes_per_token"]) == (n_tokens, 48)
    assert reps["multivector"]["bytes_per_chunk"] == pytest.approx(48 * n_tokens / t.num_rows, abs=0.1)
    int4 = [r for r in table_stats(stores["naive-int4"])["representations"] if "precision" in r][0]
    assert (int4["precision"], int4["bytes_per_token"]) == ("int4", 194)
    assert [r["representation"] for r in table_stats(stores["plain"])["representations"]] == ["dense"]
    r = run(["index", "--db", str(stores["naive-f16"]), "--stats"])
    assert r.exit_code == 0 and "float16, pool 1" in r.stdout_bytes.decode() and "768 bytes a token" in \
        r.stdout_bytes.decode()


def test_mode_maxsim_on_packed_tokens_scans_the_table_and_scores_as_numpy(stores, model):
    db = stores["naive-int4"]
    where = "doc_id != 'sky.md'"
    r = run(["query", "--db", str(db), QUERIES[0], "--mode", "maxsim", "-k", "4", "--where", where,
             "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    hits = read_ipc(r.stdout_bytes).to_pylist()
    t = stored(db)
    tokens, offsets = multi.decode(t.column("tokens"), multi.TokenSettings(384, "int4"))
    q = model.encode_token_vectors(QUERIES[:1], "query")[0]
    rows = zip(t.column("id").to_pylist(), t.column("doc_id").to_pylist(), strict=True)
    ref = sorted(((numpy_maxsim(q, tokens[offsets[i]:offsets[i + 1]]), rid)
                  for i, (rid, doc) in enumerate(rows) if doc != "sky.md"), reverse=True)[:4]
    assert [h["id"] for h in hits] == [rid for _, rid in ref]
    assert np.allclose([h["score"] for h in hits], [s for s, _ in ref], atol=1e-5)


def hybrid_lists_and_maxsim(db, model) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """QUERIES[0]'s dense and BM25 lists as the plain modes return them at depth 100 (id → score,
    best first), and a numpy MaxSim over the stored int4 tokens of every candidate in their union."""
    def scored(mode: str) -> dict[str, float]:
        r = run(["query", "--db", str(db), QUERIES[0], "--mode", mode, "-k", "100", "-f", "arrows"])
        assert r.exit_code == 0, r.stderr
        t = read_ipc(r.stdout_bytes)
        return dict(zip(t.column("id").to_pylist(), t.column("score").to_pylist(), strict=True))

    dense, bm25 = scored("vector"), scored("fts")
    t = stored(db)
    tokens, offsets = multi.decode(t.column("tokens"), multi.TokenSettings(384, "int4"))
    row = {rid: i for i, rid in enumerate(t.column("id").to_pylist())}
    q = model.encode_token_vectors(QUERIES[:1], "query")[0]
    union = list(dict.fromkeys([*dense, *bm25]))
    return dense, bm25, {c: numpy_maxsim(q, tokens[offsets[row[c]]:offsets[row[c] + 1]]) for c in union}


def test_rerank_maxsim_rrf_fuses_the_first_stage_lists_with_maxsim(stores, model):
    """maxsim-rrf over hybrid: Σ 1/(60 + rank) over the dense list, the BM25 list and MaxSim's order of
    their union, recomputed here from the plain modes and a numpy MaxSim."""
    db = stores["naive-int4"]
    dense, bm25, maxsim = hybrid_lists_and_maxsim(db, model)
    by_maxsim = sorted(maxsim, key=lambda c: -maxsim[c])
    want: dict[str, float] = {}
    for ranked in (list(dense), list(bm25), by_maxsim):
        for rank, rid in enumerate(ranked, start=1):
            want[rid] = want.get(rid, 0.0) + 1 / (60 + rank)
    r = run(["query", "--db", str(db), QUERIES[0], "--mode", "hybrid", "--rerank", "maxsim-rrf", "-k", "5",
             "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    hits = read_ipc(r.stdout_bytes).to_pylist()
    best = sorted(want, key=lambda c: -want[c])[:5]
    assert [h["id"] for h in hits] == best
    assert np.allclose([h["score"] for h in hits], [want[c] for c in best], atol=1e-6)
    assert all(h["first_rank"] >= 1 for h in hits)


def test_rerank_maxsim_mix_sums_the_z_scores_of_the_first_stage_lists_and_maxsim(stores, model):
    """maxsim-mix over hybrid: Σ z(score) over the dense list, the BM25 list and MaxSim's scores of
    their union, a candidate missing from a list at that list's lowest z; recomputed here from the
    plain modes' scores and a numpy MaxSim."""
    db = stores["naive-int4"]
    dense, bm25, by_maxsim = hybrid_lists_and_maxsim(db, model)
    union = list(by_maxsim)
    want = dict.fromkeys(union, 0.0)
    for scores in (dense, bm25, by_maxsim):
        values = np.array(list(scores.values()), np.float64)
        z = {c: (v - values.mean()) / values.std() for c, v in scores.items()}
        floor = min(z.values())
        for c in union:
            want[c] += z.get(c, floor)
    r = run(["query", "--db", str(db), QUERIES[0], "--mode", "hybrid", "--rerank", "maxsim-mix", "-k", "5",
             "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    hits = read_ipc(r.stdout_bytes).to_pylist()
    best = sorted(want, key=lambda c: -want[c])[:5]
    assert [h["id"] for h in hits] == best
    assert np.allclose([h["score"] for h in hits], [want[c] for c in best], atol=1e-3)
    assert all(h["first_rank"] >= 1 for h in hits)


# ------------------------------------------------------------------ compress and token vectors


def test_convert_reencodes_from_the_decoded_floats_and_keeps_null_rows(stores):
    """int4 → binary equals float32 → binary (int4 keeps every sign); float32 → int4 equals what
    embed stores at int4; a null row stays null."""
    col = stored(stores["naive-f32"]).column("tokens").combine_chunks()
    s32, s4, sb = (multi.TokenSettings(384, p) for p in ("float32", "int4", "binary"))
    as_int4 = multi.convert(col, s32, s4)
    assert as_int4.equals(stored(stores["naive-int4"]).column("tokens").combine_chunks())
    binary = stored(stores["naive-bin"]).column("tokens").combine_chunks()
    assert multi.convert(as_int4, s4, sb).equals(binary)
    holed = pa.ListArray.from_arrays(col.offsets, col.values,
                                     mask=pa.array([i == 1 for i in range(len(col))]))
    converted = multi.convert(holed, s32, sb)
    assert converted.is_null().to_pylist() == holed.is_null().to_pylist()
    assert multi.coarser(s4) == ["int4", "residual", "binary"] and multi.coarser(s32)[0] == "float32"


def test_compress_method_leaves_token_vectors_intact(stores, tmp_path):
    db = tmp_path / "store"
    shutil.copytree(stores["naive-int4"], db)
    before = stored(db)
    r = run(["compress", "--db", str(db), "--method", "binary"])
    assert r.exit_code == 0, r.stderr
    after = stored(db)
    assert after.column("tokens").equals(before.column("tokens"))
    assert after.schema.metadata == before.schema.metadata


def _top_ids(db: Path, mode: str = "maxsim") -> list[str]:
    r = run(["query", "--db", str(db), *QUERIES, "--mode", mode, "-k", "3", "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    t = read_ipc(r.stdout_bytes)
    return [t.filter(pa.compute.equal(t["query_id"], q))["id"][0].as_py() for q in ("q1", "q2")]


def test_compress_tokens_converts_in_place_and_the_table_queries_the_same(stores, tmp_path):
    from arrowsmith.commands.index import table_stats

    db = tmp_path / "store"
    shutil.copytree(stores["naive-f32"], db)
    before, top = stored(db), _top_ids(db)
    r = run(["compress", "--db", str(db), "--tokens", "int4"])
    assert r.exit_code == 0, r.stderr
    assert "float32 → int4" in r.stderr and "--token-precision int4" in r.stderr
    after = stored(db)
    assert after.column("tokens").equals(stored(stores["naive-int4"]).column("tokens"))
    for name in ("id", "vector", "text", "doc_key"):  # the rest of each row as it was
        assert after.column(name).equals(before.column(name))
    assert multi.settings_of(json.loads(after.schema.metadata[b"arrowsmith.model"])).precision == "int4"
    stats = table_stats(db)
    assert [r["bytes_per_token"] for r in stats["representations"] if "precision" in r] == [194]
    assert any(ix["type"] == "FTS" for ix in stats["indexes"])  # rebuilt after the overwrite
    assert _top_ids(db) == top and _top_ids(db, "auto") == _top_ids(stores["naive-int4"], "auto")
    assert run(["doctor", "--db", str(db)]).exit_code == 0
    # a finer precision cannot be made from int4; a run continuing the table must name int4
    r = run(["compress", "--db", str(db), "--tokens", "float16"])
    assert r.exit_code == 2 and "stores its token vectors as int4" in r.stderr
    r = run([*EMBED, "--db", str(db), "--multivector", "--token-precision", "float32"],
            input=run(["chunk", str(SAMPLES), "--max-tokens", "64"]).stdout_bytes)
    assert r.exit_code == 2 and "'precision': 'int4'" in r.stderr
    r = run(["compress", "--db", str(stores["plain"]), "--tokens", "binary"])
    assert r.exit_code == 2 and "embed --multivector" in r.stderr


def test_compress_tokens_killed_before_its_commit_leaves_the_table(stores, tmp_path):
    from conftest import run_subprocess

    db = tmp_path / "store"
    shutil.copytree(stores["naive-f16"], db)
    before = stored(db)
    r = run_subprocess(["compress", "--db", str(db), "--tokens", "binary"],
                       env={"ARROWSMITH_FAULT": "before_commit"})
    assert r.returncode == 137, r.stderr
    after = stored(db)
    assert after.column("tokens").equals(before.column("tokens"))
    assert after.schema.metadata == before.schema.metadata
    assert run(["doctor", "--db", str(db)]).exit_code == 0


def test_compress_report_lists_each_token_precision(stores, tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(QUERIES)))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("q0\tsky.md\t1\nq1\ttides.md\t1\n")
    db = stores["naive-f16"]
    r = run(["compress", "--db", str(db), "--report", "--queries", str(queries), "--qrels", str(qrels),
             "--methods", "binary", "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    t = read_ipc(r.stdout_bytes).to_pylist()
    tokens = [x for x in t if x["representation"] == "tokens"]
    assert [x["method"] for x in tokens] == ["float16", "int4", "residual", "binary"]
    assert [x["bytes_per_token"] for x in tokens] == [768, 194, 100, 48]
    n_tokens = sum(len(x) for x in stored(db).column("tokens").to_pylist())
    per_chunk = n_tokens / stored(db).num_rows
    assert [x["bytes_per_vector"] for x in tokens] == [round(per_chunk * b) for b in (768, 194, 100, 48)]
    assert tokens[0]["recall@10"] == 1.0 and tokens[0]["ndcg@10_delta"] == 0.0
    assert all(x["ndcg@10"] is not None for x in tokens)
    assert [x["method"] for x in t if x["representation"] == "vector"] == ["float32", "binary"]
