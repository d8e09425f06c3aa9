"""Token-vector codecs compared on identical vectors (issue 19: ≥ 99% of float32's nDCG@10 at
≤ 128 bytes a token).

    .venv/bin/python benchmarks/token_codecs.py [--cache /tmp/arrowsmith-token-cache] [--only a,b]

The float32 content-token vectors of both collections are computed once with the packaged model
(fp32) and cached as .npy: Cranfield (1,400 abstracts, one chunk a document, cut at the model's
window; 225 queries) and the LIMIT-style set of ``benchmarks/maxsim.py --write-limit``. Each codec
encodes the documents' tokens and decodes them back to floats; queries stay float32 (what `query`
does: a query token is never stored). MaxSim over the whole collection (``multi.maxsim``, the
product's), nDCG@10 with `eval`'s metric, and the % of float32's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from embed import CORPUS

from arrowsmith.commands.spaces import multi

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------ the vectors, once


def _encode(model, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from arrowsmith.plugins.base import content_token_vectors

    seqs, spans = [], []
    for text in texts:
        ids = model.token_ids(text)[0][:model.max_tokens - 2]
        seq, first = model.wrap_ids(ids)
        seqs.append(seq)
        spans.append((first, len(ids)))
    vecs = content_token_vectors(model.encode_tokens(seqs), spans)
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in vecs])]).astype(np.int64)
    return np.concatenate(vecs).astype(np.float32), offsets


def collection(name: str, cache: Path) -> dict:
    """doc tokens/offsets/ids, query tokens/offsets/ids and qrels of one collection, cached."""
    from arrowsmith.commands.evaluate.data import read_qrels

    root = cache / name
    if not (root / "docs.npy").exists():
        from arrowsmith.commands.synthetic import likes_collection, write_beir
        from arrowsmith.plugins.registry import load_model

        src = CORPUS.parent if name == "cranfield" else root / "beir"
        if name == "limit":
            write_beir(src, *likes_collection(people=25, distractors=2000))
        docs = [json.loads(line) for line in open(src / "corpus.jsonl")]
        queries = [json.loads(line) for line in open(src / "queries.jsonl")]
        judged = read_qrels(src / "qrels" / "test.tsv")
        queries = [q for q in queries if q["_id"] in judged]
        model = load_model(None, device="cpu", dtype="fp32")
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        d, doff = _encode(model, [x["text"] for x in docs])
        q, qoff = _encode(model, [x["text"] for x in queries])
        print(f"{name}: encoded {len(d):,} document tokens in {time.perf_counter() - t0:.0f} s")
        np.save(root / "docs.npy", d)
        np.save(root / "doc_offsets.npy", doff)
        np.save(root / "queries.npy", q)
        np.save(root / "query_offsets.npy", qoff)
        (root / "ids.json").write_text(json.dumps({"docs": [x["_id"] for x in docs],
                                                   "queries": [x["_id"] for x in queries],
                                                   "qrels": str(src / "qrels" / "test.tsv")}))
    ids = json.loads((root / "ids.json").read_text())
    return {"docs": np.load(root / "docs.npy"), "doc_offsets": np.load(root / "doc_offsets.npy"),
            "queries": np.load(root / "queries.npy"), "query_offsets": np.load(root / "query_offsets.npy"),
            "doc_ids": ids["docs"], "query_ids": ids["queries"], "qrels": read_qrels(ids["qrels"])}


def ndcg10(c: dict, docs: np.ndarray, offsets: np.ndarray | None = None) -> float:
    from arrowsmith.commands.evaluate.metrics import evaluate_run

    offsets = c["doc_offsets"] if offsets is None else offsets
    qo = c["query_offsets"]
    run = {}
    for i, qid in enumerate(c["query_ids"]):
        s = multi.maxsim([c["queries"][qo[i]:qo[i + 1]]], docs, offsets)[0]
        top = np.argsort(-s)[:100]
        run[qid] = {c["doc_ids"][j]: float(s[j]) for j in top}
    scores = evaluate_run(c["qrels"], run, ks=[10], metrics=["ndcg"])
    return next(iter(scores.mean().values()))


# ------------------------------------------------------------------ codecs: encode → decode


def product(precision: str):
    def run(x: np.ndarray, fit: np.ndarray) -> tuple[np.ndarray, float]:
        s = multi.TokenSettings(x.shape[1], precision)
        col = multi.column([x], s)
        return multi.decode(col, s)[0], s.bytes_per_token
    return run


def pca(fit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    return mean, vt[:k]  # [k, dim]


def pca_int4_token_scale(k: int):
    """PCA to k dims, then the product's int4 (a float16 scale a token, 16 levels)."""
    def run(x, fit):
        mean, p = pca(fit, k)
        y = (x - mean) @ p.T
        s = multi.TokenSettings(k, "int4")
        y_hat = multi.decode(multi.column([y.astype(np.float32)], s), s)[0]
        return y_hat @ p + mean, s.bytes_per_token
    return run


def lloyd_levels(v: np.ndarray, levels: int, iters: int = 25) -> np.ndarray:
    """1-D k-means (Lloyd-Max) levels of one dimension's sample."""
    c = np.quantile(v, (np.arange(levels) + 0.5) / levels)
    for _ in range(iters):
        edges = (c[1:] + c[:-1]) / 2
        idx = np.searchsorted(edges, v)
        sums = np.bincount(idx, v, levels)
        counts = np.bincount(idx, minlength=levels)
        c = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        c.sort()
    return c


def pca_per_dim(k: int, bits: int, lloyd: bool):
    """PCA to k dims, then per dimension 2**bits levels fitted on the sample (no per-token scale):
    uniform over ±3.5 σ, or Lloyd-Max levels."""
    def run(x, fit):
        mean, p = pca(fit, k)
        yf = (fit - mean) @ p.T
        y = (x - mean) @ p.T
        levels = 2 ** bits
        out = np.empty_like(y)
        for j in range(k):
            if lloyd:
                c = lloyd_levels(yf[:, j], levels)
            else:
                sd = yf[:, j].std()
                c = np.linspace(-1, 1, levels) * 2.5 * sd
            idx = np.searchsorted((c[1:] + c[:-1]) / 2, y[:, j])
            out[:, j] = c[idx]
        return out @ p + mean, k * bits / 8
    return run


def residual(n_centroids: int, bits: int, k: int | None = None):
    """ColBERTv2: nearest of ``n_centroids`` k-means centroids (fitted on the sample), then each
    dimension's residual in 2**bits buckets (cut-offs and values from the sample's quantiles).
    With ``k``, on PCA-k coordinates."""
    def run(x, fit):
        from sklearn.cluster import MiniBatchKMeans

        if k:
            mean, p = pca(fit, k)
            fit_, x_ = (fit - mean) @ p.T, (x - mean) @ p.T
        else:
            fit_, x_ = fit, x
        km = MiniBatchKMeans(n_centroids, batch_size=8192, n_init=1, random_state=0, max_iter=20).fit(fit_)
        cent = km.cluster_centers_.astype(np.float32)
        half_norms = (cent * cent).sum(axis=1) / 2

        def nearest(v):  # argmin |v - c|² = argmax v·c - |c|²/2, one BLAS product
            return np.argmax(v.astype(np.float32) @ cent.T - half_norms, axis=1)

        r_fit = fit_ - cent[nearest(fit_)]
        levels = 2 ** bits
        qs = np.quantile(r_fit, (np.arange(levels) + 0.5) / levels, axis=0)  # [levels, dims] values
        cuts = (qs[1:] + qs[:-1]) / 2
        out = np.empty_like(x_)
        for start in range(0, len(x_), 65536):
            xb = x_[start:start + 65536]
            c = nearest(xb)
            r = xb - cent[c]
            idx = (r[None, :, :] > cuts[:, None, :]).sum(axis=0)
            out[start:start + 65536] = cent[c] + np.take_along_axis(qs, idx, axis=0)
        if k:
            out = out @ p + mean
        dims = k or x.shape[1]
        return out.astype(np.float32), dims * bits / 8 + (2 if n_centroids <= 65536 else 4)
    return run


def product_residual():
    """The product's fitted codec (``--token-precision residual``): fitted on the sample, as
    ``embed`` fits it on a table's first batch."""
    def run(x, fit):
        from arrowsmith.commands.spaces import codebook

        book = codebook.fit(fit)
        out = np.empty_like(x)
        for a in range(0, len(x), 65536):
            out[a:a + 65536] = book.decode(book.encode(x[a:a + 65536]))
        return out, codebook.HEAD_BYTES + x.shape[1] * codebook.BITS / 8
    return run


def allocate_bits(variances: np.ndarray, total_bits: int, max_bits: int = 8) -> np.ndarray:
    """Bits a dimension (reverse water-filling, greedily): each next bit to the dimension whose
    expected squared error, variance · 4^-bits, is largest now."""
    bits = np.zeros(len(variances), np.int64)
    err = variances.astype(np.float64).copy()
    for _ in range(total_bits):
        j = int(np.argmax(np.where(bits < max_bits, err, -1)))
        bits[j] += 1
        err[j] /= 4
    return bits


def pca_allocated(nbytes: int, rotate: bool = True):
    """A full PCA rotation (no dimension dropped before allocation), then Lloyd-Max levels per
    dimension with bits allocated by variance: the transform coder's answer to a bit budget.
    Without ``rotate``, the same on the model's own dimensions (parameters: levels only)."""
    def run(x, fit):
        mean, p = pca(fit, x.shape[1]) if rotate else (np.zeros(x.shape[1], np.float32),
                                                        np.eye(x.shape[1], dtype=np.float32))
        yf = (fit - mean) @ p.T
        y = (x - mean) @ p.T
        bits = allocate_bits(yf.var(axis=0), nbytes * 8)
        out = np.zeros_like(y)
        for j in np.flatnonzero(bits):
            c = lloyd_levels(yf[:, j], 2 ** int(bits[j]))
            out[:, j] = c[np.searchsorted((c[1:] + c[:-1]) / 2, y[:, j])]
        return out @ p + mean, bits.sum() / 8
    return run


def int4_pooled(factor: float):
    """sentence-transformers' hierarchical token pooling (``--token-pool``), then int4; bytes
    counted per content token of the chunk (stored bytes over the tokens before pooling)."""
    def run(x, fit, offsets):
        pooled = multi.pool_tokens([x[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)], factor)
        s = multi.TokenSettings(x.shape[1], "int4", factor)
        flat, new_offsets = multi.decode(multi.column(pooled, s), s)
        return flat, s.bytes_per_token * len(flat) / len(x), new_offsets
    run.needs_offsets = True
    return run


CODECS = {
    "float32": product("float32"),
    "int4 (product default)": product("int4"),
    "binary": product("binary"),
    "pca252 + int4 token scale": pca_int4_token_scale(252),
    "pca256 + 4-bit Lloyd per dim": pca_per_dim(256, 4, lloyd=True),
    "pca rotation + bits by variance, 128 B": pca_allocated(128),
    "pca rotation + bits by variance, 96 B": pca_allocated(96),
    "no rotation, bits by variance, 128 B": pca_allocated(128, rotate=False),
    "pca384 (rotation) + 2-bit Lloyd per dim": pca_per_dim(384, 2, lloyd=True),
    "residual (product: commands/spaces/codebook.py)": product_residual(),
    "residual 4096 + 2-bit (ColBERTv2)": residual(4096, 2),
    "residual 4096 + 3-bit on pca320": residual(4096, 3, k=320),
    "int4, token pool 1.5": int4_pooled(1.5),
    "int4, token pool 2": int4_pooled(2.0),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/tmp/arrowsmith-token-cache"))
    ap.add_argument("--only", default="", help="comma list of codec names (substrings)")
    ap.add_argument("--fit", type=int, default=20_000, help="fit on the first N tokens (the first batch)")
    ap.add_argument("--sets", default="cranfield,limit")
    args = ap.parse_args()
    wanted = [w for w in args.only.split(",") if w]
    for name in args.sets.split(","):
        c = collection(name, args.cache)
        fit = c["docs"][:args.fit]
        base = None
        print(f"\n## {name}: {len(c['doc_ids']):,} documents, {len(c['docs']):,} tokens, "
              f"{len(c['query_ids'])} queries; fitted on the first {len(fit):,} tokens")
        print("| codec | bytes a token | nDCG@10 | % of float32 | seconds |")
        print("|---|---:|---:|---:|---:|")
        for label, codec in CODECS.items():
            if wanted and label != "float32" and not any(w in label for w in wanted):
                continue
            t0 = time.perf_counter()
            if getattr(codec, "needs_offsets", False):
                decoded, nbytes, offsets = codec(c["docs"], fit, c["doc_offsets"])
            else:
                (decoded, nbytes), offsets = codec(c["docs"], fit), None
            score = ndcg10(c, decoded.astype(np.float32), offsets)
            base = score if label == "float32" else base
            print(f"| {label} | {nbytes:.0f} | {score:.4f} | {100 * score / base:.1f}% | "
                  f"{time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
