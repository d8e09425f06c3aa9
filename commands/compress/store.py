"""Compressed representations kept in the store, beside the table they compress.

``<table>__compressed`` is a companion LanceDB table, one row per row of the
source table: ``id``, ``code`` (the first-stage code, ``fixed_size_binary``) and,
with int8 rescoring, ``rescore`` (full-dimension int8 codes, read from disk for
the candidates only). Its schema metadata ``arrowsmith.compress`` holds the
method, the fitted parameters (int8 ranges, PQ codebooks) and the source
table's version and content fingerprint, so a table that changed since
compression is detected and never served stale results.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from hashlib import blake2b
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from arrowsmith.commands.errors import DataError, UsageError
from arrowsmith.commands.schemas import MODEL, read_meta, stage_metadata
from arrowsmith.commands.signals import no_interrupt
from arrowsmith.commands.spaces import dense
from arrowsmith.commands.store import SCAN_ROWS, scan_batches
from arrowsmith.commands.units import format_size

from .codecs import Calibration, Codec, Int8Codec, MethodSpec, make_codec, parse_method, transform
from .search import CompressedIndex, Rescorer

log = logging.getLogger("arrowsmith.compress")

SUFFIX = "__compressed"
META_KEY = "arrowsmith.compress"
FORMAT = 1
KEY_COLUMN = "doc_key"  # the companion keeps each row's doc_key: what tells a re-embedded chunk
# A re-run codes only the rows added since the companion's source version (and drops those gone)
# with the parameters fitted then (the binary centre, int8 ranges, PQ codebooks), until the rows
# added and removed since that fit pass this share of the rows it was fitted on; then everything
# is fitted and coded again. A night's 1% changed and 1% deleted moved a million-row table's mean
# by far less than a bit's worth (benchmarks/RESULTS.md, "Issue 20: the nightly index and compress").
REFIT_SHARE = 0.2


def companion_name(table: str) -> str:
    return table + SUFFIX


# ------------------------------------------------------------------ reading the source table


def vector_dim(tbl, table: str) -> int:
    """The dimension of the table's ``vector`` column; UsageError (exit 2) when there is none."""
    schema = tbl.schema
    if dense.COLUMN not in schema.names:
        raise UsageError(f"table {table!r} has no {dense.COLUMN!r} column (it has: "
                         f"{', '.join(schema.names)}), so there is nothing to compress",
                         hint="compress a table written by `arrowsmith embed --db`")
    t = schema.field(dense.COLUMN).type
    if not (pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type)):
        raise UsageError(f"table {table!r}: column {dense.COLUMN!r} is {t}, not a fixed-size list of floats")
    return t.list_size


def vectors_of(batch: pa.RecordBatch | pa.Table, dim: int) -> np.ndarray:
    """``[n, dim]`` float32 dense vectors of a batch (``dim``: the table's, checked)."""
    vectors = dense.decode(batch.column(dense.COLUMN))
    if vectors.shape[1] != dim:
        raise DataError(f"vectors of dim {vectors.shape[1]} where the table's is {dim}")
    return vectors


def content_fingerprint(tbl) -> str:
    """A digest of the table's (id, doc_key) pairs — or (id, vector) without doc_key.

    Survives what does not change the vectors (index builds, compaction, which may reorder
    rows); any added, deleted or re-embedded chunk changes it. Read in bounded batches and
    combined in any order (a sum of per-row 128-bit hashes, with the row count): holding the
    whole column to sort it grew with the table.
    """
    cols = ["id", "doc_key"] if "doc_key" in tbl.schema.names else ["id", dense.COLUMN]
    sums = _DigestSums()
    for batch in scan_batches(tbl, cols):
        if cols[1] == dense.COLUMN:
            sums.add(batch.column("id").to_pylist(),
                     [row.tobytes() for row in dense.decode(batch.column(dense.COLUMN))])
        else:
            sums.add_keyed(batch)
    return sums.fingerprint(cols)


_MASK = 0xFFFFFFFFFFFFFFFF


class _DigestSums:
    """Rows, and the sums of the low and high halves of their 128-bit (id, value) digests: what a
    fingerprint is made of. A sum, so rows can be added and taken out in any order."""

    def __init__(self, rows: int = 0, lo: int = 0, hi: int = 0):
        self.rows, self.lo, self.hi = rows, lo, hi

    @classmethod
    def of(cls, fingerprint: str) -> _DigestSums:
        _, rows, _, sums = fingerprint.split(":")
        return cls(int(rows), int(sums[16:], 16), int(sums[:16], 16))

    def add(self, ids: list[str], values: list[bytes], sign: int = 1) -> None:
        digests = b"".join([blake2b(v + b"\0" + i.encode(), digest_size=16).digest()
                            for i, v in zip(ids, values, strict=True)])
        halves = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
        # wraps mod 2**64, as the digest is
        self.rows += sign * len(ids)
        self.lo += sign * int(halves[:, 0].sum(dtype=np.uint64))
        self.hi += sign * int(halves[:, 1].sum(dtype=np.uint64))

    def add_keyed(self, batch: pa.RecordBatch | pa.Table, sign: int = 1) -> None:
        """The rows of a batch with ``id`` and ``doc_key`` (a null key digests as an empty one)."""
        self.add(batch.column("id").to_pylist(),
                 [(v or "").encode() for v in batch.column(KEY_COLUMN).to_pylist()], sign)

    def fingerprint(self, cols: list[str]) -> str:
        return f"sum128:{self.rows}:{','.join(cols)}:{self.hi & _MASK:016x}{self.lo & _MASK:016x}"


def _pair_hashes(batch: pa.RecordBatch) -> np.ndarray:
    """Each row's ``hash((id, doc_key))`` (int64; a null key as an empty one): what tells the
    table's rows from the companion's in 8 bytes a row. Python's hash, so both sides are hashed in
    one process; two different pairs match only on a 64-bit collision of a keyed hash."""
    ids = batch.column("id").to_pylist()
    keys = pc.fill_null(batch.column(KEY_COLUMN), "").to_pylist()
    return np.fromiter(map(hash, zip(ids, keys, strict=True)), dtype=np.int64, count=len(ids))


# ------------------------------------------------------------------ compress


@dataclass
class CompressStats:
    table: str
    method: str
    rows: int
    dim: int
    bytes_per_vector: int
    ratio: float
    memory_bytes: int
    disk_bytes: int
    source_version: int
    seconds: float
    coded: int = 0  # rows coded by this run: all of them, or those added since the last run
    removed: int = 0  # rows of the last run dropped (deleted or re-embedded since)
    refitted: bool = True  # parameters fitted anew (False: the last full run's kept)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        how = "" if self.refitted else (
            f" (coded the {self.coded} rows added since the last run, dropped {self.removed}; "
            "parameters of the last full run kept)")
        return (f"compressed {self.rows} vectors of {self.table!r} with {self.method}{how}: "
                f"{self.bytes_per_vector} B/vector ({self.ratio:.1f}x smaller than float32), "
                f"{format_size(self.memory_bytes)} in memory, {format_size(self.disk_bytes)} on disk, "
                f"{self.seconds:.1f}s")


def calibrate(tbl, spec: MethodSpec, dim: int, *, full: bool) -> tuple[Calibration, Calibration | None]:
    """One pass: statistics of the codec's input, and of the full vectors for int8 rescoring."""
    calib = Calibration(spec.truncate or dim)
    calib_full = Calibration(dim) if full else None
    for batch in scan_batches(tbl, [dense.COLUMN]):
        x = vectors_of(batch, dim)
        calib.update(transform(spec, x))
        if calib_full is not None:
            calib_full.update(x)
    return calib, calib_full


def fit_method(spec: MethodSpec, dim: int, calib: Calibration,
               calib_full: Calibration | None) -> tuple[Codec, Int8Codec | None]:
    codec = make_codec(spec, dim)
    codec.fit(calib)
    rescore_codec = None
    if calib_full is not None:
        rescore_codec = Int8Codec(dim)
        rescore_codec.fit(calib_full)
    return codec, rescore_codec


def compress_table(db: str | os.PathLike, table: str = "chunks", method: str | MethodSpec = "int8", *,
                   rescore: int | None = None, rescore_with: str | None = None,
                   pq_bytes: int | None = None, wait: bool = False) -> CompressStats:
    """Write ``<table>__compressed`` for ``method``; the source table is only read.

    Everything that can be refused (unknown method, ``--bytes`` not dividing the
    dimension, no vector column, empty table) is refused before anything is written.
    """
    from arrowsmith.commands.store import open_table, table_lock

    spec = method if isinstance(method, MethodSpec) else parse_method(
        method, rescore=rescore, rescore_with=rescore_with, pq_bytes=pq_bytes)
    tbl = open_table(db, table)
    dim = vector_dim(tbl, table)
    make_codec(spec, dim)  # validates --bytes / truncate against dim before any write
    version = tbl.version
    tbl.checkout(version)  # every pass reads the same version, whatever writers do meanwhile
    rows = tbl.count_rows()
    if rows == 0:
        raise UsageError(f"table {table!r} is empty: nothing to compress")
    start = time.perf_counter()
    with table_lock(db, companion_name(table), wait=wait):
        update = _update_companion(db, table, tbl, spec, dim, rows, version)
        if update is not None:
            per, rescore_bytes, coded, removed = update
        else:
            need_int8 = bool(spec.rescore) and spec.rescore_with == "int8"
            calib, calib_full = calibrate(tbl, spec, dim, full=need_int8)
            codec, rescore_codec = fit_method(spec, dim, calib, calib_full)
            meta = _metadata(tbl, table, spec, codec, rescore_codec, dim, rows, version)
            _write_companion(db, table, tbl, spec, codec, rescore_codec, dim, meta)
            per, rescore_bytes = codec.code_bytes, rescore_codec.code_bytes if rescore_codec else 0
            coded, removed = rows, 0
    seconds = time.perf_counter() - start
    disk = rows * (per + rescore_bytes)
    return CompressStats(table, spec.label, rows, dim, per, 4 * dim / per, rows * per, disk, version, seconds,
                         coded=coded, removed=removed, refitted=update is None)


def _update_companion(db, table: str, tbl, spec: MethodSpec, dim: int, rows: int, version: int
                      ) -> tuple[int, int, int, int] | None:
    """Bring the companion up to ``tbl`` by coding only the rows it lacks and deleting those the
    table no longer holds, with its fitted parameters: ``(code bytes, rescore code bytes, rows
    coded, rows removed)``. None where a full run is due: no companion of this method, spec and
    dim, one without doc_keys (or a table without), an earlier update cut short, or the rows
    added and removed since the fit past REFIT_SHARE.

    A row is the same when its (id, doc_key) is: a re-embedded chunk keeps its id but not its
    doc_key. The codes equal a full run's with the same parameters, row for row."""
    from arrowsmith.commands.store import connect, delete_row_ids, disk_errors, table_exists

    name = companion_name(table)
    if KEY_COLUMN not in tbl.schema.names or not table_exists(db, name):
        return None
    comp = connect(db).open_table(name)
    info = companion_meta(comp.schema)
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("spec") != asdict(spec) \
            or info.get("dim") != dim or KEY_COLUMN not in comp.schema.names or info.get("updating") \
            or comp.count_rows() != info.get("rows") \
            or str(info.get("source", {}).get("fingerprint")).split(":")[2:3] != [f"id,{KEY_COLUMN}"]:
        return None
    change = _changed_rows(tbl, comp, info["rows"])
    if change is None:
        return None
    added, removed = change
    fit = info.get("fit") or {"rows": info["rows"], "changed": 0}
    changed = fit["changed"] + len(added) + len(removed)
    if changed > REFIT_SHARE * fit["rows"]:
        return None
    codec = make_codec(spec, dim)
    codec.load_params(info["codec"])
    rescore_codec = None
    if info.get("rescore_codec"):
        rescore_codec = Int8Codec(dim)
        rescore_codec.load_params(info["rescore_codec"])
    sums = _DigestSums.of(info["source"]["fingerprint"])
    for batch in scan_batches(comp, ["id", KEY_COLUMN], row_ids=removed):
        sums.add_keyed(batch, -1)
    schema = comp.schema
    with disk_errors(db), no_interrupt():
        # marked first: a run cut short between the commits below leaves a companion the next run
        # rewrites in full (and the table's new version keeps it from being served meanwhile)
        _set_companion_meta(comp, {**info, "updating": True})
        # by row id (a metadata commit moves no row): no filter evaluated over the companion's ids
        delete_row_ids(comp, removed)

        def codes() -> Iterator[pa.Table]:
            # small ranges: the rows are scattered (a night's documents), and taking 8,192 of them
            # at a time cost +42 MiB at a million rows against +15 (benchmarks/RESULTS.md)
            for batch in scan_batches(tbl, ["id", dense.COLUMN, KEY_COLUMN], 1024, row_ids=added):
                sums.add_keyed(batch)
                yield _codes_batch(batch, spec, codec, rescore_codec, dim, schema)

        if len(added):
            _commit_codes(db, codes(), schema, comp.add)
        fingerprint = sums.fingerprint(["id", KEY_COLUMN])
        _set_companion_meta(comp, {
            **info, "rows": rows, "fit": {"rows": fit["rows"], "changed": changed},
            "source": {"table": table, "version": version, "rows": rows, "fingerprint": fingerprint},
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    rescore_bytes = rescore_codec.code_bytes if rescore_codec else 0
    return codec.code_bytes, rescore_bytes, len(added), len(removed)


def _key_batches(tbl) -> Iterator[pa.RecordBatch]:
    """``id``, ``doc_key`` and ``_rowid`` of every row, streamed by one query: for two narrow
    columns its read-ahead stays small (a million rows: 0.6 s and +51 MiB, where scan_batches'
    ranges of row ids took 1.6 s and +85 MiB; it is for the wide vector column). In SCAN_ROWS
    batches: LanceDB's 1,024 made the re-run's change detection 2.4-3.6 s of numpy calls per
    batch at a million rows, 8,192 1.4-1.6 s for 7 MiB more (benchmarks/RESULTS.md, "Issue 20:
    compress's change detection in bigger batches")."""
    yield from tbl.search().select(["id", KEY_COLUMN]).with_row_id(True).limit(None).to_batches(SCAN_ROWS)


def _changed_rows(tbl, comp, held: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Row ids of the table's rows whose (id, doc_key) the companion lacks, and of the companion's
    rows the table no longer holds (None: the companion does not read ``held`` rows). The
    companion's pairs as hashes, sorted, the table's looked up in them as they stream: 17 bytes a
    companion row, where the whole (id, doc_key) columns of both and their joined strings peaked
    at 933 MiB for a million rows (benchmarks/RESULTS.md, "Issue 20: compress and doctor memory,
    flat"). The peak is the two streamed scans, not these arrays (... "Issue 20: compress re-run
    and embed --prune memory")."""
    pairs, row_ids, n = np.empty(held, dtype=np.int64), np.empty(held, dtype=np.uint64), 0
    for batch in _key_batches(comp):
        if n + batch.num_rows > held:
            return None  # it reads more rows than it counts: rewritten in full
        pairs[n:n + batch.num_rows] = _pair_hashes(batch)
        row_ids[n:n + batch.num_rows] = batch.column("_rowid").to_numpy()
        n += batch.num_rows
    if n != held or held == 0:
        return None
    order = np.argsort(pairs, kind="stable")
    pairs = pairs[order]  # one array at a time: the old one goes before the next is made
    row_ids = row_ids[order]
    del order
    matched = np.zeros(held, dtype=bool)
    added = []
    for batch in _key_batches(tbl):
        hashes = _pair_hashes(batch)
        # looked up in sorted order, the binary searches walk the companion's hashes in step: 4x
        # less time than in the table's order (0.1 against 0.4 s for a million rows)
        by_hash = np.argsort(hashes)
        lo, hi = np.empty(len(hashes), dtype=np.intp), np.empty(len(hashes), dtype=np.intp)
        lo[by_hash] = np.searchsorted(pairs, hashes[by_hash], "left")
        hi[by_hash] = np.searchsorted(pairs, hashes[by_hash], "right")
        found = hi > lo
        matched[lo[found]] = True
        for r in np.flatnonzero(hi - lo > 1).tolist():  # a pair the companion holds more than once
            matched[lo[r]:hi[r]] = True
        added.append(batch.column("_rowid").to_numpy()[~found])
    return (np.concatenate(added) if added else np.zeros(0, np.uint64)), np.sort(row_ids[~matched])


def companion_meta(schema: pa.Schema) -> dict[str, Any] | None:
    """The companion's ``arrowsmith.compress`` metadata: the latest update's (kept on the id
    field: LanceDB rewrites a schema's own metadata only with the whole table), else the full
    run's."""
    latest = (schema.field("id").metadata or {}).get(META_KEY.encode())
    return json.loads(latest) if latest else read_meta(schema).get(META_KEY)


def _set_companion_meta(comp, info: dict[str, Any]) -> None:
    comp.update_field_metadata({"path": "id", "metadata": {META_KEY: json.dumps(info, sort_keys=True)}})


def _codes_batch(batch: pa.RecordBatch | pa.Table, spec: MethodSpec, codec: Codec,
                 rescore_codec: Int8Codec | None, dim: int, schema: pa.Schema) -> pa.Table:
    x = vectors_of(batch, dim)
    cols = [batch.column("id"), _fixed_binary(codec.encode(transform(spec, x)))]
    if rescore_codec is not None:
        cols.append(_fixed_binary(rescore_codec.encode(x)))
    if KEY_COLUMN in schema.names:
        cols.append(batch.column(KEY_COLUMN))
    return pa.Table.from_arrays([c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols],
                                schema=schema)


def _metadata(tbl, table: str, spec: MethodSpec, codec: Codec, rescore_codec: Int8Codec | None,
              dim: int, rows: int, version: int) -> dict[bytes, bytes]:
    info = {
        "format": FORMAT,
        "method": spec.label,
        "spec": asdict(spec),
        "dim": dim,
        "code_bytes": codec.code_bytes,
        "codec": codec.params(),
        "rescore_codec": rescore_codec.params() if rescore_codec else None,
        "rows": rows,
        "source": {"table": table, "version": version, "rows": rows,
                   "fingerprint": content_fingerprint(tbl)},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    entries: dict[str, Any] = {META_KEY: info}
    model = read_meta(tbl.schema).get(MODEL)
    if model is not None:
        entries[MODEL] = model
    return stage_metadata("compress", **entries)


def _companion_schema(codec: Codec, rescore_codec: Int8Codec | None, meta: dict[bytes, bytes],
                      keyed: bool) -> pa.Schema:
    fields = [pa.field("id", pa.string()), pa.field("code", pa.binary(codec.code_bytes))]
    if rescore_codec is not None:
        fields.append(pa.field("rescore", pa.binary(rescore_codec.code_bytes)))
    if keyed:
        fields.append(pa.field(KEY_COLUMN, pa.string()))
    return pa.schema(fields, metadata=meta)


def _write_companion(db, table: str, tbl, spec: MethodSpec, codec: Codec,
                     rescore_codec: Int8Codec | None, dim: int, meta: dict[bytes, bytes]) -> None:
    from arrowsmith.commands.store import connect, table_exists

    keyed = KEY_COLUMN in tbl.schema.names
    schema = _companion_schema(codec, rescore_codec, meta, keyed)
    conn, name = connect(db), companion_name(table)
    codes = (_codes_batch(batch, spec, codec, rescore_codec, dim, schema)
             for batch in scan_batches(tbl, ["id", dense.COLUMN, *([KEY_COLUMN] if keyed else [])]))
    mode = "overwrite" if table_exists(db, name) else "create"
    # overwrite is one atomic commit; a reader sees the old or the new table
    _commit_codes(db, codes, schema, lambda data: conn.create_table(name, data, mode=mode))


def _commit_codes(db, codes: Iterator[pa.Table], schema: pa.Schema,
                  commit: Callable[[pa.RecordBatchReader], Any]) -> None:
    """``commit`` the coded rows in one commit, streamed from the coding as LanceDB writes them:
    memory holds a batch, not the rows (commits of 262,144 rows had a million-row run peak at
    618-656 MiB against 562 in one; benchmarks/RESULTS.md, "Issue 20: compress and doctor memory,
    flat"). LanceDB reads the batches on its own thread, so the commit runs under no_interrupt (a
    signal waits for it) and an error of the coding is kept and raised here as itself."""
    from arrowsmith.commands.store import disk_errors

    failed: list[BaseException] = []

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for part in codes:
                yield from part.to_batches()
        except BaseException as e:
            failed.append(e)
            raise

    with disk_errors(db), no_interrupt():
        try:
            commit(pa.RecordBatchReader.from_batches(schema, batches()))
        except Exception:
            if failed:
                raise failed[0] from None
            raise


def _fixed_binary(codes: np.ndarray) -> pa.Array:
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n, width = codes.shape
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(codes.tobytes())])


def codes_of(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``uint8 [n, width]`` view of a fixed_size_binary column."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    width = arr.type.byte_width
    buf = arr.buffers()[1]
    return np.frombuffer(buf, dtype=np.uint8, count=len(arr) * width,
                         offset=arr.offset * width).reshape(len(arr), width)


# ------------------------------------------------------------------ loading


def compressed_info(db: str | os.PathLike, table: str = "chunks") -> dict[str, Any] | None:
    """The ``arrowsmith.compress`` metadata of the table's companion, or None."""
    from arrowsmith.commands.store import connect, table_exists

    if not table_exists(db, companion_name(table)):
        return None
    return companion_meta(connect(db).open_table(companion_name(table)).schema)


def staleness(tbl, info: dict[str, Any]) -> str | None:
    """Why the compressed codes no longer describe ``tbl`` (None when they still do)."""
    source = info.get("source", {})
    if tbl.version == source.get("version"):
        return None
    if content_fingerprint(tbl) == source.get("fingerprint"):
        return None  # an index build or a compaction: same vectors
    return (f"table changed since it was compressed (version {source.get('version')}, "
            f"now {tbl.version})")


def load_compressed(db: str | os.PathLike, table: str = "chunks") -> CompressedIndex | None:
    """The table's compressed index, or None when there is none or it is stale (with a warning).

    A stale representation is never served: queries fall back to the float vectors
    and the warning says how to refresh it.
    """
    from arrowsmith.commands.store import connect, open_table, table_exists

    if not table_exists(db, companion_name(table)):
        return None
    comp = connect(db).open_table(companion_name(table))
    info = companion_meta(comp.schema)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        log.warning("%s: unreadable compression metadata; searching the float vectors", companion_name(table))
        return None
    tbl = open_table(db, table)
    # a dropped and recompressed companion starts its versions again: its metadata tells it apart
    key = (os.path.realpath(db), table)
    stamp = (comp.version, tbl.version, json.dumps(info, sort_keys=True))
    cached = _LOADED.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    why = staleness(tbl, info) or _incomplete(comp, info)
    if why:
        log.warning("compressed %s is not used: %s; searching the float vectors. "
                    "Refresh it with: arrowsmith compress --db %s --table %s --method %s",
                    table, why, db, table, info.get("method"))
        return None
    index = _index_from(comp, tbl, info)
    _LOADED[key] = (stamp, index)
    return index


# The last index loaded per table, valid while neither the table nor its companion has a new
# version: a process that searches many times (eval, a server, the library's search()) reads the
# codes once — at a million rows reading them took longer than the search itself.
_LOADED: dict[tuple[str, str], tuple[tuple[int, int, str], CompressedIndex]] = {}


def _incomplete(comp, info: dict[str, Any]) -> str | None:
    n = comp.count_rows()
    if info.get("updating"):
        return "an update of it was cut short"
    if n != info.get("rows"):
        return f"it holds {n} of {info.get('rows')} rows (an interrupted compress)"
    return None


def _index_from(comp, tbl, info: dict[str, Any]) -> CompressedIndex:
    spec = MethodSpec(**info["spec"])
    dim = int(info["dim"])
    codec = make_codec(spec, dim)
    codec.load_params(info["codec"])
    data = comp.search().with_row_id(True).select(["id", "code"]).limit(None).to_arrow()
    ids = np.asarray(data.column("id").to_pylist(), dtype=object)
    codes = codes_of(data.column("code"))
    rescorer: Rescorer | None = None
    if spec.rescore and spec.rescore_with == "int8":
        rcodec = Int8Codec(dim)
        rcodec.load_params(info["rescore_codec"])
        rescorer = CompanionRescorer(comp, rcodec, ids, data.column("_rowid").to_numpy())
    elif spec.rescore:
        rescorer = SourceRescorer(tbl, ids, dim)
    return CompressedIndex(spec, codec, ids, codes, rescorer, info, filter_rows=_row_filter(tbl, ids))


@dataclass
class CompanionRescorer(Rescorer):
    """int8 codes read from the companion table for the candidates only."""

    comp: Any
    codec: Int8Codec
    ids: np.ndarray
    row_ids: np.ndarray  # by row ids: taking offsets was 150x slower where rows were deleted,
    # as an updated companion's are (commands/store.scan_batches)
    name: str = "int8"

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        got = self.comp.take_row_ids(self.row_ids[positions].tolist()).select(["id", "rescore"]).to_arrow()
        # take returns rows in table order; positions are sorted, so they line up — checked by id
        if got.column("id").to_pylist() != self.ids[positions].tolist():
            order = {v: i for i, v in enumerate(got.column("id").to_pylist())}
            got = got.take([order[i] for i in self.ids[positions]])
        return self.codec.decode(codes_of(got.column("rescore")))


@dataclass
class SourceRescorer(Rescorer):
    """Float vectors read from the source table (kept on disk) for the candidates only."""

    tbl: Any
    ids: np.ndarray
    dim: int
    name: str = "float"

    def fetch(self, positions: np.ndarray) -> np.ndarray:
        from arrowsmith.commands.store import id_filters

        wanted = self.ids[positions].tolist()
        found: dict[str, np.ndarray] = {}
        for _, where in id_filters(wanted):
            got = self.tbl.search().where(where).select(["id", dense.COLUMN]).limit(None).to_arrow()
            found.update(zip(got.column("id").to_pylist(), vectors_of(got, self.dim), strict=True))
        return np.stack([found[i] for i in wanted]).astype(np.float32)


def _row_filter(tbl, ids: np.ndarray):
    position: dict[str, int] = {}

    def rows(where: str) -> np.ndarray:
        if not position:
            position.update((v, i) for i, v in enumerate(ids.tolist()))
        try:
            got = tbl.search().where(where).select(["id"]).limit(None).to_arrow()
        except Exception as e:  # noqa: BLE001 - LanceDB reports SQL errors as various types
            raise UsageError(f"bad --where filter {where!r}: {e}") from None
        return np.sort(np.fromiter((position[i] for i in got.column("id").to_pylist() if i in position),
                                   dtype=np.int64))

    return rows


def drop_compressed(db: str | os.PathLike, table: str = "chunks", *, wait: bool = False) -> bool:
    """Remove the companion table; True when there was one. Under compress's lock (exit 75, or
    ``wait``), so it never drops a representation a running ``compress`` is writing."""
    from arrowsmith.commands.store import connect, table_exists, table_lock

    with table_lock(db, companion_name(table), wait=wait):
        if not table_exists(db, companion_name(table)):
            return False
        connect(db).drop_table(companion_name(table))
    return True

