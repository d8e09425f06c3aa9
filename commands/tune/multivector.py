"""``tune --multivector``: train a ColBERT-style model (sentence-transformers' ``MultiVectorEncoder``).

The base model's transformer plus a token-level projection (``--token-dim``, default 128, seeded
random initialisation; a base that is already a multi-vector model keeps its own head), trained
on the same pairs as ``tune`` (in-batch and explicit negatives) with sentence-transformers'
``MultiVectorMultipleNegativesRankingLoss`` (MaxSim scores, its default scale) through its
``MultiVectorEncoderTrainer``, and the recipe of :mod:`.train` (learning rate, warm-up, batch
sampler, seed, checkpoints). The output is an ordinary ``MultiVectorEncoder`` directory that
``embed --multivector --model DIR`` reads.

The head's recipe, beyond the projection: the document side drops punctuation from scoring
(ColBERT's skiplist: about a tenth of the stored tokens); no query/document marker tokens and no
query expansion: MiniLM's vocabulary has no trained ``[Q]``/``[D]`` markers and its ``[MASK]``
vectors were never trained for a sentence model, so both would start as noise that a short
training on a few hundred pairs cannot turn into signal.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arrowsmith.commands.errors import UsageError

from .pairs import Pair
from .train import (
    TrainOptions,
    TrainResult,
    _arguments,
    _columns,
    _quiet_libraries,
    _remove,
    _trainer,
    check_training_available,
    resolve_train_device,
    run_trainer,
)

DEFAULT_TOKEN_DIM = 128  # ColBERT's: 64 bytes a token at int4 (spaces/multi.py), 4x fewer than MiniLM's 384
LOSS = "MultiVectorMultipleNegativesRankingLoss"
# what build_encoder gives a new head (the model card records it)
RECIPE = {"scoring": "maxsim", "skiplist": "punctuation (documents)", "prefixes": None,
          "query_expansion": None}


def has_own_head(base: Any) -> bool:
    """A multi-vector base (a ColBERT model, an earlier ``tune --multivector``): it keeps its head."""
    return "multivector" in base.representations and base.token_vector_source == "multi-vector-encoder"


def check_options(base: Any, options: TrainOptions, token_dim: int | None) -> int:
    """The head's dim; refuses what the multi-vector training does not do (exit 2)."""
    for flag, value in (("--matryoshka", options.matryoshka), ("--guide", options.guide),
                        ("--lora", options.lora)):
        if value:
            raise UsageError(f"{flag} trains a single-vector model; --multivector trains a token head",
                             hint=f"drop {flag} or --multivector")
    if not base.contextual:
        raise UsageError(f"--multivector: {base.name} is a static model (its token vectors do not depend "
                         "on their context)", hint="a transformer model such as all-MiniLM-L6-v2")
    if has_own_head(base):
        if token_dim is not None and token_dim != base.dim:
            raise UsageError(f"--token-dim {token_dim}: {base.name} already has a {base.dim}-d token head",
                             hint="drop --token-dim")
        return base.dim
    dim = DEFAULT_TOKEN_DIM if token_dim is None else token_dim
    if not 1 <= dim <= 4096:
        raise UsageError(f"--token-dim {dim}: must be between 1 and 4096")
    return dim


def build_encoder(model_path: str, token_dim: int, window: int | None, seed: int, device: str) -> Any:
    """The base model's transformer with a new token head (or a multi-vector base as it is)."""
    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    from arrowsmith.plugins.sentence_transformers import is_multi_vector

    if is_multi_vector(Path(model_path)):
        return MultiVectorEncoder(model_path, device=device, local_files_only=True)
    transformer = Transformer(model_path, max_seq_length=window)
    torch.manual_seed(seed)  # the projection's initialisation
    head = Dense(transformer.get_embedding_dimension(), token_dim, bias=False,
                 activation_function=torch.nn.Identity(), module_input_name="token_embeddings")
    modules = [transformer, head, MultiVectorMask(skiplist_words=list(string.punctuation)),
               Normalize(module_input_name="token_embeddings")]
    return MultiVectorEncoder(modules=modules, device=device, similarity_fn_name="maxsim")


def train_multivector(model_path: str, pairs: list[Pair], out_dir: Path, options: TrainOptions,
                      token_dim: int, window: int | None, *, checkpoint_dir: Path | None = None,
                      resume: Path | None = None, progress: bool = False,
                      on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train the multi-vector model on ``pairs``; save it into ``out_dir``."""
    check_training_available()
    _quiet_libraries()
    import torch
    from datasets import Dataset
    from sentence_transformers import MultiVectorEncoderTrainer, MultiVectorEncoderTrainingArguments
    from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss

    device = resolve_train_device(options.device)
    model = build_encoder(model_path, token_dim, window, options.seed, device)
    dataset = Dataset.from_dict(_columns(pairs))
    loss = MultiVectorMultipleNegativesRankingLoss(model)
    args = _arguments(options, checkpoint_dir or out_dir / ".trainer", device, len(pairs),
                      args_class=MultiVectorEncoderTrainingArguments)
    if options.max_seq_tokens:  # training texts cut here; the saved model keeps its window
        args.max_length = options.max_seq_tokens
    trainer = _trainer(model, args, dataset, loss, progress, on_step, trainer_class=MultiVectorEncoderTrainer)
    result = run_trainer(trainer, model, device, resume)
    with torch.no_grad():
        model.save_pretrained(str(out_dir), create_model_card=False)
    _remove(out_dir / ".trainer")
    return result
