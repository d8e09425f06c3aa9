"""Which pair source the options name, checked so that no option is silently ignored."""

from __future__ import annotations

from dataclasses import dataclass

from arrowsmith.commands.errors import UsageError

from .pairs import Candidates, PairSet, pairs_from_beir, pairs_from_table
from .unsupervised import corpus_sha, documents_from_store, documents_from_table, unsupervised_pairs


@dataclass
class SourceOptions:
    pairs: str | None = None
    data: str | None = None
    split: str | None = None  # default "train"
    unsupervised: bool = False
    corpus: str | None = None
    db: str | None = None
    table: str = "chunks"
    input_format: str | None = None
    query_col: str | None = None
    positive_col: str | None = None
    negative_col: str | None = None
    query_id_col: str | None = None
    id_col: str | None = None
    text_col: str | None = None
    title_col: str | None = None
    hard_negatives: int = 0
    min_grade: int | None = None  # --data: the lowest grade that makes a positive (default 1)


def check(o: SourceOptions) -> None:
    named = (("--pairs", o.pairs), ("--data", o.data), ("--unsupervised", o.unsupervised))
    chosen = [name for name, on in named if on]
    if len(chosen) != 1:
        raise UsageError("give one source of pairs: --pairs FILE, --data DIR, or --unsupervised"
                         + (f" (not {' and '.join(chosen)})" if chosen else ""),
                         hint="arrowsmith tune --data ../shared/data/cranfield --split train -o tuned/")
    misplaced = []
    if not o.pairs:
        misplaced += [f for f, v in (("--query-col", o.query_col), ("--positive-col", o.positive_col),
                                     ("--negative-col", o.negative_col), ("--query-id-col", o.query_id_col))
                      if v is not None]
    if not o.data:
        misplaced += [f for f, v in (("--split", o.split), ("--min-grade", o.min_grade)) if v is not None]
    if not o.unsupervised:
        misplaced += [f for f, v in (("--corpus", o.corpus), ("--id-col", o.id_col),
                                     ("--text-col", o.text_col), ("--title-col", o.title_col))
                      if v is not None]
        if o.db and not o.hard_negatives:
            misplaced.append("--db")
    if o.input_format and not (o.pairs or o.corpus):
        misplaced.append("--input-format")
    if misplaced:
        why = " (--db serves --unsupervised or --hard-negatives)" if "--db" in misplaced else ""
        raise UsageError(f"{', '.join(misplaced)}: not used with {chosen[0]}{why}")
    if o.unsupervised and bool(o.corpus) == bool(o.db):
        raise UsageError("--unsupervised needs one of --corpus FILE or --db STORE")
    if o.unsupervised and o.db and o.text_col is not None:
        raise UsageError("--text-col: a store's chunks are always its 'text' column")


def load_pair_set(o: SourceOptions, *, model, max_seq_tokens: int, seed: int) -> PairSet:
    """The pairs the options name (``model``: the base model, whose tokenizer sizes passages)."""
    from arrowsmith.commands.io import read_many

    check(o)
    if o.pairs:
        ps = pairs_from_table(read_many([o.pairs], o.input_format), source=o.pairs, path=o.pairs,
                              query_col=o.query_col, positive_col=o.positive_col, negative_col=o.negative_col,
                              query_id_col=o.query_id_col)
    elif o.data:
        ps = pairs_from_beir(o.data, o.split or "train", min_grade=1 if o.min_grade is None else o.min_grade)
    else:
        counts = model.tokenizer.count_tokens
        window = max_seq_tokens - model.num_special_tokens
        if o.db:
            docs, sha = documents_from_store(o.db, o.table)
            ps = unsupervised_pairs(docs, source=f"store {o.db} table {o.table}", sha256=sha,
                                    token_counts=counts, max_tokens=window, seed=seed, db=o.db, table=o.table)
        else:
            docs = documents_from_table(read_many([o.corpus], o.input_format), source=o.corpus,
                                        id_col=o.id_col, text_col=o.text_col or "text", title_col=o.title_col)
            ps = unsupervised_pairs(docs, source=f"corpus {o.corpus} (unsupervised)",
                                    sha256=corpus_sha(o.corpus), token_counts=counts, max_tokens=window,
                                    seed=seed)
    if o.db and o.hard_negatives and not o.unsupervised:
        ps.candidates = Candidates(db=o.db, table=o.table)
        ps.doc_of = {}
    return ps
