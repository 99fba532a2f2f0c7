"""Convergence diagnostics on identified quantities."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

import bayesfm as bfm
from bayesfm.diagnostics import ConvergenceWarning, identified_quantities, probe_table


def test_an_under_run_fit_is_flagged_and_warned_once(toy):
    X, y = toy
    model = bfm.BayesianMF(
        rank=1,
        inference=bfm.NUTSConfig(num_warmup=10, num_samples=10, num_chains=2, init_svi_steps=0),
        progress_bar=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y)
    conv = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(conv) == 1
    assert "model.diagnose()" in str(conv[0].message)
    table = model.diagnose()
    sigma = table.set_index("quantity").loc["sigma"]
    assert sigma["flag"] == "warn"
    # 2 chains x 10 draws can never reach 100 effective draws per chain
    assert "bulk ESS" in sigma["reason"] and sigma["ess_bulk"] <= 200
    assert (table.loc[table.kind != "sampler", "flag"] == "warn").all()


def test_a_long_fit_on_a_tiny_model_passes(mf_long):
    model = mf_long[0]
    table = model.diagnose()
    assert (table["flag"] == "pass").all(), table[table.flag != "pass"].to_string()
    assert (table["r_hat"] < 1.01).all() and (table["ess_bulk"] > 200).all()
    kinds = set(table["kind"])
    assert {"noise", "bias", "hyperparameter", "probe"} <= kinds
    assert "location" in set(table.quantity) and "w0" not in set(table.quantity)


def test_table_columns_and_nuts_sampler_rows(nuts_fm):
    table = nuts_fm.diagnose()
    assert list(table.columns) == [
        "quantity",
        "kind",
        "mean",
        "sd",
        "r_hat",
        "ess_bulk",
        "ess_tail",
        "mcse_mean",
        "flag",
        "reason",
    ]
    assert set(table["flag"]) <= {"pass", "warn"}
    sampler = table[table.kind == "sampler"].quantity.tolist()
    assert "divergences" in sampler and "tree depth saturation" in sampler
    assert sum(q.startswith("E-BFMI") for q in sampler) == 2  # one per chain
    # raw factors are never diagnosed
    assert not table.quantity.str.startswith("v_user").any()
    probes = table[table.kind == "probe"].quantity
    assert probes.str.endswith("(observed)").sum() == 20
    assert probes.str.endswith("(unobserved)").sum() == 20
    # warn rows explain themselves
    assert (table.loc[table.flag == "warn", "reason"].str.len() > 0).all()


def test_svi_rows_are_not_applicable_and_the_loss_is_checked(svi_fm):
    table = svi_fm.diagnose()
    loss = table[table.kind == "optimizer"]
    assert len(loss) == 1 and loss.flag.iloc[0] in {"pass", "warn"}
    others = table[table.kind != "optimizer"]
    assert (others.flag == "n/a").all() and others.r_hat.isna().all()


def test_identified_quantities_ignore_factor_order_sign_and_bias_shifts():
    rng = np.random.default_rng(0)
    lam = rng.gamma(2.0, 1.0, size=(2, 50, 3))
    mu = rng.normal(size=(2, 50))
    post = xr.Dataset(
        {
            "w0": (("chain", "draw"), rng.normal(size=(2, 50))),
            "v_lambda_user": (("chain", "draw", "factor"), lam),
            "v_mu_user": (("chain", "draw", "factor"), rng.normal(size=(2, 50, 3))),
            "w_mu_user": (("chain", "draw"), mu),
            "w_lambda_user": (("chain", "draw"), lam[..., 0]),
            "w_mu_item": (("chain", "draw"), -mu),
            "w_lambda_item": (("chain", "draw"), lam[..., 1]),
            "v_lambda_item": (("chain", "draw", "factor"), lam),
            "w_mu_age": (("chain", "draw"), mu),
            "w_lambda_age": (("chain", "draw"), lam[..., 2]),
            "v_lambda_age": (("chain", "draw", "factor"), lam),
            "w_age": (("chain", "draw", "age"), rng.normal(size=(2, 50, 1))),
        }
    )
    spec = bfm.FeatureSpec(
        [bfm.Categorical("user_id"), bfm.Categorical("item_id"), bfm.Numeric("age")]
    )
    moved = post.copy()
    moved["v_lambda_user"] = post["v_lambda_user"][..., ::-1]  # permute factors
    moved["v_mu_user"] = -post["v_mu_user"][..., ::-1]  # and flip their signs
    moved["w0"] = post["w0"] + 2.0  # move a constant from the user biases to w0
    moved["w_mu_user"] = post["w_mu_user"] - 2.0
    a = identified_quantities(post, spec)
    b = identified_quantities(moved, spec)
    for name in a.data_vars:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, err_msg=str(name))
    np.testing.assert_allclose(a["v_sd[user]"], np.sqrt((1 / lam).mean(-1)))
    np.testing.assert_allclose(a["w_sd[item]"], 1 / np.sqrt(lam[..., 1]))
    np.testing.assert_allclose(a["location"], post["w0"])  # the user and item means cancel
    # a numeric field has one level: its weight is diagnosed, not its hyperparameters
    assert "w[age]" in a and "w_sd[age]" not in a and "w_mu[user]" not in a


def test_probe_cells_are_unobserved_and_carry_the_item_side(synthetic_split, svi_fm):
    data, train, _ = synthetic_split
    X = data.X[train]
    probe = probe_table(X, svi_fm.encoder_, n_observed=5, n_unobserved=15, seed=3)
    seen = set(zip(X.user_id, X.item_id, strict=True))
    unobs = probe[probe.probe_kind == "unobserved"]
    assert len(unobs) == 15 and len(probe) == 20
    assert not any((u, i) in seen for u, i in zip(unobs.user_id, unobs.item_id, strict=True))
    genres = dict(zip(X.item_id, X.genres, strict=False))
    assert all(genres[i] == g for i, g in zip(unobs.item_id, unobs.genres, strict=True))
    occupation = dict(zip(X.user_id, X.occupation, strict=False))
    assert all(occupation[u] == o for u, o in zip(unobs.user_id, unobs.occupation, strict=True))


def test_one_chain_is_judged_by_its_ess_not_by_a_missing_r_hat():
    """R-hat needs several chains: a single chain with ample ESS passes, and says why it has
    no R-hat; a single chain with too few effective draws still warns; several chains with an
    undefined R-hat warn."""
    from bayesfm.diagnostics import ESS_PER_CHAIN_MIN, _flag_convergence

    good = {"quantity": "sigma", "r_hat": np.nan, "ess_bulk": 900.0, "ess_tail": 800.0}
    one = _flag_convergence(good, n_chains=1)
    assert one["flag"] == "pass"
    assert "one chain: no R-hat" in one["reason"]
    poor = _flag_convergence({**good, "ess_bulk": ESS_PER_CHAIN_MIN - 1.0}, n_chains=1)
    assert poor["flag"] == "warn"
    assert poor["reason"].startswith(f"bulk ESS {ESS_PER_CHAIN_MIN - 1} <= {ESS_PER_CHAIN_MIN}")
    assert "R-hat nan" not in poor["reason"]
    four = _flag_convergence({**good, "ess_bulk": 4000.0, "ess_tail": 4000.0}, n_chains=4)
    assert four["flag"] == "warn" and "R-hat nan >= 1.01" in four["reason"]
