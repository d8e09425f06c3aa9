"""Token vectors (``embed --multivector``) at a smaller precision, and what each precision costs.

``compress --method`` never touches the ``tokens`` column: it writes the dense codes into the
companion table. ``compress --tokens P`` re-encodes the token column itself at precision ``P``
(``spaces.multi``), reading the precision the table records, and only towards a smaller one: a
coarser code cannot be made finer again (``embed --replace --token-precision`` rebuilds).

The column's type changes with its precision, so the table is rewritten whole, streamed, in one
Lance commit (``overwrite``) under the table's write lock: a failure or a kill before the commit
leaves the table as it was; after it, every row has the new precision and the metadata says so.
An overwrite drops the table's indexes; those ``index`` had built are built again, with the
options it recorded. ``doc_key`` is left as it is: it records the precision each document was
embedded at, so a later ``embed --multivector`` continuing the table must name the new precision
(another is refused, exit 2), and re-embeds each document once.

:func:`token_report` measures every precision reachable from the stored one on the table's own
tokens: MaxSim over the whole table against MaxSim over the stored tokens decoded to float32,
streamed batch by batch (memory: one batch of tokens and each query's best rows).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from arrowsmith.commands.errors import UsageError
from arrowsmith.commands.schemas import MODEL, read_meta
from arrowsmith.commands.spaces import codebook as codebooks
from arrowsmith.commands.spaces import multi
from arrowsmith.commands.units import format_size

log = logging.getLogger("arrowsmith.compress")


def token_settings(tbl, db: str | os.PathLike, table: str) -> multi.TokenSettings:
    """The table's recorded token settings (a fitted precision's codebook loaded); UsageError
    (exit 2) when it holds no token vectors."""
    s = multi.settings_of(read_meta(tbl.schema).get(MODEL) or {}, db, table)
    if s is None or multi.COLUMN not in tbl.schema.names:
        raise UsageError(f"table {table!r} has no token vectors, so --tokens has nothing to compress",
                         hint="build it with `arrowsmith embed --multivector --db STORE`")
    return s


# ------------------------------------------------------------------ compress --tokens


@dataclass
class TokenConversion:
    table: str
    rows: int
    tokens: int
    before: str
    after: str
    bytes_before: int  # the token column's bytes, before and after
    bytes_after: int
    version: int
    reindexed: list[str]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.before == self.after:
            return f"{self.table!r}: token vectors are already {self.after}; nothing changed"
        again = f"; indexes rebuilt: {', '.join(self.reindexed)}" if self.reindexed else ""
        return (f"token vectors of {self.table!r}: {self.tokens:,} in {self.rows:,} chunks, {self.before} → "
                f"{self.after}: {format_size(self.bytes_before)} → {format_size(self.bytes_after)} "
                f"(version {self.version}, {self.seconds:.1f}s){again}. A later `embed --multivector` "
                f"continuing the table needs --token-precision {self.after}; it re-embeds each "
                "document once (doc_key records the precision it was embedded at)")


def convert_tokens(db: str | os.PathLike, table: str, precision: str, *, wait: bool = False
                   ) -> TokenConversion:
    """Rewrite the table's token column at ``precision`` (one commit), then rebuild its indexes."""
    from arrowsmith.commands import faults
    from arrowsmith.commands.signals import no_interrupt
    from arrowsmith.commands.store import (
        _record_commit,
        disk_errors,
        load_state,
        open_table,
        scan_batches,
        table_lock,
        table_path,
    )

    start = time.perf_counter()
    with table_lock(db, table, wait=wait):
        tbl = open_table(db, table)
        s = token_settings(tbl, db, table)
        allowed = multi.coarser(s)
        if precision not in multi.PRECISIONS:
            raise UsageError(f"--tokens {precision!r}: choose {', '.join(multi.PRECISIONS_BY_SIZE)}")
        if precision not in allowed:
            raise UsageError(f"table {table!r} stores its token vectors as {s.precision} "
                             f"({s.bytes_per_token:g} bytes a token); {precision} would take more bytes "
                             "without getting back what was dropped",
                             hint=f"--tokens {' or '.join(allowed[1:]) or s.precision}, or re-embed: "
                                  f"arrowsmith embed --multivector --token-precision {precision} --replace")
        version = tbl.version
        tbl.checkout(version)  # the whole rewrite reads one version
        rows = tbl.count_rows()
        counts = [np.asarray(b.column(multi.COLUMN).value_lengths().fill_null(0))
                  for b in scan_batches(tbl, [multi.COLUMN])]
        n_tokens = int(sum(c.sum() for c in counts))
        to = _fitted(tbl, s, multi.at_precision(s, precision), rows)
        result = TokenConversion(table, rows, n_tokens, s.precision, precision,
                                 round(n_tokens * s.bytes_per_token), round(n_tokens * to.bytes_per_token),
                                 version, [], 0.0)
        if precision == s.precision:
            return result
        schema = _converted_schema(tbl.schema, to)
        if to.codec is not None:  # beside the table before the commit that names it
            with disk_errors(table_path(db, table)):
                codebooks.save(db, table, to.codec)

        def batches():
            for batch in scan_batches(tbl, tbl.schema.names):
                arrays = [multi.convert(batch.column(n), s, to) if n == multi.COLUMN else batch.column(n)
                          for n in batch.schema.names]
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
            faults.hit("before_commit")  # every row written to new files, nothing committed

        writer = open_table(db, table)
        reader = pa.RecordBatchReader.from_batches(schema, batches())
        with disk_errors(table_path(db, table)):
            # one commit at the end: readers see all old rows or all new; an interrupt before
            # it leaves the table as it was (the files written so far are stale_files' to remove)
            writer.add(reader, mode="overwrite")
        with no_interrupt():
            result.version = writer.version
            _record_commit(db, table, writer.version, created=False)
        faults.hit("after_commit")
        wanted = load_state(db, table).get("wanted")
    if isinstance(wanted, dict):
        result.reindexed = _rebuild_indexes(db, table, wanted, wait, precision)
    result.seconds = time.perf_counter() - start
    return result


def _converted_schema(schema: pa.Schema, to: multi.TokenSettings) -> pa.Schema:
    import json

    meta = dict(schema.metadata or {})
    model = read_meta(schema).get(MODEL) or {}
    kept = {k: v for k, v in model.get(multi.META_KEY, {}).items() if k != "codebook"}
    model[multi.META_KEY] = {**kept, **to.as_meta()}
    meta[MODEL.encode()] = json.dumps(model, sort_keys=True).encode()
    fields = [multi.field(to) if f.name == multi.COLUMN else f for f in schema]
    return pa.schema(fields, metadata=meta)


def _rebuild_indexes(db, table: str, wanted: dict[str, Any], wait: bool, precision: str) -> list[str]:
    """The indexes `index` had built, again with the options it recorded (an overwrite drops them);
    the token index only while the tokens are floats (LanceDB cannot index packed ones)."""
    from arrowsmith.commands.index import build_indexes

    metric = wanted.get("metric")
    token_index = wanted.get("token_index", "auto") if precision in multi.FLOAT_PRECISIONS else "auto"
    report = build_indexes(db, table, vector_type=wanted.get("vector_type", "auto"),
                           partitions=wanted.get("partitions"),
                           metric=None if metric == "cosine" else metric,  # recorded as cosine when not given
                           fts=bool(wanted.get("fts", True)),
                           scalar=[c for c in wanted.get("scalar", []) if c != "doc_id"],
                           token_index=token_index, wait=wait)
    return list(report.built)


# ------------------------------------------------------------------ the report


@dataclass
class TokenResult:
    precision: str
    bytes_per_token: float
    bytes_per_chunk: float
    ratio: float  # float32's bytes over this precision's
    memory_bytes: int  # the whole column at this precision
    recall_at_k: float  # against MaxSim over the stored tokens decoded to float32
    top1_agreement: float
    ndcg_at_k: float | None
    ndcg_delta: float | None
    encode_s: float
    query_ms: float


@dataclass
class _Top:
    """Each query's ``depth`` best rows so far (positions in the table's scan order)."""

    depth: int
    n: int
    scores: np.ndarray = None  # type: ignore[assignment]
    positions: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.scores = np.full((self.n, 0), -np.inf, np.float32)
        self.positions = np.zeros((self.n, 0), np.int64)

    def add(self, scores: np.ndarray, first: int) -> None:
        s = np.concatenate([self.scores, scores], axis=1)
        p = np.concatenate([self.positions, np.broadcast_to(first + np.arange(scores.shape[1]),
                                                             scores.shape)], axis=1)
        if s.shape[1] > self.depth:
            keep = np.argpartition(-s, self.depth - 1, axis=1)[:, :self.depth]
            s, p = np.take_along_axis(s, keep, 1), np.take_along_axis(p, keep, 1)
        self.scores, self.positions = s, p

    def ranked(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        order = np.argsort(-self.scores, axis=1, kind="stable")
        s, p = np.take_along_axis(self.scores, order, 1), np.take_along_axis(self.positions, order, 1)
        keep = np.isfinite(s)
        return [pi[m] for pi, m in zip(p, keep, strict=True)], [si[m] for si, m in zip(s, keep, strict=True)]


def token_report(db: str | os.PathLike, table: str, *, query_ids: list[str], query_texts: list[str] | None,
                 sample_rows: np.ndarray | None, doc_ids: np.ndarray, qrels: dict | None, k: int,
                 depth: int) -> list[TokenResult]:
    """Each precision the stored tokens can be re-encoded to, on the table's own token vectors.

    Queries are ``query_texts`` (their token vectors from the table's model) or, sampled, the
    stored tokens of ``sample_rows`` (each not its own neighbour) — the rows the dense report
    samples. nDCG@k with ``qrels``, per document as the dense report counts it.
    """
    from arrowsmith.commands.store import open_table, scan_batches

    from .report import agreement, ndcg_of

    tbl = open_table(db, table)
    s = token_settings(tbl, db, table)
    tbl.checkout(tbl.version)
    precisions = multi.coarser(s)
    if query_texts is not None:
        from arrowsmith.commands.query_vectors import query_token_vectors

        queries = query_token_vectors(query_texts, read_meta(tbl.schema).get(MODEL), ids=query_ids)
    else:
        queries = _sampled_tokens(tbl, s, sample_rows)
    extra = 1 if sample_rows is not None else 0
    tops = {p: _Top(depth + extra, len(queries)) for p in precisions}
    rows_now = tbl.count_rows()
    targets = {p: _fitted(tbl, s, multi.at_precision(s, p), rows_now) for p in precisions}
    encode_s = dict.fromkeys(precisions, 0.0)
    search_s = dict.fromkeys(precisions, 0.0)
    first = n_tokens = 0
    for batch in scan_batches(tbl, [multi.COLUMN]):
        col = batch.column(multi.COLUMN)
        n_tokens += int(np.asarray(col.value_lengths().fill_null(0)).sum())
        for p in precisions:
            t0 = time.perf_counter()
            to = targets[p]
            flat, offsets = multi.decode(col if p == s.precision else multi.convert(col, s, to), to)
            t1 = time.perf_counter()
            tops[p].add(multi.maxsim(queries, flat, offsets), first)
            encode_s[p] += t1 - t0
            search_s[p] += time.perf_counter() - t1
        first += batch.num_rows
    rows = first
    ranked = {}
    for p in precisions:
        positions, scores = tops[p].ranked()
        if sample_rows is not None:  # a sampled chunk is not its own neighbour
            keep = [pos != own for pos, own in zip(positions, sample_rows, strict=True)]
            positions = [pos[m][:depth] for pos, m in zip(positions, keep, strict=True)]
            scores = [sc[m][:depth] for sc, m in zip(scores, keep, strict=True)]
        ranked[p] = positions, scores
    ref_positions = ranked[s.precision][0]
    base = None
    out = []
    per_chunk = n_tokens / rows if rows else 0.0
    for p in precisions:
        positions, scores = ranked[p]
        nbytes = multi.TokenSettings(s.dim, p).bytes_per_token
        ndcg = ndcg_of(doc_ids, query_ids, positions, scores, qrels, k) if qrels is not None else None
        base = ndcg if p == s.precision else base
        recall, top1 = agreement(positions, ref_positions, k)
        out.append(TokenResult(p, nbytes, round(per_chunk * nbytes, 1), round(4 * s.dim / nbytes, 2),
                               round(n_tokens * nbytes), recall, top1, ndcg,
                               None if ndcg is None or base is None else ndcg - base, encode_s[p],
                               1000 * search_s[p] / max(1, len(queries))))
    return out


FIT_ROWS = 4_096  # chunks whose tokens a fitted precision's codebook is fitted on (evenly spread)


def _fitted(tbl, s: multi.TokenSettings, to: multi.TokenSettings, rows: int) -> multi.TokenSettings:
    """``to`` with a codebook fitted on the table's own tokens, when its precision needs one: from
    :data:`FIT_ROWS` chunks spread over the whole table (``embed`` has only its first batch)."""
    if not to.fitted or to.codec is not None or not rows:
        return to
    picked = np.unique(np.linspace(0, rows - 1, min(rows, FIT_ROWS)).astype(np.int64))
    return multi.fit_codec(to, np.concatenate(_sampled_tokens(tbl, s, picked)))


def _sampled_tokens(tbl, s: multi.TokenSettings, rows: np.ndarray) -> list[np.ndarray]:
    got = tbl.take_offsets([int(r) for r in rows]).select([multi.COLUMN]).to_arrow()
    flat, offsets = multi.decode(got.column(multi.COLUMN), s)
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(rows))]
