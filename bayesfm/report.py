"""Self-contained HTML report of a fitted model: summary, diagnostics, checks and LOO.

:func:`report` writes one HTML file with every plot embedded as a base64 PNG, no scripts,
no external style sheets and no network references, so that it can be mailed, archived
or opened offline. Sections (each an element with a stable ``id``): ``summary``,
``diagnostics``, ``traces``, ``energy``, ``ppc``, ``calibration`` and ``loo``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as _dt
import io
import math
import os
import uuid
import warnings
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.figure import Figure

from . import idata as idata_mod
from . import metrics
from ._version import __version__
from .diagnostics import (
    BFMI_MIN,
    ESS_PER_CHAIN_MIN,
    RHAT_MAX,
    diagnose,
    identified_quantities,
)
from .priors import PriorConfig

if TYPE_CHECKING:  # pragma: no cover
    from .estimators import BayesianFM

__all__ = ["SECTIONS", "report"]

# (id, heading) of every section, in the order they appear
SECTIONS = (
    ("summary", "Summary"),
    ("diagnostics", "Convergence diagnostics"),
    ("traces", "Traces"),
    ("energy", "Energy"),
    ("ppc", "Posterior predictive check"),
    ("calibration", "Held-out calibration"),
    ("loo", "PSIS-LOO"),
)
TEMPLATE = "report.html.j2"
N_WORST_PROBES = 10
N_PPC_REPLICATES = 20
DPI = 96
ACTIVITY_ORDER = ("low", "mid", "high", "all", "cold start")


# -------------------------------------------------------------------------- helpers
def _num(value: Any, fmt: str = ".4g") -> str:
    """A number for a table cell; NaN and None become an em dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "\u2014"
        return format(float(value), fmt)
    return str(value)


def _png(fig: Figure) -> str:
    """A figure as a ``data:`` URI of a PNG; the figure is closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure_of(axes: Any) -> Figure:
    """The figure holding an ArviZ plot's axes (one Axes or an array of them)."""
    return np.ravel(np.asarray(axes, dtype=object))[0].figure


@contextlib.contextmanager
def _arviz_plotting() -> Iterator[None]:
    """No interactive display, and no deprecation noise from ArviZ's matplotlib backend."""
    with plt.ioff(), warnings.catch_warnings():
        warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
        yield


def _resized(fig: Figure, width: float, height: float) -> Figure:
    """Give an ArviZ figure a new size and lay it out again at that size."""
    fig.set_size_inches(width, height)
    fig.set_layout_engine("constrained")
    return fig


def _image(src: str, alt: str, caption: str = "", wide: bool = True) -> dict[str, Any]:
    return {"src": src, "alt": alt, "caption": caption, "wide": wide}


def _frame_table(frame: pd.DataFrame, formats: dict[str, str] | None = None) -> dict[str, Any]:
    """Header and formatted rows of a DataFrame for the template."""
    formats = formats or {}
    rows = [
        [_num(v, formats.get(c, ".4g")) for c, v in zip(frame.columns, rec, strict=True)]
        for rec in frame.itertuples(index=False)
    ]
    return {"columns": [str(c) for c in frame.columns], "rows": rows}


# ------------------------------------------------------------------------ validation
def _validated(
    model: Any, X_test: Any, y_test: Any, path: str | os.PathLike[str]
) -> tuple[Path, bool]:
    if not hasattr(model, "_check_fitted"):
        raise TypeError(
            f"model: got {type(model).__name__}; expected a fitted bayesfm estimator "
            "(BayesianFM or BayesianMF)"
        )
    model._check_fitted()
    if X_test is not None and y_test is None:
        raise ValueError("y_test: got None while X_test was given; pass both or neither")
    if y_test is not None and X_test is None:
        raise ValueError("X_test: got None while y_test was given; pass both or neither")
    if X_test is not None:
        if not isinstance(X_test, pd.DataFrame):
            raise TypeError(f"X_test: got {type(X_test).__name__}; expected a pandas DataFrame")
        if np.size(y_test) != len(X_test):
            raise ValueError(
                f"y_test: got {np.size(y_test)} values but X_test has {len(X_test)} rows; they "
                "must have the same length"
            )
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: got {type(path).__name__}; expected a str or os.PathLike")
    out = Path(path).expanduser()
    if out.is_dir():
        raise IsADirectoryError(
            f"path: {str(out)!r} is a folder; give a file name such as {str(out / 'report.html')!r}"
        )
    if not out.parent.is_dir():
        raise FileNotFoundError(
            f"path: the folder {str(out.parent)!r} of {str(out)!r} does not exist; create it first"
        )
    return out, X_test is not None


# --------------------------------------------------------------------------- summary
def _summary(model: BayesianFM, X_test: pd.DataFrame | None) -> dict[str, Any]:
    structure = model.spec_.structure
    carrier = {t.dim: t.carrier for t in structure.terms}
    fields = []
    for f in model.encoder_.spec.fields:
        try:
            n = structure.n_levels(f.dim)
        except KeyError:
            n = len(model.encoder_.levels.get(f.dim, ()))
        fields.append(
            [
                type(f).__name__,
                ", ".join(f.columns),
                f.owner or "\u2014",
                f.dim,
                "row" if carrier.get(f.dim) == "__row__" else carrier.get(f.dim, "itself"),
                _num(n),
            ]
        )
    model_rows = [
        ("estimator", type(model).__name__),
        ("rank", _num(model.spec_.rank)),
        ("task", model.task),
    ]
    if model.task == "binary":
        model_rows.append(("link", model.link))
    if model.task == "ordinal" and model.classes_ is not None:
        model_rows.append(("classes", ", ".join(str(c) for c in model.classes_)))
    model_rows += [
        # the defaults' values, so that a report read later says which prior it had
        ("prior", f"default: {PriorConfig()!r}" if model.prior is None else repr(model.prior)),
        ("cold start", model.cold_start),
        ("factor draws kept", str(model.store_factors)),
        ("pointwise groups kept", str(model.store_pointwise)),
    ]
    groups = [[d, "entity", _num(n)] for d, n in structure.entities] + [
        [t.dim, f"per {'row' if t.carrier == '__row__' else t.carrier}", _num(t.n_levels)]
        for t in structure.terms
    ]
    post = model.idata_.posterior
    data_rows = [("training rows", _num(int(model.n_train_)))]
    if X_test is not None:
        data_rows.append(("held-out rows", _num(len(X_test))))
    cfg = model.inference_
    config = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))
    inference_rows = [
        ("method", model.draws_.method),
        ("configuration", type(cfg).__name__),
        *((f"\u2003{k}", _num(v)) for k, v in config.items()),
        ("chains", _num(int(post.sizes["chain"]))),
        ("draws per chain", _num(int(post.sizes["draw"]))),
    ]
    for k, v in model.timings_.items():
        label = f"time: {k[:-2]} (s)" if k.endswith("_s") else k.replace("_", " ")
        inference_rows.append((label, _num(v, ".1f")))
    fitted_with = post.attrs.get("bayesfm_version", "unknown")
    version_rows = [("fitted with bayesfm", str(fitted_with))]
    if "created_at" in post.attrs:
        version_rows.append(("fitted at", str(post.attrs["created_at"])))
    version_rows.append(("report by bayesfm", __version__))
    return {
        "model": model_rows,
        "fields": fields,
        "groups": groups,
        "data": data_rows,
        "inference": inference_rows,
        "version": version_rows,
    }


# ----------------------------------------------------------------------- diagnostics
_DIAG_FORMATS = {
    "mean": ".4g",
    "sd": ".3g",
    "r_hat": ".3f",
    "ess_bulk": ".0f",
    "ess_tail": ".0f",
    "mcse_mean": ".2g",
}


def _diag_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "flag": str(rec["flag"]),
            "cells": [
                _num(rec[c], _DIAG_FORMATS.get(c, ".4g"))
                for c in ("quantity", "kind", *_DIAG_FORMATS, "flag", "reason")
            ],
        }
        for _, rec in frame.iterrows()
    ]


def _worst_probes(probes: pd.DataFrame, n: int) -> tuple[pd.DataFrame, str]:
    """The ``n`` probe rows of highest R-hat (lowest bulk ESS when R-hat is undefined)."""
    if probes["r_hat"].notna().any():
        order = probes.sort_values(
            ["r_hat", "ess_bulk"], ascending=[False, True], na_position="last"
        )
        return order.head(n), "highest R-hat"
    return probes.sort_values("ess_bulk", na_position="last").head(n), "lowest bulk ESS"


def _diagnostics(model: BayesianFM, table: pd.DataFrame) -> dict[str, Any]:
    method = model.draws_.method
    probe = table["kind"] == "probe"
    main, probes = table[~probe], table[probe]
    worst, order = _worst_probes(probes, N_WORST_PROBES)
    n_chains = int(model.idata_.posterior.sizes["chain"])
    counts = {f: int((table["flag"] == f).sum()) for f in ("pass", "warn", "n/a")}
    return {
        "columns": ["quantity", "kind", *_DIAG_FORMATS, "flag", "reason"],
        "n_warn": counts["warn"],
        "n_checks": len(table),
        "n_warn_main": int((main["flag"] == "warn").sum()),
        "n_main": len(main),
        "n_warn_probe": int((probes["flag"] == "warn").sum()),
        "n_pass_probe": int((probes["flag"] == "pass").sum()),
        "n_na_probe": int((probes["flag"] == "n/a").sum()),
        "n_probe": len(probes),
        "rows": _diag_rows(main),
        "worst_probes": _diag_rows(worst),
        "worst_order": order,
        "n_worst": len(worst),
        "svi": method == "svi",
        "thresholds": (
            f"R-hat < {RHAT_MAX}, bulk and tail ESS > {ESS_PER_CHAIN_MIN} per chain "
            f"(> {ESS_PER_CHAIN_MIN * n_chains} for {n_chains} chain"
            f"{'s' if n_chains != 1 else ''})"
            + (
                f", no divergences, no tree-depth saturation, E-BFMI >= {BFMI_MIN}"
                if method == "nuts"
                else ""
            )
        ),
    }


# ---------------------------------------------------------------------------- traces
def _trace_selection(
    ds: xr.Dataset, table: pd.DataFrame, groups: Sequence[str]
) -> tuple[xr.Dataset, list[str]]:
    """A handful of identified quantities: noise/bias, entity scales, the worst others."""
    names = [n for n in ("sigma", "location") if n in ds]
    names += [n for n in ds.data_vars if str(n).startswith("cutpoints[")][:6]
    for g in list(groups)[:2]:
        names += [n for n in (f"w_sd[{g}]", f"v_sd[{g}]") if n in ds]
    why = [f"{len(names)} core quantities (noise, bias or cutpoints, scales of the entities)"]
    scored = table[(table["kind"] != "probe") & table["quantity"].isin(list(ds.data_vars))]
    has_rhat = scored["r_hat"].notna().any()
    scored = scored.sort_values("r_hat" if has_rhat else "ess_bulk", ascending=not has_rhat)
    extra = [q for q in scored["quantity"] if q not in names][:2]
    if extra:
        names += extra
        why.append(
            f"{len(extra)} more with the {'highest R-hat' if has_rhat else 'lowest bulk ESS'}"
        )
    out = xr.Dataset({n: ds[n] for n in names})
    if "probe" in ds:
        probes = table[table["kind"] == "probe"].reset_index(drop=True)
        probe = ds["probe"]
        if len(probes) == probe.sizes["probe_cell"]:
            kinds = probe["probe_kind"].to_numpy().astype(str)
            labels = probe["probe_label"].to_numpy().astype(str)
            key = probes["r_hat"] if has_rhat else -probes["ess_bulk"]
            picked = []
            for kind in ("observed", "unobserved"):
                cells = np.flatnonzero(kinds == kind)
                values = key.to_numpy(np.float64)[cells]
                if len(cells):
                    worst = int(np.nanargmax(values)) if np.isfinite(values).any() else 0
                    picked.append(int(cells[worst]))
            for j in picked:
                name = f"probe[{j}] {labels[j]} ({kinds[j]})"
                out[name] = probe.isel(probe_cell=j, drop=True).reset_coords(drop=True)
            if picked:
                why.append(
                    f"{len(picked)} probe cell{'s' if len(picked) > 1 else ''} (the worst "
                    "observed and unobserved)"
                )
    return out, why


def _traces(model: BayesianFM, table: pd.DataFrame) -> dict[str, Any]:
    post = model.idata_.posterior
    ds = identified_quantities(post, model.encoder_.spec)
    sub, why = _trace_selection(ds, table, [d for d, _ in model.spec_.structure.entities])
    names = list(sub.data_vars)
    n_chains = int(post.sizes["chain"])
    images: list[dict[str, Any]] = []
    if not names:
        return {
            "images": images,
            "names": names,
            "why": "nothing",
            "note": "The posterior holds no identified scalar quantities to trace.",
        }
    with _arviz_plotting():
        fig = _figure_of(idata_mod.plot_trace(sub, names))
        _resized(fig, 12, max(2.4, 2.0 * len(names)))
        images.append(
            _image(
                _png(fig),
                "trace plot",
                "Left: marginal density per chain; right: draws in order, one line per chain.",
            )
        )
        if n_chains >= 2:
            fig = _figure_of(idata_mod.plot_rank(sub, names))
            cols = min(3, len(names))
            _resized(fig, 12, 2.8 * math.ceil(len(names) / cols))
            images.append(
                _image(
                    _png(fig),
                    "rank plot",
                    "Rank plots: ranks of the draws pooled over chains, one histogram per "
                    "chain; flat, overlapping bars mean that the chains agree.",
                )
            )
    note = ""
    if n_chains < 2:
        note = (
            f"{n_chains} chain: rank plots compare chains and need at least two, so only the "
            "trace and density are shown."
        )
        if model.draws_.method == "svi":
            note = (
                "SVI draws are independent draws of the variational approximation (one "
                "'chain'): rank plots need at least two chains, so only the draws and their "
                "density are shown. They show the approximation, not convergence."
            )
    return {"images": images, "names": names, "why": "; ".join(why), "note": note}


# ---------------------------------------------------------------------------- energy
def _energy(model: BayesianFM, table: pd.DataFrame) -> dict[str, Any]:
    method = model.draws_.method
    idata = model.idata_
    groups = idata.groups()
    stats = idata.sample_stats if "sample_stats" in groups else None
    images: list[dict[str, Any]] = []
    if method == "nuts" and stats is not None and "energy" in stats:
        bfmi = table[table["quantity"].str.startswith("E-BFMI")]
        values = ", ".join(
            f"{q[7:-1]}: {_num(v, '.2f')}"
            for q, v in zip(bfmi["quantity"], bfmi["mean"], strict=True)
        )
        with _arviz_plotting():
            fig = _figure_of(idata_mod.plot_energy(idata))
            _resized(fig, 7, 4.2)
            images.append(
                _image(
                    _png(fig),
                    "energy plot",
                    "Marginal energy and energy transition distributions; when the transition "
                    f"distribution is much narrower, NUTS explores slowly. E-BFMI {values} "
                    f"(warn below {BFMI_MIN}).",
                    wide=False,
                )
            )
        return {"heading": "Energy (NUTS)", "images": images, "note": ""}
    if method == "svi" and stats is not None and "loss" in stats:
        loss = np.asarray(stats["loss"], np.float64).ravel()
        fig = Figure(figsize=(12, 3.6), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        steps = np.arange(len(loss))
        ax1.plot(steps, loss, lw=0.8, color="C0")
        ax1.set(xlabel="step", ylabel="loss (negative ELBO)", title="whole run")
        half = len(loss) // 2
        ax2.plot(steps[half:], loss[half:], lw=0.6, color="C0", alpha=0.6, label="loss")
        window = max(len(loss) // 50, 1)
        if len(loss) - half > window > 1:
            smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
            at = steps[window - 1 :]
            keep = at >= half
            ax2.plot(
                at[keep], smooth[keep], lw=1.6, color="C1", label=f"running mean ({window} steps)"
            )
            ax2.legend(loc="upper right", fontsize="small")
        ax2.set(xlabel="step", title="second half")
        images.append(
            _image(
                _png(fig),
                "SVI loss curve",
                "The optimizer's loss; it should level off. The diagnostics table checks its "
                "relative change over the last tenth of the run.",
            )
        )
        return {"heading": "Optimization (SVI)", "images": images, "note": ""}
    if method == "gibbs":
        note = (
            "No energy: the blocked Gibbs sampler draws each block from its conjugate full "
            "conditional and has no Hamiltonian. "
        )
        if "log_likelihood" in groups and "y" in idata.log_likelihood:
            series = idata.log_likelihood["y"].sum("obs")
            what, ylabel = "the log-likelihood of the training data", "log-likelihood"
        else:
            series = idata.posterior["sigma"]
            what, ylabel = "the noise scale sigma", "sigma"
        note += f"Shown instead: the trace of {what} per draw; chains should overlap."
        values = np.asarray(series, np.float64)
        fig = Figure(figsize=(12, 3.4), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2, width_ratios=[3, 1])
        bins = np.histogram_bin_edges(values[np.isfinite(values)], 30)
        for c in range(values.shape[0]):
            ax1.plot(values[c], lw=0.7, alpha=0.85, label=f"chain {c}")
            ax2.hist(values[c], bins=bins, alpha=0.5, orientation="horizontal")
        ax1.set(xlabel="draw", ylabel=ylabel)
        ax1.legend(loc="best", fontsize="small")
        ax2.set(xlabel="count")
        images.append(_image(_png(fig), f"trace of {ylabel}"))
        return {"heading": "Energy (not applicable to Gibbs)", "images": images, "note": note}
    return {
        "heading": "Energy",
        "images": images,
        "note": f"No energy or loss statistics were recorded for inference method {method!r}.",
    }


# ------------------------------------------------------------------------------- PPC
def _ppc(model: BayesianFM) -> dict[str, Any]:
    idata = model.idata_
    groups = idata.groups()
    if "posterior_predictive" not in groups or "y" not in idata.posterior_predictive:
        return {
            "images": [],
            "stats": None,
            "note": "The fit has no posterior_predictive group (it was fitted with "
            "store_pointwise=False), so there is no posterior predictive check. Refit with "
            "store_pointwise=True to get one.",
        }
    y = np.asarray(idata.observed_data["y"], np.float64)
    pp = np.asarray(idata.posterior_predictive["y"], np.float64)
    pp = pp.reshape(-1, pp.shape[-1])  # (draws, obs)
    rng = np.random.default_rng([int(model.random_state), 7])
    reps = pp[rng.choice(len(pp), min(N_PPC_REPLICATES, len(pp)), replace=False)]
    discrete = model.task in ("binary", "ordinal")
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    ax, ax_mean, ax_sd = fig.subplots(1, 3, width_ratios=[2.2, 1, 1])
    if discrete:
        values = np.union1d(np.unique(y), np.unique(reps))
        observed = np.array([np.mean(y == v) for v in values])
        shares = np.stack([(pp == v).mean(1) for v in values], 1)  # (draws, values)
        lo, mid, hi = np.quantile(shares, [0.05, 0.5, 0.95], 0)
        x = np.arange(len(values))
        ax.bar(x, observed, width=0.6, color="0.75", label="observed")
        ax.errorbar(
            x,
            mid,
            yerr=[mid - lo, hi - mid],
            fmt="o",
            color="C0",
            capsize=4,
            label="predictive median, 90% interval",
        )
        ax.set_xticks(x, [f"{v:g}" for v in values])
        ax.set(xlabel="y", ylabel="share of rows")
        caption = (
            "Share of training rows per value: observed (bars) against replicated data "
            "from the posterior predictive (median and 90% interval over draws)."
        )
    else:
        lo_hi = np.quantile(np.concatenate([y, reps.ravel()]), [0.001, 0.999])
        bins = np.linspace(*lo_hi, 41)
        ax.hist(y, bins=bins, density=True, color="0.75", label="observed")
        for i, r in enumerate(reps):
            h, _ = np.histogram(r, bins=bins, density=True)
            ax.stairs(
                h,
                bins,
                color="C0",
                alpha=0.35,
                lw=0.8,
                label=f"{len(reps)} replicates" if i == 0 else None,
            )
        h, _ = np.histogram(pp.ravel(), bins=bins, density=True)
        ax.stairs(h, bins, color="C1", ls="--", lw=1.5, label="posterior predictive")
        ax.set(xlabel="y", ylabel="density")
        caption = (
            "Distribution of the training targets (grey) against replicated data sets drawn "
            "from the posterior predictive (blue) and their pooled density (orange)."
        )
    ax.legend(loc="best", fontsize="small")
    stats = []
    for axis, name, fn in ((ax_mean, "mean", np.mean), (ax_sd, "sd", np.std)):
        rep_stat = fn(pp, axis=1)
        obs_stat = float(fn(y))
        axis.hist(rep_stat, bins=30, color="C0", alpha=0.6)
        axis.axvline(obs_stat, color="k", lw=1.5)
        axis.set(xlabel=f"{name} of y", title=f"{name}: replicates vs observed (line)")
        axis.title.set_fontsize("small")
        stats.append(
            [
                name,
                _num(obs_stat),
                _num(float(np.mean(rep_stat))),
                _num(float(np.mean(rep_stat >= obs_stat)), ".2f"),
            ]
        )
    caption += (
        " Right: the mean and standard deviation of each replicate against the observed "
        "values; a posterior predictive p-value near 0 or 1 signals misfit."
    )
    return {
        "images": [_image(_png(fig), "posterior predictive check", caption)],
        "stats": {"columns": ["statistic", "observed", "replicate mean", "p-value"], "rows": stats},
        "note": "",
    }


# ----------------------------------------------------------------------- calibration
_SUMMARY_LABELS = {
    "n": ("rows", ".0f"),
    "rmse": ("RMSE", ".4f"),
    "mae": ("MAE", ".4f"),
    "mlpd": ("mean log predictive density", ".4f"),
    "coverage_50": ("coverage of 50% intervals", ".3f"),
    "width_50": ("mean width of 50% intervals", ".4g"),
    "coverage_90": ("coverage of 90% intervals", ".3f"),
    "width_90": ("mean width of 90% intervals", ".4g"),
    "auc": ("AUC", ".4f"),
    "log_loss": ("log-loss", ".4f"),
    "accuracy": ("accuracy", ".4f"),
}


def _activity_key(label: str) -> tuple[int, str]:
    for i, prefix in enumerate(ACTIVITY_ORDER):
        if str(label).startswith(prefix):
            return i, str(label)
    return len(ACTIVITY_ORDER), str(label)


def _calibration(check: metrics.PredictiveCheck | None, task: str) -> dict[str, Any]:
    if check is None:
        return {"given": False}
    summary = [
        [
            _SUMMARY_LABELS.get(k, (k, ".4g"))[0],
            _num(float(v), _SUMMARY_LABELS.get(k, (k, ".4g"))[1]),
        ]
        for k, v in check.summary.items()
    ]
    images = []
    cov = check.coverage
    fig = Figure(figsize=(5.2, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="ideal")
    ax.plot(cov["nominal"], cov["empirical"], "o-", color="C0", label="empirical")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="nominal coverage of central interval",
        ylabel="share of held-out rows inside",
        title="Interval coverage",
    )
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize="small")
    images.append(
        _image(
            _png(fig),
            "coverage curve",
            "Points on the diagonal: intervals hold what they promise; below it: "
            "too narrow (overconfident)."
            + (
                " For a discrete target the interval bounds are outcome values and a row on a "
                "bound counts as inside, so coverage runs above nominal; read the PIT"
                + (" and the reliability curve" if task == "binary" else "")
                + " instead."
                if task != "regression"
                else ""
            ),
            wide=False,
        )
    )
    pit = np.asarray(check.pit, np.float64)
    n_bins = 10 if len(pit) < 500 else 20
    fig = Figure(figsize=(5.2, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.hist(pit, bins=n_bins, range=(0, 1), density=True, color="C0", edgecolor="white")
    band = 1.96 * math.sqrt((1 / n_bins) * (1 - 1 / n_bins) / max(len(pit), 1)) * n_bins
    ax.axhspan(
        1 - band, 1 + band, color="0.5", alpha=0.25, zorder=3, lw=0, label="95% band if uniform"
    )
    ax.axhline(1.0, color="k", lw=1.2, label="uniform")
    ax.set(xlim=(0, 1), xlabel="PIT", ylabel="density", title="Probability integral transform")
    ax.legend(loc="lower center", fontsize="small")
    images.append(
        _image(
            _png(fig),
            "PIT histogram",
            "Uniform when the predictive distributions are calibrated; U shape: "
            "too narrow, hump: too wide, slope: biased.",
            wide=False,
        )
    )
    reliability = None
    if check.reliability is not None and len(check.reliability):
        rel = check.reliability
        fig = Figure(figsize=(5.2, 4.4), layout="constrained")
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="ideal")
        ax.plot(rel["predicted"], rel["observed"], "o-", color="C0", label="binned")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="mean predicted P(y = 1)",
            ylabel="observed share of 1s",
            title="Reliability",
        )
        ax.set_aspect("equal")
        ax.legend(loc="upper left", fontsize="small")
        images.append(
            _image(
                _png(fig),
                "reliability curve",
                "Observed frequency of 1s per bin of predicted probability.",
                wide=False,
            )
        )
        reliability = _frame_table(rel, {"predicted": ".3f", "observed": ".3f"})
    act = check.by_activity.copy()
    act = act.iloc[sorted(range(len(act)), key=lambda i: _activity_key(act["activity"].iat[i]))]
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    labels = [f"{a}\n(n={n})" for a, n in zip(act["activity"], act["n"], strict=True)]
    colors = ["C3" if str(a) == "cold start" else "C0" for a in act["activity"]]
    x = np.arange(len(act))
    ax1.bar(x, act["width_90"], color=colors)
    ax1.set_xticks(x, labels, fontsize="small")
    ax1.set(ylabel="mean width of 90% interval", title="Interval width by user activity")
    ax2.bar(x, act["coverage_90"], color=colors)
    ax2.axhline(0.9, color="k", ls="--", lw=1, label="nominal 0.9")
    ax2.set_xticks(x, labels, fontsize="small")
    ax2.set(ylim=(0, 1.05), ylabel="coverage of 90% interval", title="Coverage by user activity")
    ax2.legend(loc="lower right", fontsize="small")
    images.append(
        _image(
            _png(fig),
            "coverage by activity",
            "Held-out rows grouped by their user's number of training ratings "
            "(terciles) and rows with an id unseen in training (cold start, red); "
            "intervals should widen where data are scarce and keep their "
            "coverage.",
        )
    )
    return {
        "given": True,
        "summary": summary,
        "coverage": _frame_table(cov, {"nominal": ".2f", "empirical": ".3f", "mean_width": ".4g"}),
        "by_activity": _frame_table(act, {"rmse": ".4f", "coverage_90": ".3f", "width_90": ".4g"}),
        "reliability": reliability,
        "has_cold_start": bool((act["activity"] == "cold start").any()),
        "images": images,
    }


# ------------------------------------------------------------------------------- LOO
def _loo(model: BayesianFM) -> dict[str, Any]:
    try:
        result = metrics.loo(model)
    except ValueError as err:
        return {"error": str(err)}
    k = result["pareto_k"]
    n_bad = int(k.loc[k["label"].isin(["bad", "very bad"]), "count"].sum())
    return {
        "error": "",
        "rows": [
            ("elpd_loo", _num(result["elpd_loo"], ".2f")),
            ("standard error", _num(result["se"], ".2f")),
            ("p_loo (effective number of parameters)", _num(result["p_loo"], ".2f")),
            ("elpd_loo per observation", _num(result["elpd_loo"] / max(result["n"], 1), ".4f")),
            ("observations", _num(int(result["n"]))),
        ],
        "pareto_k": _frame_table(k, {"share": ".1%"}),
        "n_bad": n_bad,
        "n": int(result["n"]),
    }


# ------------------------------------------------------------------------ rendering
def _render(context: dict[str, Any]) -> str:
    source = resources.files("bayesfm").joinpath("templates", TEMPLATE).read_text("utf-8")
    env = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.from_string(source).render(**context)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def report(
    model: BayesianFM,
    X_test: pd.DataFrame | None = None,
    y_test: Any = None,
    path: str | os.PathLike[str] = "report.html",
) -> Path:
    """Write a self-contained HTML report of a fitted model.

    The report has one section per check, each an element with a stable ``id``:

    ``summary``
        Model, features and hyperprior groups, data sizes, inference settings, timings and
        the bayesfm version of the fit.
    ``diagnostics``
        :func:`bayesfm.diagnostics.diagnose`: every non-probe row (warnings highlighted)
        and a summary of the probe cells (the worst ten and the number passing).
    ``traces``
        Trace and rank plots of a handful of identified quantities (rank plots need at
        least two chains, so SVI fits get traces only).
    ``energy``
        NUTS: the energy plot; SVI: the loss curve; Gibbs: the per-draw log-likelihood.
    ``ppc``
        Posterior predictive check of the distribution of the training targets (needs a
        fit with ``store_pointwise=True``).
    ``calibration``
        With ``X_test`` and ``y_test``: :func:`bayesfm.metrics.evaluate`: accuracy,
        interval coverage, PIT, reliability (binary) and coverage by user activity
        including cold-start rows.
    ``loo``
        :func:`bayesfm.metrics.loo`: PSIS-LOO and the Pareto-k counts.

    Plots are embedded as base64 PNG images; the file references no scripts, style sheets
    or network resources. It is written to a temporary file and renamed, so a failure never
    leaves a partial report behind.

    Parameters
    ----------
    model : BayesianFM or BayesianMF
        A fitted estimator (or one restored by :func:`bayesfm.load`).
    X_test : pandas.DataFrame, optional
        Held-out rows; give ``y_test`` with it.
    y_test : array-like, optional
        Targets of ``X_test``.
    path : str or os.PathLike
        The HTML file to write; its folder must exist.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    NotFittedError
        The model is not fitted.
    TypeError
        ``model`` is not a bayesfm estimator, ``X_test`` is not a DataFrame or ``path`` is
        not a path.
    ValueError
        Only one of ``X_test`` and ``y_test`` is given, or they do not match the model.
    FileNotFoundError
        The folder of ``path`` does not exist.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import bayesfm as bfm
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = bfm.report(model, X.tail(100), y[-100:], path=pathlib.Path(tmp) / "report.html")
    ...     print(path.name, "calibration" in path.read_text())
    report.html True
    """
    out, has_test = _validated(model, X_test, y_test, path)
    # held-out evaluation first: it validates X_test / y_test before the slow plots
    check = metrics.evaluate(model, X_test, y_test) if has_test else None
    table = diagnose(model)
    ident = (
        f"{type(model).__name__}(rank={model.spec_.rank}, task={model.task!r}) "
        f"fitted by {model.draws_.method}"
    )
    context = {
        "title": f"bayesfm report: {ident}",
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sections": SECTIONS,
        "summary": _summary(model, X_test),
        "diagnostics": _diagnostics(model, table),
        "traces": _traces(model, table),
        "energy": _energy(model, table),
        "ppc": _ppc(model),
        "calibration": _calibration(check, model.task),
        "loo": _loo(model),
    }
    _write_atomic(out, _render(context))
    return out
