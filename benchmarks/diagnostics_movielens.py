"""MovieLens-100K MF fitted by NUTS on ua: diagnostics table, calibration and HTML report.

Fits (or reloads) the model, writes the run file and the self-contained report under
``bench_out/``, a screenshot of the report to ``docs/``, and the diagnostics table with the
held-out metrics to ``docs/diagnostics_movielens.md``::

    python -m benchmarks.diagnostics_movielens            # fit 4 x (500 + 1000), then report
    python -m benchmarks.diagnostics_movielens --fit-only # fit and save only
    python -m benchmarks.diagnostics_movielens --quick    # tiny settings, a smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .results_io import cpu_model

ROOT = Path(__file__).resolve().parents[1]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="MovieLens-100K folder ($BAYESFM_ML100K)")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--run", default=str(ROOT / "bench_out" / "ml100k_mf_nuts.nc"))
    p.add_argument("--refit", action="store_true", help="fit even if the run file exists")
    p.add_argument("--fit-only", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    p.add_argument("--doc", default=str(ROOT / "docs" / "diagnostics_movielens.md"))
    return p.parse_args()


def _screenshot(html: Path, png: Path) -> bool:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return False
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                "--window-size=1280,2400",
                f"--screenshot={png}",
                html.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return png.exists()


def main() -> None:
    args = _args()
    import os

    import jax

    # one CPU device per chain so that chains run in parallel (must precede any computation)
    jax.config.update("jax_num_cpu_devices", max(1, args.chains))
    import bayesfm as bfm
    from bayesfm.datasets import load_movielens_100k

    data_dir = (
        args.data
        or os.environ.get("BAYESFM_ML100K")
        or str(ROOT.parent / "shared" / "data" / "ml-100k")
    )
    if args.quick:
        args.warmup, args.samples, args.chains, args.rank = 30, 30, 2, 4
        args.run = str(Path(tempfile.mkdtemp()) / "quick.nc")
        args.doc = str(Path(args.run).with_suffix(".md"))
    train, test = load_movielens_100k(data_dir, split="ua")
    if args.quick:
        train, test = train.iloc[:3000], test.iloc[:500]
    run = Path(args.run)
    run.parent.mkdir(parents=True, exist_ok=True)
    if args.refit or not run.exists():
        model = bfm.BayesianMF(
            rank=args.rank,
            inference=bfm.NUTSConfig(
                num_warmup=args.warmup,
                num_samples=args.samples,
                num_chains=args.chains,
                init_svi_steps=200 if args.quick else 1500,
            ),
            random_state=0,
            progress_bar=False,
        )
        t0 = time.perf_counter()
        model.fit(train, train.rating.to_numpy(float))
        print(f"fit {time.perf_counter() - t0:.0f} s; timings {model.timings_}", flush=True)
        model.save(run)
        print(f"saved {run} ({run.stat().st_size / 2**20:.0f} MiB)", flush=True)
    if args.fit_only:
        return
    model = bfm.load(run)
    table = model.diagnose()
    check = bfm.evaluate(model, test, test.rating.to_numpy(float))
    loo = bfm.loo(model)
    html = run.with_suffix(".html")
    bfm.report(model, test, test.rating.to_numpy(float), path=html)
    png = Path(args.doc).with_name("report_ml100k_mf_nuts.png")
    shot = _screenshot(html, png) if not args.quick else False
    write_doc(Path(args.doc), model, table, check, loo, html, png if shot else None)
    print(Path(args.doc).read_text())


def write_doc(doc, model, table, check, loo, html, png) -> None:
    """Markdown page: settings, non-probe diagnostics rows, probe summary, metrics, LOO."""
    import numpy as np

    post = model.idata_.posterior
    probes = table[table.kind == "probe"]
    rest = table[table.kind != "probe"]
    cols = ["quantity", "kind", "mean", "r_hat", "ess_bulk", "ess_tail", "flag"]
    lines = [
        "# MovieLens-100K MF with NUTS: diagnostics",
        "",
        f"Written by `python -m benchmarks.diagnostics_movielens` on {dt.date.today()} "
        f"({cpu_model()}, CPU only). Split ua; "
        f"rank {model.rank}; {post.sizes['chain']} chains x {post.sizes['draw']} draws after "
        f"{model.inference_.num_warmup} warmup. Timings: "
        f"`{json.dumps({k: v for k, v in model.timings_.items() if k.endswith('_s')})}`.",
        "",
        "## Convergence on identified quantities",
        "",
        rest[cols].to_markdown(index=False, floatfmt=".4g"),
        "",
        f"Probe cells: {len(probes)} (20 observed, 20 unobserved), "
        f"{int((probes.flag == 'pass').sum())} pass; R-hat max {probes.r_hat.max():.4f}, "
        f"median {probes.r_hat.median():.4f}; bulk ESS min {probes.ess_bulk.min():.0f}.",
        "",
        "Worst probe cells by R-hat:",
        "",
        probes.sort_values("r_hat", ascending=False)
        .head(5)[cols]
        .to_markdown(index=False, floatfmt=".4g"),
        "",
        "## Held-out accuracy and calibration (ua test, 9,430 ratings)",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4g} |" if k != "n" else f"| n | {v} |" for k, v in check.summary.items()],
        "",
        check.coverage.to_markdown(index=False, floatfmt=".3f"),
        "",
        check.by_activity.to_markdown(index=False, floatfmt=".3f"),
        "",
        f"PIT histogram (10 bins): {np.histogram(check.pit, bins=10, range=(0, 1))[0].tolist()}",
        "",
        "## PSIS-LOO (training ratings)",
        "",
        f"elpd_loo {loo['elpd_loo']:.1f} (se {loo['se']:.1f}), p_loo {loo['p_loo']:.1f}",
        "",
        loo["pareto_k"].to_markdown(index=False, floatfmt=".4f"),
        "",
        f"Report: `{html.name}` (self-contained HTML, written next to the run file).",
    ]
    if png is not None:
        lines += ["", f"![report screenshot]({png.name})"]
    doc.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
