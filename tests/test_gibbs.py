"""The blocked Gibbs sampler: exact conditionals, exact draws, and agreement with NUTS."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import bayesfm as bfm
from bayesfm.data import ROW, FittedEncoder
from bayesfm.fm import ModelSpec, fm_predictor
from bayesfm.gibbs import (
    _term_blocks,
    draw_gaussian,
    entity_systems,
    gibbs_plan,
    normal_gamma_draw,
    normal_gamma_draws,
    scale_exchange,
    term_systems,
)
from bayesfm.inference import to_jax

RANK = 3


@pytest.fixture(scope="module")
def rich_problem():
    """Every kind of field: entities, owned categorical/numeric/multi-hot, implicit sets and
    row-level numeric and multi-hot fields; random parameter values for all sites."""
    rng = np.random.default_rng(3)
    n_users, n_items, n = 8, 6, 40
    cells = rng.choice(n_users * n_items, n, replace=False)
    users, items = cells // n_items, cells % n_items
    occupation = rng.choice(["a", "b", "c"], n_users)
    age = rng.integers(18, 70, n_users)
    genres = [
        tuple(rng.choice(list("xyzw"), rng.integers(1, 4), replace=False)) for _ in range(n_items)
    ]
    hour = rng.normal(size=n)
    tags = [tuple(rng.choice(list("pqr"), rng.integers(0, 3), replace=False)) for _ in range(n)]
    # "s" on every tagged row: the tag levels (12-29 rows) get two block widths, and 11 rows
    # keep no tag at all
    tags = [(*t, "s") if t else t for t in tags]
    X = pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "occupation": occupation[users],
            "age": age[users],
            "genres": [genres[i] for i in items],
            "hour": hour,
            "tags": tags,
        }
    )
    fields = [
        bfm.Categorical("user_id"),
        bfm.Categorical("item_id"),
        bfm.Categorical("occupation", owner="user_id"),
        bfm.Numeric("age", owner="user_id"),
        bfm.MultiHot("genres", owner="item_id"),
        bfm.Implicit(owner="user_id", members="item_id"),
        bfm.Numeric("hour"),
        bfm.MultiHot("tags"),
    ]
    encoder = FittedEncoder.fit(bfm.FeatureSpec(fields), X)
    spec = ModelSpec(structure=encoder.structure, rank=RANK)
    arrays = encoder.transform(X).arrays()
    # free widths, so that a term of this tiny problem still spans several scans
    arrays["gibbs"] = gibbs_plan(arrays, spec.structure, block_cost=0)
    data = to_jax(arrays)
    params = {"w0": jnp.float32(0.3), "noise_precision": jnp.float32(2.5)}
    for g in spec.structure.groups:
        n_lev = spec.structure.n_levels(g)
        params[f"w_{g}"] = jnp.asarray(rng.normal(size=n_lev), jnp.float32)
        params[f"v_{g}"] = jnp.asarray(rng.normal(size=(n_lev, RANK)), jnp.float32)
        params[f"w_lambda_{g}"] = jnp.float32(rng.gamma(2.0))
        params[f"w_mu_{g}"] = jnp.float32(rng.normal())
        params[f"v_lambda_{g}"] = jnp.asarray(rng.gamma(2.0, size=RANK), jnp.float32)
        params[f"v_mu_{g}"] = jnp.asarray(rng.normal(size=RANK), jnp.float32)
    y = jnp.asarray(rng.normal(3.0, 1.0, n), jnp.float32)
    return spec, data, params, y, jnp.float32(3.0)


def _dense_oracle(spec, data, params, y, offset, group, level):
    """Conditional (P, b) of one level's (w_j, v_j) from the model's own predictor.

    The FM is affine in one level's block, so its Jacobian gives the exact design."""

    def f_of(theta):
        p = dict(params)
        p[f"w_{group}"] = p[f"w_{group}"].at[level].set(theta[0])
        p[f"v_{group}"] = p[f"v_{group}"].at[level].set(theta[1:])
        return offset + fm_predictor(p, data, spec.structure)

    theta0 = jnp.concatenate([params[f"w_{group}"][level][None], params[f"v_{group}"][level]])
    jac = jax.jacfwd(f_of)(theta0)
    target = y - f_of(theta0) + jac @ theta0
    tau = params["noise_precision"]
    prec = jnp.concatenate([params[f"w_lambda_{group}"][None], params[f"v_lambda_{group}"]])
    mean = jnp.concatenate([params[f"w_mu_{group}"][None], params[f"v_mu_{group}"]])
    return tau * jac.T @ jac + jnp.diag(prec), tau * jac.T @ target + prec * mean


def _oracle_all_levels(spec, data, params, y, offset, group):
    n = spec.structure.n_levels(group)

    @jax.jit
    def run(data, params, y):
        one = partial(_dense_oracle, spec, data, params, y, offset, group)
        return jax.vmap(one)(jnp.arange(n))

    return run(data, params, y)


def test_entity_conditionals_match_dense_oracle(rich_problem):
    spec, data, params, y, offset = rich_problem
    for dim, _ in spec.structure.entities:
        system = jax.jit(partial(entity_systems, spec=spec, dim=dim))
        precision, shift = system(params, data, offset, y)
        p_ref, b_ref = _oracle_all_levels(spec, data, params, y, offset, dim)
        np.testing.assert_allclose(precision, p_ref, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(shift, b_ref, rtol=1e-4, atol=1e-3)


def test_term_conditionals_match_dense_oracle(rich_problem):
    spec, data, params, y, offset = rich_problem
    carriers = {t.carrier for t in spec.structure.terms}
    assert ROW in carriers and "user" in carriers and "item" in carriers
    for term in spec.structure.terms:
        system = jax.jit(partial(term_systems, spec=spec, term=term))
        precision, shift = system(params, data, offset, y)
        p_ref, b_ref = _oracle_all_levels(spec, data, params, y, offset, term.dim)
        np.testing.assert_allclose(precision, p_ref, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(shift, b_ref, rtol=1e-4, atol=1e-3)


def test_term_scan_carries_its_sums_across_blocks(rich_problem, monkeypatch):
    """With each draw replaced by its conditional mean, repeated term updates are a block
    coordinate ascent; at its fixed point every level must equal the mean of its exact
    conditional given all the others. Stale sums between the blocks of a field (or between
    the levels of a block) would settle elsewhere."""
    import bayesfm.gibbs as gibbs

    spec, data, params, y, offset = rich_problem

    def conditional_mean(precision, shift, normals, fallback):
        return jnp.linalg.solve(precision, shift[..., None])[..., 0]

    monkeypatch.setattr(gibbs, "gaussian_from_normals", conditional_mean)
    for term in spec.structure.terms:
        normals = [
            jnp.zeros((*b["levels"].shape, 1 + spec.rank)) for b in data["gibbs"]["terms"][term.dim]
        ]
        update = jax.jit(
            lambda p, term=term, normals=normals: gibbs._update_term(
                p, data, data["gibbs"], offset, y, spec, term, normals, None
            )[0]
        )
        p = params
        for _ in range(200):
            p = update(p)
        precision, shift = jax.jit(partial(term_systems, spec=spec, term=term))(p, data, offset, y)
        theta = jnp.concatenate([p[f"w_{term.dim}"][:, None], p[f"v_{term.dim}"]], axis=1)
        expected = jnp.linalg.solve(precision, shift[..., None])[..., 0]
        np.testing.assert_allclose(theta, expected, rtol=1e-3, atol=1e-3, err_msg=term.dim)


def test_rich_problem_has_a_term_in_several_blocks(rich_problem):
    _, data, _, _, _ = rich_problem
    widths = [b["entries"].shape[1] for b in data["gibbs"]["terms"]["tags"]]
    assert widths == [16, 32]


def test_term_blocks_pick_the_widths_with_least_padding():
    # ten levels with one entry and one with 100: one width pads all to 128 (1408 slots);
    # two widths give 10 x 8 + 128 = 208, the least possible
    counts = np.array([1] * 10 + [100])
    index = np.random.default_rng(0).permutation(np.repeat(np.arange(11), counts))
    one = _term_blocks(index, 11, max_blocks=1, block_cost=0)
    assert [b["entries"].shape for b in one] == [(11, 128)]
    two = _term_blocks(index, 11, max_blocks=2, block_cost=0)
    assert [b["entries"].shape for b in two] == [(10, 8), (1, 128)]
    # a second width saves 1200 entries: not worth a scan body at a price above that
    assert [b["entries"].shape for b in _term_blocks(index, 11, block_cost=1201)] == [(11, 128)]
    assert [b["entries"].shape for b in _term_blocks(index, 11, block_cost=1199)] == [
        (10, 8),
        (1, 128),
    ]
    for blocks in (one, two):
        assert sorted(np.concatenate([b["levels"] for b in blocks])) == list(range(11))
        for block in blocks:
            for level, entries in zip(block["levels"], block["entries"], strict=True):
                real = entries[: counts[level]]
                np.testing.assert_array_equal(np.sort(real), np.flatnonzero(index == level))
                assert np.all(entries[counts[level] :] == len(index))  # the zero entry


def test_draw_gaussian_has_the_analytic_moments():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    precision = a @ a.T + 3 * np.eye(3)
    shift = rng.normal(size=3)
    n = 40_000
    draws = draw_gaussian(
        jnp.broadcast_to(jnp.asarray(precision, jnp.float32), (n, 3, 3)),
        jnp.broadcast_to(jnp.asarray(shift, jnp.float32), (n, 3)),
        jax.random.PRNGKey(1),
        jnp.zeros((n, 3)),
    )
    cov = np.linalg.inv(precision)
    mean = cov @ shift
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(np.asarray(draws).mean(0) - mean) < 5 * se)
    np.testing.assert_allclose(np.cov(np.asarray(draws).T), cov, rtol=0.05, atol=2e-3)


def test_draw_gaussian_keeps_current_value_when_not_finite():
    precision = jnp.array([[[jnp.nan, 0.0], [0.0, 1.0]]])
    out = draw_gaussian(precision, jnp.ones((1, 2)), jax.random.PRNGKey(0), jnp.full((1, 2), 7.0))
    np.testing.assert_array_equal(np.asarray(out), 7.0)


def test_normal_gamma_draw_matches_the_conjugate_posterior():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(0.7, 1.5, size=12), jnp.float32)
    alpha0, beta0, gamma0, mu0 = 1.0, 1.0, 1.0, 0.0
    keys = jax.random.split(jax.random.PRNGKey(2), 40_000)
    mu, lam = jax.vmap(lambda k: normal_gamma_draw(x, k, alpha0, beta0, gamma0, mu0))(keys)
    n, xbar = len(x), float(np.mean(x))
    alpha_n = alpha0 + n / 2
    beta_n = beta0 + 0.5 * (
        float(np.sum((np.asarray(x) - xbar) ** 2)) + gamma0 * n * (xbar - mu0) ** 2 / (gamma0 + n)
    )
    mu_n = (gamma0 * mu0 + n * xbar) / (gamma0 + n)
    # E[lambda] = alpha/beta; mu is Student-t with variance beta/((alpha-1)(gamma0+n))
    np.testing.assert_allclose(float(jnp.mean(lam)), alpha_n / beta_n, rtol=0.02)
    np.testing.assert_allclose(float(jnp.mean(mu)), mu_n, atol=0.01)
    np.testing.assert_allclose(
        float(jnp.var(mu)), beta_n / ((alpha_n - 1) * (gamma0 + n)), rtol=0.05
    )


def test_normal_gamma_draws_gives_each_group_its_own_conjugate_posterior():
    # one batched draw for a group of scalars and a group of vectors, as a sweep does
    rng = np.random.default_rng(3)
    xs = [
        jnp.asarray(rng.normal(-0.4, 0.8, size=9), jnp.float32),
        jnp.asarray(rng.normal(1.2, 2.0, size=(15, 2)), jnp.float32),
    ]
    alpha0, beta0, gamma0, mu0 = 2.0, 0.5, 1.5, 0.3
    keys = jax.random.split(jax.random.PRNGKey(4), 40_000)
    draws = jax.vmap(lambda k: normal_gamma_draws(xs, k, alpha0, beta0, gamma0, mu0))(keys)
    for x, (mu, lam) in zip(xs, draws, strict=True):
        x = np.asarray(x, np.float64)
        n, xbar = x.shape[0], x.mean(axis=0)
        assert mu.shape == lam.shape == (len(keys), *x.shape[1:])
        alpha_n = alpha0 + n / 2
        beta_n = beta0 + 0.5 * (
            ((x - xbar) ** 2).sum(axis=0) + gamma0 * n * (xbar - mu0) ** 2 / (gamma0 + n)
        )
        np.testing.assert_allclose(np.mean(lam, axis=0), alpha_n / beta_n, rtol=0.02)
        np.testing.assert_allclose(
            np.mean(mu, axis=0), (gamma0 * mu0 + n * xbar) / (gamma0 + n), atol=0.02
        )
        np.testing.assert_allclose(
            np.var(mu, axis=0), beta_n / ((alpha_n - 1) * (gamma0 + n)), rtol=0.05
        )
    # the groups' draws are independent of each other
    corr = np.corrcoef(np.asarray(draws[0][1]), np.asarray(draws[1][1][:, 0]))[0, 1]
    assert abs(corr) < 0.03


# ------------------------------------------------------------------------- estimator level
def test_gibbs_fit_gives_chains_and_predictions(gibbs_fm, synthetic_split):
    data, _, test = synthetic_split
    draws = gibbs_fm.draws_
    assert draws.method == "gibbs"
    assert draws.num_chains == 2 and draws.num_draws == 300
    post = gibbs_fm.idata_.posterior
    assert post["v_user"].dims == ("chain", "draw", "user", "factor")
    assert set(post.coords["user"].values) == set(data.X["user_id"].unique())
    pred = gibbs_fm.predict(data.X[test])
    assert pred.shape == (int(test.sum()),) and np.all(np.isfinite(pred))
    assert gibbs_fm.timings_["gibbs_compile_s"] > 0


def test_gibbs_agrees_with_nuts(gibbs_fm, nuts_fm, synthetic_split):
    """Posterior means of sigma and of probe predictions agree within their MCSEs."""
    import arviz as az

    data, _, test = synthetic_split
    probe = data.X[test].iloc[:40]
    g = az.summary(gibbs_fm.idata_, var_names=["sigma"])
    n = az.summary(nuts_fm.idata_, var_names=["sigma"])
    tol = 4 * np.hypot(g["mcse_mean"].iloc[0], n["mcse_mean"].iloc[0]) + 1e-3
    assert abs(g["mean"].iloc[0] - n["mean"].iloc[0]) < tol, (g, n)
    assert g["sd"].iloc[0] == pytest.approx(n["sd"].iloc[0], rel=0.3)
    lat_g = gibbs_fm.predict_posterior(probe, latent=True)
    lat_n = nuts_fm.predict_posterior(probe, latent=True)
    mcse_g = az.mcse(az.convert_to_dataset(lat_g.values))["x"].values
    mcse_n = az.mcse(az.convert_to_dataset(lat_n.values))["x"].values
    diff = lat_g.mean(("chain", "draw")).values - lat_n.mean(("chain", "draw")).values
    z = diff / np.hypot(mcse_g, mcse_n)
    # MCSE-scaled differences: almost all within 4, and no systematic shift
    assert np.mean(np.abs(z) < 4) >= 0.95, z
    assert abs(np.mean(diff)) < 0.05


def test_gibbs_rejects_bad_config():
    with pytest.raises(ValueError, match="num_samples: got 0"):
        bfm.GibbsConfig(num_samples=0)
    with pytest.raises(ValueError, match="chain_method: got 'threads'"):
        bfm.GibbsConfig(chain_method="threads")


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
def test_kernel_runs_under_plain_numpyro_mcmc_and_arviz(toy, toy_gibbs_problem):
    """FMGibbs is an ordinary MCMCKernel: MCMC, grouped samples and az.from_numpyro work."""
    import arviz as az
    from numpyro.infer import MCMC

    from bayesfm.gibbs import FMGibbs

    _, y = toy
    spec, args = toy_gibbs_problem
    mcmc = MCMC(
        FMGibbs(spec),
        num_warmup=20,
        num_samples=30,
        num_chains=2,
        chain_method=jax.vmap,
        progress_bar=False,
        jit_model_args=True,
    )
    mcmc.run(jax.random.PRNGKey(0), *args)
    grouped = mcmc.get_samples(group_by_chain=True)
    assert grouped["v_user"].shape == (2, 30, 2, 2)
    assert grouped["sigma"].shape == (2, 30)
    idata = az.from_numpyro(mcmc)
    assert idata.posterior["w_item"].shape == (2, 30, 2)
    assert idata.log_likelihood["y"].shape == (2, 30, len(y))


@pytest.mark.slow
def test_simulation_based_calibration():
    """SBC (Talts et al. 2018): for datasets drawn from the prior, the rank of the true value
    among thinned posterior draws is uniform, for sigma and for the latent mean of an
    unobserved cell. All datasets run as one vmapped program."""
    from numpyro.infer import Predictive
    from scipy.stats import chisquare

    from bayesfm.fm import fm_components, fm_model, initial_values
    from bayesfm.gibbs import gibbs_sweep
    from bayesfm.priors import PriorConfig

    rng = np.random.default_rng(0)
    n_users, n_items, rank = 6, 5, 2
    cells = rng.choice(n_users * n_items, 18, replace=False)
    X = pd.DataFrame(
        {"user_id": cells // n_items, "item_id": cells % n_items, "x": rng.normal(size=18)}
    )
    fields = [bfm.Categorical("user_id"), bfm.Categorical("item_id"), bfm.Numeric("x")]
    encoder = FittedEncoder.fit(bfm.FeatureSpec(fields), X)
    # a tighter prior than the default keeps prior draws in a range where short chains mix
    prior = PriorConfig(alpha0=4.0, beta0=2.0, noise_alpha=6.0, noise_beta=2.0, bias_scale=1.0)
    spec = ModelSpec(structure=encoder.structure, rank=rank, prior=prior)
    arrays = encoder.transform(X).arrays()
    arrays["gibbs"] = gibbs_plan(arrays, spec.structure)
    data = to_jax(arrays)
    missing = sorted(set(range(n_users * n_items)) - set(cells))[0]
    probe = to_jax(
        encoder.transform(
            pd.DataFrame(
                {"user_id": [missing // n_items], "item_id": [missing % n_items], "x": [0.0]}
            )
        ).arrays()
    )

    def latent(p):
        lin, s, q = fm_components(p, probe, spec.structure)
        return (p["w0"] + lin + 0.5 * (jnp.sum(s * s, -1) - q))[0]

    n_sets, warmup, kept, thin = 200, 1000, 99, 10
    prior_draws = Predictive(partial(fm_model, spec=spec), num_samples=n_sets)(
        jax.random.PRNGKey(1), data, jnp.float32(0.0), None
    )

    def one(truth, key):
        k_init, k_run = jax.random.split(key)
        params = initial_values(spec, k_init)
        params["sigma"] = jnp.float32(1.0)

        def sweep(p, k):
            p = gibbs_sweep(p, data, jnp.float32(0.0), truth["y"], k, spec)
            return p, None

        def kept_draw(p, k):
            p, _ = jax.lax.scan(sweep, p, jax.random.split(k, thin))
            return p, (p["sigma"], latent(p))

        params, _ = jax.lax.scan(sweep, params, jax.random.split(k_run, warmup))
        _, (sig, lat) = jax.lax.scan(kept_draw, params, jax.random.split(key, kept))
        true_sigma = truth["sigma"]
        return jnp.sum(sig < true_sigma), jnp.sum(lat < latent(truth))

    keys = jax.random.split(jax.random.PRNGKey(2), n_sets)
    truths = {k: v for k, v in prior_draws.items()}
    ranks_sigma, ranks_latent = jax.jit(jax.vmap(one))(truths, keys)
    for ranks in (np.asarray(ranks_sigma), np.asarray(ranks_latent)):
        counts = np.bincount(ranks // 10, minlength=10)  # 100 possible ranks -> 10 bins
        assert chisquare(counts).pvalue > 0.01, counts


def test_scale_exchange_keeps_predictions_and_its_orbit_target():
    """A long chain of scale-exchange moves samples log c from the exact orbit density."""
    rng = np.random.default_rng(4)
    v_a = jnp.asarray(rng.normal(0.3, 1.0, (7, 2)), jnp.float32)
    v_b = jnp.asarray(rng.normal(-0.2, 0.7, (4, 2)), jnp.float32)
    mu_a, lam_a = jnp.array([0.2, -0.1]), jnp.array([1.5, 0.7])
    mu_b, lam_b = jnp.array([-0.3, 0.4]), jnp.array([2.0, 1.1])

    def one(carry, key):
        va, vb, total = carry
        normals = jax.random.normal(key, (1, 2, 2))  # one step: proposal and acceptance
        va, vb, t = scale_exchange(va, vb, mu_a, lam_a, mu_b, lam_b, normals)
        return (va, vb, total + t), total + t

    keys = jax.random.split(jax.random.PRNGKey(0), 40000)
    (va, vb, _), path = jax.jit(lambda k: jax.lax.scan(one, (v_a, v_b, jnp.zeros(2)), k))(keys)
    np.testing.assert_allclose(va @ vb.T, v_a @ v_b.T, rtol=1e-4, atol=1e-5)
    path = np.asarray(path)[2000:]
    # the target on the orbit of the starting point, by quadrature
    t = np.linspace(-4, 4, 8001)[:, None]
    c = np.exp(t)
    sx, sxx = np.sum(v_a, 0), np.sum(v_a**2, 0)
    sy, syy = np.sum(v_b, 0), np.sum(v_b**2, 0)
    logp = (
        -0.5 * lam_a * (c**2 * sxx - 2 * c * mu_a * sx)
        - 0.5 * lam_b * (syy / c**2 - 2 * mu_b * sy / c)
        + (7 - 4) * t
    )
    p = np.exp(logp - logp.max(0))
    p /= p.sum(0)
    mean = (p * t).sum(0)
    sd = np.sqrt((p * (t - mean) ** 2).sum(0))
    assert np.all(np.abs(path.mean(0) - mean) < 0.1 * sd), (path.mean(0), mean, sd)
    np.testing.assert_allclose(path.std(0), sd, rtol=0.1)


def test_entity_draws_unroll_only_for_long_fits(rich_problem, monkeypatch):
    """Unrolling costs compile time once and saves time per drawn block: short fits loop,
    long ones unroll, off the CPU the linalg default stands."""
    import bayesfm.gibbs as gibbs

    spec = rich_problem[0]
    levels = 2 * max(n for _, n in spec.structure.entities)  # shared draw: padded
    needed = gibbs.ENTITY_UNROLL_MIN_DRAWS
    assert gibbs.unroll_entity_draws(spec, needed // levels - 1) is False
    assert gibbs.unroll_entity_draws(spec, -(-needed // (4 * levels)), num_chains=4) is True
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert gibbs.unroll_entity_draws(spec, 10**9) is None


def test_sweep_is_the_same_map_with_unrolled_or_looped_entity_draws(rich_problem, monkeypatch):
    """The switch reaches the entity draws and changes only how they are computed."""
    import bayesfm.gibbs as gibbs
    from bayesfm import linalg

    spec, data, params, y, offset = rich_problem
    seen = []
    draw = linalg.gaussian_from_normals

    def recording(*args, unroll=None, **kwargs):
        seen.append(unroll)
        return draw(*args, unroll=unroll, **kwargs)

    monkeypatch.setattr(gibbs, "gaussian_from_normals", recording)
    key = jax.random.PRNGKey(4)
    out = {}
    for unroll in (True, False):
        seen.clear()
        sweep = jax.jit(partial(gibbs.gibbs_sweep, spec=spec, unroll_entities=unroll))
        out[unroll] = sweep(params, data, offset, y, key)
        assert unroll in seen  # the entity draw got it (the other draws take the default)
    assert out[True].keys() == out[False].keys()
    for site in out[True]:
        np.testing.assert_allclose(
            out[True][site], out[False][site], rtol=2e-4, atol=2e-4, err_msg=site
        )


def test_blocks_carry_the_per_row_sums_the_predictor_would_give(rich_problem):
    """The sweep carries (lin, s, q) from block to block instead of recomputing the
    predictor: after every entity and term update they must equal the recomputed sums."""
    import bayesfm.gibbs as gibbs
    from bayesfm.fm import fm_components

    spec, data, params, y, offset = rich_problem
    plan, structure = data["gibbs"], spec.structure
    key = jax.random.PRNGKey(6)

    def check(params, rows, after):
        want = fm_components(params, data, structure)
        for name, got, expected in zip(("lin", "s", "q"), rows, want, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=name + after)

    @jax.jit
    def entities(params, rows, key):  # the shared loop over both entity fields
        variates = gibbs._Variates(key, gibbs._entity_normal_count(spec), jnp.ones(1))
        return gibbs._update_entities(
            params, data, plan, offset, y, spec, variates, None, None, rows
        )

    rows = fm_components(params, data, structure)
    params, rows = entities(params, rows, key)
    check(params, rows, " after the entities")
    for term in structure.terms:
        key, sub = jax.random.split(key)
        normals = [
            jax.random.normal(jax.random.fold_in(sub, i), (*b["levels"].shape, 1 + RANK))
            for i, b in enumerate(plan["terms"][term.dim])
        ]
        update = jax.jit(
            lambda p, r, term=term, normals=normals: gibbs._update_term(
                p, data, plan, offset, y, spec, term, normals, None, r
            )
        )
        moved, rows = update(params, rows)
        assert not np.allclose(moved[f"v_{term.dim}"], params[f"v_{term.dim}"])
        params = moved
        check(params, rows, " after " + term.dim)
