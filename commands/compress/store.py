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
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from hashlib import blake2b
from typing import Any

import numpy as np
import pyarrow as pa

from arrowsmith.commands.errors import DataError, UsageError
from arrowsmith.commands.schemas import MODEL, read_meta, stage_metadata
from arrowsmith.commands.signals import no_interrupt
from arrowsmith.commands.spaces import dense
from arrowsmith.commands.store import scan_batches
from arrowsmith.commands.units import format_size

from .codecs import Calibration, Codec, Int8Codec, MethodSpec, make_codec, parse_method, transform
from .search import CompressedIndex, Rescorer

log = logging.getLogger("arrowsmith.compress")

SUFFIX = "__compressed"
META_KEY = "arrowsmith.compress"
COMPANION_COMMIT_ROWS = 262_144  # codes per commit of the companion table (not --checkpoint-rows)
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
    rows, lo, hi = 0, 0, 0
    for batch in scan_batches(tbl, cols):
        if cols[1] == dense.COLUMN:
            values = [row.tobytes() for row in dense.decode(batch.column(dense.COLUMN))]
        else:
            values = [(v or "").encode() for v in batch.column("doc_key").to_pylist()]
        n, part_lo, part_hi = _digest_sums(batch.column("id").to_pylist(), values)
        rows, lo, hi = rows + n, lo + part_lo, hi + part_hi
    return _fingerprint(rows, cols, lo, hi)


_MASK = 0xFFFFFFFFFFFFFFFF


def _digest_sums(ids: list[str], values: list[bytes]) -> tuple[int, int, int]:
    """Rows, and the sums of the low and high halves of their 128-bit (id, value) digests."""
    digests = b"".join([blake2b(v + b"\0" + i.encode(), digest_size=16).digest()
                        for i, v in zip(ids, values, strict=True)])
    halves = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
    # wraps mod 2**64, as the digest is
    return len(ids), int(halves[:, 0].sum(dtype=np.uint64)), int(halves[:, 1].sum(dtype=np.uint64))


def _fingerprint(rows: int, cols: list[str], lo: int, hi: int) -> str:
    return f"sum128:{rows}:{','.join(cols)}:{hi & _MASK:016x}{lo & _MASK:016x}"


def _updated_fingerprint(old: str, added: pa.Table, removed: pa.Table) -> str:
    """``old`` (of (id, doc_key) rows) with the ``added`` rows' digests summed in and the
    ``removed`` rows' taken out: the digest is a sum, so this equals a fresh scan of the table."""
    _, rows, cols, sums = old.split(":")
    hi, lo = int(sums[:16], 16), int(sums[16:], 16)
    for part, sign in ((added, 1), (removed, -1)):
        n, part_lo, part_hi = _digest_sums(part.column("id").to_pylist(),
                                           [(v or "").encode() for v in part.column(KEY_COLUMN).to_pylist()])
        rows, lo, hi = int(rows) + sign * n, lo + sign * part_lo, hi + sign * part_hi
    return _fingerprint(rows, cols.split(","), lo, hi)


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
    import pyarrow.compute as pc

    from arrowsmith.commands.store import connect, disk_errors, id_filters, table_exists

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
    source = tbl.search().with_row_id(True).select(["id", KEY_COLUMN]).limit(None).to_arrow()
    held = comp.search().select(["id", KEY_COLUMN]).limit(None).to_arrow()
    pair = [pc.binary_join_element_wise(t.column("id"), pc.fill_null(t.column(KEY_COLUMN), ""), "\0")
            for t in (source, held)]
    added = source.filter(pc.invert(pc.is_in(pair[0], value_set=pair[1])))
    removed = held.filter(pc.invert(pc.is_in(pair[1], value_set=pair[0])))
    fit = info.get("fit") or {"rows": info["rows"], "changed": 0}
    changed = fit["changed"] + added.num_rows + removed.num_rows
    if changed > REFIT_SHARE * fit["rows"]:
        return None
    codec = make_codec(spec, dim)
    codec.load_params(info["codec"])
    rescore_codec = None
    if info.get("rescore_codec"):
        rescore_codec = Int8Codec(dim)
        rescore_codec.load_params(info["rescore_codec"])
    fingerprint = _updated_fingerprint(info["source"]["fingerprint"], added, removed)
    new_info = {**info, "rows": rows, "fit": {"rows": fit["rows"], "changed": changed},
                "source": {"table": table, "version": version, "rows": rows, "fingerprint": fingerprint},
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    schema = comp.schema
    with disk_errors(db), no_interrupt():
        # marked first: a run cut short between the commits below leaves a companion the next run
        # rewrites in full (and the table's new version keeps it from being served meanwhile)
        _set_companion_meta(comp, {**info, "updating": True})
        for _, where in id_filters(removed.column("id").to_pylist()):
            comp.delete(where)
        row_ids = added.column("_rowid")
        for start in range(0, len(row_ids), COMPANION_COMMIT_ROWS):
            part = tbl.take_row_ids(row_ids.slice(start, COMPANION_COMMIT_ROWS).to_pylist()).select(
                ["id", dense.COLUMN, KEY_COLUMN]).to_arrow()
            comp.add(_codes_batch(part, spec, codec, rescore_codec, dim, schema))
        _set_companion_meta(comp, new_info)
    rescore_bytes = rescore_codec.code_bytes if rescore_codec else 0
    return codec.code_bytes, rescore_bytes, added.num_rows, removed.num_rows


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
    from arrowsmith.commands.store import connect, disk_errors, table_exists

    keyed = KEY_COLUMN in tbl.schema.names
    schema = _companion_schema(codec, rescore_codec, meta, keyed)
    conn, name = connect(db), companion_name(table)
    pending: list[pa.Table] = []
    created = False

    def commit() -> None:
        nonlocal created, pending
        data = pa.concat_tables(pending)
        with disk_errors(db), no_interrupt():
            if created:
                conn.open_table(name).add(data)
            else:
                # overwrite is one atomic commit; a reader sees the old or the new table
                mode = "overwrite" if table_exists(db, name) else "create"
                conn.create_table(name, data, mode=mode)
                created = True
        pending = []

    held = 0
    for batch in scan_batches(tbl, ["id", dense.COLUMN, *([KEY_COLUMN] if keyed else [])]):
        pending.append(_codes_batch(batch, spec, codec, rescore_codec, dim, schema))
        held += batch.num_rows
        if held >= COMPANION_COMMIT_ROWS:
            commit()
            held = 0
    if pending or not created:
        if not pending:
            pending.append(schema.empty_table())
        commit()


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

