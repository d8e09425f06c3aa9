"""``chunk_documents``: documents in, chunked documents (whole text + spans) out.

Each bounded sub-batch of documents is tokenized once, a strategy plans the spans
from the token offsets, and every planned chunk gets its own token count: the count
of its text tokenized on its own, exact, whatever the tokenizer does at a cut. A
chunk over ``max_tokens`` is split further. So ``n_tokens`` is always the chunk's
own count and never above the limit. How the counts are had without tokenizing
everything twice (when the tokenizer allows it) is :mod:`.counting`'s business.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from arrowsmith.commands import schemas
from arrowsmith.commands.errors import DataError, UsageError
from arrowsmith.commands.keys import text_hash

from .counting import NotSeparable, RecountCounter, WordCounter, make_counter
from .stats import ChunkStats
from .strategies import STRATEGIES, plan_chunks, strip_span
from .tokenizers import MIN_MAX_TOKENS, ChunkTokenizer, load_tokenizer

if TYPE_CHECKING:
    from .stored import StoredKeys

log = logging.getLogger("arrowsmith.chunk")

CHUNKER_VERSION = "1"
BATCH_DOCS = 256
BATCH_BYTES = 16 << 20
RECOMPUTED = ("doc_hash", "chunks", schemas.UNCHANGED)  # re-chunking a chunked stream replaces these

Chunk = tuple[int, int, int, "str | None"]  # start, end, n_tokens, heading


@dataclass(frozen=True)
class Chunker:
    strategy: str
    tokenizer: ChunkTokenizer
    max_tokens: int
    overlap: int = 0
    fast: bool = field(default=True, compare=False)  # False: re-tokenize every chunk (tests compare)

    @property
    def counter(self) -> WordCounter | RecountCounter:
        """How chunk counts tokens (made on first use; a word cache lives as long as its chunker)."""
        counter = self.__dict__.get("_counter")
        if counter is None:
            counter = make_counter(self.tokenizer, fast=self.fast)
            object.__setattr__(self, "_counter", counter)
        return counter

    def describe(self) -> dict:
        return {"strategy": self.strategy, "tokenizer": self.tokenizer.name, "max_tokens": self.max_tokens,
                "overlap": self.overlap, "version": CHUNKER_VERSION}

    @property
    def span_type(self) -> pa.DataType:
        return schemas.CHUNK_SPAN_WITH_HEADING if self.strategy == "markdown" else schemas.CHUNK_SPAN

    def chunk_texts(self, texts: list[str]) -> list[list[Chunk]]:
        """Verified chunks of each text."""
        try:
            return self._chunk_texts(texts)
        except NotSeparable as e:  # a tokenizer that declared what it does not do: count the slow way
            log.warning("%s; counting every chunk on its own from now on", e)
            object.__setattr__(self, "_counter", RecountCounter(self.tokenizer))
            return self._chunk_texts(texts)

    def _chunk_texts(self, texts: list[str]) -> list[list[Chunk]]:
        counter = self.counter
        docs = counter.documents(texts)
        plans = [plan_chunks(self.strategy, t, d.offsets, self.max_tokens, self.overlap)
                 for t, d in zip(texts, docs, strict=True)]
        flat = [(d, s, e) for d, plan in enumerate(plans) for s, e, _ in plan]
        counts = counter.span_counts(docs, flat)
        out: list[list[Chunk]] = [[] for _ in texts]
        i = 0
        for d, plan in enumerate(plans):
            for s, e, heading in plan:
                n = counts[i]
                i += 1
                if n <= self.max_tokens:
                    out[d].append((s, e, n, heading))
                else:
                    out[d].extend((a, b, m, heading) for a, b, m in self.fit(texts[d], s, e))
        return out

    def fit(self, text: str, s: int, e: int) -> list[tuple[int, int, int]]:
        """Split ``text[s:e]`` using its own tokenization until every piece fits."""
        tok, limit = self.tokenizer, self.max_tokens
        out: list[tuple[int, int, int]] = []
        s, e = strip_span(text, s, e)
        while s < e:
            offs = tok.token_offsets(text[s:e])  # (one row per token: its length is the count)
            if len(offs) <= limit:
                out.append((s, e, len(offs)))
                break
            k = min(limit, len(offs) - 1)
            while True:
                cut = s + int(offs[k, 0]) if k > 0 else s
                if cut <= s:
                    cut = s + 1  # no token boundary left that fits: one character
                head_s, head_e = strip_span(text, s, cut)
                head_n = tok.count_tokens([text[head_s:head_e]])[0] if head_e > head_s else 0
                if head_n <= limit or cut == s + 1:
                    break
                k -= max(1, head_n - limit)
            if head_e > head_s:
                out.append((head_s, head_e, head_n))
            s, e = strip_span(text, cut, e)
        return out


def make_chunker(strategy: str = "sentences", tokenizer: ChunkTokenizer | str | None = None,
                 max_tokens: int | None = None, overlap: int = 0) -> Chunker:
    """Check the options and load the tokenizer (never a model's weights)."""
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    tok = tokenizer if isinstance(tokenizer, ChunkTokenizer) else load_tokenizer(tokenizer)
    limit = int(max_tokens) if max_tokens is not None else tok.default_max_tokens
    if limit < MIN_MAX_TOKENS:
        raise UsageError(f"--max-tokens must be at least {MIN_MAX_TOKENS}, not {limit}")
    if overlap < 0 or overlap >= limit:
        raise UsageError(f"--overlap must be between 0 and --max-tokens - 1 ({limit - 1}), not {overlap}")
    if overlap and strategy != "tokens":
        raise UsageError("--overlap applies to --strategy tokens only")
    if tok.model_max_tokens and limit > tok.default_max_tokens:
        log.warning("--max-tokens %d is more than %s holds (%d tokens plus special tokens): "
                    "embed will have to refuse or window these chunks", limit, tok.name,
                    tok.default_max_tokens)
    return Chunker(strategy, tok, limit, overlap)


def chunked_schema(chunker: Chunker, metadata: pa.Schema | None = None, *, explode: bool = False,
                   stored: StoredKeys | None = None) -> pa.Schema:
    """The output schema; with ``stored`` (``chunk --db``), chunked documents get the ``unchanged``
    column and the ``arrowsmith.store`` metadata (one row per chunk has no row for those)."""
    meta_fields = list(metadata) if metadata is not None else []
    entries = {}
    if explode:
        fields = [pa.field("id", pa.string()), pa.field("doc_id", pa.string()),
                  pa.field("chunk_index", pa.int32()), pa.field("text", pa.string()),
                  pa.field("start", pa.int32()), pa.field("end", pa.int32()),
                  pa.field("n_tokens", pa.int32())]
        if chunker.strategy == "markdown":
            fields.append(pa.field("heading", pa.string()))
        clash = [f.name for f in meta_fields if f.name in {g.name for g in fields}]
        if clash:
            # a metadata "start" would shadow the span's: text[start:end] would lie
            raise UsageError(f"input column(s) {', '.join(clash)} clash with the per-chunk columns of "
                             "--explode (also the table view on a terminal): rename them, or write "
                             "chunked documents (-f arrows|jsonl without --explode)")
    else:
        fields = [*schemas.CHUNKED_FIELDS, pa.field("chunks", pa.list_(chunker.span_type))]
        if stored is not None:
            fields.append(pa.field(schemas.UNCHANGED, pa.bool_(), nullable=False))
            entries[schemas.STORE] = stored.describe()
    return pa.schema(fields + meta_fields, metadata=schemas.stage_metadata(
        "chunk", chunker=chunker.describe(), layout="chunks" if explode else "documents", **entries))


def chunk_documents(batches: Iterable[pa.RecordBatch], *, strategy: str = "sentences",
                    tokenizer: ChunkTokenizer | str | None = None, max_tokens: int | None = None,
                    overlap: int = 0, id_col: str = "id", text_col: str = "text", on_error: str = "fail",
                    stats: ChunkStats | None = None, explode: bool = False,
                    stored: StoredKeys | None = None,
                    batch_docs: int = BATCH_DOCS, batch_bytes: int = BATCH_BYTES
                    ) -> Iterator[pa.RecordBatch]:
    """Chunk documents (``id_col``, ``text_col``, other columns kept as metadata).

    Yields the chunked-documents schema (``id, text, doc_hash, chunks`` + metadata),
    or one row per chunk with ``explode``. Null ids/texts and duplicate ids are a
    DataError naming the row (or skipped and counted with ``on_error="skip"``);
    empty and whitespace-only texts are skipped and counted. ``stored``
    (:func:`.stored.stored_keys`): a document the table holds unchanged is not chunked but
    written as one row marked ``unchanged`` (no text, no chunks; none with ``explode``).
    """
    if on_error not in ("fail", "skip"):
        raise UsageError(f"--on-error must be fail or skip, not {on_error!r}")
    chunker = make_chunker(strategy, tokenizer, max_tokens, overlap)
    stats = stats if stats is not None else ChunkStats()
    docs = _Documents(id_col, text_col, on_error, stats)
    schema = None
    produced = False
    for batch in batches:
        ids, texts, meta = docs.prepare(batch)
        schema = schema or chunked_schema(chunker, meta.schema, explode=explode, stored=stored)
        hashes = None
        if stored is not None:
            # the whole batch at once: a night's documents are mostly unchanged, and checked in
            # slices of BATCH_DOCS the per-slice work was ~1 s of a 7 s chunk at a million chunks
            # (benchmarks/RESULTS.md, "Issue 20: chunk --db marks a batch at once")
            ids, texts, meta, hashes, markers = _split_unchanged(ids, texts, meta, schema, explode, stats,
                                                                 stored)
            if markers is not None:
                produced = True
                yield markers
        for lo, hi in _slices(texts, batch_docs, batch_bytes):
            out = _chunk_slice(chunker, ids[lo:hi], texts[lo:hi], meta.slice(lo, hi - lo), schema,
                               explode, stats, None if hashes is None else hashes[lo:hi])
            if out.num_rows:
                produced = True
                yield out
    if not produced:
        # an empty result still carries its schema, so a writer can say what it would hold
        yield _empty_batch(schema or chunked_schema(chunker, explode=explode, stored=stored))


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


def _slices(texts: pa.Array, max_docs: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    sizes = pc.binary_length(texts).to_pylist() if len(texts) else []
    lo, size = 0, 0
    for i, n in enumerate(sizes):
        if i > lo and (i - lo >= max_docs or size + (n or 0) > max_bytes):
            yield lo, i
            lo, size = i, 0
        size += n or 0
    if lo < len(sizes):
        yield lo, len(sizes)


def _split_unchanged(ids: pa.Array, texts: pa.Array, meta: pa.RecordBatch, schema: pa.Schema,
                     explode: bool, stats: ChunkStats, stored: StoredKeys
                     ) -> tuple[pa.Array, pa.Array, pa.RecordBatch, list[str], pa.RecordBatch | None]:
    """The documents ``stored`` does not hold unchanged (ids, texts, metadata and their doc_hash),
    and the marker rows of those it does (None: none, or one row per chunk with ``explode``)."""
    # doc_hash: a column of chunked documents, and what a stored document's key is made from
    hashes = [text_hash(t) for t in texts.to_pylist()]
    unchanged = stored.unchanged(meta, ids.to_pylist(), hashes)
    if not any(unchanged):
        return ids, texts, meta, hashes, None
    kept = [i for i, u in enumerate(unchanged) if u]
    stats.unchanged += len(kept)
    markers = None
    if not explode:  # one row per chunk: an unchanged document has none
        take = pa.array(kept, pa.int64())
        markers = _markers(schema, ids.take(take), [hashes[i] for i in kept], meta.take(take))
    todo = [i for i, u in enumerate(unchanged) if not u]
    take = pa.array(todo, pa.int64())
    return ids.take(take), texts.take(take), meta.take(take), [hashes[i] for i in todo], markers


def _chunk_slice(chunker: Chunker, ids: pa.Array, texts: pa.Array, meta: pa.RecordBatch,
                 schema: pa.Schema, explode: bool, stats: ChunkStats, hashes: list[str] | None = None
                 ) -> pa.RecordBatch:
    """Chunked documents (or one row per chunk with ``explode``); ``hashes``: the texts' doc_hash
    when ``chunk --db`` made them (its output then has the ``unchanged`` column, false here)."""
    text_list = texts.to_pylist()
    marked = hashes is not None
    if hashes is None:
        hashes = [text_hash(t) for t in text_list] if not explode else [""] * len(text_list)
    per_doc = chunker.chunk_texts(text_list) if text_list else []
    keep = [i for i, chunks in enumerate(per_doc) if chunks]
    # a text of only characters that str.strip() drops (but Arrow does not) has no chunk
    stats.skipped_empty += len(text_list) - len(keep)
    if len(keep) < len(text_list):
        idx = pa.array(keep, pa.int64())
        ids, texts, meta = ids.take(idx), texts.take(idx), meta.take(idx)
        text_list = [text_list[i] for i in keep]
        hashes = [hashes[i] for i in keep]
        per_doc = [per_doc[i] for i in keep]
    stats.chunked += len(keep)
    stats.chunks += sum(len(c) for c in per_doc)
    stats.tokens += sum(n for chunks in per_doc for _, _, n, _ in chunks)
    stats.chars += sum(len(t) for t in text_list)
    if explode:
        return _exploded(chunker, ids, text_list, per_doc, meta, schema)
    flat = [c for chunks in per_doc for c in chunks]
    offsets = [0]
    for chunks in per_doc:
        offsets.append(offsets[-1] + len(chunks))
    fields = [pa.array([c[0] for c in flat], pa.int32()), pa.array([c[1] for c in flat], pa.int32()),
              pa.array([c[2] for c in flat], pa.int32())]
    if chunker.strategy == "markdown":
        fields.append(pa.array([c[3] for c in flat], pa.string()))
    spans = pa.StructArray.from_arrays(fields, fields=list(chunker.span_type))
    chunks = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), spans, type=pa.list_(chunker.span_type))
    columns = [ids, texts, pa.array(hashes, pa.string()), chunks]
    if marked:
        columns.append(pa.array([False] * len(text_list), pa.bool_()))
    return pa.RecordBatch.from_arrays([*columns, *meta.columns], schema=schema)


def _markers(schema: pa.Schema, ids: pa.Array, hashes: list[str], meta: pa.RecordBatch) -> pa.RecordBatch:
    """``chunk --db``'s rows for documents the table holds unchanged: id, doc_hash and metadata
    (embed recomputes the key from them), ``unchanged`` true, no text and no chunks."""
    n = len(ids)
    columns = [ids, pa.nulls(n, pa.string()), pa.array(hashes, pa.string()),
               pa.nulls(n, schema.field("chunks").type), pa.array([True] * n, pa.bool_())]
    return pa.RecordBatch.from_arrays([*columns, *meta.columns], schema=schema)


def _exploded(chunker: Chunker, ids: pa.Array, texts: list[str], per_doc: list[list[Chunk]],
              meta: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    doc_ids = ids.to_pylist()
    rows = [(d, i, c) for d, chunks in enumerate(per_doc) for i, c in enumerate(chunks)]
    take = pa.array([d for d, _, _ in rows], pa.int64())
    cols = [
        pa.array([f"{doc_ids[d]}#{i}" for d, i, _ in rows], pa.string()),
        pa.array([doc_ids[d] for d, _, _ in rows], pa.string()),
        pa.array([i for _, i, _ in rows], pa.int32()),
        pa.array([texts[d][c[0]:c[1]] for d, _, c in rows], pa.string()),
        pa.array([c[0] for _, _, c in rows], pa.int32()),
        pa.array([c[1] for _, _, c in rows], pa.int32()),
        pa.array([c[2] for _, _, c in rows], pa.int32()),
    ]
    if chunker.strategy == "markdown":
        cols.append(pa.array([c[3] for _, _, c in rows], pa.string()))
    cols.extend(meta.take(take).columns)
    return pa.RecordBatch.from_arrays(cols, schema=schema)


class _Documents:
    """Validates incoming rows: columns, null ids/texts, duplicate ids, empty texts."""

    def __init__(self, id_col: str, text_col: str, on_error: str, stats: ChunkStats):
        self.id_col, self.text_col, self.on_error, self.stats = id_col, text_col, on_error, stats
        self.row = 0  # rows seen so far in the current input, for messages ("row 12")
        self.source = ""  # the input file those rows come from, when the reader tagged it
        self.seen: set[bytes] = set()  # 8-byte digests of ids: duplicates would collide in the store

    def prepare(self, batch: pa.RecordBatch) -> tuple[pa.Array, pa.Array, pa.RecordBatch]:
        source = (batch.schema.metadata or {}).get(schemas.SOURCE.encode(), b"").decode()
        if source != self.source:
            self.source, self.row = source, 0
        names = batch.schema.names
        for col, flag in ((self.id_col, "--id-col"), (self.text_col, "--text-col")):
            if col not in names:
                raise DataError(f"input has no {col!r} column (it has: {', '.join(names)})",
                                hint=f"{flag} NAME")
        for reserved in ("id", "text"):
            if reserved in names and reserved not in (self.id_col, self.text_col):
                raise UsageError(f"input has a {reserved!r} column besides --id-col {self.id_col} / "
                                 f"--text-col {self.text_col}: rename it, since the output needs that name")
        ids = self._ids(batch.column(names.index(self.id_col)))
        texts = self._texts(batch.column(names.index(self.text_col)))
        meta_names = [n for n in names if n not in (self.id_col, self.text_col, *RECOMPUTED)]
        meta = batch.select(meta_names)
        keep = self._valid(ids, texts)
        self.row += batch.num_rows
        if keep is not None:
            ids, texts, meta = ids.filter(keep), texts.filter(keep), meta.filter(keep)
        return ids, texts, meta

    def _ids(self, column: pa.Array) -> pa.Array:
        if pa.types.is_string(column.type):
            return column
        try:
            return pc.cast(column, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(f"id column {self.id_col!r} ({column.type}) cannot be read as text") from None

    def _texts(self, column: pa.Array) -> pa.Array:
        schemas.require_text(column.type, self.text_col)  # the check embed makes
        return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())

    def _where(self, i: int) -> str:
        row = f"row {self.row + i + 1}"
        return f"{self.source}: {row}" if self.source else row

    def _valid(self, ids: pa.Array, texts: pa.Array) -> pa.Array | None:
        bad_id = pc.is_null(ids).to_pylist()
        bad_text = pc.is_null(texts).to_pylist()
        empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0).to_pylist()
        keep = []
        for i, doc_id in enumerate(ids.to_pylist()):
            problem = None
            if bad_id[i]:
                problem = f"{self._where(i)}: the id ({self.id_col!r}) is null"
            elif bad_text[i]:
                problem = f"{self._where(i)} (id {doc_id!r}): the text ({self.text_col!r}) is null"
            elif empty[i]:
                self.stats.skipped_empty += 1
                keep.append(False)
                continue
            else:
                digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
                if digest in self.seen:
                    problem = f"{self._where(i)}: duplicate id {doc_id!r}"
                self.seen.add(digest)
            if problem is not None:
                if self.on_error == "fail":
                    raise DataError(problem, hint="--on-error skip to skip such rows")
                log.warning("skipped %s", problem)
                self.stats.skipped_invalid += 1
            keep.append(problem is None)
        return None if all(keep) else pa.array(keep, pa.bool_())
