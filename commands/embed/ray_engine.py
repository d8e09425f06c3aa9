"""``embed --engine ray``: one committer (this process), many embedders (Ray actors). Issue 11.

The driver runs the local engine's own decision pass, :func:`~arrowsmith.commands.embed.document_groups`:
it reads the input, keys every document and asks ``skip_doc`` (the store's ``is_current``), so
doc_keys, empty-text handling, bad-row errors, group bounds and the output schema are the local
engine's. Each group of documents to embed is packed into one Arrow batch (text, spans, doc_keys,
carried metadata) and sent to one of a pool of long-lived actors, each holding the model once,
which runs the local engine's :class:`~arrowsmith.commands.embed.GroupEmbedder` on it and returns
one batch of embedded chunks. The driver checks each result (its documents, their doc_keys, its
schema), drops one whose group already delivered, resubmits a lost one, and hands the batches to
the sink the local engine would use: the one ``StoreWriter`` (lock, checkpoints, fault points), a
stream or a file. Workers never open the store.

Nothing here imports Ray at module import time; a run with nothing to embed never starts it.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import itertools
import logging
import math
import os
import resource
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from .. import faults, spaces
from ..errors import ArrowsmithError, DataError, Interrupted, UsageError
from ..schemas import CHUNK_SPAN, EMBEDDED_CORE
from ..signals import no_interrupt
from .embedder import GroupEmbedder
from .grouping import GROUP_CHUNKS, GROUP_LATE_TOKENS, EmbedDoc, document_groups, group_weight
from .params import EmbedParams, embedding_meta, resolve_params
from .stats import EmbedStats

log = logging.getLogger("arrowsmith.ray")

INSTALL = "pip install 'arrowsmith[ray]'"
ADDRESS_ENV = "RAY_ADDRESS"
# test hooks inside a worker (ARROWSMITH_FAULT=ray_worker:N dies once at the N-th group it
# finishes, ray_worker_hang blocks at its first group); markers live in ARROWSMITH_FAULT_DIR
WORKER_FAULT = "ray_worker"
WORKER_HANG = "ray_worker_hang"
FAULT_DIR_ENV = "ARROWSMITH_FAULT_DIR"
FORWARDED_ENV = (faults.ENV, FAULT_DIR_ENV, "ARROWSMITH_ALLOW_DOWNLOAD")
SPAN = pa.struct([CHUNK_SPAN.field("start"), CHUNK_SPAN.field("end")])
CONNECT_TIMEOUT_S = 5.0
LOCAL_OBJECT_STORE = 512 << 20  # bytes, for a local Ray started here
# A local Ray started here runs nothing but our actors: no metrics, task events, timeline or
# pre-started idle workers. Without them an idle local Ray's processes took 0.6 CPU-seconds in
# 20 s instead of 1.4 (2 cores; benchmarks/ray.py prints the CPU seconds per role while the actors
# embed): every CPU-second they take is one the model does not get. Not applied to a cluster we
# join (its owner configured it).
LOCAL_SYSTEM_CONFIG = {"enable_metrics_collection": False, "enable_timeline": False, "event_stats": False,
                       "task_events_report_interval_ms": 0, "enable_worker_prestart": False,
                       "prestart_worker_first_driver": False}
LOCAL_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}  # for the Ray processes started here, unless set
# Groups are the local engine's size (GROUP_CHUNKS chunks, GROUP_LATE_TOKENS for late chunking):
# the model sorts a group's texts by length, and 512-chunk groups padded 9% of their tokens
# against 3.6% for 2048 (the benchmark's corpus). Read from the input in units of UNIT_DIV times
# smaller, so that once the input has ended the rest is cut into shrinking groups (guided
# scheduling: what is left / workers) and the workers finish together instead of one embedding a
# last full group while the others wait. In a model of the benchmark's 400 documents (cost =
# padded tokens) 2 workers went from 0.81x the local engine (fixed 512-chunk groups, two in
# flight per worker) to 0.96x, 1 worker from 0.95x to 1.00x.
UNIT_DIV = 32
TAIL_MIN_DIV = 16  # the smallest tail group: a 16th of a full one
POLL_S = 0.25  # ray.wait slices: a signal that arrived during one is raised right after it


@dataclass
class RayOptions:
    """How to reach Ray and size the pool (``None``: decided from the cluster's resources)."""

    address: str | None = None  # None: $RAY_ADDRESS, else a local Ray started (and stopped) here
    workers: int | None = None  # None: one per GPU, else cluster CPUs // cpus_per_worker
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0
    # None: 1 with a GPU; with `workers` given, the cluster's CPUs split among them (split_cpus);
    # else min(4, cluster CPUs)
    cpus_per_worker: float | None = None
    model_options: dict[str, Any] | None = None  # the plugin factory's options (device, dtype, …)
    max_in_flight: int | None = None  # groups submitted and not yet handed on [default: 2 per worker]
    max_running: int | None = None  # groups submitted at once [default: 1 per CPU worker, 2 per GPU one]
    group_chunks: int | None = None  # at most this many chunks per group (a document is never split)
    max_attempts: int = 3  # submissions of one group before the run fails
    max_restarts: int = 3  # Ray restarts of a dead actor (its tasks are retried as often)

    def check(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers {self.workers}: must be at least 1")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker {self.gpus_per_worker}: must be 0 or more")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise UsageError(f"--cpus-per-worker {self.cpus_per_worker}: must be more than 0")
        for name in ("max_in_flight", "max_running", "group_chunks", "max_attempts"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} {value}: must be at least 1")


def split_cpus(workers: int, node_cpus: Iterable[float]) -> float:
    """CPUs per worker for ``--workers N`` without ``--cpus-per-worker`` (issue 20).

    The most whole CPUs at which N actors fit on the nodes (an actor cannot span nodes): on one
    node ``floor(CPUs / N)``, 2 workers on 2 CPUs get 1 each. At least 1: N above the CPUs is the
    caller's to refuse (a local Ray) or wait for (a cluster that may grow).
    """
    nodes = [int(c) for c in node_cpus if c >= 1]
    for cpus in range(max(nodes, default=1), 1, -1):
        if sum(n // cpus for n in nodes) >= workers:
            return float(cpus)
    return 1.0


def require_ray() -> None:
    """UsageError (exit 2) naming the install command when Ray is not installed."""
    mod = sys.modules.get("ray", False)
    if mod is None or (mod is False and importlib.util.find_spec("ray") is None):
        raise UsageError("--engine ray needs Ray, which is not installed", hint=INSTALL)


def _ray():
    require_ray()
    import ray

    return ray


# ------------------------------------------------------------------ groups and their results


@dataclass
class Group:
    """Documents shipped together: their input rows and what the result must hold."""

    id: int
    batch: pa.RecordBatch  # the documents (pack_group): text, spans, doc_keys, metadata
    schema: pa.Schema  # of the embedded chunks (document_groups')
    keys: dict[str, set[str]]  # doc_id → doc_key(s) computed by the driver
    chunks: int  # rows the result must have
    attempts: int = 0


@dataclass
class GroupResult:
    group_id: int
    batch: pa.RecordBatch
    stats: dict[str, Any] = field(default_factory=dict)


class LostGroup(Exception):
    """A submission that will never deliver (its worker died past Ray's retries, its object is lost)."""


class Backend(Protocol):
    """Where groups run: Ray actors (:class:`RayBackend`), or a fake in tests."""

    def submit(self, group: Group) -> Any: ...
    def ready(self, handles: list[Any], timeout: float) -> list[Any]: ...
    def result(self, handle: Any) -> GroupResult: ...


def check_result(group: Group, result: GroupResult) -> pa.RecordBatch:
    """The result in the group's schema, after checking it holds exactly the group's documents.

    A worker whose model or code differs from the driver's would compute other doc_keys: that is
    refused here, before anything reaches the store.
    """
    batch = result.batch
    if batch.num_rows != group.chunks:
        raise DataError(f"group {group.id}: a worker returned {batch.num_rows} chunks, "
                        f"{group.chunks} expected")
    docs = batch.column("doc_id").to_pylist()
    keys = batch.column("doc_key").to_pylist()
    for d, k in zip(docs, keys, strict=True):
        if k not in group.keys.get(d, ()):
            raise UsageError(f"group {group.id}: a worker's doc_key for document {d!r} differs from "
                             "the driver's: the workers' model or arrowsmith version is not the driver's",
                             hint="install the same arrowsmith and model on every node")
    if set(docs) != set(group.keys):
        raise DataError(f"group {group.id}: a worker returned other documents than it was sent")
    if not batch.schema.equals(group.schema, check_metadata=True):
        raise DataError(f"group {group.id}: a worker returned another schema than the driver's")
    return batch


class Dispatcher:
    """Bounded, deduplicated, retried group submission over a :class:`Backend`.

    At most ``max_in_flight`` groups are submitted or held and not yet handed on, so memory is
    flat in the corpus size, and at most ``max_running`` of them are submitted: a group not yet
    submitted stays on the driver, where it can still go to whichever worker is free first. A
    result whose group already delivered (a retry that raced its original, a duplicated reply) is
    dropped, so no document reaches the sink twice; a lost submission is resubmitted, up to
    ``max_attempts`` in all. ``ordered`` hands results on in submission order (a stream);
    otherwise as they arrive (a store).
    """

    def __init__(self, backend: Backend, *, max_in_flight: int, ordered: bool, max_attempts: int = 3,
                 max_running: int | None = None):
        self.backend = backend
        self.max_in_flight, self.ordered, self.max_attempts = max_in_flight, ordered, max_attempts
        self.max_running = min(max_running or max_in_flight, max_in_flight)
        self._open: dict[int, Group] = {}  # submitted, no result yet
        self._handles: dict[Any, int] = {}  # live submission → group id
        self._done: dict[int, GroupResult] = {}  # results held back for order
        self._order: collections.deque[int] = collections.deque()  # ordered: ids not yet handed on
        self.duplicates = 0
        self.resubmitted = 0

    @property
    def in_flight(self) -> int:
        return len(self._open) + len(self._done)

    def has_room(self) -> bool:
        return self.in_flight < self.max_in_flight and len(self._open) < self.max_running

    def room(self) -> Iterator[GroupResult]:
        """Wait until a group can be submitted; yields results that complete meanwhile."""
        while not self.has_room():
            yield from self._collect(block=True)

    def submit(self, group: Group) -> Iterator[GroupResult]:
        """Submit ``group``; yields results that complete while waiting for room."""
        yield from self.room()
        self._open[group.id] = group
        if self.ordered:
            self._order.append(group.id)
        self._send(group)
        yield from self._collect(block=False)

    def drain(self) -> Iterator[GroupResult]:
        """Every remaining result."""
        while self.in_flight:
            yield from self._collect(block=True)

    def _send(self, group: Group) -> None:
        if group.attempts >= self.max_attempts:
            raise ArrowsmithError(f"group {group.id} ({len(group.keys)} documents) was lost "
                                  f"{group.attempts} times; its workers keep dying")
        group.attempts += 1
        self._handles[self.backend.submit(group)] = group.id

    def _collect(self, block: bool) -> Iterator[GroupResult]:
        if self._handles:
            ready = self.backend.ready(list(self._handles), POLL_S if block else 0.0)
            for handle in ready:
                self._take(handle)
        elif block and self._open:  # cannot happen with a sane backend: fail, never spin
            raise ArrowsmithError(f"groups {sorted(self._open)} have no submission in flight")
        yield from self._release()

    def _take(self, handle: Any) -> None:
        gid = self._handles.pop(handle)
        try:
            result = self.backend.result(handle)
        except LostGroup as e:
            log.warning("group %d lost (%s): resubmitting it", gid, e)
            result = None
        if result is not None:
            group = self._open.pop(result.group_id, None)
            if group is None:
                self.duplicates += 1  # this group already delivered: never hand on its rows twice
            else:
                result.batch = check_result(group, result)
                self._done[result.group_id] = result
        group = self._open.get(gid)
        if group is not None and gid not in self._handles.values():
            self.resubmitted += 1  # its submission ended without delivering it
            self._send(group)

    def _release(self) -> Iterator[GroupResult]:
        if not self.ordered:
            done, self._done = self._done, {}
            yield from done.values()
            return
        while self._order and self._order[0] in self._done:
            yield self._done.pop(self._order.popleft())


# ------------------------------------------------------------------ groups on the wire


def pack_group(docs: list[EmbedDoc], schema: pa.Schema) -> pa.RecordBatch:
    """The documents of a group as one batch: id, text, doc_hash, doc_key, spans, carried metadata.

    The carried columns keep their output names (never one of the core names used here), so the
    worker's ``GroupEmbedder`` finds each document's metadata in its row, as it does in the input.
    """
    arrays = [
        pa.array([d.id for d in docs], pa.string()),
        pa.array([d.text for d in docs], pa.string()),
        pa.array([d.doc_hash for d in docs], pa.string()),
        pa.array([d.key for d in docs], pa.string()),
        pa.array([[{"start": s, "end": e} for s, e in d.spans] for d in docs], pa.list_(SPAN)),
    ]
    fields = [pa.field(n, a.type) for n, a in zip(("id", "text", "doc_hash", "doc_key", "chunks"), arrays,
                                                   strict=True)]
    for f in schema:
        if f.name in EMBEDDED_CORE or f.name in spaces.COLUMNS:
            continue
        values = [d.source.column(f.name).slice(d.row, 1) for d in docs]
        arrays.append(pa.concat_arrays([v.cast(f.type) if v.type != f.type else v for v in values]))
        fields.append(f)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def unpack_group(batch: pa.RecordBatch) -> list[EmbedDoc]:
    ids, texts, hashes, keys, spans = (batch.column(n).to_pylist()
                                       for n in ("id", "text", "doc_hash", "doc_key", "chunks"))
    return [EmbedDoc(ids[i], texts[i], hashes[i], [(s["start"], s["end"]) for s in spans[i]], batch, i,
                     key=keys[i]) for i in range(batch.num_rows)]


class GroupCutter:
    """Cuts the documents to embed into groups, as late as possible, sized for balance.

    Reads :func:`document_groups`' small units into a bounded buffer (``lookahead`` full groups
    per worker beyond the one being cut, so memory stays flat), and cuts a group from it when a
    worker has room for one: a full group (``limit``: chunks, or document tokens for late
    chunking; at most ``rows`` chunks once it holds more than one document) while input remains;
    once the input has ended, what is left / ``workers`` (at least ``limit / TAIL_MIN_DIV``), so
    the last groups shrink and no worker is left embedding a full group while the others wait.
    Documents stay whole and in input order.

    ``start`` is called once, when the first document to embed is buffered (it starts Ray), and
    returns the number of workers. A run with nothing to embed never calls it.
    """

    def __init__(self, units: Iterator[tuple[list[EmbedDoc], pa.Schema]], *, limit: int, rows: int | None,
                 late: bool, start: Callable[[], int], lookahead: int = 1):
        self.units, self.limit, self.rows, self.late = units, limit, rows, late
        self.start, self.lookahead = start, lookahead
        self.buffer: collections.deque[EmbedDoc] = collections.deque()
        self.weight = 0  # of the buffered documents
        self.workers = 0  # 0: not started
        self.ended = False
        self.schema: pa.Schema | None = None

    def _fill(self, weight: int) -> None:
        while not self.ended and self.weight < weight:
            unit = next(self.units, None)
            if unit is None:
                self.ended = True
                return
            docs, self.schema = unit
            self.buffer.extend(docs)
            self.weight += sum(group_weight(d, self.late) for d in docs)

    def next_group(self) -> list[EmbedDoc] | None:
        """The next group to submit, or None when every document has been cut."""
        self._fill(1)
        if not self.buffer:
            return None
        if not self.workers:
            self.workers = max(1, self.start())
        self._fill(self.limit * (1 + self.lookahead * self.workers))
        target = self.limit
        if self.ended:
            share = math.ceil(self.weight / self.workers)
            target = min(self.limit, max(self.limit // TAIL_MIN_DIV, share))
        group: list[EmbedDoc] = []
        weight = rows = 0
        while self.buffer:
            doc = self.buffer[0]
            w, r = group_weight(doc, self.late), max(1, len(doc.spans))
            if group and (weight + w > target or (self.rows is not None and rows + r > self.rows)):
                break
            group.append(self.buffer.popleft())
            weight += w
            rows += r
        self.weight -= weight
        return group


def make_group(group_id: int, docs: list[EmbedDoc], schema: pa.Schema) -> Group:
    keys: dict[str, set[str]] = {}
    for d in docs:
        if d.spans:  # a document without chunks has no rows to check
            keys.setdefault(d.id, set()).add(d.key)
    return Group(group_id, pack_group(docs, schema), schema, keys, sum(len(d.spans) for d in docs))


# ------------------------------------------------------------------ the engine


class RayEngine:
    """A context manager: ``embed_batches`` on Ray actors; leaving it stops what it started."""

    def __init__(self, options: RayOptions | None = None, *, ordered: bool = True):
        self.options = options or RayOptions()
        self.options.check()
        require_ray()  # exit 2 before any input is read
        self.ordered = ordered
        self.backend: RayBackend | None = None
        self.worker_peak_rss_kb = 0  # the largest peak RSS an actor reported (benchmarks/ray.py)
        self.worker_seconds = 0.0  # the actors' time inside their groups, all together (benchmarks/ray.py)

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.backend is not None:
            backend, self.backend = self.backend, None
            backend.close()

    def embed_batches(self, batches: Iterable[pa.RecordBatch], model, *, late: bool = False,
                      batch_tokens: int | None = None, prompt: str | None = None,
                      query_prompt: str | None = None, dim: int | None = None, window: int | None = None,
                      window_overlap: int | None = None, late_specials: str = "exclude", force: bool = False,
                      multivector: bool = False, token_precision: str | None = None,
                      token_pool: float = 1.0, token_codebook=None, id_col: str = "id",
                      text_col: str = "text", skip_doc=None,
                      group_rows: int | None = None, stats: EmbedStats | None = None
                      ) -> Iterator[pa.RecordBatch]:
        """:func:`arrowsmith.commands.embed.embed_batches`, the groups embedded by Ray actors."""
        stats = stats if stats is not None else EmbedStats()
        params = resolve_params(model, late=late, prompt=prompt, query_prompt=query_prompt, dim=dim,
                                window=window, window_overlap=window_overlap, late_specials=late_specials,
                                force=force, multivector=multivector, token_precision=token_precision,
                                token_pool=token_pool, token_codebook=token_codebook)
        # on accelerators, larger groups (as the local engine's): a forward pass takes more tokens
        scale = 4 if self.options.gpus_per_worker or str(model.device) != "cpu" else 1
        limit = (GROUP_LATE_TOKENS if params.late else GROUP_CHUNKS) * scale
        caps = [c for c in (group_rows, self.options.group_chunks) if c]
        rows = min(caps) if caps else None
        if not params.late and rows is not None:
            limit = min(limit, rows)
        units = document_groups(batches, model, params, id_col=id_col, text_col=text_col, skip_doc=skip_doc,
                                group_rows=max(1, min(rows or limit, GROUP_CHUNKS * scale) // UNIT_DIV),
                                stats=stats)
        dispatcher: Dispatcher | None = None
        fitted_here: pa.RecordBatch | None = None
        if params.tokens is not None and params.tokens.fitted and params.tokens.codec is None:
            # a table has one token codebook, and each actor would fit its own: the driver embeds
            # the first unit of documents itself, fits the codebook on it, and the actors code with it
            units = iter(units)
            first = next(units, None)
            if first is not None and first[0]:
                local = GroupEmbedder(model, params, batch_tokens, stats)
                fitted_here = local.embed(*first)
                params = local.params
            elif first is not None:
                units = itertools.chain([first], units)

        def start() -> int:  # the first document to embed: only now is Ray started
            nonlocal dispatcher
            dispatcher = self._start(model, params, batch_tokens, stats)
            return len(self.backend.actors) if self.backend is not None else 1

        cutter = GroupCutter(units, limit=limit, rows=rows, late=params.late, start=start)
        emitted, ended, next_id = False, False, 0
        t0 = time.perf_counter()
        try:
            if fitted_here is not None:
                emitted = True
                yield fitted_here
            while not ended:
                ready: list[GroupResult] = []
                if dispatcher is not None:
                    ready += dispatcher.room()
                # a group is cut only once a worker has room for it (so the cut sees the input's
                # end), and the workers get theirs before results go on to the sink (a commit)
                while True:
                    docs = cutter.next_group()
                    if docs is None:
                        ended = True
                        break
                    ready += dispatcher.submit(make_group(next_id, docs, cutter.schema))
                    next_id += 1
                    if not dispatcher.has_room():
                        break
                for result in ready:
                    emitted = True
                    yield self._count(result, stats)
            for result in dispatcher.drain() if dispatcher is not None else ():
                emitted = True
                yield self._count(result, stats)
            if not emitted:  # an empty batch still carries the schema (and model metadata)
                yield pa.RecordBatch.from_pylist([], schema=cutter.schema)
        finally:
            stats.seconds += time.perf_counter() - t0

    def _start(self, model, params: EmbedParams, batch_tokens: int | None, stats: EmbedStats) -> Dispatcher:
        t0 = time.perf_counter()
        self.backend = RayBackend(self.options, model, params, batch_tokens)
        self.backend.start(embedding_meta(model, params))
        stats.load_seconds += time.perf_counter() - t0  # start-up: Ray, the actors, their weights
        workers = len(self.backend.actors)
        # on CPUs one group per worker is submitted (its round trip is milliseconds against
        # seconds of embedding), so the next is cut when a worker is free and can go to it; a
        # GPU worker gets a second, queued, so the device never waits for the driver
        running = workers * (2 if self.backend.gpus else 1)
        return Dispatcher(self.backend, max_in_flight=self.options.max_in_flight or 2 * workers,
                          ordered=self.ordered, max_attempts=self.options.max_attempts,
                          max_running=self.options.max_running or running)

    def _count(self, result: GroupResult, stats: EmbedStats) -> pa.RecordBatch:
        s = result.stats
        self.worker_peak_rss_kb = max(self.worker_peak_rss_kb, int(s.get("max_rss_kb", 0)))
        self.worker_seconds += float(s.get("seconds", 0.0))
        stats.documents_embedded += int(s.get("documents", 0))
        stats.chunks += int(s.get("chunks", result.batch.num_rows))
        stats.tokens += int(s.get("tokens", 0))
        stats.unknown_tokens += int(s.get("unknown_tokens", 0))
        return result.batch


# ------------------------------------------------------------------ Ray: the cluster and the actors


class RayBackend:
    """Our actors on a Ray cluster: the user's (``--ray-address`` / ``$RAY_ADDRESS``), one this
    process already joined (``ray.init`` in a notebook), or a local one started and stopped here."""

    def __init__(self, options: RayOptions, model, params: EmbedParams, batch_tokens: int | None):
        self.options, self.model, self.params, self.batch_tokens = options, model, params, batch_tokens
        self.ray = _ray()
        self.started_local = False  # we started the cluster: shut it down at the end
        self.connected = False  # we connected this process: disconnect at the end
        self.actors: list[Any] = []
        self._load: dict[int, int] = {}  # actor index → tasks outstanding
        self._where: dict[Any, int] = {}  # handle → actor index
        self._spawn: Callable[[], Any] | None = None
        self.replaced = 0
        self.gpus = 0.0  # per worker

    # -- start-up ---------------------------------------------------------------------------
    def start(self, driver_meta: dict[str, Any]) -> None:
        self._connect()
        resources = self.ray.cluster_resources()
        o = self.options
        cluster_gpus = float(resources.get("GPU", 0))
        cluster_cpus = float(resources.get("CPU", 1))
        gpus = o.gpus_per_worker if o.gpus_per_worker is not None else (1.0 if cluster_gpus >= 1 else 0.0)
        split = o.cpus_per_worker is None and not gpus and o.workers is not None
        if o.cpus_per_worker is not None:
            cpus = o.cpus_per_worker
        elif gpus:
            cpus = 1.0
        elif split:
            cpus = split_cpus(o.workers, self._node_cpus())
        else:
            cpus = float(max(1, min(4, int(cluster_cpus))))
        if o.workers is not None:
            workers = o.workers
        elif gpus:
            workers = max(1, int(cluster_gpus // gpus))
        else:
            workers = max(1, int(cluster_cpus // cpus))
        if split:
            self._check_split(workers, cluster_cpus)
        self._check_fits(workers, cpus, gpus, cluster_cpus, cluster_gpus)
        self.gpus = gpus
        cls = self.ray.remote(EmbedWorker).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=o.max_restarts, max_task_retries=o.max_restarts,
            runtime_env=_runtime_env())
        spec = f"{self.model.plugin}:{self.model.name}"
        args = (spec, self._model_options(gpus), self.params, self.batch_tokens, os.getcwd(),
                max(1, round(cpus)))
        self._spawn = lambda: cls.remote(*args)
        self.actors = [self._spawn() for _ in range(workers)]
        self._load = dict.fromkeys(range(workers), 0)
        infos = self._get([a.info.remote() for a in self.actors])
        for info in infos:
            _check_worker_meta(driver_meta, info)
        log.info("ray: %d workers (%g CPUs, %g GPUs each) on %s of %g CPUs, %g GPUs", workers, cpus, gpus,
                 "a local Ray" if self.started_local else "the cluster", cluster_cpus, cluster_gpus)

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return  # joined by the caller (a notebook, a test session): theirs to keep
        address = self.options.address or os.environ.get(ADDRESS_ENV) or None
        kwargs: dict[str, Any] = dict(address=address or "local", log_to_driver=False,
                                      logging_level=logging.ERROR)
        if address is None:
            # a few groups in flight need megabytes, not Ray's default of 30% of memory in /dev/shm
            kwargs.update(include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE,
                          _system_config=LOCAL_SYSTEM_CONFIG)
            for key, value in LOCAL_ENV.items():
                os.environ.setdefault(key, value)  # inherited by the Ray processes started here
        else:
            _check_reachable(address)  # ray.init retries an unreachable address for minutes
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            # starting a local Ray spawns processes for seconds: a signal then would leave them
            # behind, so it waits until init returns and close() can shut them down
            with no_interrupt() if address is None else contextlib.nullcontext():
                try:
                    with warnings.catch_warnings():
                        # Ray forks only to exec its own processes at once: no lancedb state runs there
                        warnings.filterwarnings("ignore", "lancedb fork support", RuntimeWarning)
                        ray.init(**kwargs)
                    _errors_to_stderr(ray)
                except SystemExit as e:  # Ray's own SIGTERM handler, set during init
                    if e.code == signal.SIGTERM:
                        raise Interrupted(signal.SIGTERM) from None
                    raise
                except SystemError as e:  # our handler raised inside Ray's C code
                    if isinstance(e.__cause__, Interrupted):
                        raise e.__cause__ from None
                    raise
                finally:
                    self.started_local = address is None and ray.is_initialized()
                    self.connected = ray.is_initialized()
        except ArrowsmithError:
            raise
        except Exception as e:  # noqa: BLE001 - a bad address, a foreign cluster, no room to start
            where = address or "a local Ray"
            raise UsageError(f"cannot start or join Ray ({where}): {type(e).__name__}: {_first_line(e)}",
                             hint="--ray-address HOST:PORT of a running cluster, or unset RAY_ADDRESS"
                             ) from None
        finally:
            # ray.init installs its own SIGTERM handler (sys.exit): ours turns it into exit 143
            for s, h in saved.items():
                if h is not None:
                    signal.signal(s, h)

    def _node_cpus(self) -> list[float]:
        """CPUs of each live node (an actor cannot span nodes)."""
        return [float(n.get("Resources", {}).get("CPU", 0)) for n in self.ray.nodes() if n.get("Alive")]

    def _check_split(self, workers: int, have_cpus: float) -> None:
        """``--workers N`` alone, N more than a local Ray's CPUs: exit 2 naming both (issue 20).

        A worker gets at least one whole CPU unless --cpus-per-worker says less: N actors each
        holding a model on fewer cores than that would only trade memory for contention.
        """
        if workers <= have_cpus + 1e-9 or not self.started_local:
            return  # a cluster the driver joined may grow (an autoscaler): _check_fits waits
        share = math.floor(have_cpus / workers * 1e4) / 1e4  # Ray's resource granularity: N of them fit
        raise UsageError(f"--workers {workers} is more than the {have_cpus:g} CPUs of this local Ray "
                         "(each worker gets at least 1 CPU)",
                         hint=f"--workers {max(1, int(have_cpus))} or fewer, or --cpus-per-worker {share:g} "
                              "to share cores")

    def _check_fits(self, workers: int, cpus: float, gpus: float, have_cpus: float, have_gpus: float) -> None:
        need_c, need_g = workers * cpus, workers * gpus
        if need_c <= have_cpus + 1e-9 and need_g <= have_gpus + 1e-9:
            return
        msg = (f"{workers} workers × {cpus:g} CPUs, {gpus:g} GPUs need {need_c:g} CPUs and {need_g:g} GPUs; "
               f"the cluster has {have_cpus:g} CPUs and {have_gpus:g} GPUs")
        if self.started_local:
            raise UsageError(msg, hint="fewer --workers, or a smaller --cpus-per-worker / --gpus-per-worker")
        log.warning("%s: waiting for the cluster to grow (an autoscaler) — Ctrl-C to stop", msg)

    def _model_options(self, gpus: float) -> dict[str, Any]:
        """The plugin factory's options on a worker: the driver's, on the worker's device.

        ``--dtype auto`` becomes the driver's resolved precision: it is part of every doc_key the
        driver computed, so the workers must embed in it (``--dtype bf16`` for half on GPUs).
        """
        # a library caller may pass only a model object: the contract says how to load it again
        opts = dict(self.options.model_options or self.model.load_options())
        device = str(opts.get("device") or "auto")
        if device == "auto":
            opts["device"] = "cuda" if gpus else "cpu"
        resolved = self.model.dtype
        if resolved and opts.get("dtype", "auto") == "auto":
            opts["dtype"] = resolved
        return opts

    # -- the Backend protocol ----------------------------------------------------------------
    def submit(self, group: Group) -> Any:
        i = min(self._load, key=lambda k: self._load[k])
        handle = self.actors[i].embed.remote(group.id, group.batch, group.schema)
        self._load[i] += 1
        self._where[handle] = i
        return handle

    def ready(self, handles: list[Any], timeout: float) -> list[Any]:
        with no_interrupt():  # as in _get: Ray's wait must not see our handler raise
            done, rest = self.ray.wait(handles, num_returns=1, timeout=timeout)
            if done and rest:
                more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
                done += more
        return done

    def result(self, handle: Any) -> GroupResult:
        ray = self.ray
        i = self._where.pop(handle, None)
        if i is not None:
            self._load[i] -= 1
        try:
            with no_interrupt():  # ready: returns at once
                gid, batch, stats = ray.get(handle)
        except ray.exceptions.RayTaskError as e:
            raise _worker_error(e) from None
        except ray.exceptions.RayActorError as e:
            if i is not None:
                self._replace(i)
            raise LostGroup(f"worker died: {type(e).__name__}") from None
        except (ray.exceptions.ObjectLostError, ray.exceptions.WorkerCrashedError) as e:
            raise LostGroup(type(e).__name__) from None
        return GroupResult(gid, batch, stats)

    def _replace(self, i: int) -> None:
        """An actor dead past its restarts: a new one takes its place (its groups are resubmitted)."""
        if self.replaced >= self.options.max_attempts * max(1, len(self.actors)):
            raise ArrowsmithError("Ray workers keep dying; see the Ray logs (/tmp/ray/session_latest/logs)")
        self.replaced += 1
        try:
            self.ray.kill(self.actors[i], no_restart=True)
        except Exception:  # noqa: BLE001, S110 - already gone
            pass
        self.actors[i] = self._spawn()

    def _get(self, refs: list[Any]) -> list[Any]:
        """ray.get in slices, so SIGINT/SIGTERM are handled while actors start."""
        ray = self.ray
        pending = list(refs)
        while pending:
            # Ray's wait checks for signals itself: an exception raised by our handler inside it
            # comes out as a SystemError, so the handler only notes the signal here and
            # no_interrupt raises it (Interrupted: exit 130/143) once wait has returned
            with no_interrupt():
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
        try:
            with no_interrupt():
                return ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            raise _worker_error(e) from None
        except ray.exceptions.RayActorError as e:
            cause = _arrowsmith_cause(e)
            if cause is not None:
                raise cause from None
            raise ArrowsmithError(f"a Ray worker could not start: {_first_line(e)}") from None

    # -- shutting down ------------------------------------------------------------------------
    def close(self) -> None:
        """Kill our actors; shut down a local Ray we started (its processes gone on return)."""
        ray = self.ray
        with no_interrupt():  # a second Ctrl-C must not leave half of it behind
            # a local Ray we started goes whole, actors included (killing them one by one first
            # only makes Ray report their unfinished tasks as failures)
            for actor in self.actors if not self.started_local else ():
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001, S110 - already dead, cluster gone
                    pass
            self.actors = []
            if self.started_local:
                ray.shutdown(wait_for_processes=True)
            elif self.connected:
                ray.shutdown()
            self.started_local = self.connected = False


def _errors_to_stderr(ray) -> None:
    """Ray's driver prints the errors it is sent (a task retried after its worker died, our actors
    killed at the end) to sys.stdout, which carries the embedded-chunks stream: send them to stderr.

    Ray 2.60's ``print_to_stdstream`` (the pinned range); only in a process whose Ray we joined.
    """
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_arrowsmith", False):
        return

    def to_stderr(data, ignore_prefix: bool):
        return original({**data, "is_err": True}, ignore_prefix)

    to_stderr._arrowsmith = True
    worker.print_to_stdstream = to_stderr


def _check_reachable(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) nobody answers on is exit 2 within seconds."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise UsageError(f"cannot reach Ray at {address}: {e.strerror or e}",
                         hint="is the cluster up? (`ray status` on its head node)") from None


def _runtime_env() -> dict[str, Any] | None:
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    return {"env_vars": env} if env else None


def _check_worker_meta(driver: dict[str, Any], info: dict[str, Any]) -> None:
    worker = info["meta"]
    ignore = {"precision"}
    diff = sorted(k for k in set(driver) | set(worker) if k not in ignore and driver.get(k) != worker.get(k))
    if diff:
        shown = ", ".join(f"{k}={worker.get(k)!r} (driver: {driver.get(k)!r})" for k in diff)
        raise UsageError(f"a Ray worker (pid {info.get('pid')}) embeds differently from the driver: {shown}",
                         hint="the same model and arrowsmith on every node; --dtype to pin the precision")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _arrowsmith_cause(e: BaseException) -> ArrowsmithError | None:
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, ArrowsmithError):
            return e
        e = getattr(e, "cause", None) or getattr(e, "__cause__", None)
        seen += 1
    return None


def _worker_error(e: BaseException) -> ArrowsmithError:
    """A worker's exception as the driver's: a DataError there is exit 65 here, in one line."""
    cause = _arrowsmith_cause(getattr(e, "cause", None))
    if cause is not None:
        return cause
    inner = getattr(e, "cause", None) or e
    return ArrowsmithError(f"a Ray worker failed: {type(inner).__name__}: {_first_line(inner)}")


class EmbedWorker:
    """A Ray actor: the model loaded once; the local engine's ``GroupEmbedder`` on each group."""

    def __init__(self, spec: str, model_options: dict[str, Any], params: EmbedParams,
                 batch_tokens: int | None, cwd: str, threads: int):
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)  # a relative --model path means what it meant to the driver
        if model_options.get("device") == "cpu":
            try:
                import torch

                torch.set_num_threads(threads)  # the CPUs Ray gave this actor, no more
            except ImportError:
                pass
        from arrowsmith.plugins.registry import load_model

        t0 = time.perf_counter()
        self.model = load_model(spec, **model_options)
        self.model.encode(["warm up"], "document", prompt="")  # the weights load here, once
        self.load_seconds = time.perf_counter() - t0
        self.params, self.batch_tokens = params, batch_tokens
        self.groups = 0

    def info(self) -> dict[str, Any]:
        return {"meta": embedding_meta(self.model, self.params), "pid": os.getpid(),
                "device": str(self.model.device), "load_seconds": self.load_seconds}

    def embed(self, group_id: int, batch: pa.RecordBatch, schema: pa.Schema
              ) -> tuple[int, pa.RecordBatch, dict[str, Any]]:
        _worker_hang()
        stats = EmbedStats()
        t0 = time.perf_counter()
        embedder = GroupEmbedder(self.model, self.params, self.batch_tokens, stats)
        out = embedder.embed(unpack_group(batch), schema)
        self.groups += 1
        _worker_fault(self.groups)
        return group_id, out, {
            "documents": stats.documents_embedded, "chunks": stats.chunks, "tokens": stats.tokens,
            "unknown_tokens": stats.unknown_tokens,
            "seconds": time.perf_counter() - t0, "pid": os.getpid(),
            "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def _fault_spec() -> tuple[str, int] | None:
    raw = os.environ.get(faults.ENV, "")
    if not raw.startswith(WORKER_FAULT):
        return None
    point, _, nth = raw.partition(":")
    return point, int(nth or 1)


def _marker(name: str) -> str:
    return os.path.join(os.environ.get(FAULT_DIR_ENV) or "/tmp", f"arrowsmith-{name}")


def _worker_fault(groups_done: int) -> None:
    """``ray_worker:N``: die like kill -9 after embedding the N-th group, once per marker dir."""
    spec = _fault_spec()
    if spec is None or spec[0] != WORKER_FAULT or groups_done < spec[1]:
        return
    try:
        os.close(os.open(_marker("ray-worker-died"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return  # the restarted worker: the fault happened once
    os._exit(faults.EXIT)


def _worker_hang() -> None:
    """``ray_worker_hang``: say "busy" (a marker file) and never finish (SIGINT tests)."""
    spec = _fault_spec()
    if spec is None or spec[0] != WORKER_HANG:
        return
    with open(_marker(f"ray-worker-busy-{os.getpid()}"), "w"):
        pass
    while True:
        time.sleep(3600)

