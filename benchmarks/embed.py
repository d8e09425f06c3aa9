"""Embedding throughput, whole processes: `arrowsmith embed` vs a plain sentence-transformers script.

    .venv/bin/python benchmarks/embed.py [--docs 600] [--rounds 2] [--corpus FILE] [--batch-tokens 4096]

Two inputs made from real abstracts (default: the first 600 Cranfield documents, ../shared/data):
``abstracts`` = `arrowsmith chunk --max-tokens 128` (the real chunker), ``sentences`` = one chunk
per sentence (short, mixed lengths). Every configuration is a fresh process that imports what it
needs, loads the model and embeds the same chunk texts: the baseline is a plain script calling
``SentenceTransformer.encode(texts, batch_size=32)`` in fp32 (it writes its vectors to .npy);
arrowsmith runs `embed FILE -o OUT.arrows`. Rounds are interleaved (A B C … A B C …) and the best
round is kept, so a busy machine slows all configurations alike; tokens/s has one numerator for
all (the chunks' content tokens), so ratios are ratios of wall time. CPU seconds (user + system
of the process) are printed too: on a shared machine they are the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "cranfield" / "corpus.jsonl"

BASELINE = """
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer
texts = json.load(open(sys.argv[2]))
model = SentenceTransformer(sys.argv[1], device="cpu")
np.save(sys.argv[3], model.encode(texts, batch_size=32))
"""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "arrowsmith.cli", *args]


def read_docs(corpus: Path, n: int) -> list[dict]:
    docs = []
    with open(corpus) as f:
        for line in f:
            row = json.loads(line)
            if row.get("text", "").strip():
                docs.append({"id": str(row.get("_id", row.get("id"))), "text": row["text"]})
            if len(docs) == n:
                break
    return docs


def sentence_input(docs: list[dict], path: Path) -> None:
    """Chunked-documents file with one chunk per sentence (spans as `chunk` writes them)."""
    rows = []
    for d in docs:
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S[^.]*\.?", d["text"]) if m.group().strip(" .")]
        rows.append({"id": d["id"], "text": d["text"], "doc_hash": d["id"],
                     "chunks": [{"start": s, "end": e, "n_tokens": 0} for s, e in spans]})
    table = pa.Table.from_pylist(rows)
    with pa.ipc.new_stream(str(path), table.schema) as w:
        w.write_table(table)


def chunk_texts(path: Path) -> list[str]:
    with pa.ipc.open_stream(str(path)) as r:
        table = r.read_all()
    return [t[c["start"]:c["end"]] for t, cs in zip(table.column("text").to_pylist(),
                                                    table.column("chunks").to_pylist(), strict=True)
            for c in cs]


def read_vectors(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    with pa.ipc.open_stream(str(path)) as r:
        table = r.read_all()
    return np.array(table.column("vector").to_pylist(), dtype=np.float32)


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def bench(name: str, chunked: Path, model_path: str, tmp: Path, rounds: int, budgets: list[int]) -> None:
    from arrowsmith.plugins.registry import load_model

    texts = chunk_texts(chunked)
    (tmp / f"{name}.json").write_text(json.dumps(texts))
    tokenizer = load_model(model_path, device="cpu", dtype="fp32").tokenizer
    tokens = sum(tokenizer.count_tokens(texts))
    out = {k: tmp / f"{name}-{k}.arrows" for k in ("auto", "fp32", "late", "late-fp32")}
    npy = tmp / f"{name}.npy"
    ours = {"auto": (), "fp32": ("--dtype", "fp32"), "late": ("--late",),
            "late-fp32": ("--late", "--dtype", "fp32")}
    configs = {"plain sentence-transformers, encode(batch_size=32), fp32":
               ([sys.executable, "-c", BASELINE, model_path, str(tmp / f"{name}.json"), str(npy)], npy)}
    for k, flags in ours.items():
        shown = flags if "--dtype" in flags else (*flags, "(auto)")
        label = "arrowsmith embed " + " ".join(shown)
        configs[label] = (cli("embed", str(chunked), *flags, "-o", str(out[k])), out[k])
    for b in budgets:  # candidates for the CPU default (2048)
        configs[f"arrowsmith embed --batch-tokens {b} (auto)"] = (
            cli("embed", str(chunked), "--batch-tokens", str(b), "-o", str(tmp / f"{name}-{b}.arrows")),
            tmp / f"{name}-{b}.arrows")
    best = {k: (float("inf"), float("inf")) for k in configs}
    for _ in range(rounds):
        for label, (cmd, _) in configs.items():
            wall, cpu = timed(cmd)
            best[label] = (min(best[label][0], wall), min(best[label][1], cpu))
    base_label = next(iter(configs))
    base_wall, base_cpu = best[base_label]
    print(f"\n### {name}: {len(texts):,} chunks, {tokens:,} content tokens "
          f"(mean {tokens / len(texts):.0f} per chunk); load average {os.getloadavg()[0]:.1f}\n")
    print("| process | wall s | tokens/s | × plain ST (wall) | CPU s | × plain ST (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, (wall, cpu) in best.items():
        print(f"| {label} | {wall:.2f} | {tokens / wall:,.0f} | {base_wall / wall:.2f} | {cpu:.2f} | "
              f"{base_cpu / cpu:.2f} |")
    ref = read_vectors(configs[base_label][1])
    for label in ("arrowsmith embed (auto)", "arrowsmith embed --dtype fp32"):
        c = cosine(read_vectors(configs[label][1]), ref)
        print(f"\ncosine {label} vs plain ST fp32: min {c.min():.6f}, mean {c.mean():.6f}", end="")
    c = cosine(read_vectors(out["late"]), read_vectors(out["late-fp32"]))
    print(f"\ncosine late auto vs late fp32: min {c.min():.6f}, mean {c.mean():.6f}")
    auto = best["arrowsmith embed (auto)"][0] / best["arrowsmith embed --late (auto)"][0]
    fp32 = best["arrowsmith embed --dtype fp32"][0] / best["arrowsmith embed --late --dtype fp32"][0]
    print(f"late ÷ naive tokens/s: auto {auto:.2f}, fp32 {fp32:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--only", choices=("abstracts", "sentences"), help="one input instead of both")
    ap.add_argument("--batch-tokens", default="", help="extra --batch-tokens to compare, e.g. 1024,4096")
    args = ap.parse_args()
    budgets = [int(b) for b in args.batch_tokens.split(",") if b]

    from arrowsmith.plugins.registry import load_model
    from arrowsmith.plugins.sentence_transformers import cpu_has_native_bf16

    model_path = load_model(None, device="cpu").path
    print(f"{args.docs} documents from {args.corpus}; {os.cpu_count()} CPUs, "
          f"native bf16: {cpu_has_native_bf16()}")
    with tempfile.TemporaryDirectory(prefix="arrowsmith-bench-embed-") as d:
        tmp = Path(d)
        docs = read_docs(args.corpus, args.docs)
        (tmp / "docs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in docs))
        if args.only in (None, "abstracts"):
            subprocess.run(cli("chunk", str(tmp / "docs.jsonl"), "--max-tokens", "128", "-o",
                               str(tmp / "abstracts.arrows")), check=True, capture_output=True)
            bench("abstracts (chunk --max-tokens 128)", tmp / "abstracts.arrows", model_path, tmp,
                  args.rounds, budgets)
        if args.only in (None, "sentences"):
            sentence_input(docs, tmp / "sentences.arrows")
            bench("sentences (one chunk per sentence)", tmp / "sentences.arrows", model_path, tmp,
                  args.rounds, budgets)


if __name__ == "__main__":
    main()
