"""The benchmark suite: bayesfm against myFM and Surprise on MovieLens-100K, side by side.

Parts:

- ``accuracy``: every system on the same splits in the same run (ua and u1-u5): RMSE, MAE,
  mean test log predictive density, 50%/90% interval coverage and width, fit and predict
  wall time (JAX compilation reported apart), and the ratio of bayesfm's fit time to myFM's
  measured in the same run on the same split.
- ``coldstart``: 10% of the items held out entirely (seeded); RMSE and coverage on their
  ratings for MF (which can only fall back to the prior) against FM with side features.
- ``scaling``: synthetic ratings, N = 1e4, 1e5, 1e6 (and 1e7 with ``--large``): time per
  Gibbs sweep and per SVI step, time per 1,000 predictions and peak resident memory, each N
  in its own process.

Results are merged into ``benchmarks/results/suite.json`` (keyed by part, system and split)
and ``docs/benchmarks.md`` is regenerated from that file, so no number in it is typed by
hand. myFM and Surprise come from the ``bench`` extra; a system whose library is missing is
skipped with a message.

Usage::

    python -m benchmarks.suite --all              # every part at full size (hours on 2 cores)
    python -m benchmarks.suite --parts accuracy --splits ua u1 --systems bayesfm/mf/gibbs myfm/mf
    python -m benchmarks.suite --parts accuracy --splits u1 u2 u3 u4 u5 \\
        --systems myfm/mf bayesfm/mf/nuts --nuts-splits u1 u2 u3 u4 u5 --cpu-devices 2
                                                  # NUTS on the folds, chains one per core
    python -m benchmarks.suite --quick            # every part, tiny (< 2 minutes); CI runs it
                                                  # (XLA optimizations off: benchmarks/smoke.py)
    python -m benchmarks.suite --doc-only         # rewrite docs/benchmarks.md from the results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from scipy.stats import norm

from .features import FEATURES, bayesfm_fields, myfm_design, prepare
from .results_io import machine_counts, prior_counts, row_saver, this_machine, write_lines
from .smoke import SMOKE_ENV, compile_for_smoke_run

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("accuracy", "coldstart", "scaling")
SPLITS = ("ua", "u1", "u2", "u3", "u4", "u5")
SYSTEMS = (
    "bayesfm/mf/gibbs",
    "bayesfm/mf/svi",
    "bayesfm/mf/nuts",
    "bayesfm/fm/gibbs",
    "bayesfm/fm/svi",
    "bayesfm/fm/nuts",
    "bayesfm/fm_full/gibbs",
    "bayesfm/fm_full/svi",
    "bayesfm/fm_full/nuts",
    "myfm/mf",
    "myfm/fm",
    "myfm/fm_full",
    "surprise/svd",
    "surprise/svdpp",
)
# quick mode: every adapter and code path once (JAX compilation sets its time, not the data)
QUICK_SYSTEMS = (
    "bayesfm/mf/gibbs",
    "bayesfm/fm_full/svi",
    "myfm/mf",
    "myfm/fm",
    "myfm/fm_full",
    "surprise/svd",
    "surprise/svdpp",
)
# NUTS needs tens of minutes per fit here, so by default it runs on ua only
NUTS_SPLITS = ("ua",)
# fm_full under NUTS did not finish 4 x (300 + 300) iterations in 2.3 hours here (every
# iteration hits the tree-depth limit), so it runs a shorter schedule, stated in the doc
NUTS_SHORT = {"fm_full": dict(num_chains=2, num_warmup=200, num_samples=100, max_tree_depth=7)}
# on the folds u1-u5, every NUTS system runs this shorter schedule (5 fits each): with
# ``--cpu-devices 2`` its two chains run in parallel, one per core
NUTS_FOLDS = dict(num_chains=2, num_warmup=200, num_samples=100)


@dataclass
class Settings:
    """Inference settings of one run (full size or quick)."""

    sweeps: int = 200
    kept: int = 100
    svi_steps: int = 3000
    svi_draws: int = 1000
    nuts_chains: int = 4
    nuts_warmup: int = 300
    nuts_samples: int = 300
    nuts_init_svi: int = 1500
    rows: int | None = None  # truncate train/test (quick mode)
    # Gibbs chains of bayesfm; myFM runs as many chains (seeds 0, 1, ...) one after the
    # other and pools their kept samples
    chains: int = 1

    @classmethod
    def quick(cls) -> Settings:
        return cls(10, 5, 100, 50, 1, 5, 5, 50, rows=1500)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=os.environ.get("BAYESFM_ML100K"))
    p.add_argument("--all", action="store_true", help="every part, system and split")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=None)
    p.add_argument("--splits", nargs="+", choices=SPLITS, default=None)
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=None)
    p.add_argument("--nuts-splits", nargs="+", choices=SPLITS, default=list(NUTS_SPLITS))
    p.add_argument("--scaling-n", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    p.add_argument("--large", action="store_true", help="add N = 1e7 to the scaling part")
    p.add_argument(
        "--scaling-methods", nargs="+", choices=SCALING_METHODS, default=list(SCALING_METHODS)
    )
    p.add_argument(
        "--scaling-n-2dev",
        nargs="*",
        type=int,
        default=[100_000, 1_000_000],
        help="sizes also run with the rows split over two host devices",
    )
    p.add_argument(
        "--cpu-devices",
        type=int,
        default=1,
        help="CPU devices JAX exposes (NUTS then runs up to that many chains in parallel)",
    )
    p.add_argument("--quick", action="store_true", help="tiny settings for CI (no doc)")
    p.add_argument("--doc-only", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "suite.json"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    return p.parse_args()


# --------------------------------------------------------------------------- data
def load_split(data_dir: str | None, split: str, rows: int | None):
    """``(train, test)`` of a MovieLens-100K split, or a synthetic stand-in in quick mode
    when the data is absent (so that CI on a machine without it still runs every script)."""
    from bayesfm.datasets import load_movielens_100k

    if data_dir and Path(data_dir, "u.data").exists():
        train, test = load_movielens_100k(data_dir, split=split)
    elif rows is not None:
        train, test = synthetic_movielens(seed=SPLITS.index(split))
    else:
        raise SystemExit(f"--data: MovieLens-100K not found at {data_dir!r}")
    if rows is not None:
        train, test = train.iloc[:rows].copy(), test.iloc[: max(rows // 5, 50)].copy()
    return prepare(train.reset_index(drop=True), test.reset_index(drop=True))


def synthetic_movielens(seed: int, n: int = 3000):
    """A MovieLens-shaped synthetic table (quick mode without the data)."""
    from bayesfm.datasets import make_synthetic

    d = make_synthetic(n_users=80, n_items=60, n_obs=n, rank=2, seed=seed)
    rng = np.random.default_rng(seed)
    X = d.X.assign(
        rating=np.clip(np.round(d.y), 1, 5),
        gender=np.where(d.X["age"] % 2 == 0, "M", "F"),
        year=d.X["item_id"].str[1:].astype(float) % 40 + 1950,
        timestamp=890_000_000 + rng.integers(0, 30, len(d.X)) * 86_400,
    )
    cut = int(0.8 * len(X))
    return X.iloc[:cut], X.iloc[cut:]


# ------------------------------------------------------------------------- systems
def bayesfm_model(bfm, features: str, method: str, s: Settings, seed: int = 0, split: str = "ua"):
    if method == "gibbs":
        inf = bfm.GibbsConfig(num_warmup=s.sweeps - s.kept, num_samples=s.kept, num_chains=s.chains)
    elif method == "svi":
        inf = bfm.SVIConfig(num_steps=s.svi_steps, num_samples=s.svi_draws)
    else:
        schedule = dict(
            num_warmup=s.nuts_warmup, num_samples=s.nuts_samples, num_chains=s.nuts_chains
        )
        if s.rows is None:  # full size
            if split != "ua":
                schedule.update(NUTS_FOLDS)
            schedule.update(NUTS_SHORT.get(features, {}))
        inf = bfm.NUTSConfig(**schedule, init_svi_steps=s.nuts_init_svi)
    common = dict(rank=10, inference=inf, random_state=seed, progress_bar=False)
    if features == "mf":
        return bfm.BayesianMF(**common)
    task = "ordinal" if features == "fm_full" else "regression"
    fields = bayesfm_fields(bfm, features)
    return bfm.BayesianFM(features=bfm.FeatureSpec(fields), task=task, **common)


def run_bayesfm(bfm, system: str, train, test, s: Settings, split: str = "ua") -> dict:
    _, features, method = system.split("/")
    model = bayesfm_model(bfm, features, method, s, split=split)
    y_train = train["rating"].to_numpy(float)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence is the subject of other pages
        model.fit(train, y_train)
    fit_s = time.perf_counter() - t0
    t = model.timings_
    compile_s = sum(v for k, v in t.items() if k.endswith("compile_s"))
    # sampling or optimization alone: without compilation, InferenceData and diagnostics
    sample_s = sum(v for k, v in t.items() if k.endswith("total_s")) - compile_s
    y = test["rating"].to_numpy(float)
    t0 = time.perf_counter()
    iv90 = model.predict_interval(test, 0.9)
    predict_s = time.perf_counter() - t0
    iv50 = model.predict_interval(test, 0.5)
    return {
        "mean": iv90["mean"].to_numpy(),
        "intervals": {
            0.5: (iv50["lower"].to_numpy(), iv50["upper"].to_numpy()),
            0.9: (iv90["lower"].to_numpy(), iv90["upper"].to_numpy()),
        },
        "mlpd": float(model.score(test, y)),
        "fit_s": fit_s,
        "compile_s": compile_s,
        "sample_s": sample_s,
        "predict_s": predict_s,
        "draws": model.draws_.num_chains * model.draws_.num_draws,
        "schedule": _schedule(model),
    }


def _schedule(model) -> str:
    """The inference schedule a fit ran, as the doc states it."""
    cfg = model.inference
    if not hasattr(cfg, "max_tree_depth"):
        return ""
    return (
        f"{cfg.num_chains} x ({cfg.num_warmup} + {cfg.num_samples}), "
        f"tree depth <= {cfg.max_tree_depth}, "
        f"{model.timings_.get('chain_method', cfg.chain_method)} chains"
    )


def run_myfm(system: str, train, test, s: Settings) -> dict:
    import myfm

    features = system.split("/")[1]
    x_tr, x_te, rel_tr, rel_te, shapes = myfm_design(train, test, features)
    ordinal = features == "fm_full"
    y_train = train["rating"].to_numpy()
    if ordinal:  # classes 0..4 for the 1..5 stars, as myFM's ordered probit wants
        y_train = (y_train - 1).astype(np.int32)
    else:
        y_train = y_train.astype(float)
    fit_s, fms = 0.0, []
    for seed in range(s.chains):  # one chain per seed, one after the other
        model = myfm.MyFMOrderedProbit if ordinal else myfm.MyFMRegressor
        fm = model(rank=10, random_seed=seed)
        t0 = time.perf_counter()
        fm.fit(
            x_tr,
            y_train,
            X_rel=rel_tr,
            n_iter=s.sweeps,
            n_kept_samples=s.kept,
            group_shapes=shapes,
        )
        fit_s += time.perf_counter() - t0
        fms.append(fm)
    y = test["rating"].to_numpy(float)
    t0 = time.perf_counter()
    if ordinal:
        # each run's average over its kept samples; the runs keep as many samples each
        proba = np.mean([fm.predict_proba(x_te, rel_te) for fm in fms], axis=0)
        stars = np.arange(1, proba.shape[1] + 1)
        mean = proba @ stars
        predict_s = time.perf_counter() - t0
        lpd = np.log(np.clip(proba[np.arange(len(y)), y.astype(int) - 1], 1e-300, None))
        # central interval of whole stars: inverted-CDF quantiles of the predictive
        # distribution, as bayesfm's ordinal intervals
        cdf = np.cumsum(proba, axis=1)
        intervals = {
            p: tuple(
                stars[np.minimum((cdf < q).sum(axis=1), len(stars) - 1)]
                for q in ((1 - p) / 2, (1 + p) / 2)
            )
            for p in (0.5, 0.9)
        }
        draws = sum(len(fm.predictor_.samples) for fm in fms)
    else:
        mean = np.mean([fm.predict(x_te, rel_te) for fm in fms], axis=0)
        predict_s = time.perf_counter() - t0
        # the predictive distribution from the kept samples and their noise precisions
        eta = np.stack(
            [sample.predict_score(x_te, rel_te) for fm in fms for sample in fm.predictor_.samples]
        )
        alpha = np.concatenate(
            [fm.get_hyper_trace()["alpha"].to_numpy()[-len(fm.predictor_.samples) :] for fm in fms]
        )
        sd = 1.0 / np.sqrt(alpha)[:, None]
        lpd = logsumexp(norm.logpdf(y[None], eta, sd), axis=0) - np.log(len(eta))
        rng = np.random.default_rng(0)
        pred_draws = eta + sd * rng.standard_normal(eta.shape)
        intervals = {
            p: tuple(np.quantile(pred_draws, [(1 - p) / 2, (1 + p) / 2], 0)) for p in (0.5, 0.9)
        }
        draws = len(eta)
    return {
        "mean": mean,
        "intervals": intervals,
        "mlpd": float(lpd.mean()),
        "fit_s": fit_s,
        "compile_s": 0.0,
        "predict_s": predict_s,
        "draws": draws,
    }


def run_surprise(system: str, train, test, s: Settings) -> dict:
    from surprise import SVD, Dataset, Reader, SVDpp

    algo = {"svd": SVD, "svdpp": SVDpp}[system.split("/")[1]](random_state=0)
    data = Dataset.load_from_df(
        train[["user_id", "item_id", "rating"]], Reader(rating_scale=(1, 5))
    )
    t0 = time.perf_counter()
    algo.fit(data.build_full_trainset())
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    mean = np.array(
        [algo.predict(u, i).est for u, i in zip(test.user_id, test.item_id, strict=True)]
    )
    predict_s = time.perf_counter() - t0
    return {"mean": mean, "fit_s": fit_s, "compile_s": 0.0, "predict_s": predict_s}


def run_system(bfm, system: str, train, test, s: Settings, split: str = "ua") -> dict:
    """Fit one system and score its predictions on ``test``."""
    import jax

    lib = system.split("/")[0]
    if lib == "bayesfm":
        out = run_bayesfm(bfm, system, train, test, s, split)
        # free compiled programs: dozens of fits in one process otherwise exhaust the
        # memory maps the kernel allows (vm.max_map_count)
        jax.clear_caches()
    elif lib == "myfm":
        out = run_myfm(system, train, test, s)
    else:
        out = run_surprise(system, train, test, s)
    y = test["rating"].to_numpy(float)
    row = {
        "system": system,
        "rmse": float(np.sqrt(np.mean((out["mean"] - y) ** 2))),
        "mae": float(np.mean(np.abs(out["mean"] - y))),
        "mean_prediction": float(np.mean(out["mean"])),
        "fit_s": out["fit_s"],
        "compile_s": out["compile_s"],
        "predict_s": out["predict_s"],
        "n_train": len(train),
        "n_test": len(test),
        "machine": this_machine(),
    }
    if "sample_s" in out:
        row["sample_s"] = out["sample_s"]
    if "mlpd" in out:
        row["mlpd"] = out["mlpd"]
        row["draws"] = out["draws"]
    if out.get("schedule"):
        row["schedule"] = out["schedule"]
    for p, (lo, hi) in out.get("intervals", {}).items():
        tag = int(round(100 * p))
        row[f"cov{tag}"] = float(np.mean((y >= lo) & (y <= hi)))
        row[f"width{tag}"] = float(np.mean(hi - lo))
    return row


def available(system: str) -> bool:
    lib = system.split("/")[0]
    module = {"myfm": "myfm", "surprise": "surprise"}.get(lib)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        print(f"skip {system}: {module} is not installed (pip install '.[bench]')", flush=True)
        return False
    return True


# ----------------------------------------------------------------------------- parts
def _add_ratio(row: dict, ref: dict) -> None:
    """Time ratios of a bayesfm row to myFM's row with the same features (same run, split)."""
    row["myfm_fit_s"] = ref["fit_s"]
    row["ratio_excl_compile"] = (row["fit_s"] - row["compile_s"]) / ref["fit_s"]
    row["ratio_incl_compile"] = row["fit_s"] / ref["fit_s"]
    row["ratio_sampling"] = row["sample_s"] / ref["fit_s"]


def part_accuracy(bfm, args, s: Settings, results: dict, save) -> None:
    splits = args.splits or (["ua"] if args.quick else list(SPLITS))
    default = QUICK_SYSTEMS if args.quick else SYSTEMS
    systems = [x for x in (args.systems or default) if available(x)]
    for split in splits:
        train, test = load_split(args.data, split, s.rows)
        rows = {}
        for system in systems:
            if system.endswith("/nuts") and split not in args.nuts_splits and not args.quick:
                continue
            row = run_system(bfm, system, train, test, s, split)
            row["split"] = split
            rows[system] = row
            # each row is saved when it is done (a cut-off run keeps it), with its ratio to
            # myFM as soon as myFM's row with the same features exists in this run
            feats = system.split("/")[1]
            ref = rows.get(f"myfm/{feats}")
            same = [n for n in rows if n.split("/")[1] == feats]
            for name in same if system.startswith("myfm/") else [system]:
                if name.startswith("bayesfm/") and ref is not None:
                    _add_ratio(rows[name], ref)
                save(f"accuracy/{name}/{split}", rows[name])


def cold_start_split(all_ratings: pd.DataFrame, share: float = 0.1, seed: int = 0):
    """Hold out ``share`` of the items entirely: every rating of them goes to the test set."""
    items = np.sort(all_ratings["item_id"].unique())
    rng = np.random.default_rng(seed)
    cold = rng.choice(items, int(round(share * len(items))), replace=False)
    is_cold = all_ratings["item_id"].isin(cold)
    return all_ratings[~is_cold].reset_index(drop=True), all_ratings[is_cold].reset_index(drop=True)


def part_coldstart(bfm, args, s: Settings, results: dict, save) -> None:
    from bayesfm.datasets import load_movielens_100k

    if args.data and Path(args.data, "u.data").exists():
        ratings = load_movielens_100k(args.data, split=None)
    else:
        ratings = pd.concat(synthetic_movielens(seed=0), ignore_index=True)
    if s.rows is not None:
        ratings = ratings.iloc[: 2 * s.rows]
    train, test = prepare(*cold_start_split(ratings))
    y = test["rating"].to_numpy(float)
    user_mean = train.groupby("user_id")["rating"].mean()
    base = test["user_id"].map(user_mean).fillna(train["rating"].mean()).to_numpy()
    save(
        "coldstart/user-mean",
        {
            "system": "user-mean baseline",
            "rmse": float(np.sqrt(np.mean((base - y) ** 2))),
            "n_test": len(test),
            "n_items": int(test["item_id"].nunique()),
            # where an unseen item's prior is centred (a mean over items) against the
            # mean over ratings: the held-out ratings belong to items that got rated
            "train_mean": float(train["rating"].mean()),
            "train_item_mean": float(train.groupby("item_id")["rating"].mean().mean()),
            "test_mean": float(y.mean()),
        },
    )
    systems = ("bayesfm/mf/gibbs", "bayesfm/fm/gibbs", "myfm/mf", "myfm/fm")
    for system in systems[::2] if args.quick else systems:
        if available(system):
            row = run_system(bfm, system, train, test, s)
            row["n_items"] = int(test["item_id"].nunique())
            save(f"coldstart/{system}", row)


SCALING_METHODS = ("gibbs", "svi", "svi_mb")
SCALING_STEPS = {"gibbs": 20, "svi": 50, "svi_mb": 1000}


def _scaling_runs(args) -> list[tuple[int, str, int]]:
    """``(N, method, devices)`` of every scaling run."""
    if args.quick:
        # the script's code path in two processes: Gibbs on two devices (the sharded path)
        # and minibatch SVI; full-batch SVI is the accuracy part's
        return [(10_000, "gibbs", 2), (10_000, "svi_mb", 1)]
    sizes = list(args.scaling_n) + ([10_000_000] if args.large else [])
    runs = [(n, m, 1) for n in sizes for m in args.scaling_methods]
    # rows split over two simulated host devices (data_devices=2); minibatch SVI uses one
    return runs + [
        (n, m, 2) for n in args.scaling_n_2dev for m in args.scaling_methods if m != "svi_mb"
    ]


def _launch_scaling(args, n: int, method: str, devices: int) -> subprocess.Popen:
    """One scaling run in its own process (so that its peak memory is its own)."""
    steps = 2 if args.quick else SCALING_STEPS[method]
    env = dict(os.environ)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    if args.quick:
        env.update(SMOKE_ENV)
    command = ["benchmarks.scaling_run", str(n), method, str(steps), str(devices)]
    return subprocess.Popen(
        [sys.executable, "-m", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def _collect_scaling(proc: subprocess.Popen, n: int, method: str, devices: int, save) -> None:
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        print(stderr[-3000:], flush=True)
        raise SystemExit(f"scaling run n={n} method={method} devices={devices} failed")
    suffix = "" if devices == 1 else f"/{devices}dev"
    save(f"scaling/{method}/{n}{suffix}", json.loads(stdout.strip().splitlines()[-1]))


def part_scaling(bfm, args, s: Settings, results: dict, save) -> None:
    """Each run alone, one after the other, so that each is timed alone."""
    for run in _scaling_runs(args):
        _collect_scaling(_launch_scaling(args, *run), *run, save)


# ------------------------------------------------------------------------------ doc
def _fmt(v, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def _scaling_lines(results: dict, gpu: dict) -> list[str]:
    """The scaling table: CPU columns from ``results``, GPU columns from ``gpu``."""
    scale = {k: v for k, v in results.items() if k.startswith("scaling/")}
    gpu_scale = {k: v for k, v in gpu.items() if k.startswith("scaling/")}
    if not scale and not gpu_scale:
        return []
    gpu_name = gpu.get("machine", {}).get("device", "GPU")
    lines = [
        "",
        "## Scaling on synthetic ratings (MF, rank 10)",
        "",
        "N ratings, N/100 users, N/200 items; each N and method in its own process.",
        "",
        "- per step: wall time of one Gibbs sweep, one full-batch SVI step, or one minibatch",
        "  SVI step (`svi_mb`, 10,000 rows per step), timed over repeated calls of the",
        "  compiled step (compilation excluded). Per epoch: one pass over the N ratings (a",
        "  sweep, a full-batch step, or N / 10,000 minibatch steps).",
        "- predictions/s: posterior predictive mean of up to 1,000,000 rows (20 draws).",
        "- peak RSS: the whole process (VmHWM); the GPU columns give the device's own peak.",
        "- `(2 host devices)`: the rows split over two simulated CPU devices",
        "  (`data_devices=2`, `XLA_FLAGS=--xla_force_host_platform_device_count=2`) on the same",
        "  cores; a check of the data-parallel code path more than of a second machine.",
        f"- GPU columns: {gpu_name}; `-` where not measured.",
        "",
        "| N | method | per step s | per epoch s | epoch us per rating | predictions/s "
        "| compile s | peak RSS MiB | GPU per step s | GPU per epoch s | GPU predictions/s "
        "| GPU peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def order(key: str) -> tuple:
        parts = key.split("/")
        return (SCALING_METHODS.index(parts[1]), len(parts), int(parts[2]))

    for key in sorted(set(scale) | set(gpu_scale), key=order):
        r, g = scale.get(key, {}), gpu_scale.get(key, {})
        parts = key.split("/")
        n = int(parts[2])
        label = parts[1] + (f" ({parts[3][0]} host devices)" if len(parts) > 3 else "")
        if r.get("update"):
            label += f" ({r['update']})"
        epoch = r.get("per_epoch_s", r.get("per_step_s"))
        lines.append(
            f"| {n:,} | {label} | {_fmt(r.get('per_step_s'), '.4f')} "
            f"| {_fmt(epoch, '.4f')} "
            f"| {_fmt(None if epoch is None else 1e6 * epoch / n, '.3f')} "
            f"| {_fmt(r.get('predictions_per_s'), ',.0f')} | {_fmt(r.get('compile_s'), '.1f')} "
            f"| {_fmt(r.get('peak_rss_mib'), '.0f')} | {_fmt(g.get('per_step_s'), '.4f')} "
            f"| {_fmt(g.get('per_epoch_s'), '.4f')} | {_fmt(g.get('predictions_per_s'), ',.0f')} "
            f"| {_fmt(g.get('device_peak_mib'), '.0f')} |"
        )
    lines += _linearity_lines(scale)
    lines += _note_lines(scale)
    if gpu.get("machine", {}).get("note"):
        lines += ["", f"- GPU: {gpu['machine']['note']}"]
    return lines


def _note_lines(rows: dict) -> list[str]:
    """One bullet per distinct ``note`` of the result rows, naming the rows it applies to."""
    notes = sorted({r["note"] for r in rows.values() if r.get("note")})
    lines = [""] if notes else []
    for note in notes:
        keys = ", ".join(k.split("/", 1)[1] for k in sorted(rows) if rows[k].get("note") == note)
        lines.append(f"- {keys}: {note}.")
    return lines


def _linearity_lines(scale: dict) -> list[str]:
    """How far each method's epoch time and memory are from linear in N (one device)."""
    lines = ["", "How the cost grows with N (one device, smallest to largest N measured):", ""]
    for method in SCALING_METHODS:
        rows = sorted(
            (int(k.split("/")[2]), v)
            for k, v in scale.items()
            if k.split("/")[1] == method
            and len(k.split("/")) == 3
            and v.get("per_epoch_s") is not None
        )
        if len(rows) < 2:
            continue
        (n0, r0), (n1, r1) = rows[0], rows[-1]
        us0, us1 = (1e6 * r["per_epoch_s"] / n for n, r in ((n0, r0), (n1, r1)))
        lines.append(
            f"- {method}: epoch time per rating {us0:.3f} us at N = {n0:,} and {us1:.3f} us at "
            f"{n1:,} (x{us1 / us0:.2f} for x{n1 // n0:,} the ratings; linear would be x1); "
            f"peak RSS {r0['peak_rss_mib']:,.0f} to {r1['peak_rss_mib']:,.0f} MiB."
        )
    lines += [
        "",
        "Where it is not linear: a minibatch step (`svi_mb`) updates the parameters of every",
        "user and item its batch touches (a fresh Gaussian draw, the KL and an Adam step for",
        "each), so its cost follows the batch plus the distinct levels in it. A batch of",
        "10,000 ratings touches all 1,500 levels at N = 1e5 but about 19,000 at N = 1e7, so",
        "the step grows until the batch's distinct levels saturate near twice the batch size;",
        "from there on the cost per rating is flat apart from cache misses in the",
        "gathers and scatters as the tables outgrow the cache. The step uses dense passes",
        "while users + items are at most 4 x the batch (O(batch + levels)) and gathers only",
        "the touched rows above that (O(batch)); no operation in the compiled step touches a",
        "whole table then. Gibbs and full-batch SVI are O(N) per pass; their cost per rating",
        "drifts for the same cache reason. At the smallest N the memory is mostly the",
        "compiled programs.",
    ]
    return lines


def _gpu_accuracy_lines(gpu: dict) -> list[str]:
    """ua on the GPU machine, with myFM on that machine's CPU for the time ratio."""
    acc = {k: v for k, v in gpu.items() if k.startswith("accuracy/") and k.endswith("/ua")}
    if not acc:
        return []
    m = gpu.get("machine", {})
    lines = [
        "",
        f"## GPU: split ua on {m.get('device', 'a GPU')}",
        "",
        f"bayesfm on the GPU (jax {m.get('jax', '?')}, numpyro {m.get('numpyro', '?')}, "
        f"{m.get('date', '?')}); myFM on the same machine's CPU ({m.get('cpu_cores', '?')} "
        "cores), same settings as above. `sampling s` is the fit time minus the compile time",
        "JAX reports, which is rough when compilation dominates the fit as it does here.",
        "",
        "| system | RMSE | LPD | cov 90% | fit s | compile s | sampling s | ratio sampling "
        "| ratio incl. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        r = acc.get(f"accuracy/{system}/ua")
        if r is None:
            continue
        lines.append(
            f"| {system} | {r['rmse']:.4f} | {_fmt(r.get('mlpd'), '.4f')} "
            f"| {_fmt(r.get('cov90'), '.3f')} | {r['fit_s']:.1f} | {r['compile_s']:.1f} "
            f"| {_fmt(r.get('sample_s'), '.2f')} | {_fmt(r.get('ratio_sampling'), '.3f')} "
            f"| {_fmt(r.get('ratio_incl_compile'), '.2f')} |"
        )
    return lines + _note_lines(acc)


def _nuts_schedule_lines(acc: dict) -> list[str]:
    """One bullet per NUTS system: the schedule each of its splits ran."""
    lines = []
    for system in (x for x in SYSTEMS if x.endswith("/nuts")):
        by_schedule: dict[str, list[str]] = {}
        for key in sorted(k for k in acc if k.startswith(f"accuracy/{system}/")):
            row = acc[key]
            by_schedule.setdefault(row.get("schedule") or _legacy_schedule(system), []).append(
                row["split"]
            )
        runs = "; ".join(f"{', '.join(sp)}: {sch}" for sch, sp in by_schedule.items())
        if runs:
            lines.append(f"  - `{system}`: {runs}")
    return lines


def _legacy_schedule(system: str) -> str:
    """The schedule of a row saved before rows recorded it: ua, one CPU device."""
    from bayesfm import NUTSConfig

    s = Settings()
    cfg = dict(num_chains=s.nuts_chains, num_warmup=s.nuts_warmup, num_samples=s.nuts_samples)
    cfg.update(NUTS_SHORT.get(system.split("/")[1], {}))
    depth = cfg.get("max_tree_depth", NUTSConfig().max_tree_depth)
    return (
        f"{cfg['num_chains']} x ({cfg['num_warmup']} + {cfg['num_samples']}), "
        f"tree depth <= {depth}, sequential chains"
    )


def write_doc(results: dict, doc: Path, gpu: dict | None = None) -> None:
    """``docs/benchmarks.md`` from the JSON results (nothing typed by hand).

    ``gpu`` holds the results of ``benchmarks/gpu.sh`` (``benchmarks/results/suite_gpu.json``).
    """
    import jax

    import bayesfm

    versions = []
    for lib in ("myfm", "surprise"):
        try:
            versions.append(f"{lib} {__import__(lib).__version__}")
        except (ImportError, AttributeError):
            versions.append(f"{lib} not installed")
    acc = {k: v for k, v in results.items() if k.startswith("accuracy/")}
    lines = [
        "# Benchmarks: bayesfm against myFM and Surprise on MovieLens-100K",
        "",
        "Generated by `python -m benchmarks.suite`; do not edit by hand.",
        "",
        f"- date: {date.today().isoformat()}; machine of this page's last run: {this_machine()}, "
        f"JAX backend {jax.default_backend()}. The rows come from runs"
        " over several sessions on 2-core machines of the same kind (the CPU model has"
        f" varied; rows per recorded machine: {machine_counts(results.values())};"
        f" bayesfm rows per hyperprior: {prior_counts(results.values())});"
        " ratios to myFM are always from one run on one machine"
        + (
            f"; GPU columns from {gpu['machine']['device']} (`benchmarks/gpu.sh`)"
            if gpu and "machine" in gpu
            else " (no GPU column: no GPU was used)"
        ),
        f"- bayesfm {bayesfm.__version__}, jax {jax.__version__}, {', '.join(versions)}",
        "- rank 10 for every factorization model. Features: "
        + "; ".join(f"`{k}` = {v}" for k, v in FEATURES.items()),
        "- settings: Gibbs (bayesfm and myFM) 200 sweeps, the last 100 kept, one chain; SVI 3000",
        "  steps, mean-field, 1000 draws; NUTS after a 1500-step SVI initialization, with",
        "  chains x (warmup + draws) as listed below (tens of minutes per fit on this",
        "  machine, so fewer iterations on the five folds; the full schedule of `fm_full` did",
        "  not finish in 2.3 hours, since every iteration hits the tree-depth limit):",
        *_nuts_schedule_lines(acc),
        "- `fm_full` uses the ordered probit; its Gibbs sampler draws the latent utilities",
        "  (Albert–Chib) and the cutpoints by slice sampling with the utilities integrated out.",
        "- LPD = mean test log predictive density (higher is better); coverage of central",
        "  predictive intervals; Surprise gives point predictions only. myFM's predictive",
        "  distribution is built from its kept samples and noise precisions; for `fm_full`",
        "  myFM runs its ordered probit (`MyFMOrderedProbit`) on relation blocks (one per",
        "  user and one per item, holding the entity's attributes and implicit set; Rendle",
        "  2013), and its class probabilities are averaged over the kept samples. `mf` and",
        "  `fm` reach myFM as a flat sparse design. A test rating on a day absent from the",
        "  training data gets no day effect in myFM; bayesfm draws that day from its group's",
        "  prior.",
        "- `fm_full` predicts star classes: its RMSE is of E[class], and its intervals are sets",
        "  of whole stars, so their coverage exceeds the nominal level by construction. Its LPD",
        "  is a log probability of the observed star, not a log density, so it cannot be",
        "  compared with the LPD of the Gaussian rows.",
        "- one Gibbs chain with 100 kept sweeps explores less of the posterior than the 4-chain",
        "  runs of [benchmarks_gibbs.md](benchmarks_gibbs.md), and its intervals are narrower.",
        "- ratio = bayesfm fit time / myFM fit time with the same features, same run, same",
        "  split (< 1: bayesfm faster). `incl.`: the whole `fit`; `excl.`: without JAX",
        "  compilation but with building InferenceData (pointwise log-likelihood, posterior",
        "  predictive) and the convergence checks, which myFM does not do; `sampling`: the",
        "  sampler or optimizer alone (recorded from this version of the script on).",
        "",
        "## Accuracy and calibration, split ua",
        "",
        "| system | RMSE | MAE | LPD | cov 50% | width 50% | cov 90% | width 90% | fit s "
        "| compile s | predict s | ratio sampling | ratio excl. | ratio incl. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        r = acc.get(f"accuracy/{system}/ua")
        if r is None:
            continue
        lines.append(
            f"| {system} | {r['rmse']:.4f} | {r['mae']:.4f} | {_fmt(r.get('mlpd'), '.4f')} "
            f"| {_fmt(r.get('cov50'), '.3f')} | {_fmt(r.get('width50'), '.3f')} "
            f"| {_fmt(r.get('cov90'), '.3f')} "
            f"| {_fmt(r.get('width90'), '.3f')} | {r['fit_s']:.1f} | {r['compile_s']:.1f} "
            f"| {r['predict_s']:.2f} | {_fmt(r.get('ratio_sampling'), '.2f')} "
            f"| {_fmt(r.get('ratio_excl_compile'), '.2f')} "
            f"| {_fmt(r.get('ratio_incl_compile'), '.2f')} |"
        )
    missing = [x for x in SYSTEMS if f"accuracy/{x}/ua" not in acc]
    if missing:
        lines += ["", f"Not in the results file yet (no run recorded): {', '.join(missing)}."]
    lines += [
        "",
        "## Five folds u1-u5: mean (sd) over folds",
        "",
        "| system | folds | RMSE | MAE | LPD | cov 50% | width 50% | cov 90% | width 90% "
        "| fit s | compile s | predict s | ratio sampling | ratio excl. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for system in SYSTEMS:
        rows = [acc[k] for k in (f"accuracy/{system}/u{i}" for i in range(1, 6)) if k in acc]
        if not rows:
            continue

        def ms(key: str, spec: str, rows=rows) -> str:
            vals = [r[key] for r in rows if r.get(key) is not None]
            if not vals:
                return "-"
            sd = np.std(vals, ddof=1) if len(vals) > 1 else 0.0
            return f"{format(np.mean(vals), spec)} ({format(sd, spec)})"

        lines.append(
            f"| {system} | {len(rows)} | {ms('rmse', '.4f')} | {ms('mae', '.4f')} "
            f"| {ms('mlpd', '.4f')} | {ms('cov50', '.3f')} | {ms('width50', '.3f')} "
            f"| {ms('cov90', '.3f')} | {ms('width90', '.3f')} | {ms('fit_s', '.1f')} "
            f"| {ms('compile_s', '.1f')} | {ms('predict_s', '.2f')} "
            f"| {ms('ratio_sampling', '.2f')} | {ms('ratio_excl_compile', '.2f')} |"
        )
    lines += _note_lines(acc)
    cold = {k: v for k, v in results.items() if k.startswith("coldstart/")}
    if cold:
        any_row = next(iter(cold.values()))
        lines += [
            "",
            "## Cold start: 10% of the items held out entirely",
            "",
            f"Every rating of {any_row['n_items']} randomly chosen items (seed 0) is held out "
            f"({any_row['n_test']} ratings); the models never see those items. MF can only",
            "fall back to the prior (bayesfm) or to the user bias (myFM); FM also knows the",
            "items' genres and release year. Gibbs, 200 sweeps, 100 kept.",
            "",
            "| system | RMSE | LPD | cov 90% | width 90% | fit s |",
            "|---|---|---|---|---|---|",
        ]
        for key in sorted(cold):
            r = cold[key]
            lines.append(
                f"| {r['system']} | {r['rmse']:.4f} | {_fmt(r.get('mlpd'), '.4f')} "
                f"| {_fmt(r.get('cov90'), '.3f')} | {_fmt(r.get('width90'), '.3f')} "
                f"| {_fmt(r.get('fit_s'), '.1f')} |"
            )
        base = cold.get("coldstart/user-mean", {})
        if "train_item_mean" in base:
            lines += [
                "",
                "bayesfm draws an unseen item from its group's hierarchical prior, whose mean is",
                "a mean over *items*; the held-out ratings are ratings of items that people",
                "rated, which lean towards popular, better-rated items. Here the training items'",
                f"mean rating averages {base['train_item_mean']:.2f} over items and "
                f"{base['train_mean']:.2f} over ratings, and the held-out ratings average "
                f"{base['test_mean']:.2f}. myFM gives an unseen item no effect, which amounts to",
                "the rating-weighted global mean. Mean prediction on the held-out ratings: "
                + ", ".join(
                    f"{r['system']} {r['mean_prediction']:.2f}"
                    for _, r in sorted(cold.items())
                    if "mean_prediction" in r
                )
                + ".",
            ]
        lines += _note_lines(cold)
    lines += _scaling_lines(results, gpu or {})
    if gpu:
        lines += _gpu_accuracy_lines(gpu)
    lines += [
        "",
        "Other pages: [recommendations](recommendations.md) (top-N strategies),",
        "[NUTS diagnostics on MovieLens](diagnostics_movielens.md), the 4-chain convergence",
        "studies of [NUTS and SVI](benchmarks_core.md) and [Gibbs](benchmarks_gibbs.md),",
        "and [longer Gibbs runs](benchmarks_sweeps.md) against myFM at more sweeps.",
    ]
    write_lines(doc, lines)


def main() -> None:
    args = _args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() and not args.quick else {}
    gpu_file = out.with_name("suite_gpu.json")
    gpu = json.loads(gpu_file.read_text()) if gpu_file.exists() and not args.quick else None
    if args.doc_only:
        write_doc(results, Path(args.doc), gpu)
        return
    if args.data is None:
        default = ROOT.parent / "shared" / "data" / "ml-100k"
        args.data = str(default) if default.exists() else None
    import jax

    if args.cpu_devices < 1:
        raise SystemExit(f"--cpu-devices: got {args.cpu_devices}; allowed: an integer >= 1")
    jax.config.update("jax_num_cpu_devices", args.cpu_devices)  # before any computation
    if args.quick:
        compile_for_smoke_run()
    import bayesfm as bfm

    s = Settings.quick() if args.quick else Settings()
    parts = list(PARTS) if (args.all or args.quick or not args.parts) else args.parts

    save = row_saver(results, out, persist=not args.quick)

    t0 = time.perf_counter()
    started = []
    if args.quick:  # the figures do not matter there: scaling runs beside the other parts
        started = [(_launch_scaling(args, *run), run) for run in _scaling_runs(args)]
        parts = [p for p in parts if p != "scaling"]
    for part in parts:
        t_part = time.perf_counter()
        {"accuracy": part_accuracy, "coldstart": part_coldstart, "scaling": part_scaling}[part](
            bfm, args, s, results, save
        )
        print(f"{part} done in {time.perf_counter() - t_part:.0f} s", flush=True)
    for proc, run in started:
        _collect_scaling(proc, *run, save)
    print(f"suite done in {time.perf_counter() - t0:.0f} s", flush=True)
    # quick mode checks the doc writer too, on a scratch file
    doc = Path(tempfile.mkdtemp()) / "benchmarks.md" if args.quick else Path(args.doc)
    write_doc(results, doc, gpu)


if __name__ == "__main__":
    main()
