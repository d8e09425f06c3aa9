"""Unit tests of the helpers the stages share (one implementation per job, issue 10)."""

from __future__ import annotations

import numpy as np

from arrowsmith.plugins.vectors import l2_normalize

# ------------------------------------------------------------------ l2_normalize


def test_l2_normalize_returns_unit_float32_rows_and_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-2.0, 0.0]])  # float64 in
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], atol=1e-7)
    assert x[0, 0] == 3.0  # the input is untouched


def test_l2_normalize_in_place_divides_the_given_array():
    x = np.array([[1.0, 1.0], [0.0, 5.0]], dtype=np.float32)
    out = l2_normalize(x, in_place=True)
    assert out is x
    np.testing.assert_allclose(x, [[2 ** -0.5, 2 ** -0.5], [0.0, 1.0]], atol=1e-7)
