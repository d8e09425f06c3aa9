"""Late vs naive chunking on Cranfield: chunk sizes 32/64/128/254 tokens and the sentence strategy.

One process, one model load, identical chunk spans for each naive/late pair (the runner shares
them), exact cosine search, nDCG@10 with a paired bootstrap (late − naive) per pair, plus the
MTEB-parity setting (no chunking, truncated at the model's window). Prints Markdown; each row is
also printed to stderr as soon as it is measured.

    .venv/bin/python benchmarks/eval.py [DATASET] [--sizes 32,64,128,254] [--dtype auto]

254, not 256: all-MiniLM-L6-v2's window is 256 tokens *including* [CLS] and [SEP], so 254 content
tokens is the largest chunk a naive embedding can take without truncating.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

from arrowsmith.commands.evaluate.config import EvalConfig
from arrowsmith.commands.evaluate.data import load_beir
from arrowsmith.commands.evaluate.report import render_markdown
from arrowsmith.commands.evaluate.runner import Evaluator, RunOptions, compare_results

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cranfield"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", nargs="?", default=str(DEFAULT_DATA))
    ap.add_argument("--sizes", default="32,64,128,254")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resamples", type=int, default=10_000)
    args = ap.parse_args()

    dataset = load_beir(args.dataset)
    pairs = [(f"tokens {s}", EvalConfig(chunker="tokens", max_tokens=int(s))) for s in args.sizes.split(",")]
    pairs.append(("sentences", EvalConfig(chunker="sentences")))
    options = RunOptions(device=args.device, dtype=args.dtype, n_resamples=args.resamples)
    results = []
    comparisons = []
    start = time.perf_counter()
    with Evaluator(dataset, options, progress=lambda m: print(m, file=sys.stderr, flush=True)) as ev:
        parity = ev.evaluate_config(EvalConfig(name="none (MTEB parity)", chunker="none"))
        results.append(parity)
        _row(parity)
        for label, cfg in pairs:
            naive = ev.evaluate_config(EvalConfig(**{**cfg.to_dict(), "name": f"{label} naive"}))
            _row(naive)
            late = ev.evaluate_config(EvalConfig(**{**cfg.to_dict(), "name": f"{label} late", "late": True}))
            _row(late)
            results += [naive, late]
            comparisons += compare_results([naive, late], "ndcg@10", n_resamples=args.resamples)
        report = ev.report(results)
        report.comparisons = comparisons
        dtype = report.model.get("dtype") if report.model else args.dtype
    print(f"<!-- {cpu_name()}, {args.device}, dtype {dtype}, total {time.perf_counter() - start:.0f}s -->")
    print(render_markdown(report))


def _row(r) -> None:
    m = r.means
    print(f"{r.label:28s} nDCG@10 {m['ndcg@10']:.4f}  R@100 {m['recall@100']:.4f}  chunks "
          f"{r.counts.get('chunks')}  tokens {r.counts.get('tokens_embedded')}  "
          f"embed {r.timing.get('embed', 0):.1f}s  total {r.timing.get('total', 0):.1f}s",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
