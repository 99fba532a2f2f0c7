"""The factor rotation move of the Gibbs sampler: its collapsed target against quadrature,
the invariance of predictions, and stationarity along the orbit."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, stats

from bayesfm.rotation import collapsed_log_density, rotate_factors, rotation_normal_count

PRIOR = dict(alpha0=0.5, beta0=0.5, gamma0=1.0, mu0=0.0)


def _marginal_by_quadrature(x: np.ndarray) -> float:
    """log of the integral over (mu, lambda) of N(x | mu, 1/lambda) NormalGamma(mu, lambda),
    by the trapezoid rule on a fine grid of (mu, log lambda)."""
    a0, b0, g0, mu0 = PRIOR["alpha0"], PRIOR["beta0"], PRIOR["gamma0"], PRIOR["mu0"]
    mu = np.linspace(-8.0, 8.0, 1601)[:, None]
    log_lam = np.linspace(-12.0, 6.0, 1801)[None, :]
    lam = np.exp(log_lam)
    log_f = (
        np.sum(stats.norm.logpdf(x[:, None, None], mu, 1.0 / np.sqrt(lam)), axis=0)
        + stats.norm.logpdf(mu, mu0, 1.0 / np.sqrt(g0 * lam))
        + stats.gamma.logpdf(lam, a0, scale=1.0 / b0)
        + log_lam  # d lambda = lambda d log lambda
    )
    peak = log_f.max()
    inner = integrate.trapezoid(np.exp(log_f - peak), log_lam[0], axis=1)
    return float(peak + np.log(integrate.trapezoid(inner, mu[:, 0])))


def test_collapsed_density_matches_quadrature_of_the_normal_gamma_marginal():
    rng = np.random.default_rng(0)
    columns = [rng.normal(0.3, 0.8, 5), rng.normal(-0.5, 1.5, 5), rng.normal(0.0, 0.4, 5)]
    exact = np.array([_marginal_by_quadrature(x) for x in columns])
    ours = np.array(
        [
            float(collapsed_log_density(jnp.sum(x**2), jnp.sum(x), jnp.float32(5), **PRIOR))
            for x in columns
        ]
    )
    # equal up to one constant (it depends on n only)
    np.testing.assert_allclose(ours - ours[0], exact - exact[0], atol=2e-3)
    assert np.ptp(exact) > 0.5  # the columns differ enough for the check to mean something


def _tables(seed: int = 1, rank: int = 3):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.2, 1.0, (7, rank)) * np.array([1.5, 0.4, 0.8])[:rank]
    b = rng.normal(-0.1, 0.6, (5, rank))
    return [jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)]


def test_rotation_is_orthogonal_and_keeps_every_dot_product():
    tables = _tables()
    normals = jax.random.normal(jax.random.PRNGKey(0), (rotation_normal_count(3),))
    turned, accepted = rotate_factors(tables, normals, **PRIOR)
    a, b = (np.asarray(t) for t in tables)
    a2, b2 = (np.asarray(t) for t in turned)
    np.testing.assert_allclose(a2 @ b2.T, a @ b.T, atol=1e-5)
    np.testing.assert_allclose(a2 @ a2.T, a @ a.T, atol=1e-5)
    assert float(accepted) > 0.0
    assert not np.allclose(a2, a, atol=1e-3)  # it did turn


def _orbit_log_density(tables, theta: np.ndarray) -> np.ndarray:
    """The collapsed target of ``V_g R(theta)`` (rank 2) for every ``theta``."""
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    out = np.zeros(len(theta))
    for t in tables:
        t = np.asarray(t, np.float64)
        f = c[..., 0] * t[None, :, 0] - s[..., 0] * t[None, :, 1]
        h = s[..., 0] * t[None, :, 0] + c[..., 0] * t[None, :, 1]
        for col in (f, h):
            n = col.shape[1]
            sq, total = np.sum(col**2, 1), np.sum(col, 1)
            mean = total / n
            rate = (
                PRIOR["beta0"]
                + 0.5 * (sq - total * mean)
                + 0.5 * PRIOR["gamma0"] * n * (mean - PRIOR["mu0"]) ** 2 / (PRIOR["gamma0"] + n)
            )
            out -= (PRIOR["alpha0"] + 0.5 * n) * np.log(rate)
    return out


def _angle(base: np.ndarray, turned: np.ndarray) -> np.ndarray:
    """theta with ``turned = base R(theta)`` (rank 2), per chain."""
    r = np.linalg.lstsq(base, turned.reshape(base.shape[0], -1), rcond=None)[0]
    r = r.reshape(2, 2, -1)
    return np.arctan2(r[0, 1], r[0, 0])


def test_rotation_leaves_the_orbit_distribution_invariant():
    """Start 4000 chains from exact draws of the target along the orbit; after the move the
    angles must still follow it (a wrong acceptance ratio shifts them)."""
    base = _tables(seed=3, rank=2)
    grid = np.linspace(-np.pi, np.pi, 20001)
    logp = _orbit_log_density(base, grid)
    pdf = np.exp(logp - logp.max())
    cdf = np.cumsum(pdf)
    cdf /= cdf[-1]
    rng = np.random.default_rng(0)
    n_chains = 4000
    theta0 = np.interp(rng.uniform(size=n_chains), cdf, grid)

    def turn(theta):
        c, s = jnp.cos(theta), jnp.sin(theta)
        r = jnp.array([[c, s], [-s, c]])
        return [t @ r for t in base]

    def move(theta, key):
        tables = turn(theta)
        normals = jax.random.normal(key, (rotation_normal_count(2),))
        out, _ = rotate_factors(tables, normals, **PRIOR)
        return out[0]

    keys = jax.random.split(jax.random.PRNGKey(1), n_chains)
    after = np.asarray(jax.vmap(move)(jnp.asarray(theta0, jnp.float32), keys), np.float64)
    theta1 = _angle(np.asarray(base[0], np.float64), after.transpose(1, 2, 0))
    moved = np.abs(np.angle(np.exp(1j * (theta1 - theta0))))
    assert np.mean(moved > 0.01) > 0.3  # the move is not the identity
    # the target is not flat along the orbit, so invariance is a real constraint
    assert pdf.max() / pdf.min() > 5.0
    p_value = stats.kstest(theta1, lambda x: np.interp(x, grid, cdf)).pvalue
    assert p_value > 0.01, p_value


def test_rank_one_has_nothing_to_turn():
    tables = _tables(rank=1)
    out, accepted = rotate_factors(tables, jnp.zeros((rotation_normal_count(1),)), **PRIOR)
    assert rotation_normal_count(1) == 0
    np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(tables[0]))
    assert float(accepted) == 0.0
