"""Hard negatives (``tune --hard-negatives N``), mined with the base model.

For each distinct query, the passages the base model ranks highest that are not one of the
query's positives become its negatives — the passages in-batch negatives rarely show the model
(Karpukhin et al. 2020; Xiong et al. 2021). The search runs in an arrowsmith store: ``--db`` as
it is, or a temporary one built from the candidates with embed's own code (one vector per
passage, cut at the model's window as ``eval``'s ``none`` chunker does).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arrowsmith.commands.errors import UsageError

from .pairs import Pair, PairSet

log = logging.getLogger("arrowsmith.tune")
SEARCH_BATCH = 256  # queries per search call: bounds the hit table's memory


def mine_hard_negatives(pair_set: PairSet, model: Any, n: int, *,
                        progress: Callable[[str], None] | None = None) -> int:
    """Append ``n`` mined negatives to every pair, in place; returns the candidate passages searched."""
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
            progress(f"tune: mining {n} hard negatives per query among {n_candidates:,} passages")
        by_query = _group(pair_set.pairs)
        mined = _search(db, table, model, by_query, n, texts, pair_set.doc_of, n_candidates)
    for query, pairs in by_query.items():
        for p in pairs:
            p.negatives = p.negatives + mined[query]
    return n_candidates


def _group(pairs: list[Pair]) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = {}
    for p in pairs:
        out.setdefault(p.query, []).append(p)
    return out


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


def _search(db: str, table: str, model: Any, by_query: dict[str, list[Pair]], n: int, texts: dict[str, str],
            doc_of: dict[str, str], n_candidates: int) -> dict[str, list[str]]:
    from arrowsmith.commands.query import search

    queries = list(by_query)
    out: dict[str, list[str]] = {}
    for start in range(0, len(queries), SEARCH_BATCH):
        part = queries[start:start + SEARCH_BATCH]
        pending = list(range(len(part)))
        k = n
        while pending:
            k = min(n_candidates, k + max(len(by_query[part[i]]) for i in pending) + 8)
            hits = search(db, [(str(i), part[i]) for i in pending], table=table, k=k, exact=True, model=model,
                          by="doc")
            found = _negatives(hits, part, by_query, n, texts, doc_of)
            short = []
            for i in pending:
                if len(found.get(i, [])) >= n or k >= n_candidates:
                    out[part[i]] = found.get(i, [])[:n]
                else:
                    short.append(i)
            pending, k = short, k * 2
    missing = [q for q, negs in out.items() if len(negs) < n]
    if missing:
        raise UsageError(f"--hard-negatives {n}: only {len(out[missing[0]])} passages besides the positives "
                         f"for query {missing[0][:60]!r}")
    return out


def _negatives(hits, part: list[str], by_query: dict[str, list[Pair]], n: int, texts: dict[str, str],
               doc_of: dict[str, str]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    seen: dict[int, set[str]] = {}
    columns = [hits.column(c).to_pylist() for c in ("query_id", "doc_id", "text")]
    for qi, doc_id, chunk_text in zip(*columns, strict=True):
        i = int(qi)
        pairs = by_query[part[i]]
        text = texts.get(doc_id, chunk_text)
        source_doc = doc_of.get(doc_id, doc_id)
        positives_ids = {p.positive_id for p in pairs if p.positive_id is not None}
        positive_texts = {p.positive for p in pairs}
        if source_doc in positives_ids or doc_id in positives_ids or text in positive_texts:
            continue
        if text in seen.setdefault(i, set()):
            continue
        seen[i].add(text)
        found.setdefault(i, []).append(text)
    return found
