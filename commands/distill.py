"""``distill``: a static embedding model from a transformer, in about a minute, offline.

Library API (``cli/distill.py`` is a thin shell over it)::

    from arrowsmith.commands.distill import DistillOptions, distill

    result = distill(DistillOptions(output="static-model", corpus="docs.jsonl"))
    print(result.summary())

sentence-transformers' ``StaticEmbedding.from_distillation`` (the ``model2vec`` package) runs the
base model once on every vocabulary entry, reduces the vectors with PCA (``dim``) and weights them
(SIF); the result is one vector per token, averaged at inference: no transformer, no window. The
output is an ordinary sentence-transformers directory (StaticEmbedding → Normalize) with a model
card, written atomically like ``tune``'s (docs/distill.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arrowsmith.commands.errors import DataError, UsageError
from arrowsmith.commands.tune.card import render_card
from arrowsmith.commands.tune.output import AtomicDir
from arrowsmith.commands.tune.pairs import sha256_files

log = logging.getLogger("arrowsmith.distill")

DISTILL_EXTRA = "pip install 'arrowsmith[distill]' (model2vec)"
DEFAULT_DIM = 256  # model2vec's and sentence-transformers' default PCA width
DROP_TOKENS = r"\[unused\d+\]"  # BERT's placeholder tokens: never in any text
SIF_COEFFICIENT = 1e-4  # model2vec's default token weighting (rarer tokens weigh more)


@dataclass
class DistillOptions:
    output: str
    model: str | None = None  # the base model spec (default: all-MiniLM-L6-v2, packaged)
    dim: int | None = DEFAULT_DIM  # PCA width; None: the base model's
    vocab: str | None = None  # one token (word) per line, added to the base vocabulary
    corpus: str | None = None  # a text or table file whose frequent words are added
    text_col: str | None = None  # --corpus table: the text column (default text; plus title if present)
    min_count: int = 2  # --corpus: a word seen at least this often
    max_words: int = 50_000  # --corpus: at most this many words (the most frequent)
    drop_tokens: str | None = DROP_TOKENS  # base vocabulary entries left out (regex); None keeps all
    device: str = "cpu"
    overwrite: bool = False


@dataclass
class DistillResult:
    output: Path
    base: dict[str, Any]
    revision: str
    vocab_size: int
    dim: int
    words_added: int
    seconds: float

    def summary(self) -> str:
        added = f" ({self.words_added:,} words added)" if self.words_added else ""
        return (f"distill: {self.base['name']} → {self.output}: {self.vocab_size:,} tokens{added} x "
                f"{self.dim} dims in {self.seconds:.1f}s (revision {self.revision[:12]})")


def check_distill_available() -> None:
    """model2vec (and what its distiller imports) present and working: else one line, exit 2."""
    import importlib.util

    if importlib.util.find_spec("model2vec") is None:
        raise UsageError("distill needs model2vec, which is not installed", hint=DISTILL_EXTRA)
    try:
        from model2vec.distill import distill  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a missing or broken extra is one line, never a traceback
        raise UsageError(f"distill: model2vec's distiller does not import ({type(e).__name__}: {e})",
                         hint=DISTILL_EXTRA) from None


def distill(options: DistillOptions, *, progress: bool = False,
            info: Callable[[str], None] | None = None) -> DistillResult:
    info = info or (lambda msg: log.info("%s", msg))
    _check_options(options)
    check_distill_available()
    dest = AtomicDir(options.output, overwrite=options.overwrite)
    dest.check()
    base = _load_base(options.model)
    dim = options.dim or base.dim
    if not 0 < dim <= base.dim:
        raise UsageError(f"--dim {dim}: between 1 and the base model's {base.dim}")
    words, source, source_file = _vocabulary(options, base)
    info(f"distill: {base.name}, {_vocab_note(words, source)}, {dim} dims")
    start = time.perf_counter()
    model = _distill(base.path, words, dim, options, progress)
    seconds = time.perf_counter() - start
    vocab_size = int(model[0].num_embeddings)
    record = {"base_model": {"name": base.name, "revision": base.revision, "path": str(base.path)},
              "method": "StaticEmbedding.from_distillation (model2vec)", "model2vec": _version("model2vec"),
              "vocabulary": {"source": source, "words_given": len(words), "size": vocab_size,
                             "sha256": sha256_files([source_file]) if source_file else None},
              "dim": dim, "sif_coefficient": SIF_COEFFICIENT, "drop_tokens": options.drop_tokens,
              "seconds": round(seconds, 1), "device": options.device}
    with dest as tmp:
        model.save_pretrained(str(tmp), create_model_card=False)
        card_info = {"name": Path(options.output).name, "distill": record,
                     "arrowsmith": _version("arrowsmith"), "finished_unix": int(time.time())}
        (tmp / "README.md").write_text(distill_card(card_info), encoding="utf-8")
        dest.commit()
    from arrowsmith.plugins.registry import load_model

    revision = load_model(str(options.output)).revision
    return DistillResult(Path(options.output), base.describe(), revision, vocab_size, dim,
                         _words_added(model, base), seconds)


def _check_options(o: DistillOptions) -> None:
    if o.vocab and o.corpus:
        raise UsageError("--vocab and --corpus: give one vocabulary source")
    if not o.corpus and (o.text_col is not None or o.min_count != 2 or o.max_words != 50_000):
        raise UsageError("--text-col, --min-count and --max-words apply to --corpus only")
    if o.min_count < 1 or o.max_words < 1:
        raise UsageError("--min-count and --max-words must be positive")
    for path in (o.vocab, o.corpus):
        if path and not Path(path).is_file():
            raise UsageError(f"{path}: no such file")
    if o.drop_tokens:
        import re

        try:
            re.compile(o.drop_tokens)
        except re.error as e:
            raise UsageError(f"--drop-tokens {o.drop_tokens!r}: {e}") from None


def _load_base(spec: str | None):
    from arrowsmith.commands.tune import load_base

    base = load_base(spec, "cpu")
    if not base.contextual:
        raise UsageError(f"--model {base.name}: already a static model; distill reads a transformer")
    return base


def _distill(path: str, words: list[str], dim: int, options: DistillOptions, progress: bool):
    """The StaticEmbedding → Normalize model, its tokenizer without truncation: it has no window."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

    with _quiet(progress):
        static = StaticEmbedding.from_distillation(
            path, vocabulary=words or None, device=None if options.device == "auto" else options.device,
            pca_dims=dim,
            sif_coefficient=SIF_COEFFICIENT, token_remove_pattern=options.drop_tokens or None,
            quantize_to="float32")
    # model2vec keeps the base tokenizer's 512-token truncation: sentence-transformers would then cut
    # long texts silently where arrowsmith reads them whole
    static.tokenizer.no_truncation()
    return SentenceTransformer(modules=[static, Normalize()], device="cpu")


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """model2vec's progress bar only with --progress; the warnings of a wrapper we call correctly
    (sentence-transformers names arguments this model2vec no longer takes) and of loading, never."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    from model2vec.distill import inference  # its bar: `from tqdm import tqdm`

    names = ("sentence_transformers", "model2vec", "transformers")
    levels = {n: logging.getLogger(n).level for n in names}
    bar = inference.tqdm
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        inference.tqdm = functools.partial(bar, disable=not progress, file=sys.stderr, leave=False)
        yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
        inference.tqdm = bar


# ---------------------------------------------------------------- vocabulary


def _vocabulary(options: DistillOptions, base: Any) -> tuple[list[str], str, str | None]:
    """Words to add to the base vocabulary, where they came from ("base" when none), the file."""
    if options.vocab:
        with open(options.vocab, encoding="utf-8") as f:
            words = list(dict.fromkeys(w.strip() for w in f if w.strip()))
        if not words:
            raise DataError(f"{options.vocab}: no token (one per line)")
        return words, f"vocab {options.vocab}", options.vocab
    if options.corpus:
        counts = count_words(_corpus_texts(options.corpus, options.text_col), base.tokenizer.rust)
        known = base.tokenizer.rust.get_vocab()
        frequent = [(w, c) for w, c in counts.items() if c >= options.min_count and w not in known]
        frequent.sort(key=lambda wc: (-wc[1], wc[0]))
        return [w for w, _ in frequent[:options.max_words]], f"corpus {options.corpus}", options.corpus
    return [], "base", None


def count_words(texts: Iterator[str], tokenizer: Any) -> Counter:
    """Words as the base tokenizer splits them before its subword model (normalised: lowercased
    for an uncased BERT), counted: a word the vocabulary lacks becomes one token of its own."""
    norm, pre = tokenizer.normalizer, tokenizer.pre_tokenizer
    counts: Counter = Counter()
    for text in texts:
        text = norm.normalize_str(text) if norm is not None else text
        pieces = pre.pre_tokenize_str(text) if pre is not None else [(w, None) for w in text.split()]
        counts.update(w for w, _ in pieces)
    return counts


def _corpus_texts(path: str, text_col: str | None) -> Iterator[str]:
    """A table's text column (and title, as BEIR's corpus.jsonl has), or a text file's lines."""
    from arrowsmith.commands.io import is_tabular, read_batches

    if not is_tabular(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            yield from f
        return
    column = text_col or "text"
    for batch in read_batches(path):
        names = batch.schema.names
        if column not in names:
            raise DataError(f"{path}: no column {column!r} (columns: {', '.join(names)})",
                            hint="--text-col NAME")
        titles = batch.column("title").to_pylist() if text_col is None and "title" in names else None
        for i, text in enumerate(batch.column(column).to_pylist()):
            yield f"{titles[i] or ''} {text or ''}" if titles else (text or "")


def _vocab_note(words: list[str], source: str) -> str:
    if not words:
        return "the base vocabulary"
    return f"the base vocabulary + {len(words):,} words from {source}"


def _words_added(model: Any, base: Any) -> int:
    """Entries of the distilled vocabulary that the base vocabulary lacks."""
    known = base.tokenizer.rust.get_vocab(with_added_tokens=True)
    return sum(1 for t in model[0].tokenizer.get_vocab(with_added_tokens=True) if t not in known)


# ---------------------------------------------------------------- card


def distill_card(info: dict[str, Any]) -> str:
    d = info["distill"]
    voc = d["vocabulary"]
    rows = [
        ("base model", f"{d['base_model']['name']} (revision {d['base_model']['revision']})"),
        ("method", f"{d['method']}, model2vec {d['model2vec']}"),
        ("vocabulary", f"{voc['size']:,} tokens ({voc['source']}"
                       + (f", {voc['words_given']:,} words given, sha256 {voc['sha256']})" if voc["sha256"]
                          else ")")),
        ("dim", f"{d['dim']} (PCA of the base model's token vectors)"),
        ("token weighting", f"SIF, coefficient {d['sif_coefficient']:g}"),
        ("tokens left out", f"`{d['drop_tokens']}`" if d["drop_tokens"] else "none"),
        ("time taken", f"{d['seconds']:.1f} s on {d['device']}"),
    ]
    intro = (f"A static embedding model distilled from {d['base_model']['name']} with `arrowsmith distill`: "
             "one vector per token, averaged (no transformer at inference, no window). It is an ordinary "
             "sentence-transformers model directory (`--model DIR` in embed, eval, compress, tune); its "
             "vectors are a new embedding space. Late chunking does not apply: its token vectors do not "
             "depend on their context.")
    return render_card(info, "arrowsmith-distill", intro, rows, [], record="Distillation record")


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
