"""Ridge moves of the Gibbs sampler: they keep every prediction and draw the exact conditional.

The oracle is the NumPyro model's own log density along each move's direction: its gradient
and Hessian at zero shift must equal the move's ``b`` and ``-P``, and the draws must have the
moments of ``N(P^-1 b, P^-1)``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.infer.util import log_density

from bayesfm.fm import fm_model, fm_predictor
from bayesfm.ridge import (
    RIDGE_MAX_LEVELS,
    apply_factor_shift,
    apply_owned_shift,
    bias_shift,
    factor_shift,
    factor_shift_normal_count,
    factor_shift_system,
    factor_shift_system_given_means,
    owned_shift,
    owned_shift_system,
    ridge_plan,
)

from .test_gibbs import rich_problem  # noqa: F401  (module fixture shared with test_gibbs)


def _model_log_density(spec, data, offset, y, params):
    return log_density(partial(fm_model, spec=spec), (data, offset, y), {}, params)[0]


def test_the_plan_covers_every_owned_attribute_and_no_row_field(rich_problem):  # noqa: F811
    spec, data, *_ = rich_problem
    grams = data["gibbs"]["ridge"]
    owned = {t.dim for t in spec.structure.terms if t.carrier in {"user", "item"}}
    assert set(grams) == owned  # occupation, age, genres, the implicit set; not hour or tags
    assert {"occupation", "age", "genres"} <= set(grams)
    assert not {"hour", "tags"} & set(grams)
    for t in spec.structure.terms:
        if t.dim in grams:
            g = np.asarray(grams[t.dim])
            assert g.shape == (t.n_levels, t.n_levels)
            np.testing.assert_allclose(g, g.T)
            assert np.all(np.linalg.eigvalsh(g) > -1e-5)  # A^T A is positive semi-definite


def _grad_and_hessian(f, n):
    """Gradient and Hessian at zero, in one compiled function."""
    return jax.jit(lambda z: (jax.grad(f)(z), jax.hessian(f)(z)))(jnp.zeros(n))


def test_owned_shift_keeps_predictions_and_matches_the_model_conditional(rich_problem):  # noqa: F811
    spec, data, params, y, offset = rich_problem
    grams = data["gibbs"]["ridge"]
    owned = [t for t in spec.structure.terms if t.dim in grams]
    sizes = np.cumsum([0] + [t.n_levels for t in owned])
    before = fm_predictor(params, data, spec.structure)

    def shifted(c_all):
        p = params
        for t, a, b in zip(owned, sizes[:-1], sizes[1:], strict=True):
            p = apply_owned_shift(p, data, t, c_all[a:b])
        return p

    c = jnp.linspace(-1.5, 2.0, int(sizes[-1]))
    np.testing.assert_allclose(
        fm_predictor(shifted(c), data, spec.structure), before, rtol=1e-5, atol=1e-5
    )
    # all moves at once (one compilation); each move's block of the joint gradient and Hessian
    grad, hess = _grad_and_hessian(
        lambda c_all: _model_log_density(spec, data, offset, y, shifted(c_all)), int(sizes[-1])
    )
    for t, a, b in zip(owned, sizes[:-1], sizes[1:], strict=True):
        precision, shift = owned_shift_system(params, data, grams[t.dim], t)
        np.testing.assert_allclose(grad[a:b], shift, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(-hess[a:b, a:b], precision, rtol=1e-3, atol=1e-3)


def test_owned_shift_draws_have_the_conditional_moments(rich_problem):  # noqa: F811
    spec, data, params, *_ = rich_problem
    grams = data["gibbs"]["ridge"]
    term = next(t for t in spec.structure.terms if t.dim == "genres")
    precision, shift = owned_shift_system(params, data, grams["genres"], term)
    cov = np.linalg.inv(np.asarray(precision, np.float64))
    mean = cov @ np.asarray(shift, np.float64)
    normals = jax.random.normal(jax.random.PRNGKey(1), (20000, term.n_levels))
    draws = jax.jit(jax.vmap(lambda z: owned_shift(params, data, grams["genres"], term, z)))(
        normals
    )
    c = np.asarray(draws["w_genres"] - params["w_genres"], np.float64)
    se = np.sqrt(np.diag(cov) / len(c))
    assert np.all(np.abs(c.mean(0) - mean) < 4.5 * se), (c.mean(0), mean, se)
    np.testing.assert_allclose(np.cov(c.T), cov, rtol=0.06, atol=0.02 * np.abs(cov).max())
    # the owner absorbs the shift exactly
    w_user_total = draws["w_user"] - params["w_user"]
    assert np.all(np.asarray(w_user_total) == 0)  # genres belong to items, not users
    assert not np.allclose(draws["w_item"], params["w_item"])


def test_bias_shift_keeps_predictions_and_matches_the_model_conditional(rich_problem):  # noqa: F811
    spec, data, params, y, offset = rich_problem
    bias_scale = spec.prior.bias_scale
    before = fm_predictor(params, data, spec.structure)
    dims = ("user", "item")

    def shifted(c):
        p = dict(params)
        for i, dim in enumerate(dims):
            p["w0"], p[f"w_{dim}"] = p["w0"] + c[i], p[f"w_{dim}"] - c[i]
        return p

    np.testing.assert_allclose(
        fm_predictor(shifted(jnp.array([0.7, -0.4])), data, spec.structure),
        before,
        rtol=1e-5,
        atol=1e-5,
    )
    grad, hess = _grad_and_hessian(
        lambda c: _model_log_density(spec, data, offset, y, shifted(c)), len(dims)
    )
    normals = jax.random.normal(jax.random.PRNGKey(2), (20000,))
    for i, dim in enumerate(dims):
        precision = -float(hess[i, i])
        mean = float(grad[i]) / precision
        draws = jax.vmap(lambda z, dim=dim: bias_shift(params, dim, bias_scale, z))(normals)
        c = np.asarray(draws["w0"] - params["w0"], np.float64)
        np.testing.assert_allclose(
            np.asarray(draws[f"w_{dim}"]), params[f"w_{dim}"] - c[:, None], rtol=1e-5, atol=1e-5
        )
        sd = 1.0 / np.sqrt(precision)
        assert abs(c.mean() - mean) < 4.5 * sd / np.sqrt(len(c)), (c.mean(), mean)
        np.testing.assert_allclose(c.std(), sd, rtol=0.03)


def test_large_attributes_are_left_to_single_site_updates():
    """An owned attribute with more levels than the cap gets no joint move."""
    from bayesfm.data import Structure, TermInfo

    n_users, n_levels = 5, RIDGE_MAX_LEVELS + 1
    structure = Structure(
        entities=(("user", n_users),),
        terms=(TermInfo(dim="tag", carrier="user", n_levels=n_levels),),
    )
    terms = {"tag": {"unit": np.arange(n_users), "index": np.arange(n_users), "value": np.ones(5)}}
    assert ridge_plan({"terms": terms}, structure) == {}


def _mean_conditionals(spec, p):
    """Log density of every group mean (``w_mu_g``, ``v_mu_g``) under its conditional given
    its members and precision: subtracting it from the joint log density integrates the means
    out (``log p(theta) = log p(theta, mu) - log p(mu | theta)``)."""
    g0, mu0 = spec.prior.gamma0, spec.prior.mu0
    total = 0.0
    for g in spec.structure.groups:
        for kind in ("w", "v"):
            x, lam, mu = p[f"{kind}_{g}"], p[f"{kind}_lambda_{g}"], p[f"{kind}_mu_{g}"]
            n = x.shape[0]
            loc = (g0 * mu0 + n * jnp.mean(x, axis=0)) / (g0 + n)
            total = total + jnp.sum(dist.Normal(loc, 1.0 / jnp.sqrt((g0 + n) * lam)).log_prob(mu))
    return total


def test_factor_shift_keeps_predictions_and_matches_the_collapsed_model_conditional(
    rich_problem,  # noqa: F811
):
    spec, data, params, y, offset = rich_problem
    groups, k = spec.structure.groups, spec.rank
    g0, mu0 = spec.prior.gamma0, spec.prior.mu0
    dims = ("user", "item")
    before = fm_predictor(params, data, spec.structure)

    def shifted(deltas):
        p = params
        for i, dim in enumerate(dims):
            p = apply_factor_shift(p, groups, dim, deltas[i * k : (i + 1) * k])
        return p

    np.testing.assert_allclose(
        fm_predictor(shifted(jnp.linspace(-1.1, 0.8, 2 * k)), data, spec.structure),
        before,
        rtol=1e-4,
        atol=1e-4,
    )

    def collapsed(d):
        p = shifted(d)
        return _model_log_density(spec, data, offset, y, p) - _mean_conditionals(spec, p)

    grad, hess = _grad_and_hessian(collapsed, 2 * k)
    # the joint Hessian's user block is taken at the unshifted point, as is the user move
    for i, dim in enumerate(dims):
        block = slice(i * k, (i + 1) * k)
        precision, shift = factor_shift_system(params, groups, dim, g0, mu0)
        np.testing.assert_allclose(grad[block], shift, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(-hess[block, block], precision, rtol=1e-3, atol=1e-3)
    # given the means (the A/B baseline), the target is the model's own density, and it pins
    # delta far harder: n_user lam_v against gamma0 n / (gamma0 + n) lam_v on the diagonal
    grad_given, hess_given = _grad_and_hessian(
        lambda d: _model_log_density(spec, data, offset, y, shifted(d)), 2 * k
    )
    for i, dim in enumerate(dims):
        block = slice(i * k, (i + 1) * k)
        precision, shift = factor_shift_system_given_means(params, groups, dim)
        np.testing.assert_allclose(grad_given[block], shift, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(-hess_given[block, block], precision, rtol=1e-3, atol=1e-3)
    assert np.all(np.diag(hess_given)[:k] < np.diag(hess)[:k] - 1.0)


def test_factor_shift_draws_delta_then_the_means_from_their_conditionals(rich_problem):  # noqa: F811
    spec, data, params, y, offset = rich_problem
    groups, k = spec.structure.groups, spec.rank
    g0, mu0 = spec.prior.gamma0, spec.prior.mu0
    n_normals = factor_shift_normal_count(k, len(groups), collapsed=True)
    assert n_normals == 2 * k + len(groups) - 1

    def draw(z):
        return factor_shift(params, groups, "user", z, g0, mu0, collapsed=True)

    zero = draw(jnp.zeros(n_normals))
    # a draw moves the entity's factors by one common vector, the others' weights back
    delta0 = np.asarray(zero["v_user"] - params["v_user"])
    np.testing.assert_allclose(delta0, np.broadcast_to(delta0[0], delta0.shape), atol=1e-5)
    np.testing.assert_allclose(zero["v_item"], params["v_item"])
    precision, shift = factor_shift_system(params, groups, "user", g0, mu0)
    cov = np.linalg.inv(np.asarray(precision, np.float64))
    np.testing.assert_allclose(delta0[0], cov @ np.asarray(shift), rtol=1e-3, atol=1e-4)
    # delta's noise: unit normals e_j give the columns of L^-T, so their outer sum is P^-1
    cols = np.stack(
        [
            np.asarray(draw(jnp.eye(n_normals)[j])["v_user"][0] - zero["v_user"][0])
            for j in range(k)
        ],
        axis=1,
    )
    np.testing.assert_allclose(cols @ cols.T, cov, rtol=1e-3, atol=1e-5)
    # the moved means sit at the mode of the model's density given the moved values, and a
    # unit normal puts them one conditional sd away
    means = ["v_mu_user"] + [f"w_mu_{g}" for g in groups if g != "user"]
    untouched = [f"v_mu_{g}" for g in groups if g != "user"] + ["w_mu_user"]

    def log_density_in(name, p):
        return lambda m: _model_log_density(spec, data, offset, y, {**p, name: m})

    for i, name in enumerate(means):
        at = jnp.asarray(zero[name])
        grad = jax.grad(log_density_in(name, zero))(at)
        curvature = -jnp.diagonal(jnp.atleast_2d(jax.hessian(log_density_in(name, zero))(at)))
        np.testing.assert_allclose(grad, 0.0, atol=2e-3 * float(jnp.max(curvature)))
        slot = list(range(k, 2 * k)) if name == "v_mu_user" else [2 * k + i - 1]
        z = jnp.zeros(n_normals).at[jnp.array(slot)].set(1.0)
        np.testing.assert_allclose(
            np.asarray(draw(z)[name]) - np.asarray(at), 1.0 / np.sqrt(curvature), rtol=1e-3
        )
    for name in untouched:
        np.testing.assert_array_equal(zero[name], params[name])


def test_a_sweep_with_the_collapsed_factor_shift_counts_its_variates(rich_problem, monkeypatch):  # noqa: F811
    """The sweep hands out exactly the normals it counted, with the collapsed shift on or
    off (the count is checked while tracing, so no program is compiled)."""
    from bayesfm import gibbs

    spec, data, params, y, offset = rich_problem
    for collapsed in (True, False):
        monkeypatch.setattr(gibbs, "COLLAPSED_FACTOR_SHIFT", collapsed)
        out = jax.eval_shape(
            lambda p, key: gibbs.gibbs_sweep(p, data, offset, y, key, spec),
            params,
            jax.random.PRNGKey(0),
        )
        assert {k: v.shape for k, v in out.items() if k in params} == {
            k: jnp.shape(v) for k, v in params.items()
        }


def test_the_default_factor_shift_is_drawn_given_the_means(rich_problem):  # noqa: F811
    spec, data, params, y, offset = rich_problem
    groups, k = spec.structure.groups, spec.rank
    g0, mu0 = spec.prior.gamma0, spec.prior.mu0
    assert factor_shift_normal_count(k, len(groups)) == k
    precision, shift = factor_shift_system_given_means(params, groups, "item")
    cov = np.linalg.inv(np.asarray(precision, np.float64))
    zero = factor_shift(params, groups, "item", jnp.zeros(k), g0, mu0)
    delta = np.asarray(zero["v_item"][0] - params["v_item"][0])
    np.testing.assert_allclose(delta, cov @ np.asarray(shift), rtol=1e-3, atol=1e-4)
    for g in groups:
        np.testing.assert_array_equal(zero[f"w_mu_{g}"], params[f"w_mu_{g}"])
        np.testing.assert_array_equal(zero[f"v_mu_{g}"], params[f"v_mu_{g}"])
