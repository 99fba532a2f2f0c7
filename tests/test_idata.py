"""The InferenceData schema: groups, dims, coords (original ids) and attrs."""

from __future__ import annotations

import json
import warnings

import arviz as az
import numpy as np
import pytest
from scipy.stats import norm

import bayesfm as bfm
from bayesfm.diagnostics import ConvergenceWarning

FIT_GROUPS = {
    "posterior",
    "sample_stats",
    "log_likelihood",
    "posterior_predictive",
    "observed_data",
    "constant_data",
}


@pytest.mark.parametrize("fixture", ["nuts_fm", "svi_fm"])
def test_fit_groups_dims_and_original_id_coords(fixture, request, synthetic_split):
    model = request.getfixturevalue(fixture)
    data, train, _ = synthetic_split
    idata = model.idata_
    # shared fixtures: other tests may have added the groups of predict_posterior
    assert FIT_GROUPS <= set(idata.groups())
    assert set(idata.groups()) - FIT_GROUPS <= {"predictions", "predictions_constant_data"}
    post = idata.posterior
    assert post["v_user"].dims == ("chain", "draw", "user", "factor")
    assert post["w_item"].dims == ("chain", "draw", "item")
    assert post["w_genres"].dims == ("chain", "draw", "genres")
    # coords are the original ids, in the encoder's order
    np.testing.assert_array_equal(post["user"].values, model.encoder_.levels["user"].astype(str))
    assert set(post["genres"].values) == {g for gs in data.X["genres"] for g in gs}
    assert list(post["factor"].values) == [0, 1]
    assert post["group_v_sd"].dims == ("chain", "draw", "group")
    assert list(post["group"].values) == list(model.spec_.structure.groups)
    np.testing.assert_allclose(
        post["group_w_sd"].sel(group="item"), 1 / np.sqrt(post["w_lambda_item"]), rtol=1e-6
    )
    n = int(train.sum())
    for group in ("log_likelihood", "posterior_predictive"):
        assert idata[group]["y"].dims == ("chain", "draw", "obs")
        assert idata[group]["y"].shape == (post.sizes["chain"], post.sizes["draw"], n)
    np.testing.assert_array_equal(idata.observed_data["obs"].values, data.X.index[train])
    np.testing.assert_allclose(idata.observed_data["y"].values, data.y[train], rtol=1e-6)
    const = idata.constant_data
    np.testing.assert_array_equal(
        model.encoder_.levels["user"][const["user_index"].values],
        data.X["user_id"].to_numpy()[train],
    )
    assert {"genres_unit", "genres_index", "genres_value"} <= set(const.data_vars)
    attrs = post.attrs
    assert attrs["bayesfm_version"] == bfm.__version__
    assert attrs["inference_method"] == model.draws_.method
    params = json.loads(attrs["estimator_params"])
    assert params["rank"] == 2 and params["features"]["feature_spec"][0]["column"] == "user_id"


def test_sample_stats_hold_nuts_statistics_and_svi_loss(nuts_fm, svi_fm):
    stats = nuts_fm.idata_.sample_stats
    assert {"diverging", "tree_depth", "energy", "step_size"} <= set(stats.data_vars)
    assert stats["energy"].dims == ("chain", "draw")
    loss = svi_fm.idata_.sample_stats["loss"]
    assert loss.dims == ("chain", "svi_step") and loss.shape == (1, 1500)
    assert svi_fm.idata_.posterior.sizes["chain"] == 1


def test_log_likelihood_matches_the_gaussian_density_of_the_latent_draws(nuts_fm, synthetic_split):
    data, train, _ = synthetic_split
    X, y = data.X[train].iloc[:40], data.y[train][:40]
    latent = nuts_fm.predict_posterior(X, latent=True).values  # known ids: no random slots
    sigma = nuts_fm.idata_.posterior["sigma"].values[..., None]
    expected = norm.logpdf(y, latent, sigma)
    got = nuts_fm.idata_.log_likelihood["y"].values[..., :40]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _recomputed_pointwise(model, X, y):
    """The fit's InferenceData built again with every draw's training predictions computed
    from the stored draws (the path of samplers that do not keep them)."""
    assert model.draws_.latent is None  # the fit drops the sampler's copy once used
    return model._inference_data(X, np.asarray(y), model.encoder_.transform(X))


def test_gibbs_pointwise_groups_from_the_sampler_equal_recomputed_ones(gibbs_fm, synthetic_split):
    """The Gibbs fit scores the training rows with the latent values its sweeps kept; they
    are the predictions of the kept draws, row by row, chain by chain (2 chains, vmapped)."""
    data, train, _ = synthetic_split
    X, y = data.X[train], data.y[train]
    again = _recomputed_pointwise(gibbs_fm, X, y)
    for group in ("log_likelihood", "posterior_predictive"):
        np.testing.assert_allclose(
            gibbs_fm.idata_[group]["y"].values, again[group]["y"].values, rtol=1e-4, atol=2e-4
        )
    np.testing.assert_array_equal(gibbs_fm.idata_.posterior["probe"], again.posterior["probe"])


def test_ordinal_gibbs_keeps_the_latent_of_the_kept_sweeps(monkeypatch):
    """Ordinal task (the sweep's y holds utilities), thinning, two chains in sequence: the
    fit recomputes no training row, and its pointwise groups equal the recomputed ones."""
    from bayesfm.predict import PredictiveEngine

    data = bfm.datasets.make_synthetic(n_users=30, n_items=20, n_obs=400, rank=2, seed=3)
    X, labels = data.X, np.digitize(data.y, np.quantile(data.y, [0.3, 0.7]))
    asked = []
    original = PredictiveEngine.iter_latent

    def recording(self, enc, seed):
        asked.append(enc.n_rows)
        return original(self, enc, seed)

    monkeypatch.setattr(PredictiveEngine, "iter_latent", recording)
    cfg = bfm.GibbsConfig(
        num_warmup=20, num_samples=15, thinning=2, num_chains=2, chain_method="sequential"
    )
    model = bfm.BayesianMF(rank=2, task="ordinal", inference=cfg, progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 2 x 15 draws: a smoke-size fit
        model.fit(X, labels)
    assert asked == [len(model.probe_)]  # the probe cells only
    again = _recomputed_pointwise(model, X, labels)
    assert asked[-1] == len(X) + len(model.probe_)
    for group in ("log_likelihood", "posterior_predictive"):
        np.testing.assert_allclose(
            model.idata_[group]["y"].values, again[group]["y"].values, rtol=1e-4, atol=2e-4
        )


def test_loo_runs_on_the_stored_log_likelihood(gibbs_fm):
    result = az.loo(gibbs_fm.idata_, var_name="y")
    assert np.isfinite(result.elpd_loo) and result.n_data_points == gibbs_fm.n_train_


def test_predict_posterior_fills_the_predictions_groups(svi_fm, synthetic_split):
    data, _, test = synthetic_split
    X = data.X[test].iloc[:25]
    draws = svi_fm.predict_posterior(X)
    idata = svi_fm.idata_
    assert {"predictions", "predictions_constant_data"} <= set(idata.groups())
    np.testing.assert_array_equal(idata.predictions["y"].values, draws.values)
    np.testing.assert_array_equal(idata.predictions["obs"].values, X.index)
    assert idata.predictions_constant_data["user_index"].shape == (25,)
    # a second call replaces, never appends
    svi_fm.predict_posterior(X.iloc[:5])
    assert svi_fm.idata_.predictions.sizes["obs"] == 5
    assert FIT_GROUPS <= set(svi_fm.idata_.groups())


@pytest.fixture(scope="module")
def toy_pair(toy):
    X, y = toy
    cfg = bfm.SVIConfig(num_steps=300, num_samples=40)
    full = bfm.BayesianMF(rank=2, inference=cfg, progress_bar=False).fit(X, y)
    light = bfm.BayesianMF(
        rank=2, inference=cfg, progress_bar=False, store_factors=False, store_pointwise=False
    ).fit(X, y)
    return full, light, X


def test_store_factors_false_keeps_idata_small_and_predictions_equal(toy_pair):
    full, light, X = toy_pair
    assert "v_user" in full.idata_.posterior and "v_user" not in light.idata_.posterior
    assert "w_user" in light.idata_.posterior  # biases stay
    assert "log_likelihood" not in light.idata_.groups()
    assert "posterior_predictive" not in light.idata_.groups()
    np.testing.assert_array_equal(full.predict(X), light.predict(X))
    # the light fit computes only the probe cells, not the training rows; same values
    np.testing.assert_array_equal(full.idata_.posterior["probe"], light.idata_.posterior["probe"])
    assert not light.diagnose().empty
    with pytest.raises(ValueError, match="store_pointwise=True"):
        bfm.loo(light)


def test_store_flags_are_validated(toy):
    X, y = toy
    with pytest.raises(TypeError, match="store_factors: got 'no'; must be True or False"):
        bfm.BayesianMF(store_factors="no").fit(X, y)
