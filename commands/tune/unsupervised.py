"""Pairs made from the corpus alone (``tune --unsupervised``).

Two kinds of pair, both standard self-supervision for dense retrievers:

- **sentence → rest of its passage** (the Inverse Cloze Task, Lee et al. 2019): the corpus is cut
  into passages of whole sentences that fit the training window; from each passage of two or more
  sentences one sentence (of at least ``MIN_QUERY_WORDS`` words) becomes the query and the passage
  without it the positive;
- **title or heading → its body**: a document's title column (BEIR's ``title``) and each Markdown
  heading give a query whose positive is the text under it.

Which sentence is drawn depends only on ``seed``, the document id and the passage's index, so
the pairs are the same whatever the batching or the order of the input (a store is read sorted
by id).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from arrowsmith.commands.chunk.strategies import markdown_sections, sentences
from arrowsmith.commands.errors import DataError

from .pairs import Candidates, Pair, PairSet, _id_text_batches, _source_of, _text_column, row_location

MIN_QUERY_WORDS = 4
MIN_BODY_WORDS = 8
_SPACES = re.compile(r"\s+")


@dataclass
class Document:
    id: str
    text: str
    title: str | None = None
    chunk: str | None = None  # a store row's chunk id: the row is one passage


def documents_from_table(batches: Iterable[pa.RecordBatch], *, source: str, id_col: str | None = None,
                         text_col: str = "text", title_col: str | None = None) -> Iterator[Document]:
    """Documents (or chunks) of any table: ``--id-col`` (default ``id``, else ``_id``, else the row
    number), ``--text-col`` and an optional ``--title-col`` (default ``title`` when present)."""
    row = 0
    for batch in batches:
        where = _source_of(batch, source)
        names = batch.schema.names
        if text_col not in names:
            raise DataError(f"{where}: no {text_col!r} column (it has: {', '.join(names)})",
                            hint="--text-col NAME")
        if id_col is not None and id_col not in names:
            raise DataError(f"{where}: no {id_col!r} column (it has: {', '.join(names)})",
                            hint="--id-col NAME")
        if title_col and title_col not in names:
            raise DataError(f"{where}: no {title_col!r} column (it has: {', '.join(names)})",
                            hint="--title-col NAME")
        id_name = id_col or next((c for c in ("id", "_id") if c in names), None)
        title_name = title_col if title_col is not None else ("title" if "title" in names else None)
        texts = _text_column(batch, text_col, where, "--text-col")
        ids = _text_column(batch, id_name, where, "--id-col") if id_name else None
        titles = _text_column(batch, title_name, where, "--title-col") if title_name else None
        for i in range(batch.num_rows):
            row += 1
            if texts[i] is None:
                raise DataError(f"{row_location(where, row)}: the text ({text_col!r}) is null")
            doc_id = ids[i] if ids else str(row)
            if doc_id is None:
                raise DataError(f"{row_location(where, row)}: the id ({id_name!r}) is null")
            yield Document(doc_id, texts[i], titles[i] if titles else None)


def documents_from_store(db: str, table: str = "chunks") -> tuple[list[Document], str]:
    """The chunks of a store as passages (sorted by id), and the sha256 of what was read."""
    from arrowsmith.commands.store import open_table

    data = open_table(db, table).search().select(["id", "doc_id", "text"]).limit(None).to_arrow()
    rows = sorted(zip(data.column("id").to_pylist(), data.column("doc_id").to_pylist(),
                      data.column("text").to_pylist(), strict=True))
    h = hashlib.sha256()
    docs = []
    for chunk_id, doc_id, text in rows:
        h.update(f"{chunk_id}\t{text}\n".encode())
        docs.append(Document(doc_id, text or "", chunk=chunk_id))
    return docs, h.hexdigest()


def make_pairs(documents: Iterable[Document], *, token_counts, max_tokens: int, seed: int = 0,
               whole_passages: bool = False) -> tuple[list[Pair], dict[str, tuple[str, str]]]:
    """Pairs and the passages they come from (passage id → (document id, text)).

    ``token_counts(texts) -> list[int]`` measures sentences to pack passages of at most
    ``max_tokens``; ``whole_passages`` takes each document as one passage (a store's chunks).
    """
    pairs: list[Pair] = []
    passages: dict[str, tuple[str, str]] = {}
    for doc in documents:
        doc_id, chunk, text = doc.id, doc.chunk, doc.text
        if not text.strip():
            continue
        pairs += _title_pairs(doc_id, doc.title, text) + _heading_pairs(doc_id, text)
        spans = [(0, len(text))] if whole_passages else _passages(text, token_counts, max_tokens)
        for k, (s, e) in enumerate(spans):
            pid = chunk or f"{doc_id}#p{k}"
            passages[pid] = (doc_id, _clean(text[s:e]))
            pair = _cloze_pair(text, s, e, random.Random(f"{seed}\x00{doc_id}\x00{pid}"))
            if pair is not None:
                pairs.append(Pair(pair[0], pair[1], positive_id=doc_id))
    return pairs, passages


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _bare(text: str) -> str:
    return _clean(text).rstrip(" .!?:;").casefold()


def _words(text: str) -> int:
    return len(text.split())


def _title_pairs(doc_id: str, title: str | None, text: str) -> list[Pair]:
    if not title or not title.strip():
        return []
    title = _clean(title)
    body = _clean(text)
    spans = sentences(body, 0, len(body))
    if spans and _bare(body[spans[0][0]:spans[0][1]]) == _bare(title):
        body = body[spans[0][1]:].strip()  # BEIR corpora often repeat the title as the first sentence
    if _words(title) < 2 or _words(body) < MIN_BODY_WORDS:
        return []
    return [Pair(title, body, positive_id=doc_id)]


def _heading_pairs(doc_id: str, text: str) -> list[Pair]:
    if "#" not in text:
        return []
    out = []
    for start, end, heading in markdown_sections(text):
        if not heading:
            continue
        section = text[start:end]
        body = _clean(section.split("\n", 1)[1] if "\n" in section else "")
        query = _clean(heading.split(" > ")[-1])
        if _words(query) >= 1 and _words(body) >= MIN_BODY_WORDS:
            out.append(Pair(query, body, positive_id=doc_id))
    return out


def _passages(text: str, token_counts, max_tokens: int) -> list[tuple[int, int]]:
    """Consecutive whole sentences packed up to ``max_tokens`` tokens."""
    spans = sentences(text, 0, len(text))
    if not spans:
        return []
    counts = token_counts([text[s:e] for s, e in spans])
    out: list[tuple[int, int]] = []
    start, end, used = spans[0][0], spans[0][1], counts[0]
    for (s, e), n in zip(spans[1:], counts[1:], strict=True):
        if used + n > max_tokens:
            out.append((start, end))
            start, used = s, 0
        end, used = e, used + n
    out.append((start, end))
    return out


def _cloze_pair(text: str, s: int, e: int, rng: random.Random) -> tuple[str, str] | None:
    spans = sentences(text, s, e)
    if len(spans) < 2:
        return None
    choices = [i for i, (a, b) in enumerate(spans) if _words(text[a:b]) >= MIN_QUERY_WORDS]
    if not choices:
        return None
    i = rng.choice(choices)
    a, b = spans[i]
    query = _clean(text[a:b])
    rest = _clean(text[s:a] + " " + text[b:e])
    if _words(rest) < MIN_QUERY_WORDS:
        return None
    return query, rest


def unsupervised_pairs(documents: Iterable[Document], *, source: str, sha256: str, token_counts,
                       max_tokens: int, seed: int = 0, db: str | None = None, table: str = "chunks"
                       ) -> PairSet:
    """A :class:`PairSet` from documents (``--corpus``) or a store's chunks (``--db``)."""
    pairs, passages = make_pairs(documents, token_counts=token_counts, max_tokens=max_tokens, seed=seed,
                                 whole_passages=db is not None)
    if not pairs:
        raise DataError(f"{source}: no pairs could be made (no passage of two sentences of "
                        f"{MIN_QUERY_WORDS}+ words, no titles or headings)")
    doc_of = {pid: d for pid, (d, _) in passages.items()}
    if db is not None:
        candidates = Candidates(db=db, table=table)
    else:
        candidates = Candidates(batches=lambda: _id_text_batches((p, t) for p, (_, t) in passages.items()))
    return PairSet(pairs, source, sha256, "unsupervised", candidates=candidates, doc_of=doc_of)


def corpus_sha(path: str) -> str:
    from .pairs import sha256_files

    return sha256_files([Path(path)]) if path != "-" and Path(path).is_file() else ""
