"""Embedding one group of documents into one batch of embedded chunks (an engine's unit of work)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pyarrow as pa

from arrowsmith.plugins.base import EmbeddingModel, TooLongError
from arrowsmith.plugins.vectors import l2_normalize

from ..errors import DataError
from ..schemas import EMBEDDED_CORE, MODEL
from ..spaces import codebook as codebooks
from ..spaces import dense, multi
from .grouping import EmbedDoc
from .late import plan_late
from .params import EmbedParams
from .stats import EmbedStats


class GroupEmbedder:
    """Embeds one group of documents into one batch of embedded chunks (what an engine's worker runs).

    Holds the model and the resolved parameters; counts into ``stats`` (documents, chunks, tokens,
    model load time). Vectors are those of ``embed_batches`` for the same model and parameters.
    """

    def __init__(self, model: EmbeddingModel, params: EmbedParams, batch_tokens: int | None = None,
                 stats: EmbedStats | None = None):
        self.model, self.params, self.batch_tokens = model, params, batch_tokens
        self.stats = stats if stats is not None else EmbedStats()
        self._with_book: tuple[pa.Schema, pa.Schema] | None = None  # (input schema, it with the codebook)

    def embed(self, docs: list[EmbedDoc], schema: pa.Schema) -> pa.RecordBatch:
        """One row per chunk of ``docs``, in order, in ``schema`` (from :func:`document_groups`)."""
        before, load_before = self.model.tokens_seen, self.model.load_seconds
        unknown_before = self.model.unknown_tokens_seen
        token_column = None
        if self.params.late:
            vectors, tokens = self._late(docs)
            if tokens is not None:
                schema, token_column = self._pack(schema, tokens)
        elif self.params.tokens is not None:
            vectors, schema, token_column = self._naive_with_tokens(docs, schema)
        else:
            vectors = self._naive(docs)
        self.stats.load_seconds += self.model.load_seconds - load_before
        if before is not None and self.model.tokens_seen is not None:
            self.stats.tokens += self.model.tokens_seen - before
        if unknown_before is not None and self.model.unknown_tokens_seen is not None:
            self.stats.unknown_tokens += self.model.unknown_tokens_seen - unknown_before
        vectors = dense.truncate(vectors, self.params.dim)
        self.stats.documents_embedded += len(docs)
        self.stats.chunks += len(vectors)
        return _build_batch(docs, vectors, schema, token_column)

    def _pack(self, schema: pa.Schema, tokens: list[np.ndarray], pooled: bool = False
              ) -> tuple[pa.Schema, pa.Array]:
        """Chunks' float32 token vectors → the stored column (pooled, coded at the precision)."""
        if not pooled:
            tokens = multi.pool_tokens(tokens, self.params.tokens.pool)
        if self.params.tokens.fitted:
            schema = self._with_codebook(schema, tokens)
        return schema, multi.column(tokens, self.params.tokens)

    def _with_codebook(self, schema: pa.Schema, tokens: list[np.ndarray]) -> pa.Schema:
        """A fitted token precision (``residual``): the codebook is fitted on the first group's
        tokens, unless the table had one (``resolve_params(token_codebook=)``), and every batch
        from then on names it (its sha256 in the model metadata) and carries it (the stream key),
        so a stream stays decodable and a store writes it beside the table."""
        s = self.params.tokens
        if s.codec is None:
            if not any(len(t) for t in tokens):
                return schema  # nothing to fit on (an empty last group): the next group fits
            s = multi.fit_codec(s, np.concatenate(tokens))
            self.params = replace(self.params, tokens=s)
        if self._with_book is not None and self._with_book[0] is schema:
            return self._with_book[1]
        meta = dict(schema.metadata or {})
        model = json.loads(meta[MODEL.encode()])
        model[multi.META_KEY] = s.as_meta()
        meta[MODEL.encode()] = json.dumps(model, sort_keys=True).encode()
        meta[codebooks.STREAM_KEY.encode()] = s.codec.to_stream_value()
        out = schema.with_metadata(meta)
        self._with_book = (schema, out)
        return out

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

    def _naive_with_tokens(self, docs: list[EmbedDoc], schema: pa.Schema
                           ) -> tuple[np.ndarray, pa.Schema, pa.Array]:
        """Chunk vectors and the packed token column, from one forward pass where the model allows
        (the contract's ``encode_with_token_vectors``). Texts go in slices of about
        :data:`TOKEN_SLICE` tokens, each slice's float32 token vectors packed before the next is
        encoded: a group's float32 tokens (10k chunks: ~1.5 GB at 384 dims) never exist at once."""
        texts = [d.text[s:e] for d in docs for s, e in d.spans]
        vectors, columns, done = [], [], 0
        s = self.params.tokens
        # a codebook still to fit is fitted on a sample of the whole group, not its first slice
        # (Cranfield, MaxSim: fitted on the first 32k tokens 97.7% of float32, spread 100.4%); the
        # group's tokens wait as float16 until it is fitted, which happens once per table
        sample = codebooks.Reservoir(codebooks.FIT_SAMPLE, s.dim) if s.fitted and s.codec is None else None
        waiting: list[list[np.ndarray]] = []
        for part in _token_slices(texts):
            try:
                v, tokens = self.model.encode_with_token_vectors(
                    part, "document", prompt=self.params.prompt, batch_tokens=self.batch_tokens)
            except TooLongError as e:
                e.index += done
                raise _too_long(docs, e) from None
            done += len(part)
            vectors.append(np.asarray(v, dtype=np.float32))
            if sample is not None:
                tokens = multi.pool_tokens(tokens, s.pool)
                sample.add(tokens)
                waiting.append([t.astype(np.float16) for t in tokens])
                continue
            schema, column = self._pack(schema, tokens)
            columns.append(column)
        if sample is not None and len(sample):
            self.params = replace(self.params, tokens=multi.fit_codec(s, sample.values()))
        for tokens in waiting:  # pooled already
            schema, column = self._pack(schema, [t.astype(np.float32) for t in tokens], pooled=True)
            columns.append(column)
        if self.model.tokens_seen is None:  # the plugin does not count: count with its tokenizer
            self.stats.tokens += sum(self.model.tokenizer.count_tokens(texts))
        if not vectors:
            return np.empty((0, self.model.dim), np.float32), schema, multi.column([], self.params.tokens)
        return np.concatenate(vectors), schema, pa.concat_arrays(columns)

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


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    return l2_normalize(x, in_place=True) if len(x) else x


TOKEN_SLICE = 65_536  # tokens (estimated at 4 characters each) encoded before their vectors are packed


def _token_slices(texts: list[str]) -> list[list[str]]:
    out, part, weight = [], [], 0
    for t in texts:
        part.append(t)
        weight += len(t) // 4 + 1
        if weight >= TOKEN_SLICE:
            out.append(part)
            part, weight = [], 0
    if part:
        out.append(part)
    return out


def _build_batch(docs: list[EmbedDoc], vectors: np.ndarray, schema: pa.Schema,
                 token_column: pa.Array | None = None) -> pa.RecordBatch:
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
            arrays.append(token_column)
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
