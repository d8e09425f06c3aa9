"""Documents from text files and directories: one file = one document.

Directories are walked lazily (sorted, so runs are reproducible) and documents
come out in bounded batches, so 100k small files are never held at once.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa

from arrowsmith.commands.errors import DataError, StorageError, UsageError

from .stats import ChunkStats

log = logging.getLogger("arrowsmith.chunk")

DEFAULT_GLOBS = ("*.txt", "*.md", "*.markdown", "*.rst", "*.html", "*.htm")
HTML_SUFFIXES = (".html", ".htm")
BATCH_DOCS = 256
BATCH_BYTES = 16 << 20
BOM = "\ufeff"

SOURCE_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("text", pa.string()),
    pa.field("path", pa.string()),
    pa.field("bytes", pa.int64()),
    pa.field("mtime", pa.timestamp("ms", tz="UTC")),
])


@dataclass
class _SourceFile:
    id: str
    text: str
    path: str
    size: int
    mtime_ms: int


def iter_files(paths: Iterable[str], globs: Iterable[str] | None = None) -> Iterator[tuple[str, str]]:
    """``(path, id)`` of every file to read: given files as named, directories walked.

    Hidden files and directories (``.git``…) are not walked into.
    """
    patterns = tuple(globs) if globs else DEFAULT_GLOBS
    paths = list(paths)
    for given in paths:
        if os.path.isdir(given):
            # one directory: ids relative to it (stable however it is named); several: prefixed
            # with the directory as given, so d1/README.md and d2/README.md stay two documents
            prefix = Path(given).as_posix().rstrip("/") + "/" if len(paths) > 1 else ""
            yield from ((path, prefix + rel) for path, rel in _walk(given, patterns))
        elif os.path.exists(given):
            yield given, Path(given).as_posix()
        else:
            raise UsageError(f"{given}: no such file or directory")


def _walk(root: str, patterns: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            rel = Path(os.path.relpath(path, root)).as_posix()
            if any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns):
                yield path, rel


def read_sources(paths: Iterable[str], *, glob: Iterable[str] | str | None = None, on_error: str = "fail",
                 stats: ChunkStats | None = None, batch_docs: int = BATCH_DOCS,
                 batch_bytes: int = BATCH_BYTES) -> Iterator[pa.RecordBatch]:
    """Documents ``(id, text, path, bytes, mtime)`` from files and directories, in bounded batches.

    Not valid UTF-8: DataError naming the file (``on_error="fail"``), or skipped,
    logged and counted (``"skip"``). Empty and whitespace-only files are skipped
    and counted. A UTF-8 BOM is dropped; line endings are kept as they are.
    """
    if on_error not in ("fail", "skip"):
        raise UsageError(f"--on-error must be fail or skip, not {on_error!r}")
    if isinstance(glob, str):
        glob = [g for g in glob.split(",") if g.strip()]
    stats = stats if stats is not None else ChunkStats()
    docs: list[_SourceFile] = []
    size = 0
    for path, doc_id in iter_files(paths, glob):
        doc = _read_one(path, doc_id, on_error, stats)
        if doc is None:
            continue
        docs.append(doc)
        size += doc.size
        if len(docs) >= batch_docs or size >= batch_bytes:
            yield _to_batch(docs)
            docs, size = [], 0
    if docs:
        yield _to_batch(docs)


def _read_one(path: str, doc_id: str, on_error: str, stats: ChunkStats) -> _SourceFile | None:
    try:
        # O_NONBLOCK: opening a FIFO (or a device) that matches the glob must not wait for a writer
        # forever; only regular files are documents, whatever else the walk finds is skipped
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                log.warning("skipped %s: not a regular file (%s)", path, _node_kind(st.st_mode))
                stats.skipped_special += 1
                return None
            os.set_blocking(fd, True)
            data = f.read()
    except OSError as e:
        if on_error == "skip":
            log.warning("skipped %s: %s", path, e.strerror or e)
            stats.skipped_unreadable += 1
            return None
        raise StorageError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        message = f"{path}: line {line}: not valid UTF-8 (byte {e.start}: {data[e.start:e.start + 1]!r})"
        if on_error == "skip":
            log.warning("skipped %s", message)
            stats.skipped_encoding += 1
            return None
        raise DataError(message, hint="--on-error skip, or re-encode it: iconv -f latin1 -t utf-8") from None
    text = text.removeprefix(BOM)
    if path.lower().endswith(HTML_SUFFIXES):
        text = html_to_text(text)
    if not text.strip():
        stats.skipped_empty += 1
        return None
    return _SourceFile(doc_id, text, path, st.st_size, int(st.st_mtime * 1000))


def _node_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a file"


def _to_batch(docs: list[_SourceFile]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array([d.id for d in docs], pa.string()),
            pa.array([d.text for d in docs], pa.string()),
            pa.array([d.path for d in docs], pa.string()),
            pa.array([d.size for d in docs], pa.int64()),
            pa.array([d.mtime_ms for d in docs], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        ],
        schema=SOURCE_SCHEMA,
    )


# ---------------------------------------------------------------- HTML


class _VisibleText(HTMLParser):
    """Visible text of an HTML page: no head/script/style, blocks on their own lines."""

    HIDDEN = {"head", "script", "style", "noscript", "template", "svg"}
    BLOCKS = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table",
              "section", "article", "header", "footer", "blockquote", "pre", "hr", "dt", "dd", "nav",
              "main", "aside", "figure", "figcaption", "title", "body"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.hidden = 0  # an unclosed <head> ends where the body starts
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")
        if tag == "pre":
            self.pre += 1

    def handle_endtag(self, tag):
        if tag in self.HIDDEN:
            self.hidden = max(self.hidden - 1, 0)
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")
        if tag == "pre":
            self.pre = max(self.pre - 1, 0)

    def handle_data(self, data):
        if self.hidden:
            return
        self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
