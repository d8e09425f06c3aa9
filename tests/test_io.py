"""commands/io.py (and the CLI's terminal table in cli/io.py): every input format, concatenated IPC
streams, error locations, atomic output."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import threading

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from conftest import read_ipc, run, to_ipc

from arrowsmith.cli import io as cli_io
from arrowsmith.commands import io as aio
from arrowsmith.commands.errors import DataError, UsageError

TABLE = pa.table({"id": ["a", "007"], "text": ["First doc.", "Second, with a comma."], "n": [1, 2]})


def rows(batches) -> list[dict]:
    return [r for b in batches for r in b.to_pylist()]


def write_as(table: pa.Table, path) -> None:
    suffix = path.suffix
    if suffix == ".arrows":
        path.write_bytes(to_ipc(table))
    elif suffix in (".arrow", ".feather"):
        feather.write_feather(table, path, compression="uncompressed")
    elif suffix == ".parquet":
        pq.write_table(table, path)
    elif suffix in (".jsonl", ".ndjson"):
        path.write_bytes(aio.batch_to_jsonl(table.to_batches()[0]))
    elif suffix in (".csv", ".tsv"):
        pacsv.write_csv(table, path, pacsv.WriteOptions(delimiter="\t" if suffix == ".tsv" else ","))


@pytest.mark.parametrize("suffix", [".arrows", ".arrow", ".feather", ".parquet", ".jsonl", ".ndjson",
                                    ".csv", ".tsv"])
def test_every_input_format_by_extension(tmp_path, suffix):
    path = tmp_path / f"docs{suffix}"
    write_as(TABLE, path)
    got = rows(aio.read_batches(str(path)))
    if suffix in (".csv", ".tsv"):
        # text tables are read as text: ids like "007" stay as written
        assert got == [{"id": "a", "text": "First doc.", "n": "1"},
                       {"id": "007", "text": "Second, with a comma.", "n": "2"}]
    else:
        assert got == TABLE.to_pylist()


class FakeStdin:
    """What a pipe looks like: a text stream whose .buffer is a BufferedReader."""

    def __init__(self, data: bytes):
        self.buffer = io.BufferedReader(io.BytesIO(data))

    def isatty(self) -> bool:
        return False


@pytest.mark.parametrize("fmt", ["arrows", "arrow", "parquet", "jsonl"])
def test_stdin_is_sniffed(tmp_path, monkeypatch, fmt):
    path = tmp_path / f"x.{'feather' if fmt == 'arrow' else fmt}"
    write_as(TABLE, path)
    monkeypatch.setattr(sys, "stdin", FakeStdin(path.read_bytes()))
    assert rows(aio.read_batches("-")) == TABLE.to_pylist()


def test_stdin_sniffing_past_blank_lines_and_corrupt_binary(monkeypatch):
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"\n" * 40 + b'{"id": "a", "text": "hi"}\n'))
    assert rows(aio.read_batches("-")) == [{"id": "a", "text": "hi"}]
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"PAR1garbage"))
    with pytest.raises(DataError, match="<stdin>: not a readable parquet file"):
        list(aio.read_batches("-"))


@pytest.mark.parametrize("cpus", [None, 1], ids=["threaded", "one cpu"])
def test_csv_parse_error_names_the_line(tmp_path, cpus):
    """The same message whichever reader Arrow picks (its serial one, on one CPU or with
    OMP_NUM_THREADS=1, also counts records: "Row #4", which is line 5 here)."""
    path = tmp_path / "bad.csv"
    path.write_text('id,text\na,"a quoted\nvalue over two lines"\nb,fine\nc,x,extra\nd,ok\n')
    before = pa.cpu_count()
    if cpus:
        pa.set_cpu_count(cpus)
    try:
        with pytest.raises(DataError) as e:
            list(aio.read_batches(str(path)))
    finally:
        pa.set_cpu_count(before)
    assert str(e.value) == f"{path}: line 5: CSV parse error: Expected 2 columns, got 3: c,x,extra"


def test_stdin_csv_needs_the_format_named(monkeypatch):
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"id,text\nx,hello\n"))
    with pytest.raises(DataError, match="--input-format csv"):
        list(aio.read_batches("-"))
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"id,text\nx,hello\n"))
    assert rows(aio.read_batches("-", "csv")) == [{"id": "x", "text": "hello"}]


def test_empty_stdin_is_a_data_error():
    result = run(["chunk"], input=b"")
    assert result.exit_code == 65
    assert "<stdin>: empty input" in result.stderr


def test_concatenated_ipc_streams_from_file_and_stdin(tmp_path, monkeypatch):
    other = pa.table({"id": ["b"], "text": ["Third doc."], "n": [3]})
    data = to_ipc(TABLE) + to_ipc(other)
    (tmp_path / "two.arrows").write_bytes(data)
    assert [r["id"] for r in rows(aio.read_batches(str(tmp_path / "two.arrows")))] == ["a", "007", "b"]
    monkeypatch.setattr(sys, "stdin", FakeStdin(data))
    assert [r["id"] for r in rows(aio.read_batches("-"))] == ["a", "007", "b"]
    # and through the CLI (`cat a.arrows b.arrows | arrowsmith chunk`)
    result = run(["chunk"], input=data)
    assert result.exit_code == 0, result.stderr
    assert read_ipc(result.stdout_bytes).column("id").to_pylist() == ["a", "007", "b"]


def test_truncated_ipc_stream_exits_65(tmp_path):
    big = pa.table({"id": [str(i) for i in range(2000)], "text": ["some text here"] * 2000})
    data = to_ipc(big)
    cut = data[: len(data) - 1000]
    (tmp_path / "cut.arrows").write_bytes(cut)
    with pytest.raises(DataError, match="truncated or corrupt Arrow IPC stream"):
        list(aio.read_batches(str(tmp_path / "cut.arrows")))
    result = run(["chunk", str(tmp_path / "cut.arrows")])
    assert result.exit_code == 65
    assert f"{tmp_path / 'cut.arrows'}: truncated or corrupt Arrow IPC stream" in result.stderr
    result = run(["chunk"], input=cut)
    assert result.exit_code == 65 and "<stdin>: truncated" in result.stderr


def test_garbage_after_a_stream_is_reported(tmp_path):
    (tmp_path / "tail.arrows").write_bytes(to_ipc(TABLE) + b"not arrow at all")
    with pytest.raises(DataError, match="bytes after IPC stream 1 are not an Arrow stream"):
        list(aio.read_batches(str(tmp_path / "tail.arrows")))


@pytest.mark.parametrize("content, message", [
    (b'{"id": "a", "text": "x"}\n{"id": "b", "text": \n', "line 2: invalid JSON"),
    (b'{"id": "a", "text": "x"}\n\n[1, 2]\n', "line 3: expected a JSON object, got list"),
    (b'{"id": "a", "text": "x"}\n{"id": "b", "text": "\xff"}\n', "line 2: not valid UTF-8"),
    (b'{"id": "a", "text": "x"}\n{"id": "b", "text": "y"', "line 2: truncated JSON"),
    (b"", "empty input (no JSON lines)"),
])
def test_jsonl_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        list(aio.read_batches(str(path)))
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    result = run(["chunk", str(path)])
    assert result.exit_code == 65 and message in result.stderr


@pytest.mark.parametrize("batch_rows", [2, 1024])
def test_jsonl_type_mismatch_names_the_line(tmp_path, monkeypatch, batch_rows):
    monkeypatch.setattr(aio, "BATCH_ROWS", batch_rows)
    path = tmp_path / "types.jsonl"
    path.write_text('{"id": "a", "n": 1}\n\n{"id": "b", "n": 2}\n{"id": "c", "n": 3}\n'
                    '{"id": "d", "n": "x"}\n')
    with pytest.raises(DataError, match=r"types.jsonl: line 5: values do not match the column types"):
        list(aio.read_batches(str(path)))


def test_jsonl_later_batches_are_never_cast_with_loss(tmp_path, monkeypatch):
    monkeypatch.setattr(aio, "BATCH_ROWS", 2)
    path = tmp_path / "drift.jsonl"
    # widening is fine: an int in a float column, a missing nested field, a null
    path.write_text('{"id": "a", "x": 0.5, "m": {"k": 1}}\n{"id": "b", "x": 1.5, "m": {"k": 2}}\n'
                    '{"id": "c", "x": 3, "m": {}}\n{"id": "d", "x": null, "m": null}\n')
    assert [(r["x"], r["m"]) for r in rows(aio.read_batches(str(path)))] == \
        [(0.5, {"k": 1}), (1.5, {"k": 2}), (3.0, {"k": None}), (None, None)]
    # narrowing is an error naming the line, never a silent 1.5 -> 1 or a dropped key
    path.write_text('{"id": "a", "n": 1}\n{"id": "b", "n": 2}\n{"id": "c", "n": 3}\n{"id": "d", "n": 1.5}\n')
    with pytest.raises(DataError, match=r"line 4: .*1.500000 was truncated"):
        list(aio.read_batches(str(path)))
    path.write_text('{"id": "a", "m": {"k": 1}}\n{"id": "b", "m": {"k": 2}}\n'
                    '{"id": "c", "m": {"k": 3, "lost": "x"}}\n')
    with pytest.raises(DataError, match=r"line 3: .*column 'm': field\(s\) lost are not in"):
        list(aio.read_batches(str(path)))
    path.write_text('{"id": "a", "text": "\\ud83d"}\n')  # a lone surrogate cannot be UTF-8
    with pytest.raises(DataError, match=r"drift.jsonl: line 1: "):
        list(aio.read_batches(str(path)))


def test_jsonl_first_batch_grows_until_every_field_has_a_type(tmp_path, monkeypatch):
    monkeypatch.setattr(aio, "BATCH_ROWS", 4)
    monkeypatch.setattr(aio, "FIRST_BATCH_MAX_ROWS", 16)
    path = tmp_path / "sparse.jsonl"
    lines = [{"id": f"d{i}", "url": None} for i in range(30)]
    lines[9]["url"] = "http://a"  # row 10: past the first 4-row batch, within 16
    lines[25]["url"] = "http://b"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    batches = list(aio.read_batches(str(path)))
    assert batches[0].num_rows == 12 and batches[0].schema.field("url").type == pa.string()
    assert [r["url"] for r in rows(batches) if r["url"]] == ["http://a", "http://b"]
    # past the cap the first batch is cut, and a value arriving later is a named error, not a loss
    lines[9]["url"] = None
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(DataError, match=r"line 26: values do not match the column types"):
        list(aio.read_batches(str(path)))


def test_jsonl_fields_appearing_later_are_kept_or_named(tmp_path, monkeypatch):
    path = tmp_path / "later.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "lang": "en"}\n')
    # within the first batch: a column, null where absent (never silently dropped)
    assert rows(aio.read_batches(str(path))) == [{"id": "a", "lang": None}, {"id": "b", "lang": "en"}]
    monkeypatch.setattr(aio, "BATCH_ROWS", 1)
    with pytest.raises(DataError, match=r"line 2: field\(s\) lang not in the first rows' columns"):
        list(aio.read_batches(str(path)))


def test_unknown_extension_and_missing_file_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="cannot tell the format"):
        list(aio.read_batches(str(tmp_path / "x.docx")))
    with pytest.raises(UsageError, match="no such file"):
        list(aio.read_batches(str(tmp_path / "missing.jsonl")))


def test_schemas_of_several_inputs_must_agree(tmp_path):
    write_as(TABLE, tmp_path / "a.arrows")
    write_as(pa.table({"id": ["z"], "body": ["x"]}), tmp_path / "b.arrows")
    with pytest.raises(DataError, match="schema differs"):
        list(aio.read_many([str(tmp_path / "a.arrows"), str(tmp_path / "b.arrows")]))
    # same columns in another order are conformed
    write_as(TABLE.select(["n", "text", "id"]), tmp_path / "c.arrows")
    got = rows(aio.read_many([str(tmp_path / "a.arrows"), str(tmp_path / "c.arrows")]))
    assert got == TABLE.to_pylist() * 2


@pytest.mark.parametrize("suffix", [".arrows", ".arrow", ".parquet", ".jsonl", ".csv", ".tsv"])
def test_every_output_format_round_trips(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    n = aio.write_batches(TABLE.to_batches(), str(path))
    assert n == 2
    got = rows(aio.read_batches(str(path)))
    assert [r["id"] for r in got] == ["a", "007"] and got[1]["text"] == "Second, with a comma."


def test_file_output_is_atomic(tmp_path):
    target = tmp_path / "out.arrows"
    target.write_bytes(b"previous good content")

    def failing():
        yield TABLE.to_batches()[0]
        raise DataError("boom in the middle")

    with pytest.raises(DataError, match="boom"):
        aio.write_batches(failing(), str(target))
    assert target.read_bytes() == b"previous good content"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.arrows"]  # no temp file left
    fresh = tmp_path / "new.parquet"
    with pytest.raises(DataError):
        aio.write_batches(failing(), str(fresh))
    assert not fresh.exists()


def test_a_new_output_file_gets_the_umask_mode_and_a_replaced_one_keeps_its_own(tmp_path):
    # mkstemp makes 0600: written as it is, every output would be unreadable to other users
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.arrows"
        aio.write_batches(TABLE.to_batches(), str(fresh))
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        shared = tmp_path / "shared.jsonl"
        shared.write_text("old\n")
        shared.chmod(0o664)
        aio.write_batches(TABLE.to_batches(), str(shared))
        assert stat.S_IMODE(shared.stat().st_mode) == 0o664
        assert [r["id"] for r in rows(aio.read_batches(str(shared)))] == ["a", "007"]
    finally:
        os.umask(old)


def test_atomic_file_replaces_its_target_only_when_the_block_succeeds(tmp_path):
    """What eval --plot and compress --plot write through (matplotlib wants a path)."""
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    target.chmod(0o640)
    with pytest.raises(RuntimeError), aio.atomic_file(target) as tmp:
        open(tmp, "wb").write(b"half")
        raise RuntimeError("the plot failed")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]
    with aio.atomic_file(target) as tmp:
        open(tmp, "wb").write(b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]


def test_output_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "data").mkdir()
    real = tmp_path / "data" / "out.arrows"
    real.write_bytes(b"previous")
    link = tmp_path / "out.arrows"
    link.symlink_to(real)
    aio.write_batches(TABLE.to_batches(), str(link))
    assert link.is_symlink() and link.resolve() == real
    assert [r["id"] for r in rows(aio.read_batches(str(real)))] == ["a", "007"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["out.arrows"]  # no temp left


def test_a_fifo_is_written_in_place_as_a_stream(tmp_path):
    """`-o FIFO` (or a shell's process substitution, /dev/fd/N): renaming a temp file over it would
    replace the pipe with a file no reader sees; it is opened and written, in stdout's format."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    sink = aio.BatchSink(str(fifo))
    assert sink.fmt == "arrows"  # no extension: what stdout would get
    with sink:
        sink.write_all(TABLE.to_batches())
    reader.join(timeout=60)
    assert read_ipc(got[0]).column("id").to_pylist() == ["a", "007"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still the pipe
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_a_fifo_input_is_sniffed_like_stdin(tmp_path):
    """`embed <(chunk …)`: the shell passes /dev/fd/N, a pipe without an extension."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    payload = to_ipc(TABLE)
    writer = threading.Thread(target=lambda: fifo.write_bytes(payload), daemon=True)
    writer.start()
    got = rows(aio.read_many([str(fifo)]))
    writer.join(timeout=60)
    assert [r["id"] for r in got] == ["a", "007"]
    writer = threading.Thread(target=lambda: fifo.write_bytes(b"plain words, not a table\n"), daemon=True)
    writer.start()
    with pytest.raises(DataError, match=f"{fifo}: not an Arrow IPC stream, Arrow file, Parquet or JSONL"):
        list(aio.read_many([str(fifo)]))
    writer.join(timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_device_node_is_written_in_place_not_replaced(tmp_path):
    # /dev/null's own numbers (char 1:3), made in tmp_path: as root, the temp-file-and-rename of
    # a regular output would have replaced the node with a plain file
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    r = run(["chunk", "-", "-o", str(null)], input=b'{"id": "a", "text": "One. Two."}\n')
    assert r.exit_code == 0, r.stderr
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_empty_output_still_has_a_schema(tmp_path):
    path = tmp_path / "empty.arrows"
    aio.write_batches([], str(path), schema=TABLE.schema)
    assert read_ipc(path.read_bytes()).schema.names == ["id", "text", "n"]


def test_nested_columns_become_json_in_csv(tmp_path):
    table = pa.table({"id": ["a"], "chunks": [[{"start": 0, "end": 3}]]})
    path = tmp_path / "nested.csv"
    aio.write_batches(table.to_batches(), str(path))
    assert path.read_text().splitlines() == ['"id","chunks"', '"a","[{""start"": 0, ""end"": 3}]"']


def test_binary_is_never_written_to_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert cli_io.BatchSink("-").fmt == "table"
    assert cli_io.BatchSink("-", "arrows").fmt == "table"
    assert cli_io.BatchSink("-", "jsonl").fmt == "jsonl"
    # the library has no terminal table: a terminal gets JSON lines
    assert aio.BatchSink("-").fmt == "jsonl"
    assert aio.BatchSink("-", "parquet").fmt == "jsonl"
    with pytest.raises(UsageError, match="table"):
        aio.BatchSink("-", "table")


def test_the_cli_table_renders_rows(tmp_path):
    path = tmp_path / "out.txt"
    with cli_io.BatchSink(str(path), "table") as sink:
        sink.write_all(TABLE.to_batches())
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["id", "text", "n"]
    assert lines[2].split()[0] == "a" and lines[3].split()[0] == "007"


def test_a_stream_without_its_end_marker_is_truncated_from_a_file_a_pipe_and_after_another_stream(tmp_path):
    """Issue 21: pyarrow reads a stream cut at a batch boundary as complete; every reader of Arrow
    streams refuses it naming the input and the rows read, whole streams before it included."""
    from conftest import EOS_MARKER

    from arrowsmith.commands.errors import DataError
    from arrowsmith.commands.io import read_batches

    t = pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"]})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, t.schema) as w:
        for b in t.to_batches(max_chunksize=1):
            w.write_batch(b)
    whole = sink.getvalue()
    assert whole.endswith(EOS_MARKER)
    cut = whole[:-len(EOS_MARKER)]
    (tmp_path / "whole.arrows").write_bytes(whole + whole)  # concatenated, both whole: 6 rows
    assert sum(b.num_rows for b in read_batches(str(tmp_path / "whole.arrows"))) == 6
    (tmp_path / "cut.arrows").write_bytes(whole + cut)
    with pytest.raises(DataError, match=r"cut.arrows: truncated Arrow IPC stream: stream 2 ended after row 3 "
                                        r"\(6 rows read in all\) without its end-of-stream marker"):
        list(read_batches(str(tmp_path / "cut.arrows")))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(cut))
    writer.start()
    with pytest.raises(DataError, match="pipe: truncated Arrow IPC stream: stream 1 ended after row 3"):
        list(read_batches(str(fifo)))
    writer.join(timeout=60)
