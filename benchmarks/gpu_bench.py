"""Helper of benchmarks/gpu.sh: writes the corpus, measures the model alone, and reports.

    python benchmarks/gpu_bench.py corpus --docs N FILE       # deterministic JSONL documents
    python benchmarks/gpu_bench.py report --model DIR --dir D  # reads what gpu.sh wrote into D

Needs neither lancedb nor a network: vectors come from ``embed -o`` Arrow files, compared here.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SYLLABLES = ["ka", "lo", "mi", "ren", "tor", "sa", "vel", "qui", "no", "dar", "es", "pli", "um", "ba", "th"]


def write_corpus(path: str, n_docs: int, seed: int = 0) -> None:
    """Documents of 300-900 words (seeded words; English function words for realistic pieces)."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(5000)]
    vocab += "the a of and to in is it that was for on are with as by this from at".split() * 30
    with open(path, "w") as f:
        for d in range(n_docs):
            sentences = [" ".join(rng.choice(vocab) for _ in range(rng.randint(6, 28))).capitalize() + "."
                         for _ in range(rng.randint(20, 60))]
            f.write(json.dumps({"id": f"doc{d}", "text": " ".join(sentences)}) + "\n")


def read_arrow(path: Path) -> pa.Table:
    with pa.ipc.open_stream(pa.memory_map(str(path))) as r:
        return r.read_all()


def vectors(path: Path) -> tuple[list[str], np.ndarray]:
    t = read_arrow(path)
    flat = t.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return t.column("id").to_pylist(), flat.reshape(t.num_rows, -1).astype(np.float32)


def cosine_stats(a: Path, b: Path) -> dict[str, float]:
    ids_a, va = vectors(a)
    ids_b, vb = vectors(b)
    if ids_a != ids_b:
        order = {i: k for k, i in enumerate(ids_b)}
        vb = vb[[order[i] for i in ids_a]]
    c = (va * vb).sum(1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1)
    return {"rows": len(ids_a), "min": float(c.min()), "mean": float(c.mean())}


def model_alone(model_dir: str, texts: list[str], dtype: str, device: str) -> dict[str, float]:
    """Forward passes only: token ids prepared first, then ``encode_tokens`` timed with a device sync."""
    import torch

    from arrowsmith.plugins.registry import load_model

    model = load_model(model_dir, device=device, dtype=dtype)
    ids = [model.wrap_ids(model.token_ids(t)[0][:model.max_tokens - 2])[0] for t in texts]
    model.encode_tokens(ids[:2048])  # load the weights, warm the kernels
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step = 16384
    for k in range(0, len(ids), step):
        model.encode_tokens(ids[k:k + step])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = sum(len(s) for s in ids)
    out = {"dtype": model.dtype, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
    if device.startswith("cuda"):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def report(model_dir: str, d: Path, device: str, sample: int) -> dict:
    timings = json.loads((d / "timings.json").read_text())
    chunked = read_arrow(d / "chunked.arrows")
    spans = chunked.column("chunks").combine_chunks()
    n_tokens = int(pc.sum(spans.flatten().field("n_tokens")).as_py())
    n_chunks = len(spans.flatten())
    texts = []
    for text, chunks in zip(chunked.column("text").to_pylist(), spans.to_pylist(), strict=True):
        texts += [text[c["start"]:c["end"]] for c in chunks]
    result = {"documents": chunked.num_rows, "chunks": n_chunks, "content_tokens": n_tokens, "runs": {}}
    for name, seconds in timings.items():
        result["runs"][name] = {"seconds": seconds, "tokens_per_s": n_tokens / seconds}
    result["cosine"] = {"naive auto vs fp32": cosine_stats(d / "naive.arrows", d / "naive_fp32.arrows"),
                        "late auto vs fp32": cosine_stats(d / "late.arrows", d / "late_fp32.arrows")}
    result["model_alone"] = {dt: model_alone(model_dir, texts[:sample], dt, device)
                             for dt in ("auto", "fp32")}
    smi = d / "nvidia-smi.csv"
    if smi.exists():
        used = [int(x.split()[0]) for x in smi.read_text().split("\n")[1:] if x.strip()[:1].isdigit()]
        result["gpu_memory_used_mib_max"] = max(used, default=0)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus")
    c.add_argument("file")
    c.add_argument("--docs", type=int, default=7000)
    r = sub.add_parser("report")
    r.add_argument("--model", required=True)
    r.add_argument("--dir", required=True)
    r.add_argument("--device", default="cuda")
    r.add_argument("--sample", type=int, default=100_000, help="chunks timed for the model alone")
    args = ap.parse_args()
    if args.cmd == "corpus":
        write_corpus(args.file, args.docs)
        return
    res = report(args.model, Path(args.dir), args.device, args.sample)
    (Path(args.dir) / "report.json").write_text(json.dumps(res, indent=1))
    json.dump(res, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
