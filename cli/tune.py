"""`arrowsmith tune`: adapt the embedding model to a domain; prove the gain before and after."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import Device, InputFormat, Model, Table, command_option

app = typer.Typer()

EPILOG = (
    "Example: `arrowsmith tune --data ../shared/data/cranfield --split train -o tuned/ "
    "--eval ../shared/data/cranfield --eval-split test`\n\n"
    "One source of pairs: --pairs FILE (query, positive[, negative] columns), --data DIR (a BEIR split: "
    "each judged-relevant document is a positive), or --unsupervised with --corpus FILE or --db STORE "
    "(a sentence → the rest of its passage, a title or heading → its body). The output is an ordinary "
    "sentence-transformers model directory for --model DIR, written atomically, with a model card."
)


_opt = command_option


def _dims(text: str | None) -> tuple[int, ...]:
    from arrowsmith.commands.errors import UsageError

    if not text:
        return ()
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--matryoshka {text!r}: expected comma-separated dims, e.g. 384,256,128,64"
                         ) from None


@app.command("tune", rich_help_panel="Build", epilog=EPILOG)
def tune_command(
    output: Annotated[str, _opt("--output", "-o", help="Model directory to write (atomically).")],
    pairs: Annotated[str | None, _opt("--pairs", help="Pairs table (JSONL/CSV/TSV/Parquet/Arrow).",
                                      show_default=False)] = None,
    data: Annotated[str | None, _opt("--data", help="BEIR dataset directory to train on.", show_default=False)
                    ] = None,
    split: Annotated[str | None, _opt("--split", help="--data: qrels split [default: train].",
                                      show_default=False)] = None,
    unsupervised: Annotated[bool, _opt("--unsupervised", help="Make pairs from --corpus or --db alone.")
                            ] = False,
    corpus: Annotated[str | None, _opt("--corpus", help="--unsupervised: documents table "
                                       "(id, text[, title]).", show_default=False)] = None,
    db: Annotated[str | None, _opt("--db", help="Store: --unsupervised reads its chunks; --hard-negatives "
                                                "searches it (it must hold the base model's vectors).",
                                   show_default=False)] = None,
    table: Table = "chunks",
    input_format: InputFormat = None,
    query_col: Annotated[str | None, _opt("--query-col", help="--pairs: query column [default: query].",
                                          show_default=False)] = None,
    positive_col: Annotated[str | None, _opt("--positive-col", help="--pairs: positive column "
                                             "[default: positive].", show_default=False)] = None,
    negative_col: Annotated[str | None, _opt("--negative-col", help="--pairs: negative column [default: "
                                             "negative, if present; '' for none].", show_default=False)
                            ] = None,
    query_id_col: Annotated[str | None, _opt("--query-id-col", help="--pairs: query id column, for the "
                                             "overlap check [default: query_id, if present].",
                                             show_default=False)] = None,
    id_col: Annotated[str | None, _opt("--id-col", help="--corpus: id column [default: id, else _id, "
                                       "else the row number].", show_default=False)] = None,
    text_col: Annotated[str | None, _opt("--text-col", help="--corpus: text column [default: text].",
                                         show_default=False)] = None,
    title_col: Annotated[str | None, _opt("--title-col", help="--corpus: title column [default: title, if "
                                          "present; '' for none].", show_default=False)] = None,
    min_grade: Annotated[int | None, _opt("--min-grade", help="--data: documents judged at this grade or "
                                          "above are positives [default: 1, every judged-relevant one].",
                                          show_default=False)] = None,
    guide: Annotated[str | None, _opt("--guide", help="GISTEmbedLoss: mask the negatives this model scores "
                                      "at or above 0.95 x the positive ('base': the base model; or a "
                                      "--model spec).", show_default=False)] = None,
    hard_negatives: Annotated[int, _opt("--hard-negatives", help="Mine N negatives per query with the base "
                                        "model (in --db, or a temporary store).")] = 0,
    max_pairs: Annotated[int | None, _opt("--max-pairs", help="Train on a seeded sample of at most N pairs.",
                                          show_default=False)] = None,
    matryoshka: Annotated[str | None, _opt("--matryoshka", help="Train for these dims too (MatryoshkaLoss), "
                                           "e.g. 384,256,128,64; the full dim is always included.",
                                           show_default=False)] = None,
    multivector: Annotated[bool, _opt("--multivector", help="Train a ColBERT-style model (sentence-"
                                      "transformers MultiVectorEncoder: the base plus a token head, MaxSim "
                                      "loss) for embed --multivector --model DIR.")] = False,
    token_dim: Annotated[int | None, _opt("--token-dim", help="--multivector: the token head's dim "
                                          "[default: 128].", show_default=False)] = None,
    lora: Annotated[int | None, _opt("--lora", help="Train rank-R LoRA adapters (merged into the saved "
                                     "model) instead of all weights; needs peft.", show_default=False)
                    ] = None,
    model: Model = None,
    epochs: Annotated[float | None, _opt("--epochs", help="Passes over the pairs [default: 3; 1 for a static "
                                         "model].", show_default=False)] = None,
    batch_size: Annotated[int, _opt("--batch-size", help="Pairs per step (the in-batch negatives).")] = 32,
    lr: Annotated[float | None, _opt("--lr", help="Peak learning rate (AdamW, linear warm-up and decay) "
                                     "[default: 5e-05; 0.05 for a static model].", show_default=False)
                  ] = None,
    max_seq_tokens: Annotated[int | None, _opt("--max-seq-tokens", help="Truncate training texts here "
                                               "[default: the model's window]; the saved model keeps its "
                                               "window.", show_default=False)] = None,
    device: Device = "auto",
    seed: Annotated[int, _opt("--seed", help="Seed of pair making, shuffling, dropout and the CI.")] = 0,
    checkpoint_steps: Annotated[int | None, _opt("--checkpoint-steps", help="Checkpoint every N steps into "
                                                 "DIR.checkpoints; the same command resumes from it.",
                                                 show_default=False)] = None,
    resume: Annotated[bool, _opt("--resume/--no-resume", help="Resume from DIR.checkpoints "
                                 "(or discard them).")] = True,
    overwrite: Annotated[bool, _opt("--overwrite", help="Replace an existing non-empty -o DIR.")] = False,
    eval_dir: Annotated[str | None, _opt("--eval", help="BEIR dataset to score base and tuned model on.",
                                         show_default=False)] = None,
    eval_split: Annotated[str | None, _opt("--eval-split", help="--eval: qrels split [default: test].",
                                           show_default=False)] = None,
    allow_overlap: Annotated[bool, _opt("--allow-overlap", help="Evaluate even on queries that were trained "
                                        "on (refused by default).")] = False,
    resamples: Annotated[int, _opt("--resamples", help="--eval: bootstrap resamples of the CI.")] = 10_000,
) -> None:
    """Fine-tune the embedding model on pairs, judged queries or the corpus alone (MNRL, Matryoshka, LoRA)."""
    from arrowsmith.commands.errors import UsageError
    from arrowsmith.commands.tune import TrainOptions, TuneOptions, load_base, tune
    from arrowsmith.commands.tune.sources import SourceOptions, check, load_pair_set
    from arrowsmith.commands.tune.train import check_lora_available, check_training_available

    from .settings import SETTINGS, info

    source = SourceOptions(pairs=pairs, data=data, split=split, unsupervised=unsupervised, corpus=corpus,
                           db=db, table=table, input_format=input_format, query_col=query_col,
                           positive_col=positive_col, negative_col=negative_col, query_id_col=query_id_col,
                           id_col=id_col, text_col=text_col, title_col=title_col,
                           hard_negatives=hard_negatives, min_grade=min_grade)
    check(source)
    if eval_dir is None and (eval_split is not None or allow_overlap):
        raise UsageError("--eval-split and --allow-overlap need --eval DIR")
    if resamples < 100:
        raise UsageError("--resamples: at least 100")
    check_training_available()
    if lora is not None:
        check_lora_available()
    train = TrainOptions(epochs=epochs, batch_size=batch_size, lr=lr, max_seq_tokens=max_seq_tokens,
                         seed=seed, device=device, matryoshka=_dims(matryoshka), lora=lora,
                         checkpoint_steps=checkpoint_steps, guide=guide)
    options = TuneOptions(output=output, model=model, train=train, hard_negatives=hard_negatives,
                          max_pairs=max_pairs,
                          eval_dir=eval_dir, eval_split=eval_split or "test", allow_overlap=allow_overlap,
                          overwrite=overwrite, resume=resume, n_resamples=resamples,
                          multivector=multivector, token_dim=token_dim)
    base = load_base(model, device)
    window = min(max_seq_tokens or base.max_tokens, base.max_tokens)
    pair_set = load_pair_set(source, model=base, max_seq_tokens=window, seed=seed)
    result = tune(pair_set, options, progress=SETTINGS.show_progress, info=info)
    if result.table:
        typer.echo(result.table, nl=False)
    info(result.summary())
