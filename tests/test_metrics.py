"""Accuracy, calibration and LOO metrics."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chisquare

import bayesfm as bfm
from bayesfm import metrics


def test_auc_equals_the_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(size=60) + y, 1)  # rounding creates ties
    pairs = [
        1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0
        for i, j in itertools.product(np.flatnonzero(y == 1), np.flatnonzero(y == 0))
    ]
    assert metrics.auc(y, s) == pytest.approx(np.mean(pairs))
    assert np.isnan(metrics.auc(np.ones(5), np.arange(5)))


def test_point_metrics_and_log_loss():
    y, p = np.array([1, 0, 1, 1]), np.array([0.9, 0.2, 0.6, 0.5])
    expected = -np.mean(np.log([0.9, 0.8, 0.6, 0.5]))
    assert metrics.log_loss(y, p) == pytest.approx(expected)
    assert metrics.rmse([1.0, 2.0], [2.0, 4.0]) == pytest.approx(np.sqrt(2.5))
    assert metrics.mae([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.5)


def test_reliability_curve_bins_and_counts():
    p = np.array([0.05, 0.07, 0.55, 0.58, 0.95])
    y = np.array([0, 1, 1, 1, 1])
    curve = metrics.reliability_curve(y, p, n_bins=10)
    assert curve["n"].tolist() == [2, 2, 1]
    assert curve["observed"].tolist() == [0.5, 1.0, 1.0]
    assert curve["predicted"].iloc[0] == pytest.approx(0.06)


def test_coverage_curve_of_exact_normal_quantiles_is_the_diagonal():
    rng = np.random.default_rng(1)
    y = rng.normal(size=20000)
    levels = (0.2, 0.5, 0.9)
    from scipy.stats import norm

    half = norm.ppf(0.5 + np.asarray(levels) / 2)[:, None] * np.ones((1, len(y)))
    curve = metrics.coverage_curve(y, -half, half, levels)
    np.testing.assert_allclose(curve.empirical, levels, atol=0.015)
    np.testing.assert_allclose(curve.mean_width, 2 * half[:, 0])


def test_well_specified_model_is_calibrated_on_held_out_data(mf_long):
    model, data, _, test = mf_long
    check = bfm.evaluate(model, data.X[test], data.y[test])
    cov = check.coverage
    assert cov.nominal.tolist() == list(metrics.COVERAGE_LEVELS)
    assert np.all(np.abs(cov.empirical - cov.nominal) <= 0.05), cov
    assert np.all(np.diff(cov.mean_width) > 0)
    # PIT values of a calibrated model are uniform
    counts = np.histogram(check.pit, bins=10, range=(0, 1))[0]
    assert chisquare(counts).pvalue > 1e-3, counts
    s = check.summary
    assert s["n"] == test.sum() and s["coverage_90"] == pytest.approx(cov.empirical.iloc[8])
    # RMSE is close to the noise sd (0.5) plus the posterior uncertainty of the mean
    assert 0.5 < s["rmse"] < 0.65 and s["mae"] < s["rmse"]
    assert s["mlpd"] == pytest.approx(model.score(data.X[test], data.y[test]), rel=1e-6)


def test_coverage_is_split_by_user_activity_and_cold_start(mf_long):
    model, data, _, test = mf_long
    X = data.X[test].copy()
    X.loc[X.index[:30], "item_id"] = "never-seen"
    check = bfm.evaluate(model, X, data.y[test])
    groups = check.by_activity.set_index("activity")
    assert "cold start" in groups.index and groups.loc["cold start", "n"] == 30
    warm = groups.drop("cold start")
    assert len(warm) == 3 and warm["n"].sum() == len(X) - 30
    # unknown items are drawn from the prior: wider intervals than any warm group
    assert groups.loc["cold start", "width_90"] > warm["width_90"].max()
    assert check.rows.loc[X.index[:30], "activity"].eq("cold start").all()


def test_binary_evaluation_reports_auc_log_loss_and_reliability(svi_fm, synthetic_split):
    data, train, test = synthetic_split
    liked = (data.y >= np.median(data.y)).astype(int)
    model = bfm.BayesianFM(
        rank=2,
        features=svi_fm.features,
        task="binary",
        inference=bfm.SVIConfig(num_steps=500, num_samples=100),
        progress_bar=False,
    ).fit(data.X[train], liked[train])
    check = bfm.evaluate(model, data.X[test], liked[test])
    s = check.summary
    assert 0.7 < s["auc"] <= 1 and s["log_loss"] == pytest.approx(-s["mlpd"], rel=1e-4)
    assert isinstance(check.reliability, pd.DataFrame) and check.reliability["n"].sum() == 300
    assert ((check.pit >= 0) & (check.pit <= 1)).all()


def test_loo_counts_pareto_k_and_compare_ranks_fits(gibbs_fm, nuts_fm):
    result = bfm.loo(gibbs_fm)
    assert result["pareto_k"]["count"].sum() == result["n"] == gibbs_fm.n_train_
    ll = gibbs_fm.idata_.log_likelihood["y"].values.reshape(-1, result["n"])
    lppd = float(np.sum(np.log(np.mean(np.exp(ll.astype(np.float64)), 0))))
    assert result["elpd_loo"] == pytest.approx(lppd - result["p_loo"], rel=1e-6)
    table = bfm.compare({"gibbs": gibbs_fm, "nuts": nuts_fm})
    assert set(table.index) == {"gibbs", "nuts"} and table["rank"].min() == 0


def test_evaluate_and_compare_reject_bad_arguments(gibbs_fm, toy, synthetic_split):
    data, _, test = synthetic_split
    with pytest.raises(ValueError, match="levels: got"):
        bfm.evaluate(gibbs_fm, data.X[test], data.y[test], levels=(0.5, 1.2))
    with pytest.raises(ValueError, match="y: got 3 values but X has 300 rows"):
        bfm.evaluate(gibbs_fm, data.X[test], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least two named fits"):
        bfm.compare({"only": gibbs_fm})
    with pytest.raises(TypeError, match="expected a fitted bayesfm estimator"):
        bfm.compare({"a": gibbs_fm, "b": "nope"})
