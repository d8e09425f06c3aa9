"""`arrowsmith distill`: a static embedding model (one vector per token) from a transformer."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import Device, Model, command_option

app = typer.Typer()

EPILOG = (
    "Example: `arrowsmith distill -o static/ --corpus docs.jsonl` then "
    "`arrowsmith chunk docs/ | arrowsmith embed --model static/ --db store/ -t static`\n\n"
    "Runs the base model once per vocabulary entry (sentence-transformers' "
    "StaticEmbedding.from_distillation, model2vec): the result averages token vectors, with no "
    "transformer and no window at inference. "
    "Needs model2vec: pip install 'arrowsmith[distill]'."
)


_opt = command_option


@app.command("distill", rich_help_panel="Build", epilog=EPILOG)
def distill_command(
    output: Annotated[str, _opt("--output", "-o", help="Model directory to write (atomically).")],
    model: Model = None,
    dim: Annotated[int, _opt("--dim", help="Vector width (PCA of the base model's token vectors).")] = 256,
    vocab: Annotated[str | None, _opt("--vocab", help="Words to add to the base vocabulary, one per line.",
                                      show_default=False)] = None,
    corpus: Annotated[str | None, _opt("--corpus", help="Add the corpus's frequent words the vocabulary "
                                       "lacks: a text file, or a table (JSONL/CSV/Parquet/Arrow) with a "
                                       "text column.", show_default=False)] = None,
    text_col: Annotated[str | None, _opt("--text-col", help="--corpus table: text column [default: text, "
                                         "with title when present].", show_default=False)] = None,
    min_count: Annotated[int, _opt("--min-count", help="--corpus: words seen at least this often.")] = 2,
    max_words: Annotated[int, _opt("--max-words", help="--corpus: at most this many words, the most "
                                   "frequent.")] = 50_000,
    drop_tokens: Annotated[str, _opt("--drop-tokens", help="Leave base vocabulary entries matching this "
                                     "regex out ('' keeps all).")] = r"\[unused\d+\]",
    device: Device = "cpu",
    overwrite: Annotated[bool, _opt("--overwrite", help="Replace an existing non-empty -o DIR.")] = False,
) -> None:
    """Distill a static embedding model from a transformer (model2vec): no transformer at inference."""
    from arrowsmith.commands.distill import DistillOptions, check_distill_available, distill

    from .settings import SETTINGS, info

    check_distill_available()
    options = DistillOptions(output=output, model=model, dim=dim, vocab=vocab, corpus=corpus,
                             text_col=text_col, min_count=min_count, max_words=max_words,
                             drop_tokens=drop_tokens or None, device=device, overwrite=overwrite)
    result = distill(options, progress=SETTINGS.show_progress, info=info)
    info(result.summary())
