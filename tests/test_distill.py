"""`arrowsmith distill` with the real MiniLM and real LanceDB: the static model it writes is an
ordinary `--model DIR` in embed, eval, query (through the store), compress and tune.

The distillation keeps a small part of MiniLM's vocabulary (``--drop-tokens``: words of 1-3
characters and 1-2-character word pieces, ~2,400 tokens, enough to spell any lowercase word) so
it takes seconds instead of a minute; the code path is the full one. Quality and speed are measured
in benchmarks/distill.py (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, cranfield_subset, read_ipc, run

# every base entry except the specials, short words and short pieces is left out
SMALL = r"^(?!\[(CLS|SEP|PAD|UNK|MASK)\]$)(?![a-z0-9]{1,3}$)(?!##[a-z0-9]{1,2}$).*"
FAST = ["--dim", "32", "--drop-tokens", SMALL]
TEXTS = ["how do harbour cranes move containers", "the boundary layer of a hypersonic wing", ""]


@pytest.fixture(scope="module")
def static(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("distill") / "static"
    result = run(["distill", "-o", str(out), *FAST])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("distill: all-MiniLM-L6-v2 → ")
    return out


@pytest.fixture(scope="module")
def chunked() -> bytes:
    result = run(["chunk", str(SAMPLES), "--max-tokens", "64"])
    assert result.exit_code == 0, result.stderr
    return result.stdout_bytes


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_distill_writes_a_static_model_with_its_card(static):
    from arrowsmith.plugins.base import NO_WINDOW
    from arrowsmith.plugins.registry import load_model

    assert {"model.safetensors", "modules.json", "tokenizer.json", "README.md"} <= {p.name for p in
                                                                                      static.iterdir()}
    assert not [p for p in static.parent.iterdir() if ".tmp-" in p.name]
    base = load_model(None, device="cpu")
    model = load_model(str(static), device="cpu")
    assert (model.contextual, model.max_tokens, model.dim) == (False, NO_WINDOW, 32)
    assert model.num_special_tokens == 0
    assert not model.supports_token_embeddings and model.normalize and model.pooling == "mean"
    assert model.revision == sha256(static / "model.safetensors")
    card = (static / "README.md").read_text()
    record = json.loads(card.rsplit("```json\n", 1)[1].split("\n```")[0])["distill"]
    assert record["base_model"]["revision"] == base.revision and record["dim"] == 32
    assert 2000 < record["vocabulary"]["size"] < 3000 and record["seconds"] > 0
    for row in (f"| base model | all-MiniLM-L6-v2 (revision {base.revision}) |", "| dim | 32 ",
                f"| vocabulary | {record['vocabulary']['size']:,} tokens (base) |", "| time taken | "):
        assert row in card, row


def test_static_vectors_are_sentence_transformers_and_deterministic(static):
    """The numpy path is SentenceTransformer.encode (EmbeddingBag mean, Normalize), without torch."""
    from sentence_transformers import SentenceTransformer

    from arrowsmith.plugins.registry import load_model

    model = load_model(str(static), device="cpu")
    long_text = " ".join(["supersonic flow past a slender cone"] * 200)  # past any 512-token window
    ours = model.encode([*TEXTS, long_text])
    st = SentenceTransformer(str(static), device="cpu").encode([*TEXTS, long_text])
    assert np.abs(ours - st).max() < 1e-5
    assert not ours[2].any()  # an empty text: a zero vector, as nn.EmbeddingBag gives
    assert model.tokens_seen == sum(len(model.tokenizer.token_offsets(t)) for t in [*TEXTS, long_text])


def test_embed_query_and_compress_through_a_store(static, chunked, tmp_path):
    db = str(tmp_path / "store")
    first = run(["embed", "--model", str(static), "-o", "-"], input=chunked)
    again = run(["embed", "--model", str(static), "-o", "-"], input=chunked)
    assert first.exit_code == again.exit_code == 0, first.stderr
    a, b = read_ipc(first.stdout_bytes), read_ipc(again.stdout_bytes)
    assert a.column("vector").to_pylist() == b.column("vector").to_pylist()  # same vectors twice
    stored = run(["embed", "--model", str(static), "--db", db], input=chunked)
    assert stored.exit_code == 0, stored.stderr
    # query reads the model from the table
    hits = run(["query", "--db", db, "why is the sky blue", "--k", "3", "-f", "jsonl"])
    assert hits.exit_code == 0, hits.stderr
    rows = [json.loads(line) for line in hits.stdout_bytes.splitlines()]
    assert len(rows) == 3 and rows[0]["doc_id"] == "sky.md"
    squeezed = run(["compress", "--db", db, "--method", "binary"])
    assert squeezed.exit_code == 0, squeezed.stderr


def test_late_chunking_a_static_model_is_refused(static, chunked):
    result = run(["embed", "--late", "--model", str(static), "-o", "-"], input=chunked)
    assert result.exit_code == 2
    assert "static model" in result.stderr and "do not depend on their context" in result.stderr
    assert result.stdout_bytes == b""


def test_eval_with_a_static_model(static, cranfield, tmp_path):
    (tmp_path / "cran").mkdir()
    data = cranfield_subset(cranfield, tmp_path / "cran", 60)
    result = run(["eval", str(data), "--model", str(static), "--resamples", "200", "--json"])
    assert result.exit_code == 0, result.stderr
    config = json.loads(result.stdout_bytes)["configs"][0]
    assert config["metrics"]["ndcg@10"] > 0.1 and config["counts"]["chunks"] >= 60


def test_tune_trains_a_static_model_and_keeps_its_origin(static, tmp_path):
    from arrowsmith.plugins.base import NO_WINDOW
    from arrowsmith.plugins.registry import load_model

    pairs = tmp_path / "pairs.jsonl"
    rows = [("how do harbour cranes move containers", "Harbour cranes lift containers from ships."),
            ("what keeps bread soft", "Bread stays soft when stored in a closed box."),
            ("why do bees dance", "Bees dance to tell the hive where the flowers are."),
            ("how is steel made", "Steel is made by removing carbon from molten iron.")]
    pairs.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n" for q, p in rows))
    out = tmp_path / "tuned"
    result = run(["tune", "--pairs", str(pairs), "--model", str(static), "-o", str(out), "--batch-size", "4",
                  "--epochs", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    before, after = load_model(str(static)), load_model(str(out))
    assert (after.contextual, after.max_tokens, after.dim) == (False, NO_WINDOW, 32)
    assert after.revision != before.revision
    cos = (before.encode(TEXTS[:2]) * after.encode(TEXTS[:2])).sum(1)
    assert (cos < 0.9999).all()
    card = (out / "README.md").read_text()
    assert "| distilled from | all-MiniLM-L6-v2 (revision " in card
    record = json.loads(card.rsplit("```json\n", 1)[1].split("\n```")[0])
    assert record["distill"] == json.loads((static / "README.md").read_text()
                                           .rsplit("```json\n", 1)[1].split("\n```")[0])["distill"]


@pytest.mark.parametrize("option", [["--max-seq-tokens", "64"], ["--lora", "4"]])
def test_tune_refuses_what_a_static_model_lacks(static, tmp_path, option):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "why do bees dance", "positive": "Bees dance."}) + "\n")
    out = tmp_path / "out"
    result = run(["tune", "--pairs", str(pairs), "--model", str(static), "-o", str(out), *option])
    assert result.exit_code == 2 and "static model" in result.stderr, result.stderr
    assert not out.exists()


def test_corpus_words_become_tokens(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    texts = ["a nozzle for the wing", "the wing of a hypersonic nozzle", "an airfoil"]
    corpus.write_text("".join(json.dumps({"_id": str(i), "title": "Hypersonic wings", "text": t}) + "\n"
                              for i, t in enumerate(texts)))
    out = tmp_path / "static"
    # --drop-tokens applies to added words too (model2vec): keep the three this corpus could add
    keep = SMALL.replace("(?![a-z0-9]{1,3}$)", "(?![a-z0-9]{1,3}$)(?!(hypersonic|nozzle|airfoil)$)")
    result = run(["distill", "-o", str(out), "--corpus", str(corpus), "--dim", "32", "--drop-tokens", keep])
    assert result.exit_code == 0, result.stderr
    from arrowsmith.plugins.registry import load_model

    model = load_model(str(out))
    # words seen at least twice (titles included) that MiniLM's vocabulary lacks ("wing" it has,
    # "airfoil" is seen once) are one token each
    one_token = [w for w in ("hypersonic", "nozzle", "airfoil", "wings")
                 if len(model.tokenizer.token_offsets(w)) == 1]
    assert one_token == ["hypersonic", "nozzle"] and "(2 words added)" in result.stderr
    record = json.loads((out / "README.md").read_text().rsplit("```json\n", 1)[1].split("\n```")[0])
    assert record["distill"]["vocabulary"]["source"] == f"corpus {corpus}"
    assert record["distill"]["vocabulary"]["sha256"] == sha256(corpus)


@pytest.mark.parametrize("args, message", [
    (["--vocab", "v.txt", "--corpus", "c.txt"], "give one vocabulary source"),
    (["--min-count", "3"], "apply to --corpus only"),
    (["--dim", "999"], "--dim 999: between 1 and the base model's 384"),
    (["--drop-tokens", "("], "--drop-tokens"),
])
def test_bad_options_are_usage_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v.txt").write_text("word\n")
    (tmp_path / "c.txt").write_text("word word\n")
    result = run(["distill", "-o", "out", *args])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_model2vec_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "model2vec" else find_spec(name, *a))
    result = run(["distill", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "model2vec" in result.stderr and "pip install 'arrowsmith[distill]'" in result.stderr
