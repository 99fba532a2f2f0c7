"""Recommendations: strategies against independent computations, filters, cold start, errors."""

from __future__ import annotations

import copy
import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chisquare, norm

import bayesfm as bfm
from bayesfm import metrics
from bayesfm.recommend import top_n

from .conftest import peak_growth_mib


def _training_pairs(model, X: pd.DataFrame) -> set:
    return set(zip(X["user_id"], X["item_id"], strict=True))


def _with_side(X_all: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Attach each user's and item's side columns to (user_id, item_id) pairs."""
    users = X_all.drop_duplicates("user_id")[["user_id", "occupation", "age"]]
    items = X_all.drop_duplicates("item_id")[["item_id", "genres"]]
    return pairs.merge(users, on="user_id", how="left").merge(items, on="item_id", how="left")


def _latent(model, table: pd.DataFrame) -> np.ndarray:
    draws = model.predict_posterior(table, latent=True).to_numpy()
    return draws.reshape(-1, draws.shape[-1])


# ----------------------------------------------------------------- scores are right
def test_mean_prob_ucb_match_the_posterior_draws(gibbs_fm, synthetic_split):
    data, train, _ = synthetic_split
    users = data.X["user_id"].unique()[:4]
    out = {
        s: gibbs_fm.recommend(users, n=5, strategy=s, threshold=3.0, quantile=0.8)
        for s in ("mean", "prob", "ucb")
    }
    sigma = gibbs_fm.draws_.samples["sigma"].reshape(-1, 1)
    for strategy, recs in out.items():
        eta = _latent(gibbs_fm, _with_side(data.X, recs[["user_id", "item_id"]]))
        expected = {
            "mean": eta.mean(0),
            "prob": norm.sf((3.0 - eta) / sigma).mean(0),
            "ucb": np.quantile(eta, 0.8, axis=0),
        }[strategy]
        np.testing.assert_allclose(recs["score"], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(recs["mean"], eta.mean(0), rtol=1e-4, atol=1e-4)
        lo, hi = np.quantile(eta, [0.05, 0.95], axis=0)
        np.testing.assert_allclose(recs["lower"], lo, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(recs["upper"], hi, rtol=1e-4, atol=1e-4)
        # ranks are 1..n with scores non-increasing within each user
        for _, g in recs.groupby("user_id"):
            assert g["rank"].tolist() == list(range(1, len(g) + 1))
            assert np.all(np.diff(g["score"].to_numpy()) <= 1e-12)


def test_mean_ranking_is_the_best_of_all_candidates(gibbs_fm, synthetic_split):
    """The top-n by mean equals sorting predict() over every unseen item."""
    data, train, _ = synthetic_split
    user = data.X["user_id"].iloc[0]
    recs = gibbs_fm.recommend([user], n=7)
    seen = set(data.X[train].loc[data.X[train]["user_id"] == user, "item_id"])
    items = [i for i in gibbs_fm.encoder_.levels["item"] if i not in seen]
    grid = _with_side(data.X, pd.DataFrame({"user_id": user, "item_id": items}))
    best = grid.assign(p=gibbs_fm.predict(grid)).sort_values("p", ascending=False)
    assert recs["item_id"].tolist() == best["item_id"].head(7).tolist()


def test_predictive_interval_is_wider_and_includes_noise(gibbs_fm, synthetic_split):
    data, _, _ = synthetic_split
    users = data.X["user_id"].unique()[:3]
    latent = gibbs_fm.recommend(users, n=4, prob=0.9)
    pred = gibbs_fm.recommend(users, n=4, prob=0.9, interval="predictive")
    assert pred["item_id"].tolist() == latent["item_id"].tolist()
    assert np.all(pred["upper"] - pred["lower"] > latent["upper"] - latent["lower"])
    sigma = float(np.median(gibbs_fm.draws_.samples["sigma"]))
    width = (pred["upper"] - pred["lower"]).to_numpy()
    assert np.all(width > 2 * 1.6 * sigma)  # at least the noise-only 90% width, about


# --------------------------------------------------------------------------- filters
def test_exclude_seen_never_returns_a_training_pair(gibbs_fm, synthetic_split):
    data, train, _ = synthetic_split
    users = data.X["user_id"].unique()
    recs = gibbs_fm.recommend(users, n=10)
    seen = _training_pairs(gibbs_fm, data.X[train])
    assert not (set(zip(recs["user_id"], recs["item_id"], strict=True)) & seen)
    assert recs.groupby("user_id").size().max() == 10
    # without the filter, training pairs do come back (so the check above has power)
    everything = gibbs_fm.recommend(users, n=10, exclude_seen=False)
    assert set(zip(everything["user_id"], everything["item_id"], strict=True)) & seen


def test_n_and_candidates_are_respected(gibbs_fm, synthetic_split):
    data, train, _ = synthetic_split
    users = list(data.X["user_id"].unique()[:6])
    cands = list(gibbs_fm.encoder_.levels["item"][:8])
    recs = gibbs_fm.recommend(users + users[:2], n=3, candidates=cands + cands[:1])
    assert recs["user_id"].unique().tolist() == users  # order kept, duplicates dropped
    assert set(recs["item_id"]) <= set(cands)
    assert recs.groupby("user_id").size().max() <= 3


def test_users_with_fewer_candidates_than_n(gibbs_fm, synthetic_split):
    data, train, _ = synthetic_split
    Xt = data.X[train]
    user = Xt["user_id"].value_counts().index[0]
    seen = list(Xt.loc[Xt["user_id"] == user, "item_id"].unique())
    unseen = [i for i in gibbs_fm.encoder_.levels["item"] if i not in set(seen)]
    cands = seen[:3] + unseen[:2]
    recs = gibbs_fm.recommend([user], n=10, candidates=cands)
    assert sorted(recs["item_id"]) == sorted(unseen[:2])
    assert recs["rank"].tolist() == [1, 2]
    only_seen = gibbs_fm.recommend([user], n=10, candidates=seen[:3])
    assert len(only_seen) == 0
    assert list(only_seen.columns) == [
        "user_id",
        "rank",
        "item_id",
        "score",
        "mean",
        "lower",
        "upper",
    ]


def test_ties_go_to_the_candidate_listed_first():
    kept_s = np.full((2, 3), -np.inf)
    kept_p = np.full((2, 3), np.iinfo(np.int64).max)
    score = np.array([[1.0, 2.0, 2.0, 0.5], [-np.inf, 3.0, -np.inf, 3.0]])
    s, p = top_n(kept_s, kept_p, score, np.arange(4), 3)
    assert p[0].tolist() == [1, 2, 0]
    assert p[1, :2].tolist() == [1, 3] and np.isneginf(s[1, 2])
    # merging a later block keeps earlier candidates ahead on ties
    s2, p2 = top_n(s, p, np.array([[2.0, 9.0], [3.0, 0.0]]), np.array([4, 5]), 3)
    assert p2[0].tolist() == [5, 1, 2]
    assert p2[1].tolist() == [1, 3, 4]


# ------------------------------------------------------------------------ cold start
def test_unknown_users_follow_the_cold_start_policy(gibbs_fm, synthetic_split):
    data, _, _ = synthetic_split
    known = data.X["user_id"].iloc[0]
    new = pd.DataFrame({"user_id": ["newcomer"], "occupation": ["student"], "age": [30]})
    both = pd.concat([data.X[data.X.user_id == known].head(1)[new.columns], new])
    recs = gibbs_fm.recommend(both, n=5)
    assert set(recs["user_id"]) == {known, "newcomer"}
    width = (recs["upper"] - recs["lower"]).groupby(recs["user_id"]).mean()
    assert width["newcomer"] > 1.3 * width[known]  # drawn from the prior: wider
    with pytest.raises(ValueError, match=r"users: id\(s\) \['newcomer'\] were not seen.*age"):
        gibbs_fm.recommend(pd.DataFrame({"user_id": ["newcomer"], "occupation": ["x"]}), n=2)
    strict = copy.copy(gibbs_fm)
    strict.cold_start = "error"
    with pytest.raises(ValueError, match=r"unseen ids .*newcomer.*cold_start='error'"):
        strict.recommend(new, n=2)


def test_new_items_are_recommended_from_their_side_features(gibbs_fm, synthetic_split):
    data, _, _ = synthetic_split
    users = data.X["user_id"].unique()[:3]
    new_items = pd.DataFrame({"item_id": ["brand_new"], "genres": [("Comedy", "Horror")]})
    recs = gibbs_fm.recommend(users, n=100, items=new_items)
    assert "brand_new" in set(recs["item_id"])
    new = recs[recs["item_id"] == "brand_new"]
    old = recs[recs["item_id"] != "brand_new"]
    assert (new["upper"] - new["lower"]).mean() > 1.3 * (old["upper"] - old["lower"]).mean()
    only_new = gibbs_fm.recommend(users, n=3, candidates=["brand_new"], items=new_items)
    assert only_new["item_id"].tolist() == ["brand_new"] * 3
    with pytest.raises(ValueError, match=r"items: candidate\(s\) \['brand_new'\].*genres"):
        gibbs_fm.recommend(users, n=3, candidates=["brand_new"])


# ---------------------------------------------------------------------- Thompson
def test_thompson_follows_the_posterior_probability_of_being_best(mf_long):
    model, data, train, _ = mf_long
    user = data.X["user_id"].iloc[0]
    seen = set(data.X[train].loc[data.X[train]["user_id"] == user, "item_id"])
    items = [i for i in model.encoder_.levels["item"] if i not in seen]
    eta = _latent(model, pd.DataFrame({"user_id": user, "item_id": items}))
    # a contested set: the six items most often best
    best = np.bincount(eta.argmax(1), minlength=len(items))
    cands = [items[j] for j in np.argsort(-best, kind="stable")[:6]]
    eta_c = _latent(model, pd.DataFrame({"user_id": user, "item_id": cands}))
    p_best = np.bincount(eta_c.argmax(1), minlength=len(cands)) / len(eta_c)
    assert p_best.max() < 0.8  # otherwise the test below has no power
    n_calls = 400
    first = [
        model.recommend([user], n=1, candidates=cands, strategy="thompson", seed=s)["item_id"].iloc[
            0
        ]
        for s in range(n_calls)
    ]
    observed = np.array([first.count(c) for c in cands])
    keep = p_best * n_calls >= 5  # pool rare items so that the chi-square test is valid
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(p_best[keep], p_best[~keep].sum()) * n_calls
    obs, exp = obs[exp > 0], exp[exp > 0]
    assert chisquare(obs, exp).pvalue > 1e-3
    # seeded: the same seed gives the same lists, and "mean" never explores
    again = model.recommend([user], n=3, candidates=cands, strategy="thompson", seed=7)
    pd.testing.assert_frame_equal(
        again, model.recommend([user], n=3, candidates=cands, strategy="thompson", seed=7)
    )
    means = {model.recommend([user], n=1, candidates=cands)["item_id"].iloc[0] for _ in range(3)}
    assert len(means) == 1


# --------------------------------------------------------------------- persistence
def test_recommendations_survive_save_and_load(gibbs_fm, synthetic_split, tmp_path):
    data, _, _ = synthetic_split
    users = data.X["user_id"].unique()[:5]
    before = gibbs_fm.recommend(users, n=4, strategy="ucb")
    loaded = bfm.load(gibbs_fm.save(tmp_path / "m.nc"))
    pd.testing.assert_frame_equal(before, loaded.recommend(users, n=4, strategy="ucb"))


# -------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, r"n: got 0; must be an integer >= 1"),
        ({"strategy": "greedy"}, r"strategy: got 'greedy'; allowed are \['mean', 'prob'"),
        ({"strategy": "prob"}, r"threshold: got None; strategy='prob' with task='regression'"),
        ({"strategy": "ucb", "quantile": 1.5}, r"quantile: got 1.5; must be a number in \(0, 1\)"),
        ({"interval": "wide"}, r"interval: got 'wide'; allowed are \['latent', 'predictive'\]"),
        ({"candidates": []}, r"candidates: got no ids"),
        ({"user": "occupation"}, r"user: got 'occupation'; allowed are the model's entity"),
    ],
)
def test_bad_arguments_raise_clear_errors(gibbs_fm, synthetic_split, kwargs, match):
    users = synthetic_split[0].X["user_id"].unique()[:2]
    with pytest.raises(ValueError, match=match):
        gibbs_fm.recommend(users, **kwargs)


def test_row_level_features_and_unfitted_models_are_refused(toy):
    X, y = toy
    with pytest.raises(bfm.NotFittedError, match="not fitted yet"):
        bfm.BayesianMF(rank=1).recommend(["u1"])
    model = bfm.BayesianFM(
        rank=1,
        features=[bfm.Categorical("user_id"), bfm.Categorical("item_id"), bfm.Numeric("hour")],
        inference=bfm.SVIConfig(num_steps=20, num_samples=10),
        progress_bar=False,
    ).fit(X.assign(hour=[1.0, 2.0, 3.0]), y)
    with pytest.raises(ValueError, match=r"field 'hour' .* belongs to neither the user"):
        model.recommend(["u1"])


# ---------------------------------------------------------------------- memory bound
MEMORY_SCRIPT = textwrap.dedent(
    """
    import numpy as np, pandas as pd, bayesfm as bfm

    rng = np.random.default_rng(0)
    n_users, n_items, n_obs = 500, 10000, 20000
    X = pd.DataFrame({"user_id": rng.integers(0, n_users, n_obs),
                      "item_id": rng.integers(0, n_items, n_obs)})
    X.loc[:n_users - 1, "user_id"] = np.arange(n_users)
    X.loc[:n_items - 1, "item_id"] = np.arange(n_items)
    y = rng.normal(3.5, 1.0, n_obs)
    model = bfm.BayesianMF(rank=2, inference=bfm.SVIConfig(num_steps=30, num_samples=100),
                           progress_bar=False).fit(X, y)
    model.recommend(np.arange(3), n=10)  # compile
    before = peak_mib()
    recs = model.recommend(np.arange(n_users), n=10, strategy="ucb")
    after = peak_mib()
    assert len(recs) == n_users * 10, len(recs)
    print(after - before)
    """
)


@pytest.mark.slow
def test_memory_stays_bounded_for_500_users_by_10000_items():
    """5M pairs x 100 draws would need 2 GB as one array; the blocked scorer needs far less
    (139 MiB measured with 1,000 users)."""
    growth_mib = peak_growth_mib(MEMORY_SCRIPT)
    assert growth_mib < 512, f"peak memory grew by {growth_mib:.0f} MiB"


# -------------------------------------------------------------------- ranking metrics
@pytest.fixture
def small_ranking():
    recs = pd.DataFrame(
        {
            "user_id": ["A", "A", "A", "B", "B", "C"],
            "rank": [1, 2, 3, 1, 2, 1],
            "item_id": ["i1", "i2", "i3", "i4", "i5", "i1"],
        }
    ).sample(frac=1.0, random_state=1)  # the rank column, not the row order, decides
    test = pd.DataFrame(
        {
            "user_id": ["A", "A", "A", "A", "B", "C"],
            "item_id": ["i2", "i3", "i9", "i1", "i5", "i1"],
            "rating": [5, 4, 5, 2, 4, 3],
        }
    )
    return recs, test


def test_ranking_metrics_match_hand_computed_values(small_ranking):
    recs, test = small_ranking
    out = metrics.ranking_metrics(
        recs, test, k=3, threshold=4, catalogue=[f"i{j}" for j in range(1, 11)]
    )
    # A: hits at ranks 2, 3 of 3 relevant (i2, i3, i9); B: hit at rank 2 of 1 relevant;
    # C has no relevant test item and is left out.
    d2, d3 = 1 / np.log2(3), 1 / np.log2(4)
    ndcg_a = (d2 + d3) / (1 + d2 + d3)
    ndcg_b = d2 / 1
    ap_a = (1 / 2 + 2 / 3) / 3
    ap_b = (1 / 2) / 1
    assert out["n_users"] == 2
    assert out["precision"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert out["recall"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["ndcg"] == pytest.approx((ndcg_a + ndcg_b) / 2)
    assert out["map"] == pytest.approx((ap_a + ap_b) / 2)
    assert out["coverage"] == pytest.approx(5 / 10)
    assert metrics.coverage_at_k(recs, 10, k=1) == pytest.approx(2 / 10)
    at1 = metrics.ranking_metrics(recs, test, k=1, threshold=4)
    assert at1["precision"] == 0.0 and at1["ndcg"] == 0.0
    assert metrics.precision_at_k(recs, test, 3, threshold=4) == out["precision"]
    assert metrics.ndcg_at_k(recs, test, 3, threshold=4) == out["ndcg"]
    assert metrics.recall_at_k(recs, test, 3, threshold=4) == out["recall"]
    assert metrics.map_at_k(recs, test, 3, threshold=4) == out["map"]


def test_ranking_metrics_reject_bad_input(small_ranking):
    recs, test = small_ranking
    with pytest.raises(ValueError, match=r"k: got 0; must be an integer >= 1"):
        metrics.ranking_metrics(recs, test, k=0)
    with pytest.raises(ValueError, match=r"test: missing column 'stars'"):
        metrics.ranking_metrics(recs, test, rating="stars")
    with pytest.raises(ValueError, match=r"recommendations: missing column 'item_id'"):
        metrics.ranking_metrics(recs.drop(columns="item_id"), test)


def test_expected_ndcg_is_the_ndcg_of_each_draws_ranking(mf_long):
    model, data, train, test = mf_long
    test_df = data.X[test].assign(rating=data.y[test])
    out = metrics.expected_ndcg(model, test_df, k=5, threshold=float(np.median(data.y)), n_draws=4)
    assert out["n_draws"] == 4 and len(out["values"]) == 4
    # oracle: rank every unseen item by one draw's latent mean, then score with ranking_metrics
    users = out_users = test_df.loc[test_df["rating"] >= np.median(data.y), "user_id"].unique()
    items = model.encoder_.levels["item"]
    grid = pd.DataFrame(
        {"user_id": np.repeat(users, len(items)), "item_id": np.tile(items, len(users))}
    )
    seen = _training_pairs(model, data.X[train])
    grid = grid[[p not in seen for p in zip(grid["user_id"], grid["item_id"], strict=True)]]
    eta = _latent(model, grid)
    total = eta.shape[0]
    # a systematic sample: every (total / 4)-th draw from a start drawn with the seed (0)
    step = total / 4
    draws = (np.random.default_rng(0).uniform(0, step) + step * np.arange(4)).astype(int)
    assert len(np.unique(draws)) == 4 and draws.max() < total
    for value, d in zip(out["values"], draws, strict=True):
        ranked = grid.assign(s=eta[d]).sort_values(["user_id", "s"], ascending=[True, False])
        top = ranked.groupby("user_id").head(5)
        expected = metrics.ranking_metrics(top, test_df, k=5, threshold=float(np.median(data.y)))
        assert value == pytest.approx(expected["ndcg"], abs=1e-9)
    assert out["n_users"] == len(out_users)
    assert out["lower"] <= out["mean"] <= out["upper"]


def test_kept_tables_and_per_block_recomputation_agree(gibbs_fm, synthetic_split, monkeypatch):
    """Small catalogues keep per-draw entity tables; large ones recompute them per block."""
    from bayesfm import recommend as rec

    users = synthetic_split[0].X["user_id"].unique()[:7]
    kept = gibbs_fm.recommend(users, n=6, strategy="ucb")
    monkeypatch.setattr(rec, "TABLE_FLOATS", 0)
    monkeypatch.setattr(rec, "BLOCK_FLOATS", 600 * 8)  # several user and item blocks
    recomputed = gibbs_fm.recommend(users, n=6, strategy="ucb")
    pd.testing.assert_frame_equal(kept, recomputed, rtol=1e-5)


@pytest.mark.parametrize("task", ["ordinal", "binary"])
def test_classification_tasks_rank_by_their_own_probabilities(task):
    """Ordinal: mean = E[class], prob = P(y >= t); binary: mean = prob = P(y = 1)."""
    from bayesfm.datasets import make_synthetic

    d = make_synthetic(n_users=30, n_items=20, n_obs=400, rank=2, with_side=False, seed=3)
    stars = np.clip(np.round(d.y), 1, 5).astype(int)
    y = stars if task == "ordinal" else (stars >= 4).astype(int)
    model = bfm.BayesianMF(
        rank=2,
        task=task,
        inference=bfm.SVIConfig(num_steps=300, num_samples=100),
        progress_bar=False,
    ).fit(d.X, y)
    users = d.X["user_id"].unique()[:3]
    by_mean = model.recommend(users, n=4)
    np.testing.assert_allclose(
        by_mean["mean"], model.predict(by_mean[["user_id", "item_id"]]), atol=1e-5
    )
    threshold = 4 if task == "ordinal" else None
    by_prob = model.recommend(users, n=4, strategy="prob", threshold=threshold)
    proba = model.predict_proba(by_prob[["user_id", "item_id"]])
    expected = proba[:, model.classes_ >= 4].sum(1) if task == "ordinal" else proba[:, 1]
    np.testing.assert_allclose(by_prob["score"], expected, atol=1e-5)
    # predictive intervals are on the label scale
    labels = set(np.unique(y).astype(float))
    wide = model.recommend(users, n=4, interval="predictive")
    assert set(wide["lower"]) | set(wide["upper"]) <= labels
