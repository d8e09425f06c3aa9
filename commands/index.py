"""Indexes over a stored table: vector ANN, full-text (BM25) and scalar; optimize; stats.

Every operation runs under the table's write lock (:func:`store.table_lock`), so it never
races a writer. What was built, with which parameters and at which table version, is
recorded beside the table in ``<db>/<table>.arrowsmith.json``: re-running ``index`` on an
unchanged table compares the version and the wanted indexes and does nothing.

Rows added after an index was built are not lost: LanceDB answers vector, FTS and scalar
queries over the indexed rows plus a flat scan of the unindexed ones. ``index`` folds them
into the existing indexes with LanceDB's ``optimize`` (incremental, no retraining); the
vector index is retrained (rebuilt) when the table has doubled since it was trained,
because IVF centroids fitted to half the data stop fitting the rest.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import faults, isolated, spaces
from .errors import DataError, UsageError
from .signals import no_interrupt
from .spaces import dense, multi
from .store import (
    DEFAULT_TABLE,
    TEXT_COLUMN,
    disk_errors,
    load_state,
    model_of,
    open_table,
    read_errors,
    remove_stale_files,
    save_state,
    table_lock,
    table_meta,
    table_path,
    unreadable_indexes,
)
from .units import format_size

log = logging.getLogger("arrowsmith.index")

VECTOR_TYPES = ("auto", "ivf_pq", "ivf_hnsw_sq", "none")
DISTANCE_METRICS = ("cosine", "l2", "dot")
AUTO_MIN_ROWS = 100_000  # below: exact search over <100k×384 floats takes a few ms, no index
# rows an IVF_HNSW_SQ partition is built for: LanceDB's target (2^20), whose fold-in joins the
# partitions under a quarter of it (at 100k rows each, what `index` built before, all of them)
HNSW_PARTITION_ROWS = 1 << 20
RETRAIN_GROWTH = 2.0  # rebuild the vector index once the table is this many times larger
# a new table is compacted before its first indexes from this size (_compact_unindexed); below
# it, the rewrite a later optimize makes costs a few seconds whenever it comes
COMPACT_MIN_ROWS = 100_000
VECTOR_INDEX = f"{dense.COLUMN}_idx"
FTS_COLUMN = TEXT_COLUMN  # the chunk text the writer stores (uncompressed)
# the ANN indexes `index` builds, folds into and drops: (state key, index name, column, its
# config from a spec, label), in the order _ann_specs gives their specs
ANN_INDEXES = (("vector", VECTOR_INDEX, dense.COLUMN, dense.index_config, "vector"),
               ("tokens", multi.INDEX_NAME, multi.COLUMN, multi.index_config, "token"))
# BTree indexes every table gets: doc_id for the writer's and query's `doc_id IN (...)` lookups;
# id for query's and compress's `id IN (...)` lookups (the writer once merged by id through it:
# benchmarks/RESULTS.md, "Issue 20: the second night's embed, measured alone")
ALWAYS_SCALAR = ("doc_id", "id")
# the IVF k-means sample: LanceDB's default rate (vectors per partition), capped in total at the
# sample size LanceDB trains PQ codebooks on (256 centroids x 256); a rate under 32 leaves k-means
# with too few points per centroid (only past ~2,000 partitions, ~4M rows)
LANCEDB_SAMPLE_RATE = 256
IVF_TRAINING_VECTORS = 65_536
IVF_MIN_SAMPLE_RATE = 32
# the full-text build's memory budget (MiB, LanceDB's FTS memory_limit; by default it grows with the
# table: 273 MiB peak at 100k rows, 560 at a million, 503 with 64)
FTS_MEMORY_MIB = 64
# from this size each heavy step (the compaction, each index build, the fold-in) runs in a child
# process of its own (isolated.call): in one process LanceDB kept each step's memory into the
# next, so the first `index` of a million rows peaked at 1,054 MiB, 1.74x its 100k-row peak
# (benchmarks/RESULTS.md, "Issue 20: index memory, flat"). Below it a child's start (~1 s) would
# cost more than the memory is worth
ISOLATE_MIN_ROWS = 100_000
# data files from this size may hold ISOLATE_MIN_ROWS rows (100k rows of a 64-d vector alone take
# 25 MiB): `index` and `doctor` start their first child before they open such a table
# (isolated.warm_child). A wrong guess costs a child started later, or one started for nothing
ISOLATE_MIN_BYTES = 32 * 1024 * 1024
# LanceDB rewrites a fragment without its deleted rows once 10% of them are deleted; `index` asks
# for it at any share (materialize_deletions_threshold). Until the rewrite, IVF_PQ search checks
# every candidate against the deletions: at a million rows 100 deleted rows took p50 12.7 → 24.7 ms
# and a night's 20,154 (2%) to 41 ms, back to 13-16 ms once rewritten; the rewrite took that
# night's `index` from 12.0 to 26.0 s side by side (the 1.5 GB fragment written again, the indexes
# remapped; benchmarks/RESULTS.md, "Issue 20: deleted rows" and "with deleted rows rewritten")
REWRITE_DELETED_SHARE = 0.0


# ------------------------------------------------------------------ choosing parameters


def choose_vector_index(rows: int, dim: int, *, kind: str = "auto", metric: str | None = None,
                        partitions: int | None = None, sub_vectors: int | None = None
                        ) -> dict[str, Any] | None:
    """The vector index to build (a JSON-able spec), or None for exact search.

    auto: none below 100k rows, IVF_PQ above: with query's defaults of the time (a tenth of the
    partitions probed, refine 10) it gave recall@10 0.965–0.990 at p50 24–26 ms on 100k–250k
    generated rows, where IVF_HNSW_SQ at ef 500 gave 0.940–0.949 at 70–176 ms (benchmarks/RESULTS.md,
    "query"). ivf_pq: partitions of at least 4,096 rows (rows / 4,096 below ~16.8M rows, √rows
    above: :func:`dense.ivf_partitions`, so LanceDB's fold-in keeps them), sub-vectors = dim / 8
    (8 dims per byte code, 48 for 384 dims: 32× compression), k-means trained on at most 65,536
    vectors (:func:`ivf_sample_rate`); recall comes from ``query``'s refine step.
    ivf_hnsw_sq: partitions of about a million rows (LanceDB's target for HNSW partitions, whose
    fold-in joins any under a quarter of it), at least 1, each an HNSW graph over 8-bit
    scalar-quantised vectors. ``metric`` None is cosine; given, it is an index setting like
    ``partitions`` (without an index, exact search ranks by the table's own metric).
    """
    if kind not in VECTOR_TYPES:
        raise UsageError(f"unknown vector index type {kind!r} (use {'|'.join(VECTOR_TYPES)})")
    if metric is not None and metric not in DISTANCE_METRICS:
        raise UsageError(f"unknown metric {metric!r} (use {'|'.join(DISTANCE_METRICS)})")
    if kind == "none" or (kind == "auto" and rows < AUTO_MIN_ROWS):
        given = [f for f, v in (("--partitions", partitions), ("--sub-vectors", sub_vectors),
                                ("--metric", metric)) if v is not None]
        if given:  # issue 10: they were ignored
            if kind == "none":
                raise UsageError(f"{'/'.join(given)}: no effect with --type none",
                                 hint="--type ivf_pq or ivf_hnsw_sq to build one")
            # auto: they apply once the table grows past the threshold, so a cron job that sets
            # them must keep working on a small table; say so instead of refusing
            log.warning("%s: not used yet: --type auto builds no vector index on %s rows (below %s); "
                        "--type ivf_pq or ivf_hnsw_sq builds one now",
                        "/".join(given), f"{rows:,}", f"{AUTO_MIN_ROWS:,}")
        return None
    metric = metric or "cosine"
    if rows < 256:
        raise UsageError(f"a vector index needs at least 256 rows to train (table has {rows})",
                         hint="--type none: exact search is fast at this size")
    if kind == "auto":
        kind = "ivf_pq"
    if kind == "ivf_pq":
        parts = partitions or dense.ivf_partitions(rows)
        sub = sub_vectors or dense.pq_sub_vectors(dim)
        if dim % sub:
            raise UsageError(f"--sub-vectors {sub} must divide the dim {dim}")
        return {"type": "IVF_PQ", "metric": metric, "partitions": parts, "sub_vectors": sub,
                "sample_rate": ivf_sample_rate(parts)}
    parts = partitions or max(1, round(rows / HNSW_PARTITION_ROWS))
    return {"type": "IVF_HNSW_SQ", "metric": metric, "partitions": parts}


def ivf_sample_rate(partitions: int) -> int:
    """Training vectors per IVF partition: LanceDB's 256, fewer where that would sample more than
    IVF_TRAINING_VECTORS in all (never under IVF_MIN_SAMPLE_RATE). LanceDB holds the whole sample
    in memory to train k-means, so at its rate the build's memory grew with √rows: 258k vectors of
    a million-row table, peak RSS 842 MiB against 513 at 100k; capped at 65,536, 632 MiB, in half
    the time, with the same recall@10 (benchmarks/RESULTS.md, "Issue 20: query latency")."""
    return max(IVF_MIN_SAMPLE_RATE, min(LANCEDB_SAMPLE_RATE, IVF_TRAINING_VECTORS // max(1, partitions)))


# ------------------------------------------------------------------ building


@dataclass
class IndexReport:
    built: list[str] = field(default_factory=list)  # indexes created or rebuilt
    updated: bool = False  # new rows folded into existing indexes (optimize)
    deleted_rows_dropped: int = 0  # deleted rows whose fragments were rewritten without them
    unchanged: bool = False  # nothing to do
    version: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.unchanged:
            return f"indexes up to date (table version {self.version})"
        parts = [f"built {', '.join(self.built)}"] if self.built else []
        if self.updated:
            parts.append("folded new rows into existing indexes")
        if self.deleted_rows_dropped:
            parts.append(f"rewrote fragments without their {self.deleted_rows_dropped:,} deleted rows")
        return f"{'; '.join(parts) or 'nothing to build'} in {self.seconds:.1f}s (version {self.version})"


def build_indexes(db: str | os.PathLike, table: str = DEFAULT_TABLE, *, vector_type: str = "auto",
                  partitions: int | None = None, sub_vectors: int | None = None, metric: str | None = None,
                  fts: bool = True, scalar: tuple[str, ...] | list[str] = (), token_index: str = "auto",
                  wait: bool = False, force: bool = False, keep: timedelta = timedelta(days=1),
                  keep_deleted: bool = False) -> IndexReport:
    """Create what is missing, update what is stale, do nothing when nothing changed.

    ``token_index`` (auto|ivf_pq|none) is the index on a table's token vectors
    (:func:`multi.index_spec`); ``vector_type`` and its options are the dense vector's.
    Fragments with deleted rows are rewritten without them unless ``keep_deleted``
    (REWRITE_DELETED_SHARE; LanceDB then waits until 10% of a fragment is deleted)."""
    start = time.perf_counter()
    report = IndexReport()
    with isolated.warm_child(may_isolate(db, table)), table_lock(db, table, wait=wait), \
            read_errors(db, table):
        tbl = open_table(db, table)
        rows, dim = tbl.count_rows(), _dim(tbl)
        missing = [c for c in scalar if c not in tbl.schema.names]
        if missing:
            raise UsageError(f"--scalar: table {table!r} has no column(s) {', '.join(missing)}")
        state = load_state(db, table)
        vector = choose_vector_index(rows, dim, kind=vector_type, metric=metric,
                                     partitions=partitions, sub_vectors=sub_vectors)
        wanted = {"vector_type": vector_type, "vector": vector, "fts": fts,
                  "scalar": sorted({*ALWAYS_SCALAR, *scalar}), "metric": metric or "cosine",
                  "partitions": partitions, "token_index": token_index,
                  "tokens": _choose_token_index(tbl, rows, token_index, table),
                  "keep_deleted": keep_deleted}
        where = step_place(db, table, rows)
        listed = {ix.name: ix for ix in tbl.list_indices()}
        unchanged = state.get("version") == tbl.version and state.get("wanted") == wanted
        folded = None
        # issue 21: an index whose files were deleted is listed all the same; it is missing.
        # Opening them reads them into LanceDB's cache, so it is a heavy step too. On a night
        # whose only work is the fold-in, one child folds the rows in and then opens the indexes
        # the fold-in did not rewrite (_fold_in_then_open): a child's start less (~1 s at a
        # million rows). Opened first, their cache sat beside the optimize's buffers: 702
        # against 536 MiB at 1M (benchmarks/RESULTS.md, "Issue 20: the night's cost, piece by piece")
        if listed and where and not force and not unchanged and not _builds(state, wanted, listed, {}, rows,
                                                                             force):
            faults.hit("during_index")
            with disk_errors(table_path(db, table)), no_interrupt():
                broken, folded = run_step(tbl, where, "folding new rows into the indexes and opening them",
                                          _fold_in_then_open, keep, not keep_deleted)
        else:
            broken = run_step(tbl, where, "opening the indexes", unreadable_indexes) if listed else {}
        for name, why in broken.items():
            log.warning("index %s cannot be opened (%s): rebuilding it", name, why)
        if not force and not broken and unchanged:
            report.unchanged, report.version = True, tbl.version
            return report
        with disk_errors(table_path(db, table)):
            if folded is None or broken:
                _build(tbl, where, state, wanted, rows, force, keep, report, broken)
            if folded is not None:
                report.updated = report.updated or folded[0]
                report.deleted_rows_dropped += folded[1]
        report.version = tbl.version
        save_state(db, table, {**state, "version": tbl.version, "wanted": wanted,
                               **{k: state.get(k) for k in ("vector_spec", "vector_rows", "tokens_spec",
                                                            "tokens_rows")}})
    report.seconds = time.perf_counter() - start
    return report


def _build(tbl, where: tuple[str, str] | None, state: dict, wanted: dict, rows: int, force: bool,
           keep: timedelta, report: IndexReport, broken: dict[str, str]) -> None:
    """``where`` (db, table): run each heavy step in a child process (:func:`run_step`)."""
    listed = {ix.name: ix for ix in tbl.list_indices()}
    if not listed and rows >= COMPACT_MIN_ROWS:
        _compact_unindexed(tbl, where, keep, not wanted["keep_deleted"])
    existing = {name: ix for name, ix in listed.items() if name not in broken}
    vector, tokens = _ann_specs(state, wanted, broken)
    _drop_unrebuildable(tbl, listed, broken, vector, tokens, wanted)
    for (key, name, column, config, label), spec in zip(ANN_INDEXES, (vector, tokens), strict=True):
        action = _ann_action(state, wanted, existing, key, spec, name, rows, force)
        if action == "build":
            _create(tbl, where, report, f"{key} {spec['type']}", config(spec), column, name)
            state[f"{key}_spec"], state[f"{key}_rows"] = spec, rows
        elif action == "drop":
            with no_interrupt():
                tbl.drop_index(name)
            report.built.append(f"no {label} index (dropped)")
            state[f"{key}_spec"] = state[f"{key}_rows"] = None
    if _fts_missing(wanted, existing, force):
        from lancedb.index import FTS

        _create(tbl, where, report, "fts text", FTS(memory_limit=FTS_MEMORY_MIB), FTS_COLUMN,
                f"{FTS_COLUMN}_fts")
    for col in _scalars_missing(wanted, listed, existing, broken, force):
        from lancedb.index import BTree

        _create(tbl, where, report, f"scalar {col}", BTree(), col, f"{col}_idx")
    waiting, deleted = _fold_in_work(tbl, not wanted["keep_deleted"])
    if waiting or deleted:
        faults.hit("during_index")
        what = ("folding new rows into the indexes" if waiting
                else "rewriting fragments without their deleted rows")
        with no_interrupt():
            report.updated, report.deleted_rows_dropped = run_step(tbl, where, what, _fold_in, keep,
                                                                   not wanted["keep_deleted"])


def _builds(state: dict, wanted: dict, listed: dict, broken: dict[str, str], rows: int, force: bool) -> bool:
    """Would :func:`_build` create or drop an index (more than the fold-in)?"""
    if not listed and rows >= COMPACT_MIN_ROWS:
        return True
    existing = {name: ix for name, ix in listed.items() if name not in broken}
    vector, tokens = _ann_specs(state, wanted, broken)
    return bool(broken) or _fts_missing(wanted, existing, force) \
        or bool(_scalars_missing(wanted, listed, existing, broken, force)) \
        or any(_ann_action(state, wanted, existing, key, spec, name, rows, force)
               for (key, name, *_), spec in zip(ANN_INDEXES, (vector, tokens), strict=True))


def _ann_specs(state: dict, wanted: dict, broken: dict[str, str]) -> tuple[dict | None, dict | None]:
    """The dense and token index specs to hold: the wanted ones, or for an unreadable index that
    this run's options would not build, the one an earlier `--type`/`--token-index` asked for."""
    vector, tokens = wanted["vector"], wanted["tokens"]
    if vector is None and VECTOR_INDEX in broken and wanted["vector_type"] != "none":
        vector = state.get("vector_spec")
    if tokens is None and multi.INDEX_NAME in broken and wanted["token_index"] != "none":
        tokens = state.get("tokens_spec")
    return vector, tokens


def _ann_action(state: dict, wanted: dict, existing: dict, key: str, spec: dict | None, name: str, rows: int,
                force: bool) -> str | None:
    """One ANN index (the dense vector's, the token vectors'): "build" when missing, changed,
    forced or outgrown (RETRAIN_GROWTH), "drop" when asked for none; ``state["<key>_spec"/
    "<key>_rows"]`` record what was built."""
    if spec is not None:
        explicit_partitions = wanted["partitions"] if key == "vector" else None
        same = _same_vector_index(state.get(f"{key}_spec"), spec, explicit_partitions) and name in existing
        grown = rows >= RETRAIN_GROWTH * (state.get(f"{key}_rows") or rows)
        return "build" if force or not same or grown else None
    none_wanted = wanted["vector_type" if key == "vector" else "token_index"] == "none"
    return "drop" if none_wanted and name in existing else None


def _fts_missing(wanted: dict, existing: dict, force: bool) -> bool:
    return wanted["fts"] and (force or not _has(existing, FTS_COLUMN, "FTS"))


def _scalars_missing(wanted: dict, listed: dict, existing: dict, broken: dict[str, str],
                     force: bool) -> list[str]:
    rebuild = [list(listed[n].columns)[0] for n in broken if listed[n].index_type == "BTree"]
    # force, or missing (`--scalar text` beside the FTS index is a BTree of its own)
    return [col for col in sorted({*wanted["scalar"], *rebuild}) if force or not _has(existing, col, "BTree")]


def _fold_in_then_open(tbl, keep: timedelta, rewrite_deleted: bool) -> tuple[dict[str, str], Any]:
    """:func:`_fold_in`, then the indexes it did not rewrite opened: (the indexes that cannot be
    opened, the fold-in's answer). A fold-in that fails while an index cannot be opened: (those
    indexes, None), for the parent to rebuild them and fold in after; any other failure is raised.

    An index that now covers every row was just read whole and written again by LanceDB's fold-in
    (or its remap after the rewrite of deleted rows), so it is not opened a second time; one that
    does not (LanceDB passes over a full-text index whose files are gone), or every index when
    there was nothing to fold in, is."""
    try:
        folded = _fold_in(tbl, keep, rewrite_deleted)
    except Exception:
        tbl.checkout_latest()  # the compaction may have committed before an index failed
        broken = unreadable_indexes(tbl)
        if broken:
            return broken, None
        raise
    names = [ix.name for ix in tbl.list_indices()]
    if folded != (False, 0):
        names = [name for name in names if not _covers_every_row(tbl, name)]
    return unreadable_indexes(tbl, names), folded


def _covers_every_row(tbl, name: str) -> bool:
    try:
        return _unindexed(tbl, name) == 0
    except Exception:  # noqa: BLE001 - an index whose statistics cannot be read is opened to see why
        return False


def _fold_in(tbl, keep: timedelta, rewrite_deleted: bool) -> tuple[bool, int]:
    """Fold rows no index covers into the indexes and (``rewrite_deleted``) rewrite fragments
    without their deleted rows, in one optimize; (whether rows were folded in, deleted rows dropped).

    Every run folds new rows in. It was once deferred until they were 5% of the table, when a
    fold-in of a night's 1% cost 30-44 s at a million rows; that cost was LanceDB re-partitioning
    an IVF index whose partitions were too small to keep (dense.ivf_partitions), and with
    partitions it keeps it is 8.6 s. Left waiting, a night's rows made every full-text search
    (hybrid, query's default) 20x slower: 248 against 11.5 ms p50 at 1M rows with 10k waiting
    (benchmarks/RESULTS.md, "Issue 20: the fold-in")."""
    waiting, deleted = _fold_in_work(tbl, rewrite_deleted)
    if not (waiting or deleted):
        return False, 0
    _optimize(tbl, keep, rewrite_deleted)
    return waiting, deleted - deleted_rows(tbl) if deleted else 0


def _fold_in_work(tbl, rewrite_deleted: bool) -> tuple[bool, int]:
    """What a fold-in has to do: (rows some index does not cover, deleted rows to rewrite away)."""
    waiting = any(_unindexed(tbl, ix.name) for ix in tbl.list_indices())
    return waiting, deleted_rows(tbl) if rewrite_deleted else 0


def _compact_unindexed(tbl, where: tuple[str, str] | None, keep: timedelta, rewrite_deleted: bool) -> None:
    """Merge a new table's small fragments before its first indexes are built.

    A table is written in checkpoints, one fragment each (~100 at a million rows). LanceDB's
    compaction never merges indexed fragments with unindexed ones, so compacted now, before any
    index covers them, the table is rewritten once, here; left for later, the next `index`'s
    optimize rewrote the whole table (70 s of a 1M-row second night, benchmarks/RESULTS.md),
    whereas each later night compacts only its own new fragments.
    """
    fragments = tbl.stats()["fragment_stats"]
    if fragments["num_small_fragments"] < 2:
        return
    log.info("compacting %d fragments before the first index build", fragments["num_fragments"])
    faults.hit("during_index")
    with no_interrupt():
        run_step(tbl, where, "compacting before the first index build", _optimize, keep, rewrite_deleted)


def _drop_unrebuildable(tbl, listed: dict, broken: dict[str, str], vector: dict | None,
                        tokens: dict | None, wanted: dict) -> None:
    """Drop the unreadable indexes this run will not rebuild: queries would trip on them."""
    for name in broken:
        ix = listed[name]
        rebuilt = (name == VECTOR_INDEX and vector is not None) or ix.index_type == "BTree" \
            or (name == multi.INDEX_NAME and tokens is not None) \
            or (list(ix.columns) == [FTS_COLUMN] and ix.index_type == "FTS" and wanted["fts"])
        if not rebuilt:
            log.warning("dropping index %s: it cannot be opened and this run does not rebuild it", name)
            with no_interrupt():
                tbl.drop_index(name)


def _choose_token_index(tbl, rows: int, kind: str, table: str) -> dict[str, Any] | None:
    """The token column's index spec (None: none), from the table's token settings and size."""
    settings = multi.settings_of(model_of(table_meta(tbl)))
    if settings is None:
        if kind == "ivf_pq":
            raise UsageError(f"--token-index ivf_pq: table {table!r} has no token vectors",
                             hint="`arrowsmith embed --multivector --token-precision float16` stores them")
        return None
    indexable = kind != "none" and settings.precision in multi.FLOAT_PRECISIONS
    tokens = multi.estimate_tokens(tbl, rows) if indexable else 0
    return multi.index_spec(tokens, settings, kind)


def _same_vector_index(built: dict | None, vector: dict, explicit_partitions: int | None) -> bool:
    """The built index still serves: same kind and metric. Derived partitions (√rows) drift with
    every ingest; retraining for that is left to the growth rule, unless --partitions asks."""
    if built is None:
        return False
    keys = ("type", "metric", "sub_vectors") + (("partitions",) if explicit_partitions else ())
    return all(built.get(k) == vector.get(k) for k in keys)


def _create(tbl, where: tuple[str, str] | None, report: IndexReport, label: str, config, column: str,
            name: str) -> None:
    faults.hit("during_index")
    log.info("building %s index", label)
    with no_interrupt():
        run_step(tbl, where, f"building the {label} index", _create_index, column, config, name)
    report.built.append(label)


def may_isolate(db: str | os.PathLike, table: str) -> bool:
    """Are the table's data files big enough (ISOLATE_MIN_BYTES) that a step may run in a child?
    Read from the directory, before LanceDB is imported."""
    try:
        return disk_usage(table_path(db, table) / "data") >= ISOLATE_MIN_BYTES
    except OSError:  # a file that a cleanup removed while it was counted
        return False


def step_place(db: str | os.PathLike, table: str, rows: int) -> tuple[str, str] | None:
    """Where :func:`run_step` runs a heavy step on a table of ``rows`` rows: (db, table) for a
    child process from ISOLATE_MIN_ROWS rows, None for this one."""
    return (str(db), table) if rows >= ISOLATE_MIN_ROWS else None


def run_step(tbl, where: tuple[str, str] | None, what: str, step, *args, pinned: bool = False) -> Any:
    """``step(tbl, *args)`` here, or with ``where`` (db, table, :func:`step_place`) in a child
    process on the table reopened there (:mod:`isolated`: its memory goes when it exits; its
    errors are raised here as they were raised there). ``pinned``: the child reads ``tbl``'s
    version (a reader's, e.g. doctor's); otherwise it opens the latest, and ``tbl`` then moves to
    the version the child committed."""
    if where is None:
        return step(tbl, *args)
    result = isolated.call(what, _step_on, step, *where, tbl.version if pinned else None, *args)
    if not pinned:
        tbl.checkout_latest()
    return result


def _step_on(step, db: str, table: str, version: int | None, *args) -> Any:
    tbl = open_table(db, table)
    if version is not None:
        tbl.checkout(version)
    return step(tbl, *args)


def _create_index(tbl, column: str, config, name: str) -> None:
    tbl.create_index(column, replace=True, config=config, name=name)


def _optimize(tbl, keep: timedelta, rewrite_deleted: bool) -> None:
    """LanceDB's optimize: compaction, the fold-in of new rows, the cleanup of old versions;
    ``rewrite_deleted``: fragments with any deleted row are rewritten without them."""
    options = {"materialize_deletions_threshold": REWRITE_DELETED_SHARE} if rewrite_deleted else None
    with warnings.catch_warnings():
        # --keep 0 was asked for explicitly; LanceDB's warning about it is noise here
        warnings.filterwarnings("ignore", message=r"optimize\(cleanup_older_than=0\)")
        tbl.optimize(cleanup_older_than=keep, compaction_options=options)


def deleted_rows(tbl) -> int:
    """Rows deleted from the table's fragments and still in their files."""
    return int(tbl.stats().get("num_deleted_rows") or 0)


def _has(existing: dict, column: str, kind: str | None) -> bool:
    return any(list(ix.columns) == [column] and (kind is None or ix.index_type == kind)
               for ix in existing.values())


def _unindexed(tbl, name: str) -> int:
    stats = tbl.index_stats(name)
    return int(stats.num_unindexed_rows) if stats else 0


def _dim(tbl) -> int:
    dim = dense.dim_of(tbl.schema)
    if dim is None:
        raise DataError(f"table has no {dense.COLUMN!r} column of fixed-size vectors",
                        hint="a table written by `arrowsmith embed --db`")
    return dim


# ------------------------------------------------------------------ optimize


@dataclass
class OptimizeReport:
    version_before: int = 0
    version_after: int = 0
    versions_before: int = 0
    versions_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    stale_files_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"optimized: versions {self.versions_before} → {self.versions_after}, "
                f"{format_size(self.bytes_before)} → {format_size(self.bytes_after)} on disk, "
                f"{len(self.stale_files_removed)} stale temporary files removed, {self.seconds:.1f}s")


def optimize_table(db: str | os.PathLike, table: str = DEFAULT_TABLE, *, keep: timedelta = timedelta(days=1),
                   grace_s: float = 3600, wait: bool = False, keep_deleted: bool = False) -> OptimizeReport:
    """Compact fragments, fold new rows into indexes, drop versions older than ``keep``, and
    remove temporary/orphaned files killed writers left (older than ``grace_s``); fragments with
    deleted rows are rewritten without them unless ``keep_deleted``."""
    start = time.perf_counter()
    with table_lock(db, table, wait=wait), read_errors(db, table):
        tbl = open_table(db, table)
        report = OptimizeReport(version_before=tbl.version, versions_before=len(tbl.list_versions()),
                                bytes_before=disk_usage(table_path(db, table)))
        where = step_place(db, table, tbl.count_rows())
        with disk_errors(table_path(db, table)), no_interrupt():
            run_step(tbl, where, "optimizing the table", _optimize, keep, not keep_deleted)
        report.stale_files_removed = [str(p) for p in remove_stale_files(db, table, grace_s=grace_s)]
        report.version_after, report.versions_after = tbl.version, len(tbl.list_versions())
        report.bytes_after = disk_usage(table_path(db, table))
        state = load_state(db, table)
        if state.get("version") == report.version_before:
            # compaction changes the version, not the content: indexes stay up to date
            state["version"] = tbl.version
            save_state(db, table, state)
    report.seconds = time.perf_counter() - start
    return report


# ------------------------------------------------------------------ stats


def table_stats(db: str | os.PathLike, table: str = DEFAULT_TABLE) -> dict[str, Any]:
    """Rows, documents, model, dim, indexes with their parameters, size on disk, versions."""
    with read_errors(db, table):
        return _table_stats(db, table)


def _table_stats(db: str | os.PathLike, table: str) -> dict[str, Any]:
    tbl = open_table(db, table)
    meta = table_meta(tbl)
    model = model_of(meta)
    docs = tbl.search().select(["doc_id"]).limit(None).to_arrow().column("doc_id")
    import pyarrow.compute as pc

    state = load_state(db, table)
    indexes = []
    for ix in tbl.list_indices():
        st = tbl.index_stats(ix.name)
        entry = {"name": ix.name, "type": ix.index_type, "columns": list(ix.columns),
                 "indexed_rows": st.num_indexed_rows if st else None,
                 "unindexed_rows": st.num_unindexed_rows if st else None}
        if ix.name == VECTOR_INDEX and state.get("vector_spec"):
            entry["params"] = state["vector_spec"]
        elif ix.name == multi.INDEX_NAME and state.get("tokens_spec"):
            entry["params"] = state["tokens_spec"]
        if st and st.distance_type:
            entry["metric"] = st.distance_type
        indexes.append(entry)
    versions = tbl.list_versions()
    rows = tbl.count_rows()
    representations = [r.stats(tbl, model, rows, db=db, table=table) for r in spaces.of_meta(model)]
    return {
        "db": str(db), "table": table, "rows": tbl.count_rows(),
        "documents": pc.count_distinct(docs).as_py() if len(docs) else 0,
        "model": model.get("name"), "plugin": model.get("plugin"), "revision": model.get("revision"),
        "dim": _dim(tbl), "version": tbl.version, "versions": len(versions),
        "oldest_version_at": str(versions[0]["timestamp"]) if versions else None,
        "size_bytes": disk_usage(table_path(db, table)), "indexes": indexes,
        "indexed_at_version": state.get("version"), "model_meta": model,
        "representations": representations,
    }


def disk_usage(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())



def format_stats(stats: dict[str, Any]) -> str:
    """The human view of :func:`table_stats` (key/value lines, one line per index)."""
    lines = [
        f"table     {stats['db']}/{stats['table']}",
        f"rows      {stats['rows']:,}   documents {stats['documents']:,}",
        f"model     {stats['plugin']}:{stats['model']}"
        + (f"@{stats['revision']}" if stats.get("revision") else "") + f"   dim {stats['dim']}",
        f"size      {format_size(stats['size_bytes'])}   version {stats['version']} "
        f"({stats['versions']} kept, oldest {stats['oldest_version_at']})",
    ]
    for i, rep in enumerate(stats.get("representations", [])):
        what = f"{rep['column']}: {rep['representation']}, dim {rep['dim']}"
        if "precision" in rep:
            what += (f", {rep['precision']}, pool {rep['pool']:g}: {rep['tokens']:,} tokens "
                     f"({rep['tokens_per_chunk']:g} a chunk), {rep['bytes_per_token']:g} bytes a token, "
                     f"{rep['bytes_per_chunk']:,.0f} a chunk")
        else:
            what += f", {rep['bytes_per_chunk']:,} bytes a chunk"
        lines.append(f"{'stores' if i == 0 else '':<10}{what}")
        if rep.get("maxsim_search"):
            lines.append(f"{'':<10}--mode maxsim: {rep['maxsim_search']}")
        book = rep.get("codebook")
        if book:
            lines.append(f"{'':<10}codebook {book['file']}: " + (
                book["problem"] if "problem" in book else
                f"{book['centroids']:,} centroids fitted on {book['fitted_tokens']:,} tokens"))
    if not stats["indexes"]:
        lines.append("indexes   none (exact search)")
    for i, entry in enumerate(stats["indexes"]):
        params = entry.get("params") or {}
        extra = " ".join(f"{k}={v}" for k, v in params.items() if k != "type")
        lines.append(f"{'indexes' if i == 0 else '':<10}{entry['name']}: {entry['type']} on "
                     f"{','.join(entry['columns'])}, {entry['indexed_rows']} indexed, "
                     f"{entry['unindexed_rows']} unindexed" + (f" ({extra})" if extra else ""))
    return "\n".join(lines) + "\n"
