"""A distilled static model against the transformer it came from: whole-process embedding speed.

    .venv/bin/python benchmarks/distill.py [--model-dir DIR] [--copies 20] [--rounds 2] [--docs N]

Texts: Cranfield's abstracts (../shared/data) cut by `arrowsmith chunk` (the default chunker,
all-MiniLM-L6-v2's tokenizer). Every configuration is a fresh process, timed whole (start-up,
imports, model load, reading, writing):

* ``minilm st.encode``: a plain script, ``SentenceTransformer(all-MiniLM-L6-v2).encode(texts,
  batch_size=32)`` in fp32 on the chunk texts (the baseline of benchmarks/embed.py);
* ``static embed --db`` (1x): ``arrowsmith embed CHUNKS --model DIR --db STORE`` on the same chunks;
* ``static embed --db`` (Kx): the same documents ``--copies`` times under new ids, so that start-up
  (~1-2 s, mostly importing lancedb) no longer dominates: the rate a large corpus sees. The texts
  are the same, so the transformer's tokens/s on them is the 1x rate.

tokens/s has one numerator for all: the chunks' content tokens under MiniLM's tokenizer (the static
model's tokenizer may count fewer, when distilled with ``--corpus`` words). Rounds are interleaved and
the best kept; CPU seconds (user + system) are printed too, the steadier figure on a shared machine.
The store size is the LanceDB directory's bytes after each static run. Quality (nDCG@10 on Cranfield)
is measured with `arrowsmith eval` (benchmarks/RESULTS.md#distill gives the command).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from embed import BASELINE, CORPUS, cli  # the same corpus and plain-encode baseline as embed.py


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one process, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err}")
    return wall, usage.ru_utime + usage.ru_stime


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def chunk_corpus(work: Path, docs: int | None) -> tuple[Path, list[str], int]:
    """The chunked documents (Arrow stream), their chunk texts, and their content tokens."""
    corpus = work / "corpus.jsonl"
    lines = [line for line in CORPUS.read_text().splitlines() if json.loads(line).get("text", "").strip()]
    corpus.write_text("\n".join(lines[:docs] if docs else lines) + "\n")
    chunked = work / "chunks.arrows"
    subprocess.run(cli("-q", "chunk", str(corpus), "--id-col", "_id", "--text-col", "text",
                       "-o", str(chunked)), check=True)
    with pa.OSFile(str(chunked)) as f:
        table = pa.ipc.open_stream(f).read_all()
    texts, tokens = [], 0
    for text, spans in zip(table.column("text").to_pylist(), table.column("chunks").to_pylist(), strict=True):
        for s in spans:
            texts.append(text[s["start"]:s["end"]])
            tokens += s["n_tokens"]
    return chunked, texts, tokens


def replicate(chunked: Path, copies: int, dest: Path) -> Path:
    """``copies`` copies of every document under new ids (embed keys documents by id)."""
    with pa.OSFile(str(chunked)) as f:
        table = pa.ipc.open_stream(f).read_all()
    ids = table.column("id")
    with pa.OSFile(str(dest), "wb") as out, pa.ipc.new_stream(out, table.schema) as w:
        for k in range(copies):
            copy = table.set_column(table.schema.get_field_index("id"), "id",
                                    pa.array([f"{i}~{k}" for i in ids.to_pylist()]))
            w.write_table(copy)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", help="the distilled model (default: `arrowsmith distill` into a temp dir)")
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--docs", type=int, default=None, help="first N Cranfield documents (default: all)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    from arrowsmith.plugins.registry import packaged_path

    minilm = packaged_path("all-MiniLM-L6-v2")
    with tempfile.TemporaryDirectory(prefix="arrowsmith-distill-bench-") as tmp:
        work = Path(tmp)
        static = args.model_dir
        if not static:
            static = str(work / "static")
            wall, _ = timed(cli("-q", "distill", "-o", static))
            print(f"distill: {wall:.1f} s (whole process)", file=sys.stderr)
        chunked, texts, tokens = chunk_corpus(work, args.docs)
        big = replicate(chunked, args.copies, work / "big.arrows")
        (work / "texts.json").write_text(json.dumps(texts))
        script = work / "baseline.py"
        script.write_text(BASELINE)
        runs = {
            "minilm st.encode (1x)": ([sys.executable, str(script), minilm, str(work / "texts.json"),
                                       str(work / "out.npy")], 1, None),
            "static embed --db (1x)": (cli("-q", "embed", str(chunked), "--model", static, "--db",
                                           str(work / "store1")), 1, work / "store1"),
            f"static embed --db ({args.copies}x)": (cli("-q", "embed", str(big), "--model", static, "--db",
                                                        str(work / "storeK")), args.copies, work / "storeK"),
        }
        best: dict[str, tuple[float, float, int]] = {}
        for r in range(args.rounds):
            for name, (cmd, _, store) in runs.items():
                if store is not None:
                    shutil.rmtree(store, ignore_errors=True)
                wall, cpu = timed(cmd)
                size = du(store) if store is not None else 0
                print(f"round {r + 1}: {name}: {wall:.2f} s wall, {cpu:.2f} s CPU", file=sys.stderr)
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, cpu, size)
        report(best, runs, tokens, len(texts), args)


def report(best: dict, runs: dict, tokens: int, n_chunks: int, args) -> None:
    base_wall = best["minilm st.encode (1x)"][0]
    base_rate = tokens / base_wall
    print(f"{n_chunks:,} chunks, {tokens:,} MiniLM content tokens per copy; best of {args.rounds} rounds; "
          f"CPU: {os.cpu_count()} cores")
    print("| configuration | tokens | wall s | CPU s | tokens/s | x MiniLM st.encode | store bytes |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name, (_, copies, _) in runs.items():
        wall, cpu, size = best[name]
        rate = tokens * copies / wall
        rows.append({"name": name, "tokens": tokens * copies, "wall": wall, "cpu": cpu, "tokens_per_s": rate,
                     "ratio": rate / base_rate, "store_bytes": size})
        print(f"| {name} | {tokens * copies:,} | {wall:.2f} | {cpu:.2f} | {rate:,.0f} | "
              f"{rate / base_rate:.1f} | {f'{size:,}' if size else ''} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
