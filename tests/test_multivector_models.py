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
from conftest import SAMPLES, read_ipc, run

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
def chunked() -> bytes:
    r = run(["chunk", str(SAMPLES), "--max-tokens", "64"])
    assert r.exit_code == 0, r.stderr
    return r.stdout_bytes


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
