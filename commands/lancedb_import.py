"""Import lancedb without the REST client it never uses on a local store (issue 12).

``import lancedb`` imports ``lance_namespace``, which imports the generated REST client package
``lance_namespace_urllib3_client``: its ``__init__`` loads every API module (urllib3 and a
pydantic-validated method per endpoint), about 45% of lancedb's import time, for a remote
namespace that a local ``--db`` directory never talks to. ``lance_namespace`` only needs the
package's ``models`` submodule. :func:`import_lancedb` registers the package without running its
``__init__``; the first attribute anybody reads from the package runs the real ``__init__``
then, so code that does use the REST client still gets all of it.
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


def import_lancedb():
    """``lancedb``, imported with the REST client package's ``__init__`` deferred (see above)."""
    if "lancedb" not in sys.modules and REST_CLIENT not in sys.modules:
        spec = importlib.util.find_spec(REST_CLIENT)
        if spec is not None and spec.submodule_search_locations is not None and spec.loader:
            package = _DeferredPackage(REST_CLIENT)
            vars(package).update(__spec__=spec, __loader__=spec.loader, __file__=spec.origin,
                                 __package__=REST_CLIENT, __path__=list(spec.submodule_search_locations))
            sys.modules[REST_CLIENT] = package
    import lancedb

    return lancedb
