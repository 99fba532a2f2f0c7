"""bayesfm's Gibbs sampler against myFM's, in the same run, on MovieLens-100K.

For each split and feature set, both samplers run the same number of sweeps (rank 10, one
chain) on the same machine, one after the other, so that the time *ratio* is meaningful on a
shared machine. bayesfm's time is reported with and without JAX compilation, and each fit is
repeated with its compiled programs in a persistent compilation cache (a "warm" restart). A separate
4-chain bayesfm run gives the convergence diagnostics (R-hat of sigma, the global bias and the
latent predictions of 200 probe test cells).

Writes ``benchmarks/results/gibbs.json`` (merged across invocations) and
``docs/benchmarks_gibbs.md``. myFM comes from the ``bench`` extra.

Usage::

    python -m benchmarks.gibbs_movielens --splits ua u1 u2 u3 u4 u5
    python -m benchmarks.gibbs_movielens --diagnostics ua   # 4 chains x (200 + 500)
    # the same with plain (not over-relaxed) entity draws, and with a 1,000-sweep warmup
    python -m benchmarks.gibbs_movielens --splits --diagnostics ua --entity-relax 0 --no-myfm
    python -m benchmarks.gibbs_movielens --splits --diagnostics ua --no-rotation --no-myfm
    python -m benchmarks.gibbs_movielens --splits --diagnostics ua --features mf --diag-seed 1 \\
        --no-myfm   # another seed (with and without --no-rotation)
    python -m benchmarks.gibbs_movielens --splits --diagnostics ua --features mf \\
        --diag-warmup 1000 --no-myfm
    # session 25: the factor-mean shifts collapsed over the means (an A/B variant), and a
    # rerun of existing rows on another machine under its own keys
    python -m benchmarks.gibbs_movielens --splits --diagnostics ua --features mf fm \\
        --collapsed-shift --diag-seed 2 --no-myfm
    python -m benchmarks.gibbs_movielens --splits --diagnostics ua --tag rerun --no-myfm
    python -m benchmarks.gibbs_movielens --quick            # CI smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from .features import bayesfm_fields, myfm_design, prepare
from .results_io import machine_line, prior_label, row_saver, write_lines

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ("mf", "fm", "fm_implicit")
# how the 4-chain rows were sampled (the page keeps rows of earlier samplers)
SAMPLER = "ridge moves, entity over-relaxation"
# what the 4-chain rows show about the precision hyperparameters (read from the table above)
PRECISION_NOTE = [
    "What happens to the precision hyperparameters (rows of session 16): in MF, sigma and the "
    "global bias mix (R-hat 1.000-1.003); in FM with the release year, sigma reached 1.02 "
    "with or without over-relaxation. Most probe predictions mix (median R-hat 1.001-1.006), "
    "but each chain settles on its own configuration of factor scales: the factor "
    "precisions, sorted per draw so that the permutation symmetry of the factor dimensions "
    "does not count, disagree between chains (R-hat 1.7-2.4), and so do the linear-weight "
    "precisions of some groups (1.07-1.34). A few probe cells (in MF, popular users with "
    "popular items, whose prediction leans on every active factor) inherit that: their chain "
    "means differ by a fraction of a posterior sd for the whole run, while within a chain "
    "their autocorrelation is gone after about 5-20 sweeps. A 1,000-sweep warmup took the "
    "worst MF probe R-hat from 1.041 to 1.016 but left the precisions unmixed. Over-relaxing "
    "the entity draws lowered the median probe R-hat (MF 1.004 to 1.001, FM 1.006 to 1.002) "
    "and FM's worst (1.119 to 1.054); it does not move the configuration.",
    "",
    "Session 17 added factor rotations (`bayesfm.rotation`): every factor table turned by one "
    "orthogonal matrix, which no prediction sees, drawn by Metropolis with the factor "
    "precisions integrated out. Against the same sampler without them (rows '/norotation', "
    "same code and seeds otherwise, 2-core CPU), the rotations mix what they aim at, the "
    "factor precisions: their raw R-hat median went from 1.85 to 1.04 (MF, seed 0) and from "
    "1.82 to 1.02 (MF, seed 1), the sorted maximum from 2.30 to 1.86 and from 1.70 to 1.22. "
    "The probe cells gain less than that suggests: MF's worst probe R-hat went from 1.041 to "
    "1.011 (smallest probe ESS 71 to 441) with seed 0, but from 1.016 to 1.022 (ESS 260 to "
    "193) with seed 1; FM's sigma R-hat went from 1.024 to 1.001, and its worst probe R-hat "
    "from 1.054 to 1.074 (ESS 49 to 43). MF's sigma R-hat is 1.003 with seed 0 but "
    "1.014-1.018 with seed 1, with or without rotations. So after 200 + 500 sweeps the worst "
    "of 200 cells, and sigma, sit at 1.01-1.02 from one seed to the next: the remaining gap "
    "is the kept draws' effective size (a few hundred for the slowest cells), not chains "
    "stuck apart.",
    "",
    "Session 23 integrated the factor precisions out of MF's scale exchange too "
    "(`bayesfm.exchange`: factor f of every user times c, of every item over c, which no "
    "prediction sees). Given the precisions, that move could only go as far as they allowed, "
    "and the split of each dimension's scale between users and items stayed where each chain "
    "had put it. Against the exchange given the precisions (rows '/uncollapsedexchange', same "
    "code and seeds otherwise, 2-core CPU, both rerun in session 23), the factor precisions "
    "now mix: raw R-hat median 1.051 to 1.004 (seed 0) and 1.035 to 1.004 (seed 1), sorted "
    "maximum 1.86 to 1.009 and 2.02 to 1.006. sigma went from 1.011 to 1.004 (seed 0) and "
    "stayed at 1.011-1.012 (seed 1). The linear-weight precision of the items still mixes "
    "slowly (R-hat 1.08-1.17 either way). The worst of 200 probe predictions went from 1.016 "
    "to 1.032 with seed 0 (smallest probe ESS 385 to 105) and from 1.010 to 1.006 with seed 1 "
    "(696 to 471): no consistent change, and still not below 1.01 for every seed. The session "
    "17 rows of MF above were replaced by these reruns (same keys).",
    "",
    "Session 24 looked at FM the same way. In 4 x (200 + 500) sweeps on ua (seed 0) the chains "
    "disagreed most on things no prediction sees: the ratio of the user side's to the item "
    "side's factor scale (the user, gender, occupation and age tables against the item, genre "
    "and year tables; R-hat 1.85), and how the side's common factor is split between the user "
    "table and the tables of the user's attributes (the mean norm of the gender table 2.22, of "
    "occupation 2.11; the inner product of the user and gender means 2.92). Two moves joined "
    "the sampler: the scale exchange between the two sides (`bayesfm.exchange.side_exchange`) "
    "and a shift of each owned attribute's factor mean against its owner "
    "(`bayesfm.attribute_shift`), both with the factor columns' hyperparameters integrated "
    "out and the entity weights given theirs; the weights take back the change of the "
    "within-side interactions, so every prediction is kept. Against the same code without "
    "them (rows '/nosidemoves', seeds 0 and 1), the worst factor-table mean norm R-hat (the "
    "new column) went from 2.22 to 1.63 and from 2.30 to 1.79, the sorted factor precisions' "
    "from 1.53 to 1.30 and 1.62 to 1.35, the linear-weight precisions' from 1.20 to 1.07 and "
    "1.19 to 1.12, and the worst probe R-hat from 1.109 to 1.085 (smallest ESS 24 to 36) and "
    "from 1.040 to 1.033 (93 to 129). sigma stayed at 1.008 (seed 0) and went from 1.002 to "
    "1.009 (seed 1); w0 went from 1.003 to 1.016 (seed 0) and stayed at 1.001 (seed 1). A "
    "first version that also integrated out the weights' hyperparameters let their means move "
    "freely, and w0 followed slowly (R-hat 1.010 and 1.029, sigma 1.026 and 1.010); it was "
    "not kept. FM's probes are still far from R-hat 1.01, and the gender table's mean is "
    "still the slowest factor-table mean in all four rows (R-hat 1.63 and 1.79 with the "
    "moves): its split against the user table moves, but slowly. The 4-chain fit took 200 "
    "and 195 s with the moves against 174 and 180 s without.",
    "",
    "Session 25 ran on another machine (AMD EPYC, 2 cores) and first reran the shipped "
    "sampler's rows there (keys '/rerun', same code and seeds). The draws are not the same "
    "bit for bit on another CPU, and neither are the worst R-hats: MF seed 0's worst probe "
    "went from 1.032 (Xeon) to 1.011 (EPYC), FM seed 0's w0 from 1.016 to 1.025 and its worst "
    "probe from 1.085 to 1.068. Two more seeds of the shipped sampler (MF seeds 2 and 3, FM "
    "seed 2) put the six MF runs' worst probe R-hat at 1.006-1.032 and sigma's at 1.004-1.011, "
    "the five FM runs' worst probe at 1.033-1.092, sigma's at 1.005-1.011 and w0's at "
    "1.001-1.025. At these ESS (sigma 596-867, smallest probe ESS 28-554) chance alone puts "
    "such values on either side of 1.01 "
    "([How far R-hat strays by chance](benchmarks_rhat_noise.md)): whether one run passes "
    "says little, the ESS says more.",
    "",
    "Session 25 also tried the entity factor-mean shifts (`bayesfm.ridge`) with the means they "
    "move integrated out (rows '/collapsedshift'; `gibbs.COLLAPSED_FACTOR_SHIFT`, off by "
    "default). Given the means, a shift of all users' factors is pinned to about "
    "1 / sqrt(943 lambda) per sweep, and in MF (seed 1) the inner product of the user and item "
    "factor means had an ESS of 13 in 4 x 500 draws (411 collapsed), the largest factor-table "
    "mean norm R-hat was 1.004-1.079 over four seeds (1.004-1.006 collapsed). Where it counts "
    "it did not win: the smallest probe ESS rose in 5 of 7 runs (MF 257, 280, 375, 554 to "
    "103, 546, 675, 811; FM 40, 70, 28 to 154, 36, 63), but FM's sigma ESS fell in all three "
    "(651, 596, 646 to 543, 586, 367; MF 867, 664, 762, 715 to 786, 691, 754, 605), FM's "
    "sorted factor precisions mixed worse (R-hat 1.18-1.24 to 1.27-1.37), and MF's largest "
    "linear-weight precision R-hat reached 1.43 with seed 3 (1.21 without). The worst probe "
    "and sigma R-hats fell on both sides of 1.01 with and without it, so the sampler keeps "
    "the shifts given the means.",
]


def _args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=os.environ.get("BAYESFM_ML100K"))
    p.add_argument("--features", nargs="+", choices=FEATURES, default=list(FEATURES))
    p.add_argument("--splits", nargs="*", default=["ua"], help="splits for the myFM comparison")
    p.add_argument("--sweeps", type=int, default=200, help="total sweeps per fit")
    p.add_argument("--kept", type=int, default=100, help="sweeps kept (the last ones)")
    p.add_argument("--diagnostics", nargs="*", default=[], help="splits for the 4-chain run")
    p.add_argument("--no-myfm", action="store_true")
    p.add_argument(
        "--entity-relax",
        type=float,
        default=None,
        help="4-chain rows with this over-relaxation of the entity draws instead of the "
        "sampler's (0: plain Gibbs; an A/B baseline with its own row keys)",
    )
    p.add_argument(
        "--no-rotation",
        action="store_true",
        help="4-chain rows without the factor rotations (an A/B baseline, keyed '/norotation')",
    )
    p.add_argument(
        "--uncollapsed-exchange",
        action="store_true",
        help="4-chain MF rows with the scale exchange given the factor precisions instead of "
        "collapsed over them (an A/B baseline, keyed '/uncollapsedexchange')",
    )
    p.add_argument(
        "--no-side-moves",
        action="store_true",
        help="rows without FM's side exchange and attribute mean shifts (an A/B baseline, "
        "keyed '/nosidemoves')",
    )
    p.add_argument(
        "--collapsed-shift",
        action="store_true",
        help="rows with each entity's factor-mean shift collapsed over the means it moves "
        "instead of given them (an A/B variant, keyed '/collapsedshift')",
    )
    p.add_argument(
        "--tag",
        default="",
        help="appended to the 4-chain rows' keys, so that a rerun (another machine, say) "
        "does not replace a row",
    )
    p.add_argument(
        "--diag-seed",
        type=int,
        default=0,
        help="random_state of the 4-chain rows (other than 0: own row keys)",
    )
    p.add_argument(
        "--diag-warmup",
        type=int,
        default=200,
        help="warmup sweeps of the 4-chain rows (other than 200: own row keys)",
    )
    p.add_argument("--quick", action="store_true", help="tiny settings for CI")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gibbs.json"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks_gibbs.md"))
    return p.parse_args()


def _entity_draws(model, sweeps: int, chains: int = 1) -> str:
    """How the fit factored its entity draws: ``"looped"`` or ``"unrolled"``."""
    from bayesfm.gibbs import unroll_entity_draws

    looped = unroll_entity_draws(model.spec_, sweeps, chains) is False
    return "looped" if looped else "unrolled"


def run_bayesfm(bfm, train, test, features, cfg, seed: int = 0):
    common = dict(rank=10, inference=cfg, random_state=seed, progress_bar=False)
    if features == "mf":
        model = bfm.BayesianMF(**common)
    else:
        fields = bayesfm_fields(bfm, features)
        model = bfm.BayesianFM(features=bfm.FeatureSpec(fields), **common)
    y = train.rating.to_numpy(float)
    t0 = time.perf_counter()
    model.fit(train, y)
    fit_s = time.perf_counter() - t0
    return model, fit_s


def main() -> None:
    args = _args()
    if args.entity_relax is not None and not -1.0 < args.entity_relax < 1.0:
        raise SystemExit(f"--entity-relax: got {args.entity_relax}; allowed values lie in (-1, 1)")
    import jax

    import bayesfm as bfm
    from bayesfm.datasets import load_movielens_100k

    data_dir = args.data or str(ROOT.parent / "shared" / "data" / "ml-100k")
    if args.quick:
        args.sweeps, args.kept = 10, 5
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}

    save = row_saver(results, out_path, persist=not args.quick)
    import bayesfm.gibbs
    import bayesfm.sweeps

    for features in args.features:
        for split in args.splits:
            train, test = prepare(*load_movielens_100k(data_dir, split=split))
            if args.quick:
                train, test = train.iloc[:3000], test.iloc[:300]
            y = test.rating.to_numpy(float)
            cfg = bfm.GibbsConfig(
                num_warmup=args.sweeps - args.kept, num_samples=args.kept, num_chains=1
            )
            # a fresh compilation cache per row: this fit compiles cold and fills it
            with tempfile.TemporaryDirectory(prefix="bayesfm-bench-cache-") as cache:
                bfm.enable_compilation_cache(cache)
                model, fit_s = run_bayesfm(bfm, train, test, features, cfg)
                iv90 = model.predict_interval(test, 0.9)
                iv50 = model.predict_interval(test, 0.5)
                t = model.timings_
                # the same fit in a "new session": nothing in memory, the programs on disk
                jax.clear_caches()
                warm, warm_fit_s = run_bayesfm(bfm, train, test, features, cfg)
                bfm.disable_compilation_cache()
            if not np.array_equal(warm.draws_.samples["sigma"], model.draws_.samples["sigma"]):
                raise RuntimeError("a warm-cache refit drew different samples")
            row = {
                "features": features,
                "year": features != "mf",
                "split": split,
                "sweeps": args.sweeps,
                "kept": args.kept,
                "rmse": float(np.sqrt(np.mean((iv90["mean"] - y) ** 2))),
                "mae": float(np.mean(np.abs(iv90["mean"] - y))),
                "cov50": float(np.mean((y >= iv50.lower) & (y <= iv50.upper))),
                "cov90": float(np.mean((y >= iv90.lower) & (y <= iv90.upper))),
                "lpd": float(model.score(test, y)),
                "sigma": float(model.draws_.samples["sigma"].mean()),
                "fit_s": fit_s,
                "compile_s": t["gibbs_compile_s"],
                "sample_s": t["gibbs_total_s"] - t["gibbs_compile_s"],
                "warm_fit_s": warm_fit_s,
                "warm_compile_s": warm.timings_["gibbs_compile_s"],
                "entity_relax": bayesfm.gibbs.ENTITY_RELAX,
                "factor_rotation": bayesfm.gibbs.FACTOR_ROTATION,
                # MF only: the scale exchange collapsed over the factor precisions (session 23)
                "collapsed_exchange": features == "mf" and bayesfm.gibbs.COLLAPSED_EXCHANGE,
                # FM: the side exchange and attribute mean shifts (session 24)
                "side_moves": _side_moves(features),
                # the factor-mean shifts with the means integrated out (session 25)
                "collapsed_factor_shift": bayesfm.gibbs.COLLAPSED_FACTOR_SHIFT,
                # the entity draws' batched Cholesky (session 26: looped in short CPU fits)
                "entity_draws": _entity_draws(model, args.sweeps),
                # the fit's loop: bayesfm.sweeps with these XLA options (rows without the
                # key ran under numpyro's MCMC with XLA's defaults)
                "compiler_options": bayesfm.sweeps.default_compiler_options(),
            }
            if not args.no_myfm:
                import myfm

                x_tr, x_te, rel_tr, rel_te, shapes = myfm_design(train, test, features)
                fm = myfm.MyFMRegressor(rank=10, random_seed=0)
                t0 = time.perf_counter()
                fm.fit(
                    x_tr,
                    train.rating.to_numpy(float),
                    X_rel=rel_tr,
                    n_iter=args.sweeps,
                    n_kept_samples=args.kept,
                    group_shapes=shapes,
                )
                row["myfm_fit_s"] = time.perf_counter() - t0
                row["myfm_rmse"] = float(np.sqrt(np.mean((fm.predict(x_te, rel_te) - y) ** 2)))
                row["ratio_excl_compile"] = row["sample_s"] / row["myfm_fit_s"]
                row["ratio_incl_compile"] = row["fit_s"] / row["myfm_fit_s"]
                row["ratio_incl_warm_compile"] = warm_fit_s / row["myfm_fit_s"]
            save(f"{features}/{split}" + ("/quick" if args.quick else ""), row)

    sampler, suffix = f"{SAMPLER} {bayesfm.gibbs.ENTITY_RELAX:g}", ""
    if args.entity_relax is not None:
        bayesfm.gibbs.ENTITY_RELAX = args.entity_relax
        sampler, suffix = f"{SAMPLER} {args.entity_relax:g}", f"/relax{args.entity_relax:g}"
    if args.no_rotation:
        bayesfm.gibbs.FACTOR_ROTATION = False
        suffix += "/norotation"
    elif bayesfm.gibbs.FACTOR_ROTATION:
        sampler += ", factor rotations"
    if args.uncollapsed_exchange:
        bayesfm.gibbs.COLLAPSED_EXCHANGE = False
        suffix += "/uncollapsedexchange"
    if args.no_side_moves:
        bayesfm.gibbs.SIDE_EXCHANGE = bayesfm.gibbs.ATTRIBUTE_MEAN_SHIFT = False
        suffix += "/nosidemoves"
    if args.collapsed_shift:
        bayesfm.gibbs.COLLAPSED_FACTOR_SHIFT = True
        suffix += "/collapsedshift"
    warmup = args.diag_warmup
    suffix += f"/warmup{warmup}" if warmup != 200 else ""
    suffix += f"/seed{args.diag_seed}" if args.diag_seed else ""
    suffix += f"/{args.tag}" if args.tag else ""
    for split in args.diagnostics:
        train, test = prepare(*load_movielens_100k(data_dir, split=split))
        for features in args.features:
            cfg = bfm.GibbsConfig(num_warmup=warmup, num_samples=500, num_chains=4)
            model, fit_s = run_bayesfm(bfm, train, test, features, cfg, args.diag_seed)
            row = diagnostics_row(model, test)
            row.update(
                features=features,
                year=features != "mf",
                split=split,
                warmup=warmup,
                seed=args.diag_seed,
                fit_s=fit_s,
                sampler=sampler
                + _exchange_label(features, bayesfm.gibbs.COLLAPSED_EXCHANGE)
                + _side_label(features)
                + _shift_label(),
                side_moves=_side_moves(features),
                collapsed_factor_shift=bayesfm.gibbs.COLLAPSED_FACTOR_SHIFT,
            )
            save(f"diag/{features}/{split}{suffix}", row)
    if not args.quick:
        write_doc(results, Path(args.doc))


def _exchange_label(features: str, collapsed: bool) -> str:
    """MF's scale exchange, as the sampler column states it (rows before session 23 ran it
    given the factor precisions, unmarked)."""
    if features != "mf":
        return ""
    return ", collapsed scale exchange" if collapsed else ""


def _side_moves(features: str) -> bool:
    """Whether FM's side exchange and attribute mean shifts (session 24) ran: both on, and an
    FM feature set (MF has no side features)."""
    import bayesfm.gibbs

    return features != "mf" and bayesfm.gibbs.SIDE_EXCHANGE and bayesfm.gibbs.ATTRIBUTE_MEAN_SHIFT


def _side_label(features: str) -> str:
    return ", side exchange and attribute mean shifts" if _side_moves(features) else ""


def _shift_label() -> str:
    """The factor-mean shifts collapsed over the means (session 25, rows '/collapsedshift');
    the other rows ran them given the means, unmarked."""
    import bayesfm.gibbs

    return ", collapsed factor-mean shifts" if bayesfm.gibbs.COLLAPSED_FACTOR_SHIFT else ""


def diagnostics_row(model, test) -> dict:
    """Convergence of a 4-chain fit: R-hat of sigma, w0 and 200 probe cells' latent
    predictions, and of the precision hyperparameters; RMSE and 90% coverage on ``test``."""
    import arviz as az

    probe = test.sample(200, random_state=0)
    lat = model.predict_posterior(probe, latent=True).to_dataset(name="y")
    rhat = az.rhat(lat)["y"].values
    ess = az.ess(lat)["y"].values
    post = model.idata_.posterior
    # az.rhat, not az.summary, which rounds to two decimals (1.004 would print as 1.0)
    scalar_rhat = az.rhat(post[["sigma", "w0"]])
    sigma_ess = float(az.ess(post[["sigma"]])["sigma"])
    w_names = [v for v in post.data_vars if v.startswith("w_lambda_")]
    w_lam = az.rhat(post[w_names])
    w_lam_rhat = np.array([float(w_lam[v]) for v in w_names])
    # factor precisions are exchangeable across factor dimensions (the posterior is
    # invariant to permuting them), so compare chains on the sorted values
    v_names = [v for v in post.data_vars if v.startswith("v_lambda_")]
    raw = az.rhat(post[v_names])
    v_raw = np.concatenate([np.ravel(raw[v].values) for v in v_names])
    v_sorted = np.concatenate(
        [
            np.ravel(az.rhat(az.convert_to_dataset(np.sort(post[v].values, -1)))["x"])
            for v in v_names
        ]
    )
    # the norm of each factor table's mean vector: which share of the common factor a table
    # carries (a user's gender against the user), seen by no prediction
    draws = model.draws_.samples
    mean_norms = {
        k[2:]: float(az.rhat(np.linalg.norm(np.asarray(draws[k]).mean(2), axis=-1)))
        for k in draws
        if k.startswith("v_") and not k.startswith(("v_mu_", "v_lambda_"))
    }
    slowest = max(mean_norms, key=mean_norms.get)
    y = test.rating.to_numpy(float)
    iv90 = model.predict_interval(test, 0.9)
    return {
        "factor_mean_norm_rhat_max": mean_norms[slowest],
        "factor_mean_norm_slowest": slowest,
        "chains": int(post.sizes["chain"]),
        "kept": int(post.sizes["draw"]),
        "rmse": float(np.sqrt(np.mean((iv90["mean"] - y) ** 2))),
        "cov90": float(np.mean((y >= iv90.lower) & (y <= iv90.upper))),
        "sigma_rhat": float(scalar_rhat["sigma"]),
        "w0_rhat": float(scalar_rhat["w0"]),
        "sigma_ess": sigma_ess,
        "probe_rhat_max": float(rhat.max()),
        "probe_rhat_median": float(np.median(rhat)),
        "probe_ess_min": float(ess.min()),
        "w_lambda_rhat_max": float(w_lam_rhat.max()),
        "v_lambda_rhat_median": float(np.median(v_raw)),
        "v_lambda_sorted_rhat_max": float(v_sorted.max()),
    }


def _slowest_table(row: dict) -> str:
    """ " (table)" of the slowest factor-table mean, for rows that record it."""
    return f" ({row['factor_mean_norm_slowest']})" if "factor_mean_norm_slowest" in row else ""


def _features_label(row: dict) -> str:
    """The feature set, marking FM rows measured before the release year joined it."""
    no_year = row["features"] != "mf" and not row.get("year", False)
    return row["features"] + (" (no year)" if no_year else "")


def _num(row: dict, key: str, spec: str) -> str:
    """``row[key]`` formatted, or "-" for rows measured before the column existed."""
    return format(row[key], spec) if key in row else "-"


def _rows_with(fits: dict, key: str, what: str) -> str:
    """ "; {what} in `row`, ..." for the rows whose ``key`` is true ("" for none)."""
    keys = sorted(k for k, r in fits.items() if r.get(key))
    return f"; {what} in " + ", ".join(f"`{k}`" for k in keys) if keys else ""


def write_doc(results: dict, doc: Path) -> None:
    """Markdown tables from the JSON results (nothing typed by hand)."""
    import jax

    import bayesfm

    try:
        import myfm

        myfm_version = myfm.__version__
    except ImportError:
        myfm_version = "not installed"
    rows = {k: v for k, v in results.items() if not k.endswith("/quick")}
    fits = {k: v for k, v in rows.items() if not k.startswith("diag/")}
    lines = [
        "# Gibbs sampler: bayesfm against myFM on MovieLens-100K",
        "",
        "Generated by `python -m benchmarks.gibbs_movielens`; do not edit by hand.",
        "",
        f"- date: {date.today().isoformat()}; {machine_line(rows.values())}; "
        f"JAX backend: {jax.default_backend()} (no GPU)",
        f"- bayesfm {bayesfm.__version__}, jax {jax.__version__}, myFM {myfm_version}",
        "- rank 10, one chain; both samplers run the same sweeps in the same process, one after "
        "the other; myFM gets the same features, as a sparse design for mf and fm and as "
        "relation blocks (one per user, one per item) for fm_implicit",
        "- MF = user + item; FM = + age, gender, occupation (per user), genres and release year "
        "(per item); rows marked 'no year' were measured before the year joined the FM set; "
        "fm_implicit = fm + implicit sets (the items each user rated, the users who rated "
        "each item)",
        "- ratio = bayesfm time / myFM time in the same run (< 1: bayesfm faster); "
        "compile = JAX tracing + compilation",
        "- cold = a fresh compilation cache; warm = the same fit again with nothing compiled in "
        "memory but its programs in the cache (`bfm.enable_compilation_cache`), as in a "
        "restarted session; it draws the same samples",
        "",
        "| features | split | sweeps (kept) | RMSE | myFM RMSE | MAE | cov 50% | cov 90% "
        "| LPD | sigma | bayesfm s (excl. compile) | compile s (cold) | compile s (warm) "
        "| myFM s | ratio excl. | ratio incl. (cold) | ratio incl. (warm) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(fits):
        r = fits[key]
        lines.append(
            f"| {_features_label(r)} | {r['split']} | {r['sweeps']} ({r['kept']}) "
            f"| {r['rmse']:.4f} "
            f"| {r.get('myfm_rmse', float('nan')):.4f} | {r['mae']:.4f} | {r['cov50']:.3f} "
            f"| {r['cov90']:.3f} | {r['lpd']:.4f} | {r['sigma']:.3f} | {r['sample_s']:.1f} "
            f"| {r['compile_s']:.1f} | {_num(r, 'warm_compile_s', '.1f')} "
            f"| {r.get('myfm_fit_s', float('nan')):.1f} "
            f"| {r.get('ratio_excl_compile', float('nan')):.2f} "
            f"| {r.get('ratio_incl_compile', float('nan')):.2f} "
            f"| {_num(r, 'ratio_incl_warm_compile', '.2f')} |"
        )
    rotated = sorted(k for k, r in fits.items() if r.get("factor_rotation"))
    with_rotation = (
        "with the factor rotations (session 17) in " + ", ".join(f"`{k}`" for k in rotated)
        if rotated
        else "measured before the factor rotations (session 17) joined the sampler"
    )
    looped = sorted(k for k, r in fits.items() if "compiler_options" in r)
    loop = (
        "run by `bayesfm.sweeps` with its CPU XLA options (older loop emitters, LLVM -O1) in "
        + ", ".join(f"`{k}`" for k in looped)
        + "; the other rows ran under numpyro's MCMC with XLA's default options"
        if looped
        else "run under numpyro's MCMC with XLA's default options"
    )
    exchange = _rows_with(
        fits,
        "collapsed_exchange",
        "MF's scale exchange collapsed over the factor precisions (session 23)",
    )
    side = _rows_with(
        fits, "side_moves", "FM's side exchange and attribute mean shifts (session 24)"
    )
    side += _rows_with(
        fits,
        "collapsed_factor_shift",
        "the factor-mean shifts collapsed over the means they move (session 25, an A/B variant)",
    )
    looped_draws = sorted(k for k, r in fits.items() if r.get("entity_draws") == "looped")
    entity_draws = (
        "looped (session 26: compiles in about 0.1 s, unrolled 0.6-0.8 s) in "
        + ", ".join(f"`{k}`" for k in looped_draws)
        + "; unrolled in the other rows"
        if looped_draws
        else "unrolled"
    )
    by_machine: dict[str, list[str]] = {}
    for k, r in sorted(fits.items()):
        by_machine.setdefault(r.get("machine", "not recorded"), []).append(f"`{k}`")
    machines = "; ".join(f"{m}: {', '.join(keys)}" for m, keys in sorted(by_machine.items()))
    lines += [
        "",
        f"Sampler of these rows: ridge moves and entity over-relaxation -0.8; {with_rotation}"
        f"{exchange}{side}.",
        f"Loop: {loop}.",
        f"The entity draws' batched Cholesky: {entity_draws}.",
        f"Machine of these rows (the ratios compare two samplers on the same one): {machines}.",
    ]
    folds: dict[str, dict[str, list[float]]] = {}
    for r in fits.values():
        if r["split"] in {"u1", "u2", "u3", "u4", "u5"}:
            f = folds.setdefault(_features_label(r), {"bayesfm": [], "myfm": []})
            f["bayesfm"].append(r["rmse"])
            if "myfm_rmse" in r:
                f["myfm"].append(r["myfm_rmse"])
    if folds:
        lines += [
            "",
            "| features | folds | bayesfm mean RMSE u1-u5 (sd) | myFM mean RMSE u1-u5 (sd) |",
            "|---|---|---|---|",
        ]
        for feat, v in sorted(folds.items()):
            m = v["myfm"]
            my = f"{np.mean(m):.4f} ({np.std(m):.4f})" if m else "n/a"
            lines.append(
                f"| {feat} | {len(v['bayesfm'])} | {np.mean(v['bayesfm']):.4f} "
                f"({np.std(v['bayesfm']):.4f}) | {my} |"
            )
    diags = {k: v for k, v in rows.items() if k.startswith("diag/")}
    if diags:
        lines += [
            "",
            "Convergence, 4 chains x (warmup + kept sweeps); rank-normalized R-hat (unrounded "
            "since session 16; earlier rows came from az.summary, rounded to 0.01); probe = "
            "latent predictions of 200 test cells",
            "",
            "| features | split | sampler | hyperprior (precisions) | machine | sweeps "
            "| fit s | RMSE "
            "| cov 90% "
            "| sigma R-hat | sigma ESS | w0 R-hat "
            "| probe R-hat max | probe R-hat median | probe ESS min | linear precision R-hat max "
            "| factor precision R-hat median (raw) | factor precision R-hat max (sorted) "
            "| factor mean norm R-hat max (table) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key in sorted(diags):
            r = diags[key]
            lines.append(
                f"| {_features_label(r)} | {r['split']} | {r.get('sampler', '')}"
                f"{', seed ' + str(r['seed']) if r.get('seed') else ''} "
                f"| {prior_label(r)} | {r.get('machine', 'not recorded')} "
                f"| {r['warmup']} + {r['kept']} | {r['fit_s']:.0f} "
                f"| {r['rmse']:.4f} "
                f"| {r['cov90']:.3f} | {r['sigma_rhat']:.3f} | {_num(r, 'sigma_ess', '.0f')} "
                f"| {r['w0_rhat']:.3f} | {r['probe_rhat_max']:.3f} "
                f"| {r['probe_rhat_median']:.3f} | {r['probe_ess_min']:.0f} "
                f"| {r['w_lambda_rhat_max']:.3f} | {r['v_lambda_rhat_median']:.3f} "
                f"| {r['v_lambda_sorted_rhat_max']:.3f} "
                f"| {_num(r, 'factor_mean_norm_rhat_max', '.3f')}{_slowest_table(r)} |"
            )
        notes = [f"- {k}: {v['note']}" for k, v in sorted(diags.items()) if v.get("note")]
        lines += ["", *notes] if notes else []
        lines += ["", *PRECISION_NOTE]
    write_lines(doc, lines)


if __name__ == "__main__":
    main()
