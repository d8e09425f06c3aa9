"""Training pairs from the three things a user may have: logged pairs, a judged set, or a corpus.

Every source gives a :class:`PairSet`: the (query, positive[, negatives]) rows to train on, a
description of where they came from with the sha256 of that data (the model card records both),
and, for hard-negative mining, the candidate passages and what counts as each query's positive.

Bad input is a :class:`DataError` (exit 65) naming the file and the row (and the line, for
JSONL, CSV and qrels files).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from arrowsmith.commands.errors import DataError, UsageError
from arrowsmith.commands.schemas import SOURCE


@dataclass
class Pair:
    """One training example: the query, its positive passage, optional negatives."""

    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    query_id: str | None = None  # known for judged sets and pairs files with a query-id column
    positive_id: str | None = None  # the positive's document id, when the source has one


@dataclass
class Candidates:
    """Passages hard negatives are mined from: (id, text) batches, or an existing store."""

    batches: Callable[[], Iterator[pa.RecordBatch]] | None = None  # id, text
    db: str | None = None
    table: str = "chunks"


@dataclass
class PairSet:
    pairs: list[Pair]
    source: str  # e.g. "pairs file logged.jsonl" (for the model card)
    sha256: str  # of the source data
    kind: str  # "pairs" | "beir" | "unsupervised"
    queries_file: Path | None = None  # where query ids come from (id overlap is checked against it)
    candidates: Candidates | None = None
    doc_of: dict[str, str] = field(default_factory=dict)  # candidate passage id → its document id
    notes: list[str] = field(default_factory=list)
    # query text → every document judged relevant to it, positives or not (BEIR: all grades ≥ 1):
    # mining never takes one of them as a negative, even when --min-grade left it out of training
    judged: dict[str, set[str]] = field(default_factory=dict)

    def digest(self) -> str:
        """sha256 of the pairs themselves (what the checkpoints of a run are keyed on)."""
        h = hashlib.sha256()
        for p in self.pairs:
            h.update(json.dumps([p.query, p.positive, p.negatives], ensure_ascii=False).encode())
            h.update(b"\n")
        return h.hexdigest()


def sha256_files(paths: Iterable[Path | str]) -> str:
    """sha256 of one file, or of ``name sha256`` lines for several (the data a run read)."""
    digests = []
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digests.append((Path(p).name, h.hexdigest()))
    if len(digests) == 1:
        return digests[0][1]
    return hashlib.sha256("".join(f"{n} {d}\n" for n, d in digests).encode()).hexdigest()


# ---------------------------------------------------------------- locations in messages


def row_location(source: str, row: int) -> str:
    """``file: line L`` (JSONL/CSV/TSV, where the row's line is known) or ``file: row N``."""
    line = _line_of_row(source, row) if source and source != "-" else None
    where = f"line {line}" if line is not None else f"row {row}"
    return f"{source}: {where}" if source else where


def _line_of_row(path: str, row: int) -> int | None:
    """The line holding data row ``row`` (1-based) of a JSONL/CSV/TSV file, else None."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson", ".json"):
            with open(path, "rb") as f:
                n = 0
                for lineno, raw in enumerate(f, start=1):
                    if raw.strip():
                        n += 1
                        if n == row:
                            return lineno
        elif suffix in (".csv", ".tsv"):
            import csv

            with open(path, encoding="utf-8-sig", newline="") as f:
                reader = csv.reader(f, delimiter="\t" if suffix == ".tsv" else ",")
                for i, _ in enumerate(reader):
                    if i == row:  # row 0 is the header
                        return reader.line_num
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _source_of(batch: pa.RecordBatch, default: str) -> str:
    return (batch.schema.metadata or {}).get(SOURCE.encode(), b"").decode() or default


def _text_column(batch: pa.RecordBatch, name: str, source: str, flag: str) -> list[str | None]:
    column = batch.column(batch.schema.names.index(name))
    if pa.types.is_null(column.type):
        return [None] * batch.num_rows
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        if name.endswith("id") or flag.endswith("id-col"):
            try:
                return pc.cast(column, pa.string()).to_pylist()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        raise DataError(f"{source}: column {name!r} is {column.type}, not text", hint=f"{flag} NAME")
    return column.to_pylist()


def _pick_column(names: list[str], requested: str | None, default: str, source: str, flag: str,
                 required: bool = True) -> str | None:
    """The requested column (must exist), else the default when present."""
    if requested is not None:
        if requested == "":
            return None
        if requested not in names:
            raise DataError(f"{source}: no {requested!r} column (it has: {', '.join(names)})",
                            hint=f"{flag} NAME")
        return requested
    if default in names:
        return default
    if required:
        raise DataError(f"{source}: no {default!r} column (it has: {', '.join(names)})", hint=f"{flag} NAME")
    return None


# ---------------------------------------------------------------- (a) pairs files


def pairs_from_table(batches: Iterable[pa.RecordBatch], *, source: str, query_col: str | None = None,
                     positive_col: str | None = None, negative_col: str | None = None,
                     query_id_col: str | None = None, path: str | None = None) -> PairSet:
    """Rows with a query and a positive column (and optionally a negative and a query id).

    Column names default to ``query``, ``positive``, ``negative`` (used when present) and
    ``query_id`` (used when present); ``""`` turns an optional one off.
    """
    pairs: list[Pair] = []
    row = 0
    cols: tuple | None = None
    for batch in batches:
        where = _source_of(batch, source)
        names = batch.schema.names
        if cols is None:
            cols = (_pick_column(names, query_col, "query", where, "--query-col"),
                    _pick_column(names, positive_col, "positive", where, "--positive-col"),
                    _pick_column(names, negative_col, "negative", where, "--negative-col", required=False),
                    _pick_column(names, query_id_col, "query_id", where, "--query-id-col", required=False))
        q_name, p_name, n_name, id_name = cols
        queries = _text_column(batch, q_name, where, "--query-col")
        positives = _text_column(batch, p_name, where, "--positive-col")
        negatives = _text_column(batch, n_name, where, "--negative-col") if n_name else None
        ids = _text_column(batch, id_name, where, "--query-id-col") if id_name else None
        for i in range(batch.num_rows):
            row += 1
            q, p = queries[i], positives[i]
            for value, name in ((q, q_name), (p, p_name)) + (((negatives[i], n_name),) if negatives else ()):
                if value is None or not value.strip():
                    raise DataError(f"{row_location(where, row)}: {name!r} is "
                                    f"{'null' if value is None else 'empty'}")
            pairs.append(Pair(q, p, [negatives[i]] if negatives else [],
                              query_id=ids[i] if ids else None))
    if not pairs:
        raise DataError(f"{source}: no pairs (the input is empty)")
    files = [path] if path and path != "-" and Path(path).is_file() else []
    sha = sha256_files(files) if files else _pairs_sha(pairs)
    texts: dict[str, str] = {}
    for p in pairs:
        for t in (p.positive, *p.negatives):
            texts.setdefault(_text_id(t), t)
    return PairSet(pairs, f"pairs file {source}", sha, "pairs",
                   candidates=Candidates(batches=lambda: _id_text_batches(texts.items())))


def _pairs_sha(pairs: list[Pair]) -> str:
    return PairSet(pairs, "", "", "").digest()


def _text_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _id_text_batches(items: Iterable[tuple[str, str]], rows: int = 1024) -> Iterator[pa.RecordBatch]:
    ids: list[str] = []
    texts: list[str] = []
    for doc_id, text in items:
        ids.append(doc_id)
        texts.append(text)
        if len(ids) >= rows:
            yield pa.RecordBatch.from_pydict({"id": ids, "text": texts})
            ids, texts = [], []
    if ids:
        yield pa.RecordBatch.from_pydict({"id": ids, "text": texts})


# ---------------------------------------------------------------- (b) judged sets (BEIR)


def pairs_from_beir(root: str | Path, split: str = "train", *, title_join: bool = True,
                    min_grade: int = 1) -> PairSet:
    """One pair per query–document pair of a BEIR split judged at ``min_grade`` or above.

    The positive is the document's text exactly as ``eval`` embeds it (title + " " + text).
    Documents judged relevant below ``min_grade`` make no pair but are never mined as negatives.
    A qrels line naming a document that is not in the corpus is exit 65, naming that line.
    """
    if min_grade < 1:
        raise UsageError(f"--min-grade {min_grade}: grades below 1 are not relevant (BEIR: 0 = judged "
                         "not relevant)")
    from arrowsmith.commands.evaluate.data import load_beir, read_corpus

    try:
        data = load_beir(root, split, title_join=title_join)
    except DataError as e:
        raise _with_line(e, Path(root), split) from None
    if data.corpus_path is None:
        raise UsageError(f"{data.root}: no corpus.jsonl, so the judged documents have no text")
    wanted = {d for judged in data.qrels.values() for d, g in judged.items() if g >= 1}
    texts: dict[str, str] = {}
    for batch in read_corpus(data.corpus_path, title_join=title_join):
        ids, docs = batch.column("id").to_pylist(), batch.column("text").to_pylist()
        for doc_id, text in zip(ids, docs, strict=True):
            if doc_id in wanted:
                texts[doc_id] = text
    qrels_path = data.root / "qrels" / f"{split}.tsv"
    all_ids = None
    for qid, judged in data.qrels.items():
        for doc_id in judged:
            if doc_id not in texts:
                if all_ids is None:
                    all_ids = {i for b in read_corpus(data.corpus_path) for i in b.column("id").to_pylist()}
                if doc_id not in all_ids:
                    line = _qrels_line(qrels_path, qid, doc_id)
                    raise DataError(f"{qrels_path}: " + (f"line {line}: " if line else "")
                                    + f"document {doc_id!r} (query {qid!r}) is not in {data.corpus_path}")
    pairs = [Pair(data.queries[qid], texts[doc_id], query_id=qid, positive_id=doc_id)
             for qid, judged in data.qrels.items() for doc_id, grade in judged.items() if grade >= min_grade]
    if not pairs:
        raise DataError(f"{qrels_path}: no judged-relevant pairs (grade ≥ {min_grade})")
    relevant: dict[str, set[str]] = {}
    for qid, judged in data.qrels.items():
        relevant.setdefault(data.queries[qid], set()).update(d for d, g in judged.items() if g >= 1)
    sha = sha256_files([data.root / "queries.jsonl", qrels_path, data.corpus_path])
    corpus = data.corpus_path
    ps = PairSet(pairs, f"BEIR {data.root} split {split}", sha, "beir",
                 queries_file=(data.root / "queries.jsonl").resolve(),
                 candidates=Candidates(batches=lambda: read_corpus(corpus, title_join=title_join)),
                 judged=relevant)
    if min_grade > 1:
        n_relevant = sum(1 for judged in data.qrels.values() for g in judged.values() if g >= 1)
        ps.notes.append(f"--min-grade {min_grade}: {len(pairs):,} of {n_relevant:,} judged-relevant "
                        f"documents are positives (the rest are never mined as negatives)")
    return ps


def _with_line(error: DataError, root: Path, split: str) -> DataError:
    """eval's loader names the first judged query missing from queries.jsonl; add its qrels line."""
    from arrowsmith.commands.evaluate.data import read_queries

    qrels_path = root / "qrels" / f"{split}.tsv"
    if "judged query id" not in error.message or not qrels_path.exists():
        return error
    known = read_queries(root / "queries.jsonl")
    with open(qrels_path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            cols = line.split("\t") if "\t" in line else line.split()
            if lineno > 1 or (len(cols) >= 3 and cols[-1].strip().lstrip("-").isdigit()):
                if len(cols) in (3, 4) and cols[0].strip() and cols[0].strip() not in known:
                    return DataError(f"{qrels_path}: line {lineno}: query {cols[0].strip()!r} is not in "
                                     f"{root / 'queries.jsonl'}")
    return error


def _qrels_line(path: Path, qid: str, doc_id: str) -> int | None:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            for lineno, line in enumerate(f, start=1):
                cols = line.split("\t") if "\t" in line else line.split()
                if len(cols) in (3, 4) and cols[0].strip() == qid and cols[-2].strip() == doc_id:
                    return lineno
    except OSError:
        return None
    return None
