"""Declarative model specs ("model cards"): TOML files that say what to fit and how.

A card names the dataset and its split, the target, the feature spec, the model (estimator,
rank, task), the priors, the inference settings and the metrics last measured by the
benchmarks. :func:`load_spec` reads and validates a card in full before anything is fitted;
the returned :class:`ModelCard` builds the estimator and loads the data. An example::

    description = "MovieLens-100K, biased MF, Gibbs"

    [model]
    estimator = "mf"          # "mf" | "fm"
    rank = 10
    task = "regression"       # "regression" | "binary" | "ordinal"

    [dataset]
    name = "movielens-100k"   # "movielens-100k" | "synthetic"
    split = "ua"

    [target]
    column = "rating"         # add threshold = 4 for the 0/1 target rating >= 4

    [inference]
    method = "gibbs"          # "nuts" | "svi" | "gibbs", then the config's fields
    num_warmup = 200
    num_samples = 500
    num_chains = 4

    [metrics.gibbs]           # one table per measured run; numbers plus method and date
    method = "gibbs 4 chains x (200 warmup + 500 samples)"
    date = "2026-11-25"
    rmse = 0.9152

FM cards list their fields as ``[[features]]`` tables with the keys of
:meth:`bayesfm.FeatureSpec.to_dict` (``type``, ``column``, ``owner``, ``name``, ``members``,
``sep``); MF cards take ``user`` and ``item`` columns in ``[model]`` instead. ``[prior]``
holds :class:`bayesfm.PriorConfig` fields.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data import FeatureSpec
from .datasets import ML100K_COLUMNS, ML100K_ENV_VAR, ML100K_SPLITS
from .estimators import COLD_START, BayesianFM, BayesianMF
from .fm import LINKS, TASKS
from .inference import GibbsConfig, InferenceConfig, NUTSConfig, SVIConfig
from .priors import PriorConfig

__all__ = ["DATASETS", "ESTIMATORS", "ModelCard", "SpecError", "load_spec"]

#: Dataset names a card may use.
DATASETS = ("movielens-100k", "synthetic")
#: Estimators a card may use.
ESTIMATORS = ("fm", "mf")
FIELD_TYPES = ("Categorical", "Numeric", "MultiHot", "Implicit")
SECTIONS = (
    "description",
    "model",
    "dataset",
    "target",
    "features",
    "prior",
    "inference",
    "metrics",
)
INFERENCE_CONFIGS: dict[str, type] = {"nuts": NUTSConfig, "svi": SVIConfig, "gibbs": GibbsConfig}
FILL_STRATEGIES = ("median", "mean")
SYNTHETIC_COLUMNS = ("user_id", "item_id", "occupation", "age", "genres", "rating")
SYNTHETIC_SIDE_COLUMNS = ("occupation", "age", "genres")

#: Settings of :meth:`ModelCard.with_tiny_settings` (smoke tests: seconds, not minutes).
TINY_INFERENCE: dict[str, dict[str, Any]] = {
    "nuts": dict(num_warmup=20, num_samples=20, num_chains=1, init_svi_steps=50, max_tree_depth=4),
    "svi": dict(num_steps=200, num_samples=50),
    "gibbs": dict(num_warmup=20, num_samples=20, num_chains=1),
}
TINY_TRAIN_ROWS = 3000
TINY_TEST_ROWS = 300


class SpecError(ValueError):
    """A model card that cannot be read or is invalid; the message names file, key and value."""


# ---------------------------------------------------------------------------- key schema
@dataclass(frozen=True)
class _Key:
    """One allowed key: its kind, whether it is required, its default and allowed values."""

    kind: str  # "int", "float", "str", "bool", "table"
    required: bool = False
    default: Any = None
    choices: tuple | None = None


_KIND_NAMES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "table": "a table",
}

_MODEL_KEYS = {
    "estimator": _Key("str", required=True, choices=ESTIMATORS),
    "rank": _Key("int", required=True),
    "task": _Key("str", default="regression", choices=TASKS),
    "link": _Key("str", default="probit", choices=LINKS),
    "cold_start": _Key("str", default="prior", choices=COLD_START),
    "random_state": _Key("int", default=0),
    "chunk_size": _Key("int", default=4096),
    "user": _Key("str", default="user_id"),
    "item": _Key("str", default="item_id"),
}
_MOVIELENS_KEYS = {
    "name": _Key("str", required=True, choices=DATASETS),
    "split": _Key("str", default="ua", choices=ML100K_SPLITS),
    "fillna": _Key("table", default={}),
}
_SYNTHETIC_KEYS = {
    "name": _Key("str", required=True, choices=DATASETS),
    "n_users": _Key("int", default=200),
    "n_items": _Key("int", default=150),
    "n_obs": _Key("int", default=5000),
    "rank": _Key("int", default=3),
    "noise_sd": _Key("float", default=0.5),
    "with_side": _Key("bool", default=True),
    "seed": _Key("int", default=0),
    "test_fraction": _Key("float", default=0.2),
    "holdout_seed": _Key("int", default=0),
}
_TARGET_KEYS = {"column": _Key("str", default="rating"), "threshold": _Key("float")}
_FEATURE_KEYS = {
    "type": _Key("str", required=True, choices=FIELD_TYPES),
    "column": _Key("str"),
    "owner": _Key("str"),
    "name": _Key("str"),
    "members": _Key("str"),
    "sep": _Key("str"),
}
_METRIC_TEXT_KEYS = {
    "method": _Key("str", required=True),
    "date": _Key("str", required=True),
    "source": _Key("str"),
    "note": _Key("str"),
}


def _dataclass_keys(cls: type) -> dict[str, _Key]:
    """Keys of a frozen config dataclass, their kinds taken from the defaults (or, for an
    optional field whose default is None, from its annotation such as ``int | None``)."""
    kinds = {bool: "bool", int: "int", float: "float", str: "str"}

    def kind(f) -> str:
        if f.default is not None:
            return kinds[type(f.default)]
        names = str(f.type).replace(" ", "").split("|")
        return next(n for n in names if n in _KIND_NAMES)

    return {f.name: _Key(kind(f), default=f.default) for f in fields(cls)}


def _suggest(word: str, allowed: list[str] | tuple[str, ...], fmt: str = "{!r}") -> str:
    """``"; did you mean 'x'?"`` for the closest allowed word (ignoring case), else ``""``."""
    close = difflib.get_close_matches(word, list(allowed), n=1, cutoff=0.6)
    if not close:
        lower = {a.lower(): a for a in allowed}
        close = [lower[m] for m in difflib.get_close_matches(word.lower(), list(lower), n=1)]
    return f"; did you mean {fmt.format(close[0])}?" if close else ""


def _allowed(values: Any) -> str:
    return ", ".join(repr(v) for v in values)


class _Reader:
    """Validates the raw TOML tables of one file; every message starts with the file name."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, where: str, message: str) -> SpecError:
        return SpecError(f"{self.path}: {where}: {message}")

    def table(self, raw: Any, where: str) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            raise self.error(where, f"got {raw!r} ({type(raw).__name__}); expected a table")
        return dict(raw)

    def check_value(self, where: str, key: str, value: Any, spec: _Key) -> Any:
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "str": isinstance(value, str),
            "bool": isinstance(value, bool),
            "table": isinstance(value, Mapping),
        }[spec.kind]
        if not ok:
            raise self.error(
                where,
                f"{key} = {value!r} has type {_toml_type(value)}; "
                f"expected {_KIND_NAMES[spec.kind]}",
            )
        if spec.choices is not None and value not in spec.choices:
            raise self.error(
                where,
                f"{key} = {value!r} is not allowed; allowed are {_allowed(spec.choices)}"
                f"{_suggest(str(value), [str(c) for c in spec.choices])}",
            )
        return float(value) if spec.kind == "float" else value

    def keys(
        self, raw: Mapping[str, Any], schema: Mapping[str, _Key], where: str, fill: bool = True
    ) -> dict[str, Any]:
        """Check unknown, missing and wrongly typed keys; return values (with defaults)."""
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in schema:
                raise self.error(
                    where,
                    f"unknown key {key!r}{_suggest(key, list(schema))} "
                    f"Allowed keys are {_allowed(schema)}",
                )
            out[key] = self.check_value(where, key, value, schema[key])
        for key, spec in schema.items():
            if key not in out:
                if spec.required:
                    raise self.error(
                        where, f"missing required key {key!r} ({_KIND_NAMES[spec.kind]})"
                    )
                if fill and spec.default is not None:
                    out[key] = spec.default
        return out


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__


# ------------------------------------------------------------------------------- the card
@dataclass(frozen=True)
class DatasetSpec:
    """Where a card's data come from.

    Attributes
    ----------
    name : {"movielens-100k", "synthetic"}
        The dataset.
    options : dict
        ``split`` and ``fillna`` for MovieLens; :func:`bayesfm.datasets.make_synthetic`
        arguments plus ``test_fraction`` and ``holdout_seed`` for synthetic data.
    """

    name: str
    options: dict[str, Any]

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns of the table the dataset provides."""
        if self.name == "movielens-100k":
            return ML100K_COLUMNS
        if self.options.get("with_side", True):
            return SYNTHETIC_COLUMNS
        return tuple(c for c in SYNTHETIC_COLUMNS if c not in SYNTHETIC_SIDE_COLUMNS)


@dataclass(frozen=True)
class ModelCard:
    """A validated model card; build with :func:`load_spec`.

    Attributes
    ----------
    path : pathlib.Path
        The TOML file.
    description : str
        Free text.
    estimator : {"fm", "mf"}
        :class:`bayesfm.BayesianFM` or :class:`bayesfm.BayesianMF`.
    model : dict
        Constructor arguments (``rank``, ``task``, ``link``, ``cold_start``, ``random_state``,
        ``chunk_size``, and ``user``/``item`` for MF).
    features : FeatureSpec or None
        The feature spec of an FM card (``None`` for MF).
    dataset : DatasetSpec
        The data source.
    target : str
        Column holding the target.
    threshold : float or None
        When set, the target is ``column >= threshold`` as 0/1.
    prior : PriorConfig
        Hierarchical prior.
    inference : NUTSConfig or SVIConfig or GibbsConfig
        Inference method and settings.
    metrics : dict
        Metrics last measured by the benchmarks, one dict per run.
    max_train_rows, max_test_rows : int or None
        Truncate the data (set by :meth:`with_tiny_settings`).
    """

    path: Path
    description: str
    estimator: str
    model: dict[str, Any]
    features: FeatureSpec | None
    dataset: DatasetSpec
    target: str
    threshold: float | None
    prior: PriorConfig
    inference: InferenceConfig
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_train_rows: int | None = None
    max_test_rows: int | None = None

    @property
    def name(self) -> str:
        """The card's name: its file name without ``.toml``."""
        return self.path.stem

    @property
    def method(self) -> str:
        """``"nuts"``, ``"svi"`` or ``"gibbs"``."""
        return {NUTSConfig: "nuts", SVIConfig: "svi", GibbsConfig: "gibbs"}[type(self.inference)]

    @property
    def task(self) -> str:
        """``"regression"``, ``"binary"`` or ``"ordinal"``."""
        return self.model["task"]

    def build_estimator(self, **overrides: Any) -> BayesianFM:
        """A configured, unfitted :class:`~bayesfm.BayesianFM` or :class:`~bayesfm.BayesianMF`.

        Parameters
        ----------
        **overrides
            Constructor arguments that replace the card's (for example ``progress_bar``).

        Returns
        -------
        BayesianFM or BayesianMF
        """
        kwargs: dict[str, Any] = dict(self.model, prior=self.prior, inference=self.inference)
        if self.estimator == "mf":
            kwargs.update(overrides)
            return BayesianMF(**kwargs)
        kwargs.pop("user", None)
        kwargs.pop("item", None)
        kwargs["features"] = self.features
        kwargs.update(overrides)
        return BayesianFM(**kwargs)

    def resolve_data_dir(self, data_dir: str | os.PathLike[str] | None = None) -> Path:
        """The MovieLens-100K folder: ``data_dir``, else ``$BAYESFM_ML100K``.

        Raises
        ------
        SpecError
            If neither is given or the folder holds no ``u.data`` (nor ``ml-100k/u.data``).
        """
        hint = (
            f"pass --data-dir DIR (data_dir= in Python) or set the environment variable "
            f"{ML100K_ENV_VAR} to the folder holding the GroupLens files u.data, u.user, u.item"
        )
        where = f"[dataset] name = {self.dataset.name!r}"
        if data_dir is None:
            env = os.environ.get(ML100K_ENV_VAR)
            if not env:
                raise SpecError(
                    f"{self.path}: {where}: no MovieLens-100K folder given; {hint}. bayesfm does "
                    "not ship the data (its license forbids redistribution)"
                )
            folder, origin = Path(env).expanduser(), f"${ML100K_ENV_VAR}"
        else:
            folder, origin = Path(data_dir).expanduser(), "--data-dir"
        for candidate in (folder, folder / "ml-100k"):
            if (candidate / "u.data").is_file():
                return candidate
        raise SpecError(
            f"{self.path}: {where}: MovieLens-100K folder {str(folder)!r} (from {origin}) "
            f"{'does not exist' if not folder.exists() else 'holds no u.data'}; {hint}"
        )

    def load_data(
        self, data_dir: str | os.PathLike[str] | None = None
    ) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
        """Load the card's train and test data.

        Parameters
        ----------
        data_dir : path, optional
            MovieLens-100K folder; defaults to ``$BAYESFM_ML100K``. Unused for synthetic data.

        Returns
        -------
        X_train, y_train, X_test, y_test
            Feature tables (without the target column) and float targets.
        """
        opts = self.dataset.options
        if self.dataset.name == "movielens-100k":
            from .datasets import load_movielens_100k

            folder = self.resolve_data_dir(data_dir)
            train, test = load_movielens_100k(folder, split=opts["split"])
            for column, how in opts.get("fillna", {}).items():
                value = getattr(train[column], how)() if isinstance(how, str) else how
                train[column] = train[column].fillna(value)
                test[column] = test[column].fillna(value)
        else:
            from .datasets import make_synthetic

            holdout = ("name", "test_fraction", "holdout_seed")
            data = make_synthetic(**{k: v for k, v in opts.items() if k not in holdout})
            frame = data.X.assign(rating=data.y)
            n = len(frame)
            n_test = min(n - 1, max(1, round(opts["test_fraction"] * n)))
            rng = np.random.default_rng(opts["holdout_seed"])
            is_test = np.zeros(n, bool)
            is_test[rng.choice(n, n_test, replace=False)] = True
            train, test = frame[~is_test], frame[is_test]
        if self.max_train_rows is not None:
            train = train.iloc[: self.max_train_rows]
        if self.max_test_rows is not None:
            test = test.iloc[: self.max_test_rows]
        return (*self._split_target(train), *self._split_target(test))

    def _split_target(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        y = frame[self.target].to_numpy(dtype=np.float64)
        if self.threshold is not None:
            y = (y >= self.threshold).astype(np.float64)
        return frame.drop(columns=[self.target]), y

    def with_tiny_settings(self) -> ModelCard:
        """A copy with tiny inference settings and data, for smoke tests (seconds).

        NUTS 20 + 20 draws of one chain, SVI 200 steps and 50 draws, Gibbs 20 + 20 sweeps of
        one chain; at most 3000 training and 300 test rows.
        """
        tiny = replace(self.inference, **TINY_INFERENCE[self.method])
        return replace(
            self, inference=tiny, max_train_rows=TINY_TRAIN_ROWS, max_test_rows=TINY_TEST_ROWS
        )


# ------------------------------------------------------------------------------- loading
def load_spec(path: str | os.PathLike[str]) -> ModelCard:
    """Read and validate a model card.

    Everything is checked here, before any data are loaded or anything is fitted: sections
    and keys (unknown ones get a close-match suggestion), types, allowed values, the feature
    spec, the inference settings, the prior, and that every column the card reads exists
    in the dataset.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.toml`` file.

    Returns
    -------
    ModelCard

    Raises
    ------
    SpecError
        With a message naming the file, the key, the value and what is allowed.

    Examples
    --------
    >>> card = load_spec("models/synthetic_demo.toml")  # doctest: +SKIP
    >>> model = card.build_estimator(progress_bar=False)  # doctest: +SKIP
    """
    path = Path(path)
    r = _Reader(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise SpecError(f"{path}: model card not found") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder; expected a .toml model card") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: invalid TOML: {exc}") from None

    for key in raw:
        if key not in SECTIONS:
            raise r.error(
                "top level",
                f"unknown section [{key}]{_suggest(key, SECTIONS, '[{}]')} "
                f"Allowed sections are {_allowed(SECTIONS)}",
            )
    for key in ("model", "dataset", "inference"):
        if key not in raw:
            raise r.error("top level", f"missing required section [{key}]")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise r.error("top level", f"description = {description!r} must be a string")

    model = r.keys(r.table(raw["model"], "[model]"), _MODEL_KEYS, "[model]")
    estimator = model.pop("estimator")
    if model["rank"] < 1:
        raise r.error("[model]", f"rank = {model['rank']} must be an integer >= 1")
    if model["chunk_size"] < 1:
        raise r.error("[model]", f"chunk_size = {model['chunk_size']} must be >= 1")

    dataset = _read_dataset(r, raw["dataset"])
    target, threshold = _read_target(r, raw.get("target", {}), model["task"], dataset)
    features = _read_features(r, raw, estimator, model, dataset, target)
    if estimator == "fm":
        model.pop("user")
        model.pop("item")
    prior = _read_prior(r, raw.get("prior", {}))
    inference = _read_inference(r, raw["inference"], model["task"], model["link"])
    metrics = _read_metrics(r, raw.get("metrics", {}))
    return ModelCard(
        path=path,
        description=description,
        estimator=estimator,
        model=model,
        features=features,
        dataset=dataset,
        target=target,
        threshold=threshold,
        prior=prior,
        inference=inference,
        metrics=metrics,
    )


def _read_dataset(r: _Reader, raw: Any) -> DatasetSpec:
    where = "[dataset]"
    table = r.table(raw, where)
    if "name" not in table:
        raise r.error(where, f"missing required key 'name'; allowed are {_allowed(DATASETS)}")
    name = r.check_value(where, "name", table["name"], _MOVIELENS_KEYS["name"])
    schema = _MOVIELENS_KEYS if name == "movielens-100k" else _SYNTHETIC_KEYS
    opts = r.keys(table, schema, f"{where} (name = {name!r})")
    if name == "movielens-100k":
        fill = {}
        for column, how in opts["fillna"].items():
            w = f"{where} fillna"
            if column not in ML100K_COLUMNS:
                raise r.error(
                    w,
                    f"unknown column {column!r}{_suggest(column, ML100K_COLUMNS)} "
                    f"Allowed are {_allowed(ML100K_COLUMNS)}",
                )
            ok_number = isinstance(how, int | float) and not isinstance(how, bool)
            if not (ok_number or how in FILL_STRATEGIES):
                raise r.error(
                    w,
                    f"{column} = {how!r} is not allowed; allowed are a number or "
                    f"{_allowed(FILL_STRATEGIES)} (of the training rows)",
                )
            fill[column] = how
        opts["fillna"] = fill
    else:
        for key in ("n_users", "n_items", "n_obs"):
            if opts[key] < 1:
                raise r.error(where, f"{key} = {opts[key]} must be an integer >= 1")
        if opts["n_obs"] > opts["n_users"] * opts["n_items"]:
            raise r.error(
                where,
                f"n_obs = {opts['n_obs']} must be at most n_users * n_items = "
                f"{opts['n_users'] * opts['n_items']}",
            )
        if opts["rank"] < 0:
            raise r.error(where, f"rank = {opts['rank']} must be an integer >= 0")
        if not opts["noise_sd"] >= 0:
            raise r.error(where, f"noise_sd = {opts['noise_sd']} must be >= 0")
        if not 0 < opts["test_fraction"] < 1:
            raise r.error(
                where, f"test_fraction = {opts['test_fraction']} must lie strictly between 0 and 1"
            )
    return DatasetSpec(name=name, options=opts)


def _read_target(r: _Reader, raw: Any, task: str, dataset: DatasetSpec) -> tuple[str, float | None]:
    where = "[target]"
    t = r.keys(r.table(raw, where), _TARGET_KEYS, where)
    column, threshold = t["column"], t.get("threshold")
    if column not in dataset.columns:
        raise r.error(
            where,
            f"column = {column!r} is not a column of dataset {dataset.name!r}"
            f"{_suggest(column, dataset.columns)} Allowed are {_allowed(dataset.columns)}",
        )
    if threshold is not None and task != "binary":
        raise r.error(
            where,
            f"threshold = {threshold!r} makes a 0/1 target, which needs [model] task = 'binary'; "
            f"got task = {task!r}",
        )
    return column, threshold


def _read_features(
    r: _Reader, raw: Mapping[str, Any], estimator: str, model: dict, dataset: DatasetSpec, target
) -> FeatureSpec | None:
    where = "[[features]]"
    if estimator == "mf":
        if "features" in raw:
            raise r.error(
                where,
                "estimator = 'mf' takes the user and item columns from [model] user/item, not "
                "[[features]]; use estimator = 'fm' for side features",
            )
        columns = {"[model] user": model["user"], "[model] item": model["item"]}
    else:
        for key in ("user", "item"):
            if key in raw["model"]:
                raise r.error(
                    "[model]",
                    f"{key} = {model[key]!r} applies to estimator = 'mf' only; an 'fm' card "
                    "lists its fields as [[features]]",
                )
        if "features" not in raw:
            raise r.error("top level", "estimator = 'fm' needs a [[features]] array of tables")
        items = raw["features"]
        if not isinstance(items, list) or not items:
            raise r.error(where, f"got {items!r}; expected a non-empty array of tables")
        cleaned = []
        columns = {}
        for i, item in enumerate(items, start=1):
            w = f"{where} #{i}"
            d = r.keys(r.table(item, w), _FEATURE_KEYS, w, fill=False)
            kind = d["type"]
            need = ("owner", "members") if kind == "Implicit" else ("column",)
            for key in need:
                if key not in d:
                    raise r.error(w, f"missing required key {key!r} for type = {kind!r}")
            forbidden = ["column", "sep"] if kind == "Implicit" else ["members"]
            if kind not in ("MultiHot", "Implicit"):
                forbidden.append("sep")
            for key in forbidden:
                if key in d:
                    raise r.error(w, f"key {key!r} does not apply to type = {kind!r}")
            for key in ("column", "owner", "members"):
                if key in d:
                    columns[f"{w} {key}"] = d[key]
            cleaned.append(d)
        try:
            spec = FeatureSpec.from_dict(cleaned)
        except (TypeError, ValueError) as exc:
            raise r.error(where, str(exc)) from None
    for where_key, column in columns.items():
        if column == target:
            raise r.error(where_key, f"{column!r} is the target column; it cannot be a feature")
        if column not in dataset.columns:
            raise r.error(
                where_key,
                f"{column!r} is not a column of dataset {dataset.name!r}"
                f"{_suggest(column, dataset.columns)} Allowed are {_allowed(dataset.columns)}",
            )
    return None if estimator == "mf" else spec


def _read_prior(r: _Reader, raw: Any) -> PriorConfig:
    where = "[prior]"
    values = r.keys(r.table(raw, where), _dataclass_keys(PriorConfig), where, fill=False)
    try:
        return PriorConfig(**values)
    except (TypeError, ValueError) as exc:
        raise r.error(where, str(exc)) from None


def _read_inference(r: _Reader, raw: Any, task: str, link: str) -> InferenceConfig:
    where = "[inference]"
    table = r.table(raw, where)
    method_key = _Key("str", required=True, choices=tuple(INFERENCE_CONFIGS))
    if "method" not in table:
        raise r.error(
            where, f"missing required key 'method'; allowed are {_allowed(INFERENCE_CONFIGS)}"
        )
    method = r.check_value(where, "method", table.pop("method"), method_key)
    cls = INFERENCE_CONFIGS[method]
    w = f"{where} (method = {method!r})"
    values = r.keys(table, _dataclass_keys(cls), w, fill=False)
    if method == "gibbs" and task == "binary" and link != "probit":
        raise r.error(
            where,
            f"method = 'gibbs' needs link = 'probit' for task = 'binary'; got link = {link!r}. "
            "Use method = 'nuts' or 'svi' for the logit link",
        )
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise r.error(w, str(exc)) from None


def _read_metrics(r: _Reader, raw: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for run, entry in r.table(raw, "[metrics]").items():
        where = f"[metrics.{run}]"
        table = r.table(entry, where)
        text = {k: v for k, v in table.items() if k in _METRIC_TEXT_KEYS}
        values = r.keys(text, _METRIC_TEXT_KEYS, where)
        for key, value in table.items():
            if key in _METRIC_TEXT_KEYS:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise r.error(
                    where,
                    f"{key} = {value!r} has type {_toml_type(value)}; a metric is a number "
                    f"(text goes in {_allowed(_METRIC_TEXT_KEYS)})",
                )
            values[key] = float(value)
        out[run] = values
    return out
