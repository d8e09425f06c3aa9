"""Late vs naive chunking, the model alone, in one process: where late chunking's time goes.

    .venv/bin/python benchmarks/late.py [--docs 600] [--rounds 3] [--max-tokens 128] [--overlaps 63,31,0]

The same documents and spans (`arrowsmith chunk --max-tokens 128` of the first 600 Cranfield
abstracts): naive is ``model.encode`` of the chunk texts, late is ``plan_late`` (tokenize each
document once, cut windows) plus ``model.encode_tokens`` of the windows and the pooling, once per
window overlap asked for. Rounds are interleaved and the best is kept. Two ratios are printed:
document tokens/s (one numerator for all, the chunks' content tokens: the ratio of times) and
model tokens/s (each side's own computed tokens, specials and window overlap included), so a gap
can be told apart into tokens computed and cost per token.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from embed import CORPUS, cli, read_docs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--overlaps", default="", help="window overlaps to time (default: embed's default only)")
    ap.add_argument("--dtype", default="fp32")
    args = ap.parse_args()

    from arrowsmith.commands.embed import plan_late, resolve_params
    from arrowsmith.plugins.registry import load_model
    from arrowsmith.plugins.sentence_transformers import cpu_has_native_bf16

    with tempfile.TemporaryDirectory(prefix="arrowsmith-bench-late-") as d:
        tmp = Path(d)
        docs_jsonl = "".join(json.dumps(x) + "\n" for x in read_docs(args.corpus, args.docs))
        (tmp / "docs.jsonl").write_text(docs_jsonl)
        subprocess.run(cli("chunk", str(tmp / "docs.jsonl"), "--max-tokens", str(args.max_tokens), "-o",
                           str(tmp / "c.arrows")), check=True, capture_output=True)
        with pa.ipc.open_stream(str(tmp / "c.arrows")) as r:
            rows = r.read_all().to_pylist()

    model = load_model(None, device="cpu", dtype=args.dtype)
    docs = [(r["text"], [(c["start"], c["end"]) for c in r["chunks"]]) for r in rows]
    texts = [t[s:e] for t, spans in docs for s, e in spans]
    content = sum(c["n_tokens"] for r in rows for c in r["chunks"])
    overlaps = [int(o) for o in args.overlaps.split(",") if o] or [None]
    late_params = [resolve_params(model, late=True, window_overlap=o) for o in overlaps]

    def run_naive() -> int:
        before = model.tokens_seen
        model.encode(texts, "document")
        return model.tokens_seen - before  # real tokens the model computed, specials included

    def run_late(params) -> int:
        # what GroupEmbedder._late does for a group
        before = model.tokens_seen
        plans = [plan_late(model, t, spans, params) for t, spans in docs]
        outs = model.encode_tokens([s for p in plans for s in p.sequences])
        k = 0
        for p in plans:
            p.pool(outs[k:k + len(p.sequences)], False)
            k += len(p.sequences)
        return model.tokens_seen - before

    print(f"{len(rows)} documents, {len(texts):,} chunks, {content:,} content tokens; "
          f"{args.dtype}, native bf16: {cpu_has_native_bf16()}")
    model.encode(texts[:64], "document")  # load and warm up
    best: dict[str, float] = {}
    computed: dict[str, int] = {}
    for _ in range(args.rounds):
        t = time.perf_counter()
        computed["naive"] = run_naive()
        best["naive"] = min(best.get("naive", 1e9), time.perf_counter() - t)
        for params in late_params:
            name = f"late, window overlap {params.window_overlap}"
            t = time.perf_counter()
            computed[name] = run_late(params)
            best[name] = min(best.get(name, 1e9), time.perf_counter() - t)
    print("\n| configuration | s | tokens computed | × naive document tokens/s | × naive model tokens/s |")
    print("|---|---:|---:|---:|---:|")
    for name, s in best.items():
        doc_ratio = best["naive"] / s
        model_ratio = (computed[name] / s) / (computed["naive"] / best["naive"])
        print(f"| {name} | {s:.2f} | {computed[name]:,} | {doc_ratio:.3f} | {model_ratio:.3f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
