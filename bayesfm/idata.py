"""Conversion of posterior draws to ``arviz.InferenceData``; the only module importing ArviZ."""

from __future__ import annotations

import json
import warnings

import numpy as np

with warnings.catch_warnings():  # ArviZ 0.23 announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

from .data import FittedEncoder
from .fm import ModelSpec
from .inference import PosteriorDraws

__all__ = ["from_draws", "site_dims"]


def site_dims(spec: ModelSpec) -> dict[str, list[str]]:
    """Dimension names of every parameter site, named after the plates."""
    dims: dict[str, list[str]] = {"cutpoints": ["cutpoint"]}
    for g in spec.structure.groups:
        dims[f"w_{g}"] = [g]
        dims[f"w_{g}_z"] = [g]
        dims[f"v_{g}"] = [g, "factor"]
        dims[f"v_{g}_z"] = [g, "factor"]
        dims[f"v_mu_{g}"] = ["factor"]
        dims[f"v_lambda_{g}"] = ["factor"]
    return dims


def _coord_values(levels: np.ndarray) -> np.ndarray:
    values = np.asarray(levels)
    if values.dtype == object:
        values = values.astype(str)
    return values


def from_draws(draws: PosteriorDraws, encoder: FittedEncoder, spec: ModelSpec) -> az.InferenceData:
    """InferenceData with a ``posterior`` (and ``sample_stats``) labelled with original ids."""
    dims = {k: v for k, v in site_dims(spec).items() if k in draws.samples}
    coords = {g: _coord_values(encoder.levels[g]) for g in spec.structure.groups}
    coords["factor"] = np.arange(spec.rank)
    if spec.task == "ordinal":
        coords["cutpoint"] = np.arange(spec.n_classes - 1)
    stats = {k: v for k, v in draws.sample_stats.items() if np.ndim(v) >= 2}
    attrs = {
        "inference_library": "bayesfm",
        "inference_method": draws.method,
        "timings": json.dumps({k: v for k, v in draws.timings.items()}),
    }
    idata = az.from_dict(
        posterior=draws.samples, sample_stats=stats or None, coords=coords, dims=dims
    )
    for group in idata.groups():
        idata[group].attrs.update(attrs)
    return idata
