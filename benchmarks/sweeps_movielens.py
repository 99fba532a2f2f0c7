"""Longer Gibbs runs: bayesfm against myFM at more sweeps, on the five folds u1-u5.

The suite fits every Gibbs system for 200 sweeps and keeps the last 100. Both samplers
still gain accuracy after that (myFM's published MovieLens-100K results keep all of 512
sweeps), so this study reruns the FM systems of the suite, same features and same code
(``benchmarks.suite.run_system``), at a longer schedule: both samplers the same sweeps,
one after the other in the same process, so that the time ratio is meaningful. The doc puts
the suite's 200-sweep rows of the same folds beside them.

``--chains n`` runs n Gibbs chains of bayesfm (one program) against n myFM runs with seeds
0 to n - 1 (one after the other); each pools its chains' kept samples.

Writes ``benchmarks/results/sweeps.json`` (merged across invocations, keyed by features,
sweeps, chains and split) and ``docs/benchmarks_sweeps.md``.

Usage::

    python -m benchmarks.sweeps_movielens --sweeps 512 --burn-in 100
    python -m benchmarks.sweeps_movielens --features fm_full --sweeps 512 --burn-in 100 --chains 4
    python -m benchmarks.sweeps_movielens --doc-only
    python -m benchmarks.sweeps_movielens --quick    # tiny smoke run (no doc); CI runs it
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

from .features import FEATURES as FEATURE_TEXT
from .results_io import machine_line, row_saver, write_lines
from .smoke import compile_for_smoke_run
from .suite import Settings, _add_ratio, load_split, run_system

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ("fm", "fm_full")
FOLDS = ("u1", "u2", "u3", "u4", "u5")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=os.environ.get("BAYESFM_ML100K"))
    p.add_argument("--features", nargs="+", choices=FEATURES, default=list(FEATURES))
    p.add_argument("--splits", nargs="+", choices=FOLDS, default=list(FOLDS))
    p.add_argument("--sweeps", type=int, default=512, help="total sweeps of each sampler")
    p.add_argument("--burn-in", type=int, default=100, help="sweeps dropped before keeping")
    p.add_argument(
        "--chains",
        type=int,
        default=1,
        help="bayesfm's Gibbs chains (one program), and myFM's runs (seeds 0, 1, ...)",
    )
    p.add_argument("--quick", action="store_true", help="tiny settings, synthetic if no data")
    p.add_argument("--doc-only", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sweeps.json"))
    p.add_argument("--suite", default=str(ROOT / "benchmarks" / "results" / "suite.json"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks_sweeps.md"))
    args = p.parse_args()
    if args.chains < 1:
        p.error(f"--chains must be >= 1, got {args.chains}")
    if not 0 <= args.burn_in < args.sweeps:
        p.error(
            f"--burn-in must be in [0, --sweeps), got {args.burn_in} with --sweeps {args.sweeps}"
        )
    return args


def main() -> None:
    args = _args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() and not args.quick else {}
    suite_file = Path(args.suite)
    suite = json.loads(suite_file.read_text()) if suite_file.exists() else {}
    if args.doc_only:
        write_doc(results, suite, Path(args.doc))
        return
    import bayesfm as bfm

    if args.data is None:
        default = ROOT.parent / "shared" / "data" / "ml-100k"
        args.data = str(default) if default.exists() else None
    if args.quick:
        # one feature set on one split: the script's own code (every system is the suite's)
        s, args.splits, args.features = Settings.quick(), args.splits[:1], args.features[:1]
        s.chains = args.chains
        compile_for_smoke_run()
    else:
        s = Settings(sweeps=args.sweeps, kept=args.sweeps - args.burn_in, chains=args.chains)

    save = row_saver(results, out, persist=not args.quick)

    for split in args.splits:
        train, test = load_split(args.data, split, s.rows)
        for features in args.features:
            ref = run_system(bfm, f"myfm/{features}", train, test, s)
            row = run_system(bfm, f"bayesfm/{features}/gibbs", train, test, s)
            _add_ratio(row, ref)
            chains = f"/x{s.chains}" if s.chains > 1 else ""
            save(
                f"{features}/{s.sweeps}{chains}/{split}",
                {
                    "features": features,
                    "split": split,
                    "sweeps": s.sweeps,
                    "kept": s.kept,
                    "chains": s.chains,
                    "bayesfm": row,
                    "myfm": ref,
                    # the probit tasks' scale move joined the Gibbs sampler in session 21
                    "probit_scale_move": bfm.gibbs.PROBIT_SCALE_MOVE,
                },
            )
    # quick mode checks the doc writer too, on a scratch file
    doc = Path(tempfile.mkdtemp()) / "sweeps.md" if args.quick else Path(args.doc)
    write_doc(results, suite, doc)


def _suite_rows(suite: dict) -> dict:
    """The suite's Gibbs rows in this study's layout, keyed like it (200 sweeps)."""
    rows = {}
    for features in FEATURES:
        for split in FOLDS:
            b = suite.get(f"accuracy/bayesfm/{features}/gibbs/{split}")
            m = suite.get(f"accuracy/myfm/{features}/{split}")
            if b and m:
                # myFM's row may come from a later suite run than the Gibbs row (the NUTS
                # runs on the folds refit it): show the time this row's ratio was taken against
                m = {**m, "fit_s": b.get("myfm_fit_s", m["fit_s"])}
                rows[f"{features}/200/{split}"] = {
                    "features": features,
                    "split": split,
                    "sweeps": 200,
                    "kept": 100,
                    "bayesfm": b,
                    "myfm": m,
                    "source": "suite",
                    "machine": b.get("machine", "not recorded"),
                }
    return rows


def _sampler(row: dict) -> str:
    """Which Gibbs sampler a row ran, as far as this study's features tell them apart."""
    if row["features"] != "fm_full":
        return "-"
    return "with scale move" if row.get("probit_scale_move") else "before scale move"


def _chains(row: dict) -> int:
    """Chains of a row (rows before the option ran one)."""
    return row.get("chains", 1)


def _mean_sd(values: list[float], spec: str) -> str:
    return f"{np.mean(values):{spec}} ({np.std(values):{spec}})"


def write_doc(results: dict, suite: dict, doc: Path) -> None:
    """``docs/benchmarks_sweeps.md`` from the JSON results (nothing typed by hand)."""
    import jax

    import bayesfm

    try:
        import myfm

        myfm_version = myfm.__version__
    except ImportError:
        myfm_version = "not installed"
    rows = {**_suite_rows(suite), **results}
    lines = [
        "# Longer Gibbs runs: bayesfm against myFM at more sweeps",
        "",
        "Generated by `python -m benchmarks.sweeps_movielens`; do not edit by hand.",
        "",
        f"- date: {date.today().isoformat()}; {machine_line(rows.values())}; "
        f"JAX backend {jax.default_backend()}",
        f"- bayesfm {bayesfm.__version__}, jax {jax.__version__}, myFM {myfm_version}",
        "- rank 10; both samplers run the same sweeps and keep the same last sweeps, one after",
        "  the other in the same process. `chains`: bayesfm's Gibbs chains (all in one",
        "  compiled program) and as many myFM runs (seeds 0, 1, ..., one after the other);",
        "  each pools its chains' kept samples into one posterior predictive. The 200-sweep",
        "  rows are the suite's ([benchmarks.md](benchmarks.md)); the longer runs are this",
        "  script's.",
        *(f"- `{k}`: {v}" for k, v in FEATURE_TEXT.items() if k in FEATURES),
        "- ratio = bayesfm time / myFM time (same run, same split); `sampling`: the sampler",
        "  alone, `incl.`: the whole `fit` with JAX compilation and InferenceData.",
        "",
        "## Mean (sd) over the folds u1-u5",
        "",
        "| features | sweeps (kept) | chains | sampler | folds | bayesfm RMSE | myFM RMSE "
        "| bayesfm cov 90% | myFM cov 90% | bayesfm fit s | myFM fit s | ratio sampling "
        "| ratio incl. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, int, int, str], list[dict]] = {}
    for r in rows.values():
        groups.setdefault((r["features"], r["sweeps"], _chains(r), _sampler(r)), []).append(r)
    for (features, sweeps, chains, sampler), rs in sorted(groups.items()):
        b = [r["bayesfm"] for r in rs]
        m = [r["myfm"] for r in rs]
        lines.append(
            f"| {features} | {sweeps} ({rs[0]['kept']}) | {chains} | {sampler} | {len(rs)} "
            f"| {_mean_sd([x['rmse'] for x in b], '.4f')} "
            f"| {_mean_sd([x['rmse'] for x in m], '.4f')} "
            f"| {np.mean([x['cov90'] for x in b]):.3f} | {np.mean([x['cov90'] for x in m]):.3f} "
            f"| {np.mean([x['fit_s'] for x in b]):.1f} | {np.mean([x['fit_s'] for x in m]):.1f} "
            f"| {_mean_sd([x.get('ratio_sampling', np.nan) for x in b], '.2f')} "
            f"| {_mean_sd([x.get('ratio_incl_compile', np.nan) for x in b], '.2f')} |"
        )
    lines += [
        "",
        "## Per fold",
        "",
        "| features | split | sweeps (kept) | chains | sampler | bayesfm RMSE | myFM RMSE "
        "| bayesfm LPD | myFM LPD | bayesfm s (compile) | myFM s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {k: (r["features"], r["sweeps"], _chains(r), r["split"]) for k, r in rows.items()}
    for key in sorted(rows, key=order.__getitem__):
        r = rows[key]
        b, m = r["bayesfm"], r["myfm"]
        lines.append(
            f"| {r['features']} | {r['split']} | {r['sweeps']} ({r['kept']}) | {_chains(r)} "
            f"| {_sampler(r)} "
            f"| {b['rmse']:.4f} "
            f"| {m['rmse']:.4f} | {b['mlpd']:.4f} | {m['mlpd']:.4f} "
            f"| {b['fit_s']:.1f} ({b['compile_s']:.1f}) | {m['fit_s']:.1f} |"
        )
    lines += [
        "",
        "`fm_full` is the ordered probit: its RMSE is of E[star], its LPD a log probability",
        "of the observed star (not comparable with the Gaussian `fm` rows). `sampler`: whether",
        "bayesfm's Gibbs sampler had the probit tasks' scale move (`bayesfm.probit_scale`),",
        "which joined it in session 21 and changes nothing for the Gaussian `fm` rows.",
    ]
    write_lines(doc, lines)


if __name__ == "__main__":
    main()
