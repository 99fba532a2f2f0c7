"""The R-hat yardstick of ``benchmarks/rhat_noise.py``: its chains have the ESS they claim,
and stationary chains give R-hat near 1, further from it the slower they mix."""

from __future__ import annotations

import arviz as az
import numpy as np

from benchmarks.rhat_noise import CHAINS, DRAWS, ar1_chains, measure, rhat


def test_ar1_chains_have_the_requested_effective_sample_size():
    rng = np.random.default_rng(0)
    for target in (1500, 500, 100):
        x = ar1_chains(target, (40,), rng)
        assert x.shape == (40, CHAINS, DRAWS)
        ess = [float(az.ess(chains)) for chains in x]  # an array is read as (chain, draw)
        # az.ess of one chain set scatters; the mean over 40 sets is within 10%
        assert abs(np.mean(ess) / target - 1) < 0.1, (target, np.mean(ess))


def test_rhat_of_stationary_chains_grows_as_mixing_slows():
    rng = np.random.default_rng(1)
    fast = rhat(ar1_chains(2000, (400,), rng))
    slow = rhat(ar1_chains(100, (400,), rng))
    assert fast.shape == slow.shape == (400,)
    assert abs(np.median(fast) - 1) < 0.002
    assert np.median(slow) > np.median(fast) + 0.01
    # a chain stuck apart is caught: shift one chain by 3 sd
    stuck = ar1_chains(2000, (50,), rng)
    stuck[:, 0] += 3.0
    assert np.all(rhat(stuck) > 1.1)


def test_measure_orders_the_rows_by_ess_and_the_worst_of_many_strays_further():
    rows = measure(single_reps=100, max_reps=3, seed=2)
    ess = [r["ess"] for r in rows]
    assert ess == sorted(ess, reverse=True)
    for r in rows:
        assert r["worst_median"] > r["single_median"]
        assert 0.0 <= r["single_below"] <= 1.0 and 0.0 <= r["worst_below"] <= 1.0
    assert rows[0]["single_below"] > rows[-1]["single_below"]
