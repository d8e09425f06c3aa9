"""`embed`: batching, dtype, prompts, --dim, late chunking, the CLI and the store wiring (real model)."""

from __future__ import annotations

import copy as copy_module
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import read_ipc, run, to_ipc

from arrowsmith.commands.embed import (
    EmbedStats,
    LatePlan,
    assign_windows,
    embed_batches,
    late_windows,
    span_tokens,
)
from arrowsmith.commands.errors import UsageError
from arrowsmith.commands.query_vectors import embed_queries, model_from_meta
from arrowsmith.plugins.sentence_transformers import cpu_has_native_bf16, length_batches

# Our own text in the style of the late-chunking paper's Berlin example: only the first
# sentence names the city; the others say "the city" / "it".
LISBON = ("Lisbon is the capital of Portugal. The city lies where the Tagus river meets the Atlantic. "
          "It is known for steep hills, yellow trams and tiled facades. Its old districts were rebuilt "
          "after the great earthquake of 1755. Today the city attracts millions of visitors every year.")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S[^.]*\.", text)]


def chunked(docs: list[tuple[str, str, list[tuple[int, int]]]], **meta_cols) -> pa.RecordBatch:
    rows = [{"id": i, "text": t, "doc_hash": f"h-{i}-{len(t)}",
             "chunks": [{"start": s, "end": e, "n_tokens": 0} for s, e in spans], **meta_cols}
            for i, t, spans in docs]
    schema_meta = {b"arrowsmith.stage": b"chunk",
                   b"arrowsmith.chunker": json.dumps({"strategy": "sentences", "version": 1}).encode()}
    batch = pa.RecordBatch.from_pylist(rows)
    return batch.replace_schema_metadata(schema_meta)


def vectors(table) -> np.ndarray:
    return np.array(table.column("vector").to_pylist(), dtype=np.float32)


def cos(a, b) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def fp32(model):
    from arrowsmith.plugins.registry import load_model

    return load_model(None, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def reference(fp32):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(fp32.path, device="cpu")


# ------------------------------------------------------------------ pure functions


def test_length_batches_respect_budget_and_cover_all():
    lengths = [5, 40, 3, 40, 17, 9, 200, 1]
    batches = length_batches(lengths, budget=80)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [6]  # longer than the budget: alone
    for b in batches[1:]:
        assert max(lengths[i] for i in b) * len(b) <= 80
    assert [lengths[i] for b in batches for i in b] == sorted(lengths, reverse=True)


def test_late_windows_and_most_central_assignment():
    assert late_windows(10, 16, 4) == [(0, 10)]
    windows = late_windows(40, 16, 4)
    assert windows == [(0, 16), (12, 28), (24, 40)]  # last window aligned to the end
    owner = assign_windows(40, windows)
    # overlap [12, 16): tokens 12, 13 are more central in window 0 (context to its cut edge
    # at 16: 3, 2 vs 0, 1); the tie at 14 goes to the earlier window... check every token:
    expected = []
    for t in range(40):
        scores = []
        for s, e in windows:
            if s <= t < e:
                left = t - s if s > 0 else np.inf
                right = e - 1 - t if e < 40 else np.inf
                scores.append(min(left, right))
            else:
                scores.append(-1)
        expected.append(int(np.argmax(scores)))
    assert owner.tolist() == expected
    assert owner[:14].tolist() == [0] * 14 and owner[14:26].tolist() == [1] * 12
    assert owner[26:].tolist() == [2] * 14
    # ragged lengths: as few windows as full-size ones need, equal and evenly spaced, so the
    # overlap is what was asked for, not a last window pushed back over its neighbour
    windows = late_windows(50, 16, 5)
    assert windows == [(0, 14), (9, 23), (18, 32), (27, 41), (36, 50)]
    owner = assign_windows(50, windows)
    assert all(windows[w][0] <= t < windows[w][1] for t, w in enumerate(owner))
    # a document just over one all-MiniLM window: two windows of 182, not two of 254 (508 tokens)
    assert late_windows(300, 254, 63) == [(0, 182), (118, 300)]
    for n in range(255, 2000, 37):
        windows = late_windows(n, 254, 63)
        overlaps = [a[1] - b[0] for a, b in zip(windows, windows[1:], strict=False)]
        assert windows[0][0] == 0 and windows[-1][1] == n
        assert max(e - s for s, e in windows) <= 254 and min(overlaps) >= 63 and max(overlaps) <= 64
        assert len(windows) == -(-(n - 63) // (254 - 63))


def test_pool_takes_each_token_from_its_window():
    # 2 windows over 6 tokens; window outputs carry their window index so we can see the source
    windows = [(0, 4), (2, 6)]
    owner = assign_windows(6, windows)
    assert owner.tolist() == [0, 0, 0, 1, 1, 1]
    outs = [np.full((1 + 4 + 1, 2), w, dtype=np.float32) for w in range(2)]  # CLS + 4 tokens + SEP
    plan = LatePlan([[0] * 6, [0] * 6], [1, 1], windows, owner, [(0, 2), (2, 4), (4, 6)])
    pooled = plan.pool(outs, include_specials=False)
    assert pooled[:, 0].tolist() == [0.0, 0.5, 1.0]


def test_span_tokens_maps_characters_to_tokens():
    offsets = np.array([[0, 5], [6, 8], [9, 12], [12, 13], [14, 20]])
    assert span_tokens(offsets, 0, 8) == (0, 2)
    assert span_tokens(offsets, 6, 13) == (1, 4)
    assert span_tokens(offsets, 13, 20) == (4, 5)  # the space before a token is not the token
    assert span_tokens(offsets, 7, 10) == (1, 3)  # partial overlap includes both tokens


# ------------------------------------------------------------------ the model


def test_encode_matches_sentence_transformers_in_order(fp32, reference):
    texts = ["short", "a much longer sentence about tides and the moon " * 5, "", "middle length text here"]
    ours = fp32.encode(texts, batch_tokens=64)  # budget forces several batches, sorted by length
    ref = reference.encode(texts, batch_size=32)
    assert ours.dtype == np.float32 and ours.shape == (4, 384)
    assert cos(ours, ref).min() > 0.99999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="CPU without native bf16")
def test_auto_dtype_is_bf16_autocast_and_accurate(fp32):
    from arrowsmith.plugins.registry import load_model

    model = load_model(None, device="cpu")  # auto (the session's `model` is fp32)
    assert (model.device, model.dtype) == ("cpu", "bf16")
    assert fp32.describe()["dtype"] == "fp32" and model.describe()["dtype"] == "half"
    texts = [LISBON, "why is the sky blue", "sourdough needs a starter and patience"]
    assert cos(model.encode(texts), fp32.encode(texts)).min() > 0.999


def test_too_long_chunk_is_an_error_naming_it(tmp_path):
    doc = "word " * 400
    batch = chunked([("long-doc", "ok. " + doc, [(0, 3), (4, 4 + len(doc))])])
    src = tmp_path / "in.arrows"
    src.write_bytes(to_ipc(pa.Table.from_batches([batch])))
    r = run(["embed", str(src), "-f", "jsonl"])
    assert r.exit_code == 65
    assert "chunk long-doc#1 (characters 4-2004) has 402 tokens, more than the model's window of 256" \
        in r.stderr
    assert r.stdout_bytes == b""


def test_prompts_from_model_config_and_override(tmp_path, fp32):
    from arrowsmith.plugins.registry import load_model

    copy = tmp_path / "prompted"
    copy.mkdir()
    for f in Path(fp32.path).iterdir():
        (copy / f.name).symlink_to(f)
    (copy / "config_sentence_transformers.json").unlink()
    (copy / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": "passage: "}}))
    configured = load_model(str(copy), device="cpu", dtype="fp32")  # reads config, loads no weights
    assert (configured.prompt_for("query"), configured.prompt_for("document")) == ("query: ", "passage: ")
    m = copy_module.copy(fp32)  # the same weights with the configured prompts
    m.prompts = configured.prompts
    text = ["tides follow the moon"]
    np.testing.assert_allclose(m.encode(text), fp32.encode(["passage: tides follow the moon"]), atol=1e-5)
    np.testing.assert_allclose(m.encode(text, "query"), fp32.encode(["query: tides follow the moon"]),
                               atol=1e-5)
    np.testing.assert_allclose(m.encode(text, prompt=""), fp32.encode(text), atol=1e-5)
    rows = pa.RecordBatch.from_pylist([{"id": "t", "text": text[0]}])
    out = pa.Table.from_batches(list(embed_batches([rows], m, prompt="search: ")))
    meta = json.loads(out.schema.metadata[b"arrowsmith.model"])
    assert (meta["prompt"], meta["query_prompt"]) == ("search: ", "query: ")
    np.testing.assert_allclose(vectors(out), fp32.encode(["search: " + text[0]]), atol=1e-5)


def test_dim_truncates_renormalises_and_warns(tmp_path, fp32):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "the tide comes in twice a day"}\n')
    r = run(["embed", str(src), "--dim", "128", "--dtype", "fp32", "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    assert "all-MiniLM-L6-v2 is not known to be trained for --dim 128" in r.stderr
    table = read_ipc(r.stdout_bytes)
    v = vectors(table)[0]
    full = fp32.encode(["the tide comes in twice a day"])[0]
    assert v.shape == (128,)
    np.testing.assert_allclose(v, full[:128] / np.linalg.norm(full[:128]), atol=1e-5)
    assert json.loads(table.schema.metadata[b"arrowsmith.model"])["dim"] == 128


# ------------------------------------------------------------------ embed_batches


def test_embed_chunked_documents_schema_and_keys(fp32):
    text = "Tides rise. Tides fall. The moon pulls."
    batch = chunked([("d1", text, sentence_spans(text)), ("d2", "One chunk only.", [(0, 15)])], source="x")
    stats = EmbedStats()
    out = pa.Table.from_batches(list(embed_batches([batch], fp32, stats=stats)))
    assert out.column("id").to_pylist() == ["d1#0", "d1#1", "d1#2", "d2#0"]
    assert out.column("chunk_index").to_pylist() == [0, 1, 2, 0]
    texts = out.column("text").to_pylist()
    assert texts == ["Tides rise.", "Tides fall.", "The moon pulls.", "One chunk only."]
    assert list(zip(out.column("start").to_pylist(), out.column("end").to_pylist(), strict=True)) == \
        [(0, 11), (12, 23), (24, 39), (0, 15)]
    assert out.column("source").to_pylist() == ["x"] * 4  # metadata carried to every chunk
    assert out.schema.names[:8] == ["id", "doc_id", "chunk_index", "text", "start", "end", "vector",
                                    "doc_key"]
    assert out.schema.field("vector").type == pa.list_(pa.float32(), 384)
    np.testing.assert_allclose(vectors(out), fp32.encode(out.column("text").to_pylist()), atol=1e-6)
    keys = out.column("doc_key").to_pylist()
    assert keys[0] == keys[1] == keys[2] != keys[3] and len(keys[0]) == 64
    meta = {k.decode(): v.decode() for k, v in out.schema.metadata.items()}
    assert meta["arrowsmith.stage"] == "embed"
    assert json.loads(meta["arrowsmith.chunker"])["strategy"] == "sentences"
    model_meta = json.loads(meta["arrowsmith.model"])
    assert (model_meta["plugin"], model_meta["name"], model_meta["dim"], model_meta["late"]) == \
        ("sentence-transformers", "all-MiniLM-L6-v2", 384, False)
    assert (stats.documents_seen, stats.documents_embedded, stats.chunks) == (2, 2, 4)
    assert stats.tokens == sum(c + 2 for c in fp32.tokenizer.count_tokens(texts))  # + CLS and SEP
    # the key changes with everything that changes a vector
    again = pa.Table.from_batches(list(embed_batches([batch], fp32)))
    assert again.column("doc_key").to_pylist() == keys
    for kw in ({"late": True}, {"dim": 64}, {"prompt": "x: "}):
        other = pa.Table.from_batches(list(embed_batches([batch], fp32, **kw)))
        assert other.column("doc_key")[0].as_py() != keys[0], kw


def test_skip_doc_is_asked_per_document(fp32):
    batch = chunked([("d1", "Alpha.", [(0, 6)]), ("d2", "Beta.", [(0, 5)])])
    asked = []

    def skip(doc_id, key):
        asked.append((doc_id, len(key)))
        return doc_id == "d1"

    stats = EmbedStats()
    out = pa.Table.from_batches(list(embed_batches([batch], fp32, skip_doc=skip, stats=stats)))
    assert asked == [("d1", 64), ("d2", 64)]
    assert out.column("id").to_pylist() == ["d2#0"]
    assert (stats.documents_seen, stats.documents_skipped, stats.documents_embedded) == (2, 1, 1)


def test_plain_text_table_rows_are_chunks(tmp_path, fp32):
    src = tmp_path / "rows.csv"
    src.write_text("id,text,lang\n007,hello world,en\n008,bonjour,fr\n")
    r = run(["embed", str(src), "--dtype", "fp32", "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    t = read_ipc(r.stdout_bytes)
    assert t.column("id").to_pylist() == ["007#0", "008#0"]
    assert t.column("doc_id").to_pylist() == ["007", "008"]
    assert t.column("end").to_pylist() == [11, 7]
    assert t.column("lang").to_pylist() == ["en", "fr"]
    np.testing.assert_allclose(vectors(t), fp32.encode(["hello world", "bonjour"]), atol=1e-6)
    assert re.search(r"embed: 2 documents: 0 unchanged, 2 embedded; 2 chunks, 9 tokens in [\d.]+s", r.stderr)


# ------------------------------------------------------------------ late chunking


def test_late_one_chunk_equals_naive(fp32):
    batch = chunked([("one", LISBON, [(0, len(LISBON))])])
    naive = vectors(pa.Table.from_batches(list(embed_batches([batch], fp32))))
    incl = vectors(pa.Table.from_batches(list(embed_batches([batch], fp32, late=True,
                                                            late_specials="include"))))
    excl = vectors(pa.Table.from_batches(list(embed_batches([batch], fp32, late=True))))
    assert cos(incl, naive)[0] > 0.9999  # same tokens, same mean: the same vector
    assert 0.98 < cos(excl, naive)[0] < 0.9999  # CLS/SEP left out of the mean by default
    np.testing.assert_allclose(np.linalg.norm(excl), 1.0, atol=1e-5)


def test_late_chunks_carry_the_documents_context(fp32):
    spans = sentence_spans(LISBON)
    assert len(spans) == 5
    batch = chunked([("lisbon", LISBON, spans)])
    naive = vectors(pa.Table.from_batches(list(embed_batches([batch], fp32))))
    late = vectors(pa.Table.from_batches(list(embed_batches([batch], fp32, late=True))))
    entity = fp32.encode(["Lisbon"])[0]
    naive_sim, late_sim = naive @ entity, late @ entity
    assert cos(late, naive).max() < 0.99  # late vectors are not the naive ones
    # sentences 2-5 never name the city: late chunking brings them closer to it
    assert (late_sim[1:] > naive_sim[1:] + 0.05).all(), (naive_sim, late_sim)


def test_late_long_document_uses_windows(fp32):
    text = " ".join([LISBON] * 6)  # ~400 tokens: several 64-token windows
    spans = sentence_spans(text)
    batch = chunked([("long", text, spans)])
    stats = EmbedStats()
    out = pa.Table.from_batches(list(embed_batches([batch], fp32, late=True, window=64, window_overlap=16,
                                                   stats=stats)))
    ids, _ = fp32.token_ids(text)
    windows = late_windows(len(ids), 62, 16)  # 64 minus CLS and SEP
    assert len(windows) > 5
    assert stats.tokens == sum(e - s + 2 for s, e in windows)  # each window once, with its specials
    v = vectors(out)
    assert v.shape == (len(spans), 384)
    # each token's vector is the one from the window where it is most central
    owner = assign_windows(len(ids), windows)
    outs = fp32.encode_tokens([fp32.wrap_ids(ids[s:e])[0] for s, e in windows])
    tokens = np.stack([outs[w][1 + t - windows[w][0]] for t, w in enumerate(owner)])
    _, offsets = fp32.token_ids(text)
    for c in (0, len(spans) // 2, len(spans) - 1):
        a, b = span_tokens(offsets, *spans[c])
        assert cos(v[c], tokens[a:b].mean(axis=0)) > 0.9999
    meta = json.loads(out.schema.metadata[b"arrowsmith.model"])
    assert (meta["late"], meta["window"], meta["window_overlap"], meta["late_specials"]) == \
        (True, 64, 16, "exclude")


def test_late_default_window_and_overlap(fp32):
    batch = chunked([("d", "Short.", [(0, 6)])])
    meta = json.loads(pa.Table.from_batches(list(embed_batches([batch], fp32, late=True)))
                      .schema.metadata[b"arrowsmith.model"])
    assert (meta["window"], meta["window_overlap"]) == (256, 15)  # max length; a sixteenth of 254
    # positions up to 512 exist, but the model's window is 256: refused before any work
    with pytest.raises(UsageError, match="--window 512 exceeds the model's window of 256 tokens"):
        list(embed_batches([batch], fp32, late=True, window=512))


def test_late_refuses_cls_pooled_model_unless_forced(tmp_path, fp32):
    copy = tmp_path / "cls"
    copy.mkdir()
    for f in Path(fp32.path).iterdir():
        if f.name != "1_Pooling":
            (copy / f.name).symlink_to(f)
    (copy / "1_Pooling").mkdir()
    (copy / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 384, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "The city lies on a river."}\n')
    r = run(["embed", str(src), "--model", str(copy), "--late"])
    assert r.exit_code == 2
    assert "late chunking mean-pools token vectors, but" in r.stderr and "is cls-pooled" in r.stderr
    r = run(["embed", str(src), "--model", str(copy), "--late", "--force", "-f", "jsonl"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout_bytes)["id"] == "a#0"


# ------------------------------------------------------------------ CLI, store, queries


def test_cli_store_incremental_and_late(tmp_path):
    import lancedb

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": f"Document {i}. It talks about tides."}) + "\n"
                            for i in range(3)))
    db = str(tmp_path / "store")
    first = run(["embed", str(docs), "--db", db])
    assert first.exit_code == 0, first.stderr
    assert "embed: 3 documents: 0 unchanged, 3 embedded, 0 pruned; 3 chunks" in first.stderr
    table = lancedb.connect(db).open_table("chunks")
    version, rows = table.version, table.count_rows()
    again = run(["embed", str(docs), "--db", db])
    assert again.exit_code == 0
    assert "embed: 3 documents: 3 unchanged, 0 embedded, 0 pruned; 0 chunks, 0 tokens" in again.stderr
    table = lancedb.connect(db).open_table("chunks")
    assert (table.version, table.count_rows()) == (version, rows)
    # late vectors are another embedding space: a new table, then a no-op re-run
    late = run(["embed", str(docs), "--late", "--db", db, "--table", "late"])
    assert late.exit_code == 0, late.stderr
    meta = json.loads(lancedb.connect(db).open_table("late").schema.metadata[b"arrowsmith.model"])
    assert meta["late"] is True
    late2 = run(["embed", str(docs), "--late", "--db", db, "--table", "late"])
    assert "3 unchanged, 0 embedded" in late2.stderr
    # a different dim into the same table is refused
    other = run(["embed", str(docs), "--db", db, "--dim", "64"])
    assert other.exit_code == 2
    assert "refusing to add" in other.stderr
    # so are late vectors into a table of naive ones: its metadata must describe every vector
    mixed = run(["embed", str(docs), "--late", "--db", db])
    assert mixed.exit_code == 2
    assert "was embedded with late=False (this run: True); refusing" in mixed.stderr
    assert "--replace" in mixed.stderr
    table = lancedb.connect(db).open_table("chunks")
    assert (table.version, table.count_rows()) == (version, rows)
    rebuilt = run(["embed", str(docs), "--late", "--db", db, "--replace"])
    assert rebuilt.exit_code == 0, rebuilt.stderr
    table = lancedb.connect(db).open_table("chunks")
    assert json.loads(table.schema.metadata[b"arrowsmith.model"])["late"] is True
    assert table.count_rows() == rows


def test_a_metadata_change_alone_reaches_the_store(tmp_path):
    import lancedb

    from arrowsmith.commands.doctor import diagnose

    src, db = tmp_path / "docs.jsonl", str(tmp_path / "store")

    def embed(lang: str, mtime: str) -> str:
        src.write_text("".join(json.dumps({"id": d, "text": f"{d}: tides follow the moon.", "lang": lang,
                                           "mtime": mtime}) + "\n" for d in ("a", "b")))
        r = run(["embed", str(src), "--db", db])
        assert r.exit_code == 0, r.stderr
        return r.stderr

    assert "0 unchanged, 2 embedded" in embed("en", "2026-01-01")
    # mtime is informational: touching files re-embeds nothing
    assert "2 unchanged, 0 embedded" in embed("en", "2026-02-02")
    # any other carried column is part of the document: its rows are replaced
    assert "0 unchanged, 2 embedded" in embed("fr", "2026-02-02")
    table = lancedb.connect(db).open_table("chunks").to_arrow()
    assert table.num_rows == 2 and set(table.column("lang").to_pylist()) == {"fr"}
    report = diagnose(db)
    assert report.healthy, report.findings  # doctor recomputes the same keys, metadata included
    assert not any("consistency only" in note for note in report.notes)


def test_checkpoint_rows_bounds_each_commit(tmp_path):
    import lancedb

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": f"Note {i} on tides."}) + "\n"
                            for i in range(5)))
    db = str(tmp_path / "store")
    r = run(["embed", str(docs), "--db", db, "--checkpoint-rows", "2"])
    assert r.exit_code == 0, r.stderr
    table = lancedb.connect(db).open_table("chunks")
    # 5 one-chunk documents, at most 2 rows a commit: 3 commits (the first creates the table)
    assert table.count_rows() == 5
    added = [v["version"] for v in table.list_versions()]
    assert len(added) == 3, added


def test_empty_text_rows_are_skipped_and_counted(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "e", "text": ""}\n{"id": "w", "text": " \\n\\t"}\n{"id": "t", "text": "tides"}\n')
    r = run(["embed", str(src), "-f", "jsonl"])
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout_bytes.decode().splitlines()]
    assert [row["id"] for row in rows] == ["t#0"]
    assert "3 documents: 0 unchanged, 1 embedded, 2 empty skipped" in r.stderr
    assert "document e: empty text, skipped" in r.stderr


def test_env_vars_set_options(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "tides"}\n')
    r = run(["embed", str(src), "-f", "jsonl"], env={"ARROWSMITH_DIM": "32", "ARROWSMITH_DTYPE": "fp32"})
    assert r.exit_code == 0, r.stderr
    assert len(json.loads(r.stdout_bytes)["vector"]) == 32


def test_model_from_meta_and_queries(fp32):
    batch = chunked([("d", "The moon pulls the sea.", [(0, 23)])])
    out = pa.Table.from_batches(list(embed_batches([batch], fp32, dim=96, query_prompt="")))
    meta = {k.decode(): v.decode() for k, v in out.schema.metadata.items()}
    from arrowsmith.commands.schemas import read_meta

    m = model_from_meta(read_meta(out.schema), device="cpu", dtype="fp32")
    assert (m.name, m.embed_params["dim"]) == ("all-MiniLM-L6-v2", 96)
    q = embed_queries(["what pulls the sea"], m)
    assert q.shape == (1, 96)
    full = fp32.encode(["what pulls the sea"], "query")[0]
    np.testing.assert_allclose(q[0], full[:96] / np.linalg.norm(full[:96]), atol=1e-5)
    assert "arrowsmith.model" in meta


@pytest.mark.gpu
@pytest.mark.skipif(not os.environ.get("CUDA_VISIBLE_DEVICES") and not Path("/dev/nvidia0").exists(),
                    reason="no CUDA device")
def test_gpu_half_precision_matches_cpu_fp32(fp32):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from arrowsmith.plugins.registry import load_model

    gpu = load_model(None, device="auto")
    assert gpu.device == "cuda" and gpu.dtype in ("bf16", "fp16")
    texts = [LISBON, "why is the sky blue"] * 50
    assert cos(gpu.encode(texts), fp32.encode(texts)).min() > 0.999


@pytest.mark.parametrize("late", [False, True])
def test_unknown_tokens_are_counted_and_a_corpus_full_of_them_is_warned_about(model, late, caplog, tmp_path):
    """Text outside the vocabulary becomes [UNK] and embeds as noise: embed counts those tokens
    (naive and late alike, from the real tokenizer) and warns above 1% of what it embedded."""
    unk = model.unknown_token_id
    snowmen = "☃ ☃ ☃ ☃."  # not in all-MiniLM-L6-v2's vocabulary: one [UNK] each
    assert unk is not None and model.token_ids(snowmen)[0].count(unk) == 4
    text = "Harbour cranes move containers. " + snowmen
    stats = EmbedStats()
    from arrowsmith.commands.embed import embed_to_sink
    from arrowsmith.commands.io import BatchSink

    with caplog.at_level("WARNING", logger="arrowsmith.embed"):
        embed_to_sink([chunked([("u", text, sentence_spans(text))])], model,
                      BatchSink(str(tmp_path / "out.arrows")), late=late, stats=stats)
    assert stats.unknown_tokens == 4
    assert stats.tokens > 4
    (warning,) = [r.getMessage() for r in caplog.records if "[UNK]" in r.getMessage()]
    assert warning.startswith(f"4 of {stats.tokens} tokens (") and "all-MiniLM-L6-v2" in warning


def test_no_unknown_warning_below_one_percent():
    stats = EmbedStats(tokens=1000, unknown_tokens=9)
    assert stats.unknown_warning("m") is None
    stats.unknown_tokens = 10
    assert "10 of 1,000 tokens (1.0%) are unknown to m's tokenizer" in stats.unknown_warning("m")
    assert EmbedStats().unknown_warning("m") is None  # nothing embedded


def test_fit_queries_cuts_where_sentence_transformers_truncates(fp32, reference):
    """eval's queries longer than the window (ArguAna's) are cut as MTEB's encode cuts them."""
    from arrowsmith.commands.query_vectors import fit_queries

    short = "wing lift at supersonic speed"
    long = "why does the boundary layer separate " + "near the trailing edge of a swept wing " * 40
    assert len(fp32.tokenizer.token_offsets(long)) > 254
    texts, cut = fit_queries([short, long], fp32)
    assert cut == 1 and texts[0] == short and long.startswith(texts[1]) and len(texts[1]) < len(long)
    assert len(fp32.tokenizer.token_offsets(texts[1])) == 254  # 256 with [CLS] and [SEP]
    ours = embed_queries(texts, fp32)
    theirs = reference.encode([short, long], normalize_embeddings=True)
    assert cos(ours, theirs).min() > 0.99999
    from arrowsmith.plugins.base import TooLongError

    with pytest.raises(TooLongError):  # query itself never cuts: it refuses
        embed_queries([long], fp32)
