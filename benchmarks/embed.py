"""Embedding throughput: arrowsmith embed vs plain SentenceTransformer.encode, side by side in one run.

    .venv/bin/python benchmarks/embed.py [--docs 240] [--rounds 2] [--device cpu]

A deterministic generated corpus (seeded words → sentences → documents; a sentence is a
chunk). Every configuration embeds the same chunks; tokens/s uses one numerator for all
(content tokens of the chunks, no specials), so ratios are ratios of wall time. Rounds are
interleaved and the best round is kept, so a busy machine slows all configurations alike.
The baseline is `SentenceTransformer.encode(texts, batch_size=32)` in fp32.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import pyarrow as pa

SYLLABLES = ["ka", "lo", "mi", "ren", "tor", "sa", "vel", "qui", "no", "dar", "es", "pli", "um", "ba", "th"]


def corpus(n_docs: int, seed: int = 0) -> list[tuple[str, str, list[tuple[int, int]]]]:
    rng = random.Random(seed)
    vocab = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(3000)]
    vocab += "the a of and to in is it that was for on are with as by this from at".split() * 20
    docs = []
    for d in range(n_docs):
        sentences = [" ".join(rng.choice(vocab) for _ in range(rng.randint(6, 28))).capitalize() + "."
                     for _ in range(rng.randint(3, 10))]
        text, spans = "", []
        for s in sentences:
            start = len(text) + (1 if text else 0)
            text = f"{text} {s}" if text else s
            spans.append((start, start + len(s)))
        docs.append((f"doc{d}", text, spans))
    return docs


def to_batch(docs) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([{"id": i, "text": t, "doc_hash": i,
                                        "chunks": [{"start": s, "end": e, "n_tokens": 0} for s, e in sp]}
                                       for i, t, sp in docs])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=240)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from arrowsmith.commands.embed import embed_batches
    from arrowsmith.plugins.registry import load_model

    docs = corpus(args.docs)
    texts = [t[s:e] for _, t, sp in docs for s, e in sp]
    batch = to_batch(docs)
    models = {dt: load_model(None, device=args.device, dtype=dt) for dt in ("fp32", "auto")}
    content_tokens = sum(models["fp32"].tokenizer.count_tokens(texts))
    st = SentenceTransformer(models["fp32"].path, device=models["fp32"].device)
    print(f"corpus: {len(docs)} docs, {len(texts)} chunks, {content_tokens} content tokens; "
          f"torch threads {torch.get_num_threads()}; auto dtype = {models['auto'].dtype}")

    def ours(dtype: str, late: bool):
        def go():
            out = pa.Table.from_batches(list(embed_batches([batch], models[dtype], late=late)))
            return np.array(out.column("vector").to_pylist(), dtype=np.float32)
        return go

    configs = {
        "sentence-transformers encode bs=32 fp32": lambda: st.encode(texts, batch_size=32),
        "arrowsmith naive fp32": ours("fp32", False),
        "arrowsmith naive auto": ours("auto", False),
        "arrowsmith late fp32": ours("fp32", True),
        "arrowsmith late auto": ours("auto", True),
    }
    # warm up: weights, kernels
    st.encode(texts[:64], batch_size=32)
    for dt in models:
        models[dt].encode(texts[:64])
    best = {k: float("inf") for k in configs}
    result = {}
    for _ in range(args.rounds):
        for name, fn in configs.items():
            t0 = time.perf_counter()
            result[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    base = content_tokens / best["sentence-transformers encode bs=32 fp32"]
    print("\n| configuration | tokens/s | × sentence-transformers fp32 |\n|---|---:|---:|")
    for name in configs:
        tps = content_tokens / best[name]
        print(f"| {name} | {tps:,.0f} | {tps / base:.2f} |")

    def cosine(a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    ref = result["sentence-transformers encode bs=32 fp32"]
    print()
    for name in ("arrowsmith naive fp32", "arrowsmith naive auto"):
        c = cosine(result[name], ref)
        print(f"cosine {name} vs sentence-transformers fp32: min {c.min():.6f} mean {c.mean():.6f}")
    c = cosine(result["arrowsmith late auto"], result["arrowsmith late fp32"])
    print(f"cosine late auto vs late fp32: min {c.min():.6f} mean {c.mean():.6f}")
    late_ratio = best["arrowsmith naive auto"] / best["arrowsmith late auto"]
    print(f"late / naive throughput (auto): {late_ratio:.2f}; (fp32): "
          f"{best['arrowsmith naive fp32'] / best['arrowsmith late fp32']:.2f}")


if __name__ == "__main__":
    main()
