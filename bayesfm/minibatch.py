"""Minibatch SVI: the likelihood subsampled by rows that are fed from host memory.

The guide is mean-field Normal in the unconstrained space of every latent site, as in the
full-batch path (``AutoNormal`` with ``TraceMeanField_ELBO``), so draws and everything
downstream are shared. What differs is the stochastic ELBO of one batch of ``B`` rows out of
``N``::

    (N / B) sum_batch E_q log p(y | theta)
      - sum_global KL(q || p)
      - sum_levels [level in batch] / pi_level * KL(q_level || p(. | hyper))

``pi_level`` is the probability that a level (a user, an item) appears in a batch of ``B``
rows, so every term is unbiased. A level's variational parameters then get a gradient only
in the steps whose batch touches it, and a lazy Adam updates exactly those rows (and their
moments); global sites (hyperparameters, noise, shared feature groups) move every step.

Two implementations of a step give the same updates. While the users and items are few next
to the batch (at most ``ROWS_PATH_RATIO x B``), a step makes a few dense, vectorized passes
over every level's parameters and masks the untouched rows. With more levels, a step gathers
the touched levels' rows (found on the host), updates them and scatters them back, so its
cost follows the batch and not the number of users and items.

The rows stay on the host: each jitted call runs ``steps_per_call`` optimization steps on a
stacked block of batches, gathered from a host-side permutation per epoch, so the device
never holds the full design. Entity-owned features (genres, implicit sets) are aggregated per
entity in every step and stay on the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions import Normal
from numpyro.distributions.kl import kl_divergence
from numpyro.distributions.transforms import (
    IdentityTransform,
    IndependentTransform,
    biject_to,
)
from scipy.special import gammaln

from .data import ROW, Encoded, _bucket
from .fm import ModelSpec, fm_model
from .inference import PosteriorDraws, SVIConfig, compile_timer, guide_draws_normal

__all__ = ["RowBatches", "run_minibatch_svi"]

_ADAM_B1, _ADAM_B2, _ADAM_EPS, _CLIP = 0.9, 0.999, 1e-8, 10.0
_INIT_SCALE = 0.05
# per-level work is dense below this many levels per batch row; rows are gathered above it
ROWS_PATH_RATIO = 4


@dataclass
class RowBatches:
    """Host-side per-row arrays of a training table, ready to be cut into batches.

    Row-level terms (fields that belong to no entity) are stored padded per row, ``(N, m)``,
    so that a batch has a static shape; padded slots have value 0 and add nothing.
    """

    entity: dict[str, np.ndarray]
    row_terms: dict[str, tuple[np.ndarray, np.ndarray]]
    y: np.ndarray

    @classmethod
    def from_encoded(cls, enc: Encoded, spec: ModelSpec, y: np.ndarray) -> RowBatches:
        row_terms = {}
        for t in spec.structure.terms:
            if t.carrier != ROW:
                continue
            unit, index, value = enc.terms[t.dim]
            counts = np.bincount(unit, minlength=enc.n_rows)
            width = _bucket(int(counts.max(initial=1)), 1)
            order = np.argsort(unit, kind="stable")
            unit, index, value = unit[order], index[order], value[order]
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            pos = np.arange(len(unit)) - starts[unit]
            idx2 = np.zeros((enc.n_rows, width), np.int32)
            val2 = np.zeros((enc.n_rows, width), np.float32)
            idx2[unit, pos], val2[unit, pos] = index, value
            row_terms[t.dim] = (idx2, val2)
        entity = {d: np.asarray(i, np.int32) for d, i in enc.entity_index.items()}
        return cls(entity, row_terms, np.asarray(y))

    @property
    def n_rows(self) -> int:
        return len(self.y)

    def take(self, rows: np.ndarray) -> dict[str, Any]:
        """The arrays of ``rows`` (any shape of row indices) as a host pytree."""
        return {
            "entity": {d: a[rows] for d, a in self.entity.items()},
            "row_terms": {d: (i[rows], v[rows]) for d, (i, v) in self.row_terms.items()},
            "y": self.y[rows],
        }

    def split(self, rows: np.ndarray) -> RowBatches:
        """A new table with only ``rows``."""
        part = self.take(rows)
        return RowBatches(part["entity"], part["row_terms"], part["y"])


def touched_levels(block: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
    """Add, per batch and entity, the distinct levels the batch touches (``uniq``, in order
    of first appearance, padded with the out-of-range index ``n_levels``) and each row's
    position among them, so that ``uniq[position] == entity``. Done on the host with a hash
    table (``pandas.factorize``): sorting on the device cost more than the rest of a step."""
    block = dict(block)
    block["uniq"], block["position"] = {}, {}
    for d, n in sizes.items():
        idx = block["entity"][d]
        uniq = np.full(idx.shape, n, np.int32)
        position = np.empty(idx.shape, np.int32)
        for i, row in enumerate(idx):
            codes, levels = pd.factorize(row, sort=False)
            uniq[i, : len(levels)], position[i] = levels, codes
        block["uniq"][d], block["position"][d] = uniq, position
    return block


def _model_data(batch: dict[str, Any], owned_terms: dict[str, Any]) -> dict[str, Any]:
    """The model's ``data`` pytree for one batch: row terms flattened with sorted units."""
    terms = dict(owned_terms)
    for d, (idx, val) in batch["row_terms"].items():
        b, width = idx.shape
        terms[d] = {
            "unit": jnp.repeat(jnp.arange(b, dtype=jnp.int32), width),
            "index": idx.reshape(-1),
            "value": val.reshape(-1),
        }
    return {"entity": batch["entity"], "terms": terms}


def inclusion_weights(rows: RowBatches, spec: ModelSpec, batch_size: int) -> dict[str, np.ndarray]:
    """``1 / pi`` per level of every entity: pi = P(level appears in a batch of B rows)."""
    out = {}
    n, b = rows.n_rows, batch_size
    for d, n_levels in spec.structure.entities:
        counts = np.bincount(rows.entity[d], minlength=n_levels).astype(np.float64)
        # batches are drawn without replacement: P(miss) = C(N - n_j, B) / C(N, B)
        rest = n - counts
        log_miss = gammaln(rest + 1) - gammaln(np.maximum(rest - b, 0) + 1)
        log_miss += gammaln(n - b + 1) - gammaln(n + 1)
        pi = np.where(rest >= b, -np.expm1(log_miss), 1.0)
        out[d] = (1.0 / np.maximum(pi, 1e-12)).astype(np.float32)
    return out


def _site_info(spec: ModelSpec, init_values: dict, probe_batch: dict, owned_terms: dict):
    """Transforms to the unconstrained space and which sites are per-entity (local)."""
    supports = {}

    def record(batch):
        # traced abstractly (eval_shape): no op-by-op execution, so nothing is compiled
        model = handlers.substitute(partial(fm_model, spec=spec), data=init_values)
        tr = handlers.trace(model).get_trace(
            _model_data(batch, owned_terms), jnp.float32(0.0), batch["y"]
        )
        for name, site in tr.items():
            if site["type"] == "sample" and not site["is_observed"]:
                supports[name] = site["fn"].support
        return jnp.zeros(())

    jax.eval_shape(record, probe_batch)
    transforms, local = {}, {}
    entity_dims = {d for d, _ in spec.structure.entities}
    for name, support in supports.items():
        transforms[name] = biject_to(support)
        for d in entity_dims:
            if name in (f"w_{d}", f"v_{d}"):
                local[name] = d
    return transforms, local


def _prior_normal(fn, rows: jnp.ndarray):
    """Location and scale of a (possibly expanded, independent) Normal prior at ``rows``."""
    base = fn
    while hasattr(base, "base_dist"):
        base = base.base_dist
    shape = fn.batch_shape + fn.event_shape
    out_shape = rows.shape + shape[1:]

    def at_rows(a):
        a = jnp.asarray(a)
        lead = len(shape) - a.ndim  # dimensions the prior broadcasts over
        if lead > 0 or a.shape[0] == 1:
            # shared across levels: broadcasting to every level and gathering would make
            # the gradient a scatter into a zeros table of all levels, O(levels) per step
            return jnp.broadcast_to(a[0] if lead == 0 else a, out_shape)
        return a[rows]

    return at_rows(base.loc), at_rows(base.scale)


def _neg_elbo(
    glob, rows, tables, uniq, weight, batch, owned_terms, key, *, spec, transforms, local, n_total
):
    """Negative stochastic ELBO of one batch (one particle).

    ``glob`` holds the variational parameters of the global sites; ``rows`` those of the
    levels in ``uniq`` (the levels the batch touches, per entity, padded with an
    out-of-range index). Without entity-owned features the model runs on those rows alone
    (the batch's rows re-indexed into ``uniq``), so a step costs O(batch). Otherwise the
    per-entity sums need every level, and ``tables`` (the full location tables) fill in,
    without gradient, the levels outside the batch, which the batch's likelihood never reads.
    """
    loc, scale, z = _draw({**glob, **rows}, key)
    values = {k: transforms[k](z[k]) for k in glob}
    data = _model_data(batch, owned_terms)
    if owned_terms:
        # entity-owned features are summed per entity over every level: full tables
        for k, d in local.items():
            values[k] = jax.lax.stop_gradient(tables[k]).at[uniq[d]].set(z[k], mode="drop")
    else:
        # compact: the model sees only the touched levels, and rows index them by position
        values.update({k: z[k] for k in local})
        data["entity"] = batch["position"]

    def local_kl(name, q, fn):
        if name not in local:
            return None
        # analytic KL of each touched level to its prior, weighted by 1 / P(in a batch)
        d, event = local[name], len(fn.event_shape)
        loc_p, scale_p = _prior_normal(fn, jnp.minimum(uniq[d], fn.batch_shape[0] - 1))
        kl = kl_divergence(q, Normal(loc_p, scale_p))
        kl = jnp.sum(kl, axis=tuple(range(1, 1 + event))) if event else kl
        return jnp.sum(weight[d] * kl)

    return -_site_elbo(spec, values, data, batch, n_total, (loc, scale, z), transforms, local_kl)


def _draw(var: dict, key: jax.Array) -> tuple[dict, dict, dict]:
    """``(loc, scale, z)``: one reparametrized draw ``z = loc + scale * eps`` of every site."""
    loc = {k: v["loc"] for k, v in var.items()}
    # one flat draw: a threefry call per site makes XLA's compilation several times slower
    flat, unravel = ravel_pytree(loc)
    eps = unravel(jax.random.normal(key, flat.shape))
    scale = {k: jnp.exp(v["log_scale"]) for k, v in var.items()}
    return loc, scale, {k: loc[k] + scale[k] * eps[k] for k in loc}


def _site_elbo(spec, values, data, batch, n_total, draw, transforms, local_kl) -> jnp.ndarray:
    """The ELBO estimate from the model's trace at ``values``: the batch's likelihood scaled
    by N / B, minus ``local_kl(name, q, prior)`` for per-entity sites (it returns None for
    the others) and minus the KL of every other site."""
    loc, scale, z = draw
    tr = handlers.trace(handlers.substitute(partial(fm_model, spec=spec), data=values)).get_trace(
        data, batch["offset"], batch["y"]
    )
    b = batch["y"].shape[0]
    elbo = 0.0
    for name, site in tr.items():
        if site["type"] != "sample":
            continue
        fn = site["fn"]
        if site["is_observed"]:
            elbo = elbo + (n_total / b) * jnp.sum(fn.log_prob(site["value"]))
            continue
        q = Normal(loc[name], scale[name])
        kl = local_kl(name, q, fn)
        if kl is None:
            event = len(fn.event_shape)
            kl = _global_kl(
                q.to_event(event) if event else q, fn, transforms[name], z[name], values[name]
            )
        elbo = elbo - kl
    return elbo


def _global_kl(q, fn, t, z, value):
    """KL(q || prior) of a global site: analytic where it exists, else one-sample."""
    try:
        if not _is_identity(t):
            raise NotImplementedError
        return jnp.sum(kl_divergence(q, fn))
    except NotImplementedError:
        log_p = fn.log_prob(value) + t.log_abs_det_jacobian(z, value)
        return jnp.sum(q.log_prob(z) - log_p)


def _is_identity(t) -> bool:
    base = t.base_transform if isinstance(t, IndependentTransform) else t
    return isinstance(base, IdentityTransform)


def _adam(p, m, v, g, lr, step):
    """One Adam update of arrays ``p`` with moments ``m``, ``v`` (gradient clipped)."""
    g = jnp.clip(g, -_CLIP, _CLIP)
    m = _ADAM_B1 * m + (1 - _ADAM_B1) * g
    v = _ADAM_B2 * v + (1 - _ADAM_B2) * g * g
    c1, c2 = 1.0 - _ADAM_B1 ** (step + 1), 1.0 - _ADAM_B2 ** (step + 1)
    return p - lr * (m / c1) / (jnp.sqrt(v / c2) + _ADAM_EPS), m, v


def _run_block_rows(
    state, blocks, owned_terms, inv_pi, offset, *, spec, transforms, local, n_total, cfg: SVIConfig
):
    """``steps_per_call`` optimization steps over a stacked block of batches (one program).

    Each step gathers the variational parameters and Adam moments of the levels its batch
    touches, updates those rows (a lazy Adam) and writes them back, so its cost grows with
    the batch, not with the number of users and items. Global sites move every step.
    """
    sizes = {d: w.shape[0] for d, w in inv_pi.items()}
    loss_fn = partial(_neg_elbo, spec=spec, transforms=transforms, local=local, n_total=n_total)

    def one(carry, batch):
        params, (m_all, v_all), step, key = carry
        key, sub = jax.random.split(key)
        batch = {**batch, "offset": offset}
        uniq = batch["uniq"]
        weight = {d: inv_pi[d].at[uniq[d]].get(mode="fill", fill_value=0.0) for d in sizes}

        def gather(tree, name):
            return {
                part: a.at[uniq[local[name]]].get(mode="fill", fill_value=0.0)
                for part, a in tree[name].items()
            }

        glob = {k: v for k, v in params.items() if k not in local}
        rows = {k: gather(params, k) for k in local}
        tables = {k: params[k]["loc"] for k in local}
        loss, (g_glob, g_rows) = jax.value_and_grad(loss_fn, argnums=(0, 1))(
            glob, rows, tables, uniq, weight, batch, owned_terms, sub
        )
        ok = jnp.isfinite(loss) & batch["active"]  # skip non-finite steps and padding steps
        lr = cfg.learning_rate * cfg.lr_decay ** (step / cfg.num_steps)
        new_params, new_m, new_v = dict(params), dict(m_all), dict(v_all)
        for k in glob:
            upd = {
                part: _adam(
                    glob[k][part], m_all[k][part], v_all[k][part], g_glob[k][part], lr, step
                )
                for part in glob[k]
            }
            new_params[k], new_m[k], new_v[k] = (
                {part: jnp.where(ok, upd[part][i], old[k][part]) for part in upd}
                for i, old in enumerate((params, m_all, v_all))
            )
        for k, d in local.items():
            # padded slots of uniq are out of range, so their writes are dropped
            idx = jnp.where(ok, uniq[d], sizes[d])
            m_rows, v_rows = gather(m_all, k), gather(v_all, k)
            new_params[k], new_m[k], new_v[k] = {}, {}, {}
            for part in rows[k]:
                p1, m1, v1 = _adam(
                    rows[k][part], m_rows[part], v_rows[part], g_rows[k][part], lr, step
                )
                new_params[k][part] = params[k][part].at[idx].set(p1, mode="drop")
                new_m[k][part] = m_all[k][part].at[idx].set(m1, mode="drop")
                new_v[k][part] = v_all[k][part].at[idx].set(v1, mode="drop")
        step = step + batch["active"].astype(step.dtype)
        return (new_params, (new_m, new_v), step, key), loss

    return jax.lax.scan(one, state, blocks)


def _neg_elbo_dense(params, batch, owned_terms, inv_pi, key, *, spec, transforms, local, n_total):
    """Negative stochastic ELBO of one batch (one particle), every level's parameters dense."""
    loc, scale, z = _draw({k: params[k] for k in transforms}, key)
    values = {name: t(z[name]) for name, t in transforms.items()}
    touched = {
        d: jnp.zeros(w.shape[0], jnp.float32).at[batch["entity"][d]].set(1.0)
        for d, w in inv_pi.items()
    }

    def local_kl(name, q, fn):
        if name not in local:
            return None
        # analytic KL of each level, kept only where the batch touches the level
        d, event = local[name], len(fn.event_shape)
        kl = kl_divergence(q.to_event(event) if event else q, fn)
        return jnp.sum(touched[d] * inv_pi[d] * kl)

    data = _model_data(batch, owned_terms)
    elbo = _site_elbo(spec, values, data, batch, n_total, (loc, scale, z), transforms, local_kl)
    return -elbo, touched


def _lazy_adam(params, moments, grads, touched, lr, step, local):
    """One Adam step; rows of per-entity sites move only where ``touched`` is 1."""
    m_all, v_all = moments
    new_p, new_m, new_v = {}, {}, {}
    for name in params:
        new_p[name], new_m[name], new_v[name] = {}, {}, {}
        for part, p in params[name].items():
            m0, v0 = m_all[name][part], v_all[name][part]
            p1, m1, v1 = _adam(p, m0, v0, grads[name][part], lr, step)
            if name in local:
                mask = touched[local[name]].reshape((-1,) + (1,) * (p.ndim - 1)) > 0
                p1, m1, v1 = (
                    jnp.where(mask, p1, p),
                    jnp.where(mask, m1, m0),
                    jnp.where(mask, v1, v0),
                )
            new_p[name][part], new_m[name][part], new_v[name][part] = p1, m1, v1
    return new_p, (new_m, new_v)


def _run_block_dense(
    state, blocks, owned_terms, inv_pi, offset, *, spec, transforms, local, n_total, cfg: SVIConfig
):
    """``steps_per_call`` steps over a stacked block of batches, every level dense.

    Each step costs O(batch + levels): the per-level work is a few vectorized passes over the
    tables, cheaper than gathering rows while the levels are few next to the batch.
    """

    def one(carry, batch):
        params, moments, step, key = carry
        key, sub = jax.random.split(key)
        batch = {**batch, "offset": offset}
        (loss, touched), grads = jax.value_and_grad(
            partial(
                _neg_elbo_dense, spec=spec, transforms=transforms, local=local, n_total=n_total
            ),
            has_aux=True,
        )(params, batch, owned_terms, inv_pi, sub)
        lr = cfg.learning_rate * cfg.lr_decay ** (step / cfg.num_steps)
        new_params, new_moments = _lazy_adam(params, moments, grads, touched, lr, step, local)
        ok = jnp.isfinite(loss) & batch["active"]  # skip non-finite steps and padding steps
        params, moments = jax.tree.map(
            lambda a, b: jnp.where(ok, a, b), (new_params, new_moments), (params, moments)
        )
        return (params, moments, step + batch["active"].astype(step.dtype), key), loss

    return jax.lax.scan(one, state, blocks)


def _plugin_metrics(params, batch, owned_terms, offset, *, spec, transforms, local, n_valid):
    """Held-out RMSE of E[y] and mean log density at the variational mean (plug-in)."""
    values = {name: t(params[name]["loc"]) for name, t in transforms.items()}
    data = _model_data(batch, owned_terms)
    tr = handlers.trace(handlers.substitute(partial(fm_model, spec=spec), data=values)).get_trace(
        data, offset, batch["y"]
    )
    fn = tr["y"]["fn"]
    valid = jnp.arange(batch["y"].shape[0]) < n_valid
    lpd = jnp.sum(jnp.where(valid, fn.log_prob(batch["y"]), 0.0)) / n_valid
    if spec.task == "ordinal":
        expected = jnp.sum(jnp.exp(fn.logits) * jnp.arange(fn.logits.shape[-1]), -1)
    else:
        expected = fn.mean
    err = jnp.where(valid, expected - batch["y"], 0.0)
    return jnp.sqrt(jnp.sum(err * err) / n_valid), lpd


class _BatchFeed:
    """Cuts host rows into stacked blocks of batches, reshuffling every epoch (seeded)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.rng = np.random.default_rng(seed)
        self.perm = self.rng.permutation(n)
        self.pos = 0

    def rows(self, n_batches: int) -> np.ndarray:
        need = n_batches * self.batch_size
        parts = []
        while need > 0:
            if self.pos >= self.n:
                self.perm, self.pos = self.rng.permutation(self.n), 0
            take = min(need, self.n - self.pos)
            parts.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            need -= take
        return np.concatenate(parts).reshape(n_batches, self.batch_size)


def run_minibatch_svi(
    spec: ModelSpec,
    rows: RowBatches,
    owned_terms: dict[str, Any],
    offset: float,
    cfg: SVIConfig,
    rng_key: jax.Array,
    postprocess: Callable[[dict], dict],
    init_values: dict,
    seed: int,
) -> PosteriorDraws:
    """Fit the mean-field guide on minibatches of ``rows`` and draw ``cfg.num_samples``.

    With ``cfg.holdout > 0`` a seeded share of the rows is kept out of the fit; every
    ``cfg.eval_every`` steps the plug-in RMSE and log density on them are recorded, and with
    ``cfg.patience > 0`` the fit stops once the log density has not improved for that many
    evaluations.
    """
    t_start = time.perf_counter()
    rng = np.random.default_rng([seed, 7])
    held = None
    if cfg.holdout > 0:
        n_held = max(1, int(round(cfg.holdout * rows.n_rows)))
        perm = rng.permutation(rows.n_rows)
        held, rows = rows.split(np.sort(perm[:n_held])), rows.split(np.sort(perm[n_held:]))
    b = cfg.batch_size
    if b > rows.n_rows:
        raise ValueError(
            f"batch_size: got {b}; must be at most the number of training rows "
            f"({rows.n_rows}{' after the holdout' if held is not None else ''})"
        )
    owned = jax.tree.map(jnp.asarray, owned_terms)
    inv_pi = {d: jnp.asarray(w) for d, w in inclusion_weights(rows, spec, b).items()}
    inv_pi_sizes = {d: w.shape[0] for d, w in inv_pi.items()}
    probe = jax.tree.map(jnp.asarray, rows.take(np.arange(b)))
    transforms, local = _site_info(spec, init_values, probe, owned)
    params = {
        name: {
            "loc": t.inv(jnp.asarray(init_values[name], jnp.float32)),
            "log_scale": jnp.full(jnp.shape(init_values[name]), np.log(_INIT_SCALE), jnp.float32),
        }
        for name, t in transforms.items()
    }
    zeros = jax.tree.map(jnp.zeros_like, params)
    k_fit, k_draw = jax.random.split(rng_key)
    state = (params, (zeros, jax.tree.map(jnp.zeros_like, params)), jnp.int32(0), k_fit)
    statics = dict(spec=spec, transforms=transforms, local=local)
    # gather the touched rows when the levels outnumber the batch; else dense passes are cheaper
    by_rows = sum(inv_pi_sizes.values()) > ROWS_PATH_RATIO * b
    run_block = jax.jit(
        partial(
            _run_block_rows if by_rows else _run_block_dense,
            **statics,
            n_total=float(rows.n_rows),
            cfg=cfg,
        ),
        donate_argnums=0,
    )
    evaluate = None
    if held is not None:
        pad = _bucket(held.n_rows)
        idx = np.concatenate([np.arange(held.n_rows), np.zeros(pad - held.n_rows, np.int64)])
        held_batch = jax.tree.map(jnp.asarray, held.take(idx))
        evaluate = jax.jit(partial(_plugin_metrics, **statics, n_valid=held.n_rows))
    per_call = max(1, min(cfg.steps_per_call, cfg.num_steps))
    feed = _BatchFeed(rows.n_rows, b, seed)
    offset_j = jnp.float32(offset)
    losses, monitor = [], {"step": [], "rmse": [], "lpd": []}
    best, stale, done = -np.inf, 0, 0
    bar = _progress(cfg)
    steady_s, steady_steps = 0.0, 0  # calls after the first (compiled) one

    def next_block(done: int) -> tuple[dict, int]:
        block = rows.take(feed.rows(per_call))
        if by_rows:
            block = touched_levels(block, inv_pi_sizes)
        n_active = min(per_call, cfg.num_steps - done)
        block["active"] = np.arange(per_call) < n_active
        return block, n_active

    with compile_timer() as ct:
        block, n_active = next_block(0)
        while done < cfg.num_steps:
            t_call = time.perf_counter()
            state, loss = run_block(state, block, owned, inv_pi, offset_j)
            before, done = done, done + n_active
            if done < cfg.num_steps:
                # the call runs asynchronously: cut the next block on the host meanwhile
                block, n_active = next_block(done)
            losses.append(np.asarray(loss)[: done - before])
            if before > 0:
                steady_s += time.perf_counter() - t_call
                steady_steps += per_call
            if bar is not None:
                bar.update(done - before)
            if evaluate is not None and (
                done // cfg.eval_every > before // cfg.eval_every or done >= cfg.num_steps
            ):
                rmse, lpd = (float(x) for x in evaluate(state[0], held_batch, owned, offset_j))
                monitor["step"].append(done)
                monitor["rmse"].append(rmse)
                monitor["lpd"].append(lpd)
                if bar is not None:
                    bar.set_postfix(holdout_rmse=f"{rmse:.4f}")
                stale = 0 if lpd > best + 1e-4 * abs(best) else stale + 1
                best = max(best, lpd)
                if cfg.patience and stale >= cfg.patience:
                    break
        params = jax.block_until_ready(state[0])
    if bar is not None:
        bar.close()
    timings = {"svi_compile_s": ct["compile_s"], "svi_total_s": time.perf_counter() - t_start}
    if steady_steps:
        timings["svi_step_s"] = steady_s / steady_steps
    timings["minibatch_update"] = "rows" if by_rows else "dense"  # type: ignore[assignment]
    t0 = time.perf_counter()
    loc = {k: v["loc"] for k, v in params.items()}
    scale = {k: jnp.exp(v["log_scale"]) for k, v in params.items()}
    draw = jax.jit(partial(guide_draws_normal, num_samples=cfg.num_samples))
    samples = postprocess({k: np.asarray(v) for k, v in draw(loc, scale, k_draw).items()})
    timings["draw_s"] = time.perf_counter() - t0
    samples = {k: v[None] for k, v in samples.items()}
    loss_trace = np.concatenate(losses)
    stats = {"loss": loss_trace}
    if monitor["step"]:
        stats.update({f"holdout_{k}": np.asarray(v) for k, v in monitor.items()})
    return PosteriorDraws(samples, "svi", stats, timings, loss_trace)


def _progress(cfg: SVIConfig):
    if not cfg.progress_bar:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.num_steps, desc="minibatch SVI")
