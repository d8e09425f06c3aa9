"""`arrowsmith doctor`: check that a stored table is whole, consistent and loadable (issue 7).

What a healthy table satisfies (each failed check is one :class:`Finding`):

* ``rows``      every chunk ``id`` occurs once (a writer killed between a changed document's two
                commits leaves its old and new chunks, which the re-run replaces; two writers
                without the lock could do worse), and ``id == f"{doc_id}#{chunk_index}"``;
* ``chunks``    each document has chunks ``0..n-1`` (the store replaces documents whole, so a
                gap means rows were lost);
* ``vector``    every vector is non-null, finite, of the table's dim, and of norm ≈ 1 when the
                model normalises;
* ``doc_key``   all chunks of a document share one non-null ``doc_key``, and it is the key embed
                computes from the document's hash and the table's model/chunker metadata —
                where the table lets us recompute it (see :func:`_key_recomputer`);
* ``version``   the previous table version can be checked out and read to its end;
* ``stale``     no temporary or orphaned files left by a killed writer, and no empty index
                directory of a failed index build, older than the grace period (younger ones
                may belong to a live writer: they are reported as notes);
* ``index``     every index the table lists opens (its files may have been deleted: LanceDB lists
                an index from the manifest alone, and every query that uses it fails);
* ``data``      every data file of the version can be read (a deleted one fails every scan);
* ``version``   also: the table is not older than the version arrowsmith recorded committing in
                ``<table>.arrowsmith.json`` (a lost newest manifest rolls a table back silently).

The table is scanned in bounded record batches at one pinned version; memory grows only with
8 bytes per chunk (id hashes) and ~40 per document (its id and a few numbers, in arrays), never
with the vectors. On tables of ``ISOLATE_MIN_ROWS`` rows and more the indexes are opened in a
child process (:mod:`isolated`): opening reads them into LanceDB's cache, which stays.
``fix=True`` removes the stale files under the table's write lock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from .errors import DataError, UsageError
from .spaces import dense, multi
from .store import (
    DEFAULT_TABLE,
    SCAN_ROWS,
    describe_missing,
    load_state,
    lock_path,
    missing_path,
    model_of,
    open_table,
    recorded_version,
    remove_stale,
    scan_batches,
    stale_files,
    state_path,
    table_exists,
    table_lock,
    table_meta,
    table_path,
    unreadable_indexes,
)
from .units import format_duration

log = logging.getLogger("arrowsmith.doctor")

EXAMPLES = 5  # ids quoted per finding


@dataclass
class Finding:
    check: str  # rows | chunks | vector | doc_key | version | stale | table | index | data
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


@dataclass
class DoctorReport:
    db: str
    table: str
    version: int | None = None
    rows: int = 0
    documents: int = 0
    dim: int | None = None
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, not unhealthy
    fixed: list[str] = field(default_factory=list)  # files removed by --fix
    seconds: float = 0.0

    @property
    def healthy(self) -> bool:
        return not self.findings

    def add(self, check: str, message: str) -> None:
        self.findings.append(Finding(check, message))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["healthy"] = self.healthy
        return out

    def summary(self) -> str:
        state = "healthy" if self.healthy else f"{len(self.findings)} problem(s)"
        fixed = f", {len(self.fixed)} stale files removed" if self.fixed else ""
        return (f"doctor: {self.db}/{self.table} version {self.version}: {self.rows} rows, "
                f"{self.documents} documents: {state}{fixed} ({self.seconds:.1f}s)")


# ------------------------------------------------------------------ entry point


def diagnose(db: str | os.PathLike, table: str = DEFAULT_TABLE, *, fix: bool = False,
             grace_s: float = 3600, wait: bool = False, batch_rows: int = SCAN_ROWS) -> DoctorReport:
    """Run every check on ``<db>/<table>``; with ``fix``, first remove stale files (under the lock)."""
    from . import isolated
    from .index import may_isolate

    with isolated.warm_child(may_isolate(db, table)):  # the child that opens a big table's indexes
        return _diagnose(db, table, fix=fix, grace_s=grace_s, wait=wait, batch_rows=batch_rows)


def _diagnose(db: str | os.PathLike, table: str, *, fix: bool, grace_s: float, wait: bool,
              batch_rows: int) -> DoctorReport:
    start = time.perf_counter()
    report = DoctorReport(str(db), table)
    if not table_exists(db, table):
        if not table_path(db, table).is_dir():
            if lock_path(db, table).exists():
                # a first write stopped before its first commit (issue 10: was exit 2, "no store")
                report.add("table", f"nothing committed yet: {lock_path(db, table)} is there but no table "
                                    "(a first write stopped before its first commit); a re-run builds it")
                report.seconds = time.perf_counter() - start
                return report
            open_table(db, table)  # raises the usual UsageError (exit 2) naming the tables there
        # a writer killed during its very first commit: files, but no version to read
        report.add("table", f"{table_path(db, table)} holds no committed version (a first write was "
                            "interrupted); re-run the write, or delete the directory")
        _check_stale(report, db, table, fix=fix, grace_s=grace_s, wait=wait)
        report.seconds = time.perf_counter() - start
        return report
    if fix:
        _fix_stale(report, db, table, grace_s=grace_s, wait=wait)
    tbl = open_table(db, table)
    report.version = tbl.version
    tbl.checkout(report.version)  # every check reads this one version, whatever writers do meanwhile
    _check_recorded_version(report, db, table)
    _check_indexes(report, tbl, db, table)
    try:
        _check_rows_and_vectors(report, tbl, batch_rows)
    except Exception as e:  # noqa: BLE001 - a finding, never a bare RuntimeError (issue 21)
        _report_unreadable(report, db, table, e)
    _check_previous_version(report, db, table, batch_rows)
    _check_stale(report, db, table, fix=False, grace_s=grace_s, wait=wait)
    report.seconds = time.perf_counter() - start
    return report


# ------------------------------------------------------------------ scanning the table


class _Scan:
    """Running state of one pass over (id, doc_id, chunk_index, doc_key, vector)."""

    def __init__(self, dim: int, normalised: bool):
        self.dim, self.normalised = dim, normalised
        self.id_hashes: list[Any] = []  # numpy int64 arrays, 8 bytes per row
        self.docs: list[pa.Table] = []  # per batch, one row per document: see _document_rows
        self.bad: dict[str, list[str]] = {}  # problem → example ids
        self.counts: dict[str, int] = {}
        self.rows = 0
        self.recompute: Any = None  # (doc_hash or None, text, metadata) → expected doc_key
        self.metadata: list[str] = []  # the carried metadata columns that are part of the key
        self.tokens: multi.TokenSettings | None = None  # the table's token vectors (embed --multivector)
        self.count_tokens: Any = None  # chunk texts → their token counts, when the counts must match

    def flag(self, problem: str, ids: list[str], n: int | None = None) -> None:
        if not ids and not n:
            return
        self.counts[problem] = self.counts.get(problem, 0) + (n if n is not None else len(ids))
        examples = self.bad.setdefault(problem, [])
        examples.extend(ids[: max(0, EXAMPLES - len(examples))])


def _check_rows_and_vectors(report: DoctorReport, tbl, batch_rows: int) -> None:
    names = tbl.schema.names
    vtype = tbl.schema.field(dense.COLUMN).type if dense.COLUMN in names else None
    model = model_of(table_meta(tbl))
    if dense.dim_of(tbl.schema) is None:
        report.add("vector", f"the {dense.COLUMN} column is {vtype}, not a fixed-size list of float32")
        return
    report.dim = dense.dim_of(tbl.schema)
    if model.get("dim") not in (None, report.dim):
        report.add("vector", f"the table's vectors have dim {report.dim} but its model metadata says "
                             f"{model.get('dim')}")
    scan = _Scan(report.dim, bool(model.get("normalize", True)))
    scan.recompute, why_not = _key_recomputer(tbl)
    if scan.recompute is None:
        report.notes.append(f"doc_keys checked for consistency only: {why_not}")
    wanted = ["id", "doc_id", "chunk_index", "doc_key", dense.COLUMN]
    scan.tokens = multi.settings_of(model)
    if scan.tokens is not None and scan.tokens.fitted:
        try:  # the codebook file beside the table, checked against the sha256 the table records
            multi.settings_of(model, report.db, report.table)
        except DataError as e:
            report.add("tokens", e.message)
    if scan.tokens is not None:
        wanted += [multi.COLUMN, "text"]
        scan.count_tokens = _token_counter(model, scan.tokens)
    if scan.recompute is not None:
        from .embed import metadata_columns

        wanted += ["doc_hash"] if "doc_hash" in tbl.schema.names else ["text", "start", "end"]
        scan.metadata = metadata_columns(tbl.schema.names)
        wanted += scan.metadata
    columns = [c for c in wanted if c in tbl.schema.names]
    missing = {"id", "doc_id", "doc_key"} - set(columns)
    if missing:
        report.add("table", f"missing column(s) {', '.join(sorted(missing))}")
        return
    for batch in scan_batches(tbl, columns, batch_rows):
        _scan_batch(scan, batch)
    documents = _documents(scan)
    report.rows, report.documents = scan.rows, documents.num_rows
    if scan.rows != tbl.count_rows():
        report.add("rows", f"a full scan read {scan.rows} rows but count_rows() says {tbl.count_rows()}")
    _report_duplicates(report, scan, tbl, batch_rows)
    _report_documents(scan, documents)
    for problem, n in scan.counts.items():
        check, what = problem.split(":", 1)
        examples = ", ".join(repr(i) for i in scan.bad.get(problem, []))
        report.add(check, f"{n} {what}" + (f" (e.g. {examples})" if examples else ""))


def _scan_batch(scan: _Scan, batch: pa.RecordBatch) -> None:
    import numpy as np
    import pyarrow.compute as pc

    scan.rows += batch.num_rows
    ids = batch.column("id").to_pylist()
    scan.id_hashes.append(np.fromiter((hash(i) for i in ids), dtype=np.int64, count=len(ids)))
    null_ids = [str(r) for r, i in enumerate(ids) if i is None]
    scan.flag("rows:rows with a null id", null_ids)
    doc_ids = batch.column("doc_id").to_pylist()
    keys = batch.column("doc_key").to_pylist()
    if "chunk_index" in batch.schema.names:
        expected = pc.binary_join_element_wise(batch.column("doc_id"), pc.cast(batch.column("chunk_index"),
                                               pa.string()), "#")
        wrong = pc.invert(pc.fill_null(pc.equal(batch.column("id"), expected), False))
        scan.flag("rows:ids that are not '<doc_id>#<chunk_index>'",
                  pc.filter(batch.column("id"), wrong).to_pylist()[:EXAMPLES], pc.sum(wrong).as_py() or 0)
    scan.docs.append(_document_rows(batch))
    if scan.recompute is not None:
        _check_keys(scan, batch, doc_ids, keys)
    # each representation checks its own column (commands/spaces)
    dense.check_batch(batch.column(dense.COLUMN), ids, scan.dim, scan.normalised, scan.flag)
    if scan.tokens is not None:
        multi.check_batch(batch, ids, scan.tokens, scan.flag, scan.count_tokens)


def _document_rows(batch: pa.RecordBatch) -> pa.Table:
    """The batch's documents, one row each: doc_id, chunks, highest chunk_index (-1: none), whether
    its chunks here disagree on doc_key (a null one included), and ``hash(doc_key)`` (null: no key).
    A document whose chunks lie in several batches has a row in each; :func:`_documents` merges
    them. Arrays, not a dict of str: the dict cost ~250 bytes a document (doctor peaked at 715-741
    MiB at a million rows against 442 at 100k; benchmarks/RESULTS.md, "Issue 20: compress and
    doctor memory, flat")."""
    import pyarrow.compute as pc

    names = batch.schema.names
    index = batch.column("chunk_index") if "chunk_index" in names else pa.nulls(batch.num_rows, pa.int64())
    rows = pa.table({"doc_id": batch.column("doc_id"), "key": batch.column("doc_key"),
                     "index": pc.cast(index, pa.int64())})
    docs = rows.group_by("doc_id", use_threads=False).aggregate([
        ([], "count_all"), ("key", "count"), ("key", "min"), ("key", "max"), ("index", "max")])
    n, keyed, lo = docs.column("count_all"), docs.column("key_count"), docs.column("key_min")
    mixed = pc.or_(pc.and_(pc.greater(keyed, 0), pc.less(keyed, n)),
                   pc.fill_null(pc.not_equal(lo, docs.column("key_max")), False))
    key_hash = pa.array([None if k is None else hash(k) for k in lo.to_pylist()], pa.int64())
    top = pc.fill_null(docs.column("index_max"), -1)
    return pa.table({"doc_id": docs.column("doc_id"), "n": n, "top": top, "mixed": mixed,
                     "key_hash": key_hash, "keyed": pc.greater(keyed, 0)}).combine_chunks()


def _documents(scan: _Scan) -> pa.Table:
    """One row per document of the whole table (:func:`_document_rows` of every batch merged):
    doc_id, n (chunks), top (highest chunk_index), mixed (its chunks disagree on doc_key), keyed
    (it has a doc_key at all). Two doc_keys of one document are told apart by their 64-bit hash
    where they lie in different batches."""
    import pyarrow.compute as pc

    parts = pa.concat_tables(scan.docs) if scan.docs else None
    scan.docs = []
    if parts is None or parts.num_rows == 0:
        return pa.table({"doc_id": pa.array([], pa.string()), "n": pa.array([], pa.int64())})
    docs = parts.group_by("doc_id", use_threads=False).aggregate([
        ("n", "sum"), ("top", "max"), ("mixed", "any"), ("keyed", "any"), ("keyed", "all"),
        ("key_hash", "min"), ("key_hash", "max")])
    del parts
    keyed = docs.column("keyed_any")
    two_keys = pc.fill_null(pc.not_equal(docs.column("key_hash_min"), docs.column("key_hash_max")), False)
    some_null = pc.and_(keyed, pc.invert(docs.column("keyed_all")))
    mixed = pc.or_(pc.or_(docs.column("mixed_any"), some_null), two_keys)
    return pa.table({"doc_id": docs.column("doc_id"), "n": docs.column("n_sum"),
                     "top": docs.column("top_max"), "mixed": mixed, "keyed": keyed})


def _token_counter(model: dict[str, Any], settings: multi.TokenSettings):
    """The table model's tokenizer counting chunk texts (no weights loaded), when every chunk's token
    vectors must be one per token: naive chunks, no pooling. Late chunks take their tokens from the
    document's tokenization, which can differ from the chunk's own at its edges; pooling merges them."""
    if settings.pool > 1 or model.get("late") or settings.source != "token-vectors":
        return None  # a ColBERT-style model's count is its own (markers, expansion, skiplist)
    from .query_vectors import model_from_meta

    try:
        return model_from_meta(model).tokenizer.count_tokens
    except Exception as e:  # noqa: BLE001 - a missing model must not stop the other checks
        log.warning("token counts not checked: cannot load the table's tokenizer (%s)", e)
        return None


def _key_recomputer(tbl) -> tuple[Any, str]:
    """A function (doc_hash | None, text) → doc_key, or None and why it cannot be had.

    doc_key = sha256(doc_hash + the model/chunker digest). The digest comes from the table's
    metadata; doc_hash is not stored by embed (only the chunks' texts are), so it can be
    recomputed only for tables of text rows (no chunker: each row is one whole document, so
    doc_hash = sha256(text)) or where a ``doc_hash`` column was carried along.
    """
    from .keys import doc_key, key_digest, metadata_digest, text_hash
    from .schemas import CHUNKER

    meta = table_meta(tbl)
    model = model_of(meta)
    if not {"prompt", "late", "dim"} <= set(model):
        return None, "the table's model metadata was not written by `arrowsmith embed`"
    has_hash = "doc_hash" in tbl.schema.names
    if CHUNKER in meta and not has_hash:
        return None, ("the table stores chunk texts but not the documents' doc_hash, so keys of "
                      "chunked documents cannot be recomputed")
    digest = key_digest(model, meta.get(CHUNKER, "rows"))

    def expected(doc_hash: str | None, text: str, metadata: dict[str, Any]) -> str:
        return doc_key(doc_hash or text_hash(text), digest,
                       metadata_digest(metadata))

    return expected, ""


def _check_keys(scan: _Scan, batch: pa.RecordBatch, doc_ids: list, keys: list) -> None:
    names = batch.schema.names
    hashes = batch.column("doc_hash").to_pylist() if "doc_hash" in names else [None] * batch.num_rows
    texts = batch.column("text").to_pylist() if "text" in names else [""] * batch.num_rows
    whole = ["doc_hash" in names or (s == 0 and e == len(t or ""))
             for s, e, t in zip(batch.column("start").to_pylist() if "start" in names else [0] * len(texts),
                                batch.column("end").to_pylist() if "end" in names else [0] * len(texts),
                                texts, strict=True)]
    metadata = batch.select(scan.metadata).to_pylist() if scan.metadata else [{}] * batch.num_rows
    wrong = [d for d, k, h, t, w, m in zip(doc_ids, keys, hashes, texts, whole, metadata, strict=True)
             if k is not None and (not w or scan.recompute(h, t or "", m) != k)]
    scan.flag("doc_key:chunks whose doc_key does not match their document and the table's model "
              "parameters (embedded with other parameters than the table records?)", wrong)


def _report_duplicates(report: DoctorReport, scan: _Scan, tbl, batch_rows: int) -> None:
    """Rows == distinct ids: hashes first (8 bytes a row), exact ids only for colliding hashes."""
    import numpy as np

    if not scan.id_hashes:
        return
    hashes = np.concatenate(scan.id_hashes)
    scan.id_hashes = []
    hashes.sort()  # in place: np.unique's copies were 3x the hashes
    suspects = set(hashes[1:][hashes[1:] == hashes[:-1]].tolist())
    del hashes
    if not suspects:
        return
    seen: dict[str, int] = {}
    for batch in scan_batches(tbl, ["id"], batch_rows):
        for i in batch.column("id").to_pylist():
            if hash(i) in suspects:
                seen[i] = seen.get(i, 0) + 1
    dups = {i: n for i, n in seen.items() if n > 1}
    if dups:
        extra = sum(n - 1 for n in dups.values())
        examples = ", ".join(f"{i!r} ×{n}" for i, n in list(dups.items())[:EXAMPLES])
        report.add("rows", f"{report.rows} rows but {report.rows - extra} distinct chunk ids: "
                           f"{len(dups)} ids stored more than once (e.g. {examples})")


def _report_documents(scan: _Scan, docs: pa.Table) -> None:
    import pyarrow.compute as pc

    if docs.num_rows == 0:
        return
    mixed = docs.column("mixed")
    null_key = pc.and_(pc.invert(mixed), pc.invert(docs.column("keyed")))
    n, top = docs.column("n"), docs.column("top")
    gaps = pc.and_(pc.greater_equal(top, 0), pc.not_equal(pc.add(top, 1), n))
    for problem, where, show in (
            ("doc_key:documents whose chunks carry different doc_keys", mixed, None),
            ("doc_key:documents with a null doc_key", null_key, None),
            ("chunks:documents whose chunk indexes are not 0..n-1 (chunks lost or duplicated)", gaps,
             lambda d, k, t: f"{d} ({k} rows, highest index {t})")):
        count = pc.sum(where).as_py() or 0
        if not count:
            continue
        found = docs.filter(where).slice(0, EXAMPLES)
        ids = found.column("doc_id").to_pylist()
        if show is not None:
            ids = [show(d, k, t) for d, k, t in zip(ids, found.column("n").to_pylist(),
                                                     found.column("top").to_pylist(), strict=True)]
        scan.flag(problem, ids, count)


# ------------------------------------------------------------------ files the version needs


def _report_unreadable(report: DoctorReport, db, table: str, error: Exception) -> None:
    path = missing_path(error)
    if path is None:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        report.add("data", f"version {report.version} cannot be read to its end: {first}")
        return
    report.add("data", f"{describe_missing(db, table, path)}: version {report.version} cannot be read "
                       "to its end; restore the file from a backup, or rebuild the table (delete "
                       f"{table_path(db, table).name} and re-run the build)")


def _check_indexes(report: DoctorReport, tbl, db, table: str) -> None:
    """Each listed index opens: a deleted index directory fails every query that uses it.
    Opening reads an index into LanceDB's cache, which stays in the process (at a million rows
    ~225 MiB, mostly the full-text index): on big tables a child process opens them."""
    from .index import deleted_rows, run_step, step_place

    opts = f"--db {db}" + (f" --table {table}" if table != DEFAULT_TABLE else "")
    listed = tbl.list_indices()
    if not listed:
        return
    broken = run_step(tbl, step_place(db, table, tbl.count_rows()), "opening the indexes",
                      unreadable_indexes, pinned=True)
    for name, why in broken.items():
        report.add("index", f"index {name} cannot be opened ({why}); `arrowsmith index {opts}` "
                            "rebuilds it")
    deleted = deleted_rows(tbl)
    if deleted and any(ix.index_type.lower().startswith("ivf") for ix in listed):
        report.notes.append(f"{deleted:,} deleted rows are still in their fragments: every vector search "
                            f"checks its candidates against them (2-3x its time at a million rows); "
                            f"`arrowsmith index {opts}` rewrites the fragments without them")


def _check_recorded_version(report: DoctorReport, db, table: str) -> None:
    """The table is not behind the version arrowsmith recorded committing (a lost manifest)."""
    recorded = recorded_version(load_state(db, table))
    if recorded is not None and report.version is not None and report.version < recorded:
        report.add("version", f"the table is at version {report.version} but {state_path(db, table).name} "
                              f"records version {recorded} committed: the newest manifest(s) are missing "
                              f"from {table_path(db, table).name}/_versions and the later commits are "
                              "lost; restore _versions from a backup, or re-run the build and `arrowsmith "
                              "index` (they rewrite what is missing)")


# ------------------------------------------------------------------ versions


def _check_previous_version(report: DoctorReport, db, table: str, batch_rows: int) -> None:
    """The version before the current one opens and reads to its end (what a rollback needs)."""
    current = report.version
    try:
        tbl = open_table(db, table)
        versions = sorted(v["version"] for v in tbl.list_versions())
        older = [v for v in versions if v < current]
        if not older:
            report.notes.append(f"version {current} is the only version kept: nothing to roll back to")
            return
        previous = older[-1]
        tbl.checkout(previous)
        rows = sum(b.num_rows for b in scan_batches(tbl, tbl.schema.names, batch_rows))
        if rows != tbl.count_rows():
            report.add("version", f"version {previous} reads {rows} rows but counts {tbl.count_rows()}")
    except Exception as e:  # noqa: BLE001 - whatever Lance raises, the finding is the same
        path = missing_path(e)
        first = describe_missing(db, table, path) if path else \
            str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        report.add("version", f"the previous version cannot be read: {first}")


# ------------------------------------------------------------------ stale files


def state_temp_files(db: str | os.PathLike, table: str = DEFAULT_TABLE) -> list[Path]:
    """Temp files of the index state (``.<table>.arrowsmith.json.<pid>.tmp``) a killed writer left."""
    return sorted(Path(db).glob(f".{table}.arrowsmith.json.*.tmp"))


def _stale(db, table: str, grace_s: float) -> tuple[list[Path], list[Path]]:
    """(older than grace, younger than grace): files no committed version needs."""
    old = set(stale_files(db, table, grace_s=grace_s))
    cutoff = time.time() - grace_s
    for p in state_temp_files(db, table):
        with contextlib.suppress(FileNotFoundError):
            if p.stat().st_mtime <= cutoff:
                old.add(p)
    young = set(stale_files(db, table, grace_s=-math.inf)) | set(state_temp_files(db, table))
    return sorted(old), sorted(young - old)


def _check_stale(report: DoctorReport, db, table: str, *, fix: bool, grace_s: float, wait: bool) -> None:
    if fix:
        _fix_stale(report, db, table, grace_s=grace_s, wait=wait)
    old, young = _stale(db, table, grace_s)
    if old:
        shown = ", ".join(str(p.relative_to(db)) for p in old[:EXAMPLES])
        report.add("stale", f"{len(old)} temporary or orphaned files older than {format_duration(grace_s)} "
                            f"({shown}); `arrowsmith doctor --fix` removes them")
    if young:
        report.notes.append(f"{len(young)} temporary or orphaned files younger than "
                            f"{format_duration(grace_s)} "
                            "(a running writer may own them)")


def _fix_stale(report: DoctorReport, db, table: str, *, grace_s: float, wait: bool) -> None:
    # under the lock: no writer is between writing its data files and committing them
    with table_lock(db, table, wait=wait):
        old, _ = _stale(db, table, grace_s)
        report.fixed += [str(p) for p in old if remove_stale(p)]


def check_grace(grace_s: float) -> float:
    if grace_s < 0:
        raise UsageError("--grace must not be negative")
    return grace_s
