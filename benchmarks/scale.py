"""A million chunks on two cores (issue 20): every stage of a nightly build, as real processes.

    .venv/bin/python benchmarks/scale.py --chunks 1000000 --model-dir STATIC [--work DIR]
    .venv/bin/python benchmarks/scale.py --chunks 100000 --model-dir STATIC --minilm-sample 0

STATIC is a static model (``arrowsmith distill -o STATIC``). Stages, each a fresh ``arrowsmith``
process (``procs.run``: wall, user + system CPU and ``ru_maxrss`` per process, from ``os.wait4``):

1. ``chunk corpus.jsonl --max-tokens 128 --db DB | tee chunks.arrows | embed --model STATIC --db DB``
   (``tee`` keeps the chunked documents: they are the reference for the row check; ``--db`` is the
   nightly command's: on this first night there is no table yet, so every document is chunked);
2. ``index --db DB`` (auto: IVF_PQ from 100k rows, BM25, the doc_id BTree);
3. query latency and recall@10 (``--queries`` texts, ``search(..., mode="vector")`` of the library,
   one call per query in one process, after 3 warm-up calls; recall against ``exact=True``);
4. ``compress --method binary --rescore 100``, then the query measurement again (now through the
   compressed first stage);
5. ``doctor --json``; the stored ids against the reference (every id once, none missing or extra);
6. the second night: 1% of documents changed, 1% deleted, the same pipe with ``embed --prune``
   (``chunk --db`` chunks only the new and changed documents and marks the rest ``unchanged``),
   then ``index``, ``compress`` (the same method) and ``doctor`` again, and the ids against the
   new reference (a marked document's ids are its first-night ones);
7. ``--minilm-sample N``: the first documents of the chunked corpus up to N chunks, embedded by
   all-MiniLM-L6-v2 (``embed --db``) at ``--dtype fp32`` and ``--dtype auto``: tokens/s, and the
   hours the whole corpus would take.

The corpus: documents of 15 to 2,000 words (log-uniform: most are short, a few long, so chunk
lengths are mixed), each about two topics (two Cranfield abstracts: 60% of its words drawn from
their words, 40% from the whole collection's word frequencies), in sentences of 5-30 words and
paragraphs of 2-6 sentences. Document ``i``'s text depends only on (seed, version, i), so the
second night's changed documents are new versions of the same ids. Deterministic by ``--seed``.

The measuring process imports nothing heavy (a child's ``ru_maxrss`` starts at its parent's RSS);
the generator, the reference check and the query loop run as children of this script
(``scale.py _generate`` etc.), outside the measured stages' figures except the query row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from procs import Run, cli, run  # benchmarks/procs.py

ROOT = Path(__file__).resolve().parent.parent
CRANFIELD = ROOT.parent / "shared" / "data" / "cranfield" / "corpus.jsonl"
MAX_TOKENS = 128
TOKENS_PER_WORD = 1.25  # MiniLM word pieces per generated word (measured on the generator's text)
SAMPLE_RESCORE = 100


def me(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


# ------------------------------------------------------------------ the corpus (children)


class Generator:
    def __init__(self, seed: int, source: Path = CRANFIELD):
        import re

        import numpy as np

        self.np, self.seed = np, seed
        index: dict[str, int] = {}
        bags = []
        for line in source.read_text(encoding="utf-8").splitlines():
            words = re.findall(r"[a-z][a-z0-9\-]*", json.loads(line)["text"].lower())
            if len(words) >= 20:
                bags.append(np.array([index.setdefault(w, len(index)) for w in words], dtype=np.int32))
        self.words = np.array(list(index), dtype=object)
        self.bags = bags
        self.everything = np.concatenate(bags)  # a word drawn from here has its collection frequency

    def document(self, i: int, version: int = 0) -> str:
        np = self.np
        rng = np.random.default_rng([self.seed, version, i])
        n = int(10 ** rng.uniform(np.log10(15), np.log10(2000)))
        topics = [self.bags[t] for t in rng.integers(len(self.bags), size=2)]
        topical = rng.random(n) < 0.6
        which = rng.integers(2, size=n)
        picks = self.everything[rng.integers(len(self.everything), size=n)]
        for t, bag in enumerate(topics):
            m = topical & (which == t)
            picks[m] = bag[rng.integers(len(bag), size=int(m.sum()))]
        words = self.words[picks].tolist()
        paragraphs, sentences, at = [], [], 0
        while at < n:
            k = int(rng.integers(5, 31))
            s = " ".join(words[at:at + k])
            sentences.append(s[:1].upper() + s[1:] + ("?" if rng.random() < 0.05 else "."))
            at += k
            if len(sentences) >= int(rng.integers(2, 7)) or at >= n:
                paragraphs.append(" ".join(sentences))
                sentences = []
        return "\n\n".join(paragraphs)

    def query(self, i: int) -> str:
        np = self.np
        rng = np.random.default_rng([self.seed, 99, i])
        bag = self.bags[int(rng.integers(len(self.bags)))]
        return " ".join(self.words[bag[rng.integers(len(bag), size=int(rng.integers(4, 11)))]].tolist())


def generate(args: argparse.Namespace) -> None:
    """corpus.jsonl (version 0) and corpus2.jsonl (1% changed, 1% deleted), queries.jsonl; prints counts."""
    import numpy as np

    gen = Generator(args.seed)
    work = Path(args.work)
    docs, est = 0, 0.0
    with open(work / "corpus.jsonl", "w", encoding="utf-8") as f:
        while est < args.chunks:
            text = gen.document(docs)
            f.write(json.dumps({"id": f"d{docs:07d}", "text": text}) + "\n")
            # sentence packing leaves chunks about 85% full: 0.9 errs to a few % more chunks than asked
            est += max(1.0, len(text.split()) * TOKENS_PER_WORD / (0.9 * MAX_TOKENS))
            docs += 1
    rng = np.random.default_rng([args.seed, 7])
    picked = rng.permutation(docs)[: 2 * max(1, docs // 100)]
    changed, deleted = set(picked[: len(picked) // 2].tolist()), set(picked[len(picked) // 2:].tolist())
    with open(work / "corpus.jsonl", encoding="utf-8") as src, \
            open(work / "corpus2.jsonl", "w", encoding="utf-8") as f:
        for i, line in enumerate(src):
            if i in deleted:
                continue
            new = json.dumps({"id": f"d{i:07d}", "text": gen.document(i, 1)}) + "\n"
            f.write(new if i in changed else line)
    with open(work / "queries.jsonl", "w", encoding="utf-8") as f:
        for i in range(args.queries):
            f.write(json.dumps({"id": f"q{i}", "text": gen.query(i)}) + "\n")
    print(json.dumps({"documents": docs, "estimated_chunks": round(est), "changed": len(changed),
                      "deleted": len(deleted)}))


def chunk_counts(path: str) -> tuple[dict[str, int | None], int]:
    """doc id → chunks of a chunked stream (None: marked unchanged by ``chunk --db``), and tokens."""
    import pyarrow as pa
    import pyarrow.compute as pc

    counts: dict[str, int | None] = {}
    tokens = 0
    with pa.ipc.open_stream(path) as r:
        for batch in r:
            lengths = pc.list_value_length(batch.column("chunks")).to_pylist()
            marked = (batch.column("unchanged").to_pylist() if "unchanged" in batch.schema.names
                      else [False] * batch.num_rows)
            for doc, n, kept in zip(batch.column("id").to_pylist(), lengths, marked, strict=True):
                counts[doc] = None if kept else n
            tokens += pc.sum(pc.list_flatten(batch.column("chunks")).field("n_tokens")).as_py() or 0
    return counts, tokens


def reference(args: argparse.Namespace) -> None:
    """The stored ids against the chunked documents' ids: counts, missing, extra, duplicates. A
    document marked unchanged has the chunks it had in ``--before`` (the first night's stream)."""
    from arrowsmith.commands.store import open_table, scan_batches

    counts, tokens = chunk_counts(args.chunked)
    before = chunk_counts(args.before)[0] if args.before else {}
    expected: set[str] = set()
    for doc, n in counts.items():
        expected.update(f"{doc}#{j}" for j in range(before[doc] if n is None else n))
    stored: set[str] = set()
    rows = 0
    for batch in scan_batches(open_table(args.db, args.table), ["id"]):
        ids = batch.column("id").to_pylist()
        rows += len(ids)
        stored.update(ids)
    print(json.dumps({"expected": len(expected), "rows": rows, "distinct": len(stored),
                      "missing": len(expected - stored), "extra": len(stored - expected),
                      "tokens": tokens}))


def sample(args: argparse.Namespace) -> None:
    """The first documents of a chunked stream up to ``--chunks`` chunks, as a chunked stream."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = tokens = 0
    with pa.ipc.open_stream(args.chunked) as r, pa.OSFile(args.out, "wb") as f, \
            pa.ipc.new_stream(f, r.schema) as w:
        for batch in r:
            lengths = pc.list_value_length(batch.column("chunks")).to_numpy()
            take = min(len(lengths), int((lengths.cumsum() < args.chunks - n).sum()) + 1)
            part = batch.slice(0, take)
            w.write_batch(part)
            n += int(lengths[:take].sum())
            tokens += pc.sum(pc.list_flatten(part.column("chunks")).field("n_tokens")).as_py()
            if n >= args.chunks:
                break
    print(json.dumps({"chunks": n, "tokens": tokens}))


def latency(args: argparse.Namespace) -> None:
    """p50/p95 of one-query searches and recall@10 against exact search (cached in a file), two ways:
    ``search()`` per query (opens the table each time, as one `query` process does) and one
    ``Searcher`` kept for all (as a server or eval does: the index stays loaded)."""
    import numpy as np

    from arrowsmith.commands.query import Searcher, search

    queries = [(q["id"], q["text"]) for q in map(json.loads, Path(args.query_file).read_text().splitlines())]
    out: dict[str, float] = {}
    exact, exact_ms = _exact_ids(args, queries)
    if exact_ms is not None:
        out["exact_ms_per_query"] = exact_ms
    options = {"refine_factor": args.refine_factor, "use_compressed": not args.no_compressed}
    searcher = Searcher(args.db, args.table, **options)
    ways = {"call": lambda q: search(args.db, [q], k=10, mode="vector", **options),
            "kept": lambda q: searcher.search([q], k=10, mode="vector")}
    for way, go in ways.items():
        for q in queries[:3]:
            go(q)
        times, recalls = [], []
        for q in queries:
            t0 = time.perf_counter()
            hits = go(q)
            times.append(time.perf_counter() - t0)
            want = set(exact.get(q[0], []))
            recalls.append(len(want & set(hits["id"].to_pylist())) / max(1, len(want)))
        ms = np.array(times) * 1000
        out.update({f"{way}_p50_ms": float(np.percentile(ms, 50)),
                    f"{way}_p95_ms": float(np.percentile(ms, 95)), f"{way}_recall": float(np.mean(recalls))})
    out["queries"] = len(queries)
    print(json.dumps(out))


def _exact_ids(args: argparse.Namespace, queries: list[tuple[str, str]]) -> tuple[dict, float | None]:
    """Each query's exact top 10 ids (cached in ``--exact``), and ms per query when computed here."""
    from arrowsmith.commands.query import search

    exact_path = Path(args.exact)
    if exact_path.exists():
        return json.loads(exact_path.read_text()), None
    t0 = time.perf_counter()
    hits = search(args.db, queries, table=args.table, k=10, mode="vector", exact=True)
    exact: dict[str, list[str]] = {}
    for q, i in zip(hits["query_id"].to_pylist(), hits["id"].to_pylist(), strict=True):
        exact.setdefault(q, []).append(i)
    exact_path.write_text(json.dumps(exact))
    return exact, (time.perf_counter() - t0) / len(queries) * 1000


def sweep(args: argparse.Namespace) -> None:
    """recall@10 and p50/p95 of one kept ``Searcher`` per ANN setting (``--settings
    NPROBES:REFINE,...``; 0 is query's default), the settings interleaved query by query so that
    a change of load meets them all alike; plus ``search()`` per call at query's defaults and the
    compressed first stage when the table has one (``--compressed``)."""
    import numpy as np

    from arrowsmith.commands.query import Searcher, search

    queries = [(q["id"], q["text"]) for q in map(json.loads, Path(args.query_file).read_text().splitlines())]
    exact, exact_ms = _exact_ids(args, queries)
    ways: dict[str, object] = {}
    for setting in args.settings.split(","):
        nprobes, refine = (int(x) or None for x in setting.split(":"))
        searcher = Searcher(args.db, args.table, nprobes=nprobes, refine_factor=refine, use_compressed=False)
        label = f"nprobes {searcher.nprobes}, refine {searcher.refine_factor}"
        ways[label] = lambda q, s=searcher: s.search([q], k=10, mode="vector")
    ways["search() per call, defaults"] = lambda q: search(args.db, [q], table=args.table, k=10,
                                                           mode="vector")
    if args.compressed:
        kept = Searcher(args.db, args.table, use_compressed=True)
        ways["compressed codes (kept)"] = lambda q: kept.search([q], k=10, mode="vector")
    times: dict[str, list[float]] = {w: [] for w in ways}
    recalls: dict[str, list[float]] = {w: [] for w in ways}
    for q in queries[:3]:
        for go in ways.values():
            go(q)
    for q in queries:
        want = set(exact.get(q[0], []))
        for way, go in ways.items():
            t0 = time.perf_counter()
            hits = go(q)
            times[way].append(time.perf_counter() - t0)
            recalls[way].append(len(want & set(hits["id"].to_pylist())) / max(1, len(want)))
    out = {"queries": len(queries), "load": os.getloadavg(), "exact_ms_per_query": exact_ms, "ways": {}}
    for way in ways:
        ms = np.array(times[way]) * 1000
        out["ways"][way] = {"p50_ms": round(float(np.percentile(ms, 50)), 2),
                            "p95_ms": round(float(np.percentile(ms, 95)), 2),
                            "recall": round(float(np.mean(recalls[way])), 4)}
    print(json.dumps(out))


def load_cost(args: argparse.Namespace) -> None:
    """Seconds of two ``load_compressed`` calls in one process and of one ``content_fingerprint``:
    what a search through the compressed codes pays before it scores anything."""
    from arrowsmith.commands.compress import load_compressed
    from arrowsmith.commands.compress.store import content_fingerprint
    from arrowsmith.commands.store import open_table

    out = {}
    for name in ("load_1", "load_2"):
        t0 = time.perf_counter()
        load_compressed(args.db, args.table)
        out[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    content_fingerprint(open_table(args.db, args.table))
    out["fingerprint"] = time.perf_counter() - t0
    print(json.dumps(out))


# ------------------------------------------------------------------ the measuring parent


def disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def child_json(*args: str) -> dict:
    """A helper child (not a measured stage): its one JSON line."""
    import subprocess

    out = subprocess.run(me(*args), capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"scale.py {' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class Table:
    def __init__(self, size: int):
        self.size = size
        self.rows: list[tuple] = []

    def add(self, stage: str, r: Run, db: Path | None, note: str = "") -> None:
        procs = "; ".join(f"{p.name} {p.cpu:.1f} s, {p.rss_mib:,.0f} MiB" for p in r.procs)
        on_disk = f"{disk(db):,}" if db is not None and db.exists() else ""
        self.rows.append((stage, r.wall, r.cpu, r.rss_mib, on_disk, procs, note))
        print(f"  {stage}: wall {r.wall:.1f} s, CPU {r.cpu:.1f} s, peak RSS {r.rss_mib:,.0f} MiB, "
              f"disk {on_disk} B [{procs}] {note}", flush=True)

    def markdown(self) -> str:
        out = ["| stage | wall s | CPU s | peak RSS MiB | store bytes after | per process (CPU s, peak RSS) "
               "| |",
               "|---|---:|---:|---:|---:|---|---|"]
        for stage, wall, cpu, rss, on_disk, procs, note in self.rows:
            out.append(f"| {stage} | {wall:.1f} | {cpu:.1f} | {rss:,.0f} | {on_disk} | {procs} | {note} |")
        return "\n".join(out)


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "?"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in flags)


def nightly(args: argparse.Namespace) -> None:
    work = Path(args.work)
    if work.exists() and any(work.iterdir()):
        sys.exit(f"{work} is not empty")
    work.mkdir(parents=True, exist_ok=True)
    model = str(Path(args.model_dir).resolve())
    db = work / "db"
    started = time.perf_counter()
    print(f"# benchmarks/scale.py --chunks {args.chunks:,}\n\n{platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, flags {cpu_flags()}; load average before: {os.getloadavg()}; code: "
          f"{os.environ.get('PYTHONPATH') or 'the installed package'}", flush=True)
    t0 = time.perf_counter()
    corpus = child_json("_generate", "--work", str(work), "--chunks", str(args.chunks), "--seed",
                        str(args.seed), "--queries", str(args.queries))
    print(f"generated in {time.perf_counter() - t0:.0f} s: {corpus}; corpus.jsonl "
          f"{disk(work / 'corpus.jsonl'):,} B", flush=True)
    table = Table(args.chunks)
    checks: dict[str, dict] = {}

    def build(corpus_file: str, chunked: str, *extra: str) -> Run:
        # the nightly command (docs/chunk.md): chunk only what the table does not hold unchanged
        return run(cli("chunk", str(work / corpus_file), "--max-tokens", str(MAX_TOKENS), "--db", str(db)),
                   ["tee", str(work / chunked)],
                   cli("embed", "--model", model, "--db", str(db), *extra))

    def query(label: str, exact: str = "exact.json", *extra: str) -> None:
        r = run(me("_latency", "--db", str(db), "--query-file", str(work / "queries.jsonl"),
                   "--exact", str(work / exact), *extra), stdout=str(work / "latency.json"))
        res = json.loads((work / "latency.json").read_text())
        checks[label] = res
        table.add(label, r, None, f"search() per query: p50 {res['call_p50_ms']:.1f} ms, p95 "
                  f"{res['call_p95_ms']:.1f} ms; one Searcher: p50 {res['kept_p50_ms']:.1f} ms, p95 "
                  f"{res['kept_p95_ms']:.1f} ms; recall@10 {res['kept_recall']:.3f} ({res['queries']} queries"
                  + (f"; exact search {res['exact_ms_per_query']:.0f} ms/query" if "exact_ms_per_query" in res
                     else "") + ")")

    def doctor(label: str) -> None:
        out = work / "doctor.json"
        r = run(cli("doctor", "--db", str(db), "--json"), stdout=str(out))
        res = json.loads(out.read_text())
        table.add(label, r, db, "healthy" if res.get("healthy", not res.get("findings")) else
                  f"FINDINGS: {res.get('findings')}")

    def ids(label: str, chunked: str, *before: str) -> None:
        res = child_json("_reference", "--db", str(db), "--chunked", str(work / chunked), *before)
        checks[label] = res
        ok = res["expected"] == res["rows"] == res["distinct"] and not res["missing"] and not res["extra"]
        print(f"  {label}: {'OK' if ok else 'MISMATCH'} {res}", flush=True)

    first = build("corpus.jsonl", "chunks.arrows")
    table.add("chunk --db \\| embed --db (static)", first, db)
    ids("ids after the first build", "chunks.arrows")
    r = run(cli("index", "--db", str(db)))
    table.add("index (auto)", r, db)
    first_index = r
    query("query (IVF_PQ)")
    r = run(cli("compress", "--db", str(db), "--method", "binary", "--rescore", str(SAMPLE_RESCORE)))
    table.add(f"compress --method binary --rescore {SAMPLE_RESCORE}", r, db)
    first_compress = r
    query("query (binary + rescore)")
    doctor("doctor")

    second = build("corpus2.jsonl", "chunks2.arrows", "--prune")
    table.add("chunk --db \\| embed --db --prune (1% changed, 1% deleted)", second, db)
    ids("ids after the second build", "chunks2.arrows", "--before", str(work / "chunks.arrows"))
    r2 = run(cli("index", "--db", str(db)))
    table.add("index (incremental)", r2, db)
    # `index` folded the night's rows in; exact top 10s of the second night's table, the float
    # path (the companion is stale until the compress below)
    query("query (after the second night's index)", "exact2.json", "--no-compressed")
    c2 = run(cli("compress", "--db", str(db), "--method", "binary", "--rescore", str(SAMPLE_RESCORE)))
    table.add("compress (again)", c2, db)
    doctor("doctor (after the second build)")

    first_total = first.wall + first_index.wall + first_compress.wall
    second_total = second.wall + r2.wall + c2.wall
    n = checks["ids after the first build"]
    print(f"\n## {n['rows']:,} chunks ({corpus['documents']:,} documents, {n['tokens']:,} content tokens)\n")
    print(table.markdown())
    print(f"\nsecond night / first night (chunk|embed + index + compress, wall): {second_total:.1f} / "
          f"{first_total:.1f} s = **{second_total / first_total:.3f}**; chunk|embed alone "
          f"{second.wall / first.wall:.3f} (CPU {second.cpu / first.cpu:.3f})")

    if args.minilm_sample:
        sample_info = child_json("_sample", "--chunked", str(work / "chunks.arrows"), "--out",
                                 str(work / "sample.arrows"), "--chunks", str(args.minilm_sample))
        print(f"\n## MiniLM on the first {sample_info['chunks']:,} chunks ({sample_info['tokens']:,} "
              "tokens)\n")
        print("| embed --db, all-MiniLM-L6-v2 | wall s | CPU s | peak RSS MiB | tokens/s | "
              f"hours for {n['rows']:,} chunks ({n['tokens']:,} tokens) |\n|---|---:|---:|---:|---:|---:|")
        for dtype in ("fp32", "auto"):
            r = run(cli("embed", str(work / "sample.arrows"), "--dtype", dtype, "--db",
                        str(work / f"minilm-{dtype}")))
            rate = sample_info["tokens"] / r.wall
            print(f"| `--dtype {dtype}` | {r.wall:.1f} | {r.cpu:.1f} | {r.rss_mib:,.0f} | {rate:,.0f} | "
                  f"{n['tokens'] / rate / 3600:.2f} |", flush=True)

    print(f"\nload average after: {os.getloadavg()}; whole run {time.perf_counter() - started:.0f} s")
    if not args.keep:
        shutil.rmtree(work)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1].startswith("_") else None
    if sub:
        sys.argv.pop(1)
    ap.add_argument("--chunks", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--work", default=None,
                    help="an empty directory on a disk with room [default: /tmp/arrowsmith-scale-N]")
    ap.add_argument("--model-dir", help="the static model (arrowsmith distill -o DIR)")
    ap.add_argument("--minilm-sample", type=int, default=20_000, help="chunks for the MiniLM figure; 0: none")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    # the helper children's arguments
    ap.add_argument("--db")
    ap.add_argument("--table", default="chunks")
    ap.add_argument("--chunked")
    ap.add_argument("--before", help="_reference: the first night's chunked stream (for marked documents)")
    ap.add_argument("--out")
    ap.add_argument("--exact")
    ap.add_argument("--query-file")
    ap.add_argument("--refine-factor", type=int, help="_latency: query's --refine-factor [default: query's]")
    ap.add_argument("--no-compressed", action="store_true", help="_latency: search the floats")
    ap.add_argument("--settings", default="0:0", help="_sweep: NPROBES:REFINE,... (0: query's default)")
    ap.add_argument("--compressed", action="store_true", help="_sweep: also the compressed first stage")
    args = ap.parse_args()
    if sub:
        {"_generate": generate, "_reference": reference, "_sample": sample, "_latency": latency,
         "_sweep": sweep, "_load": load_cost}[sub](args)
        return
    if not args.model_dir:
        ap.error("--model-dir: a static model is needed (arrowsmith distill -o DIR)")
    args.work = args.work or f"/tmp/arrowsmith-scale-{args.chunks}"
    nightly(args)


if __name__ == "__main__":
    main()
