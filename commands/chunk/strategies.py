"""Where to cut one document: spans from its text and its tokens' character offsets.

Every strategy works on the document's token offsets (computed once) to
*estimate* how many tokens a span holds; :mod:`.core` then re-tokenizes every
chunk on its own and splits any that do not fit, because tokenizers count
differently at a cut (WordPiece ``##`` pieces, BPE merges across the cut).

Spans are ``(start, end)`` character offsets, stripped of surrounding
whitespace, never empty.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import pairwise

import numpy as np

STRATEGIES = ("tokens", "sentences", "markdown")

Span = tuple[int, int]

# A sentence ends at . ! ? … (plus closing quotes/brackets) before whitespace, at
# CJK full stops (no space follows them), or at a blank line.
# (the lookahead lets the scan skip to the characters that can start a match: twice as fast)
SENTENCE_END = re.compile(r"(?=[.!?…。！？\n])"
                          r"(?:[.!?…]+[\"'”’»)\]]*(?=\s)|[。！？]+[」』”’）)]*|\n[ \t]*\r?\n)")
ATX_HEADING = re.compile(r"[ ]{0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*\r?$")
FENCE = re.compile(r"[ ]{0,3}(`{3,}|~{3,})")


def strip_span(text: str, start: int, end: int) -> Span:
    """The span without surrounding whitespace (empty: start == end)."""
    seg = text[start:end]
    left = len(seg) - len(seg.lstrip())
    if left == len(seg):
        return start, start
    return start + left, start + len(seg.rstrip())


# str.isspace() as a table (every such code point is below U+3001): strips spans in bulk
_SPACE = np.array([chr(c).isspace() for c in range(0x3001)])


class DocTokens:
    """A document's text with its token offsets; estimates token counts of spans."""

    def __init__(self, text: str, offsets: np.ndarray):
        self.text = text
        self._solid: np.ndarray | None = None
        offsets = offsets.reshape(-1, 2)
        # offsets are in order; make them monotonic so binary search is well defined
        self.starts = np.maximum.accumulate(offsets[:, 0]) if len(offsets) else offsets[:, 0]
        self.ends = np.maximum.accumulate(offsets[:, 1]) if len(offsets) else offsets[:, 1]

    def first(self, s):
        """Index of the first token that ends after ``s``."""
        return np.searchsorted(self.ends, s, side="right")

    def stop(self, e):
        """One past the last token that starts before ``e``."""
        return np.searchsorted(self.starts, e, side="left")

    @property
    def solid(self) -> np.ndarray:
        """Positions of the characters that ``str.strip()`` keeps."""
        if self._solid is None:
            text = self.text
            if text.isascii():
                space = _SPACE[np.frombuffer(text.encode("ascii"), np.uint8)]
            else:
                cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
                space = np.zeros(len(cp), bool)
                low = cp < len(_SPACE)
                space[low] = _SPACE[cp[low]]
            self._solid = np.flatnonzero(~space)
        return self._solid

    def strip(self, a: np.ndarray, b: np.ndarray) -> list[Span]:
        """``strip_span`` of each ``(a[i], b[i])``, the empty ones left out."""
        solid = self.solid
        i = np.searchsorted(solid, a, side="left")  # first kept character at or after a
        j = np.searchsorted(solid, b, side="left") - 1  # last one before b
        keep = i <= j
        i, j = i[keep], j[keep]
        return list(zip(solid[i].tolist(), (solid[j] + 1).tolist(), strict=True))

    def estimate(self, s, e):
        return np.maximum(self.stop(e) - self.first(s), 0)

    def windows(self, s: int, e: int, max_tokens: int, overlap: int = 0) -> list[Span]:
        """Fixed windows of ``max_tokens`` tokens (``overlap`` shared) over ``[s, e)``.

        Consecutive windows (without overlap) meet at a token start, so no
        character between them is lost.
        """
        i0, i1 = int(self.first(s)), int(self.stop(e))
        if i1 - i0 <= max_tokens:
            return _nonempty([strip_span(self.text, s, e)])
        step = max(max_tokens - overlap, 1)
        heads = np.arange(i0, i1, step)
        heads = heads[: int(np.searchsorted(heads, i1 - max_tokens, side="left")) + 1]
        tails = heads + max_tokens
        starts = np.maximum(self.starts[heads], s)
        starts[0] = s
        ends = np.where(tails >= i1, e, self.starts[np.minimum(tails, i1 - 1)])
        return self.strip(starts, ends)


def _nonempty(spans: list[Span]) -> list[Span]:
    return [sp for sp in spans if sp[1] > sp[0]]


# ---------------------------------------------------------------- segmenters


def sentences(text: str, s: int, e: int) -> list[Span]:
    cuts = [m.end() for m in SENTENCE_END.finditer(text, s, e)]
    bounds = [s, *cuts, e]
    return _nonempty([strip_span(text, a, b) for a, b in pairwise(bounds) if b > a])


def _sentences(doc: DocTokens, s: int, e: int) -> list[Span]:
    """``sentences`` of ``doc.text``, stripped in bulk."""
    bounds = np.array([s, *(m.end() for m in SENTENCE_END.finditer(doc.text, s, e)), e], np.int64)
    return doc.strip(bounds[:-1], bounds[1:])


def _paragraphs(doc: DocTokens, s: int, e: int) -> list[Span]:
    return paragraphs(doc.text, s, e)


def paragraphs(text: str, s: int, e: int) -> list[Span]:
    """Blank-line separated blocks; a fenced code block stays one block."""
    spans: list[Span] = []
    start, pos, fence = s, s, None
    for line in text[s:e].split("\n"):
        end = pos + len(line)
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
        elif m := FENCE.match(line):
            fence = m.group(1)
        elif not line.strip():
            spans.append(strip_span(text, start, end))
            start = end
        pos = end + 1
    spans.append(strip_span(text, start, e))
    return _nonempty(spans)


def markdown_sections(text: str) -> list[tuple[int, int, str | None]]:
    """``(start, end, heading path)`` of each ATX-heading section, fences respected."""
    sections: list[tuple[int, int, str | None]] = []
    stack: list[tuple[int, str]] = []
    start, heading, pos, fence = 0, None, 0, None
    for line in text.split("\n"):
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
        elif m := FENCE.match(line):
            fence = m.group(1)
        elif (m := ATX_HEADING.match(line)) is not None:
            if pos > start:
                sections.append((start, pos, heading))
            level, title = len(m.group(1)), re.sub(r"[ \t]+#+$", "", (m.group(2) or "")).strip()
            stack = [h for h in stack if h[0] < level] + [(level, title)]
            heading, start = " > ".join(t for _, t in stack if t) or None, pos
        pos += len(line) + 1
    sections.append((start, len(text), heading))
    return sections


Segmenter = Callable[[DocTokens, int, int], list[Span]]


# ---------------------------------------------------------------- packing


def split_spans(doc: DocTokens, spans: list[Span], levels: list[Segmenter], max_tokens: int) -> list[Span]:
    """Spans that fit, splitting any that do not with the next level (finally by tokens)."""
    if not spans:
        return []
    arr = np.asarray(spans, dtype=np.int64)
    est = doc.estimate(arr[:, 0], arr[:, 1])
    out: list[Span] = []
    for (s, e), n in zip(spans, est.tolist(), strict=True):
        if n <= max_tokens:
            out.append((s, e))
        elif levels:
            out.extend(split_spans(doc, levels[0](doc, s, e), levels[1:], max_tokens))
        else:
            out.extend(doc.windows(s, e, max_tokens))
    return out


def pack(doc: DocTokens, pieces: list[Span], max_tokens: int) -> list[Span]:
    """Greedily join consecutive pieces while the joined span's estimate fits."""
    if len(pieces) <= 1:
        return pieces
    arr = np.asarray(pieces, dtype=np.int64)
    first = doc.first(arr[:, 0]).tolist()
    stop = doc.stop(arr[:, 1]).tolist()
    out: list[Span] = []
    a = 0
    for b in range(1, len(pieces)):
        if stop[b] - first[a] > max_tokens:
            out.append((pieces[a][0], pieces[b - 1][1]))
            a = b
    out.append((pieces[a][0], pieces[-1][1]))
    return out


def _heading_joins_text(doc: DocTokens, pieces: list[Span], heading: str | None, max_tokens: int
                        ) -> list[Span]:
    """A heading alone makes a useless chunk: when it cannot join the whole next paragraph,
    split that paragraph into sentences so that it joins the first of them."""
    if heading is None or len(pieces) < 2 or "\n" in doc.text[pieces[0][0]:pieces[0][1]]:
        return pieces
    (hs, _), (ns, ne) = pieces[0], pieces[1]
    if int(doc.estimate(hs, ne)) <= max_tokens:
        return pieces
    return [pieces[0], *split_spans(doc, _sentences(doc, ns, ne), [], max_tokens), *pieces[2:]]


def plan_chunks(strategy: str, text: str, offsets: np.ndarray, max_tokens: int,
                overlap: int = 0) -> list[tuple[int, int, str | None]]:
    """Candidate chunks ``(start, end, heading)`` of one document (estimates; core verifies)."""
    if strategy in ("tokens", "sentences") and len(offsets) <= max_tokens:
        # a whole document's estimate is at most its token count, so tokens and sentences would
        # plan it as one chunk: said without the planning (most abstract-length documents fit;
        # tests hold this to plan_in_full)
        s, e = strip_span(text, 0, len(text))
        return [(s, e, None)] if e > s else []
    return plan_in_full(strategy, text, offsets, max_tokens, overlap)


def plan_in_full(strategy: str, text: str, offsets: np.ndarray, max_tokens: int,
                 overlap: int = 0) -> list[tuple[int, int, str | None]]:
    """``plan_chunks`` without its shortcut for a document that fits whole."""
    doc = DocTokens(text, offsets)
    whole = strip_span(text, 0, len(text))
    if strategy == "tokens":
        return [(s, e, None) for s, e in doc.windows(whole[0], whole[1], max_tokens, overlap)]
    if strategy == "sentences":
        pieces = split_spans(doc, _nonempty([whole]), [_sentences], max_tokens)
        return [(s, e, None) for s, e in pack(doc, pieces, max_tokens)]
    if strategy == "markdown":
        out: list[tuple[int, int, str | None]] = []
        for s, e, heading in markdown_sections(text):
            section = _nonempty([strip_span(text, s, e)])
            pieces = split_spans(doc, section, [_paragraphs, _sentences], max_tokens)
            pieces = _heading_joins_text(doc, pieces, heading, max_tokens)
            out.extend((a, b, heading) for a, b in pack(doc, pieces, max_tokens))
        return out
    raise ValueError(f"unknown strategy {strategy!r}")
