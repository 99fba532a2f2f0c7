"""The model equation: MF == FM on the toy example, and the FM predictor against a dense oracle."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from numpyro.infer.util import log_density

import bayesfm as bfm
from bayesfm.data import FittedEncoder
from bayesfm.fm import (
    ModelSpec,
    fm_model,
    fm_predictor,
    initial_values,
    mf_predictor,
    owned_sums,
)
from bayesfm.inference import to_jax


def _random_params(spec: ModelSpec, seed: int) -> dict:
    """Random values for every site (the FM parameters as well as hyperparameters)."""
    values = initial_values(spec, jax.random.PRNGKey(seed))
    keys = iter(jax.random.split(jax.random.PRNGKey(seed + 1), 4 * len(values)))
    out = {}
    for name, v in values.items():
        noise = jax.random.normal(next(keys), jnp.shape(v))
        out[name] = jnp.exp(noise) if "lambda" in name or name == "noise_precision" else noise
    return out


def test_mf_equals_fm_on_toy_example(toy):
    X, y = toy
    spec = bfm.FeatureSpec([bfm.Categorical("user_id"), bfm.Categorical("item_id")])
    enc = FittedEncoder.fit(spec, X)
    fm_spec = ModelSpec(enc.structure, rank=3)
    mf_spec = replace(fm_spec, use_mf_path=True)
    # all four cells, including the missing u2 x i1
    cells = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2"], "item_id": ["i1", "i2", "i1", "i2"]})
    data = to_jax(enc.transform(cells).arrays())
    params = _random_params(fm_spec, 0)
    pred_fm = fm_predictor(params, data, fm_spec.structure)
    pred_mf = mf_predictor(params, data, mf_spec.structure)
    np.testing.assert_allclose(pred_fm, pred_mf, rtol=1e-5, atol=1e-6)
    # the MF prediction is literally w0 + w_u + w_i + <v_u, v_i>
    u, i = 1, 0  # u2, i1
    manual = (
        params["w0"]
        + params["w_user"][u]
        + params["w_item"][i]
        + params["v_user"][u] @ params["v_item"][i]
    )
    np.testing.assert_allclose(pred_fm[2], manual, rtol=1e-5)
    # and the joint log density of both models agrees on the observed ratings
    obs = to_jax(enc.transform(X).arrays())
    args = (obs, jnp.float32(np.mean(y)), jnp.asarray(y, jnp.float32))
    lp_fm, _ = log_density(partial(fm_model, spec=fm_spec), args, {}, params)
    lp_mf, _ = log_density(partial(fm_model, spec=mf_spec), args, {}, params)
    np.testing.assert_allclose(lp_fm, lp_mf, rtol=1e-6)
    assert np.isfinite(lp_fm)


def _dense_fm(params, rows, groups, rank):
    """The textbook O(n^2) FM over explicit (group, level, value) features of each row."""
    out = []
    for feats in rows:
        total = float(params["w0"])
        for g, j, x in feats:
            total += float(params[f"w_{g}"][j]) * x
        for a in range(len(feats)):
            for b in range(a + 1, len(feats)):
                ga, ja, xa = feats[a]
                gb, jb, xb = feats[b]
                va = np.asarray(params[f"v_{ga}"][ja])
                vb = np.asarray(params[f"v_{gb}"][jb])
                total += float(va @ vb) * xa * xb
        out.append(total)
    return np.array(out)


def test_fm_predictor_matches_dense_pairwise_oracle():
    X = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "c", "c"],
            "item_id": [1, 2, 2, 3, 1],
            "age": [30.0, 30.0, 50.0, 20.0, 20.0],
            "genres": ["x|y", "z", "z", "x", "x|y"],
            "hour": [0.5, -1.0, 2.0, 0.0, 1.0],
        }
    )
    spec = bfm.FeatureSpec(
        [
            bfm.Categorical("user_id"),
            bfm.Categorical("item_id"),
            bfm.Numeric("age", owner="user_id"),
            bfm.MultiHot("genres", owner="item_id"),
            bfm.Numeric("hour"),
            bfm.Implicit(owner="user_id", members="item_id"),
        ]
    )
    enc = FittedEncoder.fit(spec, X)
    mspec = ModelSpec(enc.structure, rank=3)
    params = _random_params(mspec, 3)
    pred = fm_predictor(params, to_jax(enc.transform(X).arrays()), mspec.structure)

    # build each row's explicit feature list independently of the encoder's arrays
    users, items = ["a", "b", "c"], [1, 2, 3]
    genres = {"x": 0, "y": 1, "z": 2}
    age_mu, age_sd = X.age.mean(), X.age.std(ddof=0)
    rated = {u: sorted({items.index(i) for i in X.item_id[X.user_id == u]}) for u in users}
    rows = []
    for _, r in X.iterrows():
        u = users.index(r.user_id)
        gs = r.genres.split("|")
        feats = [("user", u, 1.0), ("item", items.index(r.item_id), 1.0)]
        feats.append(("age", 0, (X.age[X.user_id == r.user_id].iloc[0] - age_mu) / age_sd))
        feats += [("genres", genres[g], 1.0 / len(gs)) for g in gs]
        feats.append(("hour", 0, (r.hour - X.hour.mean()) / X.hour.std(ddof=0)))
        feats += [("implicit_item", j, len(rated[r.user_id]) ** -0.5) for j in rated[r.user_id]]
        rows.append(feats)
    expected = _dense_fm(params, rows, mspec.structure.groups, 3)
    np.testing.assert_allclose(pred, expected, rtol=1e-4, atol=1e-4)


def test_noncentered_sites_map_to_the_centered_parameters(toy):
    """``v = mu + z / sqrt(lambda)``: both parametrizations describe the same FM parameters."""
    X, y = toy
    spec = bfm.FeatureSpec([bfm.Categorical("user_id"), bfm.Categorical("item_id")])
    enc = FittedEncoder.fit(spec, X)
    prior = bfm.PriorConfig(parametrization="noncentered")
    mspec = ModelSpec(enc.structure, rank=2, prior=prior)
    values = _random_params(mspec, 5)
    args = (to_jax(enc.transform(X).arrays()), jnp.float32(2.0), jnp.asarray(y, jnp.float32))
    lp, trace = log_density(partial(fm_model, spec=mspec), args, {}, values)
    assert np.isfinite(lp)
    expected_v = values["v_mu_user"] + values["v_user_z"] / jnp.sqrt(values["v_lambda_user"])
    np.testing.assert_allclose(trace["v_user"]["value"], expected_v, rtol=1e-6)
    expected_w = values["w_mu_item"] + values["w_item_z"] / jnp.sqrt(values["w_lambda_item"])
    np.testing.assert_allclose(trace["w_item"]["value"], expected_w, rtol=1e-6)
    assert "v_user" not in {k for k, v in trace.items() if v["type"] == "sample"}


def _owned_frame():
    """Six rows with user- and item-owned features, a row-level numeric and an implicit set."""
    return pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "c", "c", "b"],
            "item_id": [1, 2, 2, 3, 1, 3],
            "age": [30.0, 30.0, 50.0, 20.0, 20.0, 50.0],
            "occupation": ["x", "x", "y", "x", "x", "y"],
            "genres": ["x|y", "z", "z", "x", "x|y", "x"],
            "hour": [0.5, -1.0, 2.0, 0.0, 1.0, 0.3],
        }
    )


_OWNED_SPEC = [
    bfm.Categorical("user_id"),
    bfm.Categorical("item_id"),
    bfm.Numeric("age", owner="user_id"),
    bfm.Categorical("occupation", owner="user_id"),
    bfm.MultiHot("genres", owner="item_id"),
    bfm.Numeric("hour"),
    bfm.Implicit(owner="user_id", members="item_id"),
]


def test_entity_parametrization_is_the_centered_model_shifted():
    """``t_e = w_e + o_e`` has unit Jacobian: at the same FM parameters the entity-total model
    has the centred model's log density, and it hands back the same ``w_e`` and ``v_e``."""
    X = _owned_frame()
    enc = FittedEncoder.fit(bfm.FeatureSpec(_OWNED_SPEC), X)
    centred = ModelSpec(enc.structure, rank=3)
    by_entity = replace(centred, prior=bfm.PriorConfig(parametrization="entity"))
    data = to_jax(enc.transform(X).arrays())
    args = (data, jnp.float32(3.0), jnp.asarray(np.arange(6) % 5 + 1.0, jnp.float32))
    values = _random_params(centred, 7)
    owned = owned_sums(values, data["terms"], centred.structure)
    assert set(owned) == {"user", "item"}  # "hour" belongs to the rows
    shifted = dict(values)
    for d, (lin, s, _) in owned.items():
        assert np.abs(np.asarray(s)).max() > 0.1  # the shift is not trivially zero
        shifted[f"w_{d}_tot"] = shifted.pop(f"w_{d}") + lin
        shifted[f"v_{d}_tot"] = shifted.pop(f"v_{d}") + s
    lp_c, _ = log_density(partial(fm_model, spec=centred), args, {}, values)
    lp_e, trace = log_density(partial(fm_model, spec=by_entity), args, {}, shifted)
    np.testing.assert_allclose(lp_e, lp_c, rtol=1e-5)
    for d in owned:
        assert trace[f"v_{d}"]["type"] == "deterministic"
        np.testing.assert_allclose(trace[f"v_{d}"]["value"], values[f"v_{d}"], atol=1e-5)
        np.testing.assert_allclose(trace[f"w_{d}"]["value"], values[f"w_{d}"], atol=1e-5)
    # the owned features' weights enter the totals' prior: moving them changes the density
    moved = {**shifted, "w_occupation": shifted["w_occupation"] + 0.5}
    lp_moved, _ = log_density(partial(fm_model, spec=by_entity), args, {}, moved)
    assert abs(float(lp_moved - lp_e)) > 1e-3


def test_entity_parametrization_starts_from_totals():
    enc = FittedEncoder.fit(bfm.FeatureSpec(_OWNED_SPEC), _owned_frame())
    spec = ModelSpec(enc.structure, rank=2, prior=bfm.PriorConfig(parametrization="entity"))
    values = initial_values(spec, jax.random.PRNGKey(0))
    assert {"w_user_tot", "v_item_tot", "w_genres", "v_occupation"} <= set(values)
    assert "v_user" not in values
