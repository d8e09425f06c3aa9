"""Evaluation data: BEIR-layout datasets and TREC qrels/runs.

Every malformed line is a :class:`DataError` naming the file and line (exit 65).
Qrels and runs are the plain nested dicts that pytrec_eval, BEIR and MTEB use:
``qrels[query_id][doc_id] = relevance`` and ``run[query_id][doc_id] = score``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from arrowsmith.commands.errors import DataError, UsageError

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]

CORPUS_BATCH_ROWS = 1024


@dataclass
class Dataset:
    """A BEIR-layout dataset: the corpus is streamed from disk, queries and qrels are in memory."""

    root: Path
    split: str
    queries: dict[str, str]  # only the queries judged in ``qrels`` (as BEIR's loader keeps them)
    qrels: Qrels
    corpus_path: Path | None = None
    title_join: bool = True
    n_docs: int = 0
    info: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.root.name

    def corpus_batches(self, batch_rows: int = CORPUS_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """Documents (id, text) as the chunk stage reads them, text = title + " " + text."""
        if self.corpus_path is None:
            raise UsageError(f"{self.root}: no corpus.jsonl, so nothing can be embedded",
                             hint="--db STORE to evaluate an existing store, or --run FILE")
        return read_corpus(self.corpus_path, title_join=self.title_join, batch_rows=batch_rows)


def document_text(title: str | None, text: str, title_join: bool = True) -> str:
    """MTEB's ``(title + " " + text).strip()``; an empty or absent title gives ``text.strip()``.

    This is exactly what MTEB's ``encode_corpus`` and BEIR's SentenceBERT wrapper embed, so
    scores stay comparable with published ones.
    """
    if not title_join:
        return text.strip()
    return ((title or "") + " " + text).strip()


# ---------------------------------------------------------------- BEIR


def load_beir(root: str | Path, split: str = "test", *, title_join: bool = True,
              qrels_path: str | Path | None = None, queries_path: str | Path | None = None) -> Dataset:
    """Read ``queries.jsonl`` and ``qrels/<split>.tsv`` of a BEIR directory; the corpus stays on disk.

    As BEIR's ``GenericDataLoader``, only the queries that have qrels in the split are kept.
    ``qrels_path`` (BEIR tsv or TREC qrels, told apart by their columns) and ``queries_path``
    override the dataset's own files.
    """
    root = Path(root)
    if not root.is_dir() and qrels_path is None:
        raise UsageError(f"{root}: not a directory (expected a BEIR dataset: corpus.jsonl, "
                         "queries.jsonl, qrels/<split>.tsv)")
    qpath = Path(qrels_path) if qrels_path else root / "qrels" / f"{split}.tsv"
    if not qpath.exists():
        splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise UsageError(f"{qpath}: no such file", hint=f"--split {' | '.join(splits)}" if splits else None)
    first_lines: dict[str, int] = {}
    qrels = read_qrels(qpath, first_lines)
    queries_file = Path(queries_path) if queries_path else root / "queries.jsonl"
    all_queries = read_queries(queries_file)
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise DataError(f"{qpath}: line {first_lines[missing[0]]}: query id {missing[0]!r} is not in "
                        f"{queries_file} ({len(missing)} judged query id(s) missing from it)")
    queries = {q: all_queries[q] for q in qrels}
    corpus = root / "corpus.jsonl"
    return Dataset(root=root, split=split, queries=queries, qrels=qrels,
                   corpus_path=corpus if corpus.exists() else None, title_join=title_join)


def _open_binary(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a file") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: line {lineno}: not valid UTF-8 (byte {e.start})") from None
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno}: invalid JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def _field(row: dict, key: str, path: Path, lineno: int, *, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None:
        if required:
            raise DataError(f"{path}: line {lineno}: missing field {key!r}")
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "_id":
        return str(value)  # some BEIR exports write numeric ids
    if not isinstance(value, str):
        raise DataError(f"{path}: line {lineno}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def read_queries(path: str | Path) -> dict[str, str]:
    """``queries.jsonl``: one ``{"_id": ..., "text": ...}`` per line."""
    path = Path(path)
    out: dict[str, str] = {}
    for lineno, row in _jsonl_rows(path):
        qid = _field(row, "_id", path, lineno)
        if qid in out:
            raise DataError(f"{path}: line {lineno}: duplicate query id {qid!r}")
        out[qid] = _field(row, "text", path, lineno)
    return out


def read_corpus(path: str | Path, *, title_join: bool = True,
                batch_rows: int = CORPUS_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """``corpus.jsonl`` streamed as documents (id, text) in bounded batches."""
    path = Path(path)
    ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for lineno, row in _jsonl_rows(path):
        doc_id = _field(row, "_id", path, lineno)
        if doc_id in seen:
            raise DataError(f"{path}: line {lineno}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        text = _field(row, "text", path, lineno)
        title = _field(row, "title", path, lineno, required=False)
        ids.append(doc_id)
        texts.append(document_text(title, text, title_join))
        if len(ids) >= batch_rows:
            yield _doc_batch(ids, texts)
            ids, texts = [], []
    if ids:
        yield _doc_batch(ids, texts)
    elif not seen:
        raise DataError(f"{path}: empty corpus")


def _doc_batch(ids: list[str], texts: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(ids, pa.string()), pa.array(texts, pa.string())],
                                      names=["id", "text"])


# ---------------------------------------------------------------- qrels and runs


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with _open_binary(path) as f:  # decoded line by line, so an error names its line
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: line {lineno}: not valid UTF-8 (byte {e.start} of the line)"
                                ) from None
            if line.strip() and not line.lstrip().startswith("#"):
                yield lineno, line.rstrip("\r\n")


def _relevance(value: str, path: Path, lineno: int) -> int:
    try:
        return int(value)
    except ValueError:
        try:
            f = float(value)
        except ValueError:
            f = math.nan
        if f.is_integer():
            return int(f)
        raise DataError(f"{path}: line {lineno}: relevance {value!r} is not an integer") from None


def read_qrels(path: str | Path, first_lines: dict[str, int] | None = None) -> Qrels:
    """Qrels in BEIR tsv (``query-id<TAB>corpus-id<TAB>score``, optional header) or TREC
    (``qid iter docno rel``) form, told apart by the number of columns.

    A (query, document) pair judged twice with different grades is a DataError naming both
    lines (which grade is meant cannot be told); the same grade twice is harmless. With
    ``first_lines``, each query id's first line number is recorded there (for later messages).
    """
    path = Path(path)
    qrels: Qrels = {}
    judged_at: dict[tuple[str, str], int] = {}  # (qid, docid) → line of its judgement
    for lineno, line in _lines(path):
        cols = line.split("\t") if "\t" in line else line.split()
        if len(cols) == 3:
            qid, docid, rel = cols
        elif len(cols) == 4:
            qid, _, docid, rel = cols
        else:
            raise DataError(f"{path}: line {lineno}: expected 3 columns (query-id corpus-id score) "
                            f"or 4 (TREC: qid iter docno rel), got {len(cols)}")
        qid, docid = qid.strip(), docid.strip()
        if lineno == 1 and not _is_number(rel):
            continue  # BEIR's header row
        if not qid or not docid:
            raise DataError(f"{path}: line {lineno}: empty query or document id")
        grade = _relevance(rel.strip(), path, lineno)
        judged = qrels.setdefault(qid, {})
        before = judged.get(docid)
        if before is not None and before != grade:
            raise DataError(f"{path}: line {lineno}: query {qid!r} judges document {docid!r} {grade}, but "
                            f"line {judged_at[qid, docid]} judged it {before}")
        judged_at.setdefault((qid, docid), lineno)
        if first_lines is not None:
            first_lines.setdefault(qid, lineno)
        judged[docid] = grade
    if not qrels:
        raise DataError(f"{path}: no judgements")
    return qrels


def judged_absent(qrels: Qrels, corpus_ids: set[str]) -> tuple[int, int]:
    """(documents, judgements): how many judged document ids the corpus does not hold. They can
    never be retrieved, so a relevant one lowers recall and nDCG for every configuration."""
    absent_docs: set[str] = set()
    judgements = 0
    for judged in qrels.values():
        for doc in judged:
            if doc not in corpus_ids:
                absent_docs.add(doc)
                judgements += 1
    return len(absent_docs), judgements


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_run(path: str | Path) -> Run:
    """A TREC run: ``qid Q0 docno rank score tag`` per line (rank is ignored, as trec_eval does)."""
    path = Path(path)
    run: Run = {}
    for lineno, line in _lines(path):
        cols = line.split()
        if len(cols) != 6:
            raise DataError(f"{path}: line {lineno}: expected 6 columns (qid Q0 docno rank score tag), "
                            f"got {len(cols)}")
        qid, _, docid, _, score, _ = cols
        try:
            value = float(score)
        except ValueError:
            raise DataError(f"{path}: line {lineno}: score {score!r} is not a number") from None
        if math.isnan(value):
            raise DataError(f"{path}: line {lineno}: score is NaN")
        run.setdefault(qid, {})[docid] = value
    if not run:
        raise DataError(f"{path}: empty run")
    return run


def write_run(run: Run, path: str | Path, tag: str = "arrowsmith") -> None:
    """Write a TREC run file, ranks in trec_eval's order (score descending, then docno descending)."""
    from .metrics import rank_documents

    tag = "".join(c if not c.isspace() else "_" for c in tag) or "arrowsmith"
    with open(path, "w", encoding="utf-8") as f:
        for qid in run:
            for rank, (docid, score) in enumerate(rank_documents(run[qid]), start=1):
                f.write(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")
