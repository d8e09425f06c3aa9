"""Token vectors and MaxSim (issue 19): what they cost, measured side by side in one process.

    .venv/bin/python benchmarks/maxsim.py [--docs 400] [--rounds 2] [--rows 10000,100000]
    .venv/bin/python benchmarks/maxsim.py --write-limit DIR    # the LIMIT-style set, for `eval`

1. embed: the same chunked Cranfield abstracts through ``embed_batches`` (the model loaded once),
   plain and with ``--multivector`` at each precision (and pooled), rounds interleaved, best kept
   (``--variants`` picks some):
   tokens/s and the ratio to plain; bytes per token and per chunk of each precision.
2. rerank latency: generated tables of N one-chunk rows (clustered unit vectors, 48 random unit
   token vectors a chunk, int4), one query at a time: ``search(mode=vector)`` against
   ``search(mode=vector, rerank="maxsim:100")``, p50/p95, the difference is MaxSim's cost.
3. `query` with one text, the whole process, with and without the rerank (the default auto on a
   table with token vectors), median of 5.
4. rss: peak RSS of whole `embed --multivector --db` processes at two corpus sizes (``--rss-chunks``),
   plain `embed --db` beside the larger (benchmarks/procs.py, ``os.wait4``).
5. index: `--mode maxsim` through the token index (`index --token-index ivf_pq`) against LanceDB's
   flat multivector scan, on generated float16 token vectors with word structure
   (``synthetic.token_vectors``): build time, recall@10, p50/p95 (``--index-rows``, ``--index-tokens``).

Quality is `arrowsmith eval` (benchmarks/RESULTS.md names the commands): every mode on Cranfield
and on the LIMIT-style set this script writes with --write-limit.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from embed import CORPUS, ROOT, read_docs


def cpu_flags() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split())
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)


def embed_cost(n_docs: int, rounds: int, only: str = "") -> None:
    from arrowsmith.commands.chunk import chunk_documents, make_chunker
    from arrowsmith.commands.embed import embed_batches
    from arrowsmith.plugins.registry import load_model

    docs = pa.Table.from_pylist(read_docs(CORPUS, n_docs))
    chunker = make_chunker("sentences", "model:all-MiniLM-L6-v2", 128, 0)
    chunked = pa.Table.from_batches(list(chunk_documents(iter(docs.to_batches()), strategy="sentences",
                                                         tokenizer=chunker.tokenizer, max_tokens=128)))
    model = load_model(None, device="cpu", dtype="fp32")
    # residual fits its codebook on each run's first group (a new table's cost, included here)
    variants = {"plain": {}, "residual (the default)": {"multivector": True},
                "int4": {"multivector": True, "token_precision": "int4"},
                "binary": {"multivector": True, "token_precision": "binary"},
                "float16": {"multivector": True, "token_precision": "float16"},
                "float32": {"multivector": True, "token_precision": "float32"},
                "int4, pool 2": {"multivector": True, "token_precision": "int4", "token_pool": 2.0}}
    if only:  # plain and float32 stay: the ratio's base and the token count
        variants = {k: v for k, v in variants.items()
                    if k in ("plain", "float32") or any(w in k for w in only.split(","))}
    best: dict[str, float] = {}
    size: dict[str, tuple[int, int, int]] = {}
    list(embed_batches(chunked.to_batches(), model, **variants["plain"]))  # warm-up: weights, kernels
    if "residual (the default)" in variants:  # a continuing table's run: its codebook already fitted
        from arrowsmith.commands.spaces import codebook

        first = next(iter(embed_batches(chunked.to_batches(), model, multivector=True)))
        variants["residual, the table's codebook"] = {
            "multivector": True, "token_codebook": codebook.from_stream_metadata(first.schema.metadata)}
    for _ in range(rounds):
        for name, opts in variants.items():
            t0 = time.perf_counter()
            out = pa.Table.from_batches(list(embed_batches(chunked.to_batches(), model, **opts)))
            best[name] = min(best.get(name, 1e9), time.perf_counter() - t0)
            tokens = int(pa.compute.sum(pa.compute.list_value_length(out["tokens"])).as_py()) \
                if "tokens" in out.column_names else 0
            size[name] = (out.num_rows, tokens, out["tokens"].nbytes if tokens else 0)
    n_tokens = size["float32"][1]
    print(f"\n## embed, {n_docs} Cranfield abstracts, {size['plain'][0]:,} chunks, {n_tokens:,} content "
          f"tokens (fp32, {cpu_flags()})")
    print("| variant | seconds | content tokens/s | × plain | tokens stored | bytes a token "
          "| bytes a chunk |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in variants:
        rows, tokens, nbytes = size[name]
        per_token = nbytes / tokens if tokens else 0
        print(f"| {name} | {best[name]:.2f} | {n_tokens / best[name]:,.0f} | "
              f"{best['plain'] / best[name]:.3f} | {tokens:,} | {per_token:.1f} | {nbytes / rows:,.0f} |")


def generated_store(root: Path, n: int, tokens_per_chunk: int = 48, precision: str = "int4",
                    tokens: np.ndarray | None = None) -> str:
    """N one-chunk rows (clustered dense vectors), each with ``tokens_per_chunk`` token vectors at
    ``precision``: ``tokens`` (``[n * tokens_per_chunk, 384]``) or random unit ones."""
    import lancedb

    from arrowsmith.commands.schemas import MODEL, read_meta, stage_metadata
    from arrowsmith.commands.spaces import multi
    from arrowsmith.commands.synthetic import clustered_vectors, generated_table

    vectors = clustered_vectors(n, seed=3)
    table = generated_table(vectors)
    settings = multi.TokenSettings(384, precision)
    rng = np.random.default_rng(4)
    cols = []
    for start in range(0, n, 10_000):
        m = min(10_000, n - start)
        if tokens is None:
            t = rng.standard_normal((m * tokens_per_chunk, 384), dtype=np.float32)
            t /= np.linalg.norm(t, axis=1, keepdims=True)
        else:
            t = tokens[start * tokens_per_chunk:(start + m) * tokens_per_chunk]
        cols.append(multi.column(list(t.reshape(m, tokens_per_chunk, 384)), settings))
    meta = read_meta(table.schema)[MODEL]
    meta[multi.META_KEY] = settings.as_meta()
    table = table.append_column(multi.field(settings), pa.chunked_array(cols))
    table = table.replace_schema_metadata(stage_metadata("embed", model=meta))
    db = str(root / f"gen{n}")
    lancedb.connect(db).create_table("chunks", table)
    return db


def rerank_latency(rows: list[int], n_queries: int = 40) -> None:
    from arrowsmith.commands.query import QueryStats, search
    from arrowsmith.commands.synthetic import query_vectors
    from arrowsmith.plugins.registry import load_model

    model = load_model(None, device="cpu", dtype="fp32")
    texts = [f"generated query number {i} about a topic" for i in range(n_queries)]
    print(f"\n## rerank maxsim:100 latency, one query at a time ({n_queries} queries, k 10, {cpu_flags()})")
    print("| rows | vector p50 / p95 ms | vector + rerank p50 / p95 ms | added p50 / p95 ms |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in rows:
            db = generated_store(Path(tmp), n)
            from arrowsmith.commands.synthetic import clustered_vectors

            qv = query_vectors(clustered_vectors(n, seed=3), n_queries)
            times: dict[str, list[float]] = {"plain": [], "rerank": []}
            embed_ms = []
            for i in range(n_queries):
                for name, rr in (("plain", None), ("rerank", "maxsim:100")):
                    stats = QueryStats()
                    search(db, [texts[i]], k=10, mode="vector", query_vectors=qv[i:i + 1], model=model,
                           rerank=rr, stats=stats)
                    # search time only: the query's token vectors are embedding, reported apart
                    times[name].append(stats.search_s * 1000)
                    if rr:
                        embed_ms.append(stats.embed_s * 1000)
            p = {k: (np.percentile(v[2:], 50), np.percentile(v[2:], 95)) for k, v in times.items()}
            print(f"| {n:,} | {p['plain'][0]:.1f} / {p['plain'][1]:.1f} | {p['rerank'][0]:.1f} / "
                  f"{p['rerank'][1]:.1f} | {p['rerank'][0] - p['plain'][0]:.1f} / "
                  f"{p['rerank'][1] - p['plain'][1]:.1f} |")
            embed_p50 = np.percentile(embed_ms, 50)
            print(f"|  | (the query's token vectors, numpy forward pass: p50 {embed_p50:.1f} ms) | | |")


def token_index(n: int, per_chunk: int, n_queries: int = 100, query_tokens: int = 8) -> float:
    """`--mode maxsim` through the token index `index --token-index ivf_pq` builds, against LanceDB's
    flat multivector scan (what `--exact` runs): build time, recall@10, latency of ``maxsim_all``
    (the whole search of --mode maxsim but for reading the result rows), one query at a time."""
    from arrowsmith.commands.index import build_indexes, disk_usage
    from arrowsmith.commands.query import Searcher
    from arrowsmith.commands.store import load_state, table_path
    from arrowsmith.commands.synthetic import token_vectors

    tokens, _ = token_vectors(n + n_queries, per_chunk, seed=5)
    # a query: the first tokens of a chunk that is not stored (its topic's words, new contexts)
    queries = tokens[n * per_chunk:].reshape(n_queries, per_chunk, -1)[:, :query_tokens].copy()
    with tempfile.TemporaryDirectory() as tmp:
        db = generated_store(Path(tmp), n, per_chunk, "float16", tokens[:n * per_chunk])
        del tokens
        t0 = time.perf_counter()
        report = build_indexes(db, token_index="ivf_pq", fts=False)
        build_s = time.perf_counter() - t0
        spec, size = load_state(db, "chunks")["tokens_spec"], disk_usage(table_path(db, "chunks"))
        probes, refine = Searcher(db).token_tuning
        configs = {"flat (LanceDB's exact multivector scan, `--exact`)": Searcher(db, exact=True),
                   f"token index, query's defaults (nprobes {probes}, refine {refine})": Searcher(db),
                   f"token index, nprobes {3 * probes}, refine {refine}": Searcher(db, nprobes=3 * probes),
                   f"token index, nprobes {probes}, refine {5 * refine}": Searcher(db,
                                                                                   refine_factor=5 * refine)}
        out = {}
        for name, searcher in configs.items():
            searcher.maxsim_all(queries[0], 10)  # warm: open files, plan
            times, ids = [], []
            for q in queries:
                t0 = time.perf_counter()
                ids.append(set(searcher.maxsim_all(q, 10).ids))
                times.append((time.perf_counter() - t0) * 1000)
            out[name] = (np.percentile(times, 50), np.percentile(times, 95), ids)
    exact = next(iter(out.values()))[2]
    n_tok = n * per_chunk
    print(f"\n## --mode maxsim: token index vs flat scan ({n:,} rows × {per_chunk} float16 token vectors "
          f"= {n_tok:,} tokens, {n_tok * 768 / 2**20:,.0f} MiB of tokens, table {size / 2**20:,.0f} MiB on "
          f"disk; {n_queries} queries of {query_tokens} tokens, k 10; {cpu_flags()})")
    print(f"- build: {report.summary()}: IVF_PQ, {spec['partitions']} partitions, {spec['sub_vectors']} "
          f"sub-vectors, {build_s:.0f} s")
    print("| search | recall@10 vs flat | p50 ms | p95 ms |")
    print("|---|---:|---:|---:|")
    for name, (p50, p95, ids) in out.items():
        recall = np.mean([len(a & e) / len(e) for a, e in zip(ids, exact, strict=True)])
        print(f"| {name} | {recall:.3f} | {p50:.1f} | {p95:.1f} |", flush=True)
    return build_s


def embed_rss(sizes: list[int], max_tokens: int = 64) -> None:
    """Peak RSS of whole `embed --multivector --db` processes (``os.wait4``, benchmarks/procs.py) at
    each corpus size: Cranfield abstracts repeated under new ids, chunked beforehand; plain `embed
    --db` at the largest size beside them. Memory is bounded by the group (GROUP_CHUNKS chunks and
    their token vectors), so it should not grow with the corpus."""
    import json
    import shutil

    from pipeline import chunk_tokens
    from procs import cli, run

    docs = read_docs(CORPUS, 10**9)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def chunked(copies: float) -> tuple[Path, int, int]:
            n_docs = round(copies * len(docs))
            path = root / f"docs-{n_docs}.jsonl"
            with open(path, "w") as f:
                for i in range(n_docs):
                    d = docs[i % len(docs)]
                    f.write(json.dumps({"id": f"{d['id']}-{i // len(docs)}", "text": d["text"]}) + "\n")
            out = root / f"chunks-{n_docs}.arrows"
            subprocess.run(cli("chunk", str(path), "--max-tokens", str(max_tokens), "-o", str(out)),
                           check=True, capture_output=True)
            _, n_chunks, n_tokens = chunk_tokens(out)
            return out, n_chunks, n_tokens

        _, per_copy, _ = chunked(1)
        for n in sizes:
            path, n_chunks, n_tokens = chunked(n / per_copy)
            variants = [("embed --multivector --db", ["--multivector"])]
            if n == max(sizes):
                variants.append(("embed --db (no token vectors)", []))
            for label, extra in variants:
                db = root / f"db-{n}-{len(extra)}"
                r = run(cli("embed", str(path), "--dtype", "fp32", *extra, "--db", str(db)))
                rows.append((label, n_chunks, n_tokens, r))
                shutil.rmtree(db)
    first = rows[0][3].rss_mib
    print(f"\n## embed's peak RSS against corpus size (Cranfield abstracts repeated under new ids, "
          f"`chunk --max-tokens {max_tokens}`, fp32, the default token precision; {cpu_flags()})")
    print("| process | chunks | content tokens | wall s | CPU s | peak RSS MiB | × the smallest |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, n_chunks, n_tokens, r in rows:
        print(f"| `{label}` | {n_chunks:,} | {n_tokens:,} | {r.wall:.1f} | {r.cpu:.1f} | {r.rss_mib:,.0f} | "
              f"{r.rss_mib / first:.3f} |")


def one_query_process() -> None:
    """Whole `arrowsmith query` processes on a small store with token vectors (auto: reranked)."""
    exe = [sys.executable, "-m", "arrowsmith.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "db")
        chunked = subprocess.run([*exe, "chunk", str(ROOT / "samples"), "--max-tokens", "64"],
                                 capture_output=True, check=True).stdout
        subprocess.run([*exe, "embed", "--multivector", "--db", db], input=chunked, capture_output=True,
                       check=True)
        subprocess.run([*exe, "index", "--db", db], capture_output=True, check=True)
        out = {}
        for name, extra in (("hybrid", ["--mode", "hybrid"]), ("auto = hybrid + maxsim-mix:100", [])):
            runs = []
            for _ in range(5):
                t0 = time.perf_counter()
                subprocess.run([*exe, "query", "--db", db, "why is the sky blue", *extra],
                               capture_output=True, check=True)
                runs.append(time.perf_counter() - t0)
            out[name] = statistics.median(runs)
    print(f"\n## `query` one text, whole process, median of 5 ({cpu_flags()})")
    for name, s in out.items():
        print(f"- {name}: {s:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", default="", help="embed part: comma list of variant names (substrings)")
    ap.add_argument("--rows", default="10000,100000")
    ap.add_argument("--write-limit", type=Path, help="write the LIMIT-style set (BEIR layout) and stop")
    ap.add_argument("--index-rows", default="20000", help="token index part: rows (comma list)")
    ap.add_argument("--index-tokens", type=int, default=32, help="token index part: tokens a chunk")
    ap.add_argument("--index-queries", type=int, default=100)
    ap.add_argument("--index-max-build-s", type=float, default=1800,
                    help="token index part: skip a size whose build would take longer (extrapolated)")
    ap.add_argument("--rss-chunks", default="2000,20000", help="embed RSS part: corpus sizes in chunks")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: embed,rerank,process,index,rss")
    args = ap.parse_args()
    if args.write_limit:
        from arrowsmith.commands.synthetic import likes_collection, write_beir

        write_beir(args.write_limit, *likes_collection(people=25, distractors=2000))
        print(f"wrote {args.write_limit}: 2,025 documents, 150 queries, 4 relevant each")
        return
    skip = set(args.skip.split(","))
    if "embed" not in skip:
        embed_cost(args.docs, args.rounds, args.variants)
    if "rerank" not in skip:
        rerank_latency([int(x) for x in args.rows.split(",")])
    if "process" not in skip:
        one_query_process()
    if "rss" not in skip:
        embed_rss([int(n) for n in args.rss_chunks.split(",")])
    if "index" not in skip:
        last: tuple[int, float] | None = None
        for n in (int(x) for x in args.index_rows.split(",")):
            # IVF training grows as tokens × partitions, i.e. tokens^1.5 at sqrt(tokens) partitions
            guess = last and last[1] * (n / last[0]) ** 1.5
            if guess and guess > args.index_max_build_s:
                print(f"\n(skipped {n:,} rows: its build would take ~{guess:,.0f} s at the last size's rate)")
                continue
            last = (n, token_index(n, args.index_tokens, args.index_queries))


if __name__ == "__main__":
    main()
