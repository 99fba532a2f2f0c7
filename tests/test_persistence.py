"""save / load: bit-identical round trips, atomic writes and clear errors on bad files."""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pytest
import xarray as xr

import bayesfm as bfm


def _new_rows(data, test):
    X = data.X[test].iloc[:40].copy()
    X.loc[X.index[:4], "item_id"] = ["new-a", "new-a", "new-b", "new-c"]  # cold start
    X.loc[X.index[4:6], "user_id"] = "new-user"
    return X


@pytest.mark.parametrize("fixture", ["svi_fm", "nuts_fm", "gibbs_fm"])
def test_save_load_predicts_bit_identically(fixture, request, synthetic_split, tmp_path):
    model = request.getfixturevalue(fixture)
    data, _, test = synthetic_split
    X = _new_rows(data, test)
    path = model.save(tmp_path / "run.nc")
    loaded = bfm.load(path)
    assert type(loaded) is type(model) and loaded.get_params().keys() == model.get_params().keys()
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(
        loaded.predict_interval(X, 0.8).to_numpy(), model.predict_interval(X, 0.8).to_numpy()
    )
    np.testing.assert_array_equal(loaded.predict_posterior(X), model.predict_posterior(X))
    assert loaded.score(X, data.y[test][:40]) == model.score(X, data.y[test][:40])
    assert loaded.diagnose().equals(model.diagnose())
    for group in ("posterior", "log_likelihood", "constant_data"):
        xr.testing.assert_identical(loaded.idata_[group], model.idata_[group])
    # the file is also a plain ArviZ NetCDF file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert "posterior" in az.from_netcdf(path).groups()


@pytest.fixture(scope="module")
def ordinal_implicit(synthetic_split):
    data, train, _ = synthetic_split
    stars = np.clip(np.round(data.y), 1, 5).astype(int)
    fields = [
        bfm.Categorical("user_id"),
        bfm.Categorical("item_id"),
        bfm.Categorical("occupation", owner="user_id"),
        bfm.Numeric("age", owner="user_id"),
        bfm.MultiHot("genres", owner="item_id"),
        bfm.Implicit(owner="user_id", members="item_id"),
    ]
    model = bfm.BayesianFM(
        rank=2,
        features=fields,
        task="ordinal",
        inference=bfm.SVIConfig(num_steps=200, num_samples=30),
        store_factors=False,
        progress_bar=False,
    )
    return model.fit(data.X[train], stars[train]), stars


def test_round_trip_keeps_classes_encoders_and_factors_outside_idata(
    ordinal_implicit, synthetic_split, tmp_path
):
    model, stars = ordinal_implicit
    data, _, test = synthetic_split
    X = _new_rows(data, test)
    assert "v_user" not in model.idata_.posterior
    loaded = bfm.load(model.save(tmp_path / "ordinal.nc"))
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    assert loaded.classes_.dtype == model.classes_.dtype
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.draws_.samples["v_user"], model.draws_.samples["v_user"])
    for dim, levels in model.encoder_.levels.items():
        np.testing.assert_array_equal(loaded.encoder_.levels[dim], levels)
    assert loaded.encoder_.scaling == model.encoder_.scaling


def test_failed_save_keeps_the_existing_file(svi_fm, tmp_path, monkeypatch):
    path = svi_fm.save(tmp_path / "run.nc")
    before = path.read_bytes()
    calls = []
    original = xr.Dataset.to_netcdf

    def failing(self, *args, **kwargs):
        calls.append(kwargs.get("group"))
        if len(calls) == 3:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(xr.Dataset, "to_netcdf", failing)
    with pytest.raises(OSError, match="disk full"):
        svi_fm.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nc"]  # no temporary left


def test_bad_files_give_clear_errors(svi_fm, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bfm.load(tmp_path / "missing.nc")
    garbage = tmp_path / "garbage.nc"
    garbage.write_bytes(b"this is not a netcdf file" * 100)
    with pytest.raises(ValueError, match="not a readable bayesfm model file"):
        bfm.load(garbage)
    whole = svi_fm.save(tmp_path / "whole.nc").read_bytes()
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="truncated"):
        bfm.load(truncated)
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"x": ("a", np.arange(3))}).to_netcdf(foreign, engine="h5netcdf", group="data")
    with pytest.raises(ValueError, match="not written by bayesfm's save"):
        bfm.load(foreign)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        svi_fm.save(tmp_path)
    with pytest.raises(bfm.NotFittedError, match="not fitted"):
        bfm.BayesianMF().save(tmp_path / "x.nc")
