"""One scaling measurement in a fresh process: fit MF on N synthetic ratings, then predict.

Usage: ``python -m benchmarks.scaling_run N METHOD STEPS [DEVICES]`` with METHOD one of
``gibbs``, ``svi`` (full batch) or ``svi_mb`` (minibatch, ``BATCH`` rows per step), and the
rows split over DEVICES devices (``data_devices``; the caller sets ``XLA_FLAGS`` to simulate
host devices). Prints one JSON line.
Run by ``benchmarks.suite --parts scaling``; each N gets its own process so that the peak
memory (VmHWM) is that of one size alone.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import bayesfm as bfm
from bayesfm import sharding
from bayesfm.fm import fm_model, initial_values
from bayesfm.gibbs import gibbs_plan, gibbs_sweep
from bayesfm.inference import build_svi, to_jax

BATCH = 10_000
PREDICT_ROWS = 1_000_000
DRAWS = 20


def synthetic(n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """N ratings of N/100 users and N/200 items (ids drawn uniformly; noise only)."""
    rng = np.random.default_rng(0)
    n_users, n_items = max(100, n // 100), max(50, n // 200)
    X = pd.DataFrame(
        {
            "user_id": rng.integers(0, n_users, n, dtype=np.int32),
            "item_id": rng.integers(0, n_items, n, dtype=np.int32),
        }
    )
    return X, (3.5 + rng.normal(0, 1, n)).astype(np.float32)


def device_peak_mib() -> float | None:
    """Peak accelerator memory in use, where the backend reports it."""
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    return None if not stats else stats.get("peak_bytes_in_use", 0) / 2**20


def steady_step_s(model, X, y, method: str, steps: int) -> float:
    """Wall time of one Gibbs sweep or full-batch SVI step of an already compiled program.

    Subtracting the compile time that JAX reports from a whole fit is not reliable when
    compilation dominates (the reported compile seconds can exceed the wall time), so the
    step is compiled once and then timed over ``steps`` calls.
    """
    if method == "svi_mb":  # the minibatch runner times its compiled calls after the first
        t = model.timings_
        return t.get("svi_step_s", (t["svi_total_s"] - t["svi_compile_s"]) / steps)
    spec = model.spec_
    devices = sharding.resolve_devices(model.data_devices)
    arrays = model.encoder_.transform(X).arrays()
    key = jax.random.PRNGKey(0)
    y = np.asarray(y, np.float32)
    mesh = None
    if devices > 1:  # the same split and placement as fit
        arrays, y = sharding.pad_rows(arrays, y, devices)
        mesh = sharding.row_mesh(devices)
    offset = jnp.float32(model.offset_)
    if method == "gibbs":
        arrays["gibbs"] = gibbs_plan(arrays, spec.structure, n_shards=devices)
    data, y_j = to_jax(arrays), jnp.asarray(y)
    if mesh is not None:
        data = sharding.place(data, mesh, sharding.is_training_row_array)
        y_j = sharding.place(y_j, mesh, lambda keys: True)
    if method == "gibbs":
        params = initial_values(spec, key)
        params["sigma"] = 1.0 / jnp.sqrt(params["noise_precision"])
        step = jax.jit(partial(gibbs_sweep, spec=spec, mesh=mesh))

        def run(p):
            return step(p, data, offset, y_j, key)
    else:
        cfg = bfm.SVIConfig(num_steps=steps)
        _, svi = build_svi(partial(fm_model, spec=spec), cfg, initial_values(spec, key))
        args = (data, offset, y_j)
        update = jax.jit(partial(svi.stable_update))
        params = jax.jit(svi.init)(key, *args)

        def run(p):
            return update(p, *args)[0]

    for _ in range(2):  # compile; the second call sees the output's (strong) dtypes
        params = jax.block_until_ready(run(params))
    t0 = time.perf_counter()
    for _ in range(steps):
        params = run(params)
    jax.block_until_ready(params)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    n, method, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    devices = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    X, y = synthetic(n)
    if method == "gibbs":
        inf = bfm.GibbsConfig(num_warmup=1, num_samples=steps, num_chains=1)
    elif method == "svi":
        inf = bfm.SVIConfig(num_steps=steps, num_samples=DRAWS)
    else:
        inf = bfm.SVIConfig(num_steps=steps, num_samples=DRAWS, batch_size=min(BATCH, n))
    model = bfm.BayesianMF(
        rank=10,
        inference=inf,
        progress_bar=False,
        store_pointwise=False,
        data_devices=devices if devices > 1 else None,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    fit = time.perf_counter() - t0
    compile_s = sum(v for k, v in model.timings_.items() if k.endswith("compile_s"))
    per_step = steady_step_s(model, X, y, method, steps)
    steps_per_epoch = n / min(BATCH, n) if method == "svi_mb" else 1.0
    rows = X.iloc[: min(n, PREDICT_ROWS)]
    model.predict(rows.iloc[:1000])  # compile
    t0 = time.perf_counter()
    model.predict(rows)
    pred_s = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec, so a child would report the
    # parent's peak
    hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0]
    out = {
        "n": n,
        "method": method,
        "steps": steps,
        "batch": min(BATCH, n) if method == "svi_mb" else n,
        "fit_s": fit,
        "compile_s": compile_s,
        "per_step_s": per_step,
        "per_epoch_s": per_step * steps_per_epoch,
        "predict_per_1000_s": pred_s / len(rows) * 1000,
        "predictions_per_s": len(rows) / pred_s,
        "predict_rows": len(rows),
        "draws": DRAWS if method != "gibbs" else steps,
        "peak_rss_mib": int(hwm.split()[1]) / 1024,
        "device_peak_mib": device_peak_mib(),
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "n_devices": jax.device_count(),
    }
    if method == "svi_mb":  # dense passes or gathered rows (see bayesfm.minibatch)
        out["update"] = model.timings_["minibatch_update"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
