"""Chunking throughput: chunks/s and MB/s per strategy and tokenizer, on a generated corpus.

    .venv/bin/python benchmarks/chunk.py            # 20 MB, seed 0
    .venv/bin/python benchmarks/chunk.py --mb 5     # quicker

Side by side in one run, for each tokenizer: tokenizing the corpus alone (the
floor: chunking tokenizes every document once and every chunk once more to
verify it), then the ``tokens`` and ``sentences`` strategies end to end through
``chunk_documents`` (batching, planning, verification, Arrow output).
"""

from __future__ import annotations

import argparse
import platform
import random
import time

import pyarrow as pa

from arrowsmith.commands.chunk import ChunkStats, chunk_documents, load_tokenizer

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but "
         "have an they you were her she there been one all we their has would when if so no will what "
         "light scattering atmosphere molecule wavelength tide moon gravity magma pressure starter dough "
         "commit branch merge glacier protein enzyme neutron photon algorithm latency throughput").split()
CJK = "大気中の分子は青い光をより強く散乱するので空は青く見えます。"


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 28))]
    if rng.random() < 0.05:
        words.insert(rng.randrange(len(words)), f"https://example.org/{rng.randrange(10**6)}/page?id={rng.randrange(999)}")
    if rng.random() < 0.05:
        words.append(str(rng.randrange(10**6)))
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])


def document(rng: random.Random, size: int) -> str:
    parts: list[str] = []
    n = 0
    markdown = rng.random() < 0.4
    while n < size:
        if markdown and rng.random() < 0.15:
            block = "#" * rng.randint(1, 3) + " " + sentence(rng).rstrip(".?!")
        elif rng.random() < 0.03:
            block = CJK * rng.randint(1, 5)
        else:
            block = " ".join(sentence(rng) for _ in range(rng.randint(2, 8)))
        parts.append(block)
        n += len(block) + 2
    return "\n\n".join(parts)


def corpus(mb: float, seed: int) -> list[pa.RecordBatch]:
    rng = random.Random(seed)
    ids, texts, total = [], [], 0
    while total < mb * 1e6:
        # mostly small documents, a few long ones (log-uniform 500 B .. 200 kB)
        text = document(rng, int(10 ** rng.uniform(2.7, 5.3)))
        ids.append(f"doc{len(ids):06d}")
        texts.append(text)
        total += len(text.encode())
    return [pa.RecordBatch.from_pydict({"id": ids[i:i + 256], "text": texts[i:i + 256]})
            for i in range(0, len(ids), 256)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizers", default="model:all-MiniLM-L6-v2,cl100k_base")
    args = ap.parse_args()
    batches = corpus(args.mb, args.seed)
    texts = [t for b in batches for t in b.column("text").to_pylist()]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus: {len(texts):,} documents, {mb:.1f} MB (seed {args.seed}); "
          f"python {platform.python_version()}")
    print(f"{'tokenizer':26} {'strategy':10} {'max':>4} {'seconds':>8} {'chunks':>8} {'chunks/s':>9} "
          f"{'MB/s':>6} {'x tokenize':>10}")
    for spec in args.tokenizers.split(","):
        tok = load_tokenizer(spec)
        start = time.perf_counter()
        for i in range(0, len(texts), 256):
            tok.batch_offsets(texts[i:i + 256])
        floor = time.perf_counter() - start
        print(f"{tok.name:26} {'(tokenize)':10} {'':>4} {floor:8.2f} {'':>8} {'':>9} {mb / floor:6.2f} "
              f"{1.0:10.2f}")
        for strategy in ("tokens", "sentences"):
            stats = ChunkStats()
            start = time.perf_counter()
            for _ in chunk_documents(batches, strategy=strategy, tokenizer=tok, stats=stats):
                pass
            secs = time.perf_counter() - start
            print(f"{tok.name:26} {strategy:10} {tok.default_max_tokens:4d} {secs:8.2f} {stats.chunks:8,d} "
                  f"{stats.chunks / secs:9,.0f} {mb / secs:6.2f} {secs / floor:10.2f}")


if __name__ == "__main__":
    main()
