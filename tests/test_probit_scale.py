"""The probit tasks' scale move: it scales the predictor, its density is the model's along
the group orbit, and its chained draws sample that density.

The oracle is the NumPyro model's own log density: ``log p(T_t theta) + log |J_t| -
log p(theta)``, with the Jacobian counted from the sites' sizes, must equal the move's
target for every ``t``.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density
from scipy.special import ndtr

import bayesfm as bfm
from bayesfm.fm import fm_model, fm_predictor
from bayesfm.probit_scale import probit_scale_move, scale_log_target, scale_sites

from .test_gibbs import rich_problem  # noqa: F401  (module fixture shared with test_gibbs)

# mu0 != 0 so that the means' prior terms of the target are exercised too
PRIOR = bfm.PriorConfig(mu0=0.4)


def _probit_problem(rich_problem, task):  # noqa: F811
    spec, data, params, y, offset = rich_problem
    rng = np.random.default_rng(7)
    params = {k: v for k, v in params.items() if k != "noise_precision"}
    # a quarter of the regression problem's scale keeps most probit probabilities away from
    # 0 and 1
    params = scale_sites(params, spec.structure.groups, jnp.float32(np.log(0.25)))
    offset = offset / 3.0
    if task == "ordinal":
        spec = replace(spec, task="ordinal", n_classes=4, prior=PRIOR)
        params.pop("w0")
        params["cutpoints"] = jnp.array([-0.8, 0.1, 1.3], jnp.float32)
        labels = jnp.asarray(rng.integers(0, 4, y.shape[0]), jnp.int32)
    else:
        spec = replace(spec, task="binary", prior=PRIOR)
        # labels drawn from the model: the model clips Phi(eta) at 1e-7, so a row far on the
        # wrong side of zero would see a clipped likelihood
        eta = np.asarray(_eta(spec, data, params, offset))
        labels = jnp.asarray(rng.uniform(size=eta.shape) < ndtr(eta), jnp.float32)
    return spec, data, params, labels, offset


def _eta(spec, data, params, offset):
    return offset + fm_predictor({"w0": jnp.float32(0.0), **params}, data, spec.structure)


def _log_jacobian(spec, params, t):
    """``log |J_t|`` counted site by site: first-order sites scale by ``c``, factors by
    ``sqrt(c)``, weight precisions by ``c^-2`` and factor precisions by ``c^-1``."""
    groups = spec.structure.groups
    first = np.size(params["cutpoints"] if spec.task == "ordinal" else params["w0"])
    first += sum(np.size(params[f"w_{g}"]) + 1 for g in groups)
    factors = sum(np.size(params[f"v_{g}"]) + spec.rank for g in groups)
    return t * first + 0.5 * t * factors - 2 * t * len(groups) - t * spec.rank * len(groups)


@pytest.mark.parametrize("task", ["ordinal", "binary"])
def test_scale_sites_scale_the_predictor_and_the_cutpoints(rich_problem, task):  # noqa: F811
    spec, data, params, _, offset = _probit_problem(rich_problem, task)
    t = jnp.float32(0.35)
    moved = scale_sites(params, spec.structure.groups, t)
    base = _eta(spec, data, params, offset) - offset
    np.testing.assert_allclose(
        _eta(spec, data, moved, offset) - offset, np.exp(0.35) * base, rtol=2e-5, atol=2e-5
    )
    if task == "ordinal":
        np.testing.assert_allclose(
            moved["cutpoints"], np.exp(0.35) * params["cutpoints"], rtol=1e-6
        )


@pytest.mark.parametrize("task", ["ordinal", "binary"])
def test_scale_target_is_the_model_density_along_the_orbit(rich_problem, task):  # noqa: F811
    spec, data, params, labels, offset = _probit_problem(rich_problem, task)
    groups = spec.structure.groups
    model = partial(fm_model, spec=spec)

    def model_log_density(p):
        return float(log_density(model, (data, offset, labels), {}, p)[0])

    eta = _eta(spec, data, params, offset)
    base = model_log_density(params)
    for t in (-0.4, -0.05, 0.1, 0.5):
        t = jnp.float32(t)
        expected = (
            model_log_density(scale_sites(params, groups, t))
            + _log_jacobian(spec, params, float(t))
            - base
        )
        got = scale_log_target(t, params, groups, eta, offset, labels, 1.0, task, spec.prior)
        assert float(got) == pytest.approx(expected, abs=0.02), (float(t), float(got), expected)


def test_chained_moves_sample_the_orbit_density(rich_problem):  # noqa: F811
    """Each move starts from the identity of the state it is given, so the running total of
    ``t`` over chained moves is a Markov chain on the orbit density of the first state; its
    draws must have the mean and sd of that density, computed on a grid."""
    spec, data, params, labels, offset = _probit_problem(rich_problem, "ordinal")
    groups = spec.structure.groups
    eta = _eta(spec, data, params, offset)
    grid = jnp.linspace(-1.5, 1.5, 3001, dtype=jnp.float32)
    logf = jax.vmap(
        lambda t: scale_log_target(t, params, groups, eta, offset, labels, 1.0, "ordinal", PRIOR)
    )(grid)
    w = np.exp(np.asarray(logf, float) - float(jnp.max(logf)))
    w /= w.sum()
    ref_mean = float(np.sum(w * grid))
    ref_sd = float(np.sqrt(np.sum(w * np.asarray(grid) ** 2) - ref_mean**2))
    assert 0.01 < ref_sd < 0.5  # an orbit the move has to explore, not a point

    @jax.jit
    def step(key, p, eta):
        moved, eta_new = probit_scale_move(
            key, p, groups, eta, offset, labels, 1.0, "ordinal", PRIOR
        )
        return moved, eta_new

    p, e, totals = params, eta, []
    for key in jax.random.split(jax.random.PRNGKey(0), 3000):
        p, e = step(key, p, e)
        # the total scale so far: cutpoints are c_total times the first state's
        totals.append(float(jnp.log(p["cutpoints"][0] / params["cutpoints"][0])))
    np.testing.assert_allclose(e, _eta(spec, data, p, offset), rtol=1e-4, atol=1e-4)
    draws = np.array(totals[100:])
    assert abs(draws.mean() - ref_mean) < 0.1 * ref_sd + 0.01, (draws.mean(), ref_mean)
    assert draws.std() == pytest.approx(ref_sd, rel=0.1)
