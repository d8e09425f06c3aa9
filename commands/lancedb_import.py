"""Import lancedb without the REST client it never uses on a local store (issue 12).

``import lancedb`` imports ``lance_namespace``, which imports the generated REST client package
``lance_namespace_urllib3_client``: its ``__init__`` loads every API module (urllib3 and a
pydantic-validated method per endpoint), about 45% of lancedb's import time, for a remote
namespace that a local ``--db`` directory never talks to. ``lance_namespace`` only needs the
package's ``models`` submodule. :func:`import_lancedb` registers the package without running its
``__init__``; the first attribute anybody reads from the package runs the real ``__init__``
then, so code that does use the REST client still gets all of it.

On Python < 3.12 lancedb takes ``override`` from the ``overrides`` package, which checks each
decorated method's signature against its base class while lancedb's classes are defined: it
disassembles the defining frame's bytecode to find the base classes, ~0.1 s of every import
(0.82 against 0.72 s, means of 8 alternated runs here). Python 3.12's ``typing.override``,
which lancedb uses there, only marks the method. :func:`import_lancedb` lends lancedb that
marking decorator for its import and puts the package's own back: a check for lancedb's
developers, not for a run over a local store.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

REST_CLIENT = "lance_namespace_urllib3_client"


class _DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` runs on first attribute access; submodules import as usual."""

    def __getattr__(self, attr: str) -> Any:  # only called for attributes not set yet
        if attr.startswith("__") or self.__name__ in _RAN:
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")
        _RAN.add(self.__name__)
        self.__spec__.loader.exec_module(self)
        return getattr(self, attr)


_RAN: set[str] = set()  # deferred packages whose __init__ has run


def _marking_override(method: Any = None, **_options: Any) -> Any:
    """``typing.override``'s behaviour, in ``overrides.override``'s call forms."""
    if method is None:
        return _marking_override
    method.__override__ = True
    return method


def import_lancedb():
    """``lancedb``, imported with the REST client package's ``__init__`` deferred and without
    ``overrides``' signature checks (see above)."""
    if "lancedb" in sys.modules:
        return sys.modules["lancedb"]
    if REST_CLIENT not in sys.modules:
        spec = importlib.util.find_spec(REST_CLIENT)
        if spec is not None and spec.submodule_search_locations is not None and spec.loader:
            package = _DeferredPackage(REST_CLIENT)
            vars(package).update(__spec__=spec, __loader__=spec.loader, __file__=spec.origin,
                                 __package__=REST_CLIENT, __path__=list(spec.submodule_search_locations))
            sys.modules[REST_CLIENT] = package
    checking = None
    if sys.version_info < (3, 12):
        try:
            import overrides
        except ImportError:
            overrides = None
        if overrides is not None:
            checking, overrides.override = overrides.override, _marking_override
    try:
        import lancedb
    finally:
        if checking is not None:
            overrides.override = checking
    return lancedb
