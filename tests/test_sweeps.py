"""The Gibbs driver (bayesfm.sweeps) draws what numpyro's MCMC draws from the same key."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from numpyro.infer import MCMC

from bayesfm.gibbs import FMGibbs
from bayesfm.sweeps import CPU_COMPILER_OPTIONS, default_compiler_options, run_kernel

WARMUP, KEPT, THIN = 7, 10, 3


def _numpyro_draws(spec, args, chains: int, chain_method) -> dict[str, np.ndarray]:
    mcmc = MCMC(
        FMGibbs(spec),
        num_warmup=WARMUP,
        num_samples=KEPT * THIN,
        num_chains=chains,
        thinning=THIN,
        chain_method=chain_method,
        progress_bar=False,
        jit_model_args=True,
    )
    mcmc.run(jax.random.PRNGKey(4), *args)
    return {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
@pytest.mark.parametrize(
    ("chains", "vectorized"), [(1, False), (3, True), (2, False)], ids=["one", "vmap", "seq"]
)
def test_draws_equal_numpyro_mcmc(toy_gibbs_problem, chains, vectorized):
    """Same key splitting, same kept sweeps (the last of each thinning run): with XLA's
    default options the very same draws."""
    spec, args = toy_gibbs_problem
    expected = _numpyro_draws(spec, args, chains, jax.vmap if vectorized else "sequential")
    got = run_kernel(
        FMGibbs(spec),
        args,
        jax.random.PRNGKey(4),
        num_warmup=WARMUP,
        num_samples=KEPT,
        thinning=THIN,
        num_chains=chains,
        vectorized=vectorized,
        compiler_options={},
    )
    assert set(got) == set(expected)
    for site in expected:
        assert got[site].shape == (chains, KEPT, *expected[site].shape[2:])
        np.testing.assert_array_equal(got[site], expected[site], err_msg=site)
    # the draws move: equal draws are not equal constants
    assert np.std(expected["sigma"]) > 1e-2


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
def test_cpu_options_change_a_sweep_by_round_off_only(toy_gibbs_problem):
    """bayesfm's XLA options change the code, not the sweep: one sweep from the same start
    agrees to float32 round-off. (Over many sweeps round-off, and with it the odd
    Metropolis decision, lets the two chains drift apart.)"""
    spec, args = toy_gibbs_problem
    common = dict(num_warmup=0, num_samples=1, num_chains=2)
    plain = run_kernel(FMGibbs(spec), args, jax.random.PRNGKey(2), compiler_options={}, **common)
    tuned = run_kernel(
        FMGibbs(spec), args, jax.random.PRNGKey(2), compiler_options=CPU_COMPILER_OPTIONS, **common
    )
    for site in plain:
        np.testing.assert_allclose(tuned[site], plain[site], rtol=1e-4, atol=1e-5, err_msg=site)


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
def test_progress_bar_chunks_continue_the_same_chain(toy_gibbs_problem, capsys):
    """With a progress bar the loop returns to Python between chunks; the chain carries on
    exactly as in one call."""
    spec, args = toy_gibbs_problem
    common = dict(num_warmup=WARMUP, num_samples=KEPT, thinning=THIN, num_chains=2)
    whole = run_kernel(FMGibbs(spec), args, jax.random.PRNGKey(1), **common)
    chunked = run_kernel(FMGibbs(spec), args, jax.random.PRNGKey(1), progress_bar=True, **common)
    for site in whole:
        np.testing.assert_allclose(chunked[site], whole[site], rtol=1e-6, atol=1e-6)
    assert "Gibbs chains 0-1" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
@pytest.mark.parametrize("vectorized", [True, False], ids=["vmap", "seq"])
def test_extra_fields_are_collected_at_the_kept_sweeps(toy_gibbs_problem, vectorized):
    """The latent field of ``collect_latent`` comes back per chain and kept draw, and is the
    predictor at that draw's values; collecting it changes a sweep by round-off only."""
    from bayesfm.fm import mf_predictor

    spec, args = toy_gibbs_problem
    collecting = FMGibbs(spec, collect_latent=True)
    one = dict(num_warmup=0, num_samples=1, num_chains=2, vectorized=vectorized)
    plain = run_kernel(FMGibbs(spec), args, jax.random.PRNGKey(3), **one)
    draws, _ = run_kernel(collecting, args, jax.random.PRNGKey(3), extra_fields=("latent",), **one)
    for site in plain:
        np.testing.assert_allclose(draws[site], plain[site], rtol=1e-4, atol=1e-5, err_msg=site)
    common = dict(
        num_warmup=WARMUP, num_samples=KEPT, thinning=THIN, num_chains=2, vectorized=vectorized
    )
    draws, extra = run_kernel(
        collecting, args, jax.random.PRNGKey(3), extra_fields=("latent",), **common
    )
    data, offset, y = args
    assert extra["latent"].shape == (2, KEPT, len(y))
    for c in range(2):
        for d in (0, KEPT - 1):
            params = {k: v[c, d] for k, v in draws.items()}
            expected = offset + mf_predictor(params, data, spec.structure)
            np.testing.assert_allclose(extra["latent"][c, d], expected, rtol=1e-5, atol=1e-5)
    assert np.std(extra["latent"][:, :, 0]) > 1e-2  # a different value at every draw


def test_unknown_extra_fields_are_refused(toy_gibbs_problem):
    spec, args = toy_gibbs_problem
    with pytest.raises(
        ValueError, match=r"extra_fields: got \['tree_depth'\]; .* \['rng_key', 'latent'\]"
    ):
        run_kernel(
            FMGibbs(spec),
            args,
            jax.random.PRNGKey(0),
            num_warmup=1,
            num_samples=1,
            extra_fields=("tree_depth",),
        )


def test_chain_devices_must_divide_the_chains(toy_gibbs_problem):
    spec, args = toy_gibbs_problem
    with pytest.raises(ValueError, match="chain_devices: got 2; it must divide .* \\(3\\)"):
        run_kernel(
            FMGibbs(spec),
            args,
            jax.random.PRNGKey(0),
            num_warmup=1,
            num_samples=1,
            num_chains=3,
            chain_devices=2,
        )


def test_cpu_compiler_options_apply_on_cpu_only():
    expected = CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else {}
    assert default_compiler_options() == expected
    # a copy: callers cannot change the module's options through it
    default_compiler_options()["xla_backend_optimization_level"] = 3
    assert default_compiler_options() == expected


def test_estimator_runs_its_chains_in_one_program(gibbs_fm):
    """Two chains, ``chain_method="auto"``: one vectorized program, draws (chain, draw)."""
    assert gibbs_fm.timings_["chain_method"] == "vectorized"
    assert gibbs_fm.draws_.samples["sigma"].shape == (2, 300)
    assert gibbs_fm.timings_["gibbs_compile_s"] > 0
