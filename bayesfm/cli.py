"""The ``bayesfm`` command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayesfm`` command."""
    parser = argparse.ArgumentParser(prog="bayesfm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit a small synthetic problem and print intervals")
    demo.add_argument("--inference", choices=["svi", "nuts", "gibbs"], default="svi")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
