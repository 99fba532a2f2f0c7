"""Shared, session-scoped fitted models: JAX compilation dominates test time."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# JAX's persistent compilation cache, fresh for this session (set before jax is imported, so
# that subprocesses inherit it too): the suite fits the same tiny models in many modules, and
# _release_compiled_programs below drops the in-memory programs after each one. A recompile
# of an identical program then loads it from disk (a repeated NUTS fit: 29 s -> 7 s).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JAX_CACHE = tempfile.mkdtemp(prefix="bayesfm-tests-jax-cache-")
    atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
# Most XLA optimizations off (set JAX_DISABLE_MOST_OPTIMIZATIONS=0 to test with them): the
# models are tiny, so compiling dominates and the passes cost more than they save (the suite
# on 2 cores: 16 min 55 s with them, 15 min 8 s without). The memory tests turn them back on.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import gc
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import bayesfm as bfm
from bayesfm.datasets import make_synthetic, make_toy_mf

warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")

SIDE_SPEC = [
    bfm.Categorical("user_id"),
    bfm.Categorical("item_id"),
    bfm.Categorical("occupation", owner="user_id"),
    bfm.Numeric("age", owner="user_id"),
    bfm.MultiHot("genres", owner="item_id"),
]


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every compiled CPU program holds memory mappings; the suite compiles thousands of them in
    one process (10,000 mappings after the first few modules), towards the kernel's limit
    ``vm.max_map_count`` (65,530 here). Near it XLA crashed inside a late compilation (a
    segfault or an abort in ``backend_compile``, twice in test_specs after about 300 tests,
    never with the module alone). Later modules recompile what they need.
    """
    yield
    import jax

    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def toy():
    return make_toy_mf()


@pytest.fixture(scope="session")
def toy_gibbs_problem(toy):
    """``(spec, model_args)`` of a rank-2 MF on the toy table, for driving ``FMGibbs``."""
    import jax.numpy as jnp

    from bayesfm.data import FittedEncoder
    from bayesfm.fm import ModelSpec
    from bayesfm.gibbs import gibbs_plan
    from bayesfm.inference import to_jax

    X, y = toy
    encoder = FittedEncoder.fit(
        bfm.FeatureSpec([bfm.Categorical("user_id"), bfm.Categorical("item_id")]), X
    )
    spec = ModelSpec(structure=encoder.structure, rank=2)
    arrays = encoder.transform(X).arrays()
    arrays["gibbs"] = gibbs_plan(arrays, spec.structure)
    return spec, (to_jax(arrays), jnp.float32(np.mean(y)), jnp.asarray(y, jnp.float32))


@pytest.fixture(scope="session")
def synthetic_split():
    """Planted FM data with side features, split 80/20 by rows."""
    data = make_synthetic(n_users=60, n_items=40, n_obs=1500, rank=2, noise_sd=0.5, seed=1)
    rng = np.random.default_rng(0)
    test = np.zeros(len(data.y), bool)
    test[rng.choice(len(data.y), 300, replace=False)] = True
    return data, ~test, test


@pytest.fixture(scope="session")
def svi_fm(synthetic_split):
    data, train, _ = synthetic_split
    model = bfm.BayesianFM(
        rank=2,
        features=bfm.FeatureSpec(SIDE_SPEC),
        inference=bfm.SVIConfig(num_steps=1500, num_samples=300),
        progress_bar=False,
    )
    return model.fit(data.X[train], data.y[train])


@pytest.fixture(scope="session")
def nuts_fm(synthetic_split):
    data, train, _ = synthetic_split
    model = bfm.BayesianFM(
        rank=2,
        features=bfm.FeatureSpec(SIDE_SPEC),
        inference=bfm.NUTSConfig(
            num_warmup=150, num_samples=150, num_chains=2, init_svi_steps=500, max_tree_depth=6
        ),
        progress_bar=False,
    )
    return model.fit(data.X[train], data.y[train])


@pytest.fixture(scope="session")
def gibbs_fm(synthetic_split):
    data, train, _ = synthetic_split
    model = bfm.BayesianFM(
        rank=2,
        features=bfm.FeatureSpec(SIDE_SPEC),
        inference=bfm.GibbsConfig(num_warmup=200, num_samples=300, num_chains=2),
        progress_bar=False,
    )
    return model.fit(data.X[train], data.y[train])


@pytest.fixture(scope="session")
def mf_long():
    """A long Gibbs run of a tiny well-specified MF, with a large held-out set.

    Long enough (2 chains x 1000 kept draws, thinned by 10) that every identified quantity
    passes the convergence checks: the factor prior scales (``v_sd``) are the slowest
    quantities of the Gibbs sampler (bulk ESS about 6% of the sweeps here, with the scale
    exchange move). The held-out half checks calibration.
    """
    data = make_synthetic(
        n_users=60, n_items=50, n_obs=3000, rank=2, noise_sd=0.5, with_side=False, seed=2
    )
    rng = np.random.default_rng(0)
    test = np.zeros(len(data.y), bool)
    test[rng.choice(len(data.y), 1500, replace=False)] = True
    model = bfm.BayesianMF(
        rank=2,
        inference=bfm.GibbsConfig(num_warmup=500, num_samples=1000, num_chains=2, thinning=10),
        progress_bar=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", bfm.diagnostics.ConvergenceWarning)
        model.fit(data.X[~test], data.y[~test])
    return model, data, ~test, test


# a helper for the memory tests: the script prints its peak growth, read from VmHWM
PEAK_MIB = textwrap.dedent(
    """
    def peak_mib():
        # VmHWM of this process image; ru_maxrss would carry the parent's peak over exec
        line = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0]
        return int(line.split()[1]) / 1024
    """
)


def peak_growth_mib(script: str) -> float:
    """Run ``script`` (which may call ``peak_mib()`` and prints the growth it measured last)
    in a fresh process; returns that number."""
    # with XLA's optimizations, as users run it: fusion decides which intermediates exist
    env = {k: v for k, v in os.environ.items() if k != "JAX_DISABLE_MOST_OPTIMIZATIONS"}
    done = subprocess.run(
        [sys.executable, "-c", PEAK_MIB + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.strip().splitlines()[-1])
