"""Gibbs for the probit tasks: truncated normals, the cutpoint update, agreement with NUTS."""

from __future__ import annotations

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import log_ndtr

import bayesfm as bfm
from bayesfm.augment import (
    CUTPOINT_PRIOR_SCALE,
    truncated_normal,
    update_cutpoints,
    utility_bounds,
)
from bayesfm.datasets import make_synthetic

SIDE = [
    bfm.Categorical("user_id"),
    bfm.Categorical("item_id"),
    bfm.Categorical("occupation", owner="user_id"),
    bfm.MultiHot("genres", owner="item_id"),
]


@pytest.mark.parametrize(
    ("mean", "lower", "upper"),
    [
        (0.0, 0.0, np.inf),  # a binary positive
        (0.3, -np.inf, -0.2),
        (-1.0, 0.5, 1.5),  # two-sided, off the mean
        (-9.0, 0.0, np.inf),  # deep upper tail: plain inverse CDF loses all precision
        (7.5, -np.inf, 0.0),  # deep lower tail
        (2.0, 1.999, 2.001),  # a narrow class interval
        (13.0, -np.inf, 0.0),  # 13 sd: float32 ndtr is subnormal there
        (0.0, 13.1, 13.2),  # narrow and deep
        (-20.0, 0.0, np.inf),
    ],
)
def test_truncated_normal_has_the_analytic_moments(mean, lower, upper):
    n = 200_000
    ones = jnp.ones(n, jnp.float32)
    draws = np.asarray(
        truncated_normal(jax.random.PRNGKey(0), mean * ones, lower * ones, upper * ones)
    )
    assert np.all((draws >= lower) & (draws <= upper)), (draws.min(), draws.max())
    ref = stats.truncnorm(lower - mean, upper - mean, loc=mean)
    sd = ref.std()
    assert abs(draws.mean() - ref.mean()) < 5 * sd / np.sqrt(n) + 1e-4 * abs(ref.mean())
    assert draws.std() == pytest.approx(sd, rel=0.02)


def test_utility_bounds_follow_the_labels():
    cut = jnp.array([-1.0, 0.5, 2.0])
    lo, hi = utility_bounds(jnp.array([0, 1, 3]), "ordinal", cut)
    np.testing.assert_array_equal(np.asarray(lo), [-np.inf, -1.0, 2.0])
    np.testing.assert_array_equal(np.asarray(hi), [-1.0, 0.5, np.inf])
    lo, hi = utility_bounds(jnp.array([0, 1]), "binary")
    np.testing.assert_array_equal(np.asarray(lo), [-np.inf, 0.0])
    np.testing.assert_array_equal(np.asarray(hi), [0.0, np.inf])


def test_cutpoint_update_samples_its_conditional():
    """Slice sweeps over two cutpoints reproduce the posterior mean and sd computed on a
    grid of the unconstrained cutpoints (utilities integrated out)."""
    rng = np.random.default_rng(0)
    eta = rng.normal(0.0, 0.8, 40)
    labels = np.digitize(eta + rng.normal(size=40), [-0.4, 0.6])  # classes 0, 1, 2

    def log_post(x0, x1):  # the model's prior on the unconstrained cutpoints + likelihood
        c0, c1 = x0, x0 + np.exp(x1)
        edges = np.stack(np.broadcast_arrays(-np.inf, c0, c1, np.inf))
        out = -0.5 * (x0**2 + x1**2) / CUTPOINT_PRIOR_SCALE**2
        for e, y in zip(eta, labels, strict=True):
            upper = edges[y + 1] - e
            lower = edges[y] - e
            # log(Phi(upper) - Phi(lower)), stable
            out = out + log_ndtr(upper) + np.log1p(-np.exp(log_ndtr(lower) - log_ndtr(upper)))
        return out

    x0, x1 = np.meshgrid(np.linspace(-2.5, 1.5, 401), np.linspace(-2.0, 1.5, 401), indexing="ij")
    lp = log_post(x0, x1)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    c0, c1 = x0, x0 + np.exp(x1)
    ref_mean = [np.sum(w * c0), np.sum(w * c1)]
    ref_sd = [np.sqrt(np.sum(w * c**2) - m**2) for c, m in ((c0, ref_mean[0]), (c1, ref_mean[1]))]

    step = jax.jit(
        lambda key, c: update_cutpoints(key, c, jnp.asarray(eta, jnp.float32), jnp.asarray(labels))
    )
    c = jnp.array([-0.5, 0.5], jnp.float32)
    draws = []
    for key in jax.random.split(jax.random.PRNGKey(1), 4000):
        c = step(key, c)
        draws.append(np.asarray(c))
    draws = np.array(draws[200:])
    ess = np.asarray(az.ess(az.convert_to_dataset(draws[None]))["x"])  # (chain, draw, cut)
    mcse = draws.std(0) / np.sqrt(ess)
    assert np.all(np.abs(draws.mean(0) - ref_mean) < 4 * mcse + 0.01), (draws.mean(0), ref_mean)
    np.testing.assert_allclose(draws.std(0), ref_sd, rtol=0.1)


@pytest.fixture(scope="module")
def probit_data():
    data = make_synthetic(n_users=40, n_items=30, n_obs=800, rank=2, noise_sd=0.5, seed=3)
    labels = {
        "binary": (data.y >= np.median(data.y)).astype(int),
        "ordinal": np.digitize(data.y, np.quantile(data.y, [0.15, 0.45, 0.8])) + 1,
    }
    return data, labels


def _fit(probit_data, task, inference):
    data, labels = probit_data
    model = bfm.BayesianFM(
        rank=2, features=bfm.FeatureSpec(SIDE), task=task, inference=inference, progress_bar=False
    )
    return model.fit(data.X.iloc[100:], labels[task][100:])


@pytest.mark.slow
@pytest.mark.parametrize("task", ["binary", "ordinal"])
def test_probit_gibbs_agrees_with_nuts(probit_data, task):
    """Class probabilities on held-out rows (and, for the ordinal task, the cutpoints) have
    the same posterior means under Gibbs and NUTS, within their Monte Carlo errors."""
    gibbs = _fit(probit_data, task, bfm.GibbsConfig(num_warmup=300, num_samples=500, num_chains=2))
    nuts = _fit(
        probit_data,
        task,
        bfm.NUTSConfig(
            num_warmup=150, num_samples=200, num_chains=2, init_svi_steps=300, max_tree_depth=6
        ),
    )
    assert gibbs.draws_.method == "gibbs" and "noise_precision" not in gibbs.draws_.samples
    probe = probit_data[0].X.iloc[:60]
    # E[y | draw]: P(y = 1) for the binary task, the expected class for the ordinal one
    pg, pn = (m.predict_posterior(probe, latent=True).values for m in (gibbs, nuts))
    np.testing.assert_allclose(pg.mean((0, 1)), gibbs.predict(probe), rtol=1e-4, atol=1e-5)

    def mcse(draws):  # (chain, draw, k) -> (k,)
        return np.asarray(az.mcse(az.convert_to_dataset(draws))["x"])

    diff = pg.mean((0, 1)) - pn.mean((0, 1))
    z = diff / np.hypot(mcse(pg), mcse(pn))
    assert np.mean(np.abs(z) < 4) >= 0.95, z
    assert abs(np.mean(diff)) < (0.03 if task == "binary" else 0.1)  # no systematic shift
    if task == "ordinal":
        cg, cn = (m.draws_.samples["cutpoints"] for m in (gibbs, nuts))
        z = (cg.mean((0, 1)) - cn.mean((0, 1))) / np.hypot(
            mcse(cg[:, :, None]), mcse(cn[:, :, None])
        )[0]
        assert np.all(np.abs(z) < 4), (cg.mean((0, 1)), cn.mean((0, 1)))
        assert cg.std((0, 1)) == pytest.approx(cn.std((0, 1)), rel=0.3)


def test_gibbs_refuses_the_logit_link():
    X = pd.DataFrame({"user_id": [0, 1, 0], "item_id": [0, 0, 1]})
    model = bfm.BayesianMF(rank=2, task="binary", link="logit", inference="gibbs")
    with pytest.raises(
        ValueError, match="link: got 'logit'; the Gibbs sampler needs link='probit'"
    ):
        model.fit(X, np.array([0, 1, 1]))
    assert not hasattr(model, "draws_")
