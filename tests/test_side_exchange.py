"""FM's side exchange (``bayesfm.exchange.side_exchange``) and attribute mean shifts
(``bayesfm.attribute_shift``): the moves with the weights' shear keep every prediction, and
chained Metropolis steps sample the priors along each orbit (factor columns collapsed over
their hyperparameters, weights given theirs, with the Jacobian), computed here on a grid from
the moved state itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import bayesfm as bfm
from bayesfm.attribute_shift import apply_mean_shift, owner_mean_shifts, shifted_terms
from bayesfm.data import FittedEncoder
from bayesfm.exchange import apply_side_scaling, side_exchange, side_tables
from bayesfm.fm import ModelSpec, fm_predictor
from bayesfm.gibbs import _has_side_exchange
from bayesfm.inference import to_jax
from bayesfm.rotation import collapsed_log_density


def _problem(rank: int, seed: int = 5):
    """Users with an occupation, an age and an implicit set; items with genres; no
    row-level field. Random values for every site."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n = 7, 5, 24
    cells = rng.choice(n_users * n_items, n, replace=False)
    users, items = cells // n_items, cells % n_items
    occupation = rng.choice(["a", "b", "c"], n_users)
    age = rng.integers(18, 70, n_users)
    genres = [tuple(rng.choice(list("xyz"), rng.integers(1, 3), replace=False)) for _ in range(5)]
    X = pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "occupation": occupation[users],
            "age": age[users],
            "genres": [genres[i] for i in items],
        }
    )
    fields = [
        bfm.Categorical("user_id"),
        bfm.Categorical("item_id"),
        bfm.Categorical("occupation", owner="user_id"),
        bfm.Numeric("age", owner="user_id"),
        bfm.MultiHot("genres", owner="item_id"),
        bfm.Implicit(owner="user_id", members="item_id"),
    ]
    encoder = FittedEncoder.fit(bfm.FeatureSpec(fields), X)
    structure = encoder.structure
    data = to_jax(encoder.transform(X).arrays())
    params = {"w0": jnp.float32(0.1)}
    for g in structure.groups:
        n_lev = structure.n_levels(g)
        params[f"w_{g}"] = jnp.asarray(rng.normal(size=n_lev), jnp.float32)
        params[f"v_{g}"] = jnp.asarray(rng.normal(0.2, 0.8, (n_lev, rank)), jnp.float32)
        params[f"w_mu_{g}"] = jnp.float32(rng.normal(0.0, 0.3))
        params[f"w_lambda_{g}"] = jnp.float32(rng.gamma(3.0, 0.5))
    return ModelSpec(structure=structure, rank=rank), data, params


def _assert_draws_follow(draws: np.ndarray, grid: np.ndarray, logp: np.ndarray) -> None:
    """The autocorrelated ``draws`` have the mean (within 4 MCSE) and the sd (within 10%) of
    the density ``exp(logp)`` on ``grid``, which must hold all its mass."""
    p = np.exp(logp - logp.max())
    assert p[0] < 1e-6 and p[-1] < 1e-6
    p /= p.sum()
    mean = np.sum(p * grid)
    sd = np.sqrt(np.sum(p * (grid - mean) ** 2))
    rho = np.corrcoef(draws[:-1], draws[1:])[0, 1]
    se = sd * np.sqrt((1 + rho) / (1 - rho) / draws.size)
    assert abs(draws.mean() - mean) < 4 * se, (draws.mean(), mean, se)
    assert draws.std() == pytest.approx(sd, rel=0.1)


def test_side_scaling_keeps_every_prediction():
    spec, data, params = _problem(rank=3)
    structure = spec.structure
    assert _has_side_exchange(structure)
    assert set(side_tables(structure, "user")) == {"user", "occupation", "age", "implicit_item"}
    before = fm_predictor(params, data, structure)
    moved = apply_side_scaling(params, data, structure, jnp.asarray([0.7, -0.4, 1.1]))
    np.testing.assert_allclose(fm_predictor(moved, data, structure), before, rtol=1e-4, atol=1e-4)
    # the shear is needed: scaling the sides alone changes the within-side interactions
    bare = {**moved, "w_user": params["w_user"], "w_item": params["w_item"]}
    assert np.max(np.abs(np.asarray(fm_predictor(bare, data, structure) - before))) > 0.1


def test_side_exchange_samples_the_collapsed_orbit_density():
    """Rank 1: the running total of ``t`` over chained moves has the mean and sd of the orbit
    density of the first state: the Normal–Gamma marginal of every moved factor column, the
    Normal prior of both entities' weights given their hyperparameters, plus the Jacobian
    ``(n_a - n_b) t``."""
    spec, data, params = _problem(rank=1)
    structure, prior = spec.structure, bfm.PriorConfig()
    hyper = (prior.alpha0, prior.beta0, prior.gamma0, prior.mu0)
    up = side_tables(structure, "user")
    down = side_tables(structure, "item")
    n_net = sum(structure.n_levels(g) for g in up) - sum(structure.n_levels(g) for g in down)
    assert n_net != 0  # so that a missing Jacobian would show

    def orbit_log_density(t):
        moved = apply_side_scaling(params, data, structure, jnp.asarray([t], jnp.float32))
        x = [moved[f"v_{g}"][:, 0] for g in up + down]
        weights = sum(
            -0.5
            * float(params[f"w_lambda_{e}"] * jnp.sum((moved[f"w_{e}"] - params[f"w_mu_{e}"]) ** 2))
            for e in ("user", "item")
        )
        return (
            sum(
                float(collapsed_log_density(jnp.sum(c * c), jnp.sum(c), float(c.shape[0]), *hyper))
                for c in x
            )
            + weights
            + n_net * float(t)
        )

    def one(carry, key):
        p, total = carry
        p, t = side_exchange(p, data, structure, jax.random.normal(key, (3, 2, 1)), prior)
        return (p, total + t), total + t

    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    (_, _), path = jax.jit(lambda k: jax.lax.scan(one, (params, jnp.zeros(1)), k))(keys)
    draws = np.asarray(path, np.float64)[500:, 0]
    grid = np.linspace(-4.0, 4.0, 1601)
    _assert_draws_follow(draws, grid, np.array([orbit_log_density(t) for t in grid]))


def test_attribute_mean_shift_keeps_every_prediction():
    spec, data, params = _problem(rank=3)
    structure = spec.structure
    before = fm_predictor(params, data, structure)
    terms = shifted_terms(structure)
    assert {t.dim for t in terms} == {"occupation", "age", "genres", "implicit_item"}
    for term, delta in zip(
        terms, ([0.5, -0.3, 0.8], [1.2, 0.1, -0.6], [-0.4, 0.9, 0.2], [0.3, 0.3, -1.0]), strict=True
    ):
        moved = apply_mean_shift(params, data, term, jnp.asarray(delta))
        np.testing.assert_allclose(
            fm_predictor(moved, data, structure), before, rtol=1e-4, atol=1e-4, err_msg=term.dim
        )
        # the weights' shear is needed
        bare = {**moved, f"w_{term.carrier}": params[f"w_{term.carrier}"]}
        assert np.max(np.abs(np.asarray(fm_predictor(bare, data, structure) - before))) > 0.05


@pytest.mark.parametrize("dim", ["occupation", "implicit_item"])
def test_attribute_mean_shift_samples_its_collapsed_density(dim):
    """Rank 1: chained moves of one attribute (one-hot, and an implicit set whose owners
    carry it with weight ``sqrt(n_u)``) have the mean and sd of the density of the total
    shift: the Normal–Gamma marginals of the moved attribute and owner columns and the Normal
    prior of the owner's weights given their hyperparameters (unit Jacobian)."""
    spec, data, params = _problem(rank=1)
    prior = bfm.PriorConfig()
    hyper = (prior.alpha0, prior.beta0, prior.gamma0, prior.mu0)
    term = next(t for t in spec.structure.terms if t.dim == dim)

    def shift_log_density(x):
        moved = apply_mean_shift(params, data, term, jnp.asarray([x], jnp.float32))
        cols = [moved[f"v_{dim}"][:, 0], moved[f"v_{term.carrier}"][:, 0]]
        d = term.carrier
        w_dev = moved[f"w_{d}"] - params[f"w_mu_{d}"]
        weights = -0.5 * float(params[f"w_lambda_{d}"] * jnp.sum(w_dev**2))
        return weights + sum(
            float(collapsed_log_density(jnp.sum(c * c), jnp.sum(c), float(c.shape[0]), *hyper))
            for c in cols
        )

    def one(carry, key):
        p, total = carry
        p, delta = owner_mean_shifts(p, data, [term], jax.random.normal(key, (1, 3, 2, 1)), prior)
        return (p, total + delta[0]), total + delta[0]

    keys = jax.random.split(jax.random.PRNGKey(1), 20000)
    _, path = jax.jit(lambda k: jax.lax.scan(one, (params, jnp.zeros(1)), k))(keys)
    draws = np.asarray(path, np.float64)[500:, 0]
    grid = np.linspace(-3.0, 3.0, 1201)
    _assert_draws_follow(draws, grid, np.array([shift_log_density(x) for x in grid]))


def test_chained_mean_shifts_of_all_attributes_keep_every_prediction():
    """The attributes of one owner move one after the other in one scan: the owner's factors
    and weights carried from one to the next must still give the same predictions."""
    spec, data, params = _problem(rank=3)
    structure, prior = spec.structure, bfm.PriorConfig()
    before = fm_predictor(params, data, structure)
    moved, total = params, 0.0
    for k in range(20):
        for d in ("user", "item"):
            owned = [t for t in shifted_terms(structure) if t.carrier == d]
            normals = jax.random.normal(jax.random.PRNGKey(k), (len(owned), 4, 2, 3))
            moved, deltas = owner_mean_shifts(moved, data, owned, normals, prior)
            total += float(jnp.sum(jnp.abs(deltas)))
    assert total > 1.0  # the moves went somewhere
    np.testing.assert_allclose(fm_predictor(moved, data, structure), before, rtol=1e-3, atol=1e-3)
