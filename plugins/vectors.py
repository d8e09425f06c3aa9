"""Vector arithmetic shared by the model plugins and the stages (embed, query, compress).

It lives in ``plugins/``, the bottom layer (cli → commands → plugins), so a plugin uses it
without importing the stages.
"""

from __future__ import annotations

import numpy as np

MIN_NORM = 1e-12  # a zero vector stays zero instead of becoming NaN


def l2_normalize(x: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm; zero rows stay zero.

    Returns a new float32 array, or with ``in_place`` (``x`` must then be a float array) ``x``
    itself, divided where it lies: embed and the plugins normalise large batches they own.
    """
    if in_place:
        out = x
    else:
        x = np.asarray(x, dtype=np.float32)
        out = np.empty_like(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, np.maximum(norms, MIN_NORM), out=out)
    return out
