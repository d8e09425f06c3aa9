"""Token offsets of whole documents, and exact token counts of any span of them.

Chunking needs two things from a tokenizer (see :mod:`.core`): every token's character span in a
document, to plan the cuts, and the count of each chunk's text *tokenized on its own*, to
guarantee ``max_tokens``. Tokenizing every chunk again doubles the work, so for tokenizers where
it is provably unnecessary :class:`WordCounter` derives both from one pass over the words.

**Separable tokenizers.** A tokenizer that declares ``splits_at_whitespace`` tokenizes
``x + " " + y`` (or ``\\t``, ``\\n``, ``\\r``) as the tokens of ``x`` followed by those of ``y``, for
any ``x`` and ``y``. The sentence-transformers plugin declares it for a Hugging Face pipeline whose
normalizer maps character by character (``BertNormalizer``, ``Lowercase``, ``StripAccents``,
``NFD``/``NFKD``), whose pre-tokenizer splits at and drops whitespace (``BertPreTokenizer``,
``Whitespace``, ``WhitespaceSplit``, with ``Punctuation``/``Digits``), whose model runs on each
piece alone, and whose added tokens neither hold nor strip whitespace: all-MiniLM-L6-v2 and the
other BERT-likes. With the *words* of a text (maximal runs of other characters):

- the text's tokens are the tokens of each word tokenized alone, shifted to where it sits. Texts
  repeat their words (Zipf), so each distinct word is tokenized once and its tokens are cached;
- a span's own tokens are those of the whole words inside it plus, where a cut falls inside a
  word, the tokens of that word's part within the span, tokenized alone (a cached "word" too).
  Counts are therefore exact for every span, wherever it is cut; nothing is re-tokenized.

``tests/test_chunk.py`` checks both claims against the tokenizer itself (property-based, over
random Unicode): the offsets equal the document's own encoding, and every span's count equals
the count of its text encoded alone. Any other tokenizer (tiktoken's BPE merges across leading
spaces, byte-level and Metaspace pipelines) uses :class:`RecountCounter`: offsets from one
encoding of each document, counts from encoding every chunk again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import pairwise, repeat

import numpy as np

from .tokenizers import PIECE_CHARS, ChunkTokenizer

WORD = re.compile(r"[^ \t\n\r]+")  # a word: a maximal run of characters other than these separators
# what str.split() splits at besides the separators (tests check the list): without them in a
# text, its fast split() lists the same words as WORD
OTHER_SPACES = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u1680",
                *map(chr, range(0x2000, 0x200B)), "\u2028", "\u2029", "\u202f", "\u205f", "\u3000")
CACHE_WORDS = 1 << 17  # distinct words kept between batches (bounded memory); then it starts over
SEGMENT_CHARS = 1 << 20  # a long document's words are listed this many characters at a time


class NotSeparable(ValueError):
    """The tokenizer put a token across a separator: it does not split at whitespace after all."""


class DocWords:
    """One document's words (character spans), their tokens, and exact counts of its spans."""

    __slots__ = ("text", "starts", "ends", "ids", "ntok", "cum", "offsets")

    def __init__(self, text: str, starts: np.ndarray, ends: np.ndarray, ids: np.ndarray):
        self.text, self.starts, self.ends, self.ids = text, starts, ends, ids
        self.ntok = self.cum = self.offsets = None


class WordCounter:
    """Offsets and exact span counts for a separable Hugging Face tokenizer (see the module doc).

    Not thread-safe: one per chunking run (``Chunker`` makes its own).
    """

    exact = True

    def __init__(self, tokenizer: ChunkTokenizer, cache_words: int = CACHE_WORDS):
        self._tok = tokenizer
        self._cache_words = cache_words
        self._reset()

    def _reset(self) -> None:
        self._vocab: dict[str, int] = {}
        self._new: list[str] = []
        self._ntok = np.zeros(1024, np.int64)  # tokens of word id i
        self._ptr = np.zeros(1025, np.int64)  # its tokens' relative offsets: _rel[_ptr[i]:_ptr[i + 1]]
        self._rel = np.zeros((4096, 2), np.int64)
        self._known = 0  # word ids below this have their tokens

    # ------------------------------------------------------------ words -> ids -> tokens

    def _lookup(self, words: Sequence[str]) -> np.ndarray:
        vocab, new = self._vocab, self._new
        ids = np.fromiter(map(vocab.get, words, repeat(-1, len(words))), np.int64, len(words))
        missing = np.flatnonzero(ids < 0)
        for i in missing.tolist():
            w = words[i]
            wid = vocab.get(w)
            if wid is None:
                wid = vocab[w] = len(vocab)
                new.append(w)
            ids[i] = wid
        return ids

    def _tokenize_new(self) -> None:
        """Tokenize the words met since the last call: joined by spaces into pieces that the
        tokenizer batches in parallel (a word too long for a piece is tokenized alone)."""
        new, self._new = self._new, []
        if not new:
            return
        lens = np.fromiter(map(len, new), np.int64, len(new))
        groups, a, size = [], 0, 0
        for i, n in enumerate(lens.tolist()):
            if i > a and size + n > PIECE_CHARS:
                groups.append((a, i))
                a, size = i, 0
            size += n + 1
        groups.append((a, len(new)))
        texts = [" ".join(new[a:b]) for a, b in groups]
        short = [i for i, t in enumerate(texts) if len(t) <= PIECE_CHARS]  # never cut again
        offsets = dict(zip(short, self._tok.batch_offsets([texts[i] for i in short]), strict=True))
        counts, rels = [], []
        for i, (a, b) in enumerate(groups):
            offs = offsets[i] if i in offsets else self._tok.token_offsets(texts[i])
            offs = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
            wstart = np.zeros(b - a, np.int64)
            np.cumsum(lens[a:b - 1] + 1, out=wstart[1:])
            owner = np.searchsorted(wstart, offs[:, 0], side="right") - 1
            rel = offs - wstart[owner][:, None]
            if len(offs) and ((owner < 0).any() or (rel[:, 1] > lens[a:b][owner]).any()):
                raise NotSeparable(f"{self._tok.name}: a token crosses a space")
            counts.append(np.bincount(owner, minlength=b - a))
            rels.append(rel)
        self._store(np.concatenate(counts), np.concatenate(rels))

    def _store(self, counts: np.ndarray, rel: np.ndarray) -> None:
        lo, hi = self._known, self._known + len(counts)
        if hi > len(self._ntok):
            self._ntok = np.resize(self._ntok, max(hi, 2 * len(self._ntok)))
            self._ptr = np.resize(self._ptr, len(self._ntok) + 1)
        self._ntok[lo:hi] = counts
        base = self._ptr[lo]
        np.cumsum(counts, out=self._ptr[lo + 1:hi + 1])
        self._ptr[lo + 1:hi + 1] += base
        end = base + len(rel)
        if end > len(self._rel):
            grown = np.zeros((max(end, 2 * len(self._rel)), 2), np.int64)
            grown[:base] = self._rel[:base]
            self._rel = grown
        self._rel[base:end] = rel
        self._known = hi

    # ------------------------------------------------------------ documents

    def documents(self, texts: Sequence[str]) -> list[DocWords]:
        """Each text's token offsets (``.offsets``), equal to the text's own encoding."""
        if len(self._vocab) > self._cache_words:
            self._reset()  # between batches only: ids handed out in a batch stay valid in it
        docs = [self._words(t) for t in texts]
        self._tokenize_new()
        for d in docs:
            self._expand(d)
        return docs

    def _words(self, text: str) -> DocWords:
        starts, ends = word_spans(text)
        if len(text) <= SEGMENT_CHARS:
            ids = self._lookup(split_words(text))
        else:  # list a long document's words a segment at a time (bounded memory), cut at word starts
            cuts = starts[::max(1, int(len(starts) * SEGMENT_CHARS / len(text)))].tolist()[1:]
            bounds = [0, *cuts, len(text)]
            ids = np.concatenate([self._lookup(split_words(text[a:b])) for a, b in pairwise(bounds)])
        if len(ids) != len(starts):  # cannot happen: both list the runs of non-separators
            raise AssertionError("word split mismatch")
        return DocWords(text, starts, ends, ids)

    def _expand(self, d: DocWords) -> None:
        n = self._ntok[d.ids]
        cum = np.zeros(len(n) + 1, np.int64)
        np.cumsum(n, out=cum[1:])
        owner = np.repeat(np.arange(len(n)), n)
        idx = np.arange(int(cum[-1])) + np.repeat(self._ptr[d.ids] - cum[:-1], n)
        offsets = self._rel[idx]
        offsets += d.starts[owner][:, None]
        d.ntok, d.cum, d.offsets = n, cum, offsets

    # ------------------------------------------------------------ exact span counts

    def span_counts(self, docs: Sequence[DocWords], spans: Sequence[tuple[int, int, int]]) -> list[int]:
        """Tokens of ``docs[d].text[s:e]`` tokenized on its own, for each ``(d, s, e)``."""
        if not spans:
            return []
        arr = np.asarray(spans, dtype=np.int64).reshape(-1, 3)
        out = np.zeros(len(arr), np.int64)
        parts: list[str] = []  # pieces of words cut by a span, counted on their own
        sign: list[tuple[int, int]] = []  # (row in out, index in parts)
        order = np.argsort(arr[:, 0], kind="stable")
        bounds = np.searchsorted(arr[order, 0], np.arange(len(docs) + 1))
        for d, doc in enumerate(docs):
            rows = order[bounds[d]:bounds[d + 1]]
            if not len(rows) or not len(doc.starts):
                continue  # (no word: every count is 0)
            s, e = arr[rows, 1], arr[rows, 2]
            w0 = np.searchsorted(doc.ends, s, side="right")  # first word ending after s
            w1 = np.searchsorted(doc.starts, e, side="left")  # words starting before e: [.., w1)
            some = w1 > w0
            out[rows] = np.where(some, doc.cum[w1] - doc.cum[np.minimum(w0, w1)], 0)
            last = np.maximum(w1 - 1, 0)
            head = some & (doc.starts[np.minimum(w0, len(doc.starts) - 1)] < s)
            tail = some & (doc.ends[last] > e)
            for r, a, b, i, j, h, t in zip(rows.tolist(), s.tolist(), e.tolist(), w0.tolist(),
                                           last.tolist(), head.tolist(), tail.tolist(), strict=True):
                if not (h or t):
                    continue
                if h and t and i == j:  # inside one word
                    out[r] -= int(doc.ntok[i])
                    sign.append((r, len(parts)))
                    parts.append(doc.text[a:b])
                    continue
                if h:
                    out[r] -= int(doc.ntok[i])
                    sign.append((r, len(parts)))
                    parts.append(doc.text[a:int(doc.ends[i])])
                if t:
                    out[r] -= int(doc.ntok[j])
                    sign.append((r, len(parts)))
                    parts.append(doc.text[int(doc.starts[j]):b])
        if parts:
            ids = self._lookup(parts)
            self._tokenize_new()
            n = self._ntok[ids]
            for r, k in sign:
                out[r] += int(n[k])
        return out.tolist()


class RecountCounter:
    """Any tokenizer: offsets from one encoding per document, counts from encoding each span again."""

    exact = False

    def __init__(self, tokenizer: ChunkTokenizer):
        self._tok = tokenizer

    def documents(self, texts: Sequence[str]) -> list[_Offsets]:
        return [_Offsets(t, o) for t, o in zip(texts, self._tok.batch_offsets(texts), strict=True)]

    def span_counts(self, docs: Sequence[_Offsets], spans: Sequence[tuple[int, int, int]]) -> list[int]:
        return self._tok.count_tokens([docs[d].text[s:e] for d, s, e in spans])


class _Offsets:
    __slots__ = ("text", "offsets")

    def __init__(self, text: str, offsets: np.ndarray):
        self.text, self.offsets = text, offsets


def split_words(text: str) -> list[str]:
    """The words of ``text`` (what WORD finds), fast."""
    return WORD.findall(text) if any(c in text for c in OTHER_SPACES) else text.split()


def word_spans(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (character offsets) of each maximal run of non-separator characters."""
    if text.isascii():
        cp = np.frombuffer(text.encode("ascii"), np.uint8)
    else:
        cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
    word = (cp != 32) & (cp != 10) & (cp != 9) & (cp != 13)
    edges = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def make_counter(tokenizer: ChunkTokenizer, *, fast: bool = True) -> WordCounter | RecountCounter:
    """The fastest exact way to count for ``tokenizer``; ``fast=False`` always re-counts (tests)."""
    if fast and tokenizer.splits_at_whitespace:
        return WordCounter(tokenizer)
    return RecountCounter(tokenizer)
