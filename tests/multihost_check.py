"""One of two processes joined by ``jax.distributed`` (one CPU device each, gloo collectives).

Run by tests/test_sharding.py as ``python tests/multihost_check.py PROCESS_ID PORT``, once per
process. Fits the same model with the rows on this process's device alone and with the rows
split over both processes (``data_devices="all"``), and prints one JSON line comparing them.
"""

import json
import sys

import jax

process_id, port = int(sys.argv[1]), int(sys.argv[2])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id
)

import numpy as np  # noqa: E402

import bayesfm as bfm  # noqa: E402
from bayesfm import sharding  # noqa: E402

data = bfm.datasets.make_synthetic(n_users=30, n_items=20, n_obs=301, rank=2, seed=0)
fields = [
    bfm.Categorical("user_id"),
    bfm.Categorical("item_id"),
    bfm.Categorical("occupation", owner="user_id"),
    bfm.MultiHot("genres", owner="item_id"),
]


def fit(devices, inference):
    model = bfm.BayesianFM(
        rank=2,
        features=bfm.FeatureSpec(fields),
        inference=inference,
        data_devices=devices,
        progress_bar=False,
    )
    return model.fit(data.X, data.y)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


out = {
    "process": jax.process_index(),
    "processes": jax.process_count(),
    "devices": jax.device_count(),
    "local_devices": jax.local_device_count(),
    "data_devices": sharding.resolve_devices("all"),
}
probe = data.X.iloc[:50]
# the single-device reference fits run on process 0 only: the same fits on process 1 would
# only repeat its compile, on a 2-core machine that also runs the rest of the suite
reference = jax.process_index() == 0
svi = bfm.SVIConfig(num_steps=60, num_samples=50)
split = fit("all", svi)
split_pred = split.predict(probe)  # both processes, in the same order (collectives)
if reference:
    one = fit(None, svi)
    out["svi_loss"] = rel(split.draws_.loss, one.draws_.loss)
    out["svi_predict"] = rel(split_pred, one.predict(probe))
gibbs = bfm.GibbsConfig(num_warmup=3, num_samples=3, num_chains=2)
split = fit("all", gibbs)
split_pred = split.predict(probe)
if reference:
    one = fit(None, gibbs)
    out["gibbs_sigma"] = rel(split.draws_.samples["sigma"], one.draws_.samples["sigma"])
    out["gibbs_predict"] = rel(split_pred, one.predict(probe))
out["gibbs_mean_prediction"] = float(np.mean(split_pred))
print(json.dumps(out), flush=True)
