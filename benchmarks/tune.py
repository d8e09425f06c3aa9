"""Benchmark `arrowsmith tune` on Cranfield: quality before/after, time and peak memory per configuration.

Cranfield's judged queries are split by id parity (odd ids train, even ids evaluate: done here, in a
temporary directory of symlinks and two qrels files, never by editing shared/). Each configuration
trains through the real CLI in its own process (``os.wait4`` gives its wall time and peak RSS), then
base and tuned model are scored on the held-out half with tune's before/after code (eval's metrics,
paired bootstrap CI; the base model's store is built once and shared).

    python benchmarks/tune.py                      # supervised, unsupervised, matryoshka
    python benchmarks/tune.py --configs supervised --max-seq-tokens 128 --markdown

Quality numbers do not depend on machine load; time and memory do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRANFIELD = ROOT.parent / "shared" / "data" / "cranfield"
CONFIGS = {
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


MAX_PAIRS = 1000  # unsupervised: Cranfield's corpus makes ~3,000 pairs; a sample as large as the rest


def parity_split(src: Path, dest: Path) -> tuple[int, int]:
    """dest/: corpus and queries linked from src, qrels/train.tsv (odd ids) and qrels/test.tsv (even)."""
    (dest / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (dest / name).symlink_to(src / name)
    lines = (src / "qrels" / "test.tsv").read_text().splitlines()
    header, rows = lines[0], [line for line in lines[1:] if line.strip()]
    counts = []
    for split, parity in (("train", 1), ("test", 0)):
        kept = [r for r in rows if int(r.split("\t")[0]) % 2 == parity]
        (dest / "qrels" / f"{split}.tsv").write_text("\n".join([header, *kept]) + "\n")
        counts.append(len({r.split("\t")[0] for r in kept}))
    return counts[0], counts[1]


def train(name: str, split: Path, out: Path, common: list[str], max_pairs: int = MAX_PAIRS) -> dict:
    args = [a.format(split=split, max_pairs=max_pairs) for a in CONFIGS[name]]
    cmd = [sys.executable, "-m", "arrowsmith.cli", "tune", *args, "-o", str(out), *common]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{name}: exit {code}\n{err}")
    card = (out / "README.md").read_text()
    info = json.loads(card.split("```json\n", 1)[1].split("```", 1)[0])
    return {"name": name, "command": "arrowsmith " + " ".join(cmd[3:]), "wall_s": round(seconds, 1),
            "train_s": info["training"]["seconds"], "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "pairs": info["data"]["pairs"], "steps": info["training"]["steps"],
            "summary": err.strip().splitlines()[-1]}


def evaluate(result: dict, split: Path, out: Path, work: Path, dims: tuple[int, ...], resamples: int) -> None:
    from arrowsmith.commands.tune import before_after, render
    from arrowsmith.plugins.registry import load_model

    base = load_model(None, device="cpu", dtype="fp32")
    tuned = load_model(str(out), device="cpu", dtype="fp32")
    ba = before_after(split, "test", base, tuned, work, dims=dims, n_resamples=resamples)
    c = ba.comparison
    result.update(base=c.baseline_mean, tuned=c.candidate_mean, diff=c.diff, ci=[c.ci_low, c.ci_high],
                  p=c.p_value, table=render(ba),
                  dims=[{"dim": d.dim, "base": d.base, "tuned": d.tuned, "diff": d.comparison.diff,
                         "ci": [d.comparison.ci_low, d.comparison.ci_high]} for d in ba.dims])


def markdown(results: list[dict], n_train: int, n_test: int, common: list[str]) -> str:
    lines = [f"Cranfield, judged queries split by id parity: {n_train} odd-id queries train, {n_test} "
             f"even-id queries evaluate; options {' '.join(common)}.", "",
             "| configuration | pairs | steps | train s | wall s | peak RSS MB | nDCG@10 base | tuned | Δ "
             "| 95% CI |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['pairs']:,} | {r['steps']} | {r['train_s']:.0f} | "
                     f"{r['wall_s']:.0f} | "
                     f"{r['peak_rss_mb']:,} | {r['base']:.4f} | {r['tuned']:.4f} | {r['diff']:+.4f} | "
                     f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}] |")
    for r in results:
        if r["dims"]:
            lines += ["", f"{r['name']}: nDCG@10 per dim (tuned vs base truncated alike)", "",
                      "| dim | base | tuned | Δ | 95% CI |", "|---:|---:|---:|---:|---|"]
            lines += [f"| {d['dim']} | {d['base']:.4f} | {d['tuned']:.4f} | {d['diff']:+.4f} | "
                      f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] |" for d in r["dims"]]
    lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in results]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(CRANFIELD))
    ap.add_argument("--configs", default="supervised,unsupervised,matryoshka",
                    help=f"comma-separated, of: {', '.join(CONFIGS)}")
    ap.add_argument("--epochs", default="1")
    ap.add_argument("--batch-size", default="32")
    ap.add_argument("--lr", default=None, help="learning rate (tune's default if not given)")
    ap.add_argument("--max-seq-tokens", default=None)
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--max-pairs", type=int, default=MAX_PAIRS, help="unsupervised: pairs sampled")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    a = ap.parse_args()
    common = ["--epochs", a.epochs, "--batch-size", a.batch_size, "--seed", a.seed, "--device", "cpu"]
    if a.max_seq_tokens:
        common += ["--max-seq-tokens", a.max_seq_tokens]
    if a.lr:
        common += ["--lr", a.lr]
    results = []
    with tempfile.TemporaryDirectory(prefix="arrowsmith-bench-tune-") as tmp:
        split = Path(tmp) / Path(a.data).name
        n_train, n_test = parity_split(Path(a.data), split)
        for name in a.configs.split(","):
            print(f"tune benchmark: {name}", file=sys.stderr, flush=True)
            out = Path(tmp) / f"model-{name}"
            result = train(name, split, out, common, a.max_pairs)
            dims = (256, 128, 64) if name == "matryoshka" else ()
            evaluate(result, split, out, Path(tmp) / "eval", dims, a.resamples)
            print(json.dumps({k: v for k, v in result.items() if k != "table"}), file=sys.stderr, flush=True)
            results.append(result)
    if a.json:
        Path(a.json).write_text(json.dumps({"n_train": n_train, "n_test": n_test, "options": common,
                                            "results": results}, indent=1))
    text = markdown(results, n_train, n_test, common)
    print(text if a.markdown else "\n".join(r["table"] for r in results))


if __name__ == "__main__":
    main()
