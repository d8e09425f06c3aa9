"""The chunk library: tokenizers, strategies, the max_tokens guarantee, schemas, sources."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arrowsmith.commands.chunk import (
    ChunkStats,
    chunk_documents,
    html_to_text,
    load_tokenizer,
    read_sources,
)
from arrowsmith.commands.chunk import sources as sources_mod
from arrowsmith.commands.errors import DataError, StorageError, UsageError


@pytest.fixture(scope="module")
def bert():
    return load_tokenizer(None)


@pytest.fixture(scope="module")
def cl100k():
    return load_tokenizer("cl100k_base")


def docs(*texts: str, ids=None) -> list[pa.RecordBatch]:
    ids = ids or [f"d{i}" for i in range(len(texts))]
    return [pa.RecordBatch.from_pydict({"id": ids, "text": list(texts)})]


def chunk_rows(texts, **kw) -> list[dict]:
    out = list(chunk_documents(docs(*texts), **kw))
    return [row for batch in out for row in batch.to_pylist()]


def chunk_texts(text: str, **kw) -> list[str]:
    (row,) = chunk_rows([text], **kw)
    return [text[c["start"]:c["end"]] for c in row["chunks"]]


def check_invariants(text: str, chunks: list[dict], tok, max_tokens: int, contiguous: bool = True) -> None:
    """Every chunk: exact span, stripped, non-empty, counted on its own, within the limit."""
    pieces = [text[c["start"]:c["end"]] for c in chunks]
    assert all(pieces), "empty chunk"
    assert all(p == p.strip() for p in pieces)
    assert all(0 <= c["start"] < c["end"] <= len(text) for c in chunks)
    starts = [c["start"] for c in chunks]
    assert starts == sorted(starts)
    counts = tok.count_tokens(pieces)
    assert [c["n_tokens"] for c in chunks] == counts
    assert max(counts, default=0) <= max_tokens
    if contiguous:
        # nothing is lost between chunks but whitespace: never silently truncate
        assert all(a["end"] <= b["start"] for a, b in zip(chunks, chunks[1:], strict=False))
        assert "".join("".join(pieces).split()) == "".join(text.split())


# ---------------------------------------------------------------- tokenizers


def test_default_tokenizer_is_the_default_models_and_leaves_room_for_special_tokens(bert):
    assert bert.name == "model:all-MiniLM-L6-v2"
    assert bert.default_max_tokens == 254  # 256 window - [CLS] - [SEP]
    assert load_tokenizer("model:all-MiniLM-L6-v2") is bert
    assert load_tokenizer("all-MiniLM-L6-v2").name == "model:all-MiniLM-L6-v2"
    assert bert.count_tokens(["Rayleigh scattering"]) == [len(bert.token_offsets("Rayleigh scattering"))]


def test_tiktoken_names_load_offline(cl100k):
    assert cl100k.name == "cl100k_base"
    assert cl100k.default_max_tokens == 256
    assert load_tokenizer("tiktoken:cl100k_base") is cl100k
    assert cl100k.count_tokens(["hello world"]) == [2]


def test_unknown_tokenizers_are_usage_errors():
    with pytest.raises(UsageError, match="not installed locally"):
        load_tokenizer("no-such-model-xyz")
    with pytest.raises(UsageError, match="not available offline"):
        load_tokenizer("tiktoken:no_such_encoding")


def test_tiktoken_offsets_are_character_offsets_and_snap_inside_characters(cl100k):
    text = "naïve 日本語 🙂👍🏽 e\u0301!"
    offs = cl100k.token_offsets(text)
    assert offs[0].tolist() == [0, 2]  # "na": ASCII tokens map 1:1
    assert offs[-1].tolist() == [len(text) - 1, len(text)]
    assert (offs[:, 0] <= offs[:, 1]).all() and (offs[1:, 0] == offs[:-1, 1]).all()
    assert offs[-1, 1] == len(text)  # byte lengths add up to the whole text
    # a boundary inside a multi-byte character snaps to that character's end
    emoji_tokens = [tuple(o) for o in offs.tolist() if text[o[0]:o[1]] in ("", "🙂")]
    assert ("🙂" in [text[a:b] for a, b in emoji_tokens]) or any(a == b for a, b in emoji_tokens)


def test_loading_a_model_tokenizer_never_imports_torch():
    probe = (
        "import sys, pyarrow as pa\n"
        "from arrowsmith.commands.chunk import chunk_documents, load_tokenizer\n"
        "b = pa.RecordBatch.from_pydict({'id': ['a'], 'text': ['Why is the sky blue? Rayleigh.']})\n"
        "out = list(chunk_documents([b], tokenizer=load_tokenizer('model:all-MiniLM-L6-v2')))\n"
        "print(out[0].num_rows, [m for m in ('torch', 'sentence_transformers', 'transformers') "
        "if m in sys.modules])\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1 []"


# ---------------------------------------------------------------- strategies


def test_sentences_pack_whole_sentences(bert):
    text = "One two three. Four five six. Seven eight nine."
    # each sentence is 4 tokens (3 words + "."): two fit in 8
    assert chunk_texts(text, tokenizer=bert, max_tokens=8) == [
        "One two three. Four five six.", "Seven eight nine."]
    (row,) = chunk_rows([text], tokenizer=bert, max_tokens=8)
    assert row["chunks"] == [{"start": 0, "end": 29, "n_tokens": 8}, {"start": 30, "end": 47, "n_tokens": 4}]


def test_a_sentence_longer_than_the_limit_is_split_by_tokens(bert):
    words = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen".split()
    text = " ".join(words * 2) + ". Short one."
    pieces = chunk_texts(text, tokenizer=bert, max_tokens=8)
    assert pieces[0] == " ".join(words[:8])
    assert pieces[1] == " ".join(words[8:15] + words[:1])
    assert pieces[-1] == "Short one."
    assert [len(bert.token_offsets(p)) for p in pieces] == [8, 8, 8, 7, 3]  # 6 words + "."


def test_tokens_windows_overlap(bert):
    words = "one two three four five six seven eight nine ten eleven twelve".split()
    text = " ".join(words)
    assert chunk_texts(text, strategy="tokens", tokenizer=bert, max_tokens=8, overlap=2) == [
        " ".join(words[:8]), " ".join(words[6:])]
    assert chunk_texts(text, strategy="tokens", tokenizer=bert, max_tokens=8) == [
        " ".join(words[:8]), " ".join(words[8:])]


def test_markdown_keeps_the_heading_path_and_ignores_fenced_hashes(bert):
    text = ("Preamble line.\n\n# Intro\n\nIntro text.\n\n## Setup\n\nInstall it.\n\n"
            "```sh\n# not a heading\n\nmake\n```\n\n# Usage\n\nRun it.\n")
    (row,) = chunk_rows([text], strategy="markdown", tokenizer=bert, max_tokens=64)
    got = [(text[c["start"]:c["end"]], c["heading"]) for c in row["chunks"]]
    assert got == [
        ("Preamble line.", None),
        ("# Intro\n\nIntro text.", "Intro"),
        ("## Setup\n\nInstall it.\n\n```sh\n# not a heading\n\nmake\n```", "Intro > Setup"),
        ("# Usage\n\nRun it.", "Usage"),
    ]


def test_markdown_splits_long_sections_at_paragraphs_first(bert):
    para = "This paragraph has exactly twelve words in it to make counting easy."
    text = "# Title\n\n" + "\n\n".join([para] * 3)
    (row,) = chunk_rows([text], strategy="markdown", tokenizer=bert, max_tokens=40)
    pieces = [text[c["start"]:c["end"]] for c in row["chunks"]]
    assert pieces == ["# Title\n\n" + para + "\n\n" + para, para]
    assert {c["heading"] for c in row["chunks"]} == {"Title"}


def test_overlap_only_applies_to_token_windows(bert):
    with pytest.raises(UsageError, match="--overlap applies to --strategy tokens"):
        list(chunk_documents(docs("x"), tokenizer=bert, overlap=4))
    with pytest.raises(UsageError, match="at least 8"):
        list(chunk_documents(docs("x"), tokenizer=bert, max_tokens=4))
    with pytest.raises(UsageError, match="unknown strategy"):
        list(chunk_documents(docs("x"), tokenizer=bert, strategy="words"))


# ---------------------------------------------------------------- the guarantee, adversarially

ADVERSARIAL = {
    "no_spaces": "abcdefghij" * 3000,
    "long_url": "See https://example.com/" + "path-segment_%C3%A9/" * 400 + "?q=1&r=2 for details. Stop.",
    "cjk": "日本語のテキストです。これは二番目の文です。中文句子没有空格也能切分吗？" * 150,
    "emoji": "🙂👍🏽👨‍👩‍👧‍👦🇫🇷" * 800 + " done.",
    "combining": ("e\u0301a\u0308o\u0303 " * 50 + "Z\u0351\u0352\u0353\u0354" * 200),
    "one_word_100k": "x" * 100_000,
    "crlf_mixed": "Line one.\r\nLine two!\r\n\r\nPara two? Yes.\n" * 300,
    "digits": "3141592653589793238462643383279502884197169399375105820974944592" * 400,
    "control_and_zero_width": "a\u200bb\u200cc\x00d\x07e\ufeff " * 500,
}


@pytest.mark.parametrize("tok_name", ["bert", "cl100k"])
@pytest.mark.parametrize("strategy", ["tokens", "sentences", "markdown"])
def test_every_chunk_fits_on_adversarial_text(request, tok_name, strategy):
    tok = request.getfixturevalue(tok_name)
    rows = chunk_rows(list(ADVERSARIAL.values()), strategy=strategy, tokenizer=tok, max_tokens=32)
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(len(ADVERSARIAL))]
    for row in rows:
        check_invariants(row["text"], row["chunks"], tok, 32)


def test_a_100k_character_word_is_one_unknown_token_for_bert_but_many_for_tiktoken(bert, cl100k):
    word = "x" * 100_000
    assert chunk_texts(word, tokenizer=bert) == [word]  # WordPiece: longer than 100 chars -> [UNK]
    pieces = chunk_texts(word, tokenizer=cl100k, max_tokens=256)
    assert "".join(pieces) == word and len(pieces) > 40


def test_a_10_mb_document_is_chunked_whole(cl100k):
    sentence = "The quick brown fox jumps over the lazy dog near 42 galaxies. "
    text = sentence * (10_000_000 // len(sentence))
    (batch,) = list(chunk_documents(docs(text), strategy="sentences", tokenizer=cl100k, max_tokens=256))
    spans = batch.column("chunks")[0].values
    s = spans.field("start").to_numpy()
    e = spans.field("end").to_numpy()
    n = spans.field("n_tokens").to_numpy()
    per_chunk = 256 // cl100k.count_tokens([sentence.strip()])[0]  # 18 sentences of 14 tokens
    sentences = len(text) // len(sentence)
    assert len(s) == -(-sentences // per_chunk)
    assert (n <= 256).all() and (s[1:] > e[:-1]).all() and e[-1] == len(text) - 1
    assert text[s[0]:e[0]] == (sentence * per_chunk).strip()


def test_a_2_mb_document_with_the_model_tokenizer(bert):
    sentence = "Rayleigh scattering makes the daytime sky look blue to human eyes. "
    text = sentence * (2_000_000 // len(sentence))
    (batch,) = list(chunk_documents(docs(text), tokenizer=bert))
    n = batch.column("chunks")[0].values.field("n_tokens").to_numpy()
    assert n.max() <= 254 and n.sum() == 13 * (len(text) // len(sentence))  # 13 tokens a sentence


# any code point but lone surrogates (not valid UTF-8, so never in an Arrow string), mixed with the
# characters the strategies cut at, so sentences, paragraphs, headings and fences all occur
TEXT = st.lists(st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
                          st.sampled_from([" ", "\n", "\n\n", ". ", "# ", "\n## ", "```", "。", "\r\n"])),
                min_size=1, max_size=60).map("".join).filter(bool)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT,
       strategy=st.sampled_from(["tokens", "sentences", "markdown"]),
       max_tokens=st.integers(8, 24), which=st.sampled_from(["bert", "cl100k"]))
def test_property_spans_are_exact_and_within_the_limit(text, strategy, max_tokens, which):
    tok = load_tokenizer(None if which == "bert" else "cl100k_base")
    stats = ChunkStats()
    rows = [r for b in chunk_documents(docs(text), strategy=strategy, tokenizer=tok, max_tokens=max_tokens,
                                       stats=stats) for r in b.to_pylist()]
    if not text.strip():
        assert rows == [] and stats.skipped_empty == 1
        return
    for row in rows:
        assert row["text"] == text
        check_invariants(text, row["chunks"], tok, max_tokens, contiguous=True)


# ---------------------------------------------------------------- exact counts without re-tokenizing
# (issue 12) for a tokenizer that splits at whitespace, chunk derives every chunk's own count from
# per-word tokens: these tests hold that derivation to the tokenizer itself


# pieces where tokenizers differ at a cut or across whitespace: Unicode spaces str.split() knows but
# the tokenizer may not, control and zero-width characters, combining marks, final sigma, ligatures,
# CJK, emoji/ZWJ, special tokens and "##" written in the text, words over WordPiece's 100 characters
TRICKY = ["\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u3000", "\u2028", "\u200b", "\x00", "\ufffd", "\x07",
          "e\u0301", "\u0301", "ΣΑΣ ", "ς", "İ", "ß", "ﬁ", "日本語", "中文。", "한국어", "🙂",
          "👨\u200d👩\u200d👧",
          "[MASK]", "[CLS]", "[UNK]", "##", "##ing", "http://x.org/a?b=1", "don't", "1,234.5", "x" * 120,
          "  ", "\t", "\n", "\r\n", "\r", " . ", "...", "?!"]
WORDY = st.lists(st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
                           st.text("abc XYZ.,'-", max_size=10), st.sampled_from(TRICKY)),
                 min_size=1, max_size=40).map("".join)


def test_other_spaces_are_what_str_split_adds_to_the_separators():
    from arrowsmith.commands.chunk.counting import OTHER_SPACES, WORD, split_words

    spaces = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert set(OTHER_SPACES) == spaces - {" ", "\t", "\n", "\r"}
    text = "a\x0bb c\u3000d\te\n\nf"
    assert split_words(text) == WORD.findall(text) == ["a\x0bb", "c\u3000d", "e", "f"]


def test_only_the_model_tokenizer_counts_from_words(bert, cl100k):
    from arrowsmith.commands.chunk.counting import RecountCounter, WordCounter, make_counter

    assert bert.splits_at_whitespace and not cl100k.splits_at_whitespace
    assert isinstance(make_counter(bert), WordCounter)
    assert isinstance(make_counter(bert, fast=False), RecountCounter)
    assert isinstance(make_counter(cl100k), RecountCounter)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(WORDY, min_size=1, max_size=4), data=st.data())
def test_property_word_counts_are_the_tokenizers_own(texts, data):
    """Offsets equal the whole text's encoding; every span's count equals its text encoded alone."""
    from arrowsmith.commands.chunk.counting import WordCounter

    bert = load_tokenizer(None)
    counter = WordCounter(bert, cache_words=data.draw(st.sampled_from([4, 1 << 17])))
    for _ in range(2):  # the second round meets a warm (or, with 4 words, a reset) cache
        docs = counter.documents(texts)
        for text, doc in zip(texts, docs, strict=True):
            assert doc.offsets.tolist() == bert.token_offsets(text).tolist()
        spans = []
        for d, text in enumerate(texts):
            for _ in range(6):
                s = data.draw(st.integers(0, len(text)))
                spans.append((d, s, data.draw(st.integers(s, len(text)))))
        assert counter.span_counts(docs, spans) == bert.count_tokens([texts[d][s:e] for d, s, e in spans])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(TEXT, WORDY), strategy=st.sampled_from(["tokens", "sentences", "markdown"]),
       max_tokens=st.integers(8, 40), overlap=st.integers(0, 7))
def test_property_counting_from_words_gives_the_chunks_of_recounting(text, strategy, max_tokens, overlap):
    """Same spans and n_tokens as re-tokenizing every chunk (the implementation before issue 12)."""
    from arrowsmith.commands.chunk.core import Chunker

    bert = load_tokenizer(None)
    overlap = overlap if strategy == "tokens" else 0
    fast = Chunker(strategy, bert, max_tokens, overlap).chunk_texts([text])
    assert fast == Chunker(strategy, bert, max_tokens, overlap, fast=False).chunk_texts([text])
    chunks = [{"start": s, "end": e, "n_tokens": n} for s, e, n, _ in fast[0]]
    if overlap:  # (an over-long overlapping window is split in place: starts need not be sorted)
        pieces = [text[c["start"]:c["end"]] for c in chunks]
        assert [c["n_tokens"] for c in chunks] == bert.count_tokens(pieces)
        assert all(c["n_tokens"] <= max_tokens for c in chunks)
    else:
        check_invariants(text, chunks, bert, max_tokens)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(TEXT, WORDY), strategy=st.sampled_from(["tokens", "sentences"]),
       which=st.sampled_from(["bert", "cl100k"]), slack=st.integers(-2, 3), overlap=st.integers(0, 7))
def test_property_a_document_that_fits_is_planned_as_in_full(text, strategy, which, slack, overlap):
    """plan_chunks' shortcut (a document within the limit is one chunk) plans what planning does."""
    from arrowsmith.commands.chunk.strategies import plan_chunks, plan_in_full

    tok = load_tokenizer(None if which == "bert" else "cl100k_base")
    offsets = tok.token_offsets(text)
    limit = max(len(offsets) + slack, 8)
    overlap = min(overlap, limit - 1) if strategy == "tokens" else 0
    planned = plan_chunks(strategy, text, offsets, limit, overlap)
    assert planned == plan_in_full(strategy, text, offsets, limit, overlap)
    if len(offsets) <= limit:
        assert [text[s:e] for s, e, _ in planned] == ([text.strip()] if text.strip() else [])


def test_long_documents_are_listed_in_segments_with_the_same_tokens(bert, monkeypatch):
    from arrowsmith.commands.chunk import counting

    text = " ".join(f"w{i % 97}ord{'é' * (i % 3)}." for i in range(3000))
    monkeypatch.setattr(counting, "SEGMENT_CHARS", 500)
    (doc,) = counting.WordCounter(bert).documents([text])
    assert doc.offsets.tolist() == bert.token_offsets(text).tolist()


def test_a_tokenizer_that_wrongly_claims_to_split_at_whitespace_falls_back_to_recounting(caplog):
    import numpy as np

    from arrowsmith.commands.chunk.tokenizers import ChunkTokenizer

    class Trigrams(ChunkTokenizer):  # tokens of three characters, spaces included: not separable
        name = "trigrams"
        splits_at_whitespace = True

        def token_offsets(self, text):
            spans = [(i, min(i + 3, len(text))) for i in range(0, len(text), 3)]
            return np.array(spans, np.int64).reshape(-1, 2)

    text = "ab cd ef gh ij kl mn op qr st uv wx yz " * 20
    rows = chunk_rows([text], strategy="sentences", tokenizer=Trigrams(), max_tokens=10)
    assert "counting every chunk on its own" in caplog.text
    check_invariants(text, rows[0]["chunks"], Trigrams(), 10)


# ---------------------------------------------------------------- output schema


def test_chunked_documents_schema_hash_and_metadata(bert):
    batch = pa.RecordBatch.from_pydict({"id": [7, 8], "text": ["Blue sky.", "Red sunset."],
                                        "lang": ["en", "en"]})
    (out,) = list(chunk_documents([batch], tokenizer=bert, max_tokens=100))
    assert out.schema.names == ["id", "text", "doc_hash", "chunks", "lang"]
    assert out.column("id").to_pylist() == ["7", "8"]  # ids cast to text
    assert out.column("doc_hash").to_pylist()[0] == hashlib.sha256(b"Blue sky.").hexdigest()
    meta = out.schema.metadata
    assert meta[b"arrowsmith.stage"] == b"chunk"
    assert json.loads(meta[b"arrowsmith.chunker"]) == {
        "strategy": "sentences", "tokenizer": "model:all-MiniLM-L6-v2", "max_tokens": 100, "overlap": 0,
        "version": "1"}
    assert out.schema.field("chunks").type == pa.list_(pa.struct(
        [("start", pa.int32()), ("end", pa.int32()), ("n_tokens", pa.int32())]))


def test_explode_gives_one_row_per_chunk(bert):
    text = "# T\n\nOne two three. Four five six. Seven eight nine."
    batch = pa.RecordBatch.from_pydict({"id": ["a"], "text": [text], "src": ["x"]})
    (out,) = list(chunk_documents([batch], strategy="markdown", tokenizer=bert, max_tokens=10,
                                  explode=True))
    assert out.to_pylist() == [
        {"id": "a#0", "doc_id": "a", "chunk_index": 0, "text": "# T\n\nOne two three. Four five six.",
         "start": 0, "end": 34, "n_tokens": 10, "heading": "T", "src": "x"},
        {"id": "a#1", "doc_id": "a", "chunk_index": 1, "text": "Seven eight nine.", "start": 35, "end": 52,
         "n_tokens": 4, "heading": "T", "src": "x"},
    ]
    assert out.schema.metadata[b"arrowsmith.layout"] == b"chunks"


def test_rows_are_validated_with_row_numbers(bert):
    batch = pa.RecordBatch.from_pydict({"id": ["a", "b", None, "a", "e"],
                                        "text": ["fine", None, "x", "dup", "  \n\t "]})
    with pytest.raises(DataError, match=r"row 2 \(id 'b'\): the text \('text'\) is null"):
        list(chunk_documents([batch], tokenizer=bert))
    stats = ChunkStats()
    (out,) = list(chunk_documents([batch], tokenizer=bert, on_error="skip", stats=stats))
    assert out.column("id").to_pylist() == ["a"]
    assert (stats.chunked, stats.skipped_invalid, stats.skipped_empty, stats.read) == (1, 3, 1, 5)
    with pytest.raises(DataError, match="row 2: duplicate id 'a'"):
        list(chunk_documents([batch.slice(0, 1), batch.slice(3, 1)], tokenizer=bert))


def test_columns_are_named_by_options(bert):
    batch = pa.RecordBatch.from_pydict({"key": ["k1"], "body": ["Some body."], "chunks": [1]})
    with pytest.raises(DataError, match=r"no 'id' column(.|\n)*--id-col"):
        list(chunk_documents([batch], tokenizer=bert))
    (out,) = list(chunk_documents([batch], tokenizer=bert, id_col="key", text_col="body"))
    # a previous run's chunks are recomputed, not carried as metadata
    assert out.schema.names == ["id", "text", "doc_hash", "chunks"]
    assert out.column("id").to_pylist() == ["k1"]


def test_no_documents_still_yields_the_schema(bert):
    batch = pa.RecordBatch.from_pydict({"id": ["a"], "text": ["   "]})
    (out,) = list(chunk_documents([batch], tokenizer=bert))
    assert out.num_rows == 0 and out.schema.names == ["id", "text", "doc_hash", "chunks"]


def test_output_batches_are_bounded(bert):
    texts = [f"Document number {i}." for i in range(50)]
    out = list(chunk_documents(docs(*texts), tokenizer=bert, batch_docs=16))
    assert [b.num_rows for b in out] == [16, 16, 16, 2]


def test_each_batch_is_yielded_before_the_next_is_read(bert):
    """Streaming (issue 12's pipeline target): embed gets chunks while chunk still reads."""
    pulled = []

    def source():
        for i in range(3):
            pulled.append(i)
            yield docs(f"Batch {i} has one document.", ids=[f"b{i}"])[0]

    out = chunk_documents(source(), tokenizer=bert)
    assert next(out).column("id").to_pylist() == ["b0"] and pulled == [0]
    assert [b.column("id").to_pylist() for b in out] == [["b1"], ["b2"]] and pulled == [0, 1, 2]


# ---------------------------------------------------------------- sources


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def test_read_sources_walks_directories_with_globs(tmp_path):
    write(tmp_path / "a.md", "# A\n\nalpha")
    write(tmp_path / "sub" / "b.txt", "beta")
    write(tmp_path / "sub" / "deeper" / "c.rst", "gamma")
    write(tmp_path / "skip.py", "print('no')")
    write(tmp_path / ".git" / "d.txt", "hidden")
    write(tmp_path / "empty.txt", " \n\t")
    stats = ChunkStats()
    (batch,) = list(read_sources([str(tmp_path)], stats=stats))
    assert batch.column("id").to_pylist() == ["a.md", "sub/b.txt", "sub/deeper/c.rst"]
    assert batch.column("text").to_pylist() == ["# A\n\nalpha", "beta", "gamma"]
    assert batch.column("bytes").to_pylist() == [10, 4, 5]
    assert batch.column("path").to_pylist()[1] == str(tmp_path / "sub" / "b.txt")
    assert batch.schema.field("mtime").type == pa.timestamp("ms", tz="UTC")
    assert stats.skipped_empty == 1
    (only_txt,) = list(read_sources([str(tmp_path)], glob="*.txt"))
    assert only_txt.column("id").to_pylist() == ["sub/b.txt"]


def test_a_single_file_keeps_its_name_as_given(tmp_path, monkeypatch):
    write(tmp_path / "notes" / "n.txt", "note")
    monkeypatch.chdir(tmp_path)
    (batch,) = list(read_sources(["notes/n.txt"]))
    assert batch.column("id").to_pylist() == ["notes/n.txt"]
    with pytest.raises(UsageError, match="missing.txt: no such file"):
        list(read_sources(["missing.txt"]))


def test_bom_is_dropped_and_crlf_kept(tmp_path):
    write(tmp_path / "w.txt", b"\xef\xbb\xbfFirst line.\r\nSecond line.\r\n")
    (batch,) = list(read_sources([str(tmp_path)]))
    assert batch.column("text").to_pylist() == ["First line.\r\nSecond line.\r\n"]


def test_invalid_utf8_fails_naming_the_file_or_is_skipped(tmp_path):
    write(tmp_path / "good.txt", "fine")
    bad = write(tmp_path / "latin1.txt", "ok\ncaf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{bad}: line 2: not valid UTF-8 \(byte 6"):
        list(read_sources([str(tmp_path)]))
    stats = ChunkStats()
    (batch,) = list(read_sources([str(tmp_path)], on_error="skip", stats=stats))
    assert batch.column("id").to_pylist() == ["good.txt"]
    assert stats.skipped_encoding == 1


def test_unreadable_files(tmp_path, monkeypatch):
    write(tmp_path / "locked.txt", "secret")
    write(tmp_path / "open.txt", "public")

    real_open = os.open

    def deny(path, *args, **kw):
        if str(path).endswith("locked.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kw)

    # root reads every file, so permissions are simulated where the module opens files
    monkeypatch.setattr(sources_mod.os, "open", deny)
    with pytest.raises(StorageError, match="locked.txt: cannot read: Permission denied"):
        list(read_sources([str(tmp_path)]))
    stats = ChunkStats()
    (batch,) = list(read_sources([str(tmp_path)], on_error="skip", stats=stats))
    assert batch.column("id").to_pylist() == ["open.txt"] and stats.skipped_unreadable == 1


def test_html_keeps_visible_text_only():
    html = ("<html><head><title>T</title><style>p{}</style></head><body><h1>Head</h1>"
            "<p>One &amp; two</p><script>var x = 1;</script><p>Three\n   four</p></body></html>")
    assert html_to_text(html) == "Head\n\nOne & two\n\nThree four"
    assert html_to_text("<head><title>x</title><body><p>unclosed head</p>") == "unclosed head"


def test_sources_stream_in_bounded_batches(tmp_path, monkeypatch):
    for i in range(25):
        write(tmp_path / f"f{i:02d}.txt", f"file {i}")
    reads = []
    real = sources_mod._read_one
    monkeypatch.setattr(sources_mod, "_read_one", lambda *a: reads.append(a[0]) or real(*a))
    gen = read_sources([str(tmp_path)], batch_docs=10)
    first = next(gen)
    assert first.num_rows == 10 and len(reads) == 10  # the rest is not read yet
    assert [b.num_rows for b in gen] == [10, 5]
