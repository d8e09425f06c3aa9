"""What an embed run counts: documents seen, skipped and embedded, chunks, tokens, time."""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN_WARN_SHARE = 0.01  # of embedded tokens being [UNK], above which embed warns


@dataclass
class EmbedStats:
    documents_seen: int = 0
    documents_skipped: int = 0
    documents_embedded: int = 0
    documents_empty: int = 0  # text rows that are empty or whitespace: skipped, never embedded
    chunks: int = 0
    tokens: int = 0
    unknown_tokens: int = 0  # of which the model's tokenizer could not represent ([UNK])
    seconds: float = 0.0  # wall time of the stage, model loading included
    load_seconds: float = 0.0  # of which loading the weights

    @property
    def tokens_per_second(self) -> float:
        busy = self.seconds - self.load_seconds
        return self.tokens / busy if busy > 0 else 0.0

    def summary(self, pruned: int | None = None) -> str:
        docs = (f"{self.documents_seen} documents: {self.documents_skipped} unchanged, "
                f"{self.documents_embedded} embedded" + (f", {pruned} pruned" if pruned is not None else "")
                + (f", {self.documents_empty} empty skipped" if self.documents_empty else ""))
        load = f", model load {self.load_seconds:.1f}s" if self.load_seconds >= 0.05 else ""
        return (f"embed: {docs}; {self.chunks} chunks, {self.tokens} tokens in {self.seconds:.1f}s "
                f"({self.tokens_per_second:,.0f} tokens/s{load})")

    def unknown_warning(self, model: str) -> str | None:
        """A warning when ≥ 1% of the tokens embedded were the tokenizer's unknown token: that
        text (a script or symbols outside the model's vocabulary) embeds as noise, and such
        vectors can rank high for any query. None below that."""
        if not self.tokens or self.unknown_tokens < UNKNOWN_WARN_SHARE * self.tokens:
            return None
        share = self.unknown_tokens / self.tokens
        return (f"{self.unknown_tokens:,} of {self.tokens:,} tokens ({share:.1%}) "
                f"are unknown to {model}'s tokenizer ([UNK]): that text embeds as noise; a model whose "
                "vocabulary covers it (e.g. a multilingual one) would fit this corpus better")
