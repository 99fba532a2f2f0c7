"""The mean-field guide of full-batch SVI against analytic optima."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer.autoguide import AutoNormal

from bayesfm.inference import SVIConfig, _make_guide, fit_svi

N_PER_GROUP, N_SCALE = 99, 200


def _model(y, z):
    """Three unit-noise means (Normal prior) and one precision (Gamma prior), independent."""
    with numpyro.plate("group", y.shape[0]):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    lam = numpyro.sample("lam", dist.Gamma(2.0, 2.0))
    with numpyro.plate("g", y.shape[0], dim=-2), numpyro.plate("n", y.shape[1], dim=-1):
        numpyro.sample("y", dist.Normal(mu[:, None], 1.0), obs=y)
    with numpyro.plate("m", z.shape[0]):
        numpyro.sample("z", dist.Normal(0.0, 1.0 / jnp.sqrt(lam)), obs=z)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.normal([[-1.0], [0.5], [2.0]], 1.0, size=(3, N_PER_GROUP)).astype(np.float32)
    z = rng.normal(0.0, 0.7, size=N_SCALE).astype(np.float32)
    return jnp.asarray(y), jnp.asarray(z)


def test_guide_reaches_the_analytic_mean_field_optimum(data):
    """Means: the exact Normal posterior. Precision: the KL-optimal log-normal fit of its
    Gamma(a, b) posterior, log-scale mean log(a / b) - 1 / (2a) and sd 1 / sqrt(a)."""
    y, z = data
    init = {"mu": jnp.zeros(3), "lam": jnp.ones(())}
    cfg = SVIConfig(num_steps=4000, progress_bar=False)
    guide, params, _, _ = fit_svi(_model, (y, z), cfg, jax.random.PRNGKey(1), init)
    assert isinstance(guide, AutoNormal)  # same parameters as numpyro's guide
    post_sd = 1.0 / np.sqrt(N_PER_GROUP + 1)
    post_mean = np.asarray(y.sum(1)) / (N_PER_GROUP + 1)
    np.testing.assert_allclose(params["mu_auto_loc"], post_mean, atol=0.2 * post_sd)
    np.testing.assert_allclose(params["mu_auto_scale"], post_sd, rtol=0.1)
    a, b = 2.0 + N_SCALE / 2, 2.0 + float(jnp.sum(z**2)) / 2
    assert float(params["lam_auto_loc"]) == pytest.approx(
        np.log(a / b) - 1 / (2 * a), abs=0.2 / np.sqrt(a)
    )
    assert float(params["lam_auto_scale"]) == pytest.approx(1 / np.sqrt(a), rel=0.1)


def test_each_site_draw_is_its_own_loc_plus_scale_times_noise(data):
    """One flat noise draw still gives every site (and every element) independent draws with
    the site's location and scale, through the site's transform (exp for the precision)."""
    y, z = data
    guide = _make_guide(_model, SVIConfig(), {"mu": jnp.zeros(3), "lam": jnp.ones(())})
    handlers.seed(guide, 0)(y, z)  # sets up the sites
    params = {
        "mu_auto_loc": jnp.array([-1.0, 0.0, 3.0]),
        "mu_auto_scale": jnp.array([0.5, 1.0, 2.0]),
        "lam_auto_loc": jnp.array(0.3),
        "lam_auto_scale": jnp.array(0.2),
    }

    def draw(key):
        with handlers.trace() as tr, handlers.seed(rng_seed=key):
            handlers.substitute(guide, data=params)(y, z)
        return tr["mu"]["value"], tr["lam"]["value"]

    mu, lam = jax.vmap(draw)(jax.random.split(jax.random.PRNGKey(2), 4000))
    mu, log_lam = np.asarray(mu), np.log(np.asarray(lam))
    np.testing.assert_allclose(mu.mean(0), [-1.0, 0.0, 3.0], atol=4 * 2.0 / np.sqrt(4000))
    np.testing.assert_allclose(mu.std(0), [0.5, 1.0, 2.0], rtol=0.05)
    assert log_lam.mean() == pytest.approx(0.3, abs=4 * 0.2 / np.sqrt(4000))
    assert log_lam.std() == pytest.approx(0.2, rel=0.05)
    corr = np.corrcoef(np.column_stack([mu, log_lam]).T)
    assert np.abs(corr - np.eye(4)).max() < 0.1  # no two sites share their noise
