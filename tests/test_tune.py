"""`arrowsmith tune` with the real model on tiny data: plumbing, determinism, atomic output, resume,
overlap refusal, bad input, LoRA, Matryoshka, and the store refusing a tuned model.

A few training steps of 16-token texts are enough for plumbing; quality claims live in
benchmarks/tune.py (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
from pathlib import Path

import pytest
from conftest import run

# one epoch: the default is the recipe's 3; a test asking for more names --epochs after TINY (last wins)
TINY = ["--max-seq-tokens", "16", "--batch-size", "4", "--device", "cpu", "--epochs", "1"]

PAIRS = [
    ("how do harbour cranes move containers", "Harbour cranes lift containers from ships onto trucks."),
    ("what keeps bread soft", "Bread stays soft when stored in a closed box away from the sun."),
    ("why do bees dance", "Bees dance to tell the hive where the flowers are."),
    ("how is steel made", "Steel is made by removing carbon from molten iron in a furnace."),
    ("when do tides rise", "Tides rise twice a day as the moon pulls the oceans."),
    ("what do owls eat", "Owls hunt mice, voles and insects at night."),
    ("how do glaciers form", "Glaciers form where snow piles up for centuries and turns to ice."),
    ("why is copper used in wires", "Copper conducts electricity well and bends without breaking."),
]

TOPICS = [
    ("cranes", "Harbour cranes", "Harbour cranes lift heavy containers from ships. They run on rails."),
    ("bread", "Soft bread", "Bread stays soft in a closed box. Sunlight dries the crust quickly."),
    ("bees", "Bee dances", "Bees dance to show where flowers grow. The dance points at the sun."),
    ("steel", "Making steel", "Steel is iron with little carbon. Furnaces blow oxygen through molten iron."),
    ("tides", "Tides", "Tides rise twice a day. The moon pulls the oceans towards it."),
    ("owls", "Owls at night", "Owls hunt mice and voles at night. Their feathers make no sound."),
    ("glaciers", "Glaciers", "Glaciers form from snow pressed into ice. They flow slowly down valleys."),
    ("copper", "Copper wires", "Copper conducts electricity very well. Wires bend without breaking."),
    ("rain", "Rain", "Rain falls when droplets in clouds grow heavy. Cold air makes them grow faster."),
    ("salt", "Sea salt", "Sea salt is left when sea water dries in shallow ponds under the sun."),
]
QUERIES = [
    ("1", "how do cranes unload ships", ["cranes"]), ("2", "why does bread go stale", ["bread"]),
    ("3", "what does a bee dance mean", ["bees"]), ("4", "how is iron turned into steel", ["steel"]),
    ("5", "what causes the tides", ["tides"]), ("6", "what do owls hunt", ["owls"]),
    ("7", "how are glaciers made", ["glaciers"]), ("8", "why are wires copper", ["copper"]),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_pairs(path: Path, rows=PAIRS) -> Path:
    with open(path, "w") as f:
        for q, p in rows:
            f.write(json.dumps({"query": q, "positive": p}) + "\n")
    return path


def write_beir(root: Path) -> Path:
    """A tiny BEIR dataset: odd query ids judged in qrels/train.tsv, even ones in qrels/test.tsv."""
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for doc_id, title, text in TOPICS:
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for qid, text, _ in QUERIES:
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, parity in (("train", 1), ("test", 0)):
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, _, docs in QUERIES for d in docs
                                                  if int(q) % 2 == parity]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.jsonl")


@pytest.fixture(scope="module")
def tuned(pairs_file, tmp_path_factory) -> tuple[Path, object]:
    """One plain run on the pairs file: 8 pairs, batch 4, 2 epochs = 4 steps."""
    out = tmp_path_factory.mktemp("tuned") / "model"
    result = run(["tune", "--pairs", str(pairs_file), "-o", str(out), *TINY, "--epochs", "2"])
    assert result.exit_code == 0, result.stderr
    return out, result


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# ---------------------------------------------------------------- plumbing and the model card


def test_pairs_file_makes_a_model_directory_with_its_card(tuned, pairs_file):
    out, result = tuned
    assert result.stdout_bytes == b""  # no --eval: nothing for stdout
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("tune: 8 pairs, 4 steps in ") and str(out) in summary
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "modules.json", "tokenizer.json", "README.md"} <= names
    assert leftovers(out.parent) == [] and not (out.parent / "model.checkpoints").exists()
    # a model directory others can read, as mkdir would make it (mkdtemp's 0700 would not be)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask
    card = (out / "README.md").read_text()
    from arrowsmith.plugins.registry import load_model

    base = load_model(None, device="cpu")
    for expected in (base.revision, sha256(pairs_file), "| pairs | 8 |", "MultipleNegativesRankingLoss",
                     "| epochs | 2 |", "| batch size | 4 |", "| learning rate | 5e-05", "| seed | 0 |",
                     "| max sequence tokens (training) | 16 |", "Not evaluated"):
        assert expected in card, expected
    model = load_model(str(out), device="cpu")
    # an ordinary model whose revision is its weights' sha256; it keeps the base model's window
    assert model.revision == sha256(out / "model.safetensors") != base.revision
    assert model.max_tokens == base.max_tokens == 256 and model.dim == 384
    assert model.matryoshka_dims == ()
    text = ["how do harbour cranes move containers"]
    vectors = model.encode(text)
    assert vectors.shape == (1, 384) and not (vectors == base.encode(text)).all()


def test_same_seed_same_weights(tuned, pairs_file, tmp_path):
    out, _ = tuned
    again = tmp_path / "again"
    result = run(["tune", "--pairs", str(pairs_file), "-o", str(again), *TINY, "--epochs", "2"])
    assert result.exit_code == 0, result.stderr
    assert sha256(again / "model.safetensors") == sha256(out / "model.safetensors")


def test_existing_output_is_refused_before_training(tuned, pairs_file):
    out, _ = tuned
    before = sha256(out / "model.safetensors")
    result = run(["tune", "--pairs", str(pairs_file), "-o", str(out), *TINY])
    assert result.exit_code == 2 and "exists and is not empty" in result.stderr
    assert "--overwrite" in result.stderr
    assert "training on" not in result.stderr and sha256(out / "model.safetensors") == before


# ---------------------------------------------------------------- Ctrl-C and resume


def test_interrupt_leaves_no_half_model_and_the_same_command_resumes(tuned, pairs_file, tmp_path,
                                                                     cli_process):
    out = tmp_path / "model"
    args = ["tune", "--pairs", str(pairs_file), "-o", str(out), "--checkpoint-steps", "1",
            *TINY, "--epochs", "2"]
    proc = cli_process(args, env={"ARROWSMITH_FAULT": "tune_step:2:pause"})
    proc.wait_for_stderr("paused at tune_step (hit 2)")
    proc.signal(signal.SIGINT)
    code, err = proc.finish()
    assert code == 130, err
    assert not out.exists() and leftovers(tmp_path) == []  # no half model, no temporary directory
    checkpoints = tmp_path / "model.checkpoints"
    assert (checkpoints / "checkpoint-1" / "trainer_state.json").exists()

    result = run(args)
    assert result.exit_code == 0, result.stderr
    assert "resuming from" in result.stderr and "checkpoint-1" in result.stderr
    # resumed or not, the same seed gives the same weights
    assert sha256(out / "model.safetensors") == sha256(tuned[0] / "model.safetensors")
    assert not checkpoints.exists() and leftovers(tmp_path) == []


def test_checkpoints_of_another_run_are_refused(pairs_file, tmp_path):
    (tmp_path / "model.checkpoints").mkdir()
    (tmp_path / "model.checkpoints" / "fingerprint.json").write_text('{"other": 1}')
    out = tmp_path / "model"
    result = run(["tune", "--pairs", str(pairs_file), "-o", str(out), "--checkpoint-steps", "1", *TINY])
    assert result.exit_code == 2 and "checkpoints of another run" in result.stderr
    assert "--no-resume" in result.stderr


# ---------------------------------------------------------------- evaluation, overlap, Matryoshka, negatives


def test_eval_overlap_is_refused_by_id_and_by_text(tmp_path):
    data = write_beir(tmp_path / "tiny")
    out = tmp_path / "model"
    by_id = run(["tune", "--data", str(data), "--split", "train", "--eval", str(data),
                 "--eval-split", "train", "-o", str(out), *TINY])
    assert by_id.exit_code == 2, by_id.stderr
    assert "4 of the 4 evaluation queries" in by_id.stderr and "4 by id" in by_id.stderr
    assert "--allow-overlap" in by_id.stderr and "Traceback" not in by_id.stderr
    # a logged pair whose query is an evaluation query, up to case and spacing
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS[:6] + [("Why does  BREAD go stale", "Bread dries.")])
    by_text = run(["tune", "--pairs", str(pairs), "--eval", str(data), "-o", str(out), *TINY])
    assert by_text.exit_code == 2 and "1 by text" in by_text.stderr and "'2'" in by_text.stderr
    assert not out.exists()


def test_eval_reports_base_and_tuned_per_matryoshka_dim_with_mined_negatives(tmp_path):
    data = write_beir(tmp_path / "tiny")
    out = tmp_path / "model"
    result = run(["tune", "--data", str(data), "--split", "train", "--hard-negatives", "1",
                  "--matryoshka", "64", "--eval", str(data), "--eval-split", "test", "--resamples", "200",
                  "-o", str(out), *TINY])
    assert result.exit_code == 0, result.stderr
    table = result.stdout_bytes.decode()
    assert "tiny (split test, 4 queries, 10 documents)" in table
    assert "| nDCG@10 |" in table and "95% CI" in table
    assert "| 384 |" in table and "| 64 |" in table  # quality per dim: full, then truncated
    assert "mining 1 hard negatives per pair among 10 passages" in result.stderr
    assert "nDCG@10" in result.stderr.splitlines()[-1]
    card = (out / "README.md").read_text()
    assert table.strip() in card and '"negatives_per_pair": 1' in card
    assert "MatryoshkaLoss(dims 384, 64)" in card
    from arrowsmith.plugins.registry import load_model

    assert load_model(str(out), device="cpu").matryoshka_dims == (384, 64)  # embed --dim 64 knows it


# an unjudged near-copy of the cranes passage (a false negative: unfiltered mining took it), and a
# second judged positive for the bee query
FALSE_NEGATIVE = ("cranes2", "Harbour cranes",
                  "Harbour cranes lift heavy containers off ships. They run on rails.")
BEES_TOO = ("bees2", "Bee dances", "A bee dances to show the hive where the flowers grow.")


def write_beir_with_false_negative(root: Path) -> Path:
    write_beir(root)
    with open(root / "corpus.jsonl", "a") as f:
        for doc_id, title, text in (FALSE_NEGATIVE, BEES_TOO):
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(root / "qrels" / "train.tsv", "a") as f:
        f.write("3\tbees2\t1\n")
    return root


def mine(tmp_path, n, name="tiny"):
    from arrowsmith.commands.tune import mine_hard_negatives, pairs_from_beir
    from arrowsmith.plugins.registry import load_model

    model = load_model(None, device="cpu")
    pair_set = pairs_from_beir(write_beir_with_false_negative(tmp_path / name), "train")
    before = len(pair_set.pairs)
    mine_hard_negatives(pair_set, model, n)
    return pair_set, model, before


def cosine(model, query, passages):
    import numpy as np

    q = model.encode([query], "query")[0]
    p = model.encode(passages, "document")
    return (p @ q) / (np.linalg.norm(p, axis=1) * np.linalg.norm(q))


def test_mined_negatives_score_below_095_of_their_pairs_positive_and_are_never_a_positive(tmp_path):
    pair_set, model, before = mine(tmp_path, 2)
    texts = {d: f"{title} {text}" for d, title, text in (*TOPICS, FALSE_NEGATIVE, BEES_TOO)}
    judged = {}
    for p in pair_set.pairs:
        judged.setdefault(p.query, set()).add(p.positive)
    assert len(pair_set.pairs) == before == 5 and not pair_set.notes  # none short on this data
    assert len(judged["what does a bee dance mean"]) == 2
    for p in pair_set.pairs:
        assert len(p.negatives) == 2 and len(set(p.negatives)) == 2 and texts[p.positive_id] == p.positive
        assert not judged[p.query] & set(p.negatives)  # neither this pair's positive nor the query's other
        assert all(n in texts.values() for n in p.negatives)
        pos, *negs = cosine(model, p.query, [p.positive, *p.negatives])
        assert all(s < 0.95 * pos + 1e-5 for s in negs), (p.query, pos, negs)
    cranes = next(p for p in pair_set.pairs if p.positive_id == "cranes")
    false_negative = texts["cranes2"]
    pos, fn = cosine(model, cranes.query, [cranes.positive, false_negative])
    assert fn >= 0.95 * pos  # what the filter is for
    assert false_negative not in cranes.negatives  # the top unjudged passage, filtered out


def test_mining_is_deterministic(tmp_path):
    a, _, _ = mine(tmp_path, 2, "a")
    b, _, _ = mine(tmp_path, 2, "b")
    assert [(p.query, p.positive, p.negatives) for p in a.pairs] == [(p.query, p.positive, p.negatives)
                                                                     for p in b.pairs]


@pytest.mark.parametrize("depth", [2, 3])
def test_pairs_short_of_n_within_the_depth_are_counted_filled_or_left_out(tmp_path, monkeypatch, depth):
    from arrowsmith.commands.tune import negatives

    monkeypatch.setattr(negatives, "MAX_DEPTH", depth)  # the bound on the search, made tiny
    pair_set, model, before = mine(tmp_path, 2)
    short = [p for p in pair_set.pairs if len(set(p.negatives)) < 2]
    left_out = before - len(pair_set.pairs)
    assert short or left_out  # the cranes pair loses a slot to its false negative at least
    # in the top 2 the cranes pair has only its false negative (and the bee pairs their two positives)
    assert ("cranes" not in {p.positive_id for p in pair_set.pairs}) == (depth == 2)
    assert len(pair_set.notes) == 1 and pair_set.notes[0].startswith("--hard-negatives 2:")
    note = pair_set.notes[0]
    assert f"{len(short) + left_out} of {before} pairs had fewer than 2 passages" in note
    assert f"within the top {depth}" in note
    assert (f"{len(short)} repeat theirs to make 2" in note) == bool(short)
    assert (f"{left_out} with none are left out of training" in note) == bool(left_out)
    for p in pair_set.pairs:
        assert len(p.negatives) == 2  # training needs the same count per pair
        pos, *negs = cosine(model, p.query, [p.positive, *p.negatives])
        assert all(s < 0.95 * pos + 1e-5 for s in negs)


def test_min_grade_trains_on_the_higher_grades_and_never_mines_the_lower_ones(tmp_path):
    from arrowsmith.commands.tune import mine_hard_negatives, pairs_from_beir
    from arrowsmith.plugins.registry import load_model

    root = write_beir_with_false_negative(tmp_path / "graded")
    qrels = root / "qrels" / "train.tsv"
    # every judgment grade 2, except two of the bee query's at grade 1: the second bee passage, and the
    # tides passage (which the base model ranks first among the bee query's non-positives)
    graded = qrels.read_text().replace("\t1\n", "\t2\n").replace("bees2\t2", "bees2\t1")
    qrels.write_text(graded + "3\ttides\t1\n")
    pair_set = pairs_from_beir(root, "train", min_grade=2)
    assert sorted(p.positive_id for p in pair_set.pairs) == ["bees", "cranes", "glaciers", "tides"]
    assert pair_set.notes == ["--min-grade 2: 4 of 6 judged-relevant documents are positives "
                              "(the rest are never mined as negatives)"]
    model = load_model(None, device="cpu")
    grade_1 = {f"{title} {text}" for d, title, text in (*TOPICS, BEES_TOO) if d in ("bees2", "tides")}
    mine_hard_negatives(pair_set, model, 2)
    bee_pair = next(p for p in pair_set.pairs if p.positive_id == "bees")
    assert not grade_1 & set(bee_pair.negatives) and len(bee_pair.negatives) == 2
    # what the judged set is for: without it the grade-1 tides passage is mined for the bee query
    unjudged = pairs_from_beir(root, "train", min_grade=2)
    unjudged.judged = {}
    mine_hard_negatives(unjudged, model, 2)
    assert grade_1 & set(next(p for p in unjudged.pairs if p.positive_id == "bees").negatives)
    with pytest.raises(Exception, match="--min-grade 0"):
        pairs_from_beir(root, "train", min_grade=0)


def test_guide_masks_in_batch_false_negatives(tmp_path):
    """GISTEmbedLoss with the base model as guide: an in-batch passage the guide scores at or above 0.95 x
    the pair's positive is no negative, so a batch holding a near-copy of a positive loses less than MNRL;
    without such a passage the two losses are the same."""
    import torch
    from sentence_transformers import SentenceTransformer

    from arrowsmith.commands.tune.train import _loss
    from arrowsmith.plugins.registry import load_model

    path = str(load_model(None, device="cpu").path)
    model = SentenceTransformer(path, device="cpu", local_files_only=True)
    guide = SentenceTransformer(path, device="cpu", local_files_only=True)
    model.eval()
    guide.eval()

    def losses(queries, positives):
        features = [model.preprocess(queries), model.preprocess(positives)]
        with torch.no_grad():
            return [float(_loss(model, (), g)([dict(f) for f in features], None)) for g in (None, guide)]

    cranes = PAIRS[0][1]
    near_copy = cranes.replace("lift", "move")
    distinct = losses([q for q, _ in PAIRS[:3]], [p for _, p in PAIRS[:3]])
    assert distinct[0] == pytest.approx(distinct[1], abs=1e-6)
    mnrl, gist = losses([PAIRS[0][0], "how do harbour cranes unload ships", PAIRS[2][0]],
                        [cranes, near_copy, PAIRS[2][1]])
    assert gist < mnrl - 0.1


def test_guide_trains_with_gist_and_says_so_on_the_card(pairs_file, tmp_path):
    out = tmp_path / "guided"
    result = run(["tune", "--pairs", str(pairs_file), "-o", str(out), "--guide", "base", *TINY])
    assert result.exit_code == 0, result.stderr
    card = (out / "README.md").read_text()
    assert "GISTEmbedLoss, guide " in card and '"loss": "GISTEmbedLoss"' in card
    refused = run(["tune", "--pairs", str(pairs_file), "-o", str(tmp_path / "m"), "--guide", "base",
                   "--hard-negatives", "2", *TINY])
    assert refused.exit_code == 2 and "at most one negative per pair, not 2" in refused.stderr
    assert "training on" not in refused.stderr


# ---------------------------------------------------------------- unsupervised pairs


def test_unsupervised_pairs_are_deterministic_under_the_seed():
    from arrowsmith.commands.tune import Document, make_pairs
    from arrowsmith.plugins.registry import load_model

    counts = load_model(None, device="cpu").tokenizer.count_tokens
    docs = [Document(d, text, title) for d, title, text in TOPICS]
    docs.append(Document("beir", "wing flutter at high speed . tests of a wing in a wind tunnel show "
                         "flutter above a critical speed .", "wing flutter at high speed ."))
    docs.append(Document("md", "# Night birds\n\nOwls and nightjars hunt when the sun has set and the woods "
                         "are quiet.\n\n## Feathers\n\nSoft edges on the feathers of owls break up the sound "
                         "of the air."))

    def pairs(seed, order=docs):
        made, _ = make_pairs(order, token_counts=counts, max_tokens=64, seed=seed)
        return sorted((p.query, p.positive, p.positive_id) for p in made)

    first = pairs(0)
    assert first == pairs(0) == pairs(0, list(reversed(docs)))  # the input order does not matter
    assert first != pairs(1)  # another seed draws other sentences
    queries = {q: (pos, d) for q, pos, d in first}
    tides = ("Tides rise twice a day.", "The moon pulls the oceans towards it.")
    assert queries.get(tides[0]) == (tides[1], "tides") or queries.get(tides[1]) == (tides[0], "tides")
    assert queries["Feathers"][1] == "md" and queries["Night birds"][0].startswith("Owls and nightjars")
    assert queries["Harbour cranes"] == (TOPICS[0][2], "cranes")  # title → body
    # a title the text repeats as its first sentence (as BEIR corpora do) is not part of its positive
    assert queries["wing flutter at high speed ."] == (
        "tests of a wing in a wind tunnel show flutter above a critical speed .", "beir")


# ---------------------------------------------------------------- bad input and misuse


@pytest.mark.parametrize("name, content, expected", [
    ("missing.jsonl", '{"query": "a b", "answer": "c d"}\n', "missing.jsonl: no 'positive' column"),
    ("empty.jsonl", "", "empty.jsonl: empty input"),
    ("nullpos.jsonl", '{"query": "a", "positive": "b"}\n\n{"query": "c", "positive": "d"}\n'
                      '{"query": "e", "positive": null}\n', "nullpos.jsonl: line 4: 'positive' is null"),
    ("blank.csv", 'query,positive\n"a b","c d"\n"e f",""\n', "blank.csv: line 3: 'positive' is empty"),
])
def test_bad_pairs_are_exit_65_naming_file_and_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content)
    result = run(["tune", "--pairs", str(path), "-o", str(tmp_path / "m"), *TINY])
    assert result.exit_code == 65, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("line, expected", [
    ("3\tnowhere\t1", "qrels/train.tsv: line 6: document 'nowhere' (query '3') is not in"),
    ("99\tbees\t1", "qrels/train.tsv: line 6: query '99' is not in"),
])
def test_qrels_naming_an_unknown_id_is_exit_65_naming_the_line(tmp_path, line, expected):
    data = write_beir(tmp_path / "tiny")
    with open(data / "qrels" / "train.tsv", "a") as f:
        f.write(line + "\n")
    result = run(["tune", "--data", str(data), "-o", str(tmp_path / "m"), *TINY])
    assert result.exit_code == 65, result.stderr
    assert expected in result.stderr


@pytest.mark.parametrize("args, expected", [
    ([], "give one source of pairs"),
    (["--pairs", "p.jsonl", "--unsupervised"], "not --pairs and --unsupervised"),
    (["--pairs", "p.jsonl", "--corpus", "c.jsonl"], "--corpus: not used with --pairs"),
    (["--pairs", "p.jsonl", "--db", "store"], "--db: not used with --pairs"),
    (["--data", "d", "--query-col", "q"], "--query-col: not used with --data"),
    (["--pairs", "p.jsonl", "--min-grade", "2"], "--min-grade: not used with --pairs"),
    (["--data", "d", "--min-grade", "0"], "--min-grade 0: grades below 1 are not relevant"),
    (["--unsupervised"], "--unsupervised needs one of --corpus FILE or --db STORE"),
    (["--pairs", "p.jsonl", "--allow-overlap"], "need --eval DIR"),
])
def test_options_that_would_be_ignored_are_refused(tmp_path, args, expected):
    result = run(["tune", *args, "-o", str(tmp_path / "m")])
    assert result.exit_code == 2 and expected in result.stderr, result.stderr


def test_max_pairs_samples_under_the_seed(pairs_file, tmp_path):
    from arrowsmith.commands.tune.core import _sample
    from arrowsmith.commands.tune.sources import SourceOptions, load_pair_set

    def sample(seed):
        ps = load_pair_set(SourceOptions(pairs=str(pairs_file)), model=None, max_seq_tokens=16, seed=seed)
        _sample(ps, 3, seed)
        return [p.query for p in ps.pairs], ps.notes

    (first, notes), (again, _), (other, _) = sample(0), sample(0), sample(1)
    assert len(first) == 3 and first == again != other
    assert first == [q for q, _ in PAIRS if q in first]  # the sample keeps the input order
    assert notes == ["trained on a sample of 3 of the 8 pairs (--max-pairs, --seed 0)"]
    result = run(["tune", "--pairs", str(pairs_file), "--max-pairs", "0", "-o", str(tmp_path / "m"), *TINY])
    assert result.exit_code == 2 and "--max-pairs must be positive" in result.stderr


# ---------------------------------------------------------------- LoRA


def test_lora_trains_adapters_and_saves_an_ordinary_model(pairs_file, tmp_path):
    pytest.importorskip("peft")
    out = tmp_path / "lora"
    result = run(["tune", "--pairs", str(pairs_file), "--lora", "4", "--lr", "1e-3", "-o", str(out), *TINY])
    assert result.exit_code == 0, result.stderr
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names  # merged, no adapter files
    card = (out / "README.md").read_text()
    assert "| weights trained | LoRA rank 4 adapters, merged |" in card
    info = json.loads(card.split("```json\n", 1)[1].split("```", 1)[0])
    assert 0 < info["training"]["trainable_params"] < 2_000_000  # adapters only, of 22.7M weights
    from arrowsmith.plugins.registry import load_model

    base, model = load_model(None, device="cpu"), load_model(str(out), device="cpu")
    assert model.revision != base.revision
    assert not (model.encode(["bees dance"]) == base.encode(["bees dance"])).all()


def test_lora_without_a_working_peft_is_one_line_exit_2(pairs_file, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "peft" else real(name, *a))
    result = run(["tune", "--pairs", str(pairs_file), "--lora", "4", "-o", str(tmp_path / "m"), *TINY])
    assert result.exit_code == 2
    first = result.stderr.strip().splitlines()[0]
    assert first == "arrowsmith: error: --lora needs peft, which is not installed"
    assert "Traceback" not in result.stderr and not (tmp_path / "m").exists()


# ---------------------------------------------------------------- a tuned model is a new embedding space


def test_store_built_with_the_base_model_refuses_the_tuned_one(tuned, tmp_path):
    docs = tmp_path / "docs.jsonl"
    with open(docs, "w") as f:
        for doc_id, _, text in TOPICS[:3]:
            f.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    db = str(tmp_path / "store")
    assert run(["embed", str(docs), "--db", db, "--device", "cpu"]).exit_code == 0
    refused = run(["embed", str(docs), "--db", db, "--model", str(tuned[0]), "--device", "cpu"])
    assert refused.exit_code == 2 and "refusing to add" in refused.stderr and "--replace" in refused.stderr
    replaced = run(["embed", str(docs), "--db", db, "--model", str(tuned[0]), "--device", "cpu", "--replace"])
    assert replaced.exit_code == 0, replaced.stderr
    from arrowsmith.commands.store import model_of, open_table, table_meta

    stored = model_of(table_meta(open_table(db, "chunks")))
    assert stored["revision"] == sha256(tuned[0] / "model.safetensors")
    # corpus-only tuning from that store's chunks (now the tuned model's, so it tunes further from base)
    out = tmp_path / "unsup"
    result = run(["tune", "--unsupervised", "--db", db, "-o", str(out), *TINY])
    assert result.exit_code == 0, result.stderr
    assert f"store {db} table chunks" in (out / "README.md").read_text()


# ---------------------------------------------------------------- the default recipe


def test_defaults_are_the_sentence_transformers_recipe(tmp_path):
    """`tune` with no training flag trains exactly sentence-transformers' MNRL recipe, written out
    as a user would (lr 5e-5, 10% warm-up, NO_DUPLICATES batches, 3 epochs): the same weights, byte
    for byte. Issue 20: the old defaults (lr 2e-5, 1 epoch) left a plain script's gain on the table."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from arrowsmith.plugins.registry import load_model

    out = tmp_path / "tuned"
    # 4 pairs of 16-token texts keep the two trainings quick (one batch an epoch); no training flag
    # is given: epochs, lr and warm-up are tune's defaults
    pairs_file = write_pairs(tmp_path / "pairs.jsonl", PAIRS[:4])
    result = run(["tune", "--pairs", str(pairs_file), "-o", str(out), "--batch-size", "4", "--device", "cpu",
                  "--max-seq-tokens", "16"])
    assert result.exit_code == 0, result.stderr
    card = (out / "README.md").read_text()
    for expected in ("| epochs | 3 |", "| learning rate | 5e-05 (linear warm-up over 10% of the steps"):
        assert expected in card, expected

    model = SentenceTransformer(str(load_model(None, device="cpu").path), device="cpu")
    model.max_seq_length = 16
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "plain-trainer"), num_train_epochs=3, per_device_train_batch_size=4,
        learning_rate=5e-5, warmup_steps=0.1, batch_sampler=BatchSamplers.NO_DUPLICATES, seed=0,
        save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True)
    pairs = Dataset.from_dict({"anchor": [q for q, _ in PAIRS[:4]], "positive": [p for _, p in PAIRS[:4]]})
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs,
                                         loss=MultipleNegativesRankingLoss(model))
    trainer.train()
    assert trainer.state.global_step == 3  # 4 pairs, batch 4, 3 epochs
    assert "3 steps" in result.stderr.strip().splitlines()[-1]
    model.save_pretrained(str(tmp_path / "plain"))
    assert sha256(tmp_path / "plain" / "model.safetensors") == sha256(out / "model.safetensors")
