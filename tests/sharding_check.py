"""Sharded against single-device computations; run in a process with two CPU devices.

Run by tests/test_sharding.py as ``python tests/sharding_check.py`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=2``; prints one JSON line of results.
"""

import json
from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P
from numpyro.infer.util import log_density

import bayesfm as bfm
from bayesfm import sharding
from bayesfm.data import FittedEncoder
from bayesfm.fm import ModelSpec, fm_model, initial_values
from bayesfm.gibbs import entity_systems, gibbs_plan, term_systems
from bayesfm.inference import to_jax

assert jax.device_count() == 2, jax.devices()
rng = np.random.default_rng(0)
data = bfm.datasets.make_synthetic(n_users=30, n_items=20, n_obs=301, rank=2, seed=0)
X = data.X.assign(hour=rng.normal(size=len(data.y)))  # a row-level field too
fields = [
    bfm.Categorical("user_id"),
    bfm.Categorical("item_id"),
    bfm.Categorical("occupation", owner="user_id"),
    bfm.MultiHot("genres", owner="item_id"),
    bfm.Numeric("hour"),
]
enc = FittedEncoder.fit(bfm.FeatureSpec(fields), X)
spec = ModelSpec(structure=enc.structure, rank=2)
y = (data.y - data.y.mean()).astype(np.float32)
params = dict(initial_values(spec, jax.random.PRNGKey(0)))
for g in spec.structure.groups:  # non-trivial linear weights, so every term matters
    params[f"w_{g}"] = jnp.asarray(rng.normal(0, 0.3, params[f"w_{g}"].shape), jnp.float32)
params["sigma"] = 1.0 / jnp.sqrt(params["noise_precision"])

one = enc.transform(X).arrays()
one["gibbs"] = gibbs_plan(one, spec.structure)
two, y_two = sharding.pad_rows(enc.transform(X).arrays(), y, 2)
two["gibbs"] = gibbs_plan(two, spec.structure, n_shards=2)
mesh = sharding.row_mesh(2)
args1 = (to_jax(one), jnp.float32(0.0), jnp.asarray(y))
args2 = (
    sharding.place(to_jax(two), mesh, sharding.is_training_row_array),
    jnp.float32(0.0),
    sharding.place(jnp.asarray(y_two), mesh, lambda keys: True),
)
out = {"padded_rows": int(len(y_two) - len(y))}
out["sharded"] = [
    str(args2[0]["entity"]["user"].sharding.spec) == str(P("data")),
    len(args2[0]["entity"]["user"].sharding.device_set) == 2,
]
latent = {k: v for k, v in params.items() if k != "sigma"}


def log_joint(p, args):
    return log_density(partial(fm_model, spec=spec), args, {}, p)[0]


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


lj = jax.jit(jax.value_and_grad(log_joint))
(v1, g1), (v2, g2) = lj(latent, args1), lj(latent, args2)
out["log_density"] = rel(v2, v1)
out["gradient"] = max(rel(g2[k], g1[k]) for k in g1)
for dim in ("user", "item"):
    f = partial(entity_systems, spec=spec, dim=dim)
    p1, b1 = jax.jit(f)(params, *args1)
    p2, b2 = jax.jit(partial(f, mesh=mesh))(params, *args2)
    out[f"entity_{dim}"] = max(rel(p2, p1), rel(b2, b1))
for term in spec.structure.terms:
    f = partial(term_systems, spec=spec, term=term)
    p1, b1 = jax.jit(f)(params, *args1)
    p2, b2 = jax.jit(partial(f, mesh=mesh))(params, *args2)
    out[f"term_{term.dim}"] = max(rel(p2, p1), rel(b2, b1))


def fit(devices, inference):
    model = bfm.BayesianFM(
        rank=2,
        features=bfm.FeatureSpec(fields),
        inference=inference,
        data_devices=devices,
        progress_bar=False,
    )
    return model.fit(X, data.y)


# whole sweeps: the Gibbs fits with and without data devices (their SVI fits are compared in
# multihost_check.py, rows over two processes)
gibbs = bfm.GibbsConfig(num_warmup=3, num_samples=3, num_chains=2)
a, b = fit(None, gibbs), fit(2, gibbs)
out["gibbs_sigma"] = rel(b.draws_.samples["sigma"], a.draws_.samples["sigma"])
out["gibbs_predict"] = rel(b.predict(X.iloc[:50]), a.predict(X.iloc[:50]))
# the pointwise groups, from the latent the sampler kept of each (padded, sharded) row
out["gibbs_loglik"] = rel(b.idata_.log_likelihood["y"], a.idata_.log_likelihood["y"])
# chains spread over the two devices (pmap), rows on one device
nuts = bfm.NUTSConfig(
    num_warmup=10, num_samples=20, num_chains=2, chain_method="parallel", init_svi_steps=0
)
model = fit(None, nuts)
out["parallel_chains"] = [model.timings_["chain_method"], list(model.draws_.samples["sigma"].shape)]
# Gibbs chains split over the two devices: the same draws as the vectorized program
gibbs_parallel = fit(None, replace(gibbs, chain_method="parallel"))
out["gibbs_parallel"] = [
    gibbs_parallel.timings_["chain_method"],
    list(gibbs_parallel.draws_.samples["sigma"].shape),
    rel(gibbs_parallel.draws_.samples["sigma"], a.draws_.samples["sigma"]),
]
for name, inference in (
    ("minibatch_error", bfm.SVIConfig(num_steps=5, batch_size=16)),
    ("parallel_error", bfm.GibbsConfig(num_chains=2, chain_method="parallel")),
):
    try:
        fit(2, inference)
        out[name] = "no error"
    except ValueError as err:
        out[name] = str(err)
print(json.dumps(out))
