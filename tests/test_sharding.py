"""Data parallelism: sharded and single-device runs agree (two simulated CPU devices)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bayesfm as bfm
from bayesfm import sharding

CHECK = Path(__file__).with_name("sharding_check.py")
MULTIHOST = Path(__file__).with_name("multihost_check.py")


@pytest.fixture(scope="module")
def two_device_results():
    """Runs ``sharding_check.py`` in a process that sees two CPU devices."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run(
        [sys.executable, str(CHECK)], capture_output=True, text=True, timeout=1200, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_rows_are_split_over_both_devices(two_device_results):
    assert two_device_results["sharded"] == [True, True]
    assert two_device_results["padded_rows"] == 1  # 301 rows: one masked row pads the split


@pytest.mark.parametrize(
    "quantity",
    [
        "log_density",
        "gradient",
        "entity_user",
        "entity_item",
        "term_occupation",
        "term_genres",
        "term_hour",
    ],
)
def test_sharded_statistics_equal_single_device(two_device_results, quantity):
    """Log density, its gradient and every Gibbs system (P, b); whole sweeps are compared
    through the fits below."""
    assert two_device_results[quantity] < 1e-5, two_device_results[quantity]


@pytest.mark.parametrize("quantity", ["gibbs_sigma", "gibbs_predict", "gibbs_loglik"])
def test_fits_with_data_devices_equal_single_device_fits(two_device_results, quantity):
    """The estimator's sharded Gibbs path; its SVI path is compared over two processes."""
    assert two_device_results[quantity] < 1e-4, two_device_results[quantity]


def test_nuts_chains_run_in_parallel_over_the_devices(two_device_results):
    assert two_device_results["parallel_chains"] == ["parallel", [2, 20]]


def test_gibbs_chains_run_in_parallel_over_the_devices(two_device_results):
    """One vectorized program with its chains split over the devices draws what it draws on
    one device."""
    method, shape, diff = two_device_results["gibbs_parallel"]
    assert (method, shape) == ("parallel", [2, 3])
    assert diff < 1e-4, diff


def test_incompatible_settings_are_refused_with_two_devices(two_device_results):
    assert "minibatch SVI runs on one device" in two_device_results["minibatch_error"]
    assert "run the chains 'vectorized' or 'sequential'" in two_device_results["parallel_error"]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    """Runs ``multihost_check.py`` as two processes joined by ``jax.distributed`` on a local
    port: the multi-host set-up of docs/scaling.md, with one CPU device per process."""
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    logs = tmp_path_factory.mktemp("multihost")
    # output goes to files, not pipes: a process blocked on a full pipe would stall the other
    # one in a collective
    files = [(open(logs / f"{i}.out", "w+"), open(logs / f"{i}.err", "w+")) for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(MULTIHOST), str(i), str(port)], stdout=out, stderr=err, env=env
        )
        for i, (out, err) in enumerate(files)
    ]
    try:
        codes = [p.wait(timeout=900) for p in procs]
    finally:
        for p in procs:
            p.kill()
    outs = []
    for code, (out, err) in zip(codes, files, strict=True):
        out.seek(0), err.seek(0)
        assert code == 0, err.read()[-3000:]
        outs.append(json.loads(out.read().strip().splitlines()[-1]))
        out.close(), err.close()
    return outs


@pytest.mark.slow
def test_rows_split_over_two_processes_fit_as_on_one_device(two_process_results):
    first, second = two_process_results
    assert [first["process"], second["process"]] == [0, 1]
    for out in two_process_results:
        assert (out["processes"], out["devices"], out["local_devices"]) == (2, 2, 1)
        assert out["data_devices"] == 2  # "all" spans both processes
    for quantity in ("svi_loss", "svi_predict", "gibbs_sigma", "gibbs_predict"):
        assert first[quantity] < 1e-4, (quantity, first[quantity])  # process 0 compares
    # both processes hold the same replicated posterior
    assert first["gibbs_mean_prediction"] == second["gibbs_mean_prediction"]


def test_pad_rows_masks_the_padding():
    arrays = {"entity": {"user": np.array([3, 1, 2], np.int32)}, "terms": {}}
    padded, y = sharding.pad_rows(arrays, np.array([1.0, 2.0, 3.0], np.float32), 4)
    np.testing.assert_array_equal(padded["entity"]["user"], [3, 1, 2, 0])
    np.testing.assert_array_equal(padded["row_mask"], [1, 1, 1, 0])
    np.testing.assert_array_equal(y, [1, 2, 3, 0])


@pytest.mark.parametrize("value", [0, 5, "two", 1.5, True])
def test_data_devices_beyond_the_visible_devices_are_refused(toy, value):
    X, y = toy
    model = bfm.BayesianMF(rank=1, inference="svi", data_devices=value, progress_bar=False)
    with pytest.raises(ValueError, match=rf"data_devices: got {value!r}; allowed None, 'all'"):
        model.fit(X, y)
    assert not hasattr(model, "draws_")
