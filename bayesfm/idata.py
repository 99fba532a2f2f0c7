"""ArviZ interface: InferenceData building, convergence statistics, LOO and plots.

This is the only module that imports ArviZ, so that the move to ArviZ 1.0 (which returns
``xarray.DataTree``) touches one file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

with warnings.catch_warnings():  # ArviZ 0.23 announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

from .data import Encoded, FittedEncoder
from .fm import ModelSpec
from .inference import PosteriorDraws

__all__ = [
    "ARVIZ_GROUPS",
    "InferenceData",
    "build",
    "compare",
    "convergence",
    "e_bfmi",
    "from_groups",
    "loo",
    "obs_dataset",
    "site_dims",
    "with_predictions",
]

InferenceData = az.InferenceData

# posterior variables computed from the parameter draws (not model sites)
DERIVED_POSTERIOR_VARS = ("group_w_sd", "group_v_sd", "probe")

# the groups of the InferenceData schema that bayesfm writes
ARVIZ_GROUPS = (
    "posterior",
    "sample_stats",
    "log_likelihood",
    "posterior_predictive",
    "observed_data",
    "constant_data",
    "predictions",
    "predictions_constant_data",
)


def site_dims(spec: ModelSpec) -> dict[str, list[str]]:
    """Dimension names of every parameter site, named after the plates."""
    dims: dict[str, list[str]] = {"cutpoints": ["cutpoint"]}
    for g in spec.structure.groups:
        for suffix in ("", "_z", "_tot"):
            dims[f"w_{g}{suffix}"] = [g]
            dims[f"v_{g}{suffix}"] = [g, "factor"]
        dims[f"v_mu_{g}"] = ["factor"]
        dims[f"v_lambda_{g}"] = ["factor"]
    return dims


def factor_sites(spec: ModelSpec) -> list[str]:
    """Names of the latent-factor tables (large, and identified only up to rotation)."""
    suffixes = ("", "_z", "_tot")
    return [f"v_{g}{z}" for g in spec.structure.groups for z in suffixes]


def coord_values(levels: np.ndarray) -> np.ndarray:
    """Coordinate labels of original ids (object arrays become strings for NetCDF)."""
    values = np.asarray(levels)
    if values.dtype == object:
        values = values.astype(str)
    return values


def _chain_draw(c: int, d: int) -> dict[str, np.ndarray]:
    return {"chain": np.arange(c), "draw": np.arange(d)}


def obs_dataset(
    values: dict[str, np.ndarray], index: np.ndarray, dim: str = "obs", with_draws: bool = True
) -> xr.Dataset:
    """A dataset of per-row variables (``(chain, draw, obs)`` or ``(obs,)``)."""
    lead = ("chain", "draw") if with_draws else ()
    coords: dict[str, Any] = {dim: coord_values(index)}
    data = {}
    for name, v in values.items():
        if with_draws:
            coords.update(_chain_draw(*v.shape[:2]))
        data[name] = ((*lead, dim), v)
    return xr.Dataset(data, coords=coords)


def encoded_dataset(enc: Encoded, index: np.ndarray) -> xr.Dataset:
    """The encoded indices of a table: per-row entity indices and per-term COO triplets."""
    ds = xr.Dataset(coords={"obs": coord_values(index)})
    for d, idx in enc.entity_index.items():
        ds[f"{d}_index"] = ("obs", np.asarray(idx, np.int64))
    for d, (unit, level, value) in enc.terms.items():
        nnz = f"{d}_nnz"
        ds[f"{d}_unit"] = (nnz, np.asarray(unit, np.int64))
        ds[f"{d}_index"] = (nnz, np.asarray(level, np.int64))
        ds[f"{d}_value"] = (nnz, np.asarray(value, np.float32))
    return ds


def build(
    draws: PosteriorDraws,
    encoder: FittedEncoder,
    spec: ModelSpec,
    *,
    attrs: Mapping[str, Any],
    store_factors: bool = True,
    observed_data: xr.Dataset | None = None,
    log_likelihood: xr.Dataset | None = None,
    posterior_predictive: xr.Dataset | None = None,
    constant_data: xr.Dataset | None = None,
    extra_posterior: xr.Dataset | None = None,
) -> az.InferenceData:
    """InferenceData of a fit, labelled with the original ids.

    Parameters
    ----------
    draws : PosteriorDraws
        Draws of every site, ``(chain, draw, ...)``.
    encoder, spec
        The fitted encoder (for coordinates) and the model description (for dims).
    attrs : mapping
        Attributes set on every group (version, estimator parameters, inference method).
    store_factors : bool
        Keep the latent-factor tables in ``posterior``.
    observed_data, log_likelihood, posterior_predictive, constant_data : xarray.Dataset, optional
        Per-observation groups, already labelled.
    extra_posterior : xarray.Dataset, optional
        Derived per-draw quantities (the probe-set predictions) merged into ``posterior``.
    """
    drop = set() if store_factors else set(factor_sites(spec))
    samples = {k: v for k, v in draws.samples.items() if k not in drop}
    dims = {k: v for k, v in site_dims(spec).items() if k in samples}
    coords: dict[str, Any] = {g: coord_values(encoder.levels[g]) for g in spec.structure.groups}
    coords["factor"] = np.arange(spec.rank)
    if spec.task == "ordinal":
        coords["cutpoint"] = np.arange(spec.n_classes - 1)
    posterior = az.from_dict(posterior=samples, coords=coords, dims=dims).posterior
    posterior = posterior.assign(group_scales(posterior, spec.structure.groups))
    if extra_posterior is not None:
        posterior = xr.merge([posterior, extra_posterior])
    groups: dict[str, xr.Dataset] = {"posterior": posterior}
    monitor = {k: v for k, v in draws.sample_stats.items() if k.startswith(HOLDOUT_PREFIX)}
    stats = {k: v for k, v in draws.sample_stats.items() if np.ndim(v) >= 2 and k not in monitor}
    if stats:
        groups["sample_stats"] = az.from_dict(sample_stats=stats).sample_stats
    if draws.loss is not None:  # SVI: the loss curve, one value per optimization step
        loss = np.asarray(draws.loss, np.float64).reshape(1, -1)
        groups["sample_stats"] = xr.Dataset(
            {"loss": (("chain", "svi_step"), loss)},
            coords={"chain": [0], "svi_step": np.arange(loss.shape[1])},
        )
    if monitor:  # SVI held-out monitoring: one value per evaluation, at the steps recorded
        steps = np.asarray(monitor.pop(f"{HOLDOUT_PREFIX}step")).ravel()
        groups["sample_stats"] = (
            groups["sample_stats"]
            .assign(
                {
                    k: (("chain", "svi_eval"), np.asarray(v, np.float64).reshape(1, -1))
                    for k, v in monitor.items()
                }
            )
            .assign_coords(svi_eval=steps)
        )
    for name, ds in (
        ("log_likelihood", log_likelihood),
        ("posterior_predictive", posterior_predictive),
        ("observed_data", observed_data),
        ("constant_data", constant_data),
    ):
        if ds is not None:
            groups[name] = ds
    idata = from_groups(groups)
    for group in idata.groups():
        idata[group].attrs.update(attrs)
    return idata


HOLDOUT_PREFIX = "holdout_"


def group_scales(posterior: xr.Dataset, groups: tuple[str, ...]) -> dict[str, xr.DataArray]:
    """Per-group prior scales along a ``group`` dim: which feature groups matter.

    ``group_w_sd`` is the prior sd of a group's linear weights, ``group_v_sd`` the RMS prior
    sd of its factors over the factor dimensions (invariant to factor order and sign).
    """
    w_sd = [1.0 / np.sqrt(posterior[f"w_lambda_{g}"]) for g in groups]
    v_sd = [np.sqrt((1.0 / posterior[f"v_lambda_{g}"]).mean("factor")) for g in groups]
    labels = {"group": np.asarray(groups)}
    return {
        name: xr.concat(parts, dim="group").assign_coords(labels).transpose("chain", "draw", ...)
        for name, parts in (("group_w_sd", w_sd), ("group_v_sd", v_sd))
    }


def from_groups(groups: Mapping[str, xr.Dataset]) -> az.InferenceData:
    """InferenceData from named datasets (known groups only; order kept)."""
    unknown = set(groups) - set(ARVIZ_GROUPS)
    if unknown:
        raise ValueError(f"groups: unknown {sorted(unknown)}; allowed are {list(ARVIZ_GROUPS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.InferenceData(**{g: groups[g] for g in ARVIZ_GROUPS if g in groups})


def with_predictions(
    idata: az.InferenceData, predictions: xr.Dataset, constant: xr.Dataset
) -> az.InferenceData:
    """A copy of ``idata`` whose ``predictions`` groups are replaced by the given ones."""
    groups = {g: idata[g] for g in idata.groups() if not g.startswith("predictions")}
    attrs = dict(idata.posterior.attrs)
    groups["predictions"] = predictions.assign_attrs(attrs)
    groups["predictions_constant_data"] = constant.assign_attrs(attrs)
    return from_groups(groups)


# ------------------------------------------------------------------------- diagnostics
def convergence(ds: xr.Dataset) -> dict[str, xr.Dataset]:
    """Rank-normalized R-hat, bulk and tail ESS, and the MCSE of the mean of every variable.

    ``ds`` holds ``(chain, draw, ...)`` variables.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant draws give NaN, not noise
        one_chain = ds.sizes.get("chain", 1) < 2
        return {
            # R-hat compares chains; with one there is nothing to compare
            "r_hat": xr.full_like(ds.isel(chain=0, draw=0, drop=True), np.nan)
            if one_chain
            else az.rhat(ds, method="rank"),
            "ess_bulk": az.ess(ds, method="bulk"),
            "ess_tail": az.ess(ds, method="tail"),
            "mcse_mean": az.mcse(ds, method="mean"),
        }


def e_bfmi(idata: az.InferenceData) -> np.ndarray:
    """Energy Bayesian fraction of missing information, one value per chain."""
    return np.asarray(az.bfmi(idata))


def loo(idata: az.InferenceData, pointwise: bool = True) -> Any:
    """PSIS-LOO (``arviz.loo``) of the pointwise log-likelihood ``y``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto-k warnings are reported by us
        # ArviZ's Pareto fit divides by exp(large) on purpose (weights of 0)
        warnings.filterwarnings("ignore", "overflow encountered in exp", RuntimeWarning)
        return az.loo(idata, pointwise=pointwise, var_name="y")


def compare(idatas: Mapping[str, az.InferenceData], ic: str = "loo") -> Any:
    """``arviz.compare`` of several fits by expected log predictive density."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.filterwarnings("ignore", "overflow encountered in exp", RuntimeWarning)
        return az.compare(dict(idatas), ic=ic, var_name="y")


# ------------------------------------------------------------------------------- plots
def plot_trace(ds: xr.Dataset, var_names: Sequence[str]) -> Any:
    """Trace plot (density and draws per chain) of the given variables."""
    return az.plot_trace(ds, var_names=list(var_names), compact=True, show=False)


def plot_rank(ds: xr.Dataset, var_names: Sequence[str]) -> Any:
    """Rank plot of the given variables (uniform bars when chains agree)."""
    return az.plot_rank(ds, var_names=list(var_names), show=False)


def plot_energy(idata: az.InferenceData) -> Any:
    """Marginal and transition energy distributions of a NUTS fit."""
    return az.plot_energy(idata, show=False)


def to_json(value: Any) -> str:
    """JSON text of an attribute value (NetCDF attributes hold strings and numbers)."""
    return json.dumps(value, default=str, sort_keys=True)
