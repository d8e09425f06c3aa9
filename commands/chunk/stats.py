"""What a chunking run did, for the summary line on stderr."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ChunkStats:
    chunked: int = 0  # documents that produced chunks
    unchanged: int = 0  # chunk --db: stored with the same doc_key, so not chunked (marked)
    skipped_empty: int = 0  # empty or whitespace-only text
    skipped_encoding: int = 0  # files that are not valid UTF-8 (on_error="skip")
    skipped_unreadable: int = 0  # files that could not be read (on_error="skip")
    skipped_invalid: int = 0  # null id/text or duplicate id (on_error="skip")
    skipped_special: int = 0  # a FIFO, socket or device in a walked directory (never a document)
    chunks: int = 0
    tokens: int = 0
    chars: int = 0  # characters of the chunked documents

    @property
    def skipped(self) -> int:
        return (self.skipped_empty + self.skipped_encoding + self.skipped_unreadable + self.skipped_invalid
                + self.skipped_special)

    @property
    def read(self) -> int:
        return self.chunked + self.unchanged + self.skipped

    def summary(self) -> str:
        reasons = [f"{self.skipped_empty:,} empty", f"{self.skipped_encoding:,} bad encoding"]
        if self.skipped_unreadable:
            reasons.append(f"{self.skipped_unreadable:,} unreadable")
        if self.skipped_invalid:
            reasons.append(f"{self.skipped_invalid:,} invalid")
        if self.skipped_special:
            reasons.append(f"{self.skipped_special:,} not regular files")
        return (f"chunk: {self.read:,} documents read, {self.chunked:,} chunked, "
                + (f"{self.unchanged:,} unchanged (stored: not chunked), " if self.unchanged else "")
                + f"{self.skipped:,} skipped ({', '.join(reasons)}); "
                f"{self.chunks:,} chunks, {self.tokens:,} tokens")
