"""Arrow record batches in and out of files, stdin and stdout (the library's readers and writers).

Readers pick the format by extension (or by sniffing stdin), stream in bounded
batches and turn every parse failure into a DataError naming file and line.
Writers open lazily on the first batch, write files atomically (temp file in
the same directory + rename, so Make never sees a half-written target) and never
put binary on a terminal. The human table a terminal gets is the CLI's
(``arrowsmith.cli.io.BatchSink`` adds the ``table`` format); this module never imports the CLI.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from .errors import DataError, StorageError, UsageError
from .schemas import conform_batch

INPUT_FORMATS = ("arrows", "arrow", "parquet", "jsonl", "csv", "tsv")
OUTPUT_FORMATS = ("arrows", "arrow", "parquet", "jsonl", "csv", "tsv")
BINARY_FORMATS = ("arrows", "arrow", "parquet")
EXTENSIONS = {
    ".arrows": "arrows",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
}
BATCH_ROWS = 1024
BATCH_BYTES = 16 << 20
# JSONL: the first batch fixes the column types; while a column has no value yet, it grows
# (up to this) so a field that first appears at row 5,000 still gets its type
FIRST_BATCH_MAX_ROWS = 64 * BATCH_ROWS
STREAM_FORMATS = ("arrows", "jsonl", "csv", "tsv")  # readable front to back; the rest need random access
IPC_STREAM_MAGIC = b"\xff\xff\xff\xff"
_UNDELIMITED = ("jsonl", "csv", "tsv")  # text formats with no end marker: a cut at a line reads as the end


def format_of(path: str) -> str | None:
    """The tabular format named by a path's extension, or None."""
    return EXTENSIONS.get(Path(path).suffix.lower())


def is_tabular(path: str) -> bool:
    return format_of(path) is not None


# ---------------------------------------------------------------- reading


def read_batches(source: str, fmt: str | None = None, *, whole: bool = False) -> Iterator[pa.RecordBatch]:
    """Stream record batches from a path, or from stdin when ``source == "-"``.

    ``whole``: the caller acts on the input being complete (``--prune`` deletes what it lacks), so
    a pipe in a format without an end marker (JSONL, CSV) is refused: a producer that died at a
    line boundary reads exactly like one that finished. Arrow streams carry their end-of-stream
    marker (checked for every input), Arrow files and Parquet a footer.
    """
    if source == "-":
        yield from _read_stdin(fmt, whole)
        return
    if stream_path(source) and (fmt or format_of(source)) in (None, *_UNDELIMITED):
        # a FIFO, a shell's process substitution <(...), /dev/stdin: sniffed like stdin
        with open(source, "rb") as f:
            yield from _read_unseekable(f, fmt or format_of(source), source, whole)
        return
    fmt = fmt or format_of(source)
    if fmt is None:
        raise UsageError(f"{source}: cannot tell the format from the extension",
                         hint="--input-format arrows|arrow|parquet|jsonl|csv|tsv")
    try:
        if fmt in STREAM_FORMATS:
            with open(source, "rb") as f:
                yield from _read_stream(f, fmt, source)
        elif fmt == "arrow":
            yield from _read_ipc_file(source)
        elif fmt == "parquet":
            yield from _read_parquet(source)
        else:
            raise UsageError(f"unknown input format {fmt!r}")
    except FileNotFoundError:
        raise UsageError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{source}: is a directory, expected a table file") from None
    except PermissionError as e:
        raise StorageError(f"{source}: {e.strerror}") from None


def read_many(sources: Iterable[str], fmt: str | None = None, *, whole: bool = False
              ) -> Iterator[pa.RecordBatch]:
    """Batches of several inputs in turn; their schemas must agree (metadata aside).
    ``whole``: see ``read_batches``."""
    from .schemas import SOURCE

    first: pa.Schema | None = None
    first_name = ""
    for source in sources:
        for batch in read_batches(source, fmt, whole=whole):
            if first is None:
                first, first_name = batch.schema, source
            elif not batch.schema.equals(first, check_metadata=False):
                batch = conform_batch(batch, first, _name(source), _name(first_name))
            # stages name the file in their row errors (several inputs: rows count per file)
            yield batch.replace_schema_metadata({**(batch.schema.metadata or {}),
                                                 SOURCE.encode(): _name(source).encode()})


def _name(source: str) -> str:
    return "<stdin>" if source == "-" else source


def _read_stdin(fmt: str | None, whole: bool = False) -> Iterator[pa.RecordBatch]:
    stdin = sys.stdin.buffer
    if not hasattr(stdin, "peek"):
        # sniffing and concatenated IPC streams need peek (CliRunner gives a bare BytesIO)
        stdin = io.BufferedReader(stdin)
    if sys.stdin.isatty():
        raise UsageError("no input: give a path, or pipe data into stdin")
    yield from _read_unseekable(stdin, fmt, "-", whole)


def _read_unseekable(f: IO[bytes], fmt: str | None, source: str, whole: bool = False
                     ) -> Iterator[pa.RecordBatch]:
    """stdin or a pipe: the format sniffed from the first bytes unless given."""
    if fmt is None:
        head = f.peek(256)[:256] if hasattr(f, "peek") else b""
        if not head:
            raise DataError(f"{_name(source)}: empty input (expected an Arrow IPC stream, JSONL or CSV)")
        fmt = _sniff(head, source)
    if whole and fmt in _UNDELIMITED:
        raise UsageError(
            f"--prune needs an input whose end can be checked: {_name(source)} is {fmt} from a pipe, "
            "where a producer that died at a line boundary reads like one that finished",
            hint=f"write the {fmt} to a file and give its path, or pipe an Arrow stream "
                 "(what `arrowsmith chunk` writes)",
        )
    if fmt in STREAM_FORMATS:
        yield from _read_stream(f, fmt, source)
    else:
        # IPC files and Parquet need random access: spool the stream to memory.
        yield from _read_random_access(f.read(), fmt, source)


def read_bytes(data: bytes, fmt: str | None = None, source: str = "-") -> Iterator[pa.RecordBatch]:
    """Record batches of an input already in memory (e.g. stdin read whole), format sniffed."""
    fmt = fmt or _sniff(data[:256], source)
    if fmt in STREAM_FORMATS:
        yield from _read_stream(io.BufferedReader(io.BytesIO(data)), fmt, source)
    else:
        yield from _read_random_access(data, fmt, source)


def _read_random_access(data: bytes, fmt: str, source: str = "-") -> Iterator[pa.RecordBatch]:
    try:
        if fmt == "arrow":
            reader = pa.ipc.open_file(pa.BufferReader(data))
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            yield from pq.ParquetFile(io.BytesIO(data)).iter_batches(BATCH_ROWS)
        else:
            raise UsageError(f"unknown input format {fmt!r}")
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{_name(source)}: not a readable {fmt} file ({e})") from None


def sniff(head: bytes) -> str | None:
    """The format the first bytes of an input show (arrows, arrow, parquet, jsonl), or None."""
    if head.startswith(IPC_STREAM_MAGIC):
        return "arrows"
    if head.startswith(b"ARROW1"):
        return "arrow"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return "jsonl"
    return None


def _sniff(head: bytes, source: str = "-") -> str:
    fmt = sniff(head)
    if fmt is not None:
        return fmt
    raise DataError(
        f"{_name(source)}: not an Arrow IPC stream, Arrow file, Parquet or JSONL",
        hint="--input-format csv (or tsv) for delimited text",
    )


def _read_stream(f: IO[bytes], fmt: str, source: str) -> Iterator[pa.RecordBatch]:
    if fmt == "arrows":
        yield from _read_ipc_streams(f, source)
    elif fmt == "jsonl":
        yield from _read_jsonl(f, source)
    else:
        yield from _read_csv(f, source, "\t" if fmt == "tsv" else ",")


class _EndOfStreamWatch:
    """A file wrapper that tells an IPC stream's end-of-stream marker from a bare end of file.

    pyarrow ends iteration the same way at both: after the marker (it read a zero message length)
    and at end of file (its read came back empty). A producer killed between two batches leaves
    the second, which must not read as a complete input: ``--prune`` would then delete every
    document the producer never sent. So the last read is remembered: empty means no marker.
    """

    def __init__(self, f: IO[bytes]):
        self._f = f
        self.hit_eof = False

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.hit_eof = not data and n != 0
        return data

    @property
    def closed(self) -> bool:
        return False


def _read_ipc_streams(f: IO[bytes], source: str) -> Iterator[pa.RecordBatch]:
    """Loop ``open_stream`` until EOF, so ``cat a.arrows b.arrows |`` works.

    Every stream must end with its end-of-stream marker: one without it is a producer that died
    (kill -9, SIGTERM, an error) after a batch boundary, and is refused as truncated input.
    """
    schema: pa.Schema | None = None
    n_streams = 0
    rows_read = 0
    while True:
        if hasattr(f, "peek"):
            if not f.peek(1):
                break
        elif n_streams:
            break  # without peek we cannot tell, so read one stream
        watch = _EndOfStreamWatch(f)
        try:
            reader = pa.ipc.open_stream(watch)
        except pa.ArrowInvalid as e:
            if n_streams == 0:
                raise DataError(f"{_name(source)}: not an Arrow IPC stream ({e})") from None
            raise DataError(
                f"{_name(source)}: bytes after IPC stream {n_streams} are not an Arrow stream ({e})"
            ) from None
        n_streams += 1
        if schema is None:
            schema = reader.schema
        row = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as e:
                raise DataError(
                    f"{_name(source)}: truncated or corrupt Arrow IPC stream after row {row} "
                    f"of stream {n_streams} ({e})"
                ) from None
            row += batch.num_rows
            rows_read += batch.num_rows
            if not batch.schema.equals(schema, check_metadata=False):
                batch = conform_batch(batch, schema, f"{_name(source)} stream {n_streams}",
                                      f"{_name(source)} stream 1")
            yield batch
        if watch.hit_eof:
            raise DataError(
                f"{_name(source)}: truncated Arrow IPC stream: stream {n_streams} ended after row "
                f"{row} ({rows_read} rows read in all) without its end-of-stream marker: the producer "
                "stopped early (killed or failed), so the input is incomplete",
                hint="check the producing command's exit status (set -o pipefail) and re-run",
            )
    if n_streams == 0:
        raise DataError(f"{_name(source)}: empty input (expected an Arrow IPC stream)")


def _read_ipc_file(path: str) -> Iterator[pa.RecordBatch]:
    try:
        reader = pa.ipc.open_file(pa.memory_map(path))
    except pa.ArrowInvalid as e:
        raise DataError(f"{path}: not an Arrow IPC file ({e})") from None
    for i in range(reader.num_record_batches):
        yield reader.get_batch(i)


def _read_parquet(path: str) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    yield from pf.iter_batches(batch_size=BATCH_ROWS)


def _read_jsonl(f: IO[bytes], source: str) -> Iterator[pa.RecordBatch]:
    """JSON Lines, parsed line by line so every error names its line."""
    name = _name(source)
    schema: pa.Schema | None = None
    rows: list[dict[str, Any]] = []
    lines: list[int] = []  # the line of each row, so errors name it exactly (blank lines skipped)
    size = 0
    lineno = 0
    for lineno, raw in enumerate(f, start=1):
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{name}: line {lineno}: not valid UTF-8 (byte {e.start})",
                            hint="re-encode the file as UTF-8 (iconv -f latin1 -t utf-8)") from None
        except json.JSONDecodeError as e:
            kind = "truncated JSON" if not raw.endswith(b"\n") else "invalid JSON"
            raise DataError(f"{name}: line {lineno}: {kind} ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{name}: line {lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
        lines.append(lineno)
        size += len(raw)
        if len(rows) >= BATCH_ROWS or size >= BATCH_BYTES:
            growing = schema is None and len(rows) < FIRST_BATCH_MAX_ROWS and size < BATCH_BYTES
            # (checked once per BATCH_ROWS rows: the check walks the rows)
            if growing and (len(rows) % BATCH_ROWS or _has_valueless_field(rows)):
                continue
            batch = _rows_to_batch(rows, schema, name, lines)
            schema = schema or batch.schema
            yield batch
            rows, lines, size = [], [], 0
    if rows:
        yield _rows_to_batch(rows, schema, name, lines)
    elif schema is None:
        raise DataError(f"{name}: empty input (no JSON lines)")


def _has_valueless_field(rows: list[dict]) -> bool:
    """A field that is null or absent in every row so far: its type is still unknown."""
    valued: set[str] = set()
    names: set[str] = set()
    for row in rows:
        names.update(row)
        valued.update(k for k, v in row.items() if v is not None)
    return bool(names - valued)


def _rows_to_batch(rows: list[dict], schema: pa.Schema | None, name: str, lines: list[int]
                   ) -> pa.RecordBatch:
    if schema is not None:
        names = set(schema.names)
        for lineno, row in zip(lines, rows, strict=True):
            extra = row.keys() - names
            if extra:
                raise DataError(
                    f"{name}: line {lineno}: field(s) {', '.join(sorted(extra))} not in the "
                    f"first rows' columns ({', '.join(schema.names)})"
                )
    try:
        if schema is None:
            # the first batch's columns are the union of its rows' fields: from_pylist alone
            # would take the first row's and silently drop a field that appears later
            names = list(dict.fromkeys(k for row in rows for k in row))
            return pa.RecordBatch.from_pydict({n: [row.get(n) for row in rows] for n in names})
        return _conform_rows(rows, schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError,
            UnicodeEncodeError) as e:
        bad = _find_bad_row(rows, schema)
        where = f"line {lines[bad]}" if bad is not None else f"lines {lines[0]}-{lines[-1]}"
        raise DataError(f"{name}: {where}: values do not match the column types ({e})") from None


def _conform_rows(rows: list[dict], schema: pa.Schema) -> pa.RecordBatch:
    """Rows after the first batch, in the first batch's types — or an error, never a lossy cast.

    ``from_pylist(rows, schema=…)`` would truncate 1.5 to 1 in an int column and drop an
    unknown key of a nested object; here each column is inferred on its own, then cast safely.
    """
    own = pa.RecordBatch.from_pydict({n: [row.get(n) for row in rows] for n in schema.names})
    arrays = []
    for field, column in zip(schema, own.columns, strict=True):
        if column.type != field.type:
            dropped = _dropped_fields(column.type, field.type)
            if dropped:
                raise pa.ArrowInvalid(f"column {field.name!r}: field(s) {', '.join(dropped)} are not in "
                                      f"the first rows' {field.type}")
            column = column.cast(field.type, safe=True)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _dropped_fields(have: pa.DataType, want: pa.DataType, path: str = "") -> list[str]:
    """Nested struct fields a cast from ``have`` to ``want`` would silently drop."""
    if pa.types.is_struct(have) and pa.types.is_struct(want):
        names = {want.field(i).name: want.field(i).type for i in range(want.num_fields)}
        out = []
        for i in range(have.num_fields):
            f = have.field(i)
            if f.name not in names:
                out.append(f"{path}{f.name}")
            else:
                out += _dropped_fields(f.type, names[f.name], f"{path}{f.name}.")
        return out
    if pa.types.is_list(have) and (pa.types.is_list(want) or pa.types.is_large_list(want)):
        return _dropped_fields(have.value_type, want.value_type, path)
    return []


def _find_bad_row(rows: list[dict], schema: pa.Schema | None) -> int | None:
    errors = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError,
              UnicodeEncodeError)
    if schema is None:
        try:  # the types the first row implies
            schema = pa.RecordBatch.from_pylist(rows[:1]).schema
        except errors:
            return 0
    for i, row in enumerate(rows):
        try:
            _conform_rows([row], schema)
        except errors:
            return i
    return None


def _read_csv(f: IO[bytes], source: str, delimiter: str) -> Iterator[pa.RecordBatch]:
    import csv

    import pyarrow.csv as pacsv

    name = _name(source)
    head = f.peek(1 << 16) if hasattr(f, "peek") else b""
    header_line = head.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace")
    names = next(csv.reader([header_line], delimiter=delimiter), [])
    bad_rows: list[str] = []

    def invalid_row(row) -> str:
        bad_rows.append(row.text)
        return "error"

    try:
        reader = pacsv.open_csv(
            f,
            read_options=pacsv.ReadOptions(block_size=4 << 20),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                                             invalid_row_handler=invalid_row),
            # ids like "007" must stay strings: no type inference for text tables
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False),
        )
        yield from reader
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        line = _line_of(source, bad_rows[-1]) if bad_rows else None
        # Arrow's serial reader (one CPU, OMP_NUM_THREADS=1) adds "Row #4: ", counting records:
        # beside the line number, which counts lines (a quoted value may span several), it misleads
        message = re.sub(r"Row #\d+: ", "", str(e)) if line else str(e)
        raise DataError(f"{name}: " + (f"line {line}: " if line else "") + message) from None


def _line_of(source: str, text: str) -> int | None:
    """The first line of a file that is exactly ``text`` (pyarrow names a bad CSV row by its text
    only, since rows may span lines); None for stdin, already consumed."""
    if source == "-":
        return None
    try:
        with open(source, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if raw.rstrip(b"\r\n").decode("utf-8", errors="replace") == text:
                    return lineno
    except OSError:
        return None
    return None


# ---------------------------------------------------------------- writing


def output_mode(target: str | os.PathLike, directory: bool = False) -> int:
    """Permissions for an output that replaces ``target``: the existing file's own, else what
    ``open()`` / ``mkdir()`` give a new one (0o666 / 0o777 less the umask). The temp files of
    atomic writes are made 0600 / 0700 by mkstemp / mkdtemp, which would hide every output from
    the other users and services meant to read it."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
        os.umask(mask)
        return (0o777 if directory else 0o666) & ~mask


def temp_beside(dest: str | os.PathLike) -> tuple[int, str, Path]:
    """(fd, temp path, target) for an atomic write of ``dest``: the temp file is made beside the
    file ``dest`` names (through a symlink: the link stays a link), with :func:`output_mode`."""
    target = Path(os.path.realpath(dest))
    if not target.parent.is_dir():
        # as a shell redirect would: creating the directories hid a typo in the path
        what = "not a directory" if target.parent.exists() else "no such directory"
        raise StorageError(f"{dest}: {what}: {target.parent}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise StorageError(f"{dest}: cannot create file: {e.strerror}") from None
    os.fchmod(fd, output_mode(target))
    return fd, tmp, target


@contextmanager
def atomic_file(dest: str | os.PathLike) -> Iterator[str]:
    """A temp path beside ``dest`` to write; renamed over it when the block succeeds, removed
    when it fails (for writers that want a path, e.g. a plot)."""
    fd, tmp, target = temp_beside(dest)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def special_file(dest: str) -> bool:
    """An existing destination that is not a regular file: a device, FIFO or socket (/dev/null,
    /dev/stdout on a pipe, a shell's process substitution /dev/fd/N). It is written in place:
    renaming a temp file over it would replace the node itself (as root, /dev/null)."""
    try:
        mode = os.stat(dest).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def stream_path(source: str) -> bool:
    """An input that is a stream like stdin, not a named file: a pipe (a FIFO, a shell's process
    substitution) or a name for one of this process's descriptors (/dev/stdin, /dev/fd/N)."""
    return source.startswith(("/dev/stdin", "/dev/fd/", "/proc/self/fd/")) or special_file(source)


def _terminal_path(dest: str) -> bool:
    """A special file that is a terminal (/dev/tty, /dev/pts/N, /dev/stdout on a terminal)."""
    return os.path.realpath(dest).startswith(("/dev/tty", "/dev/pts/", "/dev/console"))


def default_output_format(dest: str, terminal: str = "jsonl") -> str:
    """The format a destination implies: its extension; for stdout, ``arrows`` (``terminal`` on a
    TTY); for a device or pipe named without one (``-o /dev/null``), what stdout would get."""
    if dest == "-":
        return terminal if sys.stdout.isatty() else "arrows"
    fmt = format_of(dest)
    if fmt is None and special_file(dest):
        return terminal if _terminal_path(dest) else "arrows"
    if fmt is None:
        raise UsageError(f"{dest}: cannot tell the output format from the extension",
                         hint="--format arrows|arrow|parquet|jsonl|csv|tsv")
    return fmt


class BatchSink:
    """Write batches to ``dest`` (a path or ``-``) in ``fmt``; atomic for files.

    Use as a context manager: on success the temp file is renamed into place,
    on error it is removed and any existing target is left untouched. A subclass adds a text
    format by extending ``formats`` and overriding ``_write_text`` (the CLI's terminal table).
    """

    formats: tuple[str, ...] = OUTPUT_FORMATS  # what ``fmt`` may be
    terminal_format = "jsonl"  # what stdout gets on a terminal instead of binary

    def __init__(self, dest: str = "-", fmt: str | None = None):
        self.dest = dest
        self.fmt = fmt or default_output_format(dest, self.terminal_format)
        if self.fmt not in self.formats:
            raise UsageError(f"unknown output format {self.fmt!r} (choose from {', '.join(self.formats)})")
        self._in_place = dest != "-" and special_file(dest)  # a device or pipe: no temp file
        to_terminal = sys.stdout.isatty() if dest == "-" else self._in_place and _terminal_path(dest)
        if to_terminal and self.fmt in BINARY_FORMATS:
            # binary is never written to a terminal (README, "Wire format and schemas")
            self.fmt = self.terminal_format
        self.rows = 0
        self._writer: Any = None
        self._file: IO[bytes] | None = None
        self._tmp: str | None = None
        self._target = dest  # the file the temp file replaces (a symlink's target)

    # context manager ---------------------------------------------------
    def __enter__(self) -> BatchSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # api -----------------------------------------------------------------
    def write(self, batch: pa.RecordBatch) -> None:
        if self._file is None:
            self._open(batch.schema)
        try:
            self._write(batch)
        except OSError as e:
            if isinstance(e, BrokenPipeError):
                raise
            raise StorageError(f"{self._label()}: write failed: {e.strerror or e}") from None
        self.rows += batch.num_rows
        if self._tmp is None:  # stdout or a pipe: the reader gets each batch as it is written
            self._file.flush()

    def write_all(self, batches: Iterable[pa.RecordBatch], schema: pa.Schema | None = None) -> int:
        for batch in batches:
            self.write(batch)
        if self._file is None and schema is not None:
            self._open(schema)
        return self.rows

    def close(self) -> None:
        if self._file is None:
            return
        try:
            if self._writer is not None and hasattr(self._writer, "close"):
                self._writer.close()
            self._file.flush()
            if self._tmp is not None:
                os.fsync(self._file.fileno())
                self._file.close()
                os.replace(self._tmp, self._target)
                self._tmp = None
            elif self.dest != "-":
                self._file.close()
        except BrokenPipeError:
            raise
        except OSError as e:
            self.abort()
            raise StorageError(f"{self._label()}: {e.strerror or e}") from None

    def abort(self) -> None:
        if self._tmp is not None:
            try:
                # close the format writer first: a ParquetWriter left open complains from __del__
                # about the file closed under it
                writer, self._writer = self._writer, None
                if writer is not None and hasattr(writer, "close"):
                    try:
                        writer.close()
                    except Exception:  # noqa: BLE001 - the temp file is discarded anyway
                        pass
                if self._file is not None:
                    self._file.close()
            finally:
                Path(self._tmp).unlink(missing_ok=True)
                self._tmp = None
        elif self._file is not None and self.dest != "-":
            try:
                self._file.close()  # a device or pipe written in place: nothing to remove
            except OSError:
                pass

    # internals -----------------------------------------------------------
    def _label(self) -> str:
        return "<stdout>" if self.dest == "-" else self.dest

    def _open(self, schema: pa.Schema) -> None:
        if self.dest == "-":
            self._file = sys.stdout.buffer
        elif self._in_place:
            try:
                self._file = open(self.dest, "wb")  # noqa: SIM115 - closed by close()/abort()
            except OSError as e:
                raise StorageError(f"{self.dest}: cannot open: {e.strerror}") from None
        else:
            fd, self._tmp, target = temp_beside(self.dest)
            self._target = str(target)
            self._file = os.fdopen(fd, "wb")
        fmt = self.fmt
        if fmt == "arrows":
            self._writer = pa.ipc.new_stream(self._file, schema)
        elif fmt == "arrow":
            self._writer = pa.ipc.new_file(self._file, schema)
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self._file, schema)
        elif fmt in ("csv", "tsv"):
            self._csv_header = True

    def _write(self, batch: pa.RecordBatch) -> None:
        fmt = self.fmt
        if fmt in ("arrows", "arrow"):
            self._writer.write_batch(batch)
        elif fmt == "parquet":
            self._writer.write_batch(batch)
        elif fmt == "jsonl":
            self._file.write(batch_to_jsonl(batch))
        elif fmt in ("csv", "tsv"):
            import pyarrow.csv as pacsv

            flat = _flatten_for_text(batch)
            opts = pacsv.WriteOptions(include_header=self._csv_header,
                                      delimiter="\t" if fmt == "tsv" else ",")
            pacsv.write_csv(flat, self._file, write_options=opts)
            self._csv_header = False
        else:
            self._file.write(self._write_text(batch))

    def _write_text(self, batch: pa.RecordBatch) -> bytes:
        """The bytes of one batch in a format a subclass adds (none here)."""
        raise UsageError(f"unknown output format {self.fmt!r}")


def batch_to_jsonl(batch: pa.RecordBatch) -> bytes:
    lines = [json.dumps(row, ensure_ascii=False, default=_json_default) for row in batch.to_pylist()]
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


def _flatten_for_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """CSV cannot hold lists or structs: write those columns as JSON text."""
    arrays, names = [], []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        t = column.type
        if pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t) \
                or pa.types.is_struct(t) or pa.types.is_map(t) or pa.types.is_binary(t):
            column = pa.array([None if v is None else json.dumps(v, default=_json_default)
                               for v in column.to_pylist()], pa.string())
        arrays.append(column)
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def write_batches(batches: Iterable[pa.RecordBatch], dest: str = "-", fmt: str | None = None,
                  schema: pa.Schema | None = None) -> int:
    """Write all batches; returns the row count. Atomic for files."""
    with BatchSink(dest, fmt) as sink:
        return sink.write_all(batches, schema)
