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
import pyarrow as pa
import pyarrow.compute as pc

from .tokenizers import PIECE_CHARS, ChunkTokenizer

WORD = re.compile(r"[^ \t\n\r]+")  # a word: a maximal run of characters other than these separators
SEPARATORS = r"[ \t\n\r]+"  # (what WORD's runs are separated by, for Arrow's regex split)
# what str.split() splits at besides the separators (tests check the list): without them in a
# text, its fast split() lists the same words as WORD
OTHER_SPACES = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u1680",
                *map(chr, range(0x2000, 0x200B)), "\u2028", "\u2029", "\u202f", "\u205f", "\u3000")
CACHE_WORDS = 1 << 17  # distinct words kept between batches (bounded memory); then it starts over
SEGMENT_CHARS = 1 << 20  # a long document's words are listed this many characters at a time


class NotSeparable(ValueError):
    """The tokenizer put a token across a separator: it does not split at whitespace after all."""


class Doc:
    """One document of a batch: its text and its tokens' character offsets (what planning needs)."""

    __slots__ = ("text", "offsets", "base", "words")

    def __init__(self, text: str, offsets: np.ndarray, base: int = 0, words: _Words | None = None):
        self.text, self.offsets = text, offsets
        self.base, self.words = base, words  # where it sits in its batch's joined text


class _Words:
    """The words of a batch of documents joined by newlines (a separator, so no word spans two)."""

    __slots__ = ("text", "starts", "ends", "ntok", "cum")

    def __init__(self, text: str, starts: np.ndarray, ends: np.ndarray, ntok: np.ndarray, cum: np.ndarray):
        self.text, self.starts, self.ends, self.ntok, self.cum = text, starts, ends, ntok, cum


class WordCounter:
    """Offsets and exact span counts for a tokenizer that splits at whitespace (see the module doc).

    Not thread-safe: one per chunking run (``Chunker`` makes its own).
    """

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
        """Word ids; words not seen before get new ids (and wait in ``_new`` to be tokenized)."""
        vocab = self._vocab
        ids = np.fromiter(map(vocab.get, words, repeat(-1, len(words))), np.int64, len(words))
        missing = np.flatnonzero(ids < 0)
        if len(missing):  # (C-level loops only: a cold cache misses on every word of a batch)
            unseen = list(map(words.__getitem__, missing.tolist()))
            fresh = list(dict.fromkeys(unseen))
            vocab.update(zip(fresh, range(len(vocab), len(vocab) + len(fresh)), strict=True))
            self._new.extend(fresh)
            ids[missing] = np.fromiter(map(vocab.__getitem__, unseen), np.int64, len(unseen))
        return ids

    def _word_ids(self, text: str) -> np.ndarray:
        """Ids of the words of ``text``, in order. Arrow lists and hashes them (C++), so Python
        meets each distinct word of the text once rather than every word: texts repeat theirs."""
        try:
            one = pa.array([text], pa.string())
        except (UnicodeEncodeError, pa.ArrowInvalid):  # a lone surrogate (no Arrow input has one)
            return self._lookup(split_words(text))
        if "\x0b" in text or "\x0c" in text:
            words = pc.split_pattern_regex(one, SEPARATORS).flatten()
        else:  # ASCII whitespace is the separators plus those two; its split is 5x faster than a regex
            words = pc.ascii_split_whitespace(one).flatten()
        # a separator at either end (or an empty text) leaves an empty string there
        if not text or text[-1] in " \t\n\r":
            words = words.slice(0, len(words) - 1)
        if text and text[0] in " \t\n\r":
            words = words.slice(1)
        encoded = words.dictionary_encode()
        return self._lookup(encoded.dictionary.to_pylist())[encoded.indices.to_numpy()]

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

    def documents(self, texts: Sequence[str]) -> list[Doc]:
        """Each text's token offsets (``.offsets``), equal to the text's own encoding.

        The batch is handled as one text (joined by newlines): per-document numpy calls would
        cost more than the work for small documents.
        """
        if len(self._vocab) > self._cache_words:
            self._reset()  # between batches only: ids handed out in a batch stay valid in it
        joined = "\n".join(texts)
        starts, ends = word_spans(joined)
        if len(joined) <= SEGMENT_CHARS:
            ids = self._word_ids(joined)
        else:  # list the words a segment at a time (bounded memory), cut at word starts
            cuts = starts[::max(1, int(len(starts) * SEGMENT_CHARS / len(joined)))].tolist()[1:]
            bounds = [0, *cuts, len(joined)]
            ids = np.concatenate([self._word_ids(joined[a:b]) for a, b in pairwise(bounds)])
        if len(ids) != len(starts):  # cannot happen: both list the runs of non-separators
            raise AssertionError("word split mismatch")
        self._tokenize_new()
        ntok = self._ntok[ids]
        cum = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(ntok, out=cum[1:])
        offsets = self._rel[np.arange(int(cum[-1])) + np.repeat(self._ptr[ids] - cum[:-1], ntok)]
        offsets += np.repeat(starts, ntok)[:, None]
        words = _Words(joined, starts, ends, ntok, cum)
        bases = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)) + 1, out=bases[1:])
        cuts = cum[np.searchsorted(starts, bases)].tolist()  # each document's first token
        base = bases.tolist()
        return [Doc(t, offsets[cuts[i]:cuts[i + 1]] - base[i], base[i], words) for i, t in enumerate(texts)]

    # ------------------------------------------------------------ exact span counts

    def span_counts(self, docs: Sequence[Doc], spans: Sequence[tuple[int, int, int]]) -> list[int]:
        """Tokens of ``docs[d].text[s:e]`` tokenized on its own, for each ``(d, s, e)``."""
        if not spans:
            return []
        w = docs[0].words
        arr = np.asarray(spans, dtype=np.int64).reshape(-1, 3)
        shift = np.fromiter((doc.base for doc in docs), np.int64, len(docs))[arr[:, 0]]
        s, e = arr[:, 1] + shift, arr[:, 2] + shift  # in the joined text
        if not len(w.starts):
            return [0] * len(arr)
        w0 = np.searchsorted(w.ends, s, side="right")  # first word ending after s
        w1 = np.searchsorted(w.starts, e, side="left")  # words starting before e: [.., w1)
        some = w1 > w0
        out = np.where(some, w.cum[w1] - w.cum[np.minimum(w0, w1)], 0)
        first, last = np.minimum(w0, len(w.starts) - 1), np.maximum(w1 - 1, 0)
        head = some & (w.starts[first] < s)  # the span starts inside a word
        tail = some & (w.ends[last] > e)  # it ends inside one
        cut = np.flatnonzero(head | tail)
        if not len(cut):
            return out.tolist()
        parts: list[str] = []  # the pieces of cut words inside their spans, counted on their own
        rows: list[int] = []
        text = w.text
        columns = (cut, s[cut], e[cut], first[cut], last[cut], head[cut], tail[cut])
        for r, a, b, i, j, h, t in zip(*(c.tolist() for c in columns), strict=True):
            if h and t and i == j:  # inside one word
                out[r] -= w.ntok[i]
                rows.append(r)
                parts.append(text[a:b])
                continue
            if h:
                out[r] -= w.ntok[i]
                rows.append(r)
                parts.append(text[a:int(w.ends[i])])
            if t:
                out[r] -= w.ntok[j]
                rows.append(r)
                parts.append(text[int(w.starts[j]):b])
        ids = self._lookup(parts)
        self._tokenize_new()
        np.add.at(out, np.asarray(rows, np.int64), self._ntok[ids])
        return out.tolist()


class RecountCounter:
    """Any tokenizer: offsets from one encoding per document, counts from encoding each span again."""

    def __init__(self, tokenizer: ChunkTokenizer):
        self._tok = tokenizer

    def documents(self, texts: Sequence[str]) -> list[Doc]:
        return [Doc(t, o) for t, o in zip(texts, self._tok.batch_offsets(texts), strict=True)]

    def span_counts(self, docs: Sequence[Doc], spans: Sequence[tuple[int, int, int]]) -> list[int]:
        return self._tok.count_tokens([docs[d].text[s:e] for d, s, e in spans])


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
    if fast and getattr(tokenizer, "splits_at_whitespace", False):  # (declared on TextTokenizer)
        return WordCounter(tokenizer)
    return RecountCounter(tokenizer)
