"""Metropolis moves of an owned attribute's factor mean against its owner (Gibbs sampler).

Every row of a user holds the user's *side total* ``s_u = v_u + sum_l A[u, l] v_l`` over the
features the user owns (gender, occupation, age, an implicit set), and an FM sees those
features through ``s_u`` and through the within-side interaction
``(|s_u|^2 - q_u) / 2``, ``q_u = |v_u|^2 + sum_l A[u, l]^2 |v_l|^2``. So the move

``v_l + delta`` for every level ``l`` of one attribute, ``v_u - a_u delta`` with
``a_u = sum_l A[u, l]`` for every owner ``u``, and ``w_u + (q_u' - q_u) / 2``

keeps every ``s_u`` and every within-side interaction plus weight, hence every prediction,
whatever other fields the rows hold. It moves how much of the side's common factor the
attribute carries rather than its owners: with a one-hot attribute (a gender, an
occupation) that split is pinned only by the priors, and single-site Gibbs crossed it so
slowly that chains disagreed on it (MovieLens-100K, FM, 4 x (200 + 500) sweeps: R-hat 2.4 of
the inner product of the user and gender factor means).

The target is the priors: the attribute's and the owner's factor columns with their
Normal–Gamma hyperparameters integrated out (the sweep redraws them right after), and the
owner's weights given theirs. (With the weights' hyperparameters integrated out too, their
mean moved freely and the global bias followed slowly: w0 R-hat 1.010 and 1.029 on
MovieLens-100K ua, two seeds, against 1.016 and 1.001 given them.) Translations compose (the
weights' shear telescopes), with unit Jacobian, so random-walk Metropolis steps on each
``delta_f`` from 0 leave the posterior invariant (generalized Gibbs, Liu & Sabatti, 2000).
The weights couple the dimensions, so the steps go dimension by dimension, each O(owners).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr

from .data import ROW, Structure
from .priors import PriorConfig
from .rotation import collapsed_log_density

__all__ = [
    "MEAN_SHIFT_SCALES",
    "MEAN_SHIFT_STEPS",
    "apply_mean_shift",
    "owner_mean_shifts",
    "shifted_terms",
]

# proposal sd of the steps on delta_f, cycled; fixed numbers keep each proposal symmetric.
# On MovieLens-100K (FM) the owners' weights pin delta_f to about 0.02-0.03 per sweep.
MEAN_SHIFT_SCALES = (0.01, 0.03, 0.1)
MEAN_SHIFT_STEPS = 6


def shifted_terms(structure: Structure) -> list:
    """The terms with a mean shift: every field owned by an entity."""
    return [t for t in structure.terms if t.carrier != ROW]


def _owner_sums(params: dict, data: dict, term, n_owner: int):
    """Per owner: ``a_u = sum_l A[u, l]``, ``c_u = sum_l A[u, l]^2`` and
    ``b_u = sum_l A[u, l]^2 v_l`` (owners, rank)."""
    td = data["terms"][term.dim]
    x, unit = td["value"], td["unit"]

    def seg(z):
        return jax.ops.segment_sum(z, unit, n_owner, indices_are_sorted=True)

    v = params[f"v_{term.dim}"]
    return seg(x), seg(x * x), seg((x * x)[:, None] * v[td["index"]])


def _half_q_change(v_owner, a, c, b, delta):
    """``(q_u' - q_u) / 2`` per owner (and dimension) for the shift ``delta``; the arguments
    broadcast: whole tables with ``a``, ``c`` as columns, or one dimension's columns."""
    return -a * v_owner * delta + 0.5 * (a * a + c) * delta**2 + b * delta


def apply_mean_shift(params: dict, data: dict, term, delta: jnp.ndarray, sums=None) -> dict:
    """The move for ``delta`` (rank,): attribute ``term``'s factors plus ``delta``, its owners'
    minus ``a_u delta``, their weights plus the change of ``q_u / 2``. ``sums``: the owners'
    ``(a, c, b)`` at ``params`` (computed when not given)."""
    d = term.carrier
    v_owner = params[f"v_{d}"]
    a, c, b = _owner_sums(params, data, term, v_owner.shape[0]) if sums is None else sums
    dw = jnp.sum(_half_q_change(v_owner, a[:, None], c[:, None], b, delta), -1)
    return {
        **params,
        f"v_{term.dim}": params[f"v_{term.dim}"] + delta,
        f"v_{d}": v_owner - a[:, None] * delta,
        f"w_{d}": params[f"w_{d}"] + dw,
    }


def owner_mean_shifts(
    params: dict, data: dict, terms: list, normals: jnp.ndarray, prior: PriorConfig
) -> tuple[dict, jnp.ndarray]:
    """Random-walk Metropolis on the mean shift ``delta`` of each attribute in ``terms`` (all
    owned by one entity) against that owner, one attribute after the other in one scan,
    each started at 0, with the hyperparameters of the moved factor columns integrated out and
    the owner's weights given theirs.

    ``normals`` (attributes, steps, 2, rank): per step and dimension one normal for the
    proposal and one whose ``log Phi`` is the log uniform of the acceptance. Returns the new
    parameters and the shifts (attributes, rank).
    """
    hyper = (prior.alpha0, prior.beta0, prior.gamma0, prior.mu0)
    d = terms[0].carrier
    v_owner, w = params[f"v_{d}"], params[f"w_{d}"]
    n_owner, rank = v_owner.shape
    sums = [_owner_sums(params, data, t, n_owner) for t in terms]
    a_all, c_all, b_all = (jnp.stack(x) for x in zip(*sums, strict=True))
    attrs = [params[f"v_{t.dim}"] for t in terms]
    att_sq = jnp.stack([jnp.sum(v * v, 0) for v in attrs])  # (attributes, rank)
    att_tot = jnp.stack([jnp.sum(v, 0) for v in attrs])
    n_att = jnp.asarray([v.shape[0] for v in attrs], w.dtype)

    def column(x):
        return collapsed_log_density(jnp.sum(x * x), jnp.sum(x), jnp.float32(x.shape[0]), *hyper)

    # the owner's weights given their hyperparameters: integrated out, their mean could
    # move freely, and the global bias followed slowly (w0 R-hat 1.01-1.03 against 1.00)
    w_mu, w_lam = params[f"w_mu_{d}"], params[f"w_lambda_{d}"]

    def weights(wt):
        return -0.5 * w_lam * jnp.sum((wt - w_mu) ** 2)

    def attribute_column(i, f, x):
        # attribute i's column f after a total shift x: O(1) from its sums at the start
        n = n_att[i]
        sq = att_sq[i, f] + 2.0 * x * att_tot[i, f] + n * x * x
        return collapsed_log_density(sq, att_tot[i, f] + n * x, n, *hyper)

    def step(carry, inputs):
        deltas, v, wt = carry
        i, f, z, scale = inputs
        a, c = a_all[i], c_all[i]
        x_old = deltas[i, f]
        move = scale * z[0]
        v_col = v[:, f]
        b_now = b_all[i][:, f] + c * x_old  # sum_l A[u, l]^2 v_l at the current shift
        v_new = v_col - a * move
        wt_new = wt + _half_q_change(v_col, a, c, b_now, move)
        log_ratio = (
            column(v_new)
            - column(v_col)
            + attribute_column(i, f, x_old + move)
            - attribute_column(i, f, x_old)
            + weights(wt_new)
            - weights(wt)
        )
        accept = log_ndtr(z[1]) < log_ratio  # Phi(Z) is uniform for a standard normal Z
        deltas = deltas.at[i, f].set(jnp.where(accept, x_old + move, x_old))
        v = v.at[:, f].set(jnp.where(accept, v_new, v_col))
        return (deltas, v, jnp.where(accept, wt_new, wt)), None

    n_terms, steps = normals.shape[:2]
    scales = jnp.resize(jnp.asarray(MEAN_SHIFT_SCALES, w.dtype), steps)
    # attribute-major, then step, then dimension
    index = jnp.repeat(jnp.arange(n_terms), steps * rank)
    dims = jnp.tile(jnp.arange(rank), n_terms * steps)
    flat = normals.transpose(0, 1, 3, 2).reshape(-1, 2)
    per_step = jnp.tile(jnp.repeat(scales, rank), n_terms)
    start = (jnp.zeros((n_terms, rank), w.dtype), v_owner, w)
    (deltas, v_owner, w), _ = jax.lax.scan(step, start, (index, dims, flat, per_step))
    out = {**params, f"v_{d}": v_owner, f"w_{d}": w}
    for i, t in enumerate(terms):
        out[f"v_{t.dim}"] = params[f"v_{t.dim}"] + deltas[i]
    return out, deltas
