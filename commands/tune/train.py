"""The training itself: sentence-transformers' ``SentenceTransformerTrainer`` on the pairs.

Loss: ``MultipleNegativesRankingLoss`` (in-batch negatives, plus any explicit or mined negative
columns), optionally wrapped in ``MatryoshkaLoss``. Batches never hold the same text twice
(``NO_DUPLICATES``: a duplicate would be an in-batch *false* negative). LoRA adapters come from
peft's own API (``get_peft_model`` on the inner transformer, merged back before saving), not
from transformers' adapter integration, which asks for a newer peft than the one available
(transformers 5.x wants peft ≥ 0.22; 0.21.2 is the newest release): the result is an ordinary
model directory either way.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arrowsmith.commands import faults
from arrowsmith.commands.errors import UsageError

from .pairs import Pair

log = logging.getLogger("arrowsmith.tune")

TRAIN_EXTRA = "pip install 'arrowsmith[tune]' (accelerate and datasets)"
LORA_EXTRA = "pip install 'arrowsmith[lora]' (peft)"


@dataclass
class TrainOptions:
    epochs: float | None = None  # None: DEFAULT_EPOCHS, or STATIC_EPOCHS for a static model (tune resolves)
    batch_size: int = 32
    lr: float | None = None  # None: DEFAULT_LR, or STATIC_LR for a static model (tune resolves it)
    max_seq_tokens: int | None = None  # None: the model's window
    seed: int = 0
    device: str = "auto"
    matryoshka: tuple[int, ...] = ()
    lora: int | None = None  # the adapters' rank
    warmup: float = 0.1  # fraction of the steps
    checkpoint_steps: int | None = None
    guide: str | None = None  # a guide model's directory: GISTEmbedLoss instead of MNRL

    def fingerprint(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "max_seq_tokens", "seed",
                                              "matryoshka", "lora", "warmup", "checkpoint_steps", "guide")}


@dataclass
class TrainResult:
    steps: int = 0
    seconds: float = 0.0
    loss: float | None = None
    trainable_params: int = 0
    total_params: int = 0
    resumed_from: str | None = None
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)


def check_training_available() -> None:
    """accelerate and datasets are the trainer's own dependencies: one line when missing."""
    import importlib.util

    missing = [m for m in ("accelerate", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"tune needs {' and '.join(missing)}, which are not installed", hint=TRAIN_EXTRA)


def check_lora_available() -> None:
    """``--lora`` needs peft; refuse in one line (exit 2) when it is missing or does not import."""
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise UsageError("--lora needs peft, which is not installed", hint=LORA_EXTRA)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from peft import LoraConfig, get_peft_model  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure is one line, never a traceback
        raise UsageError(f"--lora: peft does not work with the installed packages ({type(e).__name__}: {e})",
                         hint="train all weights (drop --lora), or install a peft that matches transformers"
                         ) from None


def resolve_train_device(request: str) -> str:
    from arrowsmith.plugins.sentence_transformers import resolve_device

    device = resolve_device(request)
    if device.startswith("cuda:") and device != "cuda:0":
        # the trainer (accelerate) always trains on the first visible device
        raise UsageError(f"--device {device}: tune trains on the first visible GPU",
                         hint=f"CUDA_VISIBLE_DEVICES={device.split(':', 1)[1]} arrowsmith tune --device cuda")
    return device


def train(model_path: str, pairs: list[Pair], out_dir: Path, options: TrainOptions, *,
          checkpoint_dir: Path | None = None, resume: Path | None = None, progress: bool = False,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train on ``pairs`` starting from ``model_path``; save the model into ``out_dir``."""
    check_training_available()
    _quiet_libraries()
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    device = resolve_train_device(options.device)
    model = SentenceTransformer(model_path, device=device, local_files_only=True)
    window = model.max_seq_length
    if options.max_seq_tokens:
        _set_window(model, min(options.max_seq_tokens, window or options.max_seq_tokens))
    peft_model = _add_lora(model, options.lora, options.seed) if options.lora else None
    dataset = Dataset.from_dict(_columns(pairs))
    guide = None
    if options.guide:
        guide = SentenceTransformer(options.guide, device=device, local_files_only=True)
        _set_window(guide, model.max_seq_length)
        guide.requires_grad_(False)
        guide.eval()  # no dropout in the guide's scores (the trainer switches only the model to train)
    loss = _loss(model, options.matryoshka, guide)
    args = _arguments(options, checkpoint_dir or out_dir / ".trainer", device, len(pairs))
    trainer = _trainer(model, args, dataset, loss, progress, on_step)
    result = run_trainer(trainer, model, device, resume)
    if peft_model is not None:
        model[0].model = peft_model.merge_and_unload()
    _set_window(model, window)  # the model keeps its window: --max-seq-tokens only bounds training
    with torch.no_grad():
        model.save_pretrained(str(out_dir), create_model_card=False)
    _remove(out_dir / ".trainer")
    return result


def _set_window(model: Any, tokens: float | None) -> None:
    """Truncate at ``tokens``; a static model (StaticEmbedding: no window, and no setter for one)
    always reads whole texts."""
    if tokens is not None and model.max_seq_length != math.inf and tokens != math.inf:
        model.max_seq_length = int(tokens)


def _quiet_libraries() -> None:
    """Library progress bars and advice are noise on our stderr (and some print to stdout)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    for name in ("sentence_transformers", "transformers", "accelerate", "datasets", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")


def run_trainer(trainer: Any, model: Any, device: str, resume: Any) -> TrainResult:
    """Train (from the checkpoint ``resume``, if any) and count what a TrainResult reports."""
    result = TrainResult(device=device, resumed_from=str(resume) if resume else None)
    result.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result.total_params = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    result.seconds = time.perf_counter() - start
    result.steps = int(trainer.state.global_step)
    result.loss = float(output.training_loss) if output.training_loss is not None else None
    return result


def _columns(pairs: list[Pair]) -> dict[str, list[str]]:
    """anchor, positive, negative_1..k: the column order MNRL reads (every row has k negatives)."""
    k = len(pairs[0].negatives)
    cols = {"anchor": [p.query for p in pairs], "positive": [p.positive for p in pairs]}
    for j in range(k):
        cols[f"negative_{j + 1}"] = [p.negatives[j] for p in pairs]
    return cols


# --lr's and --epochs' defaults. A transformer: sentence-transformers' MNRL recipe (5e-5, 10% warm-up,
# 3 epochs, batch 32, NO_DUPLICATES; tests/test_tune.py pins it). With 2e-5 and 3 epochs tune reached
# nDCG@10 0.686 on a held-back scientific-claims set where that recipe reached 0.717 (issue 20); on
# Cranfield 1 epoch at 2e-5 gained +0.0068, the recipe +0.0174 (benchmarks/RESULTS.md#tune).
# A static model (StaticEmbedding, `arrowsmith distill`) trains a lookup table: on Cranfield (odd-id
# queries train, even-id evaluate, 1 epoch) 2e-5 moved its nDCG@10 by +0.0001, 1e-2 by +0.043,
# 5e-2 by +0.086, 1e-1 by +0.068, 2e-1 by +0.027 (benchmarks/RESULTS.md#distill)
DEFAULT_LR = 5e-5
DEFAULT_EPOCHS = 3.0
STATIC_LR = 5e-2
STATIC_EPOCHS = 1.0  # the epochs STATIC_LR was chosen at
MNRL_SCALE = 20.0  # MultipleNegativesRankingLoss's default; GISTEmbedLoss gets the same (1/temperature)


def _loss(model: Any, dims: tuple[int, ...], guide: Any = None):
    """MNRL, or with a guide GISTEmbedLoss: MNRL whose in-batch (and explicit) negatives the guide
    scores at or above 0.95 x the pair's positive are masked out as likely false negatives — the same
    ceiling hard-negative mining applies. Only the query → passage direction, MNRL's scale: the
    filtering is the one difference from MNRL."""
    from sentence_transformers.sentence_transformer.losses import (
        GISTEmbedLoss,
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    from .negatives import MAX_RELATIVE_SCORE

    if guide is None:
        loss = MultipleNegativesRankingLoss(model, scale=MNRL_SCALE)
    else:
        loss = GISTEmbedLoss(model, guide, temperature=1.0 / MNRL_SCALE, margin_strategy="relative",
                             margin=1.0 - MAX_RELATIVE_SCORE, contrast_anchors=False,
                             contrast_positives=False)
    if dims:
        loss = MatryoshkaLoss(model, loss, list(dims))
    return loss


def matryoshka_dims(dims: tuple[int, ...], model_dim: int) -> tuple[int, ...]:
    """Validated dims, largest first, the model's full dim always included."""
    bad = [d for d in dims if not 0 < d <= model_dim]
    if bad:
        raise UsageError(f"--matryoshka: dim {bad[0]} is not between 1 and the model's {model_dim}")
    return tuple(sorted(set(dims) | {model_dim}, reverse=True))


def _add_lora(model: Any, rank: int, seed: int):
    check_lora_available()
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise UsageError(f"--lora {rank}: the rank must be at least 1")
    torch.manual_seed(seed)  # the adapters' initialisation
    module = model[0]
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.1, target_modules="all-linear")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(module.model, config)
    module.model = peft_model
    return peft_model


def _arguments(options: TrainOptions, output_dir: Path, device: str, n_pairs: int, args_class: Any = None):
    """The recipe's training arguments, in ``args_class`` (the trainer's own, e.g. the multi-vector one)."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    steps = options.checkpoint_steps
    return (args_class or SentenceTransformerTrainingArguments)(
        output_dir=str(output_dir),
        num_train_epochs=options.epochs,
        per_device_train_batch_size=min(options.batch_size, max(n_pairs, 1)),
        learning_rate=DEFAULT_LR if options.lr is None else options.lr,
        warmup_steps=options.warmup,  # a float below 1 is a fraction of the steps (transformers 5)
        seed=options.seed,
        data_seed=options.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="steps" if steps else "no",
        save_steps=steps or 500,
        save_total_limit=2 if steps else None,  # two: the newest may be cut short by a kill
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,  # our own bar, on stderr (transformers' writes its logs to stdout)
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
    )


def _trainer(model: Any, args: Any, dataset: Any, loss: Any, progress: bool,
             on_step: Callable[[int], None] | None, trainer_class: Any = None):
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class Steps(TrainerCallback):
        bar: Any = None

        def on_train_begin(self, a, state, control, **kw):
            if progress:
                from tqdm import tqdm

                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="tune", unit=" steps",
                                file=sys.stderr, dynamic_ncols=True, leave=False)

        def on_step_end(self, a, state, control, **kw):
            if self.bar is not None:
                self.bar.n = state.global_step
                self.bar.refresh()
            if on_step is not None:
                on_step(state.global_step)
            faults.hit("tune_step")  # tests stop or kill the run here (ARROWSMITH_FAULT=tune_step:N:pause)

        def on_train_end(self, a, state, control, **kw):
            if self.bar is not None:
                self.bar.close()

    class Trainer(trainer_class or SentenceTransformerTrainer):  # type: ignore[misc]
        def add_model_card_callback(self, default_args_dict):
            """No sentence-transformers card (it embeds widget examples): ours is written instead."""

    trainer = Trainer(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[Steps()])
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
