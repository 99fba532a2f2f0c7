"""Tests for bayesfm.specs: the model cards in models/, their validation, data and fits."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

import bayesfm as bfm
from bayesfm.specs import SpecError, load_spec
from tests.test_datasets import ml100k_dir

MODELS = Path(__file__).resolve().parents[1] / "models"
CARDS = sorted(MODELS.glob("*.toml"))
REQUIRED = {
    "ml100k_mf",
    "ml100k_fm_side",
    "ml100k_fm_implicit_ordinal",
    "ml100k_binary",
    "synthetic_demo",
}


def _data_dir(card) -> Path | None:
    return ml100k_dir() if card.dataset.name == "movielens-100k" else None


def _edit(tmp_path: Path, card: str, old: str, new: str, name: str = "edited.toml") -> Path:
    """A copy of models/<card>.toml with ``old`` replaced by ``new`` (which must occur)."""
    text = (MODELS / f"{card}.toml").read_text()
    assert old in text, f"{old!r} not in {card}.toml"
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


# ------------------------------------------------------------------------- the cards
def test_required_cards_exist():
    assert REQUIRED <= {p.stem for p in CARDS}


@pytest.mark.parametrize("path", CARDS, ids=[p.stem for p in CARDS])
def test_card_validates(path):
    card = load_spec(path)
    assert card.name == path.stem
    model = card.build_estimator()
    assert isinstance(model, bfm.BayesianMF if card.estimator == "mf" else bfm.BayesianFM)
    assert model.inference is card.inference and model.task == card.task
    for run, entry in card.metrics.items():  # measured numbers always say how and when
        assert entry["method"] and entry["date"], run
        assert any(isinstance(v, float) for v in entry.values()), run


def test_card_contents():
    mf = load_spec(MODELS / "ml100k_mf.toml")
    assert (mf.estimator, mf.dataset.options["split"], mf.method) == ("mf", "ua", "gibbs")
    assert mf.metrics["nuts"]["rmse"] == 0.9148 and mf.metrics["gibbs"]["coverage_90"] == 0.9005
    side = load_spec(MODELS / "ml100k_fm_side.toml")
    assert side.features == bfm.FeatureSpec(
        [
            bfm.Categorical("user_id"),
            bfm.Categorical("item_id"),
            bfm.Numeric("age", owner="user_id"),
            bfm.Categorical("gender", owner="user_id"),
            bfm.Categorical("occupation", owner="user_id"),
            bfm.MultiHot("genres", owner="item_id"),
            bfm.Numeric("year", owner="item_id"),
        ]
    )
    ordinal = load_spec(MODELS / "ml100k_fm_implicit_ordinal.toml")
    assert ordinal.task == "ordinal"
    assert bfm.Implicit(owner="user_id", members="item_id") in ordinal.features.fields
    assert ordinal.metrics == {}  # not yet measured: no numbers
    binary = load_spec(MODELS / "ml100k_binary.toml")
    assert (binary.task, binary.target, binary.threshold) == ("binary", "rating", 4.0)


def test_features_round_trip_to_dict():
    """A card's [[features]] tables are FeatureSpec.to_dict items."""
    card = load_spec(MODELS / "ml100k_fm_implicit_ordinal.toml")
    raw = tomllib.loads((MODELS / "ml100k_fm_implicit_ordinal.toml").read_text())["features"]
    written = [{k: v for k, v in d.items() if v is not None} for d in card.features.to_dict()]
    for d in written:
        if d["type"] != "MultiHot":
            d.pop("sep", None)
        elif d["sep"] == "|":
            del d["sep"]
    assert written == raw


@pytest.mark.filterwarnings("ignore:.*convergence checks")  # expected of 20 + 20 draws
@pytest.mark.parametrize("path", CARDS, ids=[p.stem for p in CARDS])
def test_card_fits_with_tiny_settings(path):
    card = load_spec(path).with_tiny_settings()
    X_train, y_train, X_test, y_test = card.load_data(_data_dir(card))
    assert len(X_train) <= 3000 and len(X_test) <= 300
    assert card.target not in X_train.columns
    model = card.build_estimator(progress_bar=False).fit(X_train, y_train)
    pred = model.predict(X_test)
    assert pred.shape == (len(X_test),) and np.isfinite(pred).all()
    if card.task == "binary":  # P(y = 1)
        assert ((pred >= 0) & (pred <= 1)).all()
    elif card.task == "ordinal":  # E[class]
        assert y_train.min() <= pred.min() and pred.max() <= y_train.max()
    else:
        assert abs(pred.mean() - y_train.mean()) < 0.5


# ------------------------------------------------------------------------------ data
def test_synthetic_holdout_matches_demo():
    card = load_spec(MODELS / "synthetic_demo.toml")
    X_train, y_train, X_test, y_test = card.load_data()
    data = bfm.datasets.make_synthetic(
        n_users=80, n_items=60, n_obs=2500, rank=3, noise_sd=0.5, seed=0
    )
    test = np.zeros(2500, bool)
    test[np.random.default_rng(0).choice(2500, 500, replace=False)] = True
    np.testing.assert_array_equal(y_test, data.y[test])
    np.testing.assert_array_equal(y_train, data.y[~test])
    assert list(X_test.columns) == list(data.X.columns)


def test_movielens_target_threshold_and_fillna():
    folder = ml100k_dir()
    binary = load_spec(MODELS / "ml100k_binary.toml")
    X_train, y_train, X_test, y_test = binary.load_data(folder)
    raw_train, raw_test = bfm.datasets.load_movielens_100k(folder, split="ua")
    assert (len(X_train), len(X_test)) == (90570, 9430)
    np.testing.assert_array_equal(y_train, (raw_train.rating >= 4).astype(float))
    assert set(np.unique(y_test)) == {0.0, 1.0}
    side = load_spec(MODELS / "ml100k_fm_side.toml")
    X_train, _, X_test, _ = side.load_data(folder)
    assert raw_train.year.isna().any()  # item 267 has no release date
    assert not X_train.year.isna().any() and not X_test.year.isna().any()
    assert X_train.year[raw_train.year.isna()].eq(raw_train.year.median()).all()


def test_tiny_settings():
    nuts = load_spec(MODELS / "ml100k_mf.toml")
    assert nuts.with_tiny_settings().inference == bfm.GibbsConfig(
        num_warmup=20, num_samples=20, num_chains=1
    )
    svi = load_spec(MODELS / "synthetic_demo.toml").with_tiny_settings()
    assert (svi.inference.num_steps, svi.inference.num_samples) == (200, 50)
    assert svi.max_train_rows == 3000 and svi.max_test_rows == 300


def test_tiny_settings_nuts(tmp_path):
    path = _edit(
        tmp_path,
        "ml100k_binary",
        'method = "svi"\nnum_steps = 3000\nnum_samples = 1000',
        'method = "nuts"\nnum_warmup = 500\nnum_samples = 500\nnum_chains = 4',
    )
    cfg = load_spec(path).with_tiny_settings().inference
    assert isinstance(cfg, bfm.NUTSConfig)
    assert (cfg.num_warmup, cfg.num_samples, cfg.num_chains) == (20, 20, 1)


def test_minibatch_settings_are_read_and_typed(tmp_path):
    """Optional keys (default None, such as batch_size) take their type from the annotation."""
    svi = 'method = "svi"\nnum_steps = 3000\nnum_samples = 1000'
    path = _edit(tmp_path, "ml100k_binary", svi, svi + "\nbatch_size = 512\nholdout = 0.02")
    cfg = load_spec(path).inference
    assert (cfg.batch_size, cfg.holdout) == (512, 0.02)
    path = _edit(tmp_path, "ml100k_binary", svi, svi + '\nbatch_size = "512"', "bad.toml")
    with pytest.raises(SpecError, match=r"batch_size = '512' has type string; expected an integer"):
        load_spec(path)


def test_build_estimator_overrides():
    card = load_spec(MODELS / "ml100k_fm_side.toml")
    model = card.build_estimator(rank=2, progress_bar=False)
    assert (model.rank, model.progress_bar) == (2, False)
    assert model.features == card.features and model.prior == card.prior


# ------------------------------------------------------------------------ validation
def test_unknown_key_suggests_close_match(tmp_path):
    path = _edit(tmp_path, "ml100k_mf", "num_warmup = 200", "num_warmpu = 200")
    with pytest.raises(SpecError, match=r"edited\.toml.*\[inference\].*unknown key 'num_warmpu'"):
        load_spec(path)
    with pytest.raises(SpecError, match=r"did you mean 'num_warmup'\?"):
        load_spec(path)


def test_unknown_section_suggests_close_match(tmp_path):
    path = _edit(tmp_path, "ml100k_mf", "[prior]", "[priors]")
    with pytest.raises(SpecError, match=r"unknown section \[priors\]; did you mean \[prior\]\?"):
        load_spec(path)


def test_missing_required_key(tmp_path):
    path = _edit(tmp_path, "ml100k_mf", "rank = 10\n", "")
    with pytest.raises(SpecError, match=r"edited\.toml: \[model\]: missing required key 'rank'"):
        load_spec(path)


def test_wrong_type(tmp_path):
    path = _edit(tmp_path, "ml100k_mf", "rank = 10", 'rank = "10"')
    with pytest.raises(
        SpecError, match=r"\[model\]: rank = '10' has type string; expected an integer"
    ):
        load_spec(path)
    path = _edit(tmp_path, "ml100k_mf", "num_chains = 4", "num_chains = 4.0")
    with pytest.raises(SpecError, match=r"num_chains = 4\.0 has type float; expected an integer"):
        load_spec(path)


def test_bad_method(tmp_path):
    path = _edit(tmp_path, "ml100k_mf", 'method = "gibbs"', 'method = "hmc"')
    with pytest.raises(
        SpecError,
        match=r"edited\.toml: \[inference\]: method = 'hmc' is not allowed; "
        r"allowed are 'nuts', 'svi', 'gibbs'",
    ):
        load_spec(path)


def test_gibbs_needs_the_probit_link(tmp_path):
    path = _edit(tmp_path, "ml100k_mf", 'task = "regression"', 'task = "binary"\nlink = "logit"')
    with pytest.raises(
        SpecError, match=r"method = 'gibbs' needs link = 'probit' for task = 'binary'; got link"
    ):
        load_spec(path)
    ordinal = _edit(tmp_path, "ml100k_mf", 'task = "regression"', 'task = "ordinal"', "o.toml")
    assert load_spec(ordinal).model["task"] == "ordinal"  # Gibbs by probit augmentation


def test_bad_field_type(tmp_path):
    path = _edit(tmp_path, "ml100k_fm_side", 'type = "MultiHot"', 'type = "Multihot"')
    with pytest.raises(
        SpecError,
        match=r"\[\[features\]\] #6: type = 'Multihot' is not allowed; allowed are 'Categorical', "
        r"'Numeric', 'MultiHot', 'Implicit'; did you mean 'MultiHot'\?",
    ):
        load_spec(path)


def test_feature_column_not_in_dataset(tmp_path):
    path = _edit(tmp_path, "ml100k_fm_side", 'column = "genres"', 'column = "genre"')
    with pytest.raises(SpecError, match=r"'genre' is not a column .*did you mean 'genres'\?"):
        load_spec(path)


def test_feature_spec_errors_are_wrapped(tmp_path):
    path = _edit(tmp_path, "ml100k_fm_side", 'owner = "item_id"', 'owner = "zip"')
    with pytest.raises(SpecError, match=r"edited\.toml: \[\[features\]\]: owner: .*'zip'"):
        load_spec(path)


def test_unknown_dataset(tmp_path):
    path = _edit(tmp_path, "ml100k_mf", 'name = "movielens-100k"', 'name = "movielens"')
    with pytest.raises(
        SpecError,
        match=r"\[dataset\]: name = 'movielens' is not allowed; allowed are 'movielens-100k', "
        r"'synthetic'",
    ):
        load_spec(path)


def test_bad_split(tmp_path):
    path = _edit(tmp_path, "ml100k_mf", 'split = "ua"', 'split = "u9"')
    with pytest.raises(SpecError, match=r"split = 'u9' is not allowed; allowed are 'ua', 'ub'"):
        load_spec(path)


def test_mf_card_rejects_features(tmp_path):
    path = tmp_path / "mf.toml"
    path.write_text(
        (MODELS / "ml100k_mf.toml").read_text()
        + '\n[[features]]\ntype = "Categorical"\ncolumn = "age"\n'
    )
    with pytest.raises(SpecError, match=r"estimator = 'mf' takes the user and item columns"):
        load_spec(path)


def test_threshold_needs_binary(tmp_path):
    path = _edit(tmp_path, "ml100k_binary", 'task = "binary"', 'task = "ordinal"')
    with pytest.raises(SpecError, match=r"threshold = 4\.0 makes a 0/1 target.*task = 'binary'"):
        load_spec(path)


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nrank = 3\n")
    with pytest.raises(SpecError, match=r"bad\.toml: invalid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match=r"nope\.toml: model card not found"):
        load_spec(tmp_path / "nope.toml")


def test_movielens_folder_missing(tmp_path, monkeypatch):
    card = load_spec(MODELS / "ml100k_mf.toml")
    monkeypatch.delenv("BAYESFM_ML100K", raising=False)
    with pytest.raises(SpecError, match=r"ml100k_mf\.toml.*--data-dir.*BAYESFM_ML100K"):
        card.load_data()
    with pytest.raises(SpecError, match=r"'.*nowhere' \(from --data-dir\) does not exist.*"):
        card.load_data(tmp_path / "nowhere")
    monkeypatch.setenv("BAYESFM_ML100K", str(tmp_path))
    with pytest.raises(
        SpecError, match=r"\(from \$BAYESFM_ML100K\) holds no u\.data; pass --data-dir DIR"
    ):
        card.load_data()
