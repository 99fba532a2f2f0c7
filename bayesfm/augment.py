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

from .fm import ordered_probit_log_lik

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
# below this standardized bound the inverse CDF loses precision in float32
_TAIL = -8.0
_TAIL_TRIES = 50


def truncated_normal(
    key: jax.Array, mean: jnp.ndarray, lower: jnp.ndarray, upper: jnp.ndarray
) -> jnp.ndarray:
    """Draw ``N(mean, 1)`` truncated to ``(lower, upper)`` elementwise (bounds may be inf).

    An interval right of the mean is mirrored, so that the standardized interval ``(lo, hi)``
    always has ``lo <= 0`` or lies left of 0. There the inverse CDF is accurate while
    ``hi >= -8``; deeper in the tail (where float32 ``ndtr`` goes subnormal and then to 0)
    an exact rejection sampler on the mirrored tail is used instead (:func:`_tail_normal`).
    """
    a, b = lower - mean, upper - mean
    mirror = a > 0
    lo, hi = jnp.where(mirror, -b, a), jnp.where(mirror, -a, b)
    k_u, k_tail = jax.random.split(key)
    u = jax.random.uniform(k_u, jnp.shape(mean), minval=1e-7, maxval=1.0 - 1e-7)
    p_lo, p_hi = ndtr(lo), ndtr(hi)
    z = ndtri(p_lo + u * (p_hi - p_lo))
    deep = hi < _TAIL
    # the tail sampler works on (-hi, -lo), right of 8; elsewhere give it a harmless interval
    tail = -_tail_normal(k_tail, jnp.where(deep, -hi, -_TAIL), jnp.where(deep, -lo, jnp.inf))
    z = jnp.clip(jnp.where(deep, tail, z), lo, hi)
    return mean + jnp.where(mirror, -z, z)


def _tail_normal(key: jax.Array, a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Exact draws of ``N(0, 1)`` truncated to ``(a, b)`` with ``a >= 8`` (Robert, 1995).

    Per element: a translated-exponential proposal ``a + Exp(a)``, accepted with probability
    ``exp(-(x - a)^2 / 2)`` (and ``x < b``), or, for a narrow interval (``a (b - a) < 1``),
    a uniform proposal on ``(a, b)`` accepted with ``exp(-(x^2 - a^2) / 2)``. Both accept
    with probability above 1/3 here; rejected elements are proposed again, all at once, up to
    ``_TAIL_TRIES`` times (a miss after that has odds below 1e-20 and keeps ``a``).
    """
    narrow = a * (b - a) < 1.0

    def propose(k):
        k_e, k_x, k_u = jax.random.split(k, 3)
        e, u = jax.random.exponential(k_e, a.shape), jax.random.uniform(k_x, a.shape)
        x = jnp.where(narrow, a + (jnp.minimum(b, a + 1.0) - a) * u, a + e / a)
        log_acc = jnp.where(narrow, -0.5 * (x * x - a * a), -0.5 * (x - a) ** 2)
        ok = (jnp.log(jax.random.uniform(k_u, a.shape)) < log_acc) & (x < b)
        return x, ok

    def body(carry):
        x, done, k, n = carry
        k, sub = jax.random.split(k)
        cand, ok = propose(sub)
        return jnp.where(done, x, cand), done | ok, k, n + 1

    def cond(carry):
        return ~jnp.all(carry[1]) & (carry[3] < _TAIL_TRIES)

    init = (a, jnp.zeros(a.shape, bool), key, jnp.int32(0))
    return jax.lax.while_loop(cond, body, init)[0]


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
    return _log_prior(x) + jnp.sum(_row_log_lik(x, eta, y, weight))


def _log_prior(x: jnp.ndarray) -> jnp.ndarray:
    return -0.5 * jnp.sum((x / CUTPOINT_PRIOR_SCALE) ** 2)


def _row_log_lik(x, eta, y, weight):
    loglik = ordered_probit_log_lik(eta, OrderedTransform()(x), y)
    return jnp.where(jnp.asarray(weight) > 0, loglik, 0.0)


def slice_coordinate(key, x, i, log_target, width: float = _SLICE_WIDTH):
    """One slice-sampling update of ``x[i]`` (stepping out, then shrinkage; Neal, 2003).

    ``log_target(x)`` is the log density up to a constant; ``width``: the initial bracket,
    which stepping out widens and shrinkage narrows.
    """
    k_level, k_place, k_split, k_shrink = jax.random.split(key, 4)

    def at(value):
        return log_target(x.at[i].set(value))

    x0 = x[i]
    level = at(x0) - jax.random.exponential(k_level)
    left = x0 - width * jax.random.uniform(k_place)
    right = left + width
    # at most _STEP_OUT steps in all, split at random between the sides (needed for
    # reversibility when the limit is reached)
    n_left = jnp.floor(_STEP_OUT * jax.random.uniform(k_split)).astype(jnp.int32)
    n_right = _STEP_OUT - 1 - n_left

    def step_out(bound, direction, limit):
        def cond(carry):
            b, n = carry
            return (n < limit) & (at(b) >= level)

        def body(carry):
            return carry[0] + direction * width, carry[1] + 1

        return jax.lax.while_loop(cond, body, (bound, jnp.int32(0)))[0]

    left, right = step_out(left, -1.0, n_left), step_out(right, 1.0, n_right)

    def shrink(carry):
        lo, hi, _, _, n, k = carry
        k, sub = jax.random.split(k)
        cand = lo + (hi - lo) * jax.random.uniform(sub)
        inside = at(cand) >= level
        lo = jnp.where(~inside & (cand < x0), cand, lo)
        hi = jnp.where(~inside & (cand >= x0), cand, hi)
        return lo, hi, cand, inside, n + 1, k

    def cond(carry):
        return ~carry[3] & (carry[4] < _SHRINK)

    *_, cand, found, _, _ = jax.lax.while_loop(
        cond, shrink, (left, right, x0, jnp.bool_(False), jnp.int32(0), k_shrink)
    )
    # capping the tries keeps detailed balance: a move x0 -> x1 that takes k tries has a
    # mirror move x1 -> x0 that takes as many, so the cap removes both alike
    return x.at[i].set(jnp.where(found, cand, x0))


def update_cutpoints(
    key: jax.Array,
    cutpoints: jnp.ndarray,
    eta: jnp.ndarray,
    y: jnp.ndarray,
    weight: jnp.ndarray | float = 1.0,
) -> jnp.ndarray:
    """One slice-sampling sweep over the unconstrained cutpoints, utilities integrated out;
    returns the new (ordered) cutpoints.

    Each coordinate's slice compares log densities *relative to the current point*, summed
    row by row: the absolute log likelihood is about -N, whose float32 rounding (a whole nat
    at N = 1e7) would otherwise swamp the slice level's Exp(1) draw and bias the chain.
    """
    transform = OrderedTransform()

    def coordinate(i, carry):
        x, key = carry
        key, sub = jax.random.split(key)
        base_prior, base_rows = _log_prior(x), _row_log_lik(x, eta, y, weight)

        def relative(x_new):
            rows = _row_log_lik(x_new, eta, y, weight) - base_rows
            return _log_prior(x_new) - base_prior + jnp.sum(rows)

        return slice_coordinate(sub, x, i, relative), key

    x, _ = jax.lax.fori_loop(0, cutpoints.shape[0], coordinate, (transform.inv(cutpoints), key))
    return transform(x)
