"""Chunking throughput: chunks/s and MB/s per strategy and tokenizer, on a generated corpus.

    .venv/bin/python benchmarks/chunk.py                       # 20 MB, seed 0
    .venv/bin/python benchmarks/chunk.py --mb 5                # quicker
    .venv/bin/python benchmarks/chunk.py --baseline bf41d4c    # old vs new, side by side
    .venv/bin/python benchmarks/chunk.py --corpus zipf         # a large vocabulary (many distinct words)
    .venv/bin/python benchmarks/chunk.py --jsonl ../shared/data/cranfield/corpus.jsonl --text-col text
    .venv/bin/python benchmarks/chunk.py --process --baseline bf41d4c --rounds 3   # whole processes

Side by side in one run, for each tokenizer: tokenizing the corpus alone (one encoding
of every document, the old floor), then each strategy end to end through
``chunk_documents`` (batching, planning, counting, Arrow output). With ``--baseline REV``
the ``commands/chunk`` package of git revision REV is imported as a second package and
every row runs old then new on the same batches, in alternation, ``--rounds`` times (the
best round counts); both must give the same chunks. Wall seconds are what the targets
are about; CPU seconds (``getrusage``, all threads of the process) and the token totals
are printed too because they are far less sensitive to a loaded machine.

``--process`` (issue 20) measures what a user runs instead: ``arrowsmith chunk FILE.jsonl --id-col _id
--text-col text -o OUT.arrows`` as a fresh process, start-up, JSON parsing and writing included, on
a JSONL corpus of abstract-length records (``--abstracts-mb``, made from the Cranfield abstracts:
each record one abstract with its sentences shuffled and one word in ten replaced by another word of
the collection; or ``--jsonl FILE``). The ``--baseline`` revision's whole CLI (its ``cli``,
``commands`` and ``plugins``, imported through ``PYTHONPATH`` with this venv's packages) runs as a
process beside this tree's, alternating, ``--rounds`` times; the best round counts and both outputs
must hold the same ids, texts and chunks.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import pyarrow as pa

from arrowsmith.commands import chunk as new_chunk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but "
         "have an they you were her she there been one all we their has would when if so no will what "
         "light scattering atmosphere molecule wavelength tide moon gravity magma pressure starter dough "
         "commit branch merge glacier protein enzyme neutron photon algorithm latency throughput").split()
CJK = "大気中の分子は青い光をより強く散乱するので空は青く見えます。"


def sentence(rng: random.Random, pick) -> str:
    words = [pick() for _ in range(rng.randint(6, 28))]
    if rng.random() < 0.05:
        words.insert(rng.randrange(len(words)), f"https://example.org/{rng.randrange(10**6)}/page?id={rng.randrange(999)}")
    if rng.random() < 0.05:
        words.append(str(rng.randrange(10**6)))
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])


def document(rng: random.Random, size: int, pick) -> str:
    parts: list[str] = []
    n = 0
    markdown = rng.random() < 0.4
    while n < size:
        if markdown and rng.random() < 0.15:
            block = "#" * rng.randint(1, 3) + " " + sentence(rng, pick).rstrip(".?!")
        elif rng.random() < 0.03:
            block = CJK * rng.randint(1, 5)
        else:
            block = " ".join(sentence(rng, pick) for _ in range(rng.randint(2, 8)))
        parts.append(block)
        n += len(block) + 2
    return "\n\n".join(parts)


def zipf_picker(rng: random.Random, n_words: int = 200_000):
    """Words of a made-up language drawn with Zipf frequencies (s = 1): a natural text's vocabulary
    growth (tens of thousands of distinct words per MB), unlike the 70-word ``mixed`` corpus."""
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 12))) for _ in range(n_words)]
    weights = [1 / (r + 1) for r in range(n_words)]
    cum = list(__import__("itertools").accumulate(weights))
    buffer: list[str] = []

    def pick() -> str:
        if not buffer:
            buffer.extend(rng.choices(vocab, cum_weights=cum, k=4096))
        return buffer.pop()
    return pick


def corpus(mb: float, seed: int, kind: str = "mixed") -> list[pa.RecordBatch]:
    rng = random.Random(seed)
    pick = (lambda: rng.choice(WORDS)) if kind == "mixed" else zipf_picker(rng)
    ids, texts, total = [], [], 0
    while total < mb * 1e6:
        # mostly small documents, a few long ones (log-uniform 500 B .. 200 kB)
        text = document(rng, int(10 ** rng.uniform(2.7, 5.3)), pick)
        ids.append(f"doc{len(ids):06d}")
        texts.append(text)
        total += len(text.encode())
    return batches_of(ids, texts)


def batches_of(ids: list[str], texts: list[str]) -> list[pa.RecordBatch]:
    return [pa.RecordBatch.from_pydict({"id": ids[i:i + 256], "text": texts[i:i + 256]})
            for i in range(0, len(ids), 256)]


def read_jsonl(path: str, id_col: str, text_col: str) -> list[pa.RecordBatch]:
    ids, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if (row.get(text_col) or "").strip():
                ids.append(str(row[id_col]))
                texts.append(row[text_col])
    return batches_of(ids, texts)


CRANFIELD = os.path.join(os.path.dirname(ROOT), "shared", "data", "cranfield", "corpus.jsonl")


def abstracts(mb: float, seed: int, path: str) -> int:
    """A JSONL corpus of abstract-length records (``_id``, ``title``, ``text``) made from Cranfield's
    abstracts: sentences shuffled, one word in ten replaced by another word of the collection."""
    rng = random.Random(seed)
    with open(CRANFIELD, encoding="utf-8") as f:
        rows = [r for r in map(json.loads, f) if r["text"].strip()]
    vocab = [w for r in rows for w in r["text"].split()]
    n = size = 0
    with open(path, "w", encoding="utf-8") as out:
        while size < mb * 1e6:
            row = rng.choice(rows)
            sentences = [s for s in row["text"].split(" . ") if s]
            rng.shuffle(sentences)
            words = " . ".join(sentences).split(" ")
            for _ in range(len(words) // 10):
                words[rng.randrange(len(words))] = rng.choice(vocab)
            line = json.dumps({"_id": f"a{n:07d}", "title": row["title"], "text": " ".join(words)}) + "\n"
            out.write(line)
            n, size = n + 1, size + len(line.encode())
    return n


def baseline_tree(rev: str) -> str:
    """A folder for ``PYTHONPATH`` whose ``arrowsmith`` package is ``cli``, ``commands`` and
    ``plugins`` as of git revision ``rev`` (how the project installs them)."""
    tar = subprocess.run(["git", "-C", ROOT, "archive", rev, "cli", "commands", "plugins"], check=True,
                         capture_output=True).stdout
    root = tempfile.mkdtemp(prefix="chunk-baseline-")
    package = os.path.join(root, "arrowsmith")
    os.makedirs(package)
    tarfile.open(fileobj=io.BytesIO(tar)).extractall(package, filter="data")
    open(os.path.join(package, "__init__.py"), "w").close()
    return root


def same_output(a: str, b: str) -> bool:
    def read(path):
        with pa.ipc.open_stream(path) as reader:
            return reader.read_all().select(["id", "text", "doc_hash", "chunks"])
    return read(a).equals(read(b))


def processes(args) -> None:
    from procs import cli
    from procs import run as run_procs

    work = tempfile.mkdtemp(prefix="chunk-process-")
    if args.jsonl:
        path, label = args.jsonl, os.path.basename(args.jsonl)
    else:
        path = os.path.join(work, "abstracts.jsonl")
        docs = abstracts(args.abstracts_mb, args.seed, path)
        label = f"{docs:,} records made from Cranfield abstracts, seed {args.seed}"
    mb = os.path.getsize(path) / 1e6
    chunk_args = ["chunk", path, "--id-col", args.id_col, "--text-col", args.text_col]
    codes = {"new": [*cli(*chunk_args), "-o", os.path.join(work, "new.arrows")]}
    if args.baseline:
        tree = baseline_tree(args.baseline)
        where = subprocess.run(["env", f"PYTHONPATH={tree}", sys.executable, "-c",
                                "import arrowsmith.commands.chunk as c; print(c.__file__)"],
                               check=True, capture_output=True, text=True).stdout
        assert where.startswith(tree), f"the baseline imports {where}, not {tree}"
        old = ["env", f"PYTHONPATH={tree}", *cli(*chunk_args), "-o", os.path.join(work, "old.arrows")]
        codes = {"old": old, **codes}
    print(f"corpus: {path}: {mb:.1f} MB ({label}); python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"command: arrowsmith {' '.join(chunk_args)} -o OUT.arrows")
    best: dict[str, tuple[float, float]] = {}
    for r in range(args.rounds):
        for code, cmd in codes.items():
            t = run_procs(cmd)
            print(f"round {r + 1} {code}: {t.wall:.2f} s wall, {t.cpu:.2f} s CPU "
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)
            if code not in best or t.wall < best[code][0]:
                best[code] = (t.wall, t.cpu)
    print(f"\n| code | wall s (best of {args.rounds}) | cpu s | MB/s |" + (" × old wall | × old cpu | same |"
                                                                        if args.baseline else ""))
    print("|---|---:|---:|---:|" + ("---:|---:|---|" if args.baseline else ""))
    for code, (wall, cpu) in best.items():
        line = f"| {code} | {wall:.2f} | {cpu:.2f} | {mb / wall:.1f} |"
        if args.baseline:
            old_wall, old_cpu = best["old"]
            same = same_output(os.path.join(work, "old.arrows"), os.path.join(work, "new.arrows"))
            line += (f" {old_wall / wall:.2f} | {old_cpu / cpu:.2f} | {'yes' if same else 'NO'} |"
                     if code == "new" else " | | |")
        print(line)
    shutil.rmtree(work)
    if args.baseline:
        shutil.rmtree(tree)


def load_baseline(rev: str):
    """``commands/chunk`` as of git revision ``rev``, imported as the package ``chunk_<rev>``."""
    tar = subprocess.run(["git", "-C", ROOT, "archive", rev, "commands/chunk"], check=True,
                         capture_output=True).stdout
    root = tempfile.mkdtemp(prefix="chunk-baseline-")
    tarfile.open(fileobj=io.BytesIO(tar)).extractall(root, filter="data")
    init = os.path.join(root, "commands", "chunk", "__init__.py")
    name = f"chunk_{rev}"
    spec = importlib.util.spec_from_file_location(name, init,
                                                  submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process (Rust's included)
    return r.ru_utime + r.ru_stime


def run(pkg, batches, spec: str, strategy: str) -> dict:
    tok = pkg.load_tokenizer(spec)
    stats = pkg.ChunkStats()
    spans = []
    wall, cpu = time.perf_counter(), cpu_seconds()
    for batch in pkg.chunk_documents(batches, strategy=strategy, tokenizer=tok, stats=stats):
        spans.append(batch.column("chunks"))
    return {"wall": time.perf_counter() - wall, "cpu": cpu_seconds() - cpu, "chunks": stats.chunks,
            "tokens": stats.tokens, "spans": spans, "name": tok.name, "max": tok.default_max_tokens}


def best(pkg, batches, spec, strategy, results):
    r = run(pkg, batches, spec, strategy)
    prev = results.get(id(pkg))
    if prev is None or r["wall"] < prev["wall"]:
        results[id(pkg)] = r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus", choices=["mixed", "zipf"], default="mixed")
    ap.add_argument("--jsonl", help="chunk this JSONL file instead of a generated corpus")
    ap.add_argument("--id-col", default="_id")
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--tokenizers", default="model:all-MiniLM-L6-v2,cl100k_base")
    ap.add_argument("--strategies", default="tokens,sentences,markdown")
    ap.add_argument("--baseline", help="git revision whose commands/chunk runs side by side (old vs new)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--process", action="store_true",
                    help="whole `arrowsmith chunk` processes on a JSONL corpus (see the module doc)")
    ap.add_argument("--abstracts-mb", type=float, default=60.0,
                    help="--process: size of the generated abstracts corpus (without --jsonl)")
    args = ap.parse_args()
    if args.process:
        processes(args)
        return
    if args.jsonl:
        batches, label = read_jsonl(args.jsonl, args.id_col, args.text_col), os.path.basename(args.jsonl)
    else:
        batches, label = corpus(args.mb, args.seed, args.corpus), f"{args.corpus}, seed {args.seed}"
    texts = [t for b in batches for t in b.column("text").to_pylist()]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    old = load_baseline(args.baseline) if args.baseline else None
    print(f"corpus: {len(texts):,} documents, {mb:.1f} MB ({label}); python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    head = (f"{'tokenizer':24} {'strategy':10} {'code':>8} {'wall s':>7} {'cpu s':>7} {'MB/s':>6} "
            f"{'chunks':>7} {'tokens':>10}")
    print(head + (f" {'x old wall':>10} {'x old cpu':>9} same" if old else ""))
    for spec in args.tokenizers.split(","):
        tok = new_chunk.load_tokenizer(spec)
        wall, cpu = time.perf_counter(), cpu_seconds()
        for i in range(0, len(texts), 256):
            tok.batch_offsets(texts[i:i + 256])
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        print(f"{tok.name:24} {'(tokenize)':10} {'':>8} {wall:7.2f} {cpu:7.2f} {mb / wall:6.2f}")
        for strategy in args.strategies.split(","):
            results: dict = {}
            for _ in range(args.rounds):
                for pkg in ([old] if old else []) + [new_chunk]:
                    best(pkg, batches, spec, strategy, results)
            rows = ([("old", results[id(old)])] if old else []) + [("new", results[id(new_chunk)])]
            for code, r in rows:
                line = (f"{r['name']:24} {strategy:10} {code:>8} {r['wall']:7.2f} {r['cpu']:7.2f} "
                        f"{mb / r['wall']:6.2f} {r['chunks']:7,d} {r['tokens']:10,d}")
                if old and code == "new":
                    o = results[id(old)]
                    same = [s.to_pylist() for s in o["spans"]] == [s.to_pylist() for s in r["spans"]]
                    line += (f" {o['wall'] / r['wall']:10.2f} {o['cpu'] / r['cpu']:9.2f} "
                             f"{'yes' if same else 'NO'}")
                print(line, flush=True)


if __name__ == "__main__":
    main()
