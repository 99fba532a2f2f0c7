"""MF's collapsed scale exchange: it keeps every prediction, its target is the columns'
Normal–Gamma marginal (checked by quadrature in ``test_rotation.py``) along the orbit, and its
chained Metropolis steps sample that density."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesfm as bfm
from bayesfm.exchange import exchange_log_target, exchange_scales
from bayesfm.rotation import collapsed_log_density


def test_exchange_keeps_predictions_and_samples_its_collapsed_orbit_density():
    """MF's scale exchange: every dot product is kept, and the running total of ``t`` over
    chained moves has the mean and sd of the orbit density of the first state, computed on a
    grid from the columns' Normal–Gamma marginal (checked by quadrature in test_rotation)."""
    rng = np.random.default_rng(4)
    prior = bfm.PriorConfig()
    v_a = jnp.asarray(rng.normal(0.3, 1.0, (7, 2)), jnp.float32)
    v_b = jnp.asarray(rng.normal(-0.2, 0.7, (4, 2)), jnp.float32)

    def one(carry, key):
        va, vb, total = carry
        normals = jax.random.normal(key, (3, 2, 2))  # one step of each proposal scale
        va, vb, t = exchange_scales(va, vb, normals, prior)
        return (va, vb, total + t), total + t

    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    (va, vb, _), path = jax.jit(lambda k: jax.lax.scan(one, (v_a, v_b, jnp.zeros(2)), k))(keys)
    np.testing.assert_allclose(va @ vb.T, v_a @ v_b.T, rtol=1e-4, atol=1e-5)
    path = np.asarray(path, np.float64)[500:]
    grid = np.linspace(-12.0, 12.0, 24001)
    hyper = (prior.alpha0, prior.beta0, prior.gamma0, prior.mu0)
    for f in range(2):
        a, b = np.asarray(v_a[:, f], np.float64), np.asarray(v_b[:, f], np.float64)
        c = np.exp(grid)
        logp = (
            np.asarray(collapsed_log_density(c * c * np.sum(a * a), c * np.sum(a), 7.0, *hyper))
            + np.asarray(collapsed_log_density(np.sum(b * b) / c**2, np.sum(b) / c, 4.0, *hyper))
            + 3.0 * grid
        )
        target = np.asarray(
            jax.vmap(
                lambda t, f=f: exchange_log_target(
                    t,
                    (jnp.sum(v_a[:, f] ** 2), jnp.sum(v_a[:, f]), jnp.float32(7)),
                    (jnp.sum(v_b[:, f] ** 2), jnp.sum(v_b[:, f]), jnp.float32(4)),
                    prior,
                )
            )(jnp.asarray(grid[::1000], jnp.float32))
        )
        np.testing.assert_allclose(target - target[12], logp[::1000] - logp[12000], atol=1e-3)
        p = np.exp(logp - logp.max())
        assert p[0] < 1e-8 and p[-1] < 1e-8
        p /= p.sum()
        mean = np.sum(p * grid)
        sd = np.sqrt(np.sum(p * (grid - mean) ** 2))
        draws = path[:, f]
        rho = np.corrcoef(draws[:-1], draws[1:])[0, 1]
        se = sd * np.sqrt((1 + rho) / (1 - rho) / draws.size)
        assert abs(draws.mean() - mean) < 4 * se, (f, draws.mean(), mean, se)
        assert draws.std() == pytest.approx(sd, rel=0.1)
