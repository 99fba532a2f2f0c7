"""Saving and loading fitted estimators as one NetCDF (HDF5) file.

Layout of the file (each item a NetCDF group, read with h5netcdf through xarray):

- the InferenceData groups under their ArviZ names (``posterior``, ``sample_stats``,
  ``log_likelihood``, ...), so that ``arviz.from_netcdf`` reads the file as well;
- ``bayesfm_model``: the format version, the estimator class, its parameters (JSON), the
  fitted scalars (offset, classes) and the probe table;
- ``bayesfm_encoder``: level maps, numeric scalings, per-entity attribute tables and the
  implicit-feedback pairs, so that new tables encode exactly as before;
- ``bayesfm_factors``: the factor draws, only when ``store_factors=False`` kept them out of
  the posterior (predictions need them).

Files are written to a temporary name and renamed, so a failed save never damages an
existing file.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5netcdf
import numpy as np
import pandas as pd
import xarray as xr

from . import idata as idata_mod
from ._version import __version__
from .data import FeatureSpec, FittedEncoder, MultiHot, Numeric, _as_set
from .inference import PosteriorDraws, config_from_dict, config_to_dict

if TYPE_CHECKING:  # pragma: no cover
    from .estimators import BayesianFM

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT_VERSION = 1
MODEL_GROUP, ENCODER_GROUP, FACTORS_GROUP = "bayesfm_model", "bayesfm_encoder", "bayesfm_factors"
ENGINE = "h5netcdf"


# --------------------------------------------------------------------- column encoding
def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, for JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _encode_values(values: np.ndarray, name: str) -> tuple[np.ndarray, str]:
    """A NetCDF-storable array and a tag telling :func:`_decode_values` how to restore it."""
    values = np.asarray(values)
    if values.dtype.kind in "iufb":
        return values, "native"
    items = values.tolist()
    if all(isinstance(v, str) for v in items):
        return np.asarray(items, dtype=object), "str"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return np.asarray(items, dtype=np.int64), "object_int"
    try:
        return np.asarray([json.dumps(_plain(v)) for v in items], dtype=object), "json"
    except TypeError as err:
        raise TypeError(
            f"{name}: values of type {sorted({type(v).__name__ for v in items})} cannot be "
            "saved; ids and attributes must be numbers or strings"
        ) from err


def _decode_values(values: np.ndarray, tag: str) -> np.ndarray:
    if tag == "native":
        return np.asarray(values)
    if tag == "str":
        return np.asarray([str(v) for v in values.tolist()], dtype=object)
    if tag == "object_int":
        return np.asarray([int(v) for v in values.tolist()], dtype=object)
    return np.asarray([json.loads(v) for v in values.tolist()], dtype=object)


def _sets_columns(spec: FeatureSpec) -> dict[str, str]:
    return {f.column: f.sep for f in spec.fields if isinstance(f, MultiHot)}


def _table_to_vars(
    table: pd.DataFrame, spec: FeatureSpec, prefix: str, dim: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """Variables (one per column) and their decoding tags for a table of spec columns."""
    sets = _sets_columns(spec)
    numeric = {f.column for f in spec.fields if isinstance(f, Numeric)}
    out, tags = {}, {}
    for col in table.columns:
        values = table[col].to_numpy()
        if col in sets:
            cells = [json.dumps([_plain(m) for m in _as_set(v, sets[col], col)]) for v in values]
            arr, tag = np.asarray(cells, dtype=object), "sets"
        elif col in numeric:
            arr, tag = values.astype(np.float64), "native"
        else:
            arr, tag = _encode_values(values, f"column {col!r}")
        out[f"{prefix}{col}"] = (dim, arr)
        tags[col] = tag
    return out, tags


def _vars_to_table(ds: xr.Dataset, prefix: str, tags: dict[str, str]) -> pd.DataFrame:
    data = {}
    for col, tag in tags.items():
        values = ds[f"{prefix}{col}"].to_numpy()
        if tag == "sets":
            data[col] = [json.loads(v) for v in values.tolist()]
        else:
            data[col] = _decode_values(values, tag)
    return pd.DataFrame(data)


# --------------------------------------------------------------------------- encoder
def _encoder_dataset(enc: FittedEncoder) -> xr.Dataset:
    variables: dict[str, Any] = {}
    level_tags, table_tags, table_index_tags = {}, {}, {}
    for dim, levels in enc.levels.items():
        arr, level_tags[dim] = _encode_values(levels, f"levels of {dim!r}")
        variables[f"levels__{dim}"] = (f"level__{dim}", arr)
    for dim, table in enc.entity_tables.items():
        idx, table_index_tags[dim] = _encode_values(table.index.to_numpy(), f"index of {dim!r}")
        variables[f"table_index__{dim}"] = (f"entity__{dim}", idx)
        cols, table_tags[dim] = _table_to_vars(table, enc.spec, f"table__{dim}__", f"entity__{dim}")
        variables.update(cols)
    for dim, (owner, member) in enc.implicit_pairs.items():
        variables[f"implicit_owner__{dim}"] = (f"pair__{dim}", np.asarray(owner, np.int64))
        variables[f"implicit_member__{dim}"] = (f"pair__{dim}", np.asarray(member, np.int64))
    attrs = {
        "feature_spec": json.dumps(enc.spec.to_dict()),
        "scaling": json.dumps(enc.scaling),
        "level_tags": json.dumps(level_tags),
        "table_tags": json.dumps(table_tags),
        "table_index_tags": json.dumps(table_index_tags),
        "table_index_names": json.dumps({d: t.index.name for d, t in enc.entity_tables.items()}),
    }
    return xr.Dataset(variables, attrs=attrs)


def _encoder_from_dataset(ds: xr.Dataset) -> FittedEncoder:
    a = ds.attrs
    enc = FittedEncoder(spec=FeatureSpec.from_dict(json.loads(a["feature_spec"])))
    enc.scaling = {k: tuple(v) for k, v in json.loads(a["scaling"]).items()}
    for dim, tag in json.loads(a["level_tags"]).items():
        enc.levels[dim] = _decode_values(ds[f"levels__{dim}"].to_numpy(), tag)
    index_tags = json.loads(a["table_index_tags"])
    index_names = json.loads(a["table_index_names"])
    for dim, tags in json.loads(a["table_tags"]).items():
        table = _vars_to_table(ds, f"table__{dim}__", tags)
        index = _decode_values(ds[f"table_index__{dim}"].to_numpy(), index_tags[dim])
        table.index = pd.Index(index, name=index_names[dim])
        enc.entity_tables[dim] = table
    for name in ds.data_vars:
        if str(name).startswith("implicit_owner__"):
            dim = str(name)[len("implicit_owner__") :]
            enc.implicit_pairs[dim] = (
                ds[name].to_numpy(),
                ds[f"implicit_member__{dim}"].to_numpy(),
            )
    return enc


# ----------------------------------------------------------------------------- model
def _model_dataset(model: BayesianFM) -> xr.Dataset:
    from .estimators import params_to_dict

    probe_vars, probe_tags = _table_to_vars(
        model.probe_, model.encoder_.spec, "probe__", "probe_cell"
    )
    variables = dict(probe_vars)
    classes_tag = None
    if model.classes_ is not None:
        arr, classes_tag = _encode_values(model.classes_, "classes_")
        variables["classes"] = ("class", arr)
    attrs = {
        "bayesfm_format": FORMAT_VERSION,
        "bayesfm_version": __version__,
        "estimator": type(model).__name__,
        "estimator_params": json.dumps(params_to_dict(model)),
        "inference_config": json.dumps(config_to_dict(model.inference_)),
        "method": model.draws_.method,
        "offset": float(model.offset_),
        "n_train": int(model.n_train_),
        "timings": json.dumps(model.timings_),
        "probe_tags": json.dumps(probe_tags),
        "classes_tag": json.dumps(classes_tag),
    }
    return xr.Dataset(variables, attrs=attrs)


def save(model: BayesianFM, path: str | os.PathLike) -> Path:
    """Write a fitted ``model`` to ``path`` (NetCDF); see the module docstring for the layout.

    The file is written under a temporary name in the same folder and renamed when complete.
    """
    model._check_fitted()
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path: {str(path)!r} is a directory; give a file name")
    if not path.parent.exists():
        raise FileNotFoundError(f"path: the folder {str(path.parent)!r} does not exist")
    groups: dict[str, xr.Dataset] = {g: model.idata_[g] for g in model.idata_.groups()}
    groups[MODEL_GROUP] = _model_dataset(model)
    groups[ENCODER_GROUP] = _encoder_dataset(model.encoder_)
    missing = {k: v for k, v in model.draws_.samples.items() if k not in model.idata_.posterior}
    if missing:
        groups[FACTORS_GROUP] = xr.Dataset(
            {
                k: ((*("chain", "draw"), *(f"{k}_dim_{i}" for i in range(v.ndim - 2))), v)
                for k, v in missing.items()
            }
        )
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        for i, (name, ds) in enumerate(groups.items()):
            ds.to_netcdf(tmp, mode="w" if i == 0 else "a", group=name, engine=ENGINE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _read_groups(path: Path) -> dict[str, xr.Dataset]:
    if not path.exists():
        raise FileNotFoundError(f"path: {str(path)!r} does not exist")
    try:
        with h5netcdf.File(path, "r") as f:
            names = list(f.groups)
        groups = {}
        for name in names:
            with xr.open_dataset(path, group=name, engine=ENGINE) as ds:
                groups[name] = ds.load()
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"path: {str(path)!r} is not a readable bayesfm model file (NetCDF/HDF5); it may "
            f"be truncated or of another format ({type(err).__name__}: {err})"
        ) from None
    if MODEL_GROUP not in groups or "bayesfm_format" not in groups[MODEL_GROUP].attrs:
        raise ValueError(
            f"path: {str(path)!r} was not written by bayesfm's save (no {MODEL_GROUP!r} group; "
            f"groups found: {sorted(groups)})"
        )
    version = int(groups[MODEL_GROUP].attrs["bayesfm_format"])
    if version > FORMAT_VERSION:
        raise ValueError(
            f"path: {str(path)!r} has file format {version}, newer than this bayesfm "
            f"({__version__}) reads ({FORMAT_VERSION}); upgrade bayesfm"
        )
    return groups


def load(path: str | os.PathLike) -> BayesianFM:
    """Rebuild a fitted estimator saved with :meth:`BayesianFM.save`.

    Its ``predict*`` methods return bit-identical results to the saved model's.

    Parameters
    ----------
    path : str or os.PathLike
        A NetCDF file written by :meth:`BayesianFM.save`.

    Returns
    -------
    BayesianFM or BayesianMF
        The fitted estimator, of the class that was saved.

    Raises
    ------
    ValueError
        The file lacks the groups that bayesfm writes.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import bayesfm as bfm
    >>> import numpy as np
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     same = bfm.load(model.save(pathlib.Path(tmp) / "model.nc"))
    >>> bool(np.array_equal(same.predict(X.head(5)), model.predict(X.head(5))))
    True
    """
    from .estimators import BayesianFM, BayesianMF, params_from_dict

    path = Path(path)
    groups = _read_groups(path)
    meta = groups.pop(MODEL_GROUP)
    a = meta.attrs
    try:
        cls = {"BayesianFM": BayesianFM, "BayesianMF": BayesianMF}[a["estimator"]]
        model = cls(**params_from_dict(json.loads(a["estimator_params"])))
        encoder = _encoder_from_dataset(groups.pop(ENCODER_GROUP))
        factors = groups.pop(FACTORS_GROUP, xr.Dataset())
        idata = idata_mod.from_groups(groups)
        rank, _, _, prior = model._validated_settings()
        classes = None
        if "classes" in meta:
            classes = _decode_values(meta["classes"].to_numpy(), json.loads(a["classes_tag"]))
        spec = model._model_spec(encoder, rank, prior, 0 if classes is None else len(classes))
    except KeyError as err:
        raise ValueError(
            f"path: {str(path)!r} is incomplete: missing {err} in the bayesfm groups"
        ) from None
    posterior = idata.posterior
    derived = idata_mod.DERIVED_POSTERIOR_VARS
    samples = {k: posterior[k].to_numpy() for k in posterior.data_vars if k not in derived}
    samples.update({k: factors[k].to_numpy() for k in factors.data_vars})
    stats = {}
    loss = None
    if "sample_stats" in groups:
        ss = groups["sample_stats"]
        stats = {k: ss[k].to_numpy() for k in ss.data_vars if k != "loss"}
        if "svi_eval" in ss.coords:
            stats[f"{idata_mod.HOLDOUT_PREFIX}step"] = ss["svi_eval"].to_numpy()
        if "loss" in ss:
            loss = ss["loss"].to_numpy().ravel()
    timings = json.loads(a["timings"])
    model.encoder_ = encoder
    model.spec_ = spec
    model.inference_ = config_from_dict(json.loads(a["inference_config"]))
    model.offset_ = float(a["offset"])
    model.classes_ = classes
    model.n_train_ = int(a["n_train"])
    model.draws_ = PosteriorDraws(samples, str(a["method"]), stats, timings, loss)
    model.timings_ = timings
    probe = _vars_to_table(meta, "probe__", json.loads(a["probe_tags"]))
    model.probe_ = probe
    model.idata_ = idata
    return model
