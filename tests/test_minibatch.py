"""Minibatch SVI: batch layout, inclusion weights, sparse updates, recovery, monitoring."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import bayesfm as bfm
from bayesfm import minibatch
from bayesfm.data import ROW, FittedEncoder
from bayesfm.fm import ModelSpec, fm_predictor, initial_values
from bayesfm.minibatch import (
    RowBatches,
    _BatchFeed,
    _model_data,
    _run_block_dense,
    _run_block_rows,
    _site_info,
    inclusion_weights,
    touched_levels,
)

from .conftest import SIDE_SPEC


@pytest.fixture(scope="module")
def minibatch_fm(synthetic_split):
    """The FM of the ``svi_fm`` fixture, fitted on batches of 64 rows with 5% held out."""
    data, train, _ = synthetic_split
    model = bfm.BayesianFM(
        rank=2,
        features=bfm.FeatureSpec(SIDE_SPEC),
        inference=bfm.SVIConfig(
            num_steps=3000, num_samples=300, batch_size=64, holdout=0.05, eval_every=250
        ),
        progress_bar=False,
    )
    return model.fit(data.X[train], data.y[train])


def _row_level_table(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "user_id": rng.integers(0, 6, n).astype(str),
            "item_id": rng.integers(0, 5, n).astype(str),
            "hour": rng.normal(size=n),
            "tags": [
                tuple(rng.choice(list("abcd"), rng.integers(0, 4), replace=False)) for _ in range(n)
            ],
        }
    )
    spec = bfm.FeatureSpec(
        [
            bfm.Categorical("user_id"),
            bfm.Categorical("item_id"),
            bfm.Numeric("hour"),
            bfm.MultiHot("tags"),
        ]
    )
    return X, spec


def test_batches_of_row_level_terms_reproduce_the_full_predictor():
    X, fspec = _row_level_table()
    enc = FittedEncoder.fit(fspec, X)
    encoded = enc.transform(X)
    spec = ModelSpec(structure=enc.structure, rank=3)
    assert {t.dim for t in spec.structure.terms if t.carrier == ROW} == {"hour", "tags"}
    values = initial_values(spec, jax.random.PRNGKey(0))
    params = {k: v for k, v in values.items()}
    rng = np.random.default_rng(1)
    for g in spec.structure.groups:  # non-zero weights so that every term matters
        params[f"w_{g}"] = jnp.asarray(rng.normal(size=params[f"w_{g}"].shape), jnp.float32)
    full = fm_predictor(params, jax.tree.map(jnp.asarray, encoded.arrays()), spec.structure)
    rows = RowBatches.from_encoded(encoded, spec, np.zeros(len(X), np.float32))
    pick = rng.permutation(len(X))[:16]
    batch = jax.tree.map(jnp.asarray, rows.take(pick))
    part = fm_predictor(params, _model_data(batch, {}), spec.structure)
    np.testing.assert_allclose(np.asarray(part), np.asarray(full)[pick], rtol=1e-5, atol=1e-6)


def test_inclusion_weights_match_the_batch_feed():
    """1 / weight is the chance that a level appears in one batch (drawn without replacement)."""
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(5), [1, 2, 2, 3, 52])
    rng.shuffle(users)
    rows = RowBatches(
        {"user": users.astype(np.int32), "item": np.zeros(60, np.int32)}, {}, np.zeros(60)
    )
    spec = ModelSpec(structure=bfm.data.Structure((("user", 5), ("item", 1)), ()), rank=2)
    b = 10
    pi = 1.0 / inclusion_weights(rows, spec, b)["user"]
    feed = _BatchFeed(60, b, seed=3)
    n_batches = 12_000
    seen = np.zeros(5)
    for batch in feed.rows(n_batches):
        seen[np.unique(users[batch])] += 1
    freq = seen / n_batches
    se = np.sqrt(pi * (1 - pi) / n_batches)
    assert np.all(np.abs(freq - pi) <= 4 * se + 1e-9), (freq, pi)
    assert pi[-1] == pytest.approx(1.0, abs=1e-6)  # 52 of 60 rows: every batch of 10 holds one


def test_touched_levels_index_the_batch_rows_exactly():
    """Per batch: ``uniq`` holds each touched level once, then padding; ``uniq[position]``
    gives back every row's level."""
    rng = np.random.default_rng(1)
    sizes = {"user": 40, "item": 7}
    entity = {d: rng.integers(0, n, (3, 25)).astype(np.int32) for d, n in sizes.items()}
    out = touched_levels({"entity": entity}, sizes)
    for d, n in sizes.items():
        for b in range(3):
            uniq, position = out["uniq"][d][b], out["position"][d][b]
            levels = np.unique(entity[d][b])
            assert sorted(uniq[: len(levels)]) == list(levels)
            assert np.all(uniq[len(levels) :] == n)  # out of range: gathers fill, scatters drop
            np.testing.assert_array_equal(uniq[position], entity[d][b])


@pytest.mark.parametrize("by_rows", [False, True])
def test_a_step_moves_only_the_levels_its_batch_touches(synthetic_split, by_rows):
    data, train, _ = synthetic_split
    X, y = data.X[train], data.y[train].astype(np.float32)
    fspec = bfm.FeatureSpec([f for f in SIDE_SPEC if f.column in ("user_id", "item_id", "genres")])
    enc = FittedEncoder.fit(fspec, X)
    encoded = enc.transform(X)
    spec = ModelSpec(structure=enc.structure, rank=2)
    rows = RowBatches.from_encoded(encoded, spec, y)
    owned = jax.tree.map(jnp.asarray, encoded.arrays(term_pad=True)["terms"])
    init = initial_values(spec, jax.random.PRNGKey(0))
    b = 8
    probe = jax.tree.map(jnp.asarray, rows.take(np.arange(b)))
    transforms, local = _site_info(spec, init, probe, owned)
    assert local == {"w_user": "user", "v_user": "user", "w_item": "item", "v_item": "item"}
    params = {
        k: {"loc": t.inv(jnp.asarray(init[k])), "log_scale": jnp.full(jnp.shape(init[k]), -3.0)}
        for k, t in transforms.items()
    }
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = (params, (zeros, zeros), jnp.int32(0), jax.random.PRNGKey(1))
    weights = {d: jnp.asarray(w) for d, w in inclusion_weights(rows, spec, b).items()}
    block = rows.take(np.arange(b)[None])
    if by_rows:
        block = touched_levels(block, {d: int(w.shape[0]) for d, w in weights.items()})
    block["active"] = np.ones(1, bool)
    cfg = bfm.SVIConfig(num_steps=10, batch_size=b)
    run = partial(
        _run_block_rows if by_rows else _run_block_dense,
        spec=spec,
        transforms=transforms,
        local=local,
        n_total=float(rows.n_rows),
        cfg=cfg,
    )
    (new, _, step, _), loss = run(state, block, owned, weights, jnp.float32(0.0))
    assert int(step) == 1 and np.isfinite(np.asarray(loss)).all()
    for name, dim in local.items():
        touched = np.zeros(spec.structure.n_levels(dim), bool)
        touched[rows.entity[dim][:b]] = True
        moved = np.asarray(new[name]["loc"] != params[name]["loc"]).reshape(len(touched), -1)
        np.testing.assert_array_equal(np.any(moved, 1), touched, err_msg=name)
    for name in ("noise_precision", "w_mu_user", "v_lambda_item", "w_genres"):
        assert np.all(np.asarray(new[name]["loc"]) != np.asarray(params[name]["loc"])), name


def test_gathered_rows_and_dense_updates_fit_alike(synthetic_split, monkeypatch):
    """MF with 100 users and items and batches of 16 rows gathers rows; forcing the dense
    update on the same problem must give an equally good fit."""
    data, train, test = synthetic_split
    cfg = bfm.SVIConfig(num_steps=4000, num_samples=100, batch_size=16)
    fits = {}
    for path, ratio in (("rows", minibatch.ROWS_PATH_RATIO), ("dense", 10**9)):
        monkeypatch.setattr(minibatch, "ROWS_PATH_RATIO", ratio)
        model = bfm.BayesianMF(rank=2, inference=cfg, progress_bar=False)
        fits[path] = model.fit(data.X[train], data.y[train])
        assert model.timings_["minibatch_update"] == path
    rmse = {
        k: float(np.sqrt(np.mean((m.predict(data.X[test]) - data.mean[test]) ** 2)))
        for k, m in fits.items()
    }
    assert abs(rmse["rows"] - rmse["dense"]) < 0.05 * rmse["dense"], rmse
    sigma = {k: float(m.draws_.samples["sigma"].mean()) for k, m in fits.items()}
    assert abs(sigma["rows"] - sigma["dense"]) < 0.05 * sigma["dense"], sigma


def test_minibatch_svi_recovers_sigma_and_matches_full_batch(minibatch_fm, svi_fm, synthetic_split):
    data, _, test = synthetic_split
    sigma = minibatch_fm.draws_.samples["sigma"].mean()
    full_sigma = svi_fm.draws_.samples["sigma"].mean()
    # batch noise inflates sigma a little (0.553 against 0.520 full-batch; truth 0.5)
    assert abs(sigma - data.noise_sd) < 0.15 * data.noise_sd
    assert abs(sigma - full_sigma) < 0.1 * full_sigma
    for target in (data.y[test], data.mean[test]):  # observed ratings and the planted mean
        rmse = {
            name: float(np.sqrt(np.mean((m.predict(data.X[test]) - target) ** 2)))
            for name, m in (("mini", minibatch_fm), ("full", svi_fm))
        }
        assert rmse["mini"] <= 1.05 * rmse["full"], rmse
    iv = minibatch_fm.predict_interval(data.X[test], 0.9)
    cover = np.mean((data.y[test] >= iv["lower"]) & (data.y[test] <= iv["upper"]))
    assert 0.83 <= cover <= 0.97


def test_holdout_monitoring_is_recorded_and_survives_save_load(
    minibatch_fm, synthetic_split, tmp_path
):
    ss = minibatch_fm.idata_.sample_stats
    np.testing.assert_array_equal(ss["svi_eval"].to_numpy(), np.arange(250, 3001, 250))
    rmse = ss["holdout_rmse"].to_numpy().ravel()
    assert rmse.shape == (12,) and np.all(np.isfinite(rmse))
    # rows it never saw: near the noise sd (0.5), well below a constant prediction's (0.79)
    assert rmse[-1] < 0.8 * np.std(synthetic_split[0].y)
    assert ss["loss"].shape == (1, 3000)
    loaded = bfm.load(minibatch_fm.save(tmp_path / "m.nc"))
    np.testing.assert_allclose(loaded.idata_.sample_stats["holdout_lpd"], ss["holdout_lpd"])
    assert loaded.inference_ == minibatch_fm.inference_
    loaded.save(tmp_path / "again.nc")  # a loaded model saves again


def test_early_stopping_ends_the_fit(synthetic_split):
    data, train, _ = synthetic_split
    cfg = bfm.SVIConfig(
        num_steps=20_000, num_samples=20, batch_size=64, holdout=0.1, eval_every=100, patience=2
    )
    model = bfm.BayesianMF(rank=2, inference=cfg, progress_bar=False)
    model.fit(data.X[train], data.y[train])
    steps = model.idata_.sample_stats["svi_eval"].to_numpy()
    assert len(model.draws_.loss) == steps[-1] < 20_000
    lpd = model.idata_.sample_stats["holdout_lpd"].to_numpy().ravel()
    assert np.argmax(lpd) <= len(lpd) - 2  # stopped after evaluations without improvement


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, r"batch_size: got 0; must be an integer >= 1"),
        ({"batch_size": 32, "guide": "lowrank"}, r"guide: got 'lowrank' with batch_size=32"),
        ({"batch_size": 32, "num_particles": 2}, r"num_particles: got 2 with batch_size=32"),
        ({"holdout": 0.7}, r"holdout: got 0.7; allowed a share in \[0, 0.5\)"),
        ({"patience": 3}, r"patience: got 3 with holdout=0"),
        ({"patience": -1, "holdout": 0.1}, r"patience: got -1; must be an integer >= 0"),
    ],
)
def test_svi_config_rejects_bad_minibatch_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bfm.SVIConfig(**kwargs)


def test_batch_larger_than_the_table_is_refused(synthetic_split):
    data, train, _ = synthetic_split
    n = int(train.sum())
    model = bfm.BayesianMF(
        rank=2, inference=bfm.SVIConfig(num_steps=5, batch_size=n + 1), progress_bar=False
    )
    with pytest.raises(ValueError, match=rf"batch_size: got {n + 1}; must be at most .*\({n}\)"):
        model.fit(data.X[train], data.y[train])
    assert not hasattr(model, "draws_")


def test_pointwise_groups_too_large_are_refused_before_fitting():
    X = pd.DataFrame({"user_id": np.arange(2_000_000) % 7, "item_id": np.arange(2_000_000) % 5})
    model = bfm.BayesianMF(rank=2, inference=bfm.SVIConfig(num_samples=500), progress_bar=False)
    with pytest.raises(ValueError, match=r"store_pointwise: got True.*2,000,000 rows x 500 draws"):
        model.fit(X, np.zeros(len(X)))
    assert not hasattr(model, "draws_")
