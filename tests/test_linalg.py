"""Cholesky, triangular solves and Gaussian draws against numpy: unrolled (batch-last) and
looped variants, batched and single matrices."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesfm import linalg


def _spd(rng, batch, d):
    a = rng.normal(size=(*batch, d, d))
    return a @ np.swapaxes(a, -1, -2) + d * np.eye(d)


@pytest.mark.parametrize("unroll", [None, True, False])
@pytest.mark.parametrize("batch", [(2, 3), ()])
@pytest.mark.parametrize("d", [1, 5, linalg.UNROLL_MAX + 3])
def test_cholesky_and_solves_match_numpy(d, batch, unroll):
    rng = np.random.default_rng(d)
    spd = _spd(rng, batch, d)
    b = rng.normal(size=(*batch, d))

    @jax.jit
    def factor_and_solve(a, b):
        low = linalg.cholesky(a, unroll)
        return low, linalg.solve_lower(low, b, unroll), linalg.solve_lower_transpose(low, b, unroll)

    low, x, xt = factor_and_solve(jnp.asarray(spd, jnp.float32), jnp.asarray(b, jnp.float32))
    ref = np.linalg.cholesky(spd)
    np.testing.assert_allclose(low, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x, np.linalg.solve(ref, b[..., None])[..., 0], rtol=1e-3, atol=1e-4)
    expected = np.linalg.solve(np.swapaxes(ref, -1, -2), b[..., None])[..., 0]
    np.testing.assert_allclose(xt, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("unroll", [True, False])
def test_cholesky_of_an_indefinite_matrix_is_not_finite(unroll):
    low = linalg.cholesky(jnp.array([[[1.0, 2.0], [2.0, 1.0]]]), unroll)
    assert not np.all(np.isfinite(np.asarray(low)))


@pytest.mark.parametrize("batch", [(6,), ()])
def test_gaussian_from_normals_is_the_same_map_unrolled_or_looped(batch):
    """x = P^-1 b + L^-T eps, whichever way L is computed."""
    rng = np.random.default_rng(5)
    d = 11
    spd = jnp.asarray(_spd(rng, batch, d), jnp.float32)
    shift = jnp.asarray(rng.normal(size=(*batch, d)), jnp.float32)
    normals = jax.random.normal(jax.random.PRNGKey(0), shift.shape)
    fallback = jnp.zeros(shift.shape)
    draw = jax.jit(linalg.gaussian_from_normals, static_argnames="unroll")
    unrolled = draw(spd, shift, normals, fallback, unroll=True)
    looped = draw(spd, shift, normals, fallback, unroll=False)
    np.testing.assert_allclose(unrolled, looped, rtol=1e-4, atol=1e-5)
    p = np.asarray(spd, np.float64)
    low = np.linalg.cholesky(p)
    expected = (
        np.linalg.solve(p, np.asarray(shift)[..., None])[..., 0]
        + np.linalg.solve(np.swapaxes(low, -1, -2), np.asarray(normals)[..., None])[..., 0]
    )
    np.testing.assert_allclose(unrolled, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("unroll", [True, False])
def test_over_relaxed_draw_is_the_analytic_map_and_keeps_the_gaussian(unroll):
    """x = m + r (x0 - m) + sqrt(1 - r^2) L^-T eps: from x0 ~ N(m, P^-1) the draws are
    N(m, P^-1) again, with cross-covariance r P^-1 to the start."""
    rng = np.random.default_rng(8)
    d, n, relax = 3, 20000, -0.8
    p = _spd(rng, (), d)
    b = rng.normal(size=d)
    mean, cov = np.linalg.solve(p, b), np.linalg.inv(p)
    low = np.linalg.cholesky(p)
    start = mean + rng.normal(size=(n, d)) @ np.linalg.cholesky(cov).T
    normals = rng.normal(size=(n, d))
    batch = (n,) if unroll else ()
    draw = jax.jit(
        jax.vmap(
            partial(linalg.gaussian_from_normals, unroll=unroll, relax=relax),
            in_axes=(None, None, 0, 0),
        )
        if not unroll
        else partial(linalg.gaussian_from_normals, unroll=unroll, relax=relax)
    )
    spd = jnp.asarray(np.broadcast_to(p, (*batch, d, d)), jnp.float32)
    shift = jnp.asarray(np.broadcast_to(b, (*batch, d)) if unroll else b, jnp.float32)
    x = np.asarray(
        draw(spd, shift, jnp.asarray(normals, jnp.float32), jnp.asarray(start, jnp.float32)),
        np.float64,
    )
    expected = (
        mean + relax * (start - mean) + np.sqrt(1 - relax**2) * np.linalg.solve(low.T, normals.T).T
    )
    np.testing.assert_allclose(x, expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(x.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.03)
    cross = (x - mean).T @ (start - mean) / n
    np.testing.assert_allclose(cross, relax * cov, atol=0.03)


@pytest.mark.parametrize("relax", [1.0, -1.5])
def test_over_relaxation_outside_the_open_interval_is_refused(relax):
    eye = jnp.eye(2)
    with pytest.raises(ValueError, match=r"relax: got .*allowed values lie in \(-1, 1\)"):
        linalg.gaussian_from_normals(eye, jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), relax=relax)
