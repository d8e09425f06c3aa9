"""Hard negatives (``tune --hard-negatives N``), mined with the base model, positive-aware.

For each (query, positive) pair, the passages the base model ranks highest for the query that
are not a judged positive of that query *and* score below :data:`MAX_RELATIVE_SCORE` (0.95) of
that pair's positive become its negatives — the passages in-batch negatives rarely show the
model (Karpukhin et al. 2020; Xiong et al. 2021). The score ceiling is NV-Retriever's
TopK-PercPos (Moreira et al. 2024; sentence-transformers' ``relative_margin=0.05``): the top
unjudged passages of an incompletely judged collection are often relevant, and training on them
as negatives pushes relevant passages away (on Cranfield, unfiltered mining lost 0.037 nDCG@10
where tuning without negatives gained 0.017; docs/tune.md). The ceiling is per pair: a pair with a
weak positive gets weaker negatives. The positive's score is the cosine of the query's vector
(as ``query`` embeds it for the store) and the positive's text embedded as the store embeds
passages, with the same model.

The search runs in an arrowsmith store: ``--db`` as it is, or a temporary one built from the
candidates with embed's own code (one vector per passage, cut at the model's window as
``eval``'s ``none`` chunker does). It goes deeper (doubling, exact search) until every pair has
``N`` negatives, at most :data:`MAX_DEPTH` passages. A pair short of ``N`` at that depth repeats
its negatives to fill ``N`` (training needs the same count per pair); a pair with none is left
out. Both counts become a note (logged and on the model card), never silent.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arrowsmith.commands.errors import UsageError
from arrowsmith.commands.spaces import dense

from .pairs import Pair, PairSet

log = logging.getLogger("arrowsmith.tune")
MAX_RELATIVE_SCORE = 0.95  # a negative scores below 0.95 x its pair's positive (TopK-PercPos)
MAX_DEPTH = 4096  # passages searched per query at most, when the positives are weak
HIT_ROWS = 1 << 17  # hit rows per search call (queries x depth): bounds the hit table's memory


@dataclass
class _Query:
    text: str
    pairs: list[Pair]
    ceilings: list[float]  # per pair: a negative's score must be below this


def score_ceiling(positive_score: float) -> float:
    """The score a negative must stay below: 0.95 x the positive's (sign-safe, as ST's relative_margin)."""
    return positive_score - (1.0 - MAX_RELATIVE_SCORE) * abs(positive_score)


def mine_hard_negatives(pair_set: PairSet, model: Any, n: int, *,
                        progress: Callable[[str], None] | None = None) -> int:
    """Append ``n`` mined negatives to every pair, in place; returns the candidate passages searched.

    Pairs short of ``n`` are filled or left out, with a note in ``pair_set.notes`` (module docstring).
    """
    if n <= 0:
        return 0
    candidates = pair_set.candidates
    if candidates is None:
        raise UsageError("--hard-negatives: this source has no passages to mine from")
    with tempfile.TemporaryDirectory(prefix="arrowsmith-tune-mine-") as tmp:
        if candidates.db is not None:
            db, table = candidates.db, candidates.table
            _check_store_model(db, table, model)
            texts: dict[str, str] = {}
        else:
            db, table = str(Path(tmp) / "store"), "chunks"
            texts = _build_store(candidates.batches, model, db)
        n_candidates = _count(db, table)
        if n_candidates <= n:
            raise UsageError(f"--hard-negatives {n}: only {n_candidates} passages to mine from")
        if progress:
            progress(f"tune: mining {n} hard negatives per pair among {n_candidates:,} passages "
                     f"(each scoring below {MAX_RELATIVE_SCORE:g} x its pair's positive)")
        queries, vectors = _queries(db, table, model, pair_set.pairs)
        depth = min(n_candidates, MAX_DEPTH)
        mined = _search(db, table, model, queries, vectors, n, texts, pair_set.doc_of, pair_set.judged, depth)
    _apply(pair_set, queries, mined, n, depth)
    return n_candidates


def _queries(db: str, table: str, model: Any, pairs: list[Pair]) -> tuple[list[_Query], np.ndarray]:
    """Distinct queries (first-seen order), their vectors, and each pair's score ceiling."""
    from arrowsmith.commands.query_vectors import embed_queries
    from arrowsmith.commands.store import model_of, open_table, table_meta

    meta = model_of(table_meta(open_table(db, table)))
    prompt = meta.get("query_prompt") if isinstance(meta.get("query_prompt"), str) else None
    dim = meta.get("dim")
    grouped: dict[str, list[Pair]] = {}
    for p in pairs:
        grouped.setdefault(p.query, []).append(p)
    texts = list(grouped)
    qv = _unit(embed_queries(texts, model, prompt=prompt, dim=dim))
    pos_texts = list(dict.fromkeys(p.positive for p in pairs))
    pv = _unit(_passage_vectors(pos_texts, model, meta.get("prompt"), dim))
    row = {t: i for i, t in enumerate(pos_texts)}
    queries = []
    for qi, text in enumerate(texts):
        group = grouped[text]
        scores = pv[[row[p.positive] for p in group]] @ qv[qi]
        queries.append(_Query(text, group, [score_ceiling(float(s)) for s in scores]))
    return queries, qv


def _passage_vectors(texts: list[str], model: Any, prompt: str | None, dim: int | None) -> np.ndarray:
    """Vectors of ``texts`` exactly as the temporary store embeds passages (cut at the window)."""
    import pyarrow as pa

    from arrowsmith.commands.embed import embed_batches
    from arrowsmith.commands.evaluate.runner import whole_document_chunks

    ids = [f"p{i}" for i in range(len(texts))]
    batch = pa.RecordBatch.from_pydict({"id": ids, "text": texts})
    found: dict[str, np.ndarray] = {}
    for b in embed_batches(whole_document_chunks([batch], model), model, prompt=prompt, dim=dim):
        found.update(zip(b.column("doc_id").to_pylist(), dense.decode(b.column(dense.COLUMN)), strict=True))
    return np.stack([found[i] for i in ids])


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms > 0, norms, 1.0)


def _check_store_model(db: str, table: str, model: Any) -> None:
    """Mining searches the store's vectors: they must be the base model's."""
    from arrowsmith.commands.store import model_identity, model_of, open_table, table_meta

    stored = model_identity(model_of(table_meta(open_table(db, table))))
    if stored.get("revision") and stored.get("revision") != model.revision:
        raise UsageError(f"--hard-negatives: {db}/{table} was embedded with {stored.get('name')} "
                         f"({str(stored.get('revision'))[:12]}), not the base model {model.name}",
                         hint="--model to tune the store's model, or drop --db to mine in a temporary store")


def _build_store(batches: Callable, model: Any, db: str) -> dict[str, str]:
    """Embed the candidates into a temporary store; returns id → full text."""
    from arrowsmith.commands.embed import embed_batches
    from arrowsmith.commands.evaluate.runner import whole_document_chunks
    from arrowsmith.commands.store import StoreWriter

    texts: dict[str, str] = {}

    def remember():
        for b in batches():
            texts.update(zip(b.column("id").to_pylist(), b.column("text").to_pylist(), strict=True))
            yield b.select(["id", "text"])

    with StoreWriter(db, "chunks", checkpoint_rows=1 << 30) as writer:
        writer.check_meta(model.describe())
        writer.write(embed_batches(whole_document_chunks(remember(), model), model))
    return texts


def _count(db: str, table: str) -> int:
    from arrowsmith.commands.store import open_table

    return open_table(db, table).count_rows()


def _search(db: str, table: str, model: Any, queries: list[_Query], vectors: np.ndarray, n: int,
            texts: dict[str, str], doc_of: dict[str, str], judged: dict[str, set[str]],
            max_depth: int) -> list[list[list[str]]]:
    """Per query, per pair: up to ``n`` negatives, searching deeper until each pair has ``n``."""
    from arrowsmith.commands.query import search

    out: list[list[list[str]]] = [[] for _ in queries]
    pending = list(range(len(queries)))
    k = min(max_depth, n + max(len(q.pairs) for q in queries) + 8)
    while pending:
        short = []
        step = max(1, HIT_ROWS // k)
        for start in range(0, len(pending), step):
            part = pending[start:start + step]
            hits = search(db, [(str(i), queries[i].text) for i in part], table=table, k=k, exact=True,
                          model=model, by="doc", query_vectors=vectors[part].astype(np.float32))
            ranked = _ranked(hits)
            for i in part:
                out[i] = _negatives(ranked.get(str(i), []), queries[i], n, texts, doc_of,
                                    judged.get(queries[i].text, set()))
                if k < max_depth and any(len(negs) < n for negs in out[i]):
                    short.append(i)
        pending, k = short, min(max_depth, k * 4)
    return out


def _ranked(hits) -> dict[str, list[tuple[str, str, float]]]:
    """query id → its hits best first: (passage id, text, score)."""
    out: dict[str, list[tuple[str, str, float]]] = {}
    columns = [hits.column(c).to_pylist() for c in ("query_id", "doc_id", "text", "score")]
    for qi, doc_id, text, score in zip(*columns, strict=True):
        out.setdefault(qi, []).append((doc_id, text, score))
    return out


def _negatives(ranked: list[tuple[str, str, float]], query: _Query, n: int, texts: dict[str, str],
               doc_of: dict[str, str], judged: set[str]) -> list[list[str]]:
    """Each pair's first ``n`` hits that are no positive (nor judged relevant) of the query and
    score below its ceiling."""
    positive_ids = {p.positive_id for p in query.pairs if p.positive_id is not None} | judged
    positive_texts = {p.positive for p in query.pairs}
    seen: set[str] = set()
    usable: list[tuple[str, float]] = []  # distinct non-positive passages, best first
    for doc_id, chunk_text, score in ranked:
        text = texts.get(doc_id, chunk_text)
        if doc_of.get(doc_id, doc_id) in positive_ids or doc_id in positive_ids or text in positive_texts:
            continue
        if text not in seen:
            seen.add(text)
            usable.append((text, score))
    return [[t for t, s in usable if s < ceiling][:n] for ceiling in query.ceilings]


def _apply(pair_set: PairSet, queries: list[_Query], mined: list[list[list[str]]], n: int,
           depth: int) -> None:
    """Add the negatives; fill or leave out the pairs short of ``n``, and say how many."""
    keep: set[int] = set()
    filled = 0
    for query, per_pair in zip(queries, mined, strict=True):
        for pair, negs in zip(query.pairs, per_pair, strict=True):
            if not negs:
                continue
            if len(negs) < n:
                filled += 1
                negs = [negs[j % len(negs)] for j in range(n)]
            pair.negatives = pair.negatives + negs
            keep.add(id(pair))
    total = len(pair_set.pairs)
    dropped = total - len(keep)
    if dropped == total:
        raise UsageError(f"--hard-negatives {n}: no pair has a passage scoring below "
                         f"{MAX_RELATIVE_SCORE:g} x its positive within the top {depth:,}")
    if filled or dropped:
        pair_set.pairs = [p for p in pair_set.pairs if id(p) in keep]
        note = (f"--hard-negatives {n}: {filled + dropped:,} of {total:,} pairs had fewer than {n} passages "
                f"scoring below {MAX_RELATIVE_SCORE:g} x their positive within the top {depth:,}")
        parts = []
        if filled:
            parts.append(f"{filled:,} repeat theirs to make {n}")
        if dropped:
            parts.append(f"{dropped:,} with none are left out of training")
        pair_set.notes.append(f"{note} ({'; '.join(parts)})")
