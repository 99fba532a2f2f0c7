"""Exact rotations of the factor dimensions (for the Gibbs sampler).

Every FM prediction depends on the factors only through dot products ``<v_i, v_j>``, so
turning *every* group's factor table by one orthogonal matrix, ``V_g -> V_g R``, leaves the
likelihood unchanged. Only the priors see the turn: factor dimension ``f`` of group ``g``
has its own Normal–Gamma hyperparameters ``(mu_gf, lambda_gf)``. With those integrated out
(a partially collapsed step: the sweep redraws them from their conditional right after), a
column ``x`` of ``n`` values has the marginal density

``log p(x) = const - (alpha0 + n / 2) log(beta0 + (S - T^2 / n) / 2
+ gamma0 n (T / n - mu0)^2 / (2 (gamma0 + n)))``

with ``S = sum x^2`` and ``T = sum x``. A Givens turn of dimensions ``(f, h)`` by ``theta``
maps each group's ``(S, T)`` of the two columns in closed form from the group's Gram matrix
and column sums, so the target along the orbit costs O(groups) per evaluation.

Why: with the hyperparameters held fixed, single-site Gibbs moves a factor dimension's scale
(how much of the signal it carries, and so its precision) only by a slow random walk, and
chains settle into different configurations of factor scales (docs/benchmarks_gibbs.md).
Collapsing the precisions lets a turn hand signal from one dimension to another in one step.

Each pair of dimensions takes a few random-walk Metropolis steps on ``theta`` with symmetric
proposals. A rotation has unit Jacobian and the angle's Haar measure is ``d theta``, so each
step leaves the posterior invariant (Liu & Sabatti, 2000, generalized Gibbs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtr

__all__ = ["ROTATION_SCALES", "rotation_normal_count", "collapsed_log_density", "rotate_factors"]

# proposal scales (radians) of the Metropolis steps per pair: normal increments, small to
# large, then a uniform increment in (-pi/2, pi/2) (None); each is symmetric
ROTATION_SCALES = (0.02, 0.1, 0.5, None)


def _rounds(rank: int) -> np.ndarray:
    """Every pair of dimensions once, in rounds of disjoint pairs (the circle method of a
    round-robin tournament): (rounds, pairs per round, 2). With an odd rank one pair per
    round holds the dummy index ``rank`` and turns nothing."""
    if rank < 2:
        return np.zeros((0, 0, 2), np.int32)
    size = rank + rank % 2
    others = list(range(1, size))
    rounds = []
    for _ in range(size - 1):
        line = [0] + others
        rounds.append([(line[i], line[size - 1 - i]) for i in range(size // 2)])
        others = others[-1:] + others[:-1]
    return np.sort(np.array(rounds, np.int32), axis=-1)


def rotation_normal_count(rank: int) -> int:
    """Standard normals :func:`rotate_factors` uses: two per step, per (padded) pair."""
    return int(np.prod(_rounds(rank).shape[:2])) * len(ROTATION_SCALES) * 2


def collapsed_log_density(
    sq: jnp.ndarray, total: jnp.ndarray, n: jnp.ndarray, alpha0, beta0, gamma0, mu0
) -> jnp.ndarray:
    """Log marginal density, up to a constant in ``(sq, total)``, of factor columns under the
    Normal–Gamma prior with ``(mu, lambda)`` integrated out, entry by entry.

    ``sq``, ``total``: sums of squares and sums of the columns; ``n``: their lengths
    (broadcast).
    """
    mean = total / n
    rate = beta0 + 0.5 * (sq - total * mean) + 0.5 * gamma0 * n * (mean - mu0) ** 2 / (gamma0 + n)
    return -(alpha0 + 0.5 * n) * jnp.log(rate)


def _turned(gram, sums, f, h, theta):
    """Sums of squares and sums of columns ``f`` and ``h`` (vectors of disjoint pairs) of
    every group after the turns ``v_f' = c v_f - s v_h``, ``v_h' = s v_f + c v_h``:
    (groups, pairs, 2) each."""
    c, s = jnp.cos(theta), jnp.sin(theta)
    gff, ghh, gfh = gram[:, f, f], gram[:, h, h], gram[:, f, h]
    sq_f = c * c * gff - 2.0 * c * s * gfh + s * s * ghh
    sq_h = s * s * gff + 2.0 * c * s * gfh + c * c * ghh
    t_f = c * sums[:, f] - s * sums[:, h]
    t_h = s * sums[:, f] + c * sums[:, h]
    return jnp.stack([sq_f, sq_h], -1), jnp.stack([t_f, t_h], -1)


def _givens(size: int, f, h, theta) -> jnp.ndarray:
    """The product of the disjoint turns ``(f[i], h[i], theta[i])``, (size, size)."""
    c, s = jnp.cos(theta), jnp.sin(theta)
    r = jnp.eye(size)
    return r.at[f, f].set(c).at[h, h].set(c).at[h, f].set(-s).at[f, h].set(s)


def rotate_factors(
    tables: list[jnp.ndarray], normals: jnp.ndarray, alpha0, beta0, gamma0, mu0
) -> tuple[list[jnp.ndarray], jnp.ndarray]:
    """Turn every factor table by one orthogonal matrix drawn by Metropolis, pair by pair.

    The pairs come in rounds of disjoint pairs (:func:`_rounds`). Turns of disjoint pairs
    touch different columns and the collapsed target is a sum over columns, so the pairs of
    a round are independent given the rest and take their Metropolis steps side by side.

    Parameters
    ----------
    tables : list of arrays (levels_g, rank)
        The factor tables of all groups (every group must be included: the likelihood is
        invariant only when all of them turn together).
    normals : array (rotation_normal_count(rank),)
        Standard normals: per step, one for the proposal and one whose ``log Phi`` is the
        log of the uniform acceptance variate.
    alpha0, beta0, gamma0, mu0 : float
        The Normal–Gamma hyperprior of the factor dimensions.

    Returns
    -------
    tables : list of arrays
        ``V_g Q`` for every group.
    accepted : array ()
        Fraction of Metropolis steps accepted on real pairs (for tests and tuning).
    """
    rank = tables[0].shape[1]
    rounds = _rounds(rank)
    if rounds.size == 0:
        return tables, jnp.float32(0.0)
    # an odd rank gets a dummy dimension of zeros; its pair never turns
    size = rank + rank % 2
    padded = [jnp.pad(t, ((0, 0), (0, size - rank))) for t in tables]
    real = jnp.asarray(rounds[..., 1] < rank)
    n = jnp.array([t.shape[0] for t in tables], jnp.float32)[:, None, None]
    gram = jnp.stack([t.T @ t for t in padded])
    sums = jnp.stack([t.sum(0) for t in padded])
    steps = len(ROTATION_SCALES)
    scales = jnp.asarray([np.nan if sc is None else sc for sc in ROTATION_SCALES], jnp.float32)
    z = normals.reshape(rounds.shape[0], rounds.shape[1], steps, 2)

    def log_target(gram, sums, f, h, theta):
        sq, total = _turned(gram, sums, f, h, theta)
        per = collapsed_log_density(sq, total, n, alpha0, beta0, gamma0, mu0)
        return jnp.sum(per, axis=(0, 2))  # one value per pair

    def one_round(carry, inputs):
        gram, sums, q, accepted = carry
        pairs, is_real, z_round = inputs
        f, h = pairs[:, 0], pairs[:, 1]
        theta = jnp.zeros(f.shape)
        lp = log_target(gram, sums, f, h, theta)

        # the steps run in a loop, not unrolled: each unrolled log target is compiled again
        # (MovieLens ua MF, 200 sweeps, 2-core CPU, four fits each: compile 3.4-3.5 s ->
        # 2.8-3.0 s, sampling 1.84-2.10 s -> 1.88-2.53 s, fit 6.05-6.61 s -> 5.63-6.32 s)
        def step(i, state):
            theta, lp, accepted = state
            z_step = z_round[:, i]
            # a uniform turn in (-pi/2, pi/2) where the scale is NaN: Phi(z) is uniform
            uniform = jnp.isnan(scales[i])
            increment = jnp.where(
                uniform, jnp.pi * (ndtr(z_step[:, 0]) - 0.5), scales[i] * z_step[:, 0]
            )
            proposal = theta + increment
            lp_new = log_target(gram, sums, f, h, proposal)
            accept = is_real & (log_ndtr(z_step[:, 1]) < lp_new - lp)
            theta = jnp.where(accept, proposal, theta)
            lp = jnp.where(accept, lp_new, lp)
            return theta, lp, accepted + jnp.sum(accept)

        theta, lp, accepted = jax.lax.fori_loop(0, steps, step, (theta, lp, accepted))
        r = _givens(size, f, h, theta)
        gram = jnp.einsum("ki,gkl,lj->gij", r, gram, r)
        return (gram, sums @ r, q @ r, accepted), None

    init = (gram, sums, jnp.eye(size), jnp.float32(0.0))
    (_, _, q, accepted), _ = jax.lax.scan(one_round, init, (jnp.asarray(rounds), real, z))
    q = q[:rank, :rank]
    n_real = int(np.sum(rounds[..., 1] < rank))
    return [t @ q for t in tables], accepted / (n_real * steps)
