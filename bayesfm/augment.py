"""Probit data augmentation for the Gibbs sampler (Albert & Chib, 1993).

A probit or ordered-probit observation is a latent utility ``u ~ N(eta, 1)`` seen through
thresholds: ``y = 1[u > 0]`` for the binary probit, ``y = k`` iff ``c_{k-1} < u <= c_k`` for
the ordered probit (``c_{-1} = -inf``, ``c_{C-1} = +inf``). Given the utilities, the FM is a
regression with unit noise precision, so every conjugate block of the regression sampler
applies unchanged; the utilities themselves are drawn from their truncated-normal
conditionals.

The cutpoints are updated with the utilities integrated out (Cowles, 1996): a slice
sampler on each coordinate of their unconstrained form targets
``p(c | eta, y) ∝ p(c) prod_n [Phi(c_{y_n} - eta_n) - Phi(c_{y_n - 1} - eta_n)]``, and the
utilities are then drawn given the new cutpoints. This is a valid blocked update of
``(c, u)``. The classic update of ``c`` given ``u`` is exact too, but its support, the gap
between the largest utility of one class and the smallest of the next, shrinks with the
number of rows, so it barely moves on real data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr, ndtri
from numpyro.distributions.transforms import OrderedTransform

from .fm import ordered_probit_log_probs

__all__ = [
    "truncated_normal",
    "utility_bounds",
    "cutpoint_log_target",
    "update_cutpoints",
    "CUTPOINT_PRIOR_SCALE",
]

# the model's prior on the unconstrained cutpoints (bayesfm.fm.sample_globals)
CUTPOINT_PRIOR_SCALE = 3.0
_SLICE_WIDTH = 0.5
_STEP_OUT = 16
_SHRINK = 40


def truncated_normal(
    key: jax.Array, mean: jnp.ndarray, lower: jnp.ndarray, upper: jnp.ndarray
) -> jnp.ndarray:
    """Draw ``N(mean, 1)`` truncated to ``(lower, upper)`` elementwise (bounds may be inf).

    Inverse CDF, computed in the left tail (an interval right of the mean is mirrored) where
    ``ndtr`` keeps its relative precision. When both bounds lie so deep in the tail that
    their probabilities underflow, the exponential tail approximation
    ``bound - Exp(1) / |bound|`` is used instead.
    """
    a, b = lower - mean, upper - mean
    mirror = a > 0
    lo, hi = jnp.where(mirror, -b, a), jnp.where(mirror, -a, b)  # now hi <= 0 or lo < 0
    k_u, k_e = jax.random.split(key)
    u = jax.random.uniform(k_u, jnp.shape(mean), minval=1e-7, maxval=1.0 - 1e-7)
    p_lo, p_hi = ndtr(lo), ndtr(hi)
    z = ndtri(p_lo + u * (p_hi - p_lo))
    tail = hi - jax.random.exponential(k_e, jnp.shape(mean)) / jnp.maximum(-hi, 1.0)
    z = jnp.where((p_hi - p_lo > 0) & jnp.isfinite(z), z, tail)
    z = jnp.clip(z, lo, hi)
    return mean + jnp.where(mirror, -z, z)


def utility_bounds(y: jnp.ndarray, task: str, cutpoints: jnp.ndarray | None = None):
    """``(lower, upper)`` of each row's utility given its label ``y``."""
    if task == "binary":
        positive = y > 0.5
        return jnp.where(positive, 0.0, -jnp.inf), jnp.where(positive, jnp.inf, 0.0)
    edges = jnp.concatenate([jnp.array([-jnp.inf]), cutpoints, jnp.array([jnp.inf])])
    k = y.astype(jnp.int32)
    return edges[k], edges[k + 1]


def cutpoint_log_target(
    x: jnp.ndarray, eta: jnp.ndarray, y: jnp.ndarray, weight: jnp.ndarray | float = 1.0
) -> jnp.ndarray:
    """Log density of the unconstrained cutpoints ``x`` given ``eta``, utilities integrated
    out: the model's ``Normal(0, 3)`` prior on ``x`` plus the ordered-probit likelihood.
    ``weight`` (0 or 1 per row) drops padded rows."""
    c = OrderedTransform()(x)
    log_probs = ordered_probit_log_probs(eta, c)
    loglik = jnp.take_along_axis(log_probs, y.astype(jnp.int32)[:, None], axis=-1)[:, 0]
    prior = -0.5 * jnp.sum((x / CUTPOINT_PRIOR_SCALE) ** 2)
    return prior + jnp.sum(weight * loglik)


def _slice_coordinate(key, x, i, log_target):
    """One slice-sampling update of ``x[i]`` (stepping out, then shrinkage; Neal, 2003)."""
    k_level, k_place, k_split, k_shrink = jax.random.split(key, 4)

    def at(value):
        return log_target(x.at[i].set(value))

    x0 = x[i]
    level = at(x0) - jax.random.exponential(k_level)
    left = x0 - _SLICE_WIDTH * jax.random.uniform(k_place)
    right = left + _SLICE_WIDTH
    # at most _STEP_OUT steps in all, split at random between the sides (needed for
    # reversibility when the limit is reached)
    n_left = jnp.floor(_STEP_OUT * jax.random.uniform(k_split)).astype(jnp.int32)
    n_right = _STEP_OUT - 1 - n_left

    def step_out(bound, direction, limit):
        def cond(carry):
            b, n = carry
            return (n < limit) & (at(b) > level)

        def body(carry):
            return carry[0] + direction * _SLICE_WIDTH, carry[1] + 1

        return jax.lax.while_loop(cond, body, (bound, jnp.int32(0)))[0]

    left, right = step_out(left, -1.0, n_left), step_out(right, 1.0, n_right)

    def shrink(carry):
        lo, hi, _, _, n, k = carry
        k, sub = jax.random.split(k)
        cand = lo + (hi - lo) * jax.random.uniform(sub)
        inside = at(cand) > level
        lo = jnp.where(~inside & (cand < x0), cand, lo)
        hi = jnp.where(~inside & (cand >= x0), cand, hi)
        return lo, hi, cand, inside, n + 1, k

    def cond(carry):
        return ~carry[3] & (carry[4] < _SHRINK)

    *_, cand, found, _, _ = jax.lax.while_loop(
        cond, shrink, (left, right, x0, jnp.bool_(False), jnp.int32(0), k_shrink)
    )
    # after _SHRINK rejections the bracket has closed on x0: keeping x0 changes nothing
    return x.at[i].set(jnp.where(found, cand, x0))


def update_cutpoints(
    key: jax.Array,
    cutpoints: jnp.ndarray,
    eta: jnp.ndarray,
    y: jnp.ndarray,
    weight: jnp.ndarray | float = 1.0,
) -> jnp.ndarray:
    """One slice-sampling sweep over the unconstrained cutpoints, utilities integrated out;
    returns the new (ordered) cutpoints."""
    transform = OrderedTransform()
    x = transform.inv(cutpoints)

    def log_target(x):
        return cutpoint_log_target(x, eta, y, weight)

    for i, k in enumerate(jax.random.split(key, x.shape[0])):
        x = _slice_coordinate(k, x, i, log_target)
    return transform(x)
