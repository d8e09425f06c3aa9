"""Late vs naive chunking on the same documents and spans: where late chunking's time goes.

    .venv/bin/python benchmarks/late.py [--docs 600] [--rounds 3] [--max-tokens 128] [--overlaps 63,0]
    .venv/bin/python benchmarks/late.py --corpus rst [--processes] [--lengths] [--dtypes fp32,auto]
    .venv/bin/python benchmarks/late.py --corpus rst --overlaps 63,31,16,0 --quality 190 --no-model-alone
    .venv/bin/python benchmarks/late.py --select-rst   # re-make benchmarks/late_rst_files.txt

Two corpora. ``cranfield`` (default): the first ``--docs`` Cranfield abstracts, `arrowsmith chunk
--max-tokens N`. ``rst``: 365 real reStructuredText documentation files found on this machine
(cmake's, awscli's examples, vendored Python packages' docs: 1.63 MB, lengths from ~400 to ~18,700
tokens), `arrowsmith chunk --strategy markdown`; the files are listed in late_rst_files.txt
(``--select-rst`` re-makes the list by its rule: every ``*.rst`` of at least 1,350 bytes outside
test directories, in sha256 order of the path, the first 365) and copied to a temporary directory.

Always printed: the shape of the work, without timing (tokens computed by each side, sequence
lengths, padded tokens and forward passes at the batch budget). Then, per dtype:

- model alone, in one process: naive is ``model.encode`` of the chunk texts, late is ``plan_late``
  (tokenize each document once, cut windows) plus ``model.encode_tokens`` of the windows and the
  pooling, once per window overlap asked for; late's stages are timed apart. Two ratios: document
  tokens/s (the ratio of times) and model tokens/s (each side's own computed tokens), so a gap
  splits into tokens computed and cost per token.
- ``--lengths``: the forward pass's cost per token by sequence length (real text cut to L tokens,
  batches of the budget), and the cost per token each side's length mix predicts from it: the part
  of late's cost per token that is the model's (attention grows with the window), not ours.
- ``--processes``: whole processes, `arrowsmith embed FILE --db D` against `embed FILE --late --db D`
  (a fresh store each run) at each of ``--overlaps`` (none given: embed's default), alternating,
  best of ``--rounds`` kept.
- ``--quality REFERENCE``: what an overlap buys, without timing: each chunk's late vector at each
  of ``--overlaps`` against its vector at overlap REFERENCE (cosine: mean, 1st percentile, min),
  in the first dtype.

Rounds are interleaved and the best is kept, so a busy machine slows every configuration alike.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from embed import CORPUS, cli, read_docs
from procs import run as run_procs

RST_LIST = Path(__file__).resolve().parent / "late_rst_files.txt"
RST_MIN_BYTES, RST_FILES = 1350, 365


def select_rst() -> list[str]:
    """The rule behind late_rst_files.txt: real documentation, no tiny test fixtures."""
    found = subprocess.run(["find", "/", "-xdev", "-name", "*.rst", "-type", "f"], capture_output=True,
                           text=True).stdout.split("\n")
    keep = [p for p in found if p and not p.startswith(("/tmp/", "/proc/", "/work/"))
            and "/tests/" not in p and "/test/" not in p and os.path.getsize(p) >= RST_MIN_BYTES]
    return sorted(keep, key=lambda p: hashlib.sha256(p.encode()).hexdigest())[:RST_FILES]


def rst_corpus(dest: Path, files: int | None = None) -> Path:
    """The listed files copied under ``dest`` (never read in place: `chunk` records mtimes)."""
    docs = dest / "rst"
    docs.mkdir()
    for i, src in enumerate(RST_LIST.read_text().splitlines()[:files]):
        shutil.copyfile(src, docs / f"{i:03d}-{Path(src).name}")
    return docs


def chunked_input(args: argparse.Namespace, tmp: Path) -> Path:
    if args.chunks:
        return args.chunks
    out = tmp / "chunks.arrows"
    if args.corpus == "rst":
        cmd = cli("chunk", str(rst_corpus(tmp, args.files)), "--strategy", "markdown", "-o", str(out))
    else:
        docs_jsonl = "".join(json.dumps(x) + "\n" for x in read_docs(CORPUS, args.docs))
        (tmp / "docs.jsonl").write_text(docs_jsonl)
        cmd = cli("chunk", str(tmp / "docs.jsonl"), "--max-tokens", str(args.max_tokens), "-o", str(out))
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def padded(lengths: list[int], budget: int, cfg: dict) -> tuple[int, int, float]:
    """(padded tokens, forward passes, GFLOP) of ``length_batches`` at ``budget``.

    FLOPs of a BERT encoder per padded batch of ``rows`` × ``width``: the matrix products
    (query/key/value, output, the feed-forward pair: 2 × (4h² + 2hi) per token and layer) and
    attention's two products (2 × 2 × width × h per token and layer), which grow with the width.
    """
    from arrowsmith.plugins.sentence_transformers import length_batches

    h, i, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    batches = length_batches(lengths, budget)
    tokens = flops = 0.0
    for b in batches:
        width = max(lengths[k] for k in b)
        tokens += width * len(b)
        flops += layers * width * len(b) * (2 * (4 * h * h + 2 * h * i) + 4 * width * h)
    return int(tokens), len(batches), flops / 1e9


def shape(model, docs, texts, params, budget: int, overlaps: list[int]) -> tuple[list[int], list[int]]:
    """Each side's sequence lengths (specials included), with a table of the work they mean: the
    late side once per window overlap (the default's first)."""
    from arrowsmith.commands.embed import plan_late, resolve_params

    naive = [len(s) for s in model._tokenize(texts, "", 0)]
    sides = {"naive": naive}
    for overlap in [params.window_overlap, *[o for o in overlaps if o != params.window_overlap]]:
        p = resolve_params(model, late=True, window_overlap=overlap)
        sides[f"late, overlap {overlap}"] = [len(s) for t, spans in docs
                                             for s in plan_late(model, t, spans, p).sequences]
    print(f"\nshape at --batch-tokens {budget} (window {params.window}):\n")
    print("| side | sequences | tokens computed | mean length | ≤ 64 | 65-128 | 129-192 | 193-256 "
          "| padded tokens | forward passes | GFLOP | × naive tokens | × naive GFLOP |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = None
    for name, lens in sides.items():
        hist = np.histogram(lens, bins=[0, 64, 128, 192, 256])[0]
        pad, passes, gflop = padded(lens, budget, model.lean_config)
        base = base or (sum(lens), gflop)
        print(f"| {name} | {len(lens):,} | {sum(lens):,} | {np.mean(lens):.0f} | "
              + " | ".join(f"{h:,}" for h in hist)
              + f" | {pad:,} | {passes} | {gflop:,.0f} | {sum(lens) / base[0]:.3f} | {gflop / base[1]:.3f} |")
    return naive, list(sides.values())[1]


def model_alone(model, docs, texts, late_params, rounds: int, content: int) -> None:
    from arrowsmith.commands.embed import plan_late

    def run_naive() -> dict[str, float]:
        t = time.perf_counter()
        model.encode(texts, "document")
        return {"total": time.perf_counter() - t}

    def run_late(params) -> dict[str, float]:
        # what GroupEmbedder._late does for a group
        t0 = time.perf_counter()
        plans = [plan_late(model, t, spans, params) for t, spans in docs]
        t1 = time.perf_counter()
        outs = model.encode_tokens([s for p in plans for s in p.sequences])
        t2 = time.perf_counter()
        k = 0
        for p in plans:
            p.pool(outs[k:k + len(p.sequences)], False)
            k += len(p.sequences)
        t3 = time.perf_counter()
        return {"total": t3 - t0, "plan": t1 - t0, "forward": t2 - t1, "pool": t3 - t2}

    def counted(fn, *a):
        before = model.tokens_seen
        times = fn(*a)
        return times, model.tokens_seen - before

    model.encode(texts[:64], "document")  # load and warm up
    best: dict[str, dict[str, float]] = {}
    computed: dict[str, int] = {}
    runs = [("naive", run_naive, None)] + [(f"late, window overlap {p.window_overlap}", run_late, p)
                                           for p in late_params]
    for _ in range(rounds):
        for name, fn, p in runs:
            times, computed[name] = counted(fn, *([p] if p else []))
            if name not in best or times["total"] < best[name]["total"]:
                best[name] = times
    naive_s = best["naive"]["total"]
    print(f"\nmodel alone, {content:,} content tokens, best of {rounds}:\n")
    print("| configuration | s | plan s | forward s | pool s | tokens computed | × naive document tokens/s "
          "| × naive model tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, t in best.items():
        s = t["total"]
        stages = " | ".join(f"{t[k]:.2f}" if k in t else "" for k in ("plan", "forward", "pool"))
        ratio = (computed[name] / s) / (computed["naive"] / naive_s)
        print(f"| {name} | {s:.2f} | {stages} | {computed[name]:,} | {naive_s / s:.3f} | {ratio:.3f} |")


def length_costs(model, texts, naive: list[int], late: list[int], budget: int, rounds: int) -> None:
    """Forward-pass seconds per token by sequence length, and what each side's lengths predict."""
    ids = [t for s in model._tokenize(texts[:400], "", 0) for t in s[1:-1]]
    grid = [32, 64, 96, 128, 160, 192, 224, 256]
    cost = {}
    for length in grid:
        rows = max(1, budget // length)
        seqs = [model.wrap_ids(ids[i * (length - 2):(i + 1) * (length - 2)])[0] for i in range(rows * 4)]
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            model.encode_tokens(seqs, batch_tokens=budget)
            best = min(best, time.perf_counter() - t)
        cost[length] = best / (rows * 4 * length)
    print("\nforward pass, cost per token by sequence length (× the cost at 32):\n")
    print("| length | " + " | ".join(map(str, grid)) + " |")
    print("|---|" + "---:|" * len(grid))
    print("| µs per token | " + " | ".join(f"{cost[g] * 1e6:.0f}" for g in grid) + " |")
    print("| × at 32 | " + " | ".join(f"{cost[g] / cost[32]:.2f}" for g in grid) + " |")

    def predicted(lengths: list[int]) -> float:  # seconds per token of this length mix
        per_token = np.interp(lengths, grid, [cost[g] for g in grid])
        return float(np.dot(lengths, per_token) / sum(lengths))

    ratio = predicted(naive) / predicted(late)
    print(f"\nlengths alone predict late's model tokens/s at {ratio:.3f}× naive's "
          f"(naive {predicted(naive) * 1e6:.0f} µs, late {predicted(late) * 1e6:.0f} µs per token)")


def processes(chunks: Path, tmp: Path, dtypes: list[str], rounds: int, content: int,
              overlaps: list[int | None]) -> None:
    """Whole `embed --db` processes: naive, then late at each overlap (None: embed's default)."""
    configs: dict[str, tuple[str, ...]] = {}
    for d in dtypes:
        configs[f"embed --db --dtype {d}"] = ("--dtype", d)
        for o in overlaps:
            given = () if o is None else ("--window-overlap", str(o))
            label = " ".join(("embed --late", *given, f"--db --dtype {d}"))
            configs[label] = ("--late", *given, "--dtype", d)
    best: dict[str, tuple[float, float]] = {}
    for r in range(rounds):
        for k, (label, flags) in enumerate(configs.items()):
            db = tmp / f"db-{r}-{k}"
            run = run_procs(cli("embed", str(chunks), *flags, "--db", str(db)))
            shutil.rmtree(db)
            old = best.get(label, (float("inf"), float("inf")))
            best[label] = (min(old[0], run.wall), min(old[1], run.cpu))
    print(f"\nwhole processes, best of {rounds} (load average now {os.getloadavg()[0]:.1f}):\n")
    print("| process | wall s | CPU s | document tokens/s | late ÷ naive (wall) | late ÷ naive (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, (wall, cpu) in best.items():
        naive = best[f"embed --db --dtype {label.rsplit(' ', 1)[1]}"]
        ratio = f"{naive[0] / wall:.3f} | {naive[1] / cpu:.3f}" if "--late" in label else " | "
        print(f"| `{label}` | {wall:.2f} | {cpu:.2f} | {content / wall:,.0f} | {ratio} |")


def quality(model, docs, texts, overlaps: list[int], reference: int) -> None:
    """What an overlap buys: each chunk's late vector at each overlap against the same chunk's
    vector at ``reference`` (a large overlap: every token gets at least reference/2 tokens of
    context on a cut side), and naive's vector for scale. Vectors do not depend on load."""
    from arrowsmith.commands.embed import plan_late, resolve_params

    def late_vectors(overlap: int) -> tuple[np.ndarray, int]:
        params = resolve_params(model, late=True, window_overlap=overlap)
        plans = [plan_late(model, t, spans, params) for t, spans in docs]
        outs = model.encode_tokens([s for p in plans for s in p.sequences])
        vecs, k = [], 0
        for p in plans:
            vecs.append(p.pool(outs[k:k + len(p.sequences)], False))
            k += len(p.sequences)
        return unit(np.concatenate(vecs)), sum(len(s) for p in plans for s in p.sequences)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    ref, ref_tokens = late_vectors(reference)
    rows = [(f"late, overlap {o}", *late_vectors(o)) for o in overlaps]
    rows.append(("naive (for scale)", unit(model.encode(texts, "document")), 0))
    print(f"\nquality: each chunk's vector against late at overlap {reference} ({ref_tokens:,} tokens "
          f"computed), {len(ref):,} chunks, dtype {model.dtype}:\n")
    print("| vectors | tokens computed | mean cosine | 1st percentile | min | chunks < 0.99 "
          "| chunks < 0.95 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, vecs, tokens in rows:
        cos = np.sum(vecs * ref, axis=1)
        print(f"| {name} | {tokens:,} | {cos.mean():.4f} | {np.percentile(cos, 1):.4f} | {cos.min():.4f} | "
              f"{np.mean(cos < 0.99):.1%} | {np.mean(cos < 0.95):.1%} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", choices=("cranfield", "rst"), default="cranfield")
    ap.add_argument("--docs", type=int, default=600, help="cranfield: the first N abstracts")
    ap.add_argument("--max-tokens", type=int, default=128, help="cranfield: chunk --max-tokens")
    ap.add_argument("--chunks", type=Path, help="any `arrowsmith chunk` output instead of a corpus")
    ap.add_argument("--files", type=int, help="rst: the first N listed files (default: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--overlaps", default="", help="window overlaps to time (default: embed's default only)")
    ap.add_argument("--dtypes", default="fp32", help="comma-separated, e.g. fp32,auto")
    ap.add_argument("--batch-tokens", type=int, default=2048, help="the budget the shape table assumes")
    ap.add_argument("--no-model-alone", action="store_true")
    ap.add_argument("--lengths", action="store_true", help="forward cost per token by sequence length")
    ap.add_argument("--processes", action="store_true", help="whole `embed --db` processes too")
    ap.add_argument("--quality", type=int, metavar="REFERENCE", help="each overlap's chunk vectors "
                    "against those at overlap REFERENCE (e.g. 190: 3/4 of a 254-token window's text)")
    ap.add_argument("--select-rst", action="store_true", help=f"re-make {RST_LIST.name} and stop")
    args = ap.parse_args()
    if args.select_rst:
        files = select_rst()
        RST_LIST.write_text("\n".join(files) + "\n")
        print(f"{len(files)} files, {sum(os.path.getsize(f) for f in files):,} bytes -> {RST_LIST}")
        return

    from arrowsmith.commands.embed import resolve_params
    from arrowsmith.plugins.registry import load_model
    from arrowsmith.plugins.sentence_transformers import cpu_has_native_bf16

    dtypes = args.dtypes.split(",")
    with tempfile.TemporaryDirectory(prefix="arrowsmith-bench-late-") as d:
        tmp = Path(d)
        chunks = chunked_input(args, tmp)
        with pa.ipc.open_stream(str(chunks)) as r:
            rows = r.read_all().to_pylist()
        docs = [(r["text"], [(c["start"], c["end"]) for c in r["chunks"]]) for r in rows]
        texts = [t[s:e] for t, spans in docs for s, e in spans]
        content = sum(c["n_tokens"] for r in rows for c in r["chunks"])
        chars = sum(len(t) for t, _ in docs)
        print(f"{args.chunks or args.corpus}: {len(rows)} documents, {chars:,} characters, "
              f"{len(texts):,} chunks, {content:,} content tokens; native bf16: {cpu_has_native_bf16()}, "
              f"load average {os.getloadavg()[0]:.1f}")
        overlaps = [int(o) for o in args.overlaps.split(",") if o] or [None]
        for k, dtype in enumerate(dtypes):
            model = load_model(None, device="cpu", dtype=dtype)
            late_params = [resolve_params(model, late=True, window_overlap=o) for o in overlaps]
            if k == 0:  # the same for every dtype
                naive, late = shape(model, docs, texts, late_params[0], args.batch_tokens,
                                    [o for o in overlaps if o is not None] or [31, 0])
            print(f"\n## --dtype {dtype} ({model.dtype})")
            if not args.no_model_alone:
                model_alone(model, docs, texts, late_params, args.rounds, content)
            if args.lengths:
                length_costs(model, texts, naive, late, args.batch_tokens, args.rounds)
            sys.stdout.flush()
            if args.quality is not None and k == 0:
                quality(model, docs, texts, [o for o in overlaps if o is not None] or
                        [late_params[0].window_overlap], args.quality)
                sys.stdout.flush()
        if args.processes:
            processes(chunks, tmp, dtypes, args.rounds, content, overlaps)


if __name__ == "__main__":
    main()
