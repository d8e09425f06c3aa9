"""The ``embed`` stage: chunked documents (or any text table) → embedded chunks.

Input is either the chunked-documents schema (one row per document with its
``chunks`` spans; each span ``text[start:end]`` is embedded) or any table with a
text column (each row is one chunk). Output is the embedded-chunks schema
(docs/design.md#schemas), one row per chunk, all chunks of a document in the same batch.

Naive mode embeds each chunk on its own. Late chunking (``late=True``, Günther
et al. 2024) runs the whole document through the model once (in overlapping
windows when it is longer than the model's window) and mean-pools each chunk's
tokens, so a chunk's vector carries the context of its document.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from arrowsmith.plugins.base import EmbeddingModel, TooLongError, content_token_vectors
from arrowsmith.plugins.vectors import l2_normalize

from . import spaces
from .errors import DataError, UsageError
from .io import BatchSink
from .schemas import CHUNKER, EMBEDDED_CORE, MODEL, embedded_fields, read_meta, require_text, stage_metadata
from .spaces import dense, multi

log = logging.getLogger("arrowsmith.embed")

GROUP_CHUNKS = 2048  # chunks embedded (and emitted) together: bounds memory, feeds the length sort
UNKNOWN_WARN_SHARE = 0.01  # of embedded tokens being [UNK], above which embed warns
GROUP_LATE_TOKENS = 65536  # document tokens per late group: bounds the token-vector buffer
# input read ahead while a group is embedded (bytes of Arrow batches; one batch even if larger):
# without it, `chunk | embed` chunks only while embed reads, as the pipe holds just 64 KiB
PREFETCH_BYTES = 32 << 20
LATE_SPECIALS = ("exclude", "include")


@dataclass
class EmbedStats:
    documents_seen: int = 0
    documents_skipped: int = 0
    documents_embedded: int = 0
    documents_empty: int = 0  # text rows that are empty or whitespace: skipped, never embedded
    chunks: int = 0
    tokens: int = 0
    unknown_tokens: int = 0  # of which the model's tokenizer could not represent ([UNK])
    seconds: float = 0.0  # wall time of the stage, model loading included
    load_seconds: float = 0.0  # of which loading the weights

    @property
    def tokens_per_second(self) -> float:
        busy = self.seconds - self.load_seconds
        return self.tokens / busy if busy > 0 else 0.0

    def summary(self, pruned: int | None = None) -> str:
        docs = (f"{self.documents_seen} documents: {self.documents_skipped} unchanged, "
                f"{self.documents_embedded} embedded" + (f", {pruned} pruned" if pruned is not None else "")
                + (f", {self.documents_empty} empty skipped" if self.documents_empty else ""))
        load = f", model load {self.load_seconds:.1f}s" if self.load_seconds >= 0.05 else ""
        return (f"embed: {docs}; {self.chunks} chunks, {self.tokens} tokens in {self.seconds:.1f}s "
                f"({self.tokens_per_second:,.0f} tokens/s{load})")

    def unknown_warning(self, model: str) -> str | None:
        """A warning when ≥ 1% of the tokens embedded were the tokenizer's unknown token: that
        text (a script or symbols outside the model's vocabulary) embeds as noise, and such
        vectors can rank high for any query. None below that."""
        if not self.tokens or self.unknown_tokens < UNKNOWN_WARN_SHARE * self.tokens:
            return None
        share = self.unknown_tokens / self.tokens
        return (f"{self.unknown_tokens:,} of {self.tokens:,} tokens ({share:.1%}) "
                f"are unknown to {model}'s tokenizer ([UNK]): that text embeds as noise; a model whose "
                "vocabulary covers it (e.g. a multilingual one) would fit this corpus better")


@dataclass(frozen=True)
class EmbedParams:
    """Everything besides the model and the text that changes a vector (part of ``doc_key``)."""

    prompt: str
    query_prompt: str
    dim: int
    late: bool
    window: int | None = None
    window_overlap: int | None = None
    late_specials: str | None = None
    tokens: multi.TokenSettings | None = None  # embed --multivector: the chunks' token vectors too


@dataclass
class EmbedDoc:
    """One input document as embed sees it: its chunks' spans and the key the store checks."""

    id: str
    text: str
    doc_hash: str
    spans: list[tuple[int, int]]  # character [start, end) of each chunk; one span for a text row
    source: pa.RecordBatch  # the input batch, whose row ``row`` holds the carried metadata
    row: int
    key: str = ""  # doc_key: what decides whether a stored copy is current


# ------------------------------------------------------------------ parameters


def resolve_params(model: EmbeddingModel, *, late: bool = False, prompt: str | None = None,
                   query_prompt: str | None = None, dim: int | None = None, window: int | None = None,
                   window_overlap: int | None = None, late_specials: str = "exclude",
                   force: bool = False, multivector: bool = False,
                   token_precision: str = multi.DEFAULT_PRECISION, token_pool: float = 1.0) -> EmbedParams:
    """Check options against the model and fill in its defaults."""
    doc_prompt = model.prompt_for("document") if prompt is None else prompt
    q_prompt = model.prompt_for("query") if query_prompt is None else query_prompt
    dim = _check_dim(model, dim)
    tokens = _token_settings(model, multivector, token_precision, token_pool)
    if not late:
        return EmbedParams(doc_prompt, q_prompt, dim, False, tokens=tokens)
    if late_specials not in LATE_SPECIALS:
        raise UsageError(f"--late-specials {late_specials!r}: choose exclude or include")
    if not model.contextual:
        raise UsageError(f"{model.name} is a static model: its token vectors do not depend on their "
                         "context, so late chunking would only repeat naive chunking", hint="drop --late")
    if not model.supports_token_embeddings:
        raise UsageError(f"{model.plugin}:{model.name} does not expose token vectors, so it cannot "
                         "late-chunk", hint="--naive")
    if model.pooling != "mean" and not force:
        raise UsageError(f"late chunking mean-pools token vectors, but {model.name} is {model.pooling}-"
                         "pooled: its token vectors were not trained to be averaged",
                         hint="--force, or --naive")
    # the model's own window (sentence-transformers max_seq_length), which encode_tokens enforces;
    # positions past it exist (512 for all-MiniLM-L6-v2) but the model was not trained on them
    limit = min(model.max_tokens, model.position_limit or model.max_tokens)
    window = window or limit
    if window > limit:
        raise UsageError(f"--window {window} exceeds the model's window of {limit} tokens")
    content = _content_window(model, doc_prompt, window)
    # Default overlap window/4: with each token taken from the window where it is most
    # central, every token then has at least window/8 tokens of context on a cut side,
    # for at most 1/3 more compute, and only on documents longer than one window.
    overlap = content // 4 if window_overlap is None else window_overlap
    if not 0 <= overlap < content:
        raise UsageError(f"--window-overlap {overlap} must be between 0 and {content - 1} "
                         f"(the window's {content} content tokens)")
    return EmbedParams(doc_prompt, q_prompt, dim, True, window, overlap, late_specials, tokens)


def _token_settings(model: EmbeddingModel, multivector: bool, precision: str, pool: float
                    ) -> multi.TokenSettings | None:
    if not multivector:
        return None
    multi.check_settings(precision, pool)
    if multi.NAME not in model.representations:
        why = ("a static model's token vectors do not depend on their context" if not model.contextual
               else "it does not expose token vectors")
        raise UsageError(f"--multivector: {model.plugin}:{model.name} produces no token vectors ({why})",
                         hint="a transformer model such as all-MiniLM-L6-v2, or drop --multivector")
    return multi.TokenSettings(model.dim, precision, pool)


def _check_dim(model: EmbeddingModel, dim: int | None) -> int:
    if dim is None or dim == model.dim:
        return model.dim
    if not 0 < dim < model.dim:
        raise UsageError(f"--dim {dim}: must be between 1 and the model's {model.dim}")
    trained = tuple(model.matryoshka_dims)
    if dim not in trained:
        log.warning("%s is not known to be trained for --dim %d (Matryoshka dims: %s): truncated "
                    "vectors may lose much of their quality", model.name, dim,
                    ", ".join(map(str, trained)) or "none declared")
    return dim


def _content_window(model: EmbeddingModel, prompt: str, window: int) -> int:
    n_prompt = len(_prompt_ids(model, prompt))
    content = window - model.num_special_tokens - n_prompt
    if content < 8:
        raise UsageError(f"--window {window} leaves {content} tokens for text after the prompt "
                         f"({n_prompt} tokens) and special tokens")
    return content


def _prompt_ids(model: EmbeddingModel, prompt: str) -> list[int]:
    return model.token_ids(prompt)[0] if prompt else []


def embedding_meta(model: EmbeddingModel, params: EmbedParams) -> dict[str, Any]:
    """The ``arrowsmith.model`` metadata: model identity + everything that shaped the vectors."""
    meta = model.describe()
    meta.update({
        "model_dim": model.dim,
        "dim": params.dim,
        "prompt": params.prompt,
        "query_prompt": params.query_prompt,
        "late": params.late,
    })
    if params.late:
        meta.update(window=params.window, window_overlap=params.window_overlap,
                    late_specials=params.late_specials)
    if params.tokens is not None:
        meta[multi.META_KEY] = params.tokens.as_meta()
    if model.dtype:
        meta["precision"] = model.dtype
    return meta


def _key_digest(meta: dict[str, Any], chunker: Any) -> str:
    # precision (bf16 vs fp16) and device are left out: describe()'s dtype class is in
    keyed = {k: v for k, v in meta.items() if k not in ("precision", "query_prompt")}
    return json.dumps({"model": keyed, "chunker": chunker}, sort_keys=True)


def doc_key(doc_hash: str, digest: str, metadata: str = "") -> str:
    """What a stored document is checked against: text, model/chunker settings, metadata."""
    key = f"{doc_hash}\0{digest}" + (f"\0{metadata}" if metadata else "")
    return hashlib.sha256(key.encode()).hexdigest()


# informational only: a touched but unchanged file is not re-embedded (its stored mtime stays)
VOLATILE_METADATA = ("mtime",)


def carried_columns(names: Sequence[str], id_col: str = "id", text_col: str = "text") -> list[str]:
    """Input columns that embed carries into its output as metadata, in input order."""
    skip = {id_col, text_col, "chunks", "doc_hash", *EMBEDDED_CORE, *spaces.COLUMNS}
    return [n for n in names if n not in skip]


def metadata_columns(names: Sequence[str], id_col: str = "id", text_col: str = "text") -> list[str]:
    """The carried metadata columns whose values are part of a document's doc_key.

    A change of metadata alone (a new ``lang`` or ``url``) must reach the store, so it changes
    the key and the document's rows are replaced.
    """
    return sorted(n for n in carried_columns(names, id_col, text_col) if n not in VOLATILE_METADATA)


def metadata_digest(values: dict[str, Any]) -> str:
    if not values:
        return ""
    text = json.dumps(values, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------ the stage


def embed_batches(batches: Iterable[pa.RecordBatch], model: EmbeddingModel, *, late: bool = False,
                  batch_tokens: int | None = None, prompt: str | None = None,
                  query_prompt: str | None = None, dim: int | None = None, window: int | None = None,
                  window_overlap: int | None = None, late_specials: str = "exclude", force: bool = False,
                  multivector: bool = False, token_precision: str = multi.DEFAULT_PRECISION,
                  token_pool: float = 1.0, id_col: str = "id", text_col: str = "text",
                  skip_doc: Callable[[str, str], bool] | None = None,
                  group_rows: int | None = None,
                  stats: EmbedStats | None = None) -> Iterator[pa.RecordBatch]:
    """Embedded-chunks batches for chunked documents or text rows (see module docstring).

    The stage is :func:`document_groups` (which documents to embed, grouped) followed by
    :meth:`GroupEmbedder.embed` on each group. ``group_rows`` caps the chunks per emitted batch (a
    store's checkpoint size), so work that a crash can lose is bounded by the checkpoint.
    """
    stats = stats if stats is not None else EmbedStats()
    params = resolve_params(model, late=late, prompt=prompt, query_prompt=query_prompt, dim=dim,
                            window=window, window_overlap=window_overlap, late_specials=late_specials,
                            force=force, multivector=multivector, token_precision=token_precision,
                            token_pool=token_pool)
    embedder = GroupEmbedder(model, params, batch_tokens, stats)
    t0 = time.perf_counter()
    ahead = read_ahead(batches)
    try:
        for docs, schema in document_groups(ahead, model, params, id_col=id_col, text_col=text_col,
                                            skip_doc=skip_doc, group_rows=group_rows, stats=stats):
            yield embedder.embed(docs, schema)
    finally:
        ahead.close()
        stats.seconds += time.perf_counter() - t0


def read_ahead(batches: Iterable[pa.RecordBatch], max_bytes: int = PREFETCH_BYTES
               ) -> Iterator[pa.RecordBatch]:
    """``batches``, read by a thread up to ``max_bytes`` ahead of the consumer, in order.

    Embedding a group takes seconds during which nobody reads the input: over a pipe the
    producer (`chunk`) fills the pipe's buffer and waits. Reading ahead lets it run alongside
    (reading, parsing and the producer's own work overlap the model's). An exception of the
    input is raised here at its place in the stream; closing this generator stops the reader.
    """
    cond = threading.Condition()
    queue: list[tuple[str, Any]] = []  # ("batch", b) | ("error", exc) | ("end", None)
    state = {"bytes": 0, "stop": False}

    def produce() -> None:
        source = iter(batches)
        try:
            for batch in source:
                size = batch.nbytes
                with cond:
                    while queue and state["bytes"] + size > max_bytes and not state["stop"]:
                        cond.wait()
                    if state["stop"]:
                        break
                    queue.append(("batch", batch))
                    state["bytes"] += size
                    cond.notify_all()
            item: tuple[str, Any] = ("end", None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            item = ("error", e)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # files opened by the reader are closed in the reader's thread
        with cond:
            queue.append(item)
            cond.notify_all()

    reader = threading.Thread(target=produce, name="arrowsmith-read", daemon=True)
    reader.start()
    try:
        while True:
            with cond:
                while not queue:
                    cond.wait()
                kind, value = queue.pop(0)
                if kind == "batch":
                    state["bytes"] -= value.nbytes
                cond.notify_all()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()


def document_groups(batches: Iterable[pa.RecordBatch], model: EmbeddingModel, params: EmbedParams, *,
                    id_col: str = "id", text_col: str = "text",
                    skip_doc: Callable[[str, str], bool] | None = None, group_rows: int | None = None,
                    stats: EmbedStats | None = None) -> Iterator[tuple[list[EmbedDoc], pa.Schema]]:
    """The documents to embed, in input order and in bounded groups, with the output schema.

    Decides per document: empty text rows are skipped (warned), and so is a document for which
    ``skip_doc(id, doc_key)`` is true (the store: that key is already stored, so it is unchanged).
    Each group holds whole documents (a document's chunks are never split) up to a token or chunk
    budget, and at most ``group_rows`` chunks once it holds more than one document. An input with
    nothing to embed still yields one empty group, so the output carries the schema and metadata.
    """
    stats = stats if stats is not None else EmbedStats()
    meta = embedding_meta(model, params)
    # on an accelerator, larger groups let the model tokenize the next window while computing
    scale = 1 if model.device == "cpu" else 4
    limit = (GROUP_LATE_TOKENS if params.late else GROUP_CHUNKS) * scale
    schema: pa.Schema | None = None
    digest = ""
    group: list[EmbedDoc] = []
    weight = rows = 0
    emitted = False
    for batch in batches:
        if schema is None:
            schema, chunker = _output_schema(batch.schema, params.dim, meta, id_col, text_col)
            digest = _key_digest(meta, chunker)
        for doc in keyed_documents(batch, digest, id_col, text_col):
            stats.documents_seen += 1
            if not doc.text.strip() and "chunks" not in batch.schema.names:
                # "" and " " embed to one meaningless vector that would match any query
                stats.documents_empty += 1
                log.warning("document %s: empty text, skipped", doc.id)
                continue
            if skip_doc is not None and skip_doc(doc.id, doc.key):
                stats.documents_skipped += 1
                continue
            group.append(doc)
            weight += group_weight(doc, params.late)
            rows += max(1, len(doc.spans))
            if weight >= limit or (group_rows is not None and rows >= group_rows):
                yield group, schema
                group, weight, rows, emitted = [], 0, 0, True
    if schema is None:
        raise DataError("empty input: no record batches to embed")
    if group or not emitted:  # an empty batch still carries the schema (and model metadata)
        yield group, schema


def group_weight(doc: EmbedDoc, late: bool) -> int:
    # late groups are bounded by their token vectors; ~4 chars per token is close enough here
    return max(1, len(doc.text) // 4) if late else max(1, len(doc.spans))


def _output_schema(schema: pa.Schema, dim: int, meta: dict[str, Any], id_col: str, text_col: str
                   ) -> tuple[pa.Schema, Any]:
    for col in (id_col, text_col):
        if col not in schema.names:
            raise DataError(f"embed: input has no {col!r} column (it has: {', '.join(schema.names)})",
                            hint="--id-col / --text-col to name them")
    chunked = "chunks" in schema.names
    in_meta = read_meta(schema)
    chunker = in_meta.get(CHUNKER) if chunked else "rows"
    dropped = [n for n in schema.names if n in EMBEDDED_CORE and n not in (id_col, text_col)]
    if dropped:
        log.warning("input column(s) %s clash with embedded-chunk columns and are not carried",
                    ", ".join(dropped))
    carried = set(carried_columns(schema.names, id_col, text_col))
    extra = [f for f in schema if f.name in carried]
    entries: dict[str, Any] = {MODEL: meta}
    if chunked and chunker is not None:
        entries[CHUNKER] = chunker
    tokens = multi.settings_of(meta)
    fields = embedded_fields(dim) + ([multi.field(tokens)] if tokens else [])
    out = pa.schema(fields + extra, metadata=stage_metadata("embed", **entries))
    return out, chunker


def keyed_documents(batch: pa.RecordBatch, digest: str, id_col: str = "id", text_col: str = "text"
                    ) -> Iterator[EmbedDoc]:
    """The documents of one input batch with their spans and doc_key.

    ``digest`` is the model, chunker and embedding settings (``_key_digest``); the key adds the
    text's hash and the carried metadata (``metadata_columns``), so changing any of them re-embeds.
    """
    require_text(batch.schema.field(text_col).type, text_col)  # the check `chunk` makes
    ids = batch.column(id_col).to_pylist()
    texts = batch.column(text_col).to_pylist()
    chunked = "chunks" in batch.schema.names
    spans = batch.column("chunks").to_pylist() if chunked else None
    hashes = batch.column("doc_hash").to_pylist() if "doc_hash" in batch.schema.names else None
    carried = metadata_columns(batch.schema.names, id_col, text_col)
    metadata = batch.select(carried).to_pylist() if carried else None
    for row, (doc_id, text) in enumerate(zip(ids, texts, strict=True)):
        if doc_id is None:
            raise DataError(f"row {row} of a batch: {id_col!r} is null")
        doc_id = str(doc_id)
        if text is None:
            raise DataError(f"document {doc_id}: {text_col!r} is null")
        if chunked:
            doc_spans = _check_spans(doc_id, text, spans[row] or [])
        else:
            doc_spans = [(0, len(text))]
        doc_hash = (hashes[row] if hashes else None) or hashlib.sha256(text.encode()).hexdigest()
        key = doc_key(doc_hash, digest, metadata_digest(metadata[row]) if metadata else "")
        yield EmbedDoc(doc_id, text, doc_hash, doc_spans, batch, row, key=key)


def _check_spans(doc_id: str, text: str, spans: list[dict]) -> list[tuple[int, int]]:
    out = []
    for i, span in enumerate(spans):
        start, end = span.get("start"), span.get("end")
        if start is None or end is None or not 0 <= start <= end <= len(text):
            raise DataError(f"chunk {doc_id}#{i}: span [{start}, {end}) is outside the document's "
                            f"{len(text)} characters")
        out.append((int(start), int(end)))
    return out


# ------------------------------------------------------------------ embedding a group


class GroupEmbedder:
    """Embeds one group of documents into one batch of embedded chunks (what an engine's worker runs).

    Holds the model and the resolved parameters; counts into ``stats`` (documents, chunks, tokens,
    model load time). Vectors are those of ``embed_batches`` for the same model and parameters.
    """

    def __init__(self, model: EmbeddingModel, params: EmbedParams, batch_tokens: int | None = None,
                 stats: EmbedStats | None = None):
        self.model, self.params, self.batch_tokens = model, params, batch_tokens
        self.stats = stats if stats is not None else EmbedStats()

    def embed(self, docs: list[EmbedDoc], schema: pa.Schema) -> pa.RecordBatch:
        """One row per chunk of ``docs``, in order, in ``schema`` (from :func:`document_groups`)."""
        before, load_before = self.model.tokens_seen, self.model.load_seconds
        unknown_before = self.model.unknown_tokens_seen
        tokens = None
        if self.params.late:
            vectors, tokens = self._late(docs)
        elif self.params.tokens is not None:
            vectors, tokens = self._naive_with_tokens(docs)
        else:
            vectors = self._naive(docs)
        self.stats.load_seconds += self.model.load_seconds - load_before
        if before is not None and self.model.tokens_seen is not None:
            self.stats.tokens += self.model.tokens_seen - before
        if unknown_before is not None and self.model.unknown_tokens_seen is not None:
            self.stats.unknown_tokens += self.model.unknown_tokens_seen - unknown_before
        vectors = _truncate(vectors, self.params.dim)
        self.stats.documents_embedded += len(docs)
        self.stats.chunks += len(vectors)
        if tokens is not None and self.params.tokens is not None:
            tokens = multi.pool_tokens(tokens, self.params.tokens.pool)
        return _build_batch(docs, vectors, schema, tokens, self.params.tokens)

    def _naive(self, docs: list[EmbedDoc]) -> np.ndarray:
        texts = [d.text[s:e] for d in docs for s, e in d.spans]
        try:
            out = self.model.encode(texts, "document", prompt=self.params.prompt,
                                    batch_tokens=self.batch_tokens)
        except TooLongError as e:
            raise _too_long(docs, e) from None
        if self.model.tokens_seen is None:  # the plugin does not count: count with its tokenizer
            self.stats.tokens += sum(self.model.tokenizer.count_tokens(texts))
        return np.asarray(out, dtype=np.float32)

    def _naive_with_tokens(self, docs: list[EmbedDoc]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Chunk vectors and token vectors from one forward pass per chunk.

        A mean-pooled model's vector is the mean of every token it sees (special tokens and, unless
        the model leaves it out, the prompt included: sentence-transformers' Pooling), so one
        ``encode_tokens`` pass gives both; any other pooling runs ``encode`` for the vectors.
        """
        texts = [d.text[s:e] for d in docs for s, e in d.spans]
        # the contract's own inputs for token vectors: prompt + text wrapped, and where the text is
        seqs, spans = self.model.token_vector_inputs(texts, "document", self.params.prompt)
        try:
            outs = self.model.encode_tokens(seqs, batch_tokens=self.batch_tokens)
        except TooLongError as e:
            raise _too_long(docs, e) from None
        if self.model.tokens_seen is None:
            self.stats.tokens += sum(len(s) for s in seqs)
        if self.model.pooling == "mean" and (not self.params.prompt or self.model.pool_include_prompt):
            vectors = np.stack([o.mean(axis=0) for o in outs]) if outs else np.empty((0, self.model.dim))
            vectors = vectors.astype(np.float32, copy=False)
            if self.model.normalize:
                l2_normalize(vectors, in_place=True)
        else:
            vectors = self._naive(docs)
        return vectors, content_token_vectors(outs, spans)

    def _late(self, docs: list[EmbedDoc]) -> tuple[np.ndarray, list[np.ndarray] | None]:
        plans = [plan_late(self.model, d.text, d.spans, self.params) for d in docs]
        seqs = [seq for p in plans for seq in p.sequences]
        outs = self.model.encode_tokens(seqs, batch_tokens=self.batch_tokens)
        if self.model.tokens_seen is None:
            self.stats.tokens += sum(len(s) for s in seqs)
        want_tokens = self.params.tokens is not None
        vectors, tokens, k = [], [], 0
        for plan in plans:
            n = len(plan.sequences)
            doc_tokens = plan.document_tokens(outs[k:k + n])
            vectors.append(plan.pool(outs[k:k + n], self.params.late_specials == "include", doc_tokens))
            if want_tokens:  # each chunk's tokens, from the windows its mean came from
                tokens += [_unit_rows(doc_tokens[a:b]) for a, b in plan.chunk_tokens]
            k += n
        if not vectors:
            return np.empty((0, self.model.dim), np.float32), ([] if want_tokens else None)
        out = np.concatenate(vectors).astype(np.float32, copy=False)
        if self.model.normalize:
            l2_normalize(out, in_place=True)
        return out, (tokens if want_tokens else None)


def _too_long(docs: list[EmbedDoc], e: TooLongError) -> DataError:
    k = e.index
    for d in docs:
        if k < len(d.spans):
            s, t = d.spans[k]
            return DataError(f"chunk {d.id}#{k} (characters {s}-{t}) has {e.n_tokens} tokens, more than "
                             f"the model's window of {e.limit}; refusing to truncate it",
                             hint="re-chunk with `arrowsmith chunk --tokenizer model:NAME` so chunks fit")
        k -= len(d.spans)
    return DataError(str(e))


def _truncate(vectors: np.ndarray, dim: int) -> np.ndarray:
    if vectors.shape[1] == dim:
        return vectors
    out = np.ascontiguousarray(vectors[:, :dim])
    return l2_normalize(out, in_place=True)  # Matryoshka: truncated vectors are re-normalised


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    return l2_normalize(x, in_place=True) if len(x) else x


def _build_batch(docs: list[EmbedDoc], vectors: np.ndarray, schema: pa.Schema,
                 tokens: list[np.ndarray] | None = None,
                 token_settings: multi.TokenSettings | None = None) -> pa.RecordBatch:
    ids, doc_ids, idx, texts, starts, ends, keys = [], [], [], [], [], [], []
    for d in docs:
        for i, (s, e) in enumerate(d.spans):
            ids.append(f"{d.id}#{i}")
            doc_ids.append(d.id)
            idx.append(i)
            texts.append(d.text[s:e])
            starts.append(s)
            ends.append(e)
            keys.append(d.key)
    arrays: list[pa.Array] = [
        pa.array(ids, pa.string()), pa.array(doc_ids, pa.string()), pa.array(idx, pa.int32()),
        pa.array(texts, pa.string()), pa.array(starts, pa.int32()), pa.array(ends, pa.int32()),
        dense.column(vectors, dense.dim_of(schema)), pa.array(keys, pa.string()),
    ]
    for f in schema:
        if f.name in EMBEDDED_CORE:
            continue
        if f.name == multi.COLUMN:
            arrays.append(multi.column(tokens or [], token_settings))
            continue
        arrays.append(_metadata_column(docs, f))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _metadata_column(docs: list[EmbedDoc], f: pa.Field) -> pa.Array:
    """One value per chunk: each document's metadata repeated over its chunks."""
    if not docs:
        return pa.array([], f.type)
    pieces = []
    for d in docs:
        value = d.source.column(f.name).slice(d.row, 1)
        if len(d.spans) != 1:
            value = value.take(pa.array(np.zeros(len(d.spans), dtype=np.int64)))
        pieces.append(value.cast(f.type) if value.type != f.type else value)
    return pa.concat_arrays(pieces)


# ------------------------------------------------------------------ late chunking


def late_windows(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Content-token windows ``[start, end)`` covering ``n_tokens``; consecutive ones overlap.

    As few windows as windows of ``size`` need, all of one length and evenly spaced, so
    consecutive ones overlap by ``overlap`` (±1) and no more: a document slightly longer than one
    window costs two shorter windows, not two full ones that mostly overlap.
    """
    if n_tokens <= size:
        return [(0, n_tokens)]
    count = -(-(n_tokens - overlap) // (size - overlap))
    length = -(-(n_tokens + (count - 1) * overlap) // count)
    stride = (n_tokens - length) / (count - 1)
    return [(s, s + length) for s in (round(i * stride) for i in range(count))]


def assign_windows(n_tokens: int, windows: Sequence[tuple[int, int]]) -> np.ndarray:
    """For each token, the index of the window in which it is most central.

    "Central" is the context the window gives the token on its poorer side: tokens to the
    window's edge, where an edge that is also the document's edge counts as unlimited
    (there is no context to lose there). Ties go to the earlier window.
    """
    best = np.full(n_tokens, -1.0)
    owner = np.zeros(n_tokens, dtype=np.int64)
    for w, (s, e) in enumerate(windows):
        t = np.arange(s, e)
        left = t - s if s > 0 else np.full(len(t), np.inf)
        right = (e - 1 - t) if e < n_tokens else np.full(len(t), np.inf)
        score = np.minimum(left, right).astype(float)
        better = score > best[s:e]
        best[s:e][better] = score[better]
        owner[s:e][better] = w
    return owner


@dataclass
class LatePlan:
    """How one document goes through the model and how its chunks are pooled."""

    sequences: list[list[int]]  # model inputs, one per window
    content_start: list[int]  # index of the window's first document token in its sequence
    windows: list[tuple[int, int]]
    owner: np.ndarray  # window of each document token
    chunk_tokens: list[tuple[int, int]]  # token range [a, b) of each chunk

    def document_tokens(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """``[n_tokens, dim]``: each document token's vector, from the window it is most central in."""
        dim = outputs[0].shape[1]
        tokens = np.empty((len(self.owner), dim), dtype=np.float32)
        for w, ((s, e), first) in enumerate(zip(self.windows, self.content_start, strict=True)):
            mine = np.nonzero(self.owner[s:e] == w)[0]
            tokens[s + mine] = outputs[w][first + mine]
        return tokens

    def pool(self, outputs: Sequence[np.ndarray], include_specials: bool,
             tokens: np.ndarray | None = None) -> np.ndarray:
        """Chunk vectors (not yet normalised): mean of each chunk's token vectors."""
        dim = outputs[0].shape[1]
        if tokens is None:
            tokens = self.document_tokens(outputs)
        out = np.empty((len(self.chunk_tokens), dim), dtype=np.float32)
        for c, (a, b) in enumerate(self.chunk_tokens):
            used = set(self.owner[a:b].tolist()) if b > a else {self._nearest_window(a)}
            parts = [tokens[a:b]] if b > a else []
            if include_specials or b <= a:
                parts += [self._specials(outputs, w) for w in sorted(used)]
            stacked = np.concatenate(parts)
            out[c] = stacked.mean(axis=0)
        return out

    def _nearest_window(self, token: int) -> int:
        return int(self.owner[min(token, len(self.owner) - 1)]) if len(self.owner) else 0

    def _specials(self, outputs: Sequence[np.ndarray], w: int) -> np.ndarray:
        """The window's prompt and special tokens (everything but document tokens)."""
        s, e = self.windows[w]
        first = self.content_start[w]
        out = outputs[w]
        return np.concatenate([out[:first], out[first + (e - s):]])


def plan_late(model: EmbeddingModel, text: str, spans: Sequence[tuple[int, int]], params: EmbedParams
              ) -> LatePlan:
    """Tokenize the whole document once, map chunk spans to tokens by offsets, cut windows."""
    ids, offsets = model.token_ids(text)
    prompt = _prompt_ids(model, params.prompt)
    content = params.window - model.num_special_tokens - len(prompt)
    windows = late_windows(len(ids), content, params.window_overlap or 0)
    owner = assign_windows(len(ids), windows)
    sequences, starts = [], []
    for s, e in windows:
        seq, first = model.wrap_ids([*prompt, *ids[s:e]])
        sequences.append(seq)
        starts.append(first + len(prompt))
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    chunk_tokens = [span_tokens(offsets, a, b) for a, b in spans]
    return LatePlan(sequences, starts, windows, owner, chunk_tokens)


def span_tokens(offsets: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """Token range ``[a, b)`` of the tokens overlapping characters ``[start, end)``."""
    if len(offsets) == 0:
        return 0, 0
    a = int(np.searchsorted(offsets[:, 1], start, side="right"))
    b = int(np.searchsorted(offsets[:, 0], end, side="left"))
    return a, max(a, b)


# ------------------------------------------------------------------ queries and stored models


def embed_queries(texts: list[str], model: EmbeddingModel, *, prompt: str | None = None,
                  dim: int | None = None) -> np.ndarray:
    """Query vectors, with the query prompt and dim the store was built with (``model_from_meta``)."""
    if prompt is None:
        prompt = model.embed_params.get("query_prompt")
    if dim is None:
        dim = model.embed_params.get("dim")
    vectors = np.asarray(model.encode(texts, "query", prompt=prompt), dtype=np.float32)
    return _truncate(vectors, dim or model.dim)


def fit_queries(texts: list[str], model: EmbeddingModel, *,
                prompt: str | None = None) -> tuple[list[str], int]:
    """Queries cut where sentence-transformers truncates them (the first ``max_tokens`` tokens,
    prompt and special tokens included), at the character end of the last kept token, and how
    many were cut. What eval does with queries longer than the window, as MTEB does (ArguAna's
    arguments run past 256 tokens); ``query`` refuses them instead, never cutting silently."""
    if prompt is None:
        prompt = model.embed_params.get("query_prompt")
    if prompt is None:
        prompt = model.prompt_for("query")
    limit = model.max_tokens - model.num_special_tokens - len(_prompt_ids(model, prompt))
    out, cut = [], 0
    for text in texts:
        offsets = model.tokenizer.token_offsets(text)
        if len(offsets) > limit > 0:
            text = text[:int(offsets[limit - 1][1])]
            cut += 1
        out.append(text)
    return out, cut


def model_from_meta(meta: dict[str, Any], **options: Any) -> EmbeddingModel:
    """The model a stream or table names in its ``arrowsmith.model`` metadata."""
    from arrowsmith.plugins.registry import DEFAULT_PLUGIN, load_plugin_model

    info = meta.get(MODEL, meta)
    if isinstance(info, str):
        info = json.loads(info)
    if not isinstance(info, dict) or "name" not in info:
        raise DataError(f"no '{MODEL}' metadata naming a model", hint="--model NAME")
    model = load_plugin_model(info.get("plugin") or DEFAULT_PLUGIN, info["name"], **options)
    if info.get("revision") and model.revision and info["revision"] != model.revision:
        log.warning("model %s differs from the one the table was built with (revision %s, stored %s): "
                    "query vectors may not match", info["name"], model.revision[:12], info["revision"][:12])
    model.embed_params = {"prompt": info.get("prompt"), "query_prompt": info.get("query_prompt"),
                          "dim": info.get("dim")}
    return model


# ------------------------------------------------------------------ sinks


def embed_to_sink(batches: Iterable[pa.RecordBatch], model: EmbeddingModel, sink: BatchSink, *,
                  stats: EmbedStats | None = None, engine: str | None = "local", engine_options: Any = None,
                  **options: Any) -> int:
    """Embed into a stream or file: ``sink`` is closed on success (a file renamed into place) and
    discarded on error. Returns the rows written. ``engine``: commands/engines.py."""
    from .engines import engine_batches

    stats = stats if stats is not None else EmbedStats()
    with sink, engine_batches(engine, engine_options) as embed:
        rows = sink.write_all(embed(batches, model, stats=stats, **options))
    _warn_unknown(stats, model)
    return rows


def embed_to_store(batches: Iterable[pa.RecordBatch], model: EmbeddingModel, db: str,
                   table: str = "chunks", *, replace: bool = False, prune: bool = False, wait: bool = False,
                   checkpoint_rows: int = 10_000, stats: EmbedStats | None = None,
                   engine: str | None = "local", engine_options: Any = None, **options: Any):
    """Embed into a LanceDB table, skipping documents whose doc_key is stored. Returns WriteStats."""
    from .engines import engine_batches
    from .store import StoreWriter

    late_keys = ("late", "prompt", "query_prompt", "dim", "window", "window_overlap", "late_specials",
                 "force", "multivector", "token_precision", "token_pool")
    params = resolve_params(model, **{k: options[k] for k in late_keys if k in options})
    stats = stats if stats is not None else EmbedStats()
    with StoreWriter(db, table, replace=replace, prune=prune, wait=wait,
                     checkpoint_rows=checkpoint_rows) as writer:
        # a different model is refused before anything is read or embedded
        writer.check_meta(embedding_meta(model, params))
        # the engine starts inside the lock (a second writer exits 75 first) and ends before it
        with engine_batches(engine, engine_options, ordered=False) as embed:
            written = writer.write(embed(batches, model, skip_doc=writer.is_current, stats=stats,
                                         group_rows=checkpoint_rows, **options))
    _warn_unknown(stats, model)
    return written


def _warn_unknown(stats: EmbedStats, model: EmbeddingModel) -> None:
    warning = stats.unknown_warning(model.name)
    if warning:
        log.warning("%s", warning)
