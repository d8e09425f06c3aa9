"""The LanceDB store: one locked, incremental, checkpointed writer for embedded chunks.

Layout of a store directory (``--db``)::

    <db>/<table>.lance            the LanceDB table (Lance dataset, versioned)
    <db>/<table>.lock             flock of the one writer, holds its pid (beside, never inside, the table)
    <db>/<table>.arrowsmith.json  what `arrowsmith index` built, and at which table version; the
                                  last version a writer committed (what `doctor` checks the table against)

Guarantees (docs/design.md#incremental-and-safe-writes):

* Rows are keyed by chunk ``id`` and grouped by ``doc_id``; a document whose ``doc_key`` is
  already stored is skipped; a changed document has its new chunks added in one commit and its
  old rows deleted by row id in the next.
* Each checkpoint is one Lance commit, made under :func:`signals.no_interrupt`, from an
  in-memory ``pa.Table`` — never a generator, which LanceDB would drain on its own thread
  where Ctrl-C is swallowed and the add commits anyway.
* Pruning runs only after the input iterator was exhausted without error.
* One writer per table: two writers adding the same document's chunks would store its ids twice
  (as LanceDB's concurrent ``merge_insert`` can, lance issue 4585), so every write path takes
  the flock first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from hashlib import blake2b
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import faults
from .errors import DISK_ERRNOS, DataError, LockedError, StorageError, UsageError
from .schemas import EMBEDDED_CORE, MODEL, SOURCE, conform_batch, read_meta, require_columns
from .signals import no_interrupt
from .spaces import codebook as codebooks
from .spaces import dense, multi

log = logging.getLogger("arrowsmith.store")

DEFAULT_TABLE = "chunks"
# what makes two embedding spaces different; the rest of the model metadata (prompt, late
# chunking, dtype) is part of each document's doc_key, so changing it re-embeds documents
IDENTITY_KEYS = ("plugin", "name", "revision", "dim")
PRUNE_BATCH = 500  # doc ids per pruning DELETE: bounded SQL, several small commits
IN_LIST_MAX = 2000  # values per `column IN (...)` filter: a bounded SQL text for LanceDB's parser
SCAN_ROWS = 8192  # rows per scanned batch: ~12 MiB of 384-dim vectors


# ------------------------------------------------------------------ paths and locking


def table_path(db: str | os.PathLike, table: str = DEFAULT_TABLE) -> Path:
    _check_name(table)  # every path made of a table name: no command reaches the disk with a bad one
    return Path(db) / f"{table}.lance"


def lock_path(db: str | os.PathLike, table: str = DEFAULT_TABLE) -> Path:
    _check_name(table)
    return Path(db) / f"{table}.lock"


def state_path(db: str | os.PathLike, table: str = DEFAULT_TABLE) -> Path:
    _check_name(table)
    return Path(db) / f"{table}.arrowsmith.json"


TABLE_NAME_MAX = 128  # "<table>.arrowsmith.json" and temp names must stay under NAME_MAX (255)
_TABLE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _check_name(table: str) -> None:
    # a table name becomes a path component: never let it escape the store directory, and keep
    # the rule the message states (issue 21: `chunks.lance` made `chunks.lance.lance`; 300
    # characters was exit 74 "File name too long")
    if not _TABLE_NAME.fullmatch(table or ""):
        raise UsageError(f"invalid table name {table!r}: use letters, digits, '-' and '_'")
    if len(table) > TABLE_NAME_MAX:
        raise UsageError(f"invalid table name: {len(table)} characters, at most {TABLE_NAME_MAX}")


@contextlib.contextmanager
def table_lock(db: str | os.PathLike, table: str = DEFAULT_TABLE, *, wait: bool = False) -> Iterator[Path]:
    """Hold the table's exclusive write lock (flock on ``<db>/<table>.lock``).

    Raises LockedError (exit 75) naming the holder's pid when another process holds it,
    unless ``wait``. The lock dies with the process, so kill -9 never leaves it stale.
    """
    _check_name(table)
    path = lock_path(db, table)
    key = (os.path.realpath(path), threading.get_ident())
    if key in _HELD:  # re-entrant per thread: `index` keeps the lock from ingest through the build
        _HELD[key] += 1
        try:
            yield path
        finally:
            _HELD[key] -= 1
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StorageError(f"{path}: cannot open the lock file: {e.strerror}") from None
    try:
        _acquire(fd, path, wait)
        # write before truncating: a waiting process never reads an empty file
        pid = f"{os.getpid()}\n".encode()
        os.pwrite(fd, pid, 0)
        os.ftruncate(fd, len(pid))
        _HELD[key] = 1
        try:
            yield path
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # releases the flock


_HELD: dict[tuple[str, int], int] = {}  # (lock file, thread) held → nesting depth


def _acquire(fd: int, path: Path, wait: bool) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        if not wait:
            holder = os.pread(fd, 32, 0).decode(errors="replace").split("\n")[0].strip() or "unknown"
            raise LockedError(f"{path}: another writer (pid {holder}) holds this table",
                              hint="--wait to wait for it") from None
    log.info("waiting for the lock on %s", path)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a signal here raises Interrupted via the handler


# ------------------------------------------------------------------ opening and metadata


def connect(db: str | os.PathLike):
    from .lancedb_import import import_lancedb

    # every process that opens a store (each stage, each of index's child steps) would otherwise
    # pay for the REST client's import: ~0.55 s of lancedb's 1.4 s here (issue 12, issue 20)
    return import_lancedb().connect(str(db))


def table_exists(db: str | os.PathLike, table: str = DEFAULT_TABLE) -> bool:
    versions = table_path(db, table) / "_versions"
    # a killed first write can leave data files without any manifest: that is no table
    return versions.is_dir() and any(p.suffix == ".manifest" for p in versions.iterdir())


def open_table(db: str | os.PathLike, table: str = DEFAULT_TABLE):
    """The LanceDB table ``table`` of store ``db``; UsageError (exit 2) when it does not exist."""
    _check_name(table)
    if not table_exists(db, table):
        others = sorted(p.name[:-6] for p in Path(db).glob("*.lance")) if Path(db).is_dir() else []
        where = f"it has tables: {', '.join(others)}" if others else f"{db} holds no arrowsmith store"
        raise UsageError(f"no table {table!r} in {db} ({where})",
                         hint=f"arrowsmith chunk DOCS | arrowsmith embed --db {db} --table {table}")
    return connect(db).open_table(table)


def table_meta(table) -> dict[str, Any]:
    """The ``arrowsmith.*`` schema metadata of a stored table (JSON values decoded)."""
    return read_meta(table.schema)


def model_identity(model_meta: dict[str, Any] | None) -> dict[str, Any]:
    return {k: (model_meta or {}).get(k) for k in IDENTITY_KEYS}


def model_of(meta: dict[str, Any]) -> dict[str, Any]:
    """Accept either the decoded ``arrowsmith.model`` dict or a whole ``arrowsmith.*`` dict."""
    inner = meta.get(MODEL)
    return inner if isinstance(inner, dict) else meta


class DocKeys:
    """doc_id → doc_key of every stored document, in arrays of a few bytes a document.

    A dict of str cost ~200 bytes a document, and the whole-table scan that filled it grew with
    the table: ``chunk --db`` peaked at 609 MiB at a million rows against 322 MiB at 100k
    (benchmarks/RESULTS.md, "Issue 20: the nightly pipe's memory, flat"). Here each document is its
    id's UTF-8 bytes (one Arrow string array), ``hash(doc_id)`` (8 bytes; Python's str hash, so a
    ``DocKeys`` answers for the process that built it), a 16-byte BLAKE2b digest of its doc_key and
    one state byte, ordered by the hash: a lookup bisects the hashes and compares the id itself,
    so an id is never taken for another. doc_keys are sha256 hex of a document's content and
    settings; two of them agreeing in a 128-bit digest by chance is not a case to handle.
    """

    KEY, MIXED, REMOVED = 0, 1, 2  # a document's state: its key; chunks disagree (never current); pruned

    def __init__(self, ids: pa.Array | None = None, hashes: Any = None, digests: bytes = b"",
                 state: bytearray | None = None):
        import numpy as np

        self.ids = pa.array([], pa.string()) if ids is None else ids
        self._hashes = np.zeros(0, np.int64) if hashes is None else hashes
        self._digests = digests
        self._state = bytearray(len(self.ids)) if state is None else state
        self._hash_view = memoryview(np.ascontiguousarray(self._hashes, np.int64)).cast("B").cast("q")
        _, offsets, data = self.ids.buffers()
        # the id bytes, read without making an Arrow scalar per lookup (~1 µs each)
        wide = pa.types.is_large_string(self.ids.type)
        self._offsets = memoryview(offsets or b"").cast("q" if wide else "i")[self.ids.offset:]
        self._data = memoryview(data or b"").cast("B")  # unsigned, as bytes compare (Arrow's is "b")

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def digest(doc_key: str) -> bytes:
        return blake2b(doc_key.encode(), digest_size=16).digest()

    def find(self, doc_id: str) -> int:
        """The document's position, or -1 when the table does not hold it (or it was pruned)."""
        h = hash(doc_id)
        # bisect over a memoryview: a third of np.searchsorted's cost for one value (asked once
        # per input document, ~200k a night at a million chunks)
        return self._find_from(bisect_left(self._hash_view, h), h, doc_id)

    def find_all(self, doc_ids: Sequence[str]) -> list[int]:
        """:meth:`find` of each id, the bisections in one numpy call (chunk asks a batch at once)."""
        import numpy as np

        hashes = np.fromiter((hash(d) for d in doc_ids), np.int64, len(doc_ids))
        starts = np.searchsorted(self._hashes, hashes).tolist()
        return [self._find_from(i, h, d) for i, h, d in zip(starts, hashes.tolist(), doc_ids, strict=True)]

    def _find_from(self, i: int, h: int, doc_id: str) -> int:
        raw = doc_id.encode()
        hashes = self._hash_view
        while i < len(hashes) and hashes[i] == h:
            if self._data[self._offsets[i]:self._offsets[i + 1]] == raw:
                return -1 if self._state[i] == self.REMOVED else i
            i += 1
        return -1

    def holds(self, i: int, doc_key: str) -> bool:
        """Is ``doc_key`` the key of the document at position ``i`` (all its chunks')?"""
        return self._state[i] == self.KEY and self._digests[16 * i:16 * i + 16] == self.digest(doc_key)

    def remove(self, i: int) -> None:
        self._state[i] = self.REMOVED

    def present(self) -> Iterator[int]:
        """Positions of the documents not removed."""
        return (i for i, s in enumerate(self._state) if s != self.REMOVED)


def load_doc_keys(table) -> DocKeys:
    """The doc_id → doc_key of every stored document, streamed by batches (no vectors).

    Each batch is reduced to one entry per document before the next is read, then the entries of
    all batches are merged (a document's chunks may lie in several: a changed one's are rewritten
    at the table's end). A streaming scan of these two narrow columns stays small (its read-ahead
    is what grew with a table of vectors, see :func:`scan_batches`); taking them by ranges of row
    ids, as scan_batches does, grew by 140 MiB over a million rows here. A document whose chunks
    disagree on doc_key is mixed, so it is never current.
    """
    import numpy as np
    import pyarrow.compute as pc

    ids, hashes, digests, mixed = [], [], [], []
    for batch in table.search().select(["doc_id", "doc_key"]).limit(None).to_batches(SCAN_ROWS):
        # one entry per run of rows with the same doc_id (a document's chunks are mostly stored
        # together); a group_by per batch here kept 30 MiB more at a million rows
        doc, key = batch.column("doc_id"), batch.column("doc_key")
        if len(doc) == 0:
            continue
        new, differs = np.ones(len(doc), bool), np.zeros(len(doc), bool)
        new[1:], differs[1:] = _differs_from_previous(doc), _differs_from_previous(key)
        starts = np.flatnonzero(new)
        run_mixed = np.logical_or.reduceat(differs & ~new, starts)
        run_ids, run_keys = doc.take(pa.array(starts)), key.take(pa.array(starts))
        run_mixed |= ~pc.is_valid(run_keys).to_numpy(zero_copy_only=False)
        valid = pc.is_valid(run_ids)  # a null doc_id is no document to look up (the writer refuses it)
        run_ids, run_keys, run_mixed = (run_ids.filter(valid), run_keys.filter(valid),
                                        run_mixed[valid.to_numpy(zero_copy_only=False)])
        ids.append(run_ids)
        hashes.append(np.fromiter((hash(d) for d in run_ids.to_pylist()), np.int64, len(run_ids)))
        digests.append(b"".join(bytes(16) if k is None else DocKeys.digest(k) for k in run_keys.to_pylist()))
        mixed.append(run_mixed)
    if not ids:
        return DocKeys()
    all_ids = pa.concat_arrays(ids)
    all_hashes = np.concatenate(hashes)
    all_mixed = np.concatenate(mixed)
    all_digests = np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 16)
    del ids, hashes, digests, mixed
    # one document's entries from several batches end up side by side
    order = pc.sort_indices(pa.table({"h": all_hashes, "id": all_ids}),
                            sort_keys=[("h", "ascending"), ("id", "ascending")]).to_numpy()
    all_ids, all_hashes = all_ids.take(pa.array(order)), all_hashes[order]
    all_mixed, all_digests = all_mixed[order], all_digests[order]
    repeat = np.zeros(len(order), bool)  # the same document as the entry before
    if len(order) > 1:
        repeat[1:] = (all_hashes[1:] == all_hashes[:-1]) & pc.equal(
            all_ids.slice(1), all_ids.slice(0, len(order) - 1)).to_numpy(zero_copy_only=False)
    # a document is mixed when any batch found it so or two batches found different keys
    all_mixed[1:] |= repeat[1:] & (all_digests[1:] != all_digests[:-1]).any(axis=1)
    first = np.flatnonzero(~repeat)
    doc_mixed = np.logical_or.reduceat(all_mixed, first)
    state = bytearray(np.where(doc_mixed, DocKeys.MIXED, DocKeys.KEY).astype(np.uint8).tobytes())
    keep = pa.array(first)
    return DocKeys(all_ids.take(keep), all_hashes[first], all_digests[first].tobytes(), state)


def _differs_from_previous(values: pa.Array):
    """Per value after the first (numpy bool): does it differ from the one before? A null does."""
    import pyarrow.compute as pc

    n = len(values)
    return pc.fill_null(pc.not_equal(values.slice(1), values.slice(0, n - 1)), True).to_numpy(
        zero_copy_only=False)


# ------------------------------------------------------------------ the sidecar state, damage


def load_state(db: str | os.PathLike, table: str = DEFAULT_TABLE) -> dict[str, Any]:
    """``<table>.arrowsmith.json``: what `index` built and at which version, and the last version
    a writer committed (``committed_version``); {} when there is none."""
    try:
        state = json.loads(state_path(db, table).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(db: str | os.PathLike, table: str, state: dict[str, Any]) -> None:
    """Replace the sidecar atomically (call it under :func:`table_lock`)."""
    path = state_path(db, table)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)  # a kill leaves the old state, which only triggers a re-check


def recorded_version(state: dict[str, Any]) -> int | None:
    """The newest table version arrowsmith saw committed (by a writer or by `index`)."""
    seen = [v for v in (state.get("version"), state.get("committed_version")) if isinstance(v, int)]
    return max(seen) if seen else None


def _record_commit(db: str | os.PathLike, table: str, version: int, *, created: bool) -> None:
    # issue 21: a lost newest manifest silently rolls the table back; doctor compares the table's
    # version with this record. A new table starts a new record (the old one described another
    # table: its indexes are gone with it).
    state = {} if created else load_state(db, table)
    state["committed_version"] = version
    try:
        save_state(db, table, state)
    except OSError as e:  # the commit itself succeeded: the record is advisory
        log.warning("%s: could not record version %s: %s", state_path(db, table), version, e.strerror)


_NOT_FOUND = re.compile(r"Not found: (?!Wrapped error)(.+?)(?:, /|, [a-z]+://|,\s|$)", re.MULTILINE)


def missing_path(error: BaseException) -> str | None:
    """The file a Lance "Not found" error names (a deleted data or index file), else None."""
    m = _NOT_FOUND.search(str(error))
    return m.group(1).strip() if m else None


def describe_missing(db: str | os.PathLike, table: str, path: str) -> str:
    """``chunks.lance/data/x.lance is missing (a data file)``, relative to the store."""
    root = table_path(db, table)
    # Lance names it as an object-store path: absolute, or without its leading "/"
    candidates = [Path(path)] if path.startswith("/") else [Path("/" + path), Path(path)]
    shown = path
    for candidate in candidates:
        with contextlib.suppress(ValueError):
            shown = str(candidate.resolve().relative_to(Path(db).resolve()))
            break
    parts = Path(path).parts
    kind = "an index file" if "_indices" in parts else "a data file" if "data" in parts else "a file"
    return f"{shown} is missing ({kind} of {root.name})"


@contextlib.contextmanager
def read_errors(db: str | os.PathLike, table: str = DEFAULT_TABLE) -> Iterator[None]:
    """A file of the table deleted from under it (Lance "Not found") → StorageError (exit 74)
    naming the file and what repairs it, instead of a raw Lance error (issue 21)."""
    try:
        yield
    except (RuntimeError, OSError, ValueError) as e:
        path = missing_path(e)
        if path is None:
            raise
        what = describe_missing(db, table, path)
        opts = f"--db {db}" + (f" --table {table}" if table != DEFAULT_TABLE else "")
        fix = (f"the index cannot be opened; `arrowsmith index {opts}` rebuilds it" if "an index file" in what
               else f"the table cannot be read; `arrowsmith doctor {opts}` reports the damage")
        # one line (a cron mail's subject), the repair included
        raise StorageError(f"{what}: {fix}") from None


def unreadable_indexes(tbl: Any, names: list[str] | None = None) -> dict[str, str]:
    """name → error of each index the table lists (or of ``names``) that cannot be opened (files
    deleted or damaged).

    LanceDB lists an index from the manifest alone; ``prewarm_index`` opens its files (cheap for
    scalar and FTS indexes; a vector index's partitions are read into the cache).
    """
    broken = {}
    for name in [ix.name for ix in tbl.list_indices()] if names is None else names:
        try:
            tbl.prewarm_index(name)
        except Exception as e:  # noqa: BLE001 - whatever Lance raises, the index is unusable
            path = missing_path(e)
            broken[name] = f"{Path(path).name} is missing" if path else _first_line(e)
    return broken


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


@contextlib.contextmanager
def disk_errors(where: str | os.PathLike) -> Iterator[None]:
    """Disk full / read-only during a Lance call → StorageError (exit 74).

    Lance commits by atomically writing a new manifest, so the previous version stays intact.
    """
    try:
        yield
    except OSError as e:
        if e.errno in DISK_ERRNOS:
            raise StorageError(f"{where}: {e.strerror}; the previous table version is intact") from None
        raise
    except (RuntimeError, ValueError) as e:  # lance surfaces io errors as these
        text = str(e)
        if "No space left" in text or "Disk quota" in text or "Read-only file system" in text:
            first = text.strip().splitlines()[0][:200]
            raise StorageError(f"{where}: {first}; the previous table version is intact") from None
        raise


# ------------------------------------------------------------------ the writer


@dataclass
class WriteStats:
    docs_written: int = 0  # new or changed documents committed
    docs_replaced: int = 0  # of those, documents that were stored before with another doc_key
    docs_skipped: int = 0  # already current (not embedded, not written)
    docs_pruned: int = 0
    rows_added: int = 0  # chunk rows written (inserted or replacing a row with the same id)
    rows_deleted: int = 0  # rows removed without replacement: stale chunks, pruned documents
    checkpoints: int = 0  # Lance commits made for data (pruning deletes included)
    seconds: float = 0.0
    version: int | None = None  # table version after the last commit

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.docs_written} documents written ({self.docs_replaced} replaced), "
                f"{self.docs_skipped} unchanged, {self.docs_pruned} pruned; "
                f"{self.rows_added} rows written, {self.rows_deleted} deleted "
                f"in {self.checkpoints} commits, {self.seconds:.1f}s")


class StoreWriter:
    """Upsert embedded chunks into ``<db>/<table>.lance`` by document, under the table lock.

    >>> with StoreWriter("store") as w:
    ...     w.check_meta(model.describe())
    ...     stats = w.write(embed_batches(docs, model, skip_doc=w.is_current))
    """

    def __init__(self, db: str | os.PathLike, table: str = DEFAULT_TABLE, *, replace: bool = False,
                 prune: bool = False, wait: bool = False, checkpoint_rows: int = 10_000):
        _check_name(table)
        if checkpoint_rows < 1:
            raise UsageError("checkpoint_rows must be at least 1")
        self.db, self.table_name = Path(db), table
        self.replace, self.prune, self.wait = replace, prune, wait
        self.checkpoint_rows = checkpoint_rows
        self.stats = WriteStats()
        self._lock: contextlib.AbstractContextManager | None = None
        self._conn = None
        self._table = None
        self._stored = DocKeys()  # the table's documents when opened (or none after a replace)
        self._written: dict[str, bytes] = {}  # doc_id → doc_key digest of documents this run wrote
        self._seen = bytearray()  # per stored document: in the input (kept only for prune)
        self._seen_any = False  # the input had a document
        self._counted = bytearray()  # per stored document: counted as skipped (written ones: _input_docs)
        self._input_docs: set[str] = set()  # doc ids that came through write(): each only once
        self._model: dict[str, Any] | None = None
        self._overwrite = False  # replace=True and a different model: next commit overwrites
        self._schema: pa.Schema | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_changed: list[str] = []
        self._pending_keys: dict[str, str] = {}

    # -- context ---------------------------------------------------------------------------
    def __enter__(self) -> StoreWriter:
        self._lock = table_lock(self.db, self.table_name, wait=self.wait)
        self._lock.__enter__()
        try:
            self._conn = connect(self.db)
            if table_exists(self.db, self.table_name):
                self._table = self._conn.open_table(self.table_name)
                with read_errors(self.db, self.table_name):
                    self._set_stored(load_doc_keys(self._table))
                self._schema = self._table.schema
                self.stats.version = self._table.version
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.__exit__(None, None, None)

    @property
    def table(self):
        """The LanceDB table (None until the first commit creates it)."""
        return self._table

    # -- the agreed API --------------------------------------------------------------------
    def check_meta(self, model_meta: dict[str, Any]) -> None:
        """Refuse a different model or dim than the table's (exit 2) unless ``replace``.

        With ``replace``, the first checkpoint overwrites the table (new schema, no indexes);
        the old rows stay in Lance's version history until ``index --optimize`` cleans it.
        """
        model = model_of(model_meta)
        if self._model is not None and model_identity(model) == model_identity(self._model):
            return
        stored = None if self._table is None else model_of(table_meta(self._table))
        if stored is None or self._overwrite:
            self._model = model
            return
        same_model = model_identity(stored) == model_identity(model)
        changed = _changed_settings(stored, model) if same_model else []
        if same_model and not changed:
            self._model = stored  # the table's record stays as it is (e.g. its precision)
            return
        if not self.replace:
            what = (f"was embedded with {', '.join(changed)}" if same_model else f"holds {_describe(stored)}")
            raise UsageError(
                f"table {self.table_name!r} in {self.db} {what}; refusing to add "
                + ("vectors made with other settings" if same_model else _describe(model)),
                hint="--replace to rebuild the table, or --table NEW for a new one")
        log.warning("replacing table %r: %s → %s", self.table_name,
                    _describe(stored) if not same_model else "settings " + ", ".join(changed),
                    _describe(model))
        self._model = model
        self._overwrite = True
        self._set_stored(DocKeys())
        self._schema = None

    def is_current(self, doc_id: str, doc_key: str) -> bool:
        """True when the stored document has this doc_key (so it need not be embedded again)."""
        _, current = self._lookup(doc_id, doc_key, counted=doc_id not in self._input_docs)
        return current

    def write(self, batches: Iterable[pa.RecordBatch]) -> WriteStats:
        """Upsert all batches (checkpoint by checkpoint), then prune if asked. Returns the stats."""
        start = time.perf_counter()
        try:
            for i, batch in enumerate(batches):
                if i == 0:
                    faults.hit("after_read")
                    self._start(batch.schema)
                self._add(batch)
                if self._pending_rows >= self.checkpoint_rows:
                    self._commit()
            self._commit()
            # only here: the input was read to its end without an error
            if self.prune:
                self._prune()
        finally:
            self.stats.seconds += time.perf_counter() - start
        return self.stats

    # -- batches → pending rows ------------------------------------------------------------
    def _add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        batch = conform_batch(batch, self._schema, "input", f"table {self.table_name!r}")
        docs, keys, codes = _doc_groups(batch)
        keep = [self._classify(d, k) for d, k in zip(docs, keys, strict=True)]
        if all(keep):
            self._append(batch)
        elif any(keep):
            import numpy as np

            self._append(batch.filter(pa.array(np.asarray(keep)[codes])))

    def _start(self, schema: pa.Schema) -> None:
        """First batch: check the stream's model against the table; fix the table schema."""
        require_columns(schema, EMBEDDED_CORE, "store")
        meta = read_meta(schema)
        if MODEL in meta:
            self.check_meta(meta[MODEL])
        elif self._model is None and self._table is not None:
            self._model = model_of(table_meta(self._table))  # the vector cast checks the dim
        elif self._model is None:
            raise DataError(f"input stream has no '{MODEL}' schema metadata, so the table "
                            "cannot record which model made its vectors",
                            hint="pipe the output of `arrowsmith embed`")
        if self._schema is None and MODEL in meta:
            self._model = meta[MODEL]  # a new table records the stream's settings (its codebook)
        self._keep_codebook(schema)
        if self._schema is not None:  # the table exists and keeps its schema
            return
        dim = self._model.get("dim") or _dim_of(schema)
        fields = [dense.field(int(dim)) if f.name == dense.COLUMN else
                  _uncompressed(f) if f.name == TEXT_COLUMN else f for f in schema]
        dropped = (SOURCE.encode(), codebooks.STREAM_KEY.encode())  # the codebook lives in its file
        metadata = {k: v for k, v in (schema.metadata or {}).items() if k not in dropped}
        metadata[MODEL.encode()] = json.dumps(self._model, sort_keys=True).encode()
        self._schema = pa.schema(fields, metadata=metadata)

    def _keep_codebook(self, schema: pa.Schema) -> None:
        """Token codes of a fitted precision: the codebook the stream carries is written beside the
        table before the first commit that uses it (a kill between leaves an unused file)."""
        tokens = multi.settings_of(self._model or {})
        if tokens is None or not tokens.fitted or not tokens.codebook:
            return
        book = codebooks.from_stream_metadata(schema.metadata)
        if book is None:
            if not codebooks.path(self.db, self.table_name, tokens.codebook).exists():
                raise DataError(f"the input's token vectors are coded with codebook {tokens.codebook[:16]}…, "
                                "which the stream does not carry and the store does not have",
                                hint="pipe the output of `arrowsmith embed --multivector` itself")
            return
        if book.sha256 != tokens.codebook:
            raise DataError(f"the input stream carries token codebook {book.sha256[:16]}… but its "
                            f"metadata names {tokens.codebook[:16]}…")
        with disk_errors(self.db):
            codebooks.save(self.db, self.table_name, book)

    def _classify(self, doc_id: str, doc_key: str) -> bool:
        """Count the document; True when its rows must be written."""
        if doc_id in self._input_docs:
            raise DataError(f"document {doc_id!r} appears in two batches of the input; all chunks of a "
                            "document must arrive together and a document only once")
        self._input_docs.add(doc_id)
        stored, current = self._lookup(doc_id, doc_key, counted=True)
        if current:
            return False
        self._pending_keys[doc_id] = doc_key
        if stored:
            self._pending_changed.append(doc_id)
        return True

    def _set_stored(self, stored: DocKeys) -> None:
        self._stored = stored
        self._counted = bytearray(len(stored))
        self._seen = bytearray(len(stored) if self.prune else 0)

    def _lookup(self, doc_id: str, doc_key: str, *, counted: bool) -> tuple[bool, bool]:
        """(stored, stored with this doc_key) of one input document; marks it seen (prune) and,
        when current and ``counted``, counts it skipped once."""
        self._seen_any = True
        written = self._written.get(doc_id)
        if written is not None:  # written by this run, so it is in _input_docs: never counted
            return True, written == DocKeys.digest(doc_key)
        i = self._stored.find(doc_id)
        if i < 0:
            return False, False
        if self.prune:
            self._seen[i] = 1
        current = self._stored.holds(i, doc_key)
        if current and counted and not self._counted[i]:
            self._counted[i] = 1
            self.stats.docs_skipped += 1
        return True, current

    def _append(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows

    # -- commits ---------------------------------------------------------------------------
    def _commit(self) -> None:
        if not self._pending:
            return
        data = pa.Table.from_batches(self._pending, schema=self._schema)
        changed = self._pending_changed
        faults.hit("before_commit")
        created = self._table is None
        with no_interrupt(), disk_errors(table_path(self.db, self.table_name)):
            deleted = self._commit_data(data, changed)
            # bookkeeping inside the block: a deferred Ctrl-C is raised after it, with stats true
            self._written.update((d, DocKeys.digest(k)) for d, k in self._pending_keys.items())
            self.stats.docs_written += len(self._pending_keys)
            self.stats.docs_replaced += len(changed)
            self.stats.rows_added += data.num_rows
            self.stats.rows_deleted += deleted
            self.stats.checkpoints += 1
            self.stats.version = self._table.version
            _record_commit(self.db, self.table_name, self._table.version, created=created)
            self._pending, self._pending_rows = [], 0
            self._pending_changed, self._pending_keys = [], {}
        log.debug("checkpoint %d: %d rows, version %s", self.stats.checkpoints, data.num_rows,
                  self.stats.version)
        faults.hit("after_commit")

    def _commit_data(self, data: pa.Table, changed: list[str]) -> int:
        """One Lance commit; returns the rows deleted without replacement."""
        if self._table is None:
            self._table = self._conn.create_table(self.table_name, data)
            return 0
        if self._overwrite:
            before = self._table.count_rows()
            self._table.add(data, mode="overwrite")
            self._overwrite = False
            return before
        if not changed:
            self._table.add(data)
            return 0
        # A changed document's rows are added, then its old rows deleted by row id in a second
        # commit. merge_insert on id (rows updated by id in one commit) read the id index: that
        # commit grew the night's embed --prune by 94-100 MiB at a million rows, this one by
        # 32-49 (benchmarks/RESULTS.md, "Issue 20: the writer's commits"). Between the two commits a
        # reader may see the document's old chunks beside its new ones; a kill -9 there leaves
        # both, with two doc_keys: the document is not current, doctor reports its repeated ids,
        # and the re-run replaces all of its rows.
        old_rows: list[int] = []
        old_ids: set[str] = set()
        for _, where in id_filters(changed, "doc_id"):
            found = self._table.search().where(where).with_row_id(True).select(["id"]).limit(None).to_arrow()
            old_rows += found.column("_rowid").to_pylist()
            old_ids.update(found.column("id").to_pylist())
        self._table.add(data)
        faults.hit("between_add_and_delete")
        delete_row_ids(self._table, old_rows)
        return len(old_ids - set(data.column("id").to_pylist()))

    def _prune(self) -> None:
        # a document this run wrote is seen; one it replaced is seen where the table held it
        unseen = [i for i in self._stored.present() if not self._seen[i]]
        ids = self._stored.ids.take(pa.array(unseen, pa.int64())).to_pylist()
        gone = sorted(zip(ids, unseen, strict=True))
        if not gone:
            return
        if not self._seen_any:
            # an empty input (every file skipped upstream, a failed export) is far more often an
            # accident than a wish to empty the table: keep it, and say so
            log.warning("input had no documents: not pruning the %d stored in %r (delete the table "
                        "to empty it)", len(gone), self.table_name)
            return
        for start in range(0, len(gone), PRUNE_BATCH):
            part = gone[start:start + PRUNE_BATCH]
            faults.hit("during_prune")
            with no_interrupt(), disk_errors(table_path(self.db, self.table_name)):
                result = self._table.delete(sql_in("doc_id", (d for d, _ in part)))
                for _, i in part:
                    self._stored.remove(i)
                self.stats.docs_pruned += len(part)
                self.stats.rows_deleted += int(getattr(result, "num_deleted_rows", 0) or 0)
                self.stats.checkpoints += 1
                self.stats.version = self._table.version
                _record_commit(self.db, self.table_name, self._table.version, created=False)


# ------------------------------------------------------------------ helpers


# recorded for information only: fp32 and bf16/fp16 vectors share one space (cosine ≥ 0.999)
UNCHECKED_SETTINGS = ("precision", "dtype")
LATE_ONLY_SETTINGS = ("window", "window_overlap", "late_specials")


TEXT_COLUMN = "text"
# Lance compresses string columns by default. The chunk text is most of a row after its vector,
# and every night's `index` rewrites the fragments that hold deleted rows: at a million rows the
# text's compression took 4.2-4.7 s of CPU of that rewrite, 1.7-2.1 s without it, and writing the
# million rows 4.9-6.3 s against 2.1-2.4 s; the data files are 21% bigger (1.64 against 1.35 GB).
# benchmarks/RESULTS.md, "Issue 20: the text column stored uncompressed". Lance keeps a field's
# encoding hint in the table's schema, so later appends and compactions write it the same way.
_TEXT_ENCODING = {b"lance-encoding:compression": b"none"}


def _uncompressed(field: pa.Field) -> pa.Field:
    return field.with_metadata({**(field.metadata or {}), **_TEXT_ENCODING})


def _changed_settings(stored: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """'key=stored' for every recorded setting this run would change (prompt, late, window…).

    The table's metadata must describe every vector in it (query reads its query prompt and dim
    from there), so a run with other settings may not mix its vectors into the table.
    """
    keys = sorted((set(stored) | set(model)) - set(UNCHECKED_SETTINGS))
    if stored.get("late") != model.get("late"):  # the window settings exist on one side only
        keys = [k for k in keys if k not in LATE_ONLY_SETTINGS]
    return [f"{k}={stored.get(k)!r} (this run: {model.get(k)!r})"
            for k in keys if stored.get(k) != model.get(k)]


def sql_in(column: str, values: Iterable[str]) -> str:
    """``column IN ('a', 'b')``, quotes doubled: ids are data, never SQL."""
    return f"{column} IN (" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def id_filters(values: Sequence[str], column: str = "id", batch: int = IN_LIST_MAX
               ) -> Iterator[tuple[Sequence[str], str]]:
    """``(part, sql_in(column, part))`` for consecutive slices of at most ``batch`` values."""
    for i in range(0, len(values), batch):
        part = values[i:i + batch]
        yield part, sql_in(column, part)


def delete_row_ids(tbl: Any, row_ids: Sequence[int]) -> None:
    """Delete these rows by ``_rowid``, at most IN_LIST_MAX in one ``IN`` list (one commit each)."""
    for start in range(0, len(row_ids), IN_LIST_MAX):
        part = row_ids[start:start + IN_LIST_MAX]
        tbl.delete(f"_rowid IN ({', '.join(str(int(r)) for r in part)})")


def scan_batches(tbl: Any, columns: list[str], batch_rows: int = SCAN_ROWS, *,
                 row_ids: Any = None) -> Iterator[pa.RecordBatch]:
    """The table's ``columns`` as record batches of at most ``batch_rows`` rows, in table order:
    bounded memory. Nothing may write through ``tbl`` meanwhile (callers pin a version or only read).
    ``row_ids`` (numpy, ascending): only these rows.

    The row ids are read first (8 bytes a row, nothing else), then each range of them is taken:
    a streaming query reads ahead as far as its buffers allow, so its memory grew with the table
    (a million 256-dim vectors peaked at 561 MiB against 339 MiB by ranges; benchmarks/RESULTS.md,
    "A million chunks"). Ranges of row *offsets* (``take_offsets``) were 150x slower on a fragment
    with deleted rows (100k rows with 1% deleted: 82 s against 0.56 s; 0.44 s by row ids), which
    every table has once a night's `--prune` or changed documents delete from a compacted fragment.
    """
    if row_ids is None:
        row_ids = tbl.search().with_row_id(True).select(["_rowid"]).limit(None).to_arrow().column("_rowid")
        row_ids = row_ids.to_numpy()
    for start in range(0, len(row_ids), batch_rows):
        part = tbl.take_row_ids(row_ids[start:start + batch_rows].tolist()).select(columns).to_arrow()
        yield from part.combine_chunks().to_batches()


def _describe(model: dict[str, Any]) -> str:
    ident = model_identity(model)
    rev = f"@{ident['revision']}" if ident["revision"] else ""
    return f"{ident['plugin'] or '?'}:{ident['name']}{rev} (dim {ident['dim']})"


def _dim_of(schema: pa.Schema) -> int:
    dim = dense.dim_of(schema)
    if dim is not None:
        return dim
    t = schema.field(dense.COLUMN).type if dense.COLUMN in schema.names else None
    raise DataError("cannot tell the vector dim: no 'dim' in the model metadata and the vector "
                    f"column is {t}, not a fixed-size list")


def _doc_groups(batch: pa.RecordBatch) -> tuple[list[str], list[str], Any]:
    """The batch's distinct doc_ids, their doc_key, and each row's doc index (numpy)."""
    import numpy as np
    import pyarrow.compute as pc

    ids = batch.column("id")
    if ids.null_count or batch.column("doc_id").null_count or batch.column("doc_key").null_count:
        raise DataError("input has null id, doc_id or doc_key values")
    if pc.count_distinct(ids).as_py() != batch.num_rows:
        counts = pc.value_counts(ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise DataError(f"chunk id {dup!r} appears more than once in the input",
                        hint="chunk ids must be unique; check the documents' ids for duplicates")
    encoded = batch.column("doc_id").dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    keys = batch.column("doc_key").take(pa.array(first))
    if not pc.all(pc.equal(batch.column("doc_key"), keys.take(encoded.indices))).as_py():
        raise DataError("the chunks of one document carry different doc_keys")
    return encoded.dictionary.to_pylist(), keys.to_pylist(), codes


# ------------------------------------------------------------------ stale files (optimize, doctor)


def stale_files(db: str | os.PathLike, table: str = DEFAULT_TABLE, *, grace_s: float = 3600) -> list[Path]:
    """Files a killed writer left in the table, older than ``grace_s`` seconds.

    Empty ``_indices/<uuid>/`` directories of a failed index build, and two kinds of files:
    ``.tmp*`` staging files (Lance writes those and renames them), and data/index
    files that no manifest references (written, never committed). Lance's own cleanup only
    removes the latter once older than its version window, and never the former.
    """
    root = table_path(db, table)
    if not root.is_dir():
        return []
    cutoff = time.time() - grace_s
    referenced = _referenced_names(root)
    out = _empty_index_dirs(root, cutoff)
    for sub in ("data", "_indices", "_deletions"):
        base = root / sub
        if not base.is_dir():
            continue
        for p in base.rglob("*"):
            if not p.is_file() or p.stat().st_mtime > cutoff:
                continue
            if p.name.startswith(".tmp") or "#" in p.name:
                out.append(p)
            elif referenced is not None and sub == "data" and p.name not in referenced:
                out.append(p)
    return sorted(out)


def _empty_index_dirs(root: Path, cutoff: float) -> list[Path]:
    """``_indices/<uuid>/`` directories with nothing in them: an index build that failed (a full
    disk) before writing its first file (issue 21). No version can use an empty index."""
    base = root / "_indices"
    if not base.is_dir():
        return []
    out = []
    for p in base.iterdir():
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if p.is_dir() and not any(p.iterdir()) and p.stat().st_mtime <= cutoff:
                out.append(p)
    return out


def remove_stale(path: Path) -> bool:
    """Remove one stale file or empty index directory; False when it is already gone (or a
    directory that is no longer empty: a writer is filling it)."""
    try:
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()
    except (FileNotFoundError, OSError) as e:
        if isinstance(e, FileNotFoundError) or e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def _referenced_names(root: Path) -> set[str] | None:
    """Data file names that some manifest mentions; None when that cannot be told reliably.

    Manifests are protobuf with the file paths as plain strings, so a byte search is exact
    for these 50-character unique names. As a guard, every data file of the newest
    manifest must be found; otherwise orphans are not judged at all.
    """
    data = root / "data"
    names = [p.name for p in data.glob("*.lance")] if data.is_dir() else []
    manifests = sorted((root / "_versions").glob("*.manifest"))
    if not manifests:
        return None
    blobs = [m.read_bytes() for m in manifests]
    referenced = {n for n in names if any(n.encode() in b for b in blobs)}
    newest = min(manifests, key=lambda m: int(m.stem)) if _v2_names(manifests) else \
        max(manifests, key=lambda m: int(m.stem))
    expected = _manifest_file_count(newest)
    found = sum(1 for n in names if n.encode() in newest.read_bytes())
    if expected is None or found < expected:
        return None
    return referenced


def _v2_names(manifests: list[Path]) -> bool:
    # v2 manifest paths count down from u64::MAX, so the newest has the smallest number
    return any(len(m.stem) >= 19 for m in manifests)


def _manifest_file_count(manifest: Path) -> int | None:
    """How many data files the version has (from LanceDB's version metadata)."""
    try:
        import lancedb  # noqa: F401 - only to be sure the table opens

        root = manifest.parent.parent
        tbl = connect(root.parent).open_table(root.name[:-6])
        return int(tbl.list_versions()[-1]["metadata"]["total_data_files"])
    except Exception:  # noqa: BLE001 - a guard: any doubt means "do not judge orphans"
        return None


def remove_stale_files(db: str | os.PathLike, table: str = DEFAULT_TABLE, *,
                       grace_s: float = 3600) -> list[Path]:
    """Delete :func:`stale_files`; call it under :func:`table_lock` (no writer may be mid-commit)."""
    return [p for p in stale_files(db, table, grace_s=grace_s) if remove_stale(p)]
