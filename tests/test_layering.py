"""The package layers: cli → commands → plugins, never the other way (issue 10).

The library (``arrowsmith.commands``) must be usable without the CLI, and the plugin contract
(``arrowsmith.plugins``) without the stages, so a plugin author depends on one small package.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

# package → the packages its modules may not import (at top level or inside a function)
FORBIDDEN = {
    "commands": ("arrowsmith.cli",),
    "plugins": ("arrowsmith.cli", "arrowsmith.commands"),
}


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import statement in a module of ``arrowsmith.<package>``."""
    parts = ["arrowsmith", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    else:
        parts.pop()  # the module's own package
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - (node.level - 1)] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            out.append((node.lineno, module))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_higher_layer(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in _imports(path, package):
            if module.startswith(FORBIDDEN[package]) or module in ("cli", "commands"):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert not bad, "\n".join(bad)


def test_the_scan_resolves_relative_imports(tmp_path):
    # the scan above is only worth something if `from ..cli import x` is seen as arrowsmith.cli
    path = ROOT / "commands" / "chunk" / "core.py"
    resolved = {m for _, m in _imports(path, "commands")}
    assert "arrowsmith.commands.chunk.strategies" in resolved


PROBE = """
import importlib, json, pkgutil, sys
import arrowsmith.{package} as pkg
for info in pkgutil.walk_packages(pkg.__path__, "arrowsmith.{package}."):
    importlib.import_module(info.name)
print(json.dumps(sorted(m for m in sys.modules if m.startswith({forbidden!r}))))
"""


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_every_module_loads_no_higher_layer(package):
    code = PROBE.format(package=package, forbidden=FORBIDDEN[package])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
