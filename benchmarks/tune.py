"""Benchmark `arrowsmith tune` on Cranfield: quality before/after, time and peak memory per configuration.

Cranfield's judged queries are split by id parity (odd ids train, even ids evaluate; ``--swap``: even
train, odd evaluate: done here, in a temporary directory of symlinks and two qrels files, never by
editing shared/). ``--collection limit`` splits the LIMIT-style set (commands/synthetic.py) alike.
Each configuration trains in its own process (``os.wait4`` gives its wall time and peak RSS), then
base and tuned model are scored on the held-out half with tune's before/after code (eval's metrics,
paired bootstrap CI; the base model's store is built once and shared); every configuration after
the first is also compared with the first's tuned model, paired by query ("Δ vs first").

``plain`` is not tune: it is the 40-line sentence-transformers script a user would write (issue 20:
MultipleNegativesRankingLoss, batch 32, lr 5e-05, 10% warm-up, the NO_DUPLICATES sampler, 3 epochs),
reading the same BEIR split itself, the bar tune's defaults must reach. ``defaults`` is tune with no
training flag at all; ``--epochs``/``--batch-size``/``--lr`` here apply to the other tune configurations.

    python benchmarks/tune.py --configs plain,defaults,lr-2e-5 --markdown   # the defaults' bar
    python benchmarks/tune.py --configs supervised,unsupervised,matryoshka --epochs 1
    python benchmarks/tune.py --configs supervised --max-seq-tokens 128 --markdown

Quality numbers do not depend on machine load; time and memory do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRANFIELD = ROOT.parent / "shared" / "data" / "cranfield"
CONFIGS = {
    "plain": [],  # not tune: plain_script() below
    "defaults": ["--data", "{split}", "--split", "train"],  # tune's own training defaults (no common flags)
    "lr-2e-5": ["--data", "{split}", "--split", "train", "--epochs", "3", "--lr", "2e-5"],  # issue 20's run
    "old-defaults": ["--data", "{split}", "--split", "train", "--epochs", "1", "--lr", "2e-5"],  # before it
    "supervised": ["--data", "{split}", "--split", "train"],
    "unsupervised": ["--unsupervised", "--corpus", "{split}/corpus.jsonl", "--max-pairs", "{max_pairs}"],
    "matryoshka": ["--data", "{split}", "--split", "train", "--matryoshka", "384,256,128,64"],
    "hard-negatives": ["--data", "{split}", "--split", "train", "--hard-negatives", "1"],
    "lora": ["--data", "{split}", "--split", "train", "--lora", "16", "--lr", "1e-4"],
    "guided": ["--data", "{split}", "--split", "train", "--guide", "base"],
    "grade-2": ["--data", "{split}", "--split", "train", "--min-grade", "2"],
    "hard-negatives-guided": ["--data", "{split}", "--split", "train", "--hard-negatives", "1",
                              "--guide", "base"],
    "hard-negatives-grade-2": ["--data", "{split}", "--split", "train", "--hard-negatives", "1",
                               "--min-grade", "2"],
}


# configurations with a recipe of their own, which the common training flags do not reach
UNTOUCHED = ("plain", "defaults", "lr-2e-5", "old-defaults")

MAX_PAIRS = 1000  # unsupervised: Cranfield's corpus makes ~3,000 pairs; a sample as large as the rest


def _id_number(query_id: str) -> int:
    return int(re.sub(r"\D", "", query_id))  # Cranfield's "1", the LIMIT-style set's "q0001"


def parity_split(src: Path, dest: Path, swap: bool = False) -> tuple[int, int]:
    """dest/: corpus and queries linked from src, qrels/train.tsv (odd ids) and qrels/test.tsv (even);
    ``swap``: even ids train, odd evaluate."""
    (dest / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (dest / name).symlink_to(src.resolve() / name)
    lines = (src / "qrels" / "test.tsv").read_text().splitlines()
    header, rows = lines[0], [line for line in lines[1:] if line.strip()]
    counts = []
    for split, parity in (("train", 0 if swap else 1), ("test", 1 if swap else 0)):
        kept = [r for r in rows if _id_number(r.split("\t")[0]) % 2 == parity]
        (dest / "qrels" / f"{split}.tsv").write_text("\n".join([header, *kept]) + "\n")
        counts.append(len({r.split("\t")[0] for r in kept}))
    return counts[0], counts[1]


def plain_script(data: Path, split: str, out: Path, seed: int = 0, max_seq_tokens: int | None = None) -> None:
    """The recipe tune's defaults are held to, as a user writes it with sentence-transformers alone:
    one (query, judged-relevant document) pair per qrels line, the document as eval embeds it."""
    import csv

    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from arrowsmith.plugins.registry import load_model

    docs = {}
    with open(data / "corpus.jsonl") as f:
        for d in map(json.loads, f):
            docs[d["_id"]] = (d.get("title", "") + " " + d["text"]).strip()
    with open(data / "queries.jsonl") as f:
        queries = {q["_id"]: q["text"] for q in map(json.loads, f)}
    with open(data / "qrels" / f"{split}.tsv") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if int(r["score"]) >= 1]
    pairs = Dataset.from_dict({"anchor": [queries[r["query-id"]] for r in rows],
                               "positive": [docs[r["corpus-id"]] for r in rows]})
    model = SentenceTransformer(str(load_model(None, device="cpu").path), device="cpu")  # all-MiniLM-L6-v2
    window = model.max_seq_length
    if max_seq_tokens:
        model.max_seq_length = max_seq_tokens
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / ".trainer"), num_train_epochs=3, per_device_train_batch_size=32,
        learning_rate=5e-5, warmup_steps=0.1, batch_sampler=BatchSamplers.NO_DUPLICATES, seed=seed,
        save_strategy="no", report_to="none", use_cpu=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs,
                                         loss=MultipleNegativesRankingLoss(model))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.max_seq_length = window
    model.save_pretrained(str(out))
    steps = trainer.state.global_step
    card = {"data": {"pairs": len(pairs)}, "training": {"seconds": seconds, "steps": steps}}
    (out / "README.md").write_text("plain script\n```json\n" + json.dumps(card) + "\n```\n")


def train(name: str, split: Path, out: Path, common: list[str], training: list[str],
          max_pairs: int = MAX_PAIRS) -> dict:
    """``common`` (seed, window, device) reaches every configuration, ``training`` (epochs, batch size,
    lr) only those that do not fix their own recipe."""
    args = [a.format(split=split, max_pairs=max_pairs) for a in CONFIGS[name]]
    if name == "plain":
        cmd = [sys.executable, __file__, "--plain", str(split), str(out), *common]
        shown = "python benchmarks/tune.py " + " ".join(cmd[2:])
    else:
        extra = [] if name in UNTOUCHED else training
        cmd = [sys.executable, "-m", "arrowsmith.cli", "tune", *args, "-o", str(out), *common, *extra]
        shown = "arrowsmith " + " ".join(cmd[3:])
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{name}: exit {code}\n{err}")
    card = (out / "README.md").read_text()
    weights = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()[:12]  # same: same model
    info = json.loads(card.split("```json\n", 1)[1].split("```", 1)[0])
    return {"name": name, "command": shown, "wall_s": round(seconds, 1),
            "train_s": info["training"]["seconds"], "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "pairs": info["data"]["pairs"], "steps": info["training"]["steps"], "weights": weights,
            "summary": (err.strip().splitlines() or [""])[-1]}


def evaluate(result: dict, split: Path, out: Path, work: Path, dims: tuple[int, ...], resamples: int) -> None:
    from arrowsmith.commands.tune import before_after, render
    from arrowsmith.plugins.registry import load_model

    base = load_model(None, device="cpu", dtype="fp32")
    tuned = load_model(str(out), device="cpu", dtype="fp32")
    ba = before_after(split, "test", base, tuned, work, dims=dims, n_resamples=resamples)
    c = ba.comparison
    scores = ba.report.results[1].scores  # base, then tuned
    result.update(base=c.baseline_mean, tuned=c.candidate_mean, diff=c.diff, ci=[c.ci_low, c.ci_high],
                  p=c.p_value, table=render(ba), query_ids=scores.query_ids,
                  per_query=scores.values[ba.report.primary].tolist(),
                  dims=[{"dim": d.dim, "base": d.base, "tuned": d.tuned, "diff": d.comparison.diff,
                         "ci": [d.comparison.ci_low, d.comparison.ci_high]} for d in ba.dims])


def versus_first(results: list[dict], resamples: int) -> None:
    """Each configuration's tuned model against the first's (the bar, ``plain``), paired by query with
    eval's bootstrap: how far apart two recipes are, not each one's distance from the base."""
    from arrowsmith.commands.evaluate.stats import paired_test

    bar = results[0]
    for r in results[1:]:
        if r["query_ids"] != bar["query_ids"]:
            raise SystemExit(f"{r['name']} and {bar['name']} were scored on different queries")
        c = paired_test(bar["per_query"], r["per_query"], n_resamples=resamples)
        r["versus_first"] = {"name": bar["name"], "diff": c.diff, "ci": [c.ci_low, c.ci_high], "p": c.p_value}


def markdown(results: list[dict], n_train: int, n_test: int, common: list[str], name: str = "Cranfield",
             swap: bool = False) -> str:
    train, test = ("even", "odd") if swap else ("odd", "even")
    lines = [f"{name}, judged queries split by id parity: {n_train} {train}-id queries train, {n_test} "
             f"{test}-id queries evaluate; options {' '.join(common)}.", "",
             "| configuration | pairs | steps | train s | wall s | peak RSS MB | nDCG@10 base | tuned | Δ "
             "| 95% CI | Δ vs first | 95% CI | weights sha256 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|"]
    for r in results:
        v = r.get("versus_first")
        versus = f"{v['diff']:+.4f} | [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]" if v else "– | –"
        lines.append(f"| {r['name']} | {r['pairs']:,} | {r['steps']} | {r['train_s']:.0f} | "
                     f"{r['wall_s']:.0f} | "
                     f"{r['peak_rss_mb']:,} | {r['base']:.4f} | {r['tuned']:.4f} | {r['diff']:+.4f} | "
                     f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}] | {versus} | `{r['weights']}` |")
    for r in results:
        if r["dims"]:
            lines += ["", f"{r['name']}: nDCG@10 per dim (tuned vs base truncated alike)", "",
                      "| dim | base | tuned | Δ | 95% CI |", "|---:|---:|---:|---:|---|"]
            lines += [f"| {d['dim']} | {d['base']:.4f} | {d['tuned']:.4f} | {d['diff']:+.4f} | "
                      f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] |" for d in r["dims"]]
    lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in results]
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["--plain"]:  # the plain script's own process (train() starts it)
        pp = argparse.ArgumentParser()
        pp.add_argument("--plain", nargs=2, type=Path)
        pp.add_argument("--seed", type=int, default=0)
        pp.add_argument("--max-seq-tokens", type=int, default=None)
        pp.add_argument("--device", default="cpu")
        p = pp.parse_args()
        plain_script(p.plain[0], "train", p.plain[1], p.seed, p.max_seq_tokens)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(CRANFIELD), help="a BEIR directory with qrels/test.tsv")
    ap.add_argument("--collection", choices=("cranfield", "limit"), default="cranfield",
                    help="limit: the LIMIT-style set of commands/synthetic.py (25 people, 2,000 distractors)")
    ap.add_argument("--swap", action="store_true", help="train on the even query ids, evaluate on the odd")
    ap.add_argument("--configs", default="plain,defaults,lr-2e-5",
                    help=f"comma-separated, of: {', '.join(CONFIGS)}")
    ap.add_argument("--epochs", default=None, help="tune's default if not given")
    ap.add_argument("--batch-size", default=None, help="tune's default if not given")
    ap.add_argument("--lr", default=None, help="learning rate (tune's default if not given)")
    ap.add_argument("--max-seq-tokens", default=None)
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--max-pairs", type=int, default=MAX_PAIRS, help="unsupervised: pairs sampled")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    a = ap.parse_args()
    common = ["--seed", a.seed, "--device", "cpu"]
    if a.max_seq_tokens:
        common += ["--max-seq-tokens", a.max_seq_tokens]
    training = []
    for flag, value in (("--epochs", a.epochs), ("--batch-size", a.batch_size), ("--lr", a.lr)):
        if value:
            training += [flag, value]
    results = []
    with tempfile.TemporaryDirectory(prefix="arrowsmith-bench-tune-") as tmp:
        source, name = Path(a.data), "Cranfield"
        if a.collection == "limit":
            from arrowsmith.commands.synthetic import likes_collection, write_beir

            source, name = Path(tmp) / "limit-source", "LIMIT-style set"
            write_beir(source, *likes_collection(people=25, distractors=2000))
        split = Path(tmp) / "split" / source.name
        n_train, n_test = parity_split(source, split, swap=a.swap)
        for config in a.configs.split(","):
            print(f"tune benchmark: {config}", file=sys.stderr, flush=True)
            out = Path(tmp) / f"model-{config}"
            result = train(config, split, out, common, training, a.max_pairs)
            dims = (256, 128, 64) if config == "matryoshka" else ()
            evaluate(result, split, out, Path(tmp) / "eval", dims, a.resamples)
            shown = {k: v for k, v in result.items() if k not in ("table", "query_ids", "per_query")}
            print(json.dumps(shown), file=sys.stderr, flush=True)
            results.append(result)
    versus_first(results, a.resamples)
    if a.json:
        Path(a.json).write_text(json.dumps({"n_train": n_train, "n_test": n_test,
                                            "options": common + training, "results": results}, indent=1))
    text = markdown(results, n_train, n_test, common + training, name, a.swap)
    print(text if a.markdown else "\n".join(r["table"] for r in results))


if __name__ == "__main__":
    main()
