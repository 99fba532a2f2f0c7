"""The ``bayesfm`` command."""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .compile_cache import ENV_VAR


def _demo(args: argparse.Namespace) -> int:
    import bayesfm as bfm
    from bayesfm.datasets import make_synthetic

    data = make_synthetic(n_users=80, n_items=60, n_obs=2500, rank=3, noise_sd=0.5, seed=0)
    rng = np.random.default_rng(0)
    test = np.zeros(len(data.y), bool)
    test[rng.choice(len(data.y), 500, replace=False)] = True
    spec = bfm.FeatureSpec(
        [
            bfm.Categorical("user_id"),
            bfm.Categorical("item_id"),
            bfm.Categorical("occupation", owner="user_id"),
            bfm.Numeric("age", owner="user_id"),
            bfm.MultiHot("genres", owner="item_id"),
        ]
    )
    inference = {
        "nuts": bfm.NUTSConfig(num_warmup=200, num_samples=200, num_chains=2, init_svi_steps=500),
        "svi": bfm.SVIConfig(num_steps=2000, num_samples=400),
        "gibbs": bfm.GibbsConfig(num_warmup=200, num_samples=300, num_chains=2),
    }[args.inference]
    model = bfm.BayesianFM(rank=3, features=spec, inference=inference, progress_bar=not args.quiet)
    print(f"Synthetic data: {len(data.y)} ratings, {test.sum()} held out; fitting {args.inference}")
    t0 = time.perf_counter()
    model.fit(data.X[~test], data.y[~test])
    fit_s = time.perf_counter() - t0
    iv = model.predict_interval(data.X[test], prob=0.9)
    y = data.y[test]
    rmse = float(np.sqrt(np.mean((iv["mean"] - y) ** 2)))
    cov = float(np.mean((y >= iv.lower) & (y <= iv.upper)))
    sigma = model.draws_.samples["sigma"].ravel()
    shown = data.X[test].iloc[:8][["user_id", "item_id", "occupation", "genres"]].copy()
    shown["rating"] = np.round(y[:8], 2)
    for col in ("mean", "lower", "upper"):
        shown[col] = np.round(iv[col].to_numpy()[:8], 2)
    print(shown.to_string(index=False))
    cold = data.X[test].iloc[:3].copy()
    cold["item_id"] = ["new-a", "new-b", "new-c"]
    civ = model.predict_interval(cold, prob=0.9)
    print("\nCold-start items (drawn from the item group's prior):")
    print(civ.round(2).assign(item_id=cold["item_id"].to_numpy()).to_string(index=False))
    print(
        f"\nheld-out RMSE {rmse:.3f}  90% interval coverage {cov:.3f}  "
        f"sigma {sigma.mean():.3f} (planted {data.noise_sd})  fit {fit_s:.1f} s"
    )
    return 0


def _fit(args: argparse.Namespace) -> int:
    import bayesfm as bfm
    from bayesfm.specs import load_spec

    card = load_spec(args.spec)
    if args.tiny:
        card = card.with_tiny_settings()
    for option, path in (("--out", args.out), ("--report", args.report)):
        _check_writable(option, path)
    X_train, y_train, X_test, y_test = card.load_data(args.data_dir)
    model = card.build_estimator(progress_bar=not args.quiet)
    print(
        f"{card.name}: {card.description or card.estimator}\n"
        f"{card.dataset.name}: {len(X_train)} training rows, {len(X_test)} held out; "
        f"fitting {card.estimator.upper()} rank {card.model['rank']} ({card.task}) by "
        f"{card.method}{' with tiny settings' if args.tiny else ''}",
        flush=True,
    )
    t0 = time.perf_counter()
    model.fit(X_train, y_train)
    fit_s = time.perf_counter() - t0
    metrics = heldout_metrics(model, X_test, y_test)
    shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    print(f"held-out ({len(X_test)} rows): {shown}  fit {fit_s:.1f} s")
    if card.metrics and not args.tiny:
        for run, recorded in card.metrics.items():
            values = "  ".join(f"{k} {v:.4f}" for k, v in recorded.items() if isinstance(v, float))
            print(f"recorded [{run}] {recorded['method']} ({recorded['date']}): {values}")
    if args.out:
        model.save(args.out)
        print(f"wrote {args.out}")
    if args.report:
        bfm.report(model, X_test, y_test, path=args.report)
        print(f"wrote {args.report}")
    return 0


HELDOUT_METRICS = ("rmse", "mae", "mlpd", "coverage_90", "width_90", "auc", "accuracy", "log_loss")


def heldout_metrics(model: Any, X: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    """Held-out metrics of a fitted model, named as in the ``[metrics]`` tables of model cards.

    A subset of :func:`bayesfm.evaluate`'s summary: ``rmse``, ``mae``, ``mlpd`` (mean log
    predictive density), ``coverage_90`` and ``width_90`` of the 90% predictive interval, and
    for classification ``auc`` (binary), ``accuracy`` and ``log_loss``.
    """
    import bayesfm as bfm

    summary = bfm.evaluate(model, X, y).summary
    return {k: float(summary[k]) for k in HELDOUT_METRICS if k in summary}


def _predict(args: argparse.Namespace) -> int:
    import bayesfm as bfm

    if not 0 < args.prob < 1:
        raise _UserError(f"--prob: got {args.prob}; must lie strictly between 0 and 1")
    _check_readable("RUN", args.run)
    _check_readable("INPUT", args.input)
    _check_writable("--out", args.out)
    model = bfm.load(args.run)
    X = read_table(args.input, model)
    iv = model.predict_interval(X, prob=args.prob).reset_index(drop=True)
    if args.out:
        iv.to_csv(args.out, index=False)
        print(f"wrote {len(iv)} predictions ({args.prob:g} intervals) to {args.out}")
    else:
        iv.to_csv(sys.stdout, index=False)
    return 0


def _report(args: argparse.Namespace) -> int:
    import bayesfm as bfm

    _check_readable("RUN", args.run)
    if args.test is not None:
        _check_readable("--test", args.test)
    _check_writable("--out", args.out)
    model = bfm.load(args.run)
    X = y = None
    if args.test is not None:
        X = read_table(args.test, model)
        if args.target not in X.columns:
            raise _UserError(
                f"--target: column {args.target!r} not in {args.test}; its columns are "
                f"{list(X.columns)}"
            )
        y = X.pop(args.target).to_numpy(dtype=np.float64)
    bfm.report(model, X, y, path=args.out)
    print(f"wrote {args.out}")
    return 0


def read_table(path: str, model: Any | None = None) -> pd.DataFrame:
    """Read a CSV file of rows to predict, with column types matched to a fitted model.

    Categorical columns whose training levels were strings are read as strings (so that an
    id such as ``007`` stays ``"007"``); multi-hot cells may be ``sep``-delimited strings
    (``"Action|Comedy"``) or Python tuple/list literals as written by ``DataFrame.to_csv``.
    """
    from bayesfm.data import Categorical, MultiHot

    spec = getattr(getattr(model, "encoder_", None), "spec", None)
    levels = getattr(getattr(model, "encoder_", None), "levels", {})
    dtype: dict[str, Any] = {}
    multihot = []
    for f in getattr(spec, "fields", ()):
        if isinstance(f, Categorical):
            lv = levels.get(f.dim)
            if lv is not None and len(lv) and all(isinstance(v, str) for v in lv):
                dtype[f.column] = str
        elif isinstance(f, MultiHot):
            dtype[f.column] = str
            multihot.append(f.column)
    table = pd.read_csv(path, dtype=dtype or None)
    for column in multihot:
        if column in table.columns:
            table[column] = [_parse_set(v) for v in table[column]]
    return table


def _parse_set(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "([" and value[-1:] in ")]":
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        if isinstance(parsed, list | tuple):
            return tuple(parsed)
    return value


class _UserError(Exception):
    """A mistake in the command line or its files, reported without a traceback."""


def _check_readable(option: str, path: str) -> None:
    if not Path(path).is_file():
        raise _UserError(f"{option}: file {path!r} not found")


def _check_writable(option: str, path: str | None) -> None:
    if path is None:
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise _UserError(f"{option}: folder {str(parent)!r} of {path!r} does not exist")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayesfm`` command.

    Returns 0 on success and 2 on a user error (bad model card, missing file, invalid input),
    which is reported as one line ``bayesfm: error: ...`` on stderr.
    """
    parser = argparse.ArgumentParser(prog="bayesfm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit a small synthetic problem and print intervals")
    demo.add_argument("--inference", choices=["svi", "nuts", "gibbs"], default="svi")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    fit = sub.add_parser(
        "fit",
        help="fit a model card (models/*.toml) and print held-out metrics",
        description="Validate a model card, load its data, fit it and print held-out metrics.",
    )
    fit.add_argument("spec", metavar="SPEC.toml", help="model card")
    fit.add_argument(
        "--data-dir",
        metavar="DIR",
        help="MovieLens-100K folder (holding u.data); default $BAYESFM_ML100K",
    )
    fit.add_argument("--out", metavar="RUN.nc", help="save the fitted model here")
    fit.add_argument("--report", metavar="REPORT.html", help="write an HTML report here")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    fit.add_argument("--tiny", action="store_true", help="tiny settings for smoke tests")
    fit.set_defaults(func=_fit, user_errors=True)

    predict = sub.add_parser(
        "predict",
        help="predictive means and intervals of a saved model for the rows of a CSV file",
        description="Write the columns mean, lower, upper for every row of INPUT.csv.",
    )
    predict.add_argument("run", metavar="RUN.nc", help="model saved by `bayesfm fit --out`")
    predict.add_argument("input", metavar="INPUT.csv", help="rows to predict (with a header)")
    predict.add_argument("--out", metavar="PREDICTIONS.csv", help="default: print to stdout")
    predict.add_argument("--prob", type=float, default=0.9, help="interval probability (0.9)")
    predict.set_defaults(func=_predict, user_errors=True)

    report = sub.add_parser(
        "report",
        help="write the HTML diagnostics report of a saved model",
        description="Write the HTML report of a saved model, optionally with a test set.",
    )
    report.add_argument("run", metavar="RUN.nc", help="model saved by `bayesfm fit --out`")
    report.add_argument("--out", metavar="REPORT.html", default="report.html")
    report.add_argument("--test", metavar="INPUT.csv", help="held-out rows, with the target")
    report.add_argument("--target", default="rating", help="target column of --test (rating)")
    report.set_defaults(func=_report, user_errors=True)

    args = parser.parse_args(argv)
    if os.environ.get(ENV_VAR):
        # opt-in: a later run with the same shapes loads its compiled programs from disk
        from .compile_cache import enable_compilation_cache

        try:
            enable_compilation_cache()
        except ValueError as exc:
            print(f"bayesfm: error: {ENV_VAR}: {exc}", file=sys.stderr)
            return 2
    if not getattr(args, "user_errors", False):
        return args.func(args)
    try:
        return args.func(args)
    except (_UserError, OSError, ValueError, TypeError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"bayesfm: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
