"""Statistical checks on synthetic data with planted FM parameters (identified quantities only)."""

from __future__ import annotations

import numpy as np
import pytest

import bayesfm as bfm

from .conftest import SIDE_SPEC


def _coverage(model, X, y, prob):
    iv = model.predict_interval(X, prob=prob)
    return float(np.mean((y >= iv.lower) & (y <= iv.upper)))


@pytest.mark.parametrize("fixture", ["svi_fm", "nuts_fm", "gibbs_fm"])
def test_noise_scale_is_recovered(fixture, request, synthetic_split):
    model = request.getfixturevalue(fixture)
    data, _, _ = synthetic_split
    sigma = model.draws_.samples["sigma"].ravel()
    lo, hi = np.quantile(sigma, [0.01, 0.99])
    assert lo < data.noise_sd < hi, (lo, hi)
    assert abs(sigma.mean() - data.noise_sd) < 0.1 * data.noise_sd


@pytest.mark.parametrize("fixture", ["svi_fm", "nuts_fm", "gibbs_fm"])
def test_held_out_predictions_recover_the_planted_mean(fixture, request, synthetic_split):
    model = request.getfixturevalue(fixture)
    data, _, test = synthetic_split
    pred = model.predict(data.X[test])
    truth = data.mean[test]
    rmse_to_truth = np.sqrt(np.mean((pred - truth) ** 2))
    # a model that predicted the global mean would be off by the sd of the planted mean
    assert rmse_to_truth < 0.5 * truth.std(), (rmse_to_truth, truth.std())
    assert np.corrcoef(pred, truth)[0, 1] > 0.85


@pytest.mark.parametrize("fixture", ["svi_fm", "nuts_fm", "gibbs_fm"])
def test_90_percent_intervals_cover_held_out_data(fixture, request, synthetic_split):
    model = request.getfixturevalue(fixture)
    data, _, test = synthetic_split
    cov90 = _coverage(model, data.X[test], data.y[test], 0.9)
    cov50 = _coverage(model, data.X[test], data.y[test], 0.5)
    assert 0.85 <= cov90 <= 0.95, cov90
    assert 0.40 <= cov50 <= 0.60, cov50


def test_nuts_draws_are_multi_chain_with_sampler_stats(nuts_fm):
    d = nuts_fm.draws_
    assert d.num_chains == 2 and d.num_draws == 150
    assert set(d.sample_stats) >= {"diverging", "tree_depth", "energy", "step_size"}
    assert nuts_fm.idata_.sample_stats["diverging"].shape == (2, 150)
    assert nuts_fm.timings_["nuts_compile_s"] > 0


def test_svi_keeps_its_loss_trace_and_decreases_it(svi_fm):
    loss = svi_fm.draws_.loss
    assert loss.shape == (1500,)
    assert np.mean(loss[-100:]) < np.mean(loss[:100])


@pytest.fixture(scope="module")
def classification_data(synthetic_split):
    data, train, test = synthetic_split
    liked = (data.y >= np.median(data.y)).astype(int)
    stars = np.digitize(data.y, np.quantile(data.y, [0.1, 0.3, 0.6, 0.85])) + 1
    return data, train, test, liked, stars


def test_binary_probit_predicts_calibrated_probabilities(classification_data):
    data, train, test, liked, _ = classification_data
    model = bfm.BayesianFM(
        rank=2,
        features=SIDE_SPEC,
        task="binary",
        inference=bfm.SVIConfig(num_steps=1000, num_samples=200),
        progress_bar=False,
    ).fit(data.X[train], liked[train])
    proba = model.predict_proba(data.X[test])
    assert proba.shape == (test.sum(), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(model.predict(data.X[test]), proba[:, 1], rtol=1e-6)
    y = liked[test]
    # ranks well and is calibrated in the large
    order = np.argsort(proba[:, 1])
    auc = (np.sum(np.arange(1, len(y) + 1)[y[order] == 1]) - y.sum() * (y.sum() + 1) / 2) / (
        y.sum() * (len(y) - y.sum())
    )
    assert auc > 0.8, auc
    assert abs(proba[:, 1].mean() - y.mean()) < 0.08
    draws = model.predict_posterior(data.X[test].iloc[:5])
    assert set(np.unique(draws.values)) <= {0.0, 1.0}


def test_ordinal_probit_class_probabilities(classification_data):
    data, train, test, _, stars = classification_data
    model = bfm.BayesianFM(
        rank=2,
        features=SIDE_SPEC,
        task="ordinal",
        inference=bfm.SVIConfig(num_steps=1000, num_samples=200),
        progress_bar=False,
    ).fit(data.X[train], stars[train])
    np.testing.assert_array_equal(model.classes_, [1, 2, 3, 4, 5])
    proba = model.predict_proba(data.X[test])
    assert proba.shape == (test.sum(), 5)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    expected = model.predict(data.X[test])
    np.testing.assert_allclose(expected, proba @ np.arange(1, 6), rtol=1e-5)
    assert np.corrcoef(expected, data.mean[test])[0, 1] > 0.8
    cutpoints = model.draws_.samples["cutpoints"]
    assert np.all(np.diff(cutpoints, axis=-1) > 0)
    cov = _coverage(model, data.X[test], stars[test], 0.9)
    assert cov >= 0.85, cov
    with pytest.raises(ValueError, match=r"ordinal labels \[7.0\] were not seen in training"):
        model.score(data.X[test].iloc[:2], [7, 1])
    assert np.isfinite(model.score(data.X[test], stars[test]))
