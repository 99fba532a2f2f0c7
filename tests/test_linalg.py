"""Batched Cholesky and triangular solves against numpy, unrolled and looped variants."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from bayesfm import linalg


@pytest.mark.parametrize("d", [1, 5, linalg.UNROLL_MAX + 3])
def test_cholesky_and_solves_match_numpy(d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(7, d, d))
    spd = a @ np.swapaxes(a, 1, 2) + d * np.eye(d)
    b = rng.normal(size=(7, d))
    low = linalg.cholesky(jnp.asarray(spd, jnp.float32))
    ref = np.linalg.cholesky(spd)
    np.testing.assert_allclose(low, ref, rtol=1e-4, atol=1e-4)
    x = linalg.solve_lower(low, jnp.asarray(b, jnp.float32))
    np.testing.assert_allclose(x, np.linalg.solve(ref, b[..., None])[..., 0], rtol=1e-3, atol=1e-4)
    xt = linalg.solve_lower_transpose(low, jnp.asarray(b, jnp.float32))
    expected = np.linalg.solve(np.swapaxes(ref, 1, 2), b[..., None])[..., 0]
    np.testing.assert_allclose(xt, expected, rtol=1e-3, atol=1e-4)


def test_cholesky_of_an_indefinite_matrix_is_not_finite():
    low = linalg.cholesky(jnp.array([[1.0, 2.0], [2.0, 1.0]]))
    assert not np.all(np.isfinite(np.asarray(low)))
