"""Options shared by several commands, defined once (sqlite-utils' ``output_options`` in Typer form).

An option that two commands take is declared here, once, with one type, one help text and one
environment variable, and both commands use the alias; the default sits beside it as a constant.
Every option a cron job would set has an ``ARROWSMITH_*`` environment variable, shown in ``--help``.

Options with a fixed set of values are ``Literal`` types, so ``--help``, shell completion and
validation show the same choices. The tuples are written out here rather than imported from the
library (which imports pyarrow: ``--help`` must stay cheap); ``tests/test_options.py`` fails when
they drift from the library's.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import typer

# ---- fixed sets of values --------------------------------------------------------------------
InputFormatName = Literal["arrows", "arrow", "parquet", "jsonl", "csv", "tsv"]
OutputFormatName = Literal["arrows", "arrow", "parquet", "jsonl", "csv", "tsv", "table"]
OnErrorName = Literal["fail", "skip"]
StrategyName = Literal["tokens", "sentences", "markdown"]
ChunkerName = Literal["tokens", "sentences", "markdown", "none"]  # eval: a strategy, or no chunking
DtypeName = Literal["auto", "fp32", "bf16", "fp16"]
LateSpecialsName = Literal["exclude", "include"]
VectorIndexName = Literal["auto", "ivf_pq", "ivf_hnsw_sq", "none"]
TokenIndexName = Literal["auto", "ivf_pq", "none"]
DistanceName = Literal["cosine", "l2", "dot"]
ModeName = Literal["auto", "vector", "fts", "hybrid", "maxsim"]
FusionName = Literal["rrf", "mix"]
ByName = Literal["chunk", "doc"]
RescoreWithName = Literal["int8", "float"]
TestName = Literal["bootstrap", "permutation"]
PlotKindName = Literal["auto", "bars", "bytes"]
ShellName = Literal["bash", "zsh", "fish"]


def command_option(*names: str, help: str, **kw):
    """An option of one command only (no environment variable), its default shown unless told."""
    return typer.Option(*names, help=help, show_default=kw.pop("show_default", True), **kw)


def choices(literal) -> tuple[str, ...]:
    """The values of a ``Literal`` type above, in order."""
    return get_args(literal)


# ---- input and output ------------------------------------------------------------------------
Inputs = Annotated[
    list[str] | None,
    typer.Argument(help="Input files or directories; '-' or nothing reads stdin.", show_default=False),
]
Output = Annotated[
    str,
    typer.Option("--output", "-o", envvar="ARROWSMITH_OUTPUT",
                 help="Write here instead of stdout ('-'); format from the extension, written atomically."),
]
OutputFormat = Annotated[
    OutputFormatName | None,
    typer.Option("--format", "-f", envvar="ARROWSMITH_FORMAT",
                 help="Output format [default: table on a terminal, else arrows, or the output file's "
                      "extension].", show_default=False),
]
InputFormat = Annotated[
    InputFormatName | None,
    typer.Option("--input-format", envvar="ARROWSMITH_INPUT_FORMAT",
                 help="Input format [default: from the extension, or sniffed on stdin].", show_default=False),
]
AsJson = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document on stdout instead of text."),
]
IdCol = Annotated[
    str, typer.Option("--id-col", envvar="ARROWSMITH_ID_COL", help="Id column of table inputs."),
]
ID_COL = "id"
TextCol = Annotated[
    str, typer.Option("--text-col", envvar="ARROWSMITH_TEXT_COL", help="Text column of table inputs."),
]
TEXT_COL = "text"
OnError = Annotated[
    OnErrorName,
    typer.Option("--on-error", envvar="ARROWSMITH_ON_ERROR",
                 help="fail: stop at the first bad document (exit 65); skip: report it, count it, go on."),
]

# ---- the store -------------------------------------------------------------------------------
Db = Annotated[
    str | None,
    typer.Option("--db", envvar="ARROWSMITH_DB", help="LanceDB store directory.", show_default=False),
]
RequiredDb = Annotated[
    str,
    typer.Option("--db", envvar="ARROWSMITH_DB", help="LanceDB store directory."),
]
Table = Annotated[
    str,
    typer.Option("--table", "-t", envvar="ARROWSMITH_TABLE", help="Table (one per embedding space)."),
]
TABLE = "chunks"
Wait = Annotated[
    bool,
    typer.Option("--wait", envvar="ARROWSMITH_WAIT",
                 help="Wait for another writer's lock instead of exit 75."),
]
Replace = Annotated[
    bool,
    typer.Option("--replace", envvar="ARROWSMITH_REPLACE",
                 help="Rebuild the table when it holds another model, dim, prompt or late-chunking "
                      "setting (without it: exit 2)."),
]
Prune = Annotated[
    bool,
    typer.Option("--prune", envvar="ARROWSMITH_PRUNE",
                 help="Delete stored documents absent from the input (only after reading all of it)."),
]
CheckpointRows = Annotated[
    int,
    typer.Option("--checkpoint-rows", envvar="ARROWSMITH_CHECKPOINT_ROWS",
                 help="Rows per store commit: a crash loses at most one checkpoint."),
]
CHECKPOINT_ROWS = 10_000
Grace = Annotated[
    str,
    typer.Option("--grace", envvar="ARROWSMITH_GRACE",
                 help="Only temporary/orphaned files older than this are removed; younger ones may "
                      "belong to a running writer (1h, 30m, 0)."),
]
GRACE = "1h"

# ---- models and chunking ---------------------------------------------------------------------
Model = Annotated[
    str | None,
    typer.Option("--model", "-m", envvar="ARROWSMITH_MODEL",
                 help="Model spec NAME or PLUGIN:NAME [default: all-MiniLM-L6-v2].", show_default=False),
]
Device = Annotated[
    str,
    typer.Option("--device", envvar="ARROWSMITH_DEVICE", help="auto|cpu|cuda|cuda:N|mps."),
]
DEVICE = "auto"
Dtype = Annotated[
    DtypeName,
    typer.Option("--dtype", envvar="ARROWSMITH_DTYPE",
                 help="Compute precision. auto: bf16/fp16 on GPU; bf16 autocast on CPUs with native "
                      "bf16 (avx512_bf16/AMX), else fp32."),
]
DTYPE = "auto"
Late = Annotated[
    bool,
    typer.Option("--late/--naive", envvar="ARROWSMITH_LATE",
                 help="Late chunking: embed whole documents (overlapping windows past the model's "
                      "window) and mean-pool each chunk's tokens, so chunks carry their context."),
]
MaxTokens = Annotated[
    int | None,
    typer.Option("--max-tokens", envvar="ARROWSMITH_MAX_TOKENS", show_default=False,
                 help="Most tokens per chunk, guaranteed [default: the model's window minus its special "
                      "tokens (254 for all-MiniLM-L6-v2); 256 for a tiktoken encoding]."),
]
Overlap = Annotated[
    int,
    typer.Option("--overlap", envvar="ARROWSMITH_OVERLAP",
                 help="Tokens shared by consecutive chunks (strategy tokens only)."),
]
OVERLAP = 0

# ---- search (query, and eval's configurations) -----------------------------------------------
Mode = Annotated[
    ModeName,
    typer.Option("--mode", envvar="ARROWSMITH_MODE",
                 help="auto: hybrid when the table has a full-text index, else vector; with token "
                      "vectors, hybrid mixed with MaxSim (--rerank maxsim-mix:100); vector: cosine; "
                      "fts: BM25; hybrid: both, fused; maxsim: MaxSim over every chunk's token vectors."),
]
MODE = "auto"
Fusion = Annotated[
    FusionName,
    typer.Option("--fusion", envvar="ARROWSMITH_FUSION",
                 help="Hybrid fusion: mix (z-scores, weighted by --alpha) | rrf (reciprocal rank)."),
]
FUSION = "mix"
RrfK = Annotated[
    float,
    typer.Option("--rrf-k", envvar="ARROWSMITH_RRF_K", help="RRF constant k in 1/(k + rank)."),
]
RRF_K = 60.0
Alpha = Annotated[
    float,
    typer.Option("--alpha", envvar="ARROWSMITH_ALPHA",
                 help="--fusion mix: weight of the dense list (0..1)."),
]
ALPHA = 0.5
By = Annotated[
    ByName,
    typer.Option("--by", envvar="ARROWSMITH_BY",
                 help="chunk: k chunks; doc: the best chunk of each of k distinct documents."),
]
BY = "chunk"
Exact = Annotated[
    bool,
    typer.Option("--exact/--ann", envvar="ARROWSMITH_EXACT",
                 help="--exact: flat scan of every vector; --ann: the vector index when the table has one."),
]
EXACT = False  # query's; eval keeps exact search, MTEB's protocol, as its own default
