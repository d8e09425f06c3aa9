"""`arrowsmith chunk` as a user runs it: inputs, options, env vars, errors, pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest
from conftest import ROOT, SAMPLES, read_ipc, run, run_subprocess, to_ipc

SAMPLE_IDS = ["espresso.rst", "git-basics.md", "marathon.md", "photosynthesis.txt", "sky.md",
              "sourdough.md", "tides.txt", "volcanoes.html"]


def jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def test_chunk_the_sample_corpus():
    result = run(["chunk", str(SAMPLES), "--max-tokens", "64"])
    assert result.exit_code == 0, result.stderr
    table = read_ipc(result.stdout_bytes)
    assert table.column("id").to_pylist() == SAMPLE_IDS
    assert table.schema.names == ["id", "text", "doc_hash", "chunks", "path", "bytes", "mtime"]
    sky = table.to_pylist()[SAMPLE_IDS.index("sky.md")]
    assert sky["text"] == (SAMPLES / "sky.md").read_text()
    assert [c["n_tokens"] <= 64 for c in sky["chunks"]] == [True] * len(sky["chunks"])
    first = sky["chunks"][0]
    assert sky["text"][first["start"]:first["end"]].startswith("# Why is the sky blue?")
    n_chunks = sum(len(c) for c in table.column("chunks").to_pylist())
    assert f"chunk: 8 documents read, 8 chunked, 0 skipped (0 empty, 0 bad encoding); {n_chunks} chunks" \
        in result.stderr
    meta = json.loads(table.schema.metadata[b"arrowsmith.chunker"])
    assert meta["strategy"] == "sentences" and meta["max_tokens"] == 64


def test_html_sample_has_no_markup():
    result = run(["chunk", str(SAMPLES / "volcanoes.html"), "--explode", "-f", "jsonl"])
    assert result.exit_code == 0, result.stderr
    (row,) = jsonl(result.stdout_bytes)
    assert row["text"].startswith("How volcanoes erupt\n\nDeep underground")
    assert "<" not in row["text"] and "console.log" not in row["text"] and "Hawaiʻi" in row["text"]
    assert row["doc_id"] == str(SAMPLES / "volcanoes.html")


def test_explode_markdown_with_options_from_env():
    env = {"ARROWSMITH_STRATEGY": "markdown", "ARROWSMITH_MAX_TOKENS": "40",
           "ARROWSMITH_TOKENIZER": "cl100k_base"}
    result = run(["chunk", str(SAMPLES / "sky.md"), "--explode", "-f", "jsonl"], env=env)
    assert result.exit_code == 0, result.stderr
    rows = jsonl(result.stdout_bytes)
    assert [r["chunk_index"] for r in rows] == list(range(len(rows)))
    assert rows[0]["id"] == f"{SAMPLES / 'sky.md'}#0"
    headings = [r["heading"] for r in rows]
    assert sorted(set(headings), key=headings.index) == [
        "Why is the sky blue?", "Why is the sky blue? > Rayleigh scattering",
        "Why is the sky blue? > Sunsets"]
    # a heading never stands alone: it joins the first sentence(s) of its section
    assert rows[-2]["text"].startswith("## Sunsets\n\nAt sunrise and sunset")
    assert not [r for r in rows if r["text"].startswith("#") and "\n" not in r["text"]]
    text = (SAMPLES / "sky.md").read_text()
    assert all(text[r["start"]:r["end"]] == r["text"] and r["n_tokens"] <= 40 for r in rows)


@pytest.mark.parametrize("how", ["stdin-jsonl", "file-jsonl", "stdin-ipc", "file-csv", "file-parquet"])
def test_tables_with_named_columns_keep_metadata(tmp_path, how):
    table = pa.table({"doc": [1, 2], "body": ["Why is the sky blue? Rayleigh scattering.", "Tides."],
                      "lang": ["en", "en"]})
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in table.to_pylist())
    args = ["chunk", "--id-col", "doc", "--text-col", "body", "--explode", "-f", "jsonl"]
    data = None
    if how == "stdin-jsonl":
        data = lines
    elif how == "stdin-ipc":
        data = to_ipc(table)
    elif how == "file-jsonl":
        (tmp_path / "in.jsonl").write_bytes(lines)
        args.append(str(tmp_path / "in.jsonl"))
    elif how == "file-csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, tmp_path / "in.csv")
        args.append(str(tmp_path / "in.csv"))
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, tmp_path / "in.parquet")
        args.append(str(tmp_path / "in.parquet"))
    result = run(args, input=data)
    assert result.exit_code == 0, result.stderr
    rows = jsonl(result.stdout_bytes)
    assert [(r["id"], r["text"], r["lang"]) for r in rows] == [
        ("1#0", "Why is the sky blue? Rayleigh scattering.", "en"), ("2#0", "Tides.", "en")]


def test_null_text_names_the_row():
    data = b'{"id": "a", "text": "ok"}\n{"id": "b", "text": null}\n'
    result = run(["chunk"], input=data)
    assert result.exit_code == 65
    assert "row 2 (id 'b'): the text ('text') is null" in result.stderr
    result = run(["chunk", "--on-error", "skip"], input=data)
    assert result.exit_code == 0
    assert read_ipc(result.stdout_bytes).column("id").to_pylist() == ["a"]
    assert "1 invalid" in result.stderr and "skipped b" not in result.stdout


def test_missing_id_column_is_a_data_error():
    result = run(["chunk"], input=b'{"text": "no id here"}\n')
    assert result.exit_code == 65
    assert "input has no 'id' column (it has: text)" in result.stderr and "--id-col" in result.stderr


def test_bad_encoding_fails_or_is_skipped_and_counted(tmp_path):
    (tmp_path / "good.md").write_text("Fine text.")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait")
    (tmp_path / "blank.txt").write_text("\n  \n")
    result = run(["chunk", str(tmp_path)])
    assert result.exit_code == 65
    assert f"{tmp_path / 'bad.txt'}: line 1: not valid UTF-8 (byte 3" in result.stderr
    assert "Traceback" not in result.stderr
    result = run(["chunk", str(tmp_path), "--on-error", "skip"])
    assert result.exit_code == 0
    assert read_ipc(result.stdout_bytes).column("id").to_pylist() == ["good.md"]
    assert f"skipped {tmp_path / 'bad.txt'}" in result.stderr
    assert "3 documents read, 1 chunked, 2 skipped (1 empty, 1 bad encoding)" in result.stderr


def test_quiet_has_no_summary():
    result = run(["-q", "chunk", str(SAMPLES / "tides.txt")])
    assert result.exit_code == 0 and result.stderr == ""


@pytest.mark.parametrize("args, message", [
    (["--strategy", "words"], "--strategy/-s: 'words' is not one of 'tokens', 'sentences', 'markdown'"),
    (["--overlap", "10"], "--overlap applies to --strategy tokens only"),
    (["--max-tokens", "4"], "--max-tokens must be at least 8"),
    (["--strategy", "tokens", "--max-tokens", "16", "--overlap", "16"], "--overlap must be between 0 and"),
    (["--on-error", "ignore"], "--on-error: 'ignore' is not one of 'fail', 'skip'"),
    (["--tokenizer", "tiktoken:nope"], "tiktoken encoding 'nope' is not available offline"),
])
def test_usage_errors_exit_2(args, message):
    result = run(["chunk", str(SAMPLES / "sky.md"), *args])
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr


def test_missing_input_is_a_usage_error():
    result = run(["chunk", "/no/such/dir"])
    assert result.exit_code == 2, result.stderr
    assert "/no/such/dir: no such file or directory" in result.stderr


def test_a_pipe_given_by_name_is_a_table_like_stdin(tmp_path):
    """`arrowsmith chunk <(cat docs.jsonl)`: the shell passes /dev/fd/N, a pipe without an extension;
    read as a text file it became one document holding the JSON."""
    import threading

    fifo = tmp_path / "docs"
    os.mkfifo(fifo)
    lines = b'{"id": "a", "text": "One sentence. Another one."}\n{"id": "b", "text": "Third."}\n'
    writer = threading.Thread(target=lambda: fifo.write_bytes(lines), daemon=True)
    writer.start()
    r = run(["chunk", str(fifo), "--explode", "-f", "jsonl"])
    writer.join(timeout=60)
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout_bytes.decode().splitlines()]
    assert [row["doc_id"] for row in rows] == ["a", "b"]


def test_tables_and_text_files_do_not_mix(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"id": "a", "text": "x"}\n')
    result = run(["chunk", str(tmp_path / "t.jsonl"), str(SAMPLES)])
    assert result.exit_code == 2 and "not both in one run" in result.stderr


def test_output_into_a_missing_directory_is_exit_74_like_a_shell_redirect(tmp_path):
    """Issue 21: the missing directories were created, hiding a typo in the path."""
    out = tmp_path / "no" / "such" / "chunks.jsonl"
    result = run(["chunk", str(SAMPLES), "-o", str(out)])
    assert result.exit_code == 74
    assert f"{out}: no such directory: {tmp_path / 'no' / 'such'}" in result.stderr
    assert not (tmp_path / "no").exists()


def test_fifo_in_a_directory_is_skipped_and_counted_not_waited_on(tmp_path):
    """Issue 21: a named pipe matching the glob blocked open() forever, even with --on-error skip.
    Only regular files are documents; a pipe named on the command line stays a stream."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "good.txt").write_text("A fine document. It has two sentences.")
    os.mkfifo(tmp_path / "docs" / "fifo.txt")
    r = run_subprocess(["chunk", str(tmp_path / "docs"), "-f", "jsonl"], timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert [json.loads(line)["id"] for line in r.stdout.decode().splitlines()] == ["good.txt"]
    err = r.stderr.decode()
    assert f"skipped {tmp_path / 'docs' / 'fifo.txt'}: not a regular file (a named pipe)" in err
    assert "1 skipped (0 empty, 0 bad encoding, 1 not regular files)" in r.stderr.decode()


def test_output_file_is_written_atomically(tmp_path):
    out = tmp_path / "out" / "chunks.parquet"
    out.parent.mkdir()
    result = run(["chunk", str(SAMPLES), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    import pyarrow.parquet as pq

    assert pq.read_table(out).column("id").to_pylist() == SAMPLE_IDS
    # a failing run leaves neither a partial target nor a temp file
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.txt").write_bytes(b"\xff\xfe")
    result = run(["chunk", str(tmp_path / "in"), "-o", str(tmp_path / "in" / "x.arrows")])
    assert result.exit_code == 65
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["bad.txt"]


def test_table_format_shows_one_row_per_chunk(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "160")  # the table fits the terminal; a test runner's may be narrow
    args = ["chunk", "samples/tides.txt", "--max-tokens", "64"]
    rows = jsonl(run([*args, "-f", "jsonl", "--explode"]).stdout_bytes)
    result = run([*args, "-f", "table"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "doc_id", "chunk_index", "text"]
    assert len(lines) == 2 + len(rows) and len(rows) > 1
    assert lines[2].split()[2] == "0" and "Tides are the regular" in lines[2]


def test_empty_directory_gives_an_empty_stream(tmp_path):
    result = run(["chunk", str(tmp_path)])
    assert result.exit_code == 0
    table = read_ipc(result.stdout_bytes)
    assert table.num_rows == 0 and "chunks" in table.schema.names
    assert "0 documents read" in result.stderr


def test_broken_pipe_ends_quietly(tmp_path):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    for i in range(60):
        (tmp_path / f"d{i:02d}.txt").write_text(" ".join(words[(i + j) % 10] for j in range(4000)) + ".")
    cmd = f"{sys.executable} -m arrowsmith.cli chunk {tmp_path} | head -c 100 > /dev/null; " \
          "echo \"rc=${PIPESTATUS[0]}\""
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "ARROWSMITH_PROGRESS": "0"})
    assert proc.stdout.strip() == "rc=0"
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_full_stdout_is_exit_74_not_silent_success():
    with open("/dev/full", "wb") as full:
        cmd = [sys.executable, "-m", "arrowsmith.cli", "chunk", str(ROOT / "samples"), "-f", "jsonl"]
        proc = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 74
    assert "No space left on device" in proc.stderr and "Traceback" not in proc.stderr


def test_explode_refuses_metadata_that_would_shadow_span_columns(tmp_path):
    src = tmp_path / "talks.jsonl"
    src.write_text('{"id": "a", "text": "Hello world. Bye.", "start": 5, "speaker": "ann"}\n')
    exploded = run(["chunk", str(src), "--explode", "-f", "jsonl"])
    assert exploded.exit_code == 2 and "input column(s) start clash" in exploded.stderr
    assert exploded.stdout_bytes == b""
    # as chunked documents the metadata is kept untouched beside the spans
    docs = run(["chunk", str(src), "-f", "jsonl"])
    assert docs.exit_code == 0, docs.stderr
    row = json.loads(docs.stdout_bytes)
    assert (row["start"], row["speaker"]) == (5, "ann") and row["chunks"][0]["start"] == 0


def test_several_directories_keep_same_named_files_apart(tmp_path):
    for d, text in (("d1", "First readme."), ("d2", "Second readme.")):
        (tmp_path / d).mkdir()
        (tmp_path / d / "README.md").write_text(text)
    both = run(["chunk", str(tmp_path / "d1"), str(tmp_path / "d2"), "-f", "jsonl"])
    assert both.exit_code == 0, both.stderr
    ids = [json.loads(line)["id"] for line in both.stdout_bytes.decode().splitlines()]
    assert ids == [f"{(tmp_path / 'd1').as_posix()}/README.md", f"{(tmp_path / 'd2').as_posix()}/README.md"]
    one = run(["chunk", str(tmp_path / "d1"), "-f", "jsonl"])  # one root: ids relative to it
    assert json.loads(one.stdout_bytes)["id"] == "README.md"


def test_row_errors_name_the_file_and_count_rows_per_file(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "x", "text": "one"}\n{"id": "y", "text": "two"}\n')
    (tmp_path / "b.jsonl").write_text('{"id": "z", "text": "three"}\n{"id": "x", "text": "four"}\n')
    r = run(["chunk", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "-f", "jsonl"])
    assert r.exit_code == 65
    assert f"{tmp_path / 'b.jsonl'}: row 2: duplicate id 'x'" in r.stderr  # not "row 4", not unnamed
