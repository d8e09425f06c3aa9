"""Embedded-chunks batches for store/index tests (plumbing: seeded random unit vectors)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa

from arrowsmith.commands.schemas import embedded_fields, stage_metadata

DIM = 384
MODEL = {"plugin": "sentence-transformers", "name": "all-MiniLM-L6-v2", "revision": None, "dim": DIM,
         "pooling": "mean", "normalize": True}


def unit_vectors(seed_text: str, n: int, dim: int = DIM) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def chunks_batch(docs: dict[str, tuple[int, str]], *, model: dict | None = None,
                 texts: dict[str, list[str]] | None = None, extra: dict | None = None) -> pa.RecordBatch:
    """docs: doc_id → (number of chunks, doc_key). Vectors depend on (doc_id, doc_key, chunk)."""
    model = dict(model or MODEL)
    dim = model["dim"]
    rows = {k: [] for k in ("id", "doc_id", "chunk_index", "text", "start", "end", "doc_key")}
    vectors = []
    for doc_id, (n, key) in docs.items():
        doc_texts = (texts or {}).get(doc_id) or [f"{doc_id} chunk {i} {key}" for i in range(n)]
        vectors.append(unit_vectors(f"{doc_id}|{key}", n, dim))
        for i in range(n):
            rows["id"].append(f"{doc_id}#{i}")
            rows["doc_id"].append(doc_id)
            rows["chunk_index"].append(i)
            rows["text"].append(doc_texts[i])
            rows["start"].append(i * 100)
            rows["end"].append(i * 100 + 99)
            rows["doc_key"].append(key)
    flat = np.concatenate(vectors).ravel() if vectors else np.zeros(0, np.float32)
    fields = embedded_fields(dim)
    arrays = [pa.array(rows[f.name], f.type) if f.name != "vector"
              else pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim) for f in fields]
    for name, values in (extra or {}).items():
        arrays.append(pa.array(values))
        fields.append(pa.field(name, arrays[-1].type))
    schema = pa.schema(fields, metadata=stage_metadata("embed", model=model))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def store_rows(db, table: str = "chunks") -> dict[str, tuple[str, str]]:
    """id → (doc_id, doc_key) of the stored table."""
    from arrowsmith.commands.store import open_table

    t = open_table(db, table).search().select(["id", "doc_id", "doc_key"]).limit(None).to_arrow()
    return {i: (d, k) for i, d, k in zip(t.column("id").to_pylist(), t.column("doc_id").to_pylist(),
                                         t.column("doc_key").to_pylist(), strict=True)}


def model_json(model: dict) -> str:
    return json.dumps(model, sort_keys=True)
