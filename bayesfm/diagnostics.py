"""Convergence diagnostics on identified quantities.

Latent factors are identified only up to rotation, sign and permutation, so R-hat or ESS of
raw factors across chains mean nothing. :func:`diagnose` therefore reports only quantities
that every mode of the posterior agrees on: the noise scale, the global bias (or the
cutpoints) in a form that constant shifts between the bias and the fields cannot change,
the group hyperparameters in a permutation- and sign-invariant form, and the predictions on
a fixed probe set of observed and unobserved (user, item) cells.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from . import idata as idata_mod
from .data import Categorical, FeatureSpec, FittedEncoder, Implicit, MultiHot, Numeric

if TYPE_CHECKING:  # pragma: no cover
    from .estimators import BayesianFM

__all__ = [
    "ConvergenceWarning",
    "RHAT_MAX",
    "ESS_PER_CHAIN_MIN",
    "BFMI_MIN",
    "diagnose",
    "identified_quantities",
    "probe_table",
]

RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100
BFMI_MIN = 0.3
# relative change of the mean SVI loss between the last two tenths of the run
SVI_LOSS_REL_CHANGE_MAX = 1e-3

COLUMNS = [
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


class ConvergenceWarning(UserWarning):
    """A fit failed a convergence check; see ``model.diagnose()``.

    MCMC fits warn once, summarizing the failed rows of the diagnostics table. Turn it
    into an error to stop a pipeline on unconverged fits.

    Examples
    --------
    >>> import warnings
    >>> import bayesfm as bfm
    >>> issubclass(bfm.diagnostics.ConvergenceWarning, UserWarning)
    True
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", bfm.diagnostics.ConvergenceWarning)
    ...     table = model.diagnose()  # a refit here would raise instead of warning
    """


# ------------------------------------------------------------------------- probe set
def probe_table(
    X: pd.DataFrame,
    encoder: FittedEncoder,
    n_observed: int = 20,
    n_unobserved: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """A fixed set of observed rows and unobserved (user, item) cells to diagnose.

    Unobserved cells combine the user side of one training row with the item side (the item
    column and every column owned by the item) of another, for pairs absent from training.
    They need at least two one-hot entity fields; otherwise only observed rows are used.

    Parameters
    ----------
    X : pandas.DataFrame
        The training table.
    encoder : FittedEncoder
        The fitted encoder of the model (``model.encoder_``).
    n_observed : int
        Training rows to draw.
    n_unobserved : int
        Unobserved cells to build (fewer if too few absent pairs are found).
    seed : int
        Seed of the choice.

    Returns
    -------
    pandas.DataFrame
        The spec's columns plus ``probe_kind`` (``"observed"`` / ``"unobserved"``).

    Examples
    --------
    >>> import bayesfm as bfm
    >>> probe = bfm.diagnostics.probe_table(X, model.encoder_, n_observed=5, n_unobserved=5)
    >>> probe["probe_kind"].value_counts().sort_index().to_dict()
    {'observed': 5, 'unobserved': 5}
    >>> probe.columns.tolist()
    ['user_id', 'item_id', 'occupation', 'age', 'genres', 'probe_kind']
    """
    spec = encoder.spec
    cols = spec.columns
    rng = np.random.default_rng(seed)
    table = X[cols].reset_index(drop=True)
    pick = rng.choice(len(table), min(n_observed, len(table)), replace=False)
    observed = table.iloc[np.sort(pick)].assign(probe_kind="observed")
    entities = [f.column for f in spec.fields if isinstance(f, Categorical) and f.owner is None]
    if len(entities) < 2 or n_unobserved == 0:
        return observed.reset_index(drop=True)
    user, item = entities[:2]
    item_side = [item] + [
        c
        for f in spec.fields
        if f.owner == item and not isinstance(f, Implicit)
        for c in f.columns
        if c != item
    ]
    seen = set(zip(table[user].to_numpy(), table[item].to_numpy(), strict=True))
    rows, chosen = [], set()
    for _ in range(50 * n_unobserved):
        if len(rows) == n_unobserved:
            break
        a, b = rng.integers(len(table), size=2)
        pair = (table[user].iat[a], table[item].iat[b])
        if pair in seen or pair in chosen:
            continue
        chosen.add(pair)
        row = table.iloc[[a]].copy()
        for c in item_side:
            row[c] = table[c].iloc[[b]].to_numpy()
        rows.append(row)
    if not rows:
        return observed.reset_index(drop=True)
    unobserved = pd.concat(rows).assign(probe_kind="unobserved")
    return pd.concat([observed, unobserved], ignore_index=True)


def probe_labels(probe: pd.DataFrame, encoder: FittedEncoder) -> list[str]:
    """Readable labels of probe rows: ``"user=1, item=5"`` from the entity columns."""
    spec = encoder.spec
    entities = [f for f in spec.fields if isinstance(f, Categorical) and f.owner is None]
    if not entities:
        return [f"row {i}" for i in range(len(probe))]
    cols = [f.column for f in entities[:2]]
    dims = [f.dim for f in entities[:2]]
    return [
        ", ".join(f"{d}={v}" for d, v in zip(dims, vals, strict=True))
        for vals in probe[cols].itertuples(index=False)
    ]


# ------------------------------------------------------------------ identified quantities
def identified_quantities(posterior: xr.Dataset, features: FeatureSpec) -> xr.Dataset:
    """Scalar-per-draw quantities that the likelihood identifies, whatever the factor mode.

    A constant can move between the global bias and the levels of any field whose row
    weights sum to one (one-hot and multi-hot fields): ``w0 + c`` with ``w_j - c`` and
    ``mu_g - c`` leaves every prediction unchanged, so ``w0`` and each ``w_mu_g`` alone are
    pinned down only by their priors. The diagnosed quantities are therefore:

    - ``sigma``;
    - ``location = w0 + sum of w_mu_g`` over one-hot and multi-hot groups (for the ordinal
      task, where ``w0 = 0``, ``cutpoints[k] - location`` instead);
    - per group with several levels: ``w_sd_g = 1/sqrt(w_lambda_g)`` and
      ``v_sd_g = sqrt(mean_f 1/v_lambda_g[f])``, the RMS prior scale of the factors, which
      does not change when factors are permuted or flipped; implicit-feedback groups (whose
      weights do not sum to one) also keep ``w_mu_g``;
    - numeric fields (one level each): their weight ``w_g``;
    - ``probe``: the latent mean on the probe cells.

    Parameters
    ----------
    posterior : xarray.Dataset
        The ``posterior`` group of a fit (``model.idata_.posterior``).
    features : FeatureSpec
        The model's feature spec.

    Returns
    -------
    xarray.Dataset
        One variable per identified quantity, with dims ``(chain, draw)`` (and the probe
        cells for ``probe``).

    Examples
    --------
    >>> import bayesfm as bfm
    >>> ident = bfm.diagnostics.identified_quantities(model.idata_.posterior, model.features)
    >>> list(ident.data_vars)[:2]
    ['sigma', 'location']
    >>> ident["sigma"].dims
    ('chain', 'draw')
    """
    shift_groups = [f.dim for f in features.fields if isinstance(f, Categorical | MultiHot)]
    out: dict[str, xr.DataArray] = {}
    if "sigma" in posterior and float(posterior["sigma"].std()) > 0:
        out["sigma"] = posterior["sigma"]
    location = sum(posterior[f"w_mu_{g}"] for g in shift_groups if f"w_mu_{g}" in posterior)
    if "w0" in posterior:
        location = location + posterior["w0"]
    if "cutpoints" in posterior:
        for k in range(posterior.sizes["cutpoint"]):
            cut = posterior["cutpoints"].isel(cutpoint=k, drop=True)
            out[f"cutpoints[{k}] - location"] = cut - location
    elif isinstance(location, xr.DataArray):
        out["location"] = location
    for f in features.fields:
        g = f.dim
        if f"w_mu_{g}" not in posterior:
            continue
        if isinstance(f, Numeric):
            out[f"w[{g}]"] = posterior[f"w_{g}"].isel({g: 0}, drop=True)
            continue
        if isinstance(f, Implicit):
            out[f"w_mu[{g}]"] = posterior[f"w_mu_{g}"]
        out[f"w_sd[{g}]"] = 1.0 / np.sqrt(posterior[f"w_lambda_{g}"])
        out[f"v_sd[{g}]"] = np.sqrt((1.0 / posterior[f"v_lambda_{g}"]).mean("factor"))
    ds = xr.Dataset(out)
    if "probe" in posterior:
        ds["probe"] = posterior["probe"]
    return ds


def _rows(ds: xr.Dataset, kinds: dict[str, str]) -> list[dict[str, Any]]:
    stats = idata_mod.convergence(ds)
    rows = []
    for name in ds.data_vars:
        var = ds[name]
        if name == "probe":
            labels = var["probe_label"].to_numpy()
            kind_of = var["probe_kind"].to_numpy()
            for j, label in enumerate(labels):
                sel = {"probe_cell": j}
                rows.append(
                    {
                        "quantity": f"probe[{label}] ({kind_of[j]})",
                        "kind": "probe",
                        "mean": float(var.isel(sel).mean()),
                        "sd": float(var.isel(sel).std()),
                        **{k: float(stats[k][name].isel(sel)) for k in stats},
                    }
                )
            continue
        rows.append(
            {
                "quantity": name,
                "kind": kinds.get(name, "hyperparameter"),
                "mean": float(var.mean()),
                "sd": float(var.std()),
                **{k: float(stats[k][name]) for k in stats},
            }
        )
    return rows


def _flag_convergence(row: dict[str, Any], n_chains: int) -> dict[str, Any]:
    reasons = []
    # one chain has no R-hat (NaN): judge it by its ESS alone, and say so
    if n_chains > 1 and not (row["r_hat"] < RHAT_MAX):
        reasons.append(f"R-hat {row['r_hat']:.3f} >= {RHAT_MAX}")
    need = ESS_PER_CHAIN_MIN * n_chains
    for key, label in (("ess_bulk", "bulk ESS"), ("ess_tail", "tail ESS")):
        if not (row[key] > need):
            reasons.append(f"{label} {row[key]:.0f} <= {need} ({ESS_PER_CHAIN_MIN} per chain)")
    flag = "warn" if reasons else "pass"
    if n_chains == 1:
        reasons.append("one chain: no R-hat (run several chains to compare them)")
    return {**row, "flag": flag, "reason": "; ".join(reasons)}


def _sampler_rows(model: BayesianFM) -> list[dict[str, Any]]:
    idata = model.idata_
    stats = idata.sample_stats
    rows: list[dict[str, Any]] = []
    blank = {k: np.nan for k in ("sd", "r_hat", "ess_bulk", "ess_tail", "mcse_mean")}
    n_div = int(stats["diverging"].sum())
    rows.append(
        {
            "quantity": "divergences",
            "kind": "sampler",
            "mean": float(n_div),
            **blank,
            "flag": "warn" if n_div else "pass",
            "reason": f"{n_div} divergent transitions" if n_div else "",
        }
    )
    max_depth = getattr(model.inference_, "max_tree_depth", None)
    depth = stats["tree_depth"].to_numpy()
    if max_depth is not None:
        saturated = float(np.mean(depth >= max_depth))
        rows.append(
            {
                "quantity": "tree depth saturation",
                "kind": "sampler",
                "mean": saturated,
                **blank,
                "flag": "warn" if saturated > 0 else "pass",
                "reason": (
                    f"{saturated:.1%} of transitions hit max_tree_depth={max_depth}"
                    if saturated > 0
                    else ""
                ),
            }
        )
    for c, value in enumerate(idata_mod.e_bfmi(idata)):
        low = not (value >= BFMI_MIN)
        rows.append(
            {
                "quantity": f"E-BFMI (chain {c})",
                "kind": "sampler",
                "mean": float(value),
                **blank,
                "flag": "warn" if low else "pass",
                "reason": f"E-BFMI {value:.2f} < {BFMI_MIN}" if low else "",
            }
        )
    return rows


def _svi_row(loss: np.ndarray) -> dict[str, Any]:
    tenth = max(len(loss) // 10, 1)
    last, before = np.mean(loss[-tenth:]), np.mean(loss[-2 * tenth : -tenth])
    change = float(abs(before - last) / max(abs(last), 1e-12))
    ok = change <= SVI_LOSS_REL_CHANGE_MAX
    return {
        "quantity": "SVI loss, relative change over the last tenth",
        "kind": "optimizer",
        "mean": change,
        **{k: np.nan for k in ("sd", "r_hat", "ess_bulk", "ess_tail", "mcse_mean")},
        "flag": "pass" if ok else "warn",
        "reason": "" if ok else f"loss still changing by {change:.2%}; use more num_steps",
    }


def diagnose(model: BayesianFM) -> pd.DataFrame:
    """Convergence table of a fitted model, one row per identified quantity or sampler check.

    Columns: ``quantity, kind, mean, sd, r_hat, ess_bulk, ess_tail, mcse_mean, flag,
    reason``. ``flag`` is ``"pass"`` or ``"warn"`` (R-hat < 1.01, bulk and tail ESS > 100
    per chain, no divergences, no tree-depth saturation, E-BFMI >= 0.3), or ``"n/a"`` for
    SVI draws, which are independent draws of the variational approximation and have no
    chains to compare; SVI fits get a row on the convergence of the loss instead.

    Parameters
    ----------
    model : BayesianFM or BayesianMF
        A fitted estimator.

    Returns
    -------
    pandas.DataFrame
        The table described above.

    Raises
    ------
    NotFittedError
        The model is not fitted.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> table = bfm.diagnostics.diagnose(model)
    >>> table[["quantity", "kind"]].head(2)
       quantity   kind
    0     sigma  noise
    1  location   bias
    >>> table["flag"].iloc[0]
    'n/a'
    """
    model._check_fitted()
    idata = model.idata_
    ds = identified_quantities(idata.posterior, model.encoder_.spec)
    kinds = {"sigma": "noise", "location": "bias"}
    kinds.update({n: "cutpoint" for n in ds.data_vars if str(n).startswith("cutpoints[")})
    kinds.update({n: "weight" for n in ds.data_vars if str(n).startswith("w[")})
    rows = _rows(ds, kinds)
    method = model.draws_.method
    if method == "svi":
        rows = [
            {**r, "r_hat": np.nan, "flag": "n/a", "reason": "SVI draws: no chains to compare"}
            for r in rows
        ]
        rows.append(_svi_row(np.asarray(idata.sample_stats["loss"]).ravel()))
    else:
        n_chains = idata.posterior.sizes["chain"]
        rows = [_flag_convergence(r, n_chains) for r in rows]
        if method == "nuts":
            rows += _sampler_rows(model)
    return pd.DataFrame(rows, columns=COLUMNS)


def warn_if_failed(table: pd.DataFrame, method: str) -> None:
    """Emit one :class:`ConvergenceWarning` summarizing the failed rows, if any."""
    failed = table[table["flag"] == "warn"]
    if failed.empty:
        return
    pairs = zip(failed.quantity[:3], failed.reason[:3], strict=True)
    shown = "; ".join(f"{q}: {r}" for q, r in pairs)
    more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
    warnings.warn(
        f"{method} fit failed {len(failed)} of {len(table)} convergence checks: {shown}{more}. "
        "Run model.diagnose() for the table; run longer chains (num_warmup, num_samples).",
        ConvergenceWarning,
        stacklevel=3,
    )
