"""Domain adaptation: tune the embedding model on the user's pairs, judged queries or corpus.

Library API (``cli/tune.py`` is a thin shell over it)::

    from arrowsmith.commands.tune import TuneOptions, pairs_from_beir, tune

    pairs = pairs_from_beir("data/cranfield", "train")
    result = tune(pairs, TuneOptions(output="tuned-model", eval_dir="data/cranfield"))
    print(result.summary())
"""

from .core import TuneOptions, TuneResult, load_base, tune
from .evaluate import BeforeAfter, before_after, check_overlap, render
from .negatives import mine_hard_negatives
from .output import AtomicDir, checkpoint_dir, latest_checkpoint
from .pairs import Candidates, Pair, PairSet, pairs_from_beir, pairs_from_table, sha256_files
from .train import TrainOptions, TrainResult, check_lora_available, train
from .unsupervised import Document, documents_from_store, documents_from_table, make_pairs, unsupervised_pairs

__all__ = [
    "AtomicDir", "BeforeAfter", "Candidates", "Document", "Pair", "PairSet", "TrainOptions", "TrainResult",
    "TuneOptions", "TuneResult", "before_after", "check_lora_available", "check_overlap", "checkpoint_dir",
    "documents_from_store", "documents_from_table", "latest_checkpoint", "load_base", "make_pairs",
    "mine_hard_negatives", "pairs_from_beir", "pairs_from_table", "render", "sha256_files", "train", "tune",
    "unsupervised_pairs",
]
