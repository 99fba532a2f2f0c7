"""MovieLens-100K accuracy, calibration, convergence and timing of the core models.

Writes results to ``bench_out/core.json`` (merged across invocations, keyed by run name) and
regenerates the table in ``docs/benchmarks_core.md`` from that file, so every number in the
docs comes from this script.

Usage::

    python -m benchmarks.core_movielens --parts mf_svi mf_nuts fm_svi fm_nuts
    python -m benchmarks.core_movielens --quick          # tiny settings, for CI
    python -m benchmarks.core_movielens --parts mf_nuts --tag gpu   # on a GPU: rows apart
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

from .features import bayesfm_fields, prepare
from .results_io import accelerator, machine_line, prior_label, row_saver, write_lines

PARTS = ("mf_svi", "mf_nuts", "fm_svi", "fm_nuts")
ROOT = Path(__file__).resolve().parents[1]


def _args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=os.environ.get("BAYESFM_ML100K"))
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--splits", nargs="+", default=["ua"])
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--svi-steps", type=int, default=3000)
    p.add_argument(
        "--svi-guide",
        choices=("normal", "lowrank"),
        default="normal",
        help="SVI guide (rows of 'lowrank' are keyed '/lowrank')",
    )
    p.add_argument("--max-tree-depth", type=int, default=8)
    p.add_argument(
        "--parametrization",
        choices=("centered", "noncentered", "entity"),
        default="entity",
        help="NUTS parametrization; rows of one other than 'centered' (the only one before "
        "'entity' became the default) are keyed by its name",
    )
    p.add_argument(
        "--year",
        action="store_true",
        help="FM rows also get the release year (per item), keyed '/year'",
    )
    p.add_argument("--tag", default="", help="suffix of the result keys (e.g. gpu)")
    p.add_argument("--progress", action="store_true", help="show the samplers' progress bars")
    p.add_argument("--quick", action="store_true", help="tiny settings for CI (minutes)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "core.json"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks_core.md"))
    return p.parse_args()


def main() -> None:
    args = _args()
    import jax

    # one CPU device per chain so that chains run in parallel (must precede any computation)
    jax.config.update("jax_num_cpu_devices", max(1, args.chains))
    import arviz as az
    import numpy as np

    import bayesfm as bfm
    from bayesfm.datasets import load_movielens_100k

    data_dir = args.data or str(ROOT.parent / "shared" / "data" / "ml-100k")
    if args.quick:
        args.warmup, args.samples, args.chains, args.svi_steps = 20, 20, 2, 200

    # as documented in benchmarks_core.md; --year adds the release year to the FM rows
    side = bayesfm_fields(bfm, "fm", year=args.year)

    def make(part: str):
        kind, method = part.split("_")
        if method == "nuts":
            inf = bfm.NUTSConfig(
                num_warmup=args.warmup,
                num_samples=args.samples,
                num_chains=args.chains,
                max_tree_depth=args.max_tree_depth,
                parametrization=args.parametrization,
                init_svi_steps=200 if args.quick else 1500,
            )
        else:
            inf = bfm.SVIConfig(
                num_steps=args.svi_steps,
                num_samples=200 if args.quick else 1000,
                guide=args.svi_guide,
            )
        # the pointwise log-likelihood is not used here, and long runs would not fit in memory
        common = dict(
            rank=10,
            inference=inf,
            random_state=0,
            progress_bar=args.progress,
            store_pointwise=False,
        )
        if kind == "mf":
            return bfm.BayesianMF(**common)
        return bfm.BayesianFM(features=bfm.FeatureSpec(side), **common)

    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    save = row_saver(results, out_path, persist=True)
    for part in args.parts:
        for split in args.splits:
            train, test = load_movielens_100k(data_dir, split=split)
            with_year = args.year and part.startswith("fm")
            if with_year:
                train, test = prepare(train, test)
            if args.quick:
                train, test = train.iloc[:3000], test.iloc[:500]
            model = make(part)
            t0 = time.perf_counter()
            model.fit(train, train.rating.to_numpy(float))
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            y = test.rating.to_numpy(float)
            iv90 = model.predict_interval(test, 0.9)
            iv50 = model.predict_interval(test, 0.5)
            predict_s = time.perf_counter() - t0
            latent = model.predict_posterior(test, latent=True).values.reshape(-1, len(test))
            lat_lo, lat_hi = np.quantile(latent, [0.05, 0.95], axis=0)
            t = model.timings_
            compile_s = t.get("svi_compile_s", 0.0) + t.get("nuts_compile_s", 0.0)
            row = {
                "part": part,
                "year": with_year,
                "guide": args.svi_guide if part.endswith("svi") else None,
                "parametrization": args.parametrization if part.endswith("nuts") else None,
                "split": split,
                "n_train": len(train),
                "rmse": float(np.sqrt(np.mean((iv90["mean"] - y) ** 2))),
                "mae": float(np.mean(np.abs(iv90["mean"] - y))),
                "cov50": float(np.mean((y >= iv50.lower) & (y <= iv50.upper))),
                "cov90": float(np.mean((y >= iv90.lower) & (y <= iv90.upper))),
                "width90": float(np.mean(iv90.upper - iv90.lower)),
                "latent_width90": float(np.mean(lat_hi - lat_lo)),
                "sigma": float(model.draws_.samples["sigma"].mean()),
                "fit_s": fit_s,
                "compile_s": compile_s,
                "predict_s": predict_s,
                "timings": {k: v for k, v in t.items() if isinstance(v, float)},
                "device": accelerator() or "cpu",
                "jax": jax.__version__,
                "warmup": args.warmup if part.endswith("nuts") else None,
                "chains": model.draws_.num_chains,
                "draws": model.draws_.num_draws,
            }
            if part.endswith("nuts"):
                probe = test.sample(200, random_state=0)
                lat = model.predict_posterior(probe, latent=True).to_dataset(name="y")
                rhat = az.rhat(lat)["y"].values
                ess = az.ess(lat)["y"].values
                # az.rhat, not az.summary: the summary rounds to 0.01, too coarse for 1.01
                sigma = model.idata_.posterior[["sigma"]]
                st = model.draws_.sample_stats
                row.update(
                    probe_rhat_max=float(rhat.max()),
                    probe_rhat_median=float(np.median(rhat)),
                    probe_ess_min=float(ess.min()),
                    sigma_rhat=float(az.rhat(sigma)["sigma"]),
                    sigma_ess_bulk=float(az.ess(sigma)["sigma"]),
                    divergences=int(st["diverging"].sum()),
                    mean_leapfrog=float(st["n_steps"].mean()),
                    chain_method=t.get("chain_method"),
                )
            lowrank = part.endswith("svi") and args.svi_guide == "lowrank"
            reparam = part.endswith("nuts") and args.parametrization != "centered"
            suffixes = [
                "year" if with_year else "",
                "lowrank" if lowrank else "",
                args.parametrization if reparam else "",
                args.tag,
                "quick" if args.quick else "",
            ]
            key = "/".join([part, split] + [s for s in suffixes if s])
            save(key, row)
    if not args.quick:
        write_doc(results, Path(args.doc))


def _schedule(row: dict) -> str:
    """``chains x (warmup + draws)`` for NUTS rows that record their warmup, else
    ``chains x draws``."""
    if row.get("warmup"):
        return f"{row['chains']} x ({row['warmup']} + {row['draws']})"
    return f"{row['chains']} x {row['draws']}"


def write_doc(results: dict, doc: Path) -> None:
    """Markdown tables from the JSON results (nothing typed by hand)."""
    import jax
    import numpy as np

    import bayesfm

    rows = {k: v for k, v in results.items() if not k.endswith("/quick")}
    for r in rows.values():
        r["label"] = r["part"] + (" + year" if r.get("year") else "")
        r["label"] += " (low-rank guide)" if r.get("guide") == "lowrank" else ""
        # MF has no owned features: its entity and centred models are the same
        if r.get("parametrization") not in (None, "centered") and r["part"].startswith("fm"):
            r["label"] += f" ({r['parametrization']} param.)"
    # rows from other machines (a GPU) name their own jax
    versions = "".join(
        sorted({f"; rows on {r['device']}: jax {r['jax']}" for r in rows.values() if "jax" in r})
    )
    lines = [
        "# Core benchmarks: MovieLens-100K",
        "",
        "Generated by `python -m benchmarks.core_movielens`; do not edit by hand.",
        "",
        f"- date: {date.today().isoformat()}; {machine_line(rows.values())}; "
        f"JAX backend: {jax.default_backend()}",
        f"- bayesfm {bayesfm.__version__}, jax {jax.__version__}" + versions,
        "- rank 10; MF = user + item; FM = + age, gender, occupation (per user), genres (per item);"
        " '+ year' = FM with the release year (per item) too",
        "- times in seconds; compile = JAX tracing + compilation, reported separately from the fit",
        "",
        "| model | split | RMSE | MAE | cov 50% | cov 90% | width 90% | latent width 90% | sigma "
        "| fit s | compile s | predict s | chains x (warmup +) draws | device "
        "| hyperprior (precisions) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(rows):
        r = rows[key]
        lines.append(
            f"| {r['label']} | {r['split']} | {r['rmse']:.4f} | {r['mae']:.4f} | {r['cov50']:.3f} "
            f"| {r['cov90']:.3f} | {r['width90']:.3f} | {r['latent_width90']:.3f} "
            f"| {r['sigma']:.3f} | {r['fit_s']:.0f} | {r['compile_s']:.1f} "
            f"| {r['predict_s']:.1f} | {_schedule(r)} | {r.get('device', 'cpu')} "
            f"| {prior_label(r)} |"
        )
    nuts = {k: v for k, v in rows.items() if "probe_rhat_max" in v}
    if nuts:
        lines += [
            "",
            "NUTS convergence (rank-normalized R-hat; probe = latent predictions, 200 test cells)",
            "",
            "| model | split | sigma R-hat | sigma ESS | probe R-hat max | probe R-hat median "
            "| probe ESS min | divergences | mean leapfrog steps | chain method | device |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key in sorted(nuts):
            r = nuts[key]
            lines.append(
                f"| {r['label']} | {r['split']} | {r['sigma_rhat']:.3f} "
                f"| {r['sigma_ess_bulk']:.0f} "
                f"| {r['probe_rhat_max']:.3f} | {r['probe_rhat_median']:.3f} "
                f"| {r['probe_ess_min']:.0f} | {r['divergences']} | {r['mean_leapfrog']:.0f} "
                f"| {r['chain_method']} | {r.get('device', 'cpu')} |"
            )
        lines += [
            "",
            "255 mean leapfrog steps is the cap of `max_tree_depth=8` (2^8 - 1): every FM "
            "iteration hit it, the mark of a posterior with long, narrow directions that a "
            "diagonal mass matrix does not fit (see `bayesfm.ridge` for the flat directions of "
            "the FM likelihood, which the Gibbs sampler crosses with exact moves).",
            "",
            "'entity param.': `NUTSConfig(parametrization='entity')`, the default since "
            "2026-11-27, which samples each user and item that owns features as its total "
            "(see `bayesfm.priors`); unmarked NUTS rows are centred. For MF the two are the "
            "same model.",
        ]
    folds = {}
    for r in rows.values():
        if r["split"] in {"u1", "u2", "u3", "u4", "u5"}:
            folds.setdefault((r["label"], r.get("device", "cpu")), []).append(r["rmse"])
    if folds:
        lines += ["", "| model | device | folds | mean RMSE u1-u5 | sd |", "|---|---|---|---|---|"]
        for (part, device), v in sorted(folds.items()):
            lines.append(f"| {part} | {device} | {len(v)} | {np.mean(v):.4f} | {np.std(v):.4f} |")
    write_lines(doc, lines)


if __name__ == "__main__":
    main()
