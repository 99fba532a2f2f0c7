"""Estimator API: fit/predict contract, shapes, InferenceData, bad input, cold start."""

from __future__ import annotations

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import bayesfm as bfm

FAST_SVI = bfm.SVIConfig(num_steps=300, num_samples=100, progress_bar=False)


@pytest.fixture(scope="session")
def toy_mf(toy):
    X, y = toy
    return bfm.BayesianMF(rank=2, inference=FAST_SVI, random_state=1).fit(X, y)


def test_fit_returns_self_and_sets_fitted_attributes(toy):
    X, y = toy
    model = bfm.BayesianMF(rank=2, inference=FAST_SVI)
    assert model.fit(X, y) is model
    assert model.classes_ is None and model.n_train_ == 3
    assert isinstance(model.idata_, az.InferenceData)


def test_params_are_stored_unchanged_and_settable():
    cfg = bfm.NUTSConfig(num_chains=2)
    model = bfm.BayesianFM(rank=3, features=[bfm.Categorical("user_id")], inference=cfg)
    params = model.get_params()
    assert params["inference"] is cfg and params["rank"] == 3
    assert model.set_params(rank=5, task="binary") is model
    assert model.get_params()["rank"] == 5 and model.task == "binary"
    with pytest.raises(ValueError, match="unknown parameter 'ranks'"):
        model.set_params(ranks=5)
    mf = bfm.BayesianMF(rank=2, user="u", item="i")
    assert mf.get_params()["user"] == "u"
    assert [f.column for f in mf.features.fields] == ["u", "i"]


def test_prediction_outputs_have_the_documented_shapes(toy_mf):
    cells = pd.DataFrame({"user_id": ["u2", "u1"], "item_id": ["i1", "i2"]}, index=[7, 9])
    mean = toy_mf.predict(cells)
    assert mean.shape == (2,)
    iv = toy_mf.predict_interval(cells, prob=0.8)
    assert list(iv.columns) == ["mean", "lower", "upper"] and list(iv.index) == [7, 9]
    assert np.all(iv.lower < iv["mean"]) and np.all(iv["mean"] < iv.upper)
    np.testing.assert_allclose(iv["mean"], mean)
    post = toy_mf.predict_posterior(cells)
    assert post.dims == ("chain", "draw", "obs") and post.shape == (1, 100, 2)
    assert list(post.obs.values) == [7, 9]
    # observation noise is included: predictive draws vary more than the latent mean
    latent = toy_mf.predict_posterior(cells, latent=True)
    assert float(post.std()) > float(latent.std())
    # repeated calls give the same numbers (seeded), i.e. nothing recompiles or drifts
    np.testing.assert_array_equal(toy_mf.predict(cells), mean)


def test_idata_has_named_dims_and_original_ids(toy_mf):
    post = toy_mf.idata_.posterior
    assert post["v_user"].dims == ("chain", "draw", "user", "factor")
    assert list(post["user"].values) == ["u1", "u2"]
    assert list(post["item"].values) == ["i1", "i2"]
    summary = az.summary(toy_mf.idata_, var_names=["sigma", "w0"], kind="stats")
    assert list(summary.index) == ["sigma", "w0"]
    assert post.attrs["inference_method"] == "svi"


def test_chunked_prediction_equals_unchunked(svi_fm, synthetic_split):
    data, _, test = synthetic_split
    X = data.X[test]
    whole = svi_fm.predict_posterior(X, latent=True)
    svi_fm.set_params(chunk_size=64)
    try:
        chunked = svi_fm.predict_posterior(X, latent=True)
    finally:
        svi_fm.set_params(chunk_size=4096)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)


def test_cold_start_intervals_are_wider_and_can_be_refused(svi_fm, synthetic_split):
    data, _, test = synthetic_split
    warm = data.X[test].iloc[:50]
    cold = warm.copy()
    cold["item_id"] = [f"new{i}" for i in range(len(cold))]
    w = svi_fm.predict_interval(warm)
    c = svi_fm.predict_interval(cold)
    assert np.all(np.isfinite(c.to_numpy()))
    assert (c.upper - c.lower).mean() > (w.upper - w.lower).mean()
    refusing = bfm.BayesianFM(**{**svi_fm.get_params(), "cold_start": "error"})
    refusing.__dict__.update({k: v for k, v in svi_fm.__dict__.items() if k.endswith("_")})
    with pytest.raises(ValueError, match=r"unseen levels \{'item_id': \['new0'"):
        refusing.predict(cold)
    np.testing.assert_allclose(refusing.predict(warm), svi_fm.predict(warm))


# ----------------------------------------------------------------------------- bad input
def _mf(**kw):
    return bfm.BayesianMF(**{"rank": 2, "inference": FAST_SVI, **kw})


@pytest.mark.parametrize(
    ("make", "X", "y", "error", "match"),
    [
        (
            _mf,
            None,
            [1.0, np.nan, 2.0],
            ValueError,
            r"y: contains NaN or inf at position\(s\) \[1\]",
        ),
        (_mf, None, [1.0, np.inf, 2.0], ValueError, "y: contains NaN or inf"),
        (_mf, "drop", None, ValueError, r"X: missing column\(s\) \['item_id'\]"),
        (_mf, "empty", None, ValueError, r"X: got an empty table \(0 rows\)"),
        (_mf, None, [1.0, 2.0], ValueError, "y: got 2 values but X has 3 rows"),
        (
            lambda: _mf(task="binary"),
            None,
            [0, 1, 2],
            ValueError,
            r"binary task got labels \[2.0\]; allowed labels are 0 and 1",
        ),
        (lambda: _mf(rank=0), None, None, ValueError, "rank: got 0; must be an integer >= 1"),
        (
            lambda: _mf(task="poisson"),
            None,
            None,
            ValueError,
            r"task: got 'poisson'; allowed are \['regression', 'binary', 'ordinal'\]",
        ),
        (
            lambda: _mf(inference="mcmc"),
            None,
            None,
            ValueError,
            r"inference: got 'mcmc'; allowed are \['nuts', 'svi', 'gibbs'\]",
        ),
        (lambda: _mf(cold_start="zero"), None, None, ValueError, "cold_start: got 'zero'"),
        (_mf, "notframe", None, TypeError, "X: got ndarray; expected a pandas DataFrame"),
    ],
)
def test_bad_input_raises_and_leaves_fitted_model_unchanged(toy, toy_mf, make, X, y, error, match):
    X0, y0 = toy
    Xb = {
        "drop": X0.drop(columns="item_id"),
        "empty": X0.iloc[:0],
        "notframe": X0.to_numpy(),
        None: X0,
    }[X]
    yb = y0 if y is None else np.asarray(y, dtype=float)
    if X == "empty":
        yb = yb[:0]
    model = make()
    with pytest.raises(error, match=match):
        model.fit(Xb, yb)
    assert not hasattr(model, "draws_")
    # the same bad input sent to an already fitted model leaves its fitted state intact
    fitted_state = {k: v for k, v in toy_mf.__dict__.items() if k.endswith("_")}
    refit = make()
    refit.__dict__.update(fitted_state)
    with pytest.raises(error, match=match):
        refit.fit(Xb, yb)
    assert all(refit.__dict__[k] is v for k, v in fitted_state.items())
    before = toy_mf.predict(X0)
    np.testing.assert_array_equal(toy_mf.predict(X0), before)


def test_non_numeric_numeric_field_is_named():
    X = pd.DataFrame({"user_id": [1, 2], "age": ["old", "young"]})
    model = bfm.BayesianFM(
        rank=1, features=[bfm.Categorical("user_id"), bfm.Numeric("age")], inference=FAST_SVI
    )
    with pytest.raises(TypeError, match=r"column 'age': numeric field holds non-numeric values"):
        model.fit(X, [1.0, 2.0])


def test_predict_before_fit_is_a_clear_error(toy):
    X, _ = toy
    model = bfm.BayesianMF()
    for method in (model.predict, model.predict_interval, model.predict_posterior):
        with pytest.raises(bfm.NotFittedError, match="not fitted yet; call fit"):
            method(X)


def test_bad_prediction_arguments(toy_mf, toy):
    X, _ = toy
    with pytest.raises(ValueError, match=r"prob: got 1.5; must be a number in \(0, 1\)"):
        toy_mf.predict_interval(X, prob=1.5)
    with pytest.raises(ValueError, match="predict_proba: task='regression' has no classes"):
        toy_mf.predict_proba(X)
    with pytest.raises(ValueError, match=r"X: missing column\(s\) \['user_id'\]"):
        toy_mf.predict(X.drop(columns="user_id"))


def test_config_validation():
    with pytest.raises(ValueError, match="num_chains: got 0"):
        bfm.NUTSConfig(num_chains=0)
    with pytest.raises(ValueError, match=r"guide: got 'flow'; allowed \['normal', 'lowrank'\]"):
        bfm.SVIConfig(guide="flow")
    with pytest.raises(ValueError, match="parametrization: got 'x'"):
        bfm.PriorConfig(parametrization="x")
    with pytest.raises(ValueError, match=r"parametrization: got 'x'; allowed \['centered'"):
        bfm.NUTSConfig(parametrization="x")


def test_entity_parametrization_with_svi_hands_back_the_entity_weights(synthetic_split):
    """SVI draws the totals; the estimator subtracts the owned features draw by draw."""
    from tests.conftest import SIDE_SPEC

    data, train, _ = synthetic_split
    X, y = data.X[train], data.y[train]
    model = bfm.BayesianFM(
        rank=2,
        features=bfm.FeatureSpec(SIDE_SPEC),
        prior=bfm.PriorConfig(parametrization="entity"),
        inference=FAST_SVI,
    ).fit(X, y)
    post = model.idata_.posterior
    assert post["v_user_tot"].dims == ("chain", "draw", "user", "factor")
    assert np.isfinite(model.predict(X)).all()
    # the total of one user: its own weight, its occupation's and its standardized age's
    row = X.iloc[0]
    occ = list(post["w_occupation"].coords["occupation"].values).index(row["occupation"])
    age = (row["age"] - X["age"].mean()) / X["age"].std(ddof=0)
    user = list(post["w_user"].coords["user"].values).index(row["user_id"])
    total = post["w_user"][..., user] + post["w_occupation"][..., occ] + age * post["w_age"][..., 0]
    np.testing.assert_allclose(total, post["w_user_tot"][..., user], atol=1e-4)
    # minibatch SVI has no path for the totals: refused before anything runs
    minibatch = bfm.SVIConfig(num_steps=10, batch_size=100, progress_bar=False)
    with pytest.raises(ValueError, match="prior.parametrization: got 'entity' with minibatch"):
        model.set_params(inference=minibatch).fit(X, y)
    assert model.idata_.posterior is post  # the fitted state is untouched


def test_nuts_refuses_a_start_where_the_log_density_is_not_finite():
    """numpyro's own check of the starting point is skipped under jit; bayesfm's replaces it."""
    import numpyro
    import numpyro.distributions as dist

    from bayesfm.inference import run_nuts

    def model():
        numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.factor("wall", -jnp.inf)

    cfg = bfm.NUTSConfig(
        num_warmup=2, num_samples=2, num_chains=1, init_svi_steps=0, progress_bar=False
    )
    with pytest.raises(RuntimeError, match="log density at the initial values is not finite"):
        run_nuts(model, (), cfg, jax.random.PRNGKey(0), dict, {"x": jnp.array(0.0)})
