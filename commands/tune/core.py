"""``tune``: pairs → (hard negatives) → training → before/after → model directory, in that order.

Everything that can refuse (options, data, overlap between training and evaluation queries,
an existing output, foreign checkpoints) refuses before the first training step.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arrowsmith.commands.errors import UsageError

from . import multivector, output
from .card import card_record, model_card
from .evaluate import BeforeAfter, before_after, check_overlap, render
from .multivector import train_multivector
from .negatives import mine_hard_negatives
from .pairs import PairSet
from .train import (
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    STATIC_EPOCHS,
    STATIC_LR,
    TrainOptions,
    TrainResult,
    check_training_available,
    matryoshka_dims,
    train,
)

log = logging.getLogger("arrowsmith.tune")


@dataclass
class TuneOptions:
    output: str
    model: str | None = None  # base model spec (default: all-MiniLM-L6-v2)
    train: TrainOptions = field(default_factory=TrainOptions)
    hard_negatives: int = 0
    max_pairs: int | None = None  # train on a seeded sample of at most this many pairs
    eval_dir: str | None = None
    eval_split: str = "test"
    allow_overlap: bool = False
    overwrite: bool = False
    resume: bool = True
    n_resamples: int = 10_000
    multivector: bool = False  # train a ColBERT-style token head (.multivector)
    token_dim: int | None = None  # its dim (None: DEFAULT_TOKEN_DIM, or a multi-vector base's own)


@dataclass
class TuneResult:
    output: Path
    pairs: int
    train: TrainResult
    base: dict[str, Any]
    revision: str = ""
    evaluation: BeforeAfter | None = None
    table: str | None = None  # the rendered before/after table
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        t = self.train
        head = (f"tune: {self.pairs:,} pairs, {t.steps:,} steps in {_duration(t.seconds)}"
                f"{' (resumed)' if t.resumed_from else ''} → {self.output} (revision {self.revision[:12]})")
        if self.evaluation is not None:
            c = self.evaluation.comparison
            head += (f"; nDCG@10 {c.baseline_mean:.4f} → {c.candidate_mean:.4f} ({c.diff:+.4f}, 95% CI "
                     f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}])")
        return head


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def load_base(spec: str | None, device: str):
    """The base model through the plugin registry (no download); only sentence-transformers trains."""
    from arrowsmith.plugins.registry import load_model, parse_spec

    plugin, _ = parse_spec(spec)
    if plugin != "sentence-transformers":
        raise UsageError(f"--model {spec}: tune trains sentence-transformers models, not {plugin!r} ones")
    return load_model(spec, device=device, dtype="fp32")


def tune(pair_set: PairSet, options: TuneOptions, *, progress: bool = False,
         info: Callable[[str], None] | None = None) -> TuneResult:
    info = info or (lambda msg: log.info("%s", msg))
    check_training_available()
    dest = output.AtomicDir(options.output, overwrite=options.overwrite)
    dest.check()
    base = load_base(options.model, options.train.device)
    topts = options.train
    token_dim = _multivector_dim(base, options)
    if not base.contextual:  # a static model (`arrowsmith distill`): a token table, no window
        if topts.max_seq_tokens is not None:
            raise UsageError("--max-seq-tokens: a static model has no window; it trains on whole texts")
        if topts.lora is not None:
            raise UsageError("--lora: a static model has no linear layers to adapt", hint="drop --lora")
    if topts.lr is None:
        topts.lr = DEFAULT_LR if base.contextual else STATIC_LR
    if topts.epochs is None:
        topts.epochs = DEFAULT_EPOCHS if base.contextual else STATIC_EPOCHS
    if topts.matryoshka:
        topts.matryoshka = matryoshka_dims(topts.matryoshka, base.dim)
    topts.max_seq_tokens = min(topts.max_seq_tokens or base.max_tokens, base.max_tokens)
    _check_shapes(pair_set, options)
    if topts.guide is not None:
        topts.guide = str(base.path) if topts.guide == "base" else str(load_base(topts.guide, "cpu").path)
    _sample(pair_set, options.max_pairs, topts.seed)
    overlap = None
    if options.eval_dir:
        overlap = check_overlap(pair_set, options.eval_dir, options.eval_split, allow=options.allow_overlap)
    if options.hard_negatives:
        mine_hard_negatives(pair_set, base, options.hard_negatives, progress=info)
    notes = [*pair_set.notes, *_truncation_notes(pair_set, base, topts.max_seq_tokens)]
    for note in notes:
        info(f"tune: {note}")
    fingerprint = {"base": base.revision, "pairs": pair_set.digest(), "options": topts.fingerprint()}
    if token_dim:
        fingerprint["token_dim"] = token_dim
    ckpt_dir = output.checkpoint_dir(options.output) if topts.checkpoint_steps else None
    resume = output.prepare_checkpoints(ckpt_dir, fingerprint, resume=options.resume) if ckpt_dir else None
    if resume is not None:
        info(f"tune: resuming from {resume}")
    with dest as tmp:
        info(f"tune: training on {len(pair_set.pairs):,} pairs ({topts.epochs:g} epoch(s), "
             f"batch {topts.batch_size})")
        if token_dim:
            trained = train_multivector(base.path, pair_set.pairs, tmp, topts, token_dim, base.max_tokens,
                                        checkpoint_dir=ckpt_dir, resume=resume, progress=progress)
        else:
            trained = train(base.path, pair_set.pairs, tmp, topts, checkpoint_dir=ckpt_dir, resume=resume,
                            progress=progress)
        from arrowsmith.plugins.registry import load_model

        tuned = load_model(str(tmp), device=topts.device, dtype="fp32")
        result = TuneResult(Path(options.output), len(pair_set.pairs), trained, base.describe(),
                            revision=tuned.revision, notes=notes)
        if options.eval_dir:
            with tempfile.TemporaryDirectory(prefix="arrowsmith-tune-eval-") as work:
                result.evaluation = before_after(
                    options.eval_dir, options.eval_split, base, tuned, Path(work), seed=topts.seed,
                    device=topts.device, dims=topts.matryoshka, n_resamples=options.n_resamples,
                    progress=info, multivector=bool(token_dim))
            result.evaluation.overlap_note = overlap
            result.table = render(result.evaluation)
        info_dict = _card_info(Path(options.output).name, base, pair_set, topts, trained, notes, options)
        if result.evaluation is not None:
            info_dict["evaluation"] = result.evaluation.to_dict()
        if token_dim:
            info_dict["training"]["loss"] = multivector.LOSS
            own = multivector.has_own_head(base)
            info_dict["multivector"] = {"token_dim": token_dim,
                                        **({"head": "the base model's own"} if own else multivector.RECIPE)}
        (tmp / "README.md").write_text(model_card(info_dict, result.table), encoding="utf-8")
        dest.commit()
    if ckpt_dir is not None:
        output.remove_checkpoints(ckpt_dir)
    return result


def _multivector_dim(base: Any, options: TuneOptions) -> int | None:
    """The token head's dim with --multivector (None without); a multi-vector base needs it."""
    if options.multivector:
        return multivector.check_options(base, options.train, options.token_dim)
    if options.token_dim is not None:
        raise UsageError("--token-dim is the --multivector head's dim", hint="add --multivector")
    if multivector.has_own_head(base):
        raise UsageError(f"--model {base.name} is a multi-vector (ColBERT-style) model",
                         hint="add --multivector to tune it")
    return None


def _check_shapes(pair_set: PairSet, options: TuneOptions) -> None:
    if not pair_set.pairs:
        raise UsageError("no training pairs")
    counts = {len(p.negatives) for p in pair_set.pairs}
    if len(counts) > 1:
        raise UsageError("every pair needs the same number of negatives")
    if options.hard_negatives < 0:
        raise UsageError("--hard-negatives must be 0 or more")
    t = options.train
    for name, value in (("--epochs", t.epochs), ("--batch-size", t.batch_size), ("--lr", t.lr)):
        if not value > 0:
            raise UsageError(f"{name} must be positive")
    if t.batch_size < 2:
        raise UsageError("--batch-size must be at least 2 (in-batch negatives need company)")
    if t.checkpoint_steps is not None and t.checkpoint_steps < 1:
        raise UsageError("--checkpoint-steps must be positive")
    if t.max_seq_tokens is not None and t.max_seq_tokens < 8:
        raise UsageError("--max-seq-tokens must be at least 8")
    negatives = len(pair_set.pairs[0].negatives) + options.hard_negatives
    if t.guide is not None and negatives > 1:
        raise UsageError(f"--guide: GISTEmbedLoss takes at most one negative per pair, not {negatives}",
                         hint="--hard-negatives 1, or drop --guide")


def _sample(pair_set: PairSet, max_pairs: int | None, seed: int) -> None:
    """Keep a seeded sample of ``max_pairs`` pairs, in their original order (noted on the card)."""
    if max_pairs is None:
        return
    if max_pairs < 1:
        raise UsageError("--max-pairs must be positive")
    n = len(pair_set.pairs)
    if n <= max_pairs:
        return
    import random

    keep = sorted(random.Random(seed).sample(range(n), max_pairs))
    pair_set.pairs = [pair_set.pairs[i] for i in keep]
    pair_set.notes.append(f"trained on a sample of {max_pairs:,} of the {n:,} pairs "
                          f"(--max-pairs, --seed {seed})")


def _truncation_notes(pair_set: PairSet, model: Any, max_seq_tokens: int) -> list[str]:
    """Training truncates texts at --max-seq-tokens: say how many, never hide it."""
    texts = [p.positive for p in pair_set.pairs] + [n for p in pair_set.pairs for n in p.negatives]
    limit = max_seq_tokens - model.num_special_tokens
    counts = model.tokenizer.count_tokens(texts)
    cut = sum(1 for c in counts if c > limit)
    if not cut:
        return []
    return [f"{cut:,} of {len(texts):,} passages are longer than --max-seq-tokens {max_seq_tokens} "
            "and are truncated for training"]


def _card_info(name: str, base: Any, pair_set: PairSet, t: TrainOptions, trained: TrainResult,
               notes: list[str], options: TuneOptions) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        arrowsmith_version = version("arrowsmith")
    except PackageNotFoundError:
        arrowsmith_version = "unknown"
    info: dict[str, Any] = {
        "name": name,
        "base_model": {"name": base.name, "revision": base.revision, "path": str(base.path)},
        "data": {"source": pair_set.source, "kind": pair_set.kind, "sha256": pair_set.sha256,
                 "pairs": len(pair_set.pairs), "pairs_sha256": pair_set.digest(),
                 "note": "; ".join(notes) if notes else ""},
        "training": {"loss": "GISTEmbedLoss" if t.guide else "MultipleNegativesRankingLoss",
                     "guide": t.guide, "epochs": t.epochs, "batch_size": t.batch_size,
                     "lr": t.lr, "warmup": t.warmup, "max_seq_tokens": t.max_seq_tokens, "seed": t.seed,
                     "lora": t.lora, "steps": trained.steps, "seconds": round(trained.seconds, 1),
                     "device": trained.device, "hard_negatives": options.hard_negatives,
                     "negatives_per_pair": len(pair_set.pairs[0].negatives),
                     "trainable_params": trained.trainable_params,
                     "resumed": trained.resumed_from is not None},
        "arrowsmith": arrowsmith_version,
        "finished_unix": int(time.time()),
    }
    distilled = card_record(base.path).get("distill")
    if distilled:  # a static model's origin stays on the card of every model tuned from it
        info["distill"] = distilled
    if t.matryoshka:
        info["matryoshka_dims"] = list(t.matryoshka)
        info["training"]["matryoshka_dims"] = list(t.matryoshka)
    return info
