"""ColBERT-style models (issue 19 §2b, §4): a sentence-transformers ``MultiVectorEncoder`` directory
given as ``--model DIR`` to ``embed --multivector``, queried by MaxSim, and ``tune --multivector``.

The model is built here from the packaged MiniLM with a seeded 32-d projection, text prefixes, query
expansion and a punctuation skiplist, and saved: what the store holds is checked against that
model's own ``encode_document``/``encode_query`` (sentence-transformers), with the real LanceDB.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
from conftest import read_ipc, run

from arrowsmith.commands.spaces import multi
from arrowsmith.commands.store import open_table

EMBED = ["embed", "--dtype", "fp32", "--device", "cpu", "--multivector", "--token-precision", "float32"]
PROMPTS = {"query": "query: ", "document": "passage: "}
EXPANSION = 12  # queries are expanded to at least this many tokens ([MASK] positions scored)
DIM = 32


@pytest.fixture(scope="module")
def colbert_dir(tmp_path_factory) -> Path:
    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    from arrowsmith.plugins.registry import packaged_path

    transformer = Transformer(packaged_path("all-MiniLM-L6-v2"), max_seq_length=128,
                              query_expansion={"strategy": "min", "length": EXPANSION})
    torch.manual_seed(0)
    head = Dense(384, DIM, bias=False, activation_function=torch.nn.Identity(),
                 module_input_name="token_embeddings")
    skiplist = MultiVectorMask(skiplist_words=list(string.punctuation))
    normalize = Normalize(module_input_name="token_embeddings")
    model = MultiVectorEncoder(modules=[transformer, head, skiplist, normalize],
                               prompts=PROMPTS, device="cpu")
    out = tmp_path_factory.mktemp("colbert") / "model"
    model.save(str(out))
    return out


@pytest.fixture(scope="module")
def encoder(colbert_dir):
    """The saved model as sentence-transformers loads it (the reference)."""
    from sentence_transformers import MultiVectorEncoder

    return MultiVectorEncoder(str(colbert_dir), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def chunked(samples_chunked_64) -> bytes:
    return samples_chunked_64


@pytest.fixture(scope="module")
def store(colbert_dir, chunked, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("mvstore") / "db"
    r = run([*EMBED, "--model", str(colbert_dir), "--db", str(db)], input=chunked)
    assert r.exit_code == 0, r.stderr
    return db


def test_stored_token_vectors_are_the_models_own_document_vectors(store, encoder):
    t = open_table(store).to_arrow().sort_by("id")
    meta = json.loads(t.schema.metadata[b"arrowsmith.model"])
    settings = multi.settings_of(meta)
    assert settings == multi.TokenSettings(DIM, "float32", 1.0, "multi-vector-encoder")
    assert (meta["dim"], meta["prompt"], meta["query_prompt"]) == (DIM, PROMPTS["document"], PROMPTS["query"])
    tokens, offsets = multi.decode(t.column("tokens"), settings)
    texts = t.column("text").to_pylist()
    ref = encoder.encode_document(texts, convert_to_numpy=True)  # the "passage: " prompt, skiplist applied
    assert np.diff(offsets).tolist() == [len(r) for r in ref]
    assert np.abs(tokens - np.concatenate(ref)).max() < 1e-5
    # punctuation is not scored: fewer vectors than the chunk's tokens + prompt + [CLS]/[SEP]
    with_punct = [t for t in texts if any(c in string.punctuation for c in t)]
    assert with_punct and all(len(r) < len(encoder.tokenizer("passage: " + x)["input_ids"])
                              for r, x in zip(ref, texts, strict=True) if x in with_punct)
    # the dense vector: the mean of the chunk's unit token vectors, normalised
    vectors = np.stack(t.column("vector").to_numpy(zero_copy_only=False))
    means = np.stack([r.mean(axis=0) for r in ref])
    assert np.abs(vectors - means / np.linalg.norm(means, axis=1, keepdims=True)).max() < 1e-5
    assert run(["doctor", "--db", str(store)]).exit_code == 0


def test_query_maxsim_encodes_queries_with_the_prefix_and_expansion(store, encoder):
    query = "what makes the tides"
    r = run(["query", "--db", str(store), query, "--mode", "maxsim", "-k", "3", "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    hits = read_ipc(r.stdout_bytes).to_pylist()
    assert hits[0]["doc_id"] == "tides.txt"
    q = encoder.encode_query([query], convert_to_numpy=True)[0]  # "query: " + text, [MASK]-expanded
    assert len(q) == EXPANSION > len(encoder.tokenizer(PROMPTS["query"] + query)["input_ids"])
    t = open_table(store).to_arrow()
    tokens, offsets = multi.decode(t.column("tokens"), multi.TokenSettings(DIM, "float32"))
    row = {rid: i for i, rid in enumerate(t.column("id").to_pylist())}

    def maxsim(qv: np.ndarray, rid: str) -> float:
        i = row[rid]
        return float((qv @ tokens[offsets[i]:offsets[i + 1]].T).max(axis=1).mean())

    for h in hits:  # LanceDB's multivector search sums its distances in float32: ~1e-5
        assert abs(h["score"] - maxsim(q, h["id"])) < 1e-4
    bare = encoder.encode_query([query], prompt="", convert_to_numpy=True)[0]  # no prefix: other scores
    assert abs(hits[0]["score"] - maxsim(bare, hits[0]["id"])) > 1e-3
    # the dense first stage embeds the query through the same model (the mean of its token vectors)
    r = run(["query", "--db", str(store), query, "--mode", "vector", "-k", "1", "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    top = read_ipc(r.stdout_bytes).to_pylist()[0]
    mean = q.mean(axis=0) / np.linalg.norm(q.mean(axis=0))
    v = np.stack(t.column("vector").to_numpy(zero_copy_only=False))[row[top["id"]]]
    assert abs(top["score"] - float(v @ mean)) < 1e-3  # LanceDB's own cosine kernel: ~1e-4


def test_refusals(colbert_dir, chunked, tmp_path):
    r = run([*EMBED, "--late", "--model", str(colbert_dir)], input=chunked)
    assert r.exit_code == 2 and "is a multi-vector model" in r.stderr and "--naive" in r.stderr
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "q", "positive": "p"}) + "\n")
    out = str(tmp_path / "out")
    r = run(["tune", "--pairs", str(pairs), "-o", out, "--model", str(colbert_dir), "--device", "cpu"])
    assert r.exit_code == 2 and "multi-vector" in r.stderr and "--multivector" in r.stderr
    r = run(["tune", "--pairs", str(pairs), "-o", out, "--token-dim", "64", "--device", "cpu"])
    assert r.exit_code == 2 and "--token-dim is the --multivector head's dim" in r.stderr
    for extra in (["--matryoshka", "384,128"], ["--guide", "base"]):
        r = run(["tune", "--pairs", str(pairs), "-o", out, "--multivector", "--device", "cpu", *extra])
        assert r.exit_code == 2 and "--multivector trains a token head" in r.stderr, r.stderr
    r = run(["tune", "--pairs", str(pairs), "-o", out, "--multivector", "--model", str(colbert_dir),
             "--token-dim", "64", "--device", "cpu"])
    assert r.exit_code == 2 and f"already has a {DIM}-d token head" in r.stderr
    assert not Path(out).exists()


def test_tune_multivector_writes_a_model_embed_reads(chunked, tmp_path):
    """A BEIR split's 4 pairs, 1 step, before/after on the held-out half: MaxSim over the base model's
    own token vectors against the trained head's."""
    from test_tune import TINY, write_beir

    beir = write_beir(tmp_path / "beir")
    out = tmp_path / "colbert"
    r = run(["tune", "--data", str(beir), "--split", "train", "-o", str(out), "--multivector", "--token-dim",
             "16", *TINY, "--eval", str(beir), "--eval-split", "test", "--resamples", "100"])
    assert r.exit_code == 0, r.stderr
    assert "tune: 4 pairs, 1 steps" in r.stderr and "nDCG@10 " in r.stderr
    card = (out / "README.md").read_text()
    record = json.loads(card.split("```json\n")[-1].split("\n```")[0])
    assert record["training"]["loss"] == "MultiVectorMultipleNegativesRankingLoss"
    assert record["multivector"]["token_dim"] == 16 and "MultiVectorEncoder" in card
    assert record["evaluation"]["n_queries"] == 4 and "## Before / after" in card
    config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert config["model_type"] == "MultiVectorEncoder"
    db = tmp_path / "db"
    r = run([*EMBED, "--model", str(out), "--db", str(db)], input=chunked)
    assert r.exit_code == 0, r.stderr
    meta = json.loads(open_table(db).schema.metadata[b"arrowsmith.model"])
    assert multi.settings_of(meta).dim == 16
    r = run(["query", "--db", str(db), "why is the sky blue", "--mode", "maxsim", "-k", "1", "-f", "arrows"])
    assert r.exit_code == 0, r.stderr
    assert read_ipc(r.stdout_bytes).num_rows == 1
    from arrowsmith.plugins.registry import load_model

    model = load_model(str(out))
    assert model.numpy_plan is not None, model.numpy_refusal  # its queries are encoded without torch


# ------------------------------------------------------------------ queries in numpy (no torch)

WORDS = "one two three four five six seven eight nine ten eleven twelve thirteen".split()
# "query: " + 8 words = 12 tokens with [CLS]/[SEP]: exactly the expansion length, so no [MASK]
QUERIES = ["x", "what makes the tides", " ".join(WORDS[:8]),
           "why do volcanoes erupt (magma, gas & pressure)?"]


def _variant(colbert_dir: Path, out: Path, *, expansion: dict | None = None,
             activation: str | None = None) -> Path:
    """The fixture's model with another query expansion or head activation (the same weights)."""
    import shutil

    shutil.copytree(colbert_dir, out)
    cfg = json.loads((out / "sentence_bert_config.json").read_text())
    cfg["query_expansion"] = expansion
    (out / "sentence_bert_config.json").write_text(json.dumps(cfg))
    if activation:
        head = json.loads((out / "1_Dense" / "config.json").read_text())
        (out / "1_Dense" / "config.json").write_text(json.dumps({**head, "activation_function": activation}))
    return out


def _assert_same_tokens(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert [len(g) for g in got] == [len(w) for w in want]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32 and np.abs(g - w).max() <= 1e-4


def _no_torch(monkeypatch, model) -> None:
    def refuse():
        raise AssertionError("the torch path was taken")
    monkeypatch.setattr(model, "_load", refuse)


def test_numpy_query_token_vectors_are_encode_querys(colbert_dir, encoder, monkeypatch):
    from arrowsmith.plugins.registry import load_model

    model = load_model(str(colbert_dir), device="cpu", dtype="fp32")
    assert model.numpy_plan is not None, model.numpy_refusal
    _no_torch(monkeypatch, model)
    lengths = [len(encoder.tokenizer(PROMPTS["query"] + q)["input_ids"]) for q in QUERIES]
    assert min(lengths) < EXPANSION == lengths[2] < max(lengths)  # [MASK]-expanded, filled, past it
    want = encoder.encode_query(QUERIES, convert_to_numpy=True)
    assert [len(w) for w in want] == [max(n, EXPANSION) for n in lengths]
    _assert_same_tokens(model.encode_token_vectors(QUERIES, "query"), want)
    _assert_same_tokens([model.encode_token_vectors([q], "query")[0] for q in QUERIES], want)
    means = np.stack([w.mean(axis=0) for w in want])  # the dense query vector: their mean, unit
    dense = model.encode(QUERIES, "query")
    assert np.abs(dense - means / np.linalg.norm(means, axis=1, keepdims=True)).max() <= 1e-4


@pytest.mark.parametrize("expansion", [{"strategy": "fixed", "length": 16, "attend": False},
                                       {"strategy": "fixed", "length": 16, "attend": True}, None],
                         ids=["fixed", "fixed-attended", "none"])
def test_numpy_query_token_vectors_under_other_expansions(colbert_dir, tmp_path, monkeypatch, expansion):
    """Classic ColBERT pads every query to a fixed width of [MASK]s, attended to or not."""
    from sentence_transformers import MultiVectorEncoder

    from arrowsmith.plugins.base import TooLongError
    from arrowsmith.plugins.registry import load_model

    path = _variant(colbert_dir, tmp_path / "model", expansion=expansion)
    reference = MultiVectorEncoder(str(path), device="cpu", local_files_only=True)
    model = load_model(str(path), device="cpu", dtype="fp32")
    _no_torch(monkeypatch, model)
    full = " ".join(WORDS[:12])  # 16 tokens: the whole fixed width, no [MASK]
    queries = [*QUERIES[:3], full]
    want = reference.encode_query(queries, convert_to_numpy=True)
    if expansion:
        assert {len(w) for w in want} == {16}
    _assert_same_tokens(model.encode_token_vectors(queries, "query"), want)
    if expansion:  # one token more would be cut to the width: refused, as on the torch path
        with pytest.raises(TooLongError):
            model.encode_token_vectors([full + " thirteen"], "query")


def test_a_head_numpy_does_not_run_falls_back_to_torch(colbert_dir, tmp_path, caplog):
    import logging

    from sentence_transformers import MultiVectorEncoder

    from arrowsmith.plugins.registry import load_model

    path = _variant(colbert_dir, tmp_path / "model", activation="torch.nn.modules.activation.Sigmoid",
                    expansion={"strategy": "min", "length": EXPANSION})
    model = load_model(str(path), device="cpu", dtype="fp32")
    assert model.numpy_plan is None and "Dense" in model.numpy_refusal
    with caplog.at_level(logging.DEBUG, logger="arrowsmith.plugins"):
        got = model.encode_token_vectors(QUERIES[:2], "query")
    assert "from sentence-transformers (torch)" in caplog.text
    want = MultiVectorEncoder(str(path), device="cpu", local_files_only=True).encode_query(
        QUERIES[:2], convert_to_numpy=True)
    _assert_same_tokens(got, want)


def test_query_process_on_a_colbert_table_imports_no_torch(store):
    from conftest import modules_loaded_by

    args = ["query", "--db", str(store), "what makes the tides", "-k", "1", "-f", "jsonl"]
    loaded, proc = modules_loaded_by(args, ("torch", "sentence_transformers", "transformers"))
    assert proc.returncode == 0, proc.stderr
    assert loaded == []
    assert json.loads(proc.stdout.splitlines()[0])["doc_id"] == "tides.txt"


@pytest.mark.parametrize("mode", ["auto", "maxsim"])
def test_query_ranking_is_the_torch_paths(colbert_dir, store, mode):
    from arrowsmith.commands.query import search
    from arrowsmith.plugins.registry import load_model

    queries = ["what makes the tides", "how is bread made", "x"]
    numpy_model = load_model(str(colbert_dir), device="cpu", dtype="fp32")
    torch_model = load_model(str(colbert_dir), device="cpu", dtype="fp32")
    torch_model.numpy_plan = None  # as for a model the numpy path does not run
    by_numpy = search(store, queries, mode=mode, k=10, model=numpy_model).to_pylist()
    by_torch = search(store, queries, mode=mode, k=10, model=torch_model).to_pylist()
    assert torch_model._st is not None and numpy_model._st is None  # each took its own path
    assert [(h["query_id"], h["id"]) for h in by_numpy] == [(h["query_id"], h["id"]) for h in by_torch]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(by_numpy, by_torch, strict=True)) < 1e-4
