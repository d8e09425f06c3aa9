"""Configurations to compare, from ``--compare`` specs or a TOML/JSON file.

Spec grammar: comma-separated items, each a bare word or ``key=value``::

    late                                   late chunking, everything else from the defaults
    naive,chunk=sentences,max_tokens=128   naive chunking of 128-token sentence chunks
    mode=hybrid,fusion=mix,alpha=0.5       search settings on the same build
    name=mini-late,model=all-MiniLM-L6-v2,late
    late,window_overlap=0                  late chunking with windows that do not overlap
    hybrid,multivector,rerank=maxsim:100   token vectors stored; hybrid's candidates reranked by MaxSim
    multivector,maxsim,token_precision=float16
                                           MaxSim over the whole table, float16 token vectors

Bare words: ``late``, ``naive``, ``none`` (no chunking: one chunk per document, truncated at the
model's window as MTEB does), ``auto``/``vector``/``fts``/``hybrid``/``maxsim`` (the search mode;
``auto`` is query's default: hybrid when the table has a full-text index, else vector, with MaxSim
mixed in when the table has token vectors), ``doc``/``chunk`` (``by``), ``multivector`` (embed
``--multivector``: token vectors stored too). Keys are the field names of :class:`EvalConfig`
(``chunk`` and ``chunker`` are one).
A file holds ``[[config]]`` tables (TOML) or a list of objects (JSON) with the same keys.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from arrowsmith.commands.errors import DataError, UsageError

# eval measures what query does
from arrowsmith.commands.query import BYS, DEFAULT_FUSION, FUSIONS, MODES, parse_rerank
from arrowsmith.commands.spaces.multi import DEFAULT_PRECISION, PRECISIONS

NO_CHUNKING = "none"


@dataclass(frozen=True)
class EvalConfig:
    """One system to evaluate: how the store is built, and how it is searched."""

    name: str = ""
    # build
    model: str | None = None
    chunker: str = "sentences"  # a chunk strategy, or "none" (one truncated chunk per document)
    max_tokens: int | None = None
    overlap: int = 0
    late: bool = False
    window_overlap: int | None = None  # late chunking's window overlap (None: embed's default)
    multivector: bool = False  # embed --multivector: each chunk's token vectors stored too
    token_precision: str = DEFAULT_PRECISION  # embed --token-precision
    token_pool: float = 1.0  # embed --token-pool
    # search
    mode: str = "vector"
    fusion: str = DEFAULT_FUSION
    rrf_k: float = 60.0  # a float, as query's --rrf-k
    alpha: float = 0.5
    by: str = "chunk"
    rerank: str | None = None  # query --rerank: "maxsim" or "maxsim:N"
    exact: bool = True  # full-corpus exact search, as MTEB
    use_compressed: bool = True
    nprobes: int | None = None
    refine_factor: int | None = None
    ef: int | None = None
    # an existing store instead of a build
    db: str | None = None
    table: str = "chunks"

    def build_key(self) -> tuple:
        """Configurations with the same key share one store."""
        if self.db:
            return ("db", self.db, self.table)
        return ("build", self.model, self.chunker, self.max_tokens, self.overlap, self.late,
                self.window_overlap, self.multivector, self.token_precision, self.token_pool)

    def chunk_key(self) -> tuple:
        """Configurations with the same key share chunk spans (naive and late alike)."""
        return (self.model, self.chunker, self.max_tokens, self.overlap)

    def label(self) -> str:
        return self.name or describe(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT = EvalConfig()
_KEY_ALIASES = {"chunk": "chunker", "strategy": "chunker", "max-tokens": "max_tokens", "rrf-k": "rrf_k",
                "window-overlap": "window_overlap",
                "refine-factor": "refine_factor", "use-compressed": "use_compressed"}
_WORDS: dict[str, dict[str, Any]] = {
    "late": {"late": True}, "naive": {"late": False}, NO_CHUNKING: {"chunker": NO_CHUNKING},
    **{m: {"mode": m} for m in MODES}, "doc": {"by": "doc"}, "chunk": {"by": "chunk"},
    "exact": {"exact": True}, "ann": {"exact": False}, "multivector": {"multivector": True},
}
_FIELDS = {f.name: f for f in fields(EvalConfig)}


def describe(config: EvalConfig, base: EvalConfig = DEFAULT) -> str:
    """A short spec naming what differs from ``base`` (used as the default label)."""
    parts = []
    if config.db:
        parts.append(f"db={config.db}")
    else:
        parts.append("late" if config.late else "naive")
    for key in ("model", "chunker", "max_tokens", "overlap", "window_overlap", "multivector",
                "token_precision", "token_pool", "mode", "fusion", "rrf_k", "alpha", "by", "rerank", "exact",
                "use_compressed", "nprobes", "refine_factor", "ef", "table"):
        value = getattr(config, key)
        if value != getattr(base, key) and not (key == "table" and not config.db):
            parts.append(f"{key}={value}")
    return ",".join(parts)


def config_from_spec(spec: str, base: EvalConfig = DEFAULT) -> EvalConfig:
    """A configuration from a ``--compare`` spec, on top of ``base`` (the command's options)."""
    changes: dict[str, Any] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if "=" in item:
            key, value = (s.strip() for s in item.split("=", 1))
            key = _KEY_ALIASES.get(key, key).replace("-", "_")
            changes[key] = value
        elif item.lower() in _WORDS:
            changes.update(_WORDS[item.lower()])
        else:
            raise UsageError(f"--compare {spec!r}: unknown word {item!r}",
                             hint="late, naive, none, auto, vector, fts, hybrid, doc, or key=value "
                                  f"with key in {', '.join(_FIELDS)}")
    return make_config(changes, base, where=f"--compare {spec!r}")


def make_config(values: dict[str, Any], base: EvalConfig = DEFAULT, where: str = "", *,
                explicit: bool = True) -> EvalConfig:
    """Validate and coerce ``values`` (strings from a spec, or typed values from a file).

    With ``explicit`` (a spec or a file), a setting the configuration would ignore is refused.
    """
    coerced: dict[str, Any] = {}
    for key, value in values.items():
        key = _KEY_ALIASES.get(key, key).replace("-", "_")
        if key not in _FIELDS:
            raise UsageError(f"{where}: unknown setting {key!r} (known: {', '.join(_FIELDS)})")
        coerced[key] = _coerce(key, value, where)
    config = replace(base, **coerced)
    if "name" not in coerced:
        config = replace(config, name="")
    validate(config, where)
    if explicit:
        refuse_unused(config, set(coerced), where)
    return config


BUILD_KEYS = ("model", "chunker", "max_tokens", "overlap", "late", "window_overlap", "multivector",
              "token_precision", "token_pool")
HYBRID_MODES = ("hybrid", "auto")  # auto is hybrid on a table with a full-text index


def unused_settings(config: EvalConfig, keys: set[str]) -> list[tuple[str, str]]:
    """(key, why) for each of ``keys`` that ``config`` would not use (issue 10: none is ignored)."""
    out = []
    if config.db:
        out += [(k, "on an existing store (db=): it is searched as it is") for k in BUILD_KEYS if k in keys]
    elif not config.late and "window_overlap" in keys:
        out.append(("window_overlap", "with naive chunking: it is a late-chunking setting"))
    if not config.db and not config.multivector:
        out += [(k, "without multivector: it shapes token vectors") for k in ("token_precision", "token_pool")
                if k in keys]
    if config.mode not in HYBRID_MODES:
        out += [(k, f"with mode={config.mode}: it is a hybrid setting") for k in ("fusion", "rrf_k", "alpha")
                if k in keys]
    else:
        if "alpha" in keys and config.fusion != "mix":
            out.append(("alpha", "with fusion=rrf: it weighs fusion=mix"))
        if "rrf_k" in keys and config.fusion != "rrf":
            out.append(("rrf_k", "with fusion=mix: it is the RRF constant"))
    if config.exact or config.mode == "fts":
        why = ("with mode=fts" if config.mode == "fts"
               else "with exact search (the ANN index is bypassed): add ann")
        out += [(k, why) for k in ("nprobes", "refine_factor", "ef", "use_compressed") if k in keys]
    return out


def refuse_unused(config: EvalConfig, keys: set[str], where: str = "") -> None:
    unused = unused_settings(config, keys)
    if unused:
        prefix = f"{where}: " if where else ""
        raise UsageError(prefix + "; ".join(f"{k}= has no effect {why}" for k, why in unused))


def _coerce(key: str, value: Any, where: str) -> Any:
    default = getattr(DEFAULT, key)
    if isinstance(value, str) and value.lower() in ("none", "null", "") and key != "chunker":
        return None
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if key in ("max_tokens", "overlap", "window_overlap", "nprobes", "refine_factor", "ef"):
            return int(value)
        if key in ("alpha", "rrf_k", "token_pool"):
            return float(value)
    except (TypeError, ValueError):
        kind = type(default).__name__ if default is not None else "int"
        raise UsageError(f"{where}: {key}={value!r} is not a valid {kind}") from None
    return str(value)


def validate(config: EvalConfig, where: str = "") -> None:
    prefix = f"{where}: " if where else ""
    if config.mode not in MODES:
        raise UsageError(f"{prefix}mode={config.mode!r} (choose {', '.join(MODES)})")
    if config.fusion not in FUSIONS:
        raise UsageError(f"{prefix}fusion={config.fusion!r} (choose {', '.join(FUSIONS)})")
    if config.by not in BYS:
        raise UsageError(f"{prefix}by={config.by!r} (choose {', '.join(BYS)})")
    if not 0.0 <= config.alpha <= 1.0:
        raise UsageError(f"{prefix}alpha={config.alpha} must lie in [0, 1]")
    if config.max_tokens is not None and config.max_tokens < 1:
        raise UsageError(f"{prefix}max_tokens must be positive")
    if config.window_overlap is not None and config.window_overlap < 0:
        raise UsageError(f"{prefix}window_overlap must be 0 or more")
    if config.chunker == NO_CHUNKING and config.late:
        raise UsageError(f"{prefix}late chunking needs chunks: chunker=none embeds one vector per document")
    if config.token_precision not in PRECISIONS:
        raise UsageError(f"{prefix}token_precision={config.token_precision!r} "
                         f"(choose {', '.join(PRECISIONS)})")
    parse_rerank(config.rerank)
    if (config.rerank or config.mode == "maxsim") and not config.multivector and not config.db:
        what = f"rerank={config.rerank}" if config.rerank else "mode=maxsim"
        raise UsageError(f"{prefix}{what} needs token vectors: add multivector")


def load_config_file(path: str | Path, base: EvalConfig = DEFAULT) -> list[EvalConfig]:
    """``[[config]]`` tables of a TOML file, or a JSON list (or ``{"config": [...]}``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    try:
        if path.suffix.lower() == ".toml":
            data: Any = _toml().loads(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - tomllib and json raise different types
        raise DataError(f"{path}: cannot parse ({e})") from None
    items = data.get("config", data.get("configs")) if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items) or not items:
        raise DataError(f"{path}: expected a list of configurations ([[config]] tables, or a JSON list)")
    return [make_config(item, base, where=f"{path}: configuration {i + 1}") for i, item in enumerate(items)]


def _toml():
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise UsageError("TOML needs Python >= 3.11 or the tomli package",
                             hint="give the configurations as JSON instead") from None
    return tomllib


def unique_labels(configs: list[EvalConfig]) -> list[EvalConfig]:
    """Give every configuration a distinct label (reports and comparisons key on it)."""
    seen: dict[str, int] = {}
    out = []
    for c in configs:
        label = c.label()
        if label in seen:
            seen[label] += 1
            label = f"{label}#{seen[label]}"
        else:
            seen[label] = 1
        out.append(replace(c, name=label))
    return out
