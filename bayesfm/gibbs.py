"""Blocked Gibbs sampler for the Bayesian FM (the libFM / BPMF algorithm) as a NumPyro kernel.

Every parameter is drawn from its closed-form conditional; one sweep visits, in order:

1. **Entities** (one-hot fields such as user and item). The FM is linear in the block
   ``theta_u = (w_u, v_u)`` of one level: ``f_n = c_n + w_u + v_u . a_n`` with
   ``a_n = s_n - v_u``. Levels never share a row, so all of them are drawn at once from
   ``N(P^-1 b, P^-1)``, ``P = Lambda + tau sum_n z_n z_n^T``, ``z_n = (1, a_n)``: BPMF's update.
   The Gram sums use padded per-level row blocks (bucketed by level size) and batched
   matmuls instead of scatter-adds, then one batched Cholesky. The draw is over-relaxed
   (``ENTITY_RELAX``; still exact), which cuts the random walk of users against items.
2. **Terms** (multi-hot, numeric, owned categorical, implicit sets). Levels of one field can
   co-occur in a row, so they are drawn *one level at a time* (a ``lax.scan``); each step is
   still an exact joint draw of ``(w_j, v_j)``, because the FM is linear in one level's block
   once its self-interaction is removed. A field owned by an entity is reduced to per-entity
   sufficient statistics first (Rendle's relational blocks), so a step costs
   O(entities holding the level x rank^2), not O(rows). Levels are padded to a few widths
   (one scan per width) rather than all to the most frequent level's count.
3. The global bias and group means, the ridge moves (:mod:`bayesfm.ridge`), a joint turn of
   every factor table with the factor hyperparameters integrated out
   (:mod:`bayesfm.rotation`, ``FACTOR_ROTATION``), for MF a scale exchange between the user
   and item factors, also collapsed (step 4), then the Normal–Gamma hyperparameters of every
   group (drawn jointly from their Normal–Gamma conditional) and the noise precision.
4. With exactly two one-hot fields and nothing else (MF), a *scale exchange*: factor ``f`` of
   every user is multiplied by ``c_f`` and of every item divided by it, which leaves every
   prediction unchanged. Plain Gibbs moves along this direction only by a slow random walk
   (the ratings pin down the product of the two factor scales, not their ratio). Metropolis
   steps on ``log c_f`` with the factor hyperparameters integrated out
   (:mod:`bayesfm.exchange`, ``COLLAPSED_EXCHANGE``) cross it in one sweep; the older
   Metropolis chain given the hyperparameters (:func:`scale_exchange`, run after them when
   ``COLLAPSED_EXCHANGE`` is off) moved only as far as the precisions allowed.
5. With two entities that own every other feature (an FM of users and items with their side
   features, no row-level field), the same exchange between the two *sides*
   (:func:`bayesfm.exchange.side_exchange`, ``SIDE_EXCHANGE``): every table on the user's
   side times ``c_f``, on the item's side over it, with each entity's linear weight giving
   back the change of its within-side interactions. And for every attribute an entity owns,
   a shift of the attribute's factor mean against its owner's factors
   (:mod:`bayesfm.attribute_shift`, ``ATTRIBUTE_MEAN_SHIFT``), which no prediction sees
   either: how much of the side's common factor a user's gender carries rather than the user.

With feature fields the sweep computes each row's predictor sums once and carries them
through the entity and term blocks to the intercepts' draw, each block adding what it moved,
instead of recomputing the predictor before every block (:func:`_entity_moved`,
:func:`_update_term`); the noise precision's draw recomputes them after the moves of step 3.

For the binary (probit) and ordinal tasks each sweep starts with an Albert–Chib step (see
:mod:`bayesfm.augment`): a move of the predictor's scale against the unit noise
(:mod:`bayesfm.probit_scale`, ``PROBIT_SCALE_MOVE``) and the cutpoints (ordinal), both with
the latent utilities integrated out, then the utilities from their truncated normals. Given
the utilities, the blocks above are those of a regression with unit noise precision, and
there is no noise step.

The kernel exposes the same site names as :func:`bayesfm.fm.fm_model` (centred), so MCMC,
ArviZ and all downstream code treat its draws like NUTS draws.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr
from jax.sharding import PartitionSpec as P
from numpyro.infer.mcmc import MCMCKernel

from .attribute_shift import MEAN_SHIFT_STEPS, owner_mean_shifts, shifted_terms
from .augment import (
    CUTPOINT_PRIOR_SCALE,
    truncated_normal,
    update_cutpoints,
    utility_bounds,
)
from .data import ROW, Structure, _bucket
from .exchange import exchange_scales, side_exchange
from .fm import ModelSpec, fm_components, fm_model, initial_values
from .linalg import draw_gaussian, gaussian_from_normals
from .probit_scale import probit_scale_move
from .ridge import bias_shift, factor_shift, factor_shift_normal_count, owned_shift, ridge_plan
from .rotation import rotate_factors, rotation_normal_count
from .sharding import DATA_AXIS

__all__ = [
    "FMGibbs",
    "GibbsState",
    "gibbs_plan",
    "gibbs_sweep",
    "unroll_entity_draws",
    "draw_gaussian",
    "normal_gamma_draw",
    "normal_gamma_draws",
    "normal_gamma_from_variates",
    "normal_gamma_shapes",
    "entity_systems",
    "term_systems",
    "scale_exchange",
]

# Adler over-relaxation of the entity draws (linalg.gaussian_from_normals; 0 is plain
# Gibbs). Users given items and items given users are strongly coupled, so plain draws
# random-walk. On MovieLens-100K ua (4 chains x 700 sweeps, docs/benchmarks_gibbs.md) -0.8
# took the median R-hat of 200 probe predictions from 1.004 to 1.001 (MF) and from 1.006 to
# 1.002 (FM), at no measurable cost per sweep
ENTITY_RELAX = -0.8
# turn the factor dimensions jointly, collapsed over their precisions (bayesfm.rotation)
FACTOR_ROTATION = True
# MF: exchange each dimension's scale between users and items with its precisions integrated
# out (bayesfm.exchange). On MovieLens-100K ua (4 x (200 + 500) sweeps, seeds 0 and 1) the
# factor precisions' R-hat went from 1.05/1.04 (median) and 1.86/2.02 (sorted maximum) to
# 1.004-1.009 against the exchange given the precisions; the worst probe cell did not follow
COLLAPSED_EXCHANGE = True
# FM: the same exchange between the user's and the item's side (bayesfm.exchange, when every
# feature belongs to one of the two), and each owned attribute's factor mean against its
# owner (bayesfm.attribute_shift). On MovieLens-100K ua (FM, 4 x (200 + 500) sweeps, seeds 0
# and 1) the worst factor-table mean norm R-hat went from 2.22/2.30 to 1.63/1.79 and the worst
# probe R-hat from 1.109/1.040 to 1.085/1.033; w0's went from 1.003 to 1.016 with seed 0
SIDE_EXCHANGE = True
ATTRIBUTE_MEAN_SHIFT = True
# each entity's factor-mean shift (bayesfm.ridge) with the means it moves integrated out,
# then redrawn (given the means it moves about 1 / sqrt(n_levels lambda) per sweep). Off: on
# MovieLens-100K ua (4 x (200 + 500) sweeps; MF seeds 0-3, FM 0-2) it mixed the factor means
# (MF user-item mean inner product ESS 13 -> 411) and raised the smallest probe ESS in 5 of 7
# runs, but lowered sigma's ESS in FM (596-651 -> 367-586); the worst probe and sigma R-hats
# fell on both sides of 1.01 either way (docs/benchmarks_gibbs.md, rows '/collapsedshift')
COLLAPSED_FACTOR_SHIFT = False
# probit tasks: move the scale of every weight, factor and cutpoint against the unit noise
# (bayesfm.probit_scale); without it that scale drifts for hundreds of sweeps
PROBIT_SCALE_MOVE = True
# Metropolis steps of the scale exchange per sweep (each O(rank) once sums are formed)
_SCALE_STEPS = 8
# a term's levels are split into one more block width only if that saves this many padded
# entries: each width is one more compiled scan body (about 0.5 s on a 2-core CPU), while
# 8192 entries cost about 1-2 ms per sweep at rank 10, the same over a 200-sweep fit
TERM_BLOCK_COST = 8192
# entity blocks a fit must draw (sweeps x chains x levels) before its entity draws unroll
# (unroll_entity_draws). Unrolling costs about 0.6 s more compile and saves 0.2-0.4 us per
# block drawn (2-core CPU, rank 10, batches of 1,682 and 4 x 1,682), so it pays from about
# 2 million blocks: MovieLens-100K MF at 200 sweeps and one chain draws 0.67 million, at
# 4 x 700 sweeps 9.4 million
ENTITY_UNROLL_MIN_DRAWS = 2_000_000


class GibbsState(NamedTuple):
    """State of the Gibbs chain: the current values of all sites, and the random key.

    ``latent``: with ``FMGibbs(collect_latent=True)``, each training row's latent predictor
    at the current values (what :mod:`bayesfm.predict` would compute from ``z``); else None.
    """

    z: dict[str, jnp.ndarray]
    rng_key: jax.Array
    latent: jnp.ndarray | None = None


class _Variates:
    """The standard normal and unit-rate gamma variates of one sweep, each kind drawn in one
    call and handed out in order at trace time.

    Every random-number call site compiles to its own kernel (on a 2-core CPU about 0.3 s for
    a normal and 1 s for a gamma); a sweep had a dozen, half of its compile time. The
    variates do not depend on the chain's state, so drawing them up front and giving each
    block its own slice leaves every conditional draw exact.
    """

    def __init__(self, key: jax.Array, n_normal: int, gamma_shapes: jnp.ndarray):
        k_normal, k_gamma = jax.random.split(key)
        # the barrier materializes the variates once: otherwise XLA fuses the generator into
        # every consumer of a slice, compiling (and running) it again there
        self._normal, self._gamma = jax.lax.optimization_barrier(
            (jax.random.normal(k_normal, (n_normal,)), jax.random.gamma(k_gamma, gamma_shapes))
        )
        self._taken = {"normal": 0, "gamma": 0}

    def _take(self, kind: str, pool: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
        start, size = self._taken[kind], int(np.prod(shape, dtype=np.int64))
        if start + size > pool.shape[0]:
            raise RuntimeError(f"bayesfm internal error: the sweep needs more {kind} variates")
        self._taken[kind] = start + size
        return pool[start : start + size].reshape(shape)

    def normal(self, shape: tuple[int, ...] = ()) -> jnp.ndarray:
        """The next standard normals, in ``shape``."""
        return self._take("normal", self._normal, shape)

    def gamma(self, size: int) -> jnp.ndarray:
        """The next ``size`` unit-rate gamma variates (their shapes were fixed up front)."""
        return self._take("gamma", self._gamma, (size,))

    def check_all_used(self) -> None:
        """A variate counted but never used means the counts and the sweep disagree."""
        if self._taken != {"normal": self._normal.shape[0], "gamma": self._gamma.shape[0]}:
            raise RuntimeError(f"bayesfm internal error: variates left over ({self._taken})")


# --------------------------------------------------------------------------- host-side plan
def _level_blocks(
    index: np.ndarray, n_levels: int, valid: np.ndarray, n_shards: int = 1
) -> list[dict[str, np.ndarray]]:
    """Rows of each level as padded blocks, grouped by power-of-two block size.

    The rows are split into ``n_shards`` equal contiguous parts (one per device). Returns one
    dict per size with ``levels`` (levels in the bucket) and ``rows`` (shards x levels x
    size): each shard's *local* row positions of the level, padded with the local length,
    an index that points at an appended zero row. A level gets the same block size on every
    shard (from its largest per-shard count), so all shards share one shape. Rows with
    ``valid`` False (padding) are left out.
    """
    local_n = len(index) // n_shards
    parts = []
    for s in range(n_shards):
        sl = slice(s * local_n, (s + 1) * local_n)
        pos = np.flatnonzero(valid[sl])
        idx = index[sl][pos]
        order = np.argsort(idx, kind="stable")
        counts = np.bincount(idx, minlength=n_levels)
        parts.append((pos[order], counts, np.concatenate([[0], np.cumsum(counts)])))
    most = np.max([c for _, c, _ in parts], axis=0)
    sizes = np.array([_bucket(int(c), minimum=4) for c in most])
    blocks = []
    for size in np.unique(sizes):
        levels = np.flatnonzero(sizes == size)
        rows = np.full((n_shards, len(levels), size), local_n, np.int32)
        for s, (sorted_pos, counts, starts) in enumerate(parts):
            for i, lev in enumerate(levels):
                rows[s, i, : counts[lev]] = sorted_pos[starts[lev] : starts[lev + 1]]
        blocks.append({"levels": levels.astype(np.int32), "rows": rows})
    return blocks


def gibbs_plan(
    data: dict[str, Any],
    structure: Structure,
    n_shards: int = 1,
    block_cost: int = TERM_BLOCK_COST,
) -> dict[str, Any]:
    """Index arrays the sweep needs, computed once on the host from the encoded training data.

    ``entity[d]``: per-level row blocks of entity ``d``, per shard of rows (``n_shards``
    devices; see :mod:`bayesfm.sharding`). ``terms[t]``: the levels of term ``t`` in blocks
    of a common width, each level with the positions of its entries in the term's COO
    arrays (see :func:`_term_blocks`; ``block_cost`` is its price of one more width).
    """
    entity = {}
    for d, n in structure.entities:
        idx = np.asarray(data["entity"][d])
        if len(idx) % n_shards:
            raise ValueError(f"n_shards: {n_shards} does not divide the {len(idx)} rows")
        valid = np.asarray(data["row_mask"]) > 0 if "row_mask" in data else np.ones(len(idx), bool)
        entity[d] = _level_blocks(idx, n, valid, n_shards)
    terms = {
        t.dim: _term_blocks(
            np.asarray(data["terms"][t.dim]["index"]), t.n_levels, block_cost=block_cost
        )
        for t in structure.terms
    }
    return {"entity": entity, "terms": terms, "ridge": ridge_plan(data, structure)}


def _term_blocks(
    index: np.ndarray, n_levels: int, max_blocks: int = 3, block_cost: int = TERM_BLOCK_COST
) -> list[dict]:
    """Entries of each level of a term field, as padded blocks grouped by size.

    Returns one dict per block width with ``levels`` (the levels padded to that width) and
    ``entries`` (levels x width): each level's positions in the term's COO arrays, padded
    with the position of an appended zero entry (a zero value contributes nothing to any
    sum). Padding every level to the largest one would make each scan step over an implicit
    set cost as much as its most popular member (8-9 times the actual entries on
    MovieLens). Each width costs one compiled scan body, so the widths are at most
    ``max_blocks`` powers of two, chosen to minimize the padded entries plus ``block_cost``
    per width after the first.
    """
    counts = np.bincount(index, minlength=n_levels)
    order = np.argsort(index, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    top = _bucket(int(counts.max(initial=1)))
    candidates = [1 << e for e in range(3, top.bit_length() - 1)]  # 8 .. top / 2
    best = (float(n_levels) * top, [top])
    for k in range(1, max_blocks):
        for smaller in itertools.combinations(candidates, k):
            widths = [*smaller, top]
            padded = float(np.sum(np.take(widths, np.searchsorted(widths, counts))))
            cost = padded + block_cost * k
            best = min(best, (cost, widths))
    widths = np.asarray(best[1])
    level_width = widths[np.searchsorted(widths, counts)]
    blocks = []
    for width in widths:
        levels = np.flatnonzero(level_width == width)
        if len(levels) == 0:
            continue
        entries = np.full((len(levels), int(width)), len(index), np.int32)
        for i, lev in enumerate(levels):
            entries[i, : counts[lev]] = order[starts[lev] : starts[lev + 1]]
        blocks.append({"levels": levels.astype(np.int32), "entries": entries})
    return blocks


# ---------------------------------------------------------------------------- conditionals
def normal_gamma_draw(
    x: jnp.ndarray, key: jax.Array, alpha0: float, beta0: float, gamma0: float, mu0: float
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Joint draw of ``(mu, lambda)`` given members ``x`` (levels, ...) of one group.

    Prior ``lambda ~ Gamma(alpha0, beta0)``, ``mu ~ N(mu0, 1/(gamma0 lambda))``,
    ``x_j ~ N(mu, 1/lambda)``; the posterior is Normal–Gamma, drawn exactly (lambda first,
    with mu integrated out, then mu given lambda).
    """
    return normal_gamma_draws([x], key, alpha0, beta0, gamma0, mu0)[0]


def normal_gamma_draws(
    xs: list[jnp.ndarray], key: jax.Array, alpha0: float, beta0: float, gamma0: float, mu0: float
) -> list[tuple[jnp.ndarray, jnp.ndarray]]:
    """:func:`normal_gamma_draw` for several groups at once, independently.

    One gamma and one normal draw serve every group (see :func:`normal_gamma_from_variates`).
    """
    shapes = normal_gamma_shapes(xs, alpha0)
    k_lam, k_mu = jax.random.split(key)
    gammas = jax.random.gamma(k_lam, shapes)
    normals = jax.random.normal(k_mu, shapes.shape)
    return normal_gamma_from_variates(xs, gammas, normals, beta0, gamma0, mu0)


def normal_gamma_shapes(xs: list[jnp.ndarray], alpha0: float) -> jnp.ndarray:
    """Posterior gamma shapes ``alpha0 + n / 2`` of every precision of groups ``xs``, flat."""
    return jnp.concatenate(
        [jnp.full(int(np.prod(x.shape[1:], dtype=np.int64)), alpha0 + 0.5 * x.shape[0]) for x in xs]
    )


def normal_gamma_from_variates(
    xs: list[jnp.ndarray],
    gammas: jnp.ndarray,
    normals: jnp.ndarray,
    beta0: float,
    gamma0: float,
    mu0: float,
) -> list[tuple[jnp.ndarray, jnp.ndarray]]:
    """:func:`normal_gamma_draws` given its variates: ``gammas`` unit-rate gamma variates with
    the shapes of :func:`normal_gamma_shapes` and as many standard ``normals``.

    ``lambda = gamma / rate`` is the posterior ``Gamma(alpha_n, rate)`` draw, and
    ``mu = loc + normal / sqrt((gamma0 + n) lambda)`` the Normal draw given it.
    """
    stats = []
    for x in xs:
        n = x.shape[0]
        mean = jnp.mean(x, axis=0)
        ss = jnp.sum((x - mean) ** 2, axis=0)
        rate = beta0 + 0.5 * (ss + gamma0 * n * (mean - mu0) ** 2 / (gamma0 + n))
        stats.append((n, mean, rate))
    out, start = [], 0
    for n, mean, rate in stats:
        size = mean.size
        lam = gammas[start : start + size].reshape(mean.shape) / rate
        z = normals[start : start + size].reshape(mean.shape)
        loc = (gamma0 * mu0 + n * mean) / (gamma0 + n)
        out.append((loc + z / jnp.sqrt((gamma0 + n) * lam), lam))
        start += size
    return out


def _block_prior(params: dict, group: str) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Prior precision diagonal and mean of one level's block ``(w_j, v_j)``."""
    prec = jnp.concatenate([params[f"w_lambda_{group}"][None], params[f"v_lambda_{group}"]])
    mean = jnp.concatenate([params[f"w_mu_{group}"][None], params[f"v_mu_{group}"]])
    return prec, mean


def _gram(blocks: list[dict], z: jnp.ndarray, t: jnp.ndarray, n_levels: int, mesh=None):
    """Per-level ``sum_n z_n z_n^T`` and ``sum_n z_n t_n`` over the rows of each level.

    With a ``mesh``, each device sums its own rows (``shard_map``) and ``psum`` adds them.
    """
    levels = [b["levels"] for b in blocks]
    rows = [b["rows"] for b in blocks]
    if mesh is None:
        return _local_gram(z, t, levels, [r[0] for r in rows], n_levels)

    def per_device(z, t, levels, rows):
        gram, shift = _local_gram(z, t, levels, [r[0] for r in rows], n_levels)
        return jax.lax.psum(gram, DATA_AXIS), jax.lax.psum(shift, DATA_AXIS)

    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(DATA_AXIS), P(DATA_AXIS), P(), P(DATA_AXIS)),
        out_specs=(P(), P()),
    )(z, t, levels, rows)


def _local_gram(z, t, levels, rows, n_levels: int):
    """:func:`_gram` over one device's rows; ``rows`` index ``z`` with ``len(z)`` as padding."""
    z_pad = jnp.concatenate([z, jnp.zeros((1, z.shape[1]), z.dtype)])
    t_pad = jnp.concatenate([t, jnp.zeros((1,), t.dtype)])
    grams, shifts = [], []
    for r in rows:
        zb, tb = z_pad[r], t_pad[r]
        # broadcast-and-reduce (a loop fusion), not a dot: threaded Eigen dots inside
        # MCMC's while loop deadlocked XLA:CPU here
        grams.append(jnp.sum(zb[..., :, None] * zb[..., None, :], axis=1))
        shifts.append(jnp.sum(zb * tb[..., None], axis=1))
    lev = jnp.concatenate(levels)
    d = z.shape[1]
    gram = jnp.zeros((n_levels, d, d), z.dtype).at[lev].set(jnp.concatenate(grams))
    shift = jnp.zeros((n_levels, d), z.dtype).at[lev].set(jnp.concatenate(shifts))
    return gram, shift


def _noise_precision(params, task: str) -> jnp.ndarray:
    """tau of the regression; 1 for the probit tasks, whose utilities have unit variance."""
    return params["noise_precision"] if task == "regression" else jnp.float32(1.0)


def _bias(params) -> jnp.ndarray:
    """The global bias; the ordered probit has none (its cutpoints absorb it)."""
    return params.get("w0", jnp.float32(0.0))


def _residual(params, data, offset, y, structure, rows=None):
    """``y - f`` and the per-row sums ``(lin, s, q)`` of :func:`bayesfm.fm.fm_components`.

    ``rows``: those sums as the sweep carries them (see :func:`_entity_moved`); computed
    from ``params`` when not given.
    """
    lin, s, q = fm_components(params, data, structure) if rows is None else rows
    f = offset + _bias(params) + lin + 0.5 * (jnp.sum(s * s, -1) - q)
    return y - f, lin, s, q


def _entity_moved(rows, data, dim: str, old: dict, new: dict):
    """The per-row sums ``(lin, s, q)`` after entity ``dim``'s table moved from ``old`` to
    ``new`` (parameter dicts): only the rows' gathered entries change.

    The sweep carries these sums from block to block instead of recomputing the whole
    predictor (with every implicit set aggregated again) before each block.
    """
    if rows is None:  # nothing carried: each block recomputes them
        return None
    idx = data["entity"][dim]
    w_old, v_old, w_new, v_new = old[f"w_{dim}"], old[f"v_{dim}"], new[f"w_{dim}"], new[f"v_{dim}"]
    lin, s, q = rows
    sq = jnp.sum(v_new * v_new, -1) - jnp.sum(v_old * v_old, -1)
    return lin + (w_new - w_old)[idx], s + (v_new - v_old)[idx], q + sq[idx]


def _entity_system(
    params, data, plan, offset, y, spec: ModelSpec, dim: str, n: int, mesh=None, rows=None
):
    """Precision and shift ``(P, b)`` of every level's block ``(w_u, v_u)`` of entity ``dim``."""
    resid, _, s, _ = _residual(params, data, offset, y, spec.structure, rows)
    idx = data["entity"][dim]
    v_row = params[f"v_{dim}"][idx]
    a = s - v_row
    z = jnp.concatenate([jnp.ones_like(resid)[:, None], a], axis=1)
    target = resid + params[f"w_{dim}"][idx] + jnp.sum(v_row * a, -1)
    gram, shift = _gram(plan["entity"][dim], z, target, n, mesh)
    tau = _noise_precision(params, spec.task)
    prec, mean = _block_prior(params, dim)
    precision = tau * gram + jnp.vectorize(jnp.diag, signature="(k)->(k,k)")(prec)
    return precision, tau * shift + prec * mean


def _update_entity(
    params, data, plan, offset, y, spec: ModelSpec, dim: str, n: int, normals, mesh, unroll, rows
):
    """Draw ``(w_u, v_u)`` of every level of entity ``dim`` at once, given standard
    ``normals`` (levels, 1 + rank). Returns the parameters and the per-row sums."""
    precision, shift = _entity_system(params, data, plan, offset, y, spec, dim, n, mesh, rows)
    current = jnp.concatenate([params[f"w_{dim}"][:, None], params[f"v_{dim}"]], axis=1)
    theta = gaussian_from_normals(
        precision, shift, normals, current, unroll=unroll, relax=ENTITY_RELAX
    )
    new = {**params, f"w_{dim}": theta[:, 0], f"v_{dim}": theta[:, 1:]}
    return new, _entity_moved(rows, data, dim, params, new)


def _shares_entity_draw(spec: ModelSpec) -> bool:
    """Whether the entities are drawn in one loop that compiles the batched draw once."""
    return len(spec.structure.entities) > 1


def _entity_normal_count(spec: ModelSpec) -> int:
    entities, width = spec.structure.entities, 1 + spec.rank
    if _shares_entity_draw(spec):  # every entity's slice is padded to the largest
        return len(entities) * max(n for _, n in entities) * width
    return sum(n * width for _, n in entities)


def unroll_entity_draws(spec: ModelSpec, num_sweeps: int, num_chains: int = 1) -> bool | None:
    """Whether a fit of ``num_sweeps`` sweeps per chain should unroll its entity draws.

    On the CPU the batched Cholesky of the entity draws compiles in about 0.1 s looped and
    0.6-0.8 s unrolled, while each unrolled draw is faster by about 0.2-0.4 us per level
    (:mod:`bayesfm.linalg`). So a fit unrolls once it draws at least
    :data:`ENTITY_UNROLL_MIN_DRAWS` entity blocks in all.

    Parameters
    ----------
    spec : ModelSpec
        The model (its entity fields and their sizes).
    num_sweeps : int
        Sweeps per chain, warmup included.
    num_chains : int, default 1
        Chains run.

    Returns
    -------
    bool or None
        On the CPU, whether to unroll; off the CPU ``None``, the default of
        :mod:`bayesfm.linalg` (unrolled). ``None`` also without entity fields.

    Examples
    --------
    >>> from bayesfm.gibbs import unroll_entity_draws
    >>> unroll_entity_draws(model.spec_, num_sweeps=10)
    False
    """
    if jax.default_backend() != "cpu":
        return None
    entities = spec.structure.entities
    if not entities:
        return None
    levels = sum(n for _, n in entities)
    if _shares_entity_draw(spec):  # padded to the largest field
        levels = len(entities) * max(n for _, n in entities)
    return num_sweeps * num_chains * levels >= ENTITY_UNROLL_MIN_DRAWS


def _update_entities(params, data, plan, offset, y, spec: ModelSpec, variates, mesh, unroll, rows):
    """Draw every entity field in turn (users, then items, ...), each all levels at once.

    ``rows``: the per-row sums ``(lin, s, q)`` of ``params``; returns the new parameters
    and those sums for them.

    With several entities the fields go through one ``fori_loop`` whose body picks the
    field's system with ``lax.switch``, so that the batched Gaussian draw is compiled once;
    each field's system is padded to the largest field (identity precision, zero shift:
    padded levels draw noise that is never stored). Unrolled, that draw took 1.3-1.9 s to
    compile (2-core CPU, rank 10); looped, as on the CPU now (:mod:`bayesfm.linalg`), a
    draw per field compiled and sampled no faster than the shared one (MovieLens ua MF,
    200 sweeps, two fits each: compile 2.5 s against 2.2-2.4 s).
    """
    entities, width = spec.structure.entities, 1 + spec.rank
    if not _shares_entity_draw(spec):
        for d, n in entities:
            normals = variates.normal((n, width))
            params, rows = _update_entity(
                params, data, plan, offset, y, spec, d, n, normals, mesh, unroll, rows
            )
        return params, rows
    n_max = max(n for _, n in entities)
    normals = variates.normal((len(entities), n_max, width))

    def system(dim, n, params, rows):
        precision, shift = _entity_system(params, data, plan, offset, y, spec, dim, n, mesh, rows)
        current = jnp.concatenate([params[f"w_{dim}"][:, None], params[f"v_{dim}"]], axis=1)
        pad = n_max - n
        eye = jnp.broadcast_to(jnp.eye(width, dtype=precision.dtype), (pad, width, width))
        return (
            jnp.concatenate([precision, eye]),
            jnp.pad(shift, ((0, pad), (0, 0))),
            jnp.pad(current, ((0, pad), (0, 0))),
        )

    def store(dim, n, params, rows, theta):
        new = {**params, f"w_{dim}": theta[:n, 0], f"v_{dim}": theta[:n, 1:]}
        return new, _entity_moved(rows, data, dim, params, new)

    systems = [partial(system, d, n) for d, n in entities]
    stores = [partial(store, d, n) for d, n in entities]

    def one_field(i, carry):
        params, rows = carry
        precision, shift, current = jax.lax.switch(i, systems, params, rows)
        theta = gaussian_from_normals(
            precision, shift, normals[i], current, unroll=unroll, relax=ENTITY_RELAX
        )
        return jax.lax.switch(i, stores, params, rows, theta)

    return jax.lax.fori_loop(0, len(entities), one_field, (params, rows))


class _TermStats(NamedTuple):
    """Per-unit sufficient statistics of the rows, fixed while one term field is updated."""

    unit: jnp.ndarray  # entry -> unit, with a zero entry appended
    value: jnp.ndarray  # entry -> x, with a zero entry appended
    count: jnp.ndarray  # m_u: rows per unit
    rest: jnp.ndarray  # sum_n R_n
    quad: jnp.ndarray | None  # sum_n R_n R_n^T (None when each unit is one row)
    eps: jnp.ndarray  # sum_n eps_n
    eps_rest: jnp.ndarray  # sum_n eps_n R_n
    prec: jnp.ndarray  # prior precision of (w_j, v_j)
    mean: jnp.ndarray  # prior mean of (w_j, v_j)
    tau: jnp.ndarray


def _term_setup(params, data, plan, offset, y, spec: ModelSpec, term, mesh=None, rows=None):
    """Unit statistics and the field's current per-unit sums ``(B_u, L_u, Q_u)``.

    With ``B_u`` the field's part of the factor sum of unit ``u`` (an entity or a row) and
    ``R_n`` the rest of row ``n``'s sum, the rows of a unit enter level ``j``'s conditional
    only through ``m_u``, ``sum R_n``, ``sum R_n R_n^T``, ``sum eps_n`` and ``sum eps_n R_n``,
    where ``eps_n`` is the residual without the field. These stay fixed while the field is
    updated, so each level's step touches only the units holding that level.
    """
    structure = spec.structure
    g = term.dim
    td = data["terms"][g]
    unit, index, value = td["unit"], td["index"], td["value"]
    _, lin, s, q = _residual(params, data, offset, y, structure, rows)
    w, v = params[f"w_{g}"], params[f"v_{g}"]
    row_carried = term.carrier == ROW
    n_units = s.shape[0] if row_carried else structure.n_levels(term.carrier)
    xv = value[:, None] * v[index]

    def seg(x):
        return jax.ops.segment_sum(x, unit, num_segments=n_units, indices_are_sorted=True)

    sums = (seg(xv), seg(value * w[index]), seg(jnp.sum(xv * xv, -1)))
    if row_carried:
        b_row, l_row, q_row = sums
    else:
        cidx = data["entity"][term.carrier]
        b_row, l_row, q_row = (x[cidx] for x in sums)
    rest = s - b_row
    eps = (
        y - offset - _bias(params) - (lin - l_row) - 0.5 * (jnp.sum(rest * rest, -1) - (q - q_row))
    )
    if row_carried:
        count, r1, e1, er, quad = jnp.ones_like(eps), rest, eps, eps[:, None] * rest, None
    else:
        z = jnp.concatenate([jnp.ones_like(eps)[:, None], rest], axis=1)
        gram, shift = _gram(plan["entity"][term.carrier], z, eps, n_units, mesh)
        count, r1, quad = gram[:, 0, 0], gram[:, 0, 1:], gram[:, 1:, 1:]
        e1, er = shift[:, 0], shift[:, 1:]
    prec, mean = _block_prior(params, g)
    stats = _TermStats(
        unit=jnp.concatenate([unit, jnp.zeros((1,), unit.dtype)]),
        value=jnp.concatenate([value, jnp.zeros((1,), value.dtype)]),
        count=count,
        rest=r1,
        quad=quad,
        eps=e1,
        eps_rest=er,
        prec=prec,
        mean=mean,
        tau=_noise_precision(params, spec.task),
    )
    return stats, sums


def _level_system(stats: _TermStats, w, v, sums, j, entries):
    """Precision and shift ``(P, b)`` of level ``j``'s block ``(w_j, v_j)`` given the rest."""
    b_sum, l_sum, q_sum = sums
    u, x = stats.unit[entries], stats.value[entries]
    x2 = x * x
    m, r, e, re = stats.count[u], stats.rest[u], stats.eps[u], stats.eps_rest[u]
    a = b_sum[u] - x[:, None] * v[j]
    kappa = (
        -(l_sum[u] - x * w[j])
        - 0.5 * jnp.sum(a * a, -1)
        + 0.5 * (q_sum[u] - x2 * jnp.sum(v[j] * v[j]))
    )
    ra = jnp.sum(r * a, -1)
    if stats.quad is None:  # one row per unit: sum R R^T = R R^T
        qa = r * ra[:, None]
        q_w = jnp.einsum("m,mi,mj->ij", x2, r, r)
    else:
        qu = stats.quad[u]
        qa = jnp.einsum("mij,mj->mi", qu, a)
        q_w = jnp.einsum("m,mij->ij", x2, qu)
    grad = e + m * kappa - ra
    p00 = jnp.sum(x2 * m)
    p0v = jnp.einsum("m,mi->i", x2, m[:, None] * a + r)
    pvv = (
        jnp.einsum("m,mi,mj->ij", x2 * m, a, a)
        + jnp.einsum("m,mi,mj->ij", x2, a, r)
        + jnp.einsum("m,mi,mj->ij", x2, r, a)
        + q_w
    )
    b0 = jnp.sum(x * grad)
    bv = jnp.einsum("m,mi->i", x, a * grad[:, None] + re + kappa[:, None] * r - qa)
    gram = jnp.block([[p00[None, None], p0v[None, :]], [p0v[:, None], pvv]])
    precision = stats.tau * gram + jnp.diag(stats.prec)
    shift = stats.tau * jnp.concatenate([b0[None], bv]) + stats.prec * stats.mean
    return precision, shift, u, x


def term_systems(params, data, offset, y, spec: ModelSpec, term, mesh=None):
    """``(P, b)`` of every level of ``term`` given all other parameters (for tests)."""
    stats, sums = _term_setup(params, data, data["gibbs"], offset, y, spec, term, mesh)
    w, v = params[f"w_{term.dim}"], params[f"v_{term.dim}"]
    size = 1 + v.shape[-1]
    precision = jnp.zeros((term.n_levels, size, size), v.dtype)
    shift = jnp.zeros((term.n_levels, size), v.dtype)

    def one(j, entries):
        return _level_system(stats, w, v, sums, j, entries)[:2]

    for block in data["gibbs"]["terms"][term.dim]:
        p, b = jax.vmap(one)(block["levels"], block["entries"])
        precision = precision.at[block["levels"]].set(p)
        shift = shift.at[block["levels"]].set(b)
    return precision, shift


def entity_systems(params, data, offset, y, spec: ModelSpec, dim: str, mesh=None):
    """``(P, b)`` of every level of entity ``dim`` given all other parameters (for tests)."""
    n = spec.structure.n_levels(dim)
    return _entity_system(params, data, data["gibbs"], offset, y, spec, dim, n, mesh)


def _update_term(params, data, plan, offset, y, spec: ModelSpec, term, normals, mesh, rows=None):
    """Draw ``(w_j, v_j)`` level by level for a field whose levels can share a row.

    ``normals``: per block of ``plan["terms"][term.dim]``, standard normals
    (levels, 1 + rank). ``rows``: the per-row sums ``(lin, s, q)`` of ``params`` (computed
    when not given). Returns the new parameters and those sums for them.
    """
    stats, sums = _term_setup(params, data, plan, offset, y, spec, term, mesh, rows)
    start = sums
    g = term.dim

    def step(carry, inputs):
        w, v, sums = carry
        j, entries, normals = inputs
        precision, shift, u, x = _level_system(stats, w, v, sums, j, entries)
        current = jnp.concatenate([w[j][None], v[j]])
        theta = gaussian_from_normals(precision, shift, normals, current)
        dw, dv = theta[0] - w[j], theta[1:] - v[j]
        b_sum, l_sum, q_sum = sums
        b_sum = b_sum.at[u].add(x[:, None] * dv)
        l_sum = l_sum.at[u].add(x * dw)
        q_sum = q_sum.at[u].add(x * x * (jnp.sum(theta[1:] ** 2) - jnp.sum(v[j] ** 2)))
        w, v = w.at[j].set(theta[0]), v.at[j].set(theta[1:])
        return (w, v, (b_sum, l_sum, q_sum)), None

    # one scan per block width; any fixed order of the levels is a valid systematic scan
    carry = (params[f"w_{g}"], params[f"v_{g}"], sums)
    for block, block_normals in zip(plan["terms"][g], normals, strict=True):
        carry, _ = jax.lax.scan(step, carry, (block["levels"], block["entries"], block_normals))
    w, v, sums = carry
    # the field's per-unit sums moved by (B, L, Q)_end - (B, L, Q)_start; so do its rows'
    moved = [end - begin for end, begin in zip(sums, start, strict=True)]
    if term.carrier != ROW:
        moved = [m[data["entity"][term.carrier]] for m in moved]
    b_moved, l_moved, q_moved = moved
    lin, s, q = fm_components(params, data, spec.structure) if rows is None else rows
    return {**params, f"w_{g}": w, f"v_{g}": v}, (lin + l_moved, s + b_moved, q + q_moved)


def _update_intercepts(params, data, offset, y, spec: ModelSpec, normals, rows=None):
    """Joint draw of the global bias and every group's linear mean, ``(w0, mu_g ...)``.

    With ``w_j = mu_g + d_j`` and the deviations ``d_j`` held fixed, the FM is linear in
    ``(w0, mu_1, ..., mu_G)`` with regressors ``(1, sum_{j in g} x_nj ...)``. The likelihood
    only sees ``w0 + sum_g mu_g`` along a ridge for one-hot fields, which single-site updates
    cross slowly; this move (an exact Gibbs step in the ``(mu, d)`` coordinates, a
    unit-Jacobian shear) crosses it in one draw. The ordered probit has no ``w0``; its ridge
    with the cutpoints is crossed by :func:`_cutpoint_shift`. ``normals``: one standard
    normal per coefficient (see :func:`_intercept_count`).
    """
    structure, prior = spec.structure, spec.prior
    resid, *_ = _residual(params, data, offset, y, structure, rows)
    n_rows = y.shape[0]
    # the ordered probit has no global bias (the cutpoints absorb it)
    has_bias = spec.task != "ordinal"
    columns = [jnp.ones(n_rows) for _ in range(int(has_bias) + len(structure.entities))]
    for t in structure.terms:
        td = data["terms"][t.dim]
        n_units = n_rows if t.carrier == ROW else structure.n_levels(t.carrier)
        per_unit = jax.ops.segment_sum(
            td["value"], td["unit"], num_segments=n_units, indices_are_sorted=True
        )
        columns.append(per_unit if t.carrier == ROW else per_unit[data["entity"][t.carrier]])
    design = jnp.stack(columns, axis=1)
    groups = structure.groups
    bias = [params["w0"]] if has_bias else []
    beta = jnp.stack(bias + [params[f"w_mu_{g}"] for g in groups])
    bias_prec = [jnp.float32(1.0 / prior.bias_scale**2)] if has_bias else []
    prec = jnp.stack(bias_prec + [prior.gamma0 * params[f"w_lambda_{g}"] for g in groups])
    mean = jnp.concatenate([jnp.zeros(len(bias)), jnp.full(len(groups), prior.mu0)])
    tau = _noise_precision(params, spec.task)
    target = resid + jnp.sum(design * beta, axis=1)
    if "row_mask" in data:  # padded rows add nothing
        design, target = design * data["row_mask"][:, None], target * data["row_mask"]
    gram = jnp.sum(design[:, :, None] * design[:, None, :], axis=0)
    shift = jnp.sum(design * target[:, None], axis=0)
    new = gaussian_from_normals(
        tau * gram + jnp.diag(prec), tau * shift + prec * mean, normals, beta
    )
    params = dict(params)
    if has_bias:
        params["w0"] = new[0]
    for i, g in enumerate(groups, start=len(bias)):
        params[f"w_{g}"] = params[f"w_{g}"] + (new[i] - beta[i])
        params[f"w_mu_{g}"] = new[i]
    return params


def gibbs_sweep(
    params: dict[str, jnp.ndarray],
    data: dict[str, Any],
    offset: jnp.ndarray,
    y: jnp.ndarray,
    key: jax.Array,
    spec: ModelSpec,
    mesh=None,
    unroll_entities: bool | None = None,
    with_latent: bool = False,
) -> dict[str, jnp.ndarray] | tuple[dict[str, jnp.ndarray], jnp.ndarray]:
    """One full sweep over all blocks; returns the new site values (centred sites).

    ``mesh``: the device mesh the rows are sharded over (see :mod:`bayesfm.sharding`).
    ``unroll_entities``: unroll the entity draws' batched Cholesky (see
    :func:`unroll_entity_draws`; ``None``: the default of :mod:`bayesfm.linalg`).
    ``with_latent``: also return every row's latent predictor at the new values.
    """
    structure, prior = spec.structure, spec.prior
    plan = data["gibbs"]
    k_variates, k_cut, k_util = jax.random.split(key, 3)
    # the hyperparameters' precisions, then the noise precision: their gamma shapes are known
    members = [params[f"{kind}_{g}"] for g in structure.groups for kind in ("w", "v")]
    hyper_shapes = normal_gamma_shapes(members, prior.alpha0)
    gamma_shapes = [hyper_shapes]
    if spec.task == "regression":
        n_rows = jnp.sum(data["row_mask"]) if "row_mask" in data else y.shape[0]
        gamma_shapes.append(jnp.reshape(prior.noise_alpha + 0.5 * n_rows, (1,)))
    gamma_shapes = jnp.concatenate(gamma_shapes)
    variates = _Variates(k_variates, _sweep_normal_count(spec, plan), gamma_shapes)
    if spec.task != "regression":
        # probit tasks: draw the utilities, then every block below is a unit-noise regression
        params, y = _augment(params, data, offset, y, spec, k_cut, k_util)
    # the per-row sums of the predictor, carried through the blocks that move predictions.
    # Without feature fields (MF) recomputing them is two gathers, as cheap as carrying
    # them: MovieLens ua MF sampled 0.3-0.6 s slower per 200 sweeps carrying them
    rows = fm_components(params, data, structure) if structure.terms else None
    params, rows = _update_entities(
        params, data, plan, offset, y, spec, variates, mesh, unroll_entities, rows
    )
    for term in structure.terms:
        normals = [
            variates.normal(b["levels"].shape + (1 + spec.rank,)) for b in plan["terms"][term.dim]
        ]
        params, rows = _update_term(params, data, plan, offset, y, spec, term, normals, mesh, rows)
    normals = variates.normal((_intercept_count(spec),))
    params = _update_intercepts(params, data, offset, y, spec, normals, rows)
    params = _ridge_moves(params, data, spec, variates)
    if _rotates(spec):
        # collapsed over the factor hyperparameters, which are redrawn right below
        groups = structure.groups
        tables, _ = rotate_factors(
            [params[f"v_{g}"] for g in groups],
            variates.normal((rotation_normal_count(spec.rank),)),
            prior.alpha0,
            prior.beta0,
            prior.gamma0,
            prior.mu0,
        )
        params.update({f"v_{g}": t for g, t in zip(groups, tables, strict=True)})
    if _has_scale_exchange(structure) and COLLAPSED_EXCHANGE:
        # also collapsed over the factor hyperparameters
        (a, _), (b, _) = structure.entities
        params[f"v_{a}"], params[f"v_{b}"], _ = exchange_scales(
            params[f"v_{a}"],
            params[f"v_{b}"],
            variates.normal((_SCALE_STEPS, 2, spec.rank)),
            prior,
        )
    if _has_side_exchange(structure) and SIDE_EXCHANGE:
        params, _ = side_exchange(
            params, data, structure, variates.normal((_SCALE_STEPS, 2, spec.rank)), prior
        )
    if ATTRIBUTE_MEAN_SHIFT:
        for d, _ in structure.entities:
            owned = [t for t in shifted_terms(structure) if t.carrier == d]
            if owned:
                shape = (len(owned), MEAN_SHIFT_STEPS, 2, spec.rank)
                params, _ = owner_mean_shifts(params, data, owned, variates.normal(shape), prior)
    members = [params[f"{kind}_{g}"] for g in structure.groups for kind in ("w", "v")]
    n_hyper = hyper_shapes.shape[0]
    hyper = iter(
        normal_gamma_from_variates(
            members,
            variates.gamma(n_hyper),
            variates.normal((n_hyper,)),
            prior.beta0,
            prior.gamma0,
            prior.mu0,
        )
    )
    for g in structure.groups:
        params[f"w_mu_{g}"], params[f"w_lambda_{g}"] = next(hyper)
        params[f"v_mu_{g}"], params[f"v_lambda_{g}"] = next(hyper)
    if _has_scale_exchange(structure) and not COLLAPSED_EXCHANGE:
        (a, _), (b, _) = structure.entities
        params[f"v_{a}"], params[f"v_{b}"], _ = scale_exchange(
            params[f"v_{a}"],
            params[f"v_{b}"],
            params[f"v_mu_{a}"],
            params[f"v_lambda_{a}"],
            params[f"v_mu_{b}"],
            params[f"v_lambda_{b}"],
            variates.normal((_SCALE_STEPS, 2, spec.rank)),
        )
    if spec.task == "ordinal":
        for d, _ in structure.entities:
            params = _cutpoint_shift(params, spec, d, variates.normal())
    latent = None
    if spec.task == "regression":
        resid, *_ = _residual(params, data, offset, y, structure)
        # no move below changes a prediction: the noise step's residual gives the latent
        latent = y - resid
        if "row_mask" in data:  # padded rows add nothing
            resid = resid * data["row_mask"]
        rate = prior.noise_beta + 0.5 * jnp.sum(resid * resid)
        tau = variates.gamma(1)[0] / rate
        params["noise_precision"] = tau
        params["sigma"] = 1.0 / jnp.sqrt(tau)
    variates.check_all_used()
    if not with_latent:
        return params
    if latent is None:  # the probit tasks: y holds the utilities, not the labels
        resid, *_ = _residual(params, data, offset, y, structure)
        latent = y - resid
    return params, latent


def _rotates(spec: ModelSpec) -> bool:
    """Whether the sweep turns the factor dimensions (:mod:`bayesfm.rotation`)."""
    return FACTOR_ROTATION and spec.rank > 1


def _has_scale_exchange(structure: Structure) -> bool:
    """MF (exactly two entities, nothing else) has the factor-scale orbit to move along."""
    return len(structure.entities) == 2 and not structure.terms


def _has_side_exchange(structure: Structure) -> bool:
    """FM with two entities owning every other feature: the sides' scale orbit (with the
    weights' shear) keeps every prediction."""
    return (
        len(structure.entities) == 2
        and bool(structure.terms)
        and all(t.carrier != ROW for t in structure.terms)
    )


def _intercept_count(spec: ModelSpec) -> int:
    """Coefficients of :func:`_update_intercepts`: the global bias (none for the ordered
    probit) and each group's linear mean."""
    return int(spec.task != "ordinal") + len(spec.structure.groups)


def _ridge_counts(spec: ModelSpec, grams: dict) -> tuple[list[str], list, list[str]]:
    """What :func:`_ridge_moves` moves: the entities (factor shifts), the owned attributes
    with a joint move, and the entities the global bias shifts against."""
    structure = spec.structure
    entities = [d for d, _ in structure.entities]
    owned = [t for t in structure.terms if t.dim in grams]
    biased = entities if spec.task != "ordinal" else []
    return entities, owned, biased


def _sweep_normal_count(spec: ModelSpec, plan: dict) -> int:
    """Standard normals one sweep uses, block by block in :func:`gibbs_sweep`'s order."""
    structure, width = spec.structure, 1 + spec.rank
    count = _entity_normal_count(spec)
    count += sum(
        b["levels"].shape[0] * width for t in structure.terms for b in plan["terms"][t.dim]
    )
    count += _intercept_count(spec)
    entities, owned, biased = _ridge_counts(spec, plan["ridge"])
    shift_normals = factor_shift_normal_count(
        spec.rank, len(structure.groups), COLLAPSED_FACTOR_SHIFT
    )
    count += len(entities) * shift_normals + sum(t.n_levels for t in owned) + len(biased)
    count += len(structure.groups) * width  # the hyperparameter means
    if _rotates(spec):
        count += rotation_normal_count(spec.rank)
    if _has_scale_exchange(structure):  # collapsed or not, the same steps
        count += _SCALE_STEPS * 2 * spec.rank
    if _has_side_exchange(structure) and SIDE_EXCHANGE:
        count += _SCALE_STEPS * 2 * spec.rank
    if ATTRIBUTE_MEAN_SHIFT:
        count += len(shifted_terms(structure)) * MEAN_SHIFT_STEPS * 2 * spec.rank
    if spec.task == "ordinal":
        count += len(structure.entities)
    return count


def _ridge_moves(params, data, spec: ModelSpec, variates: _Variates) -> dict:
    """Exact shifts along flat directions of the likelihood (see :mod:`bayesfm.ridge`): each
    entity's factor mean against the linear weights, each owned attribute against its owner,
    then the global bias against each entity (the ordered probit has no bias;
    :func:`_cutpoint_shift` moves its cutpoints instead)."""
    structure = spec.structure
    grams = data["gibbs"]["ridge"]
    entities, owned, biased = _ridge_counts(spec, grams)
    shift_normals = factor_shift_normal_count(
        spec.rank, len(structure.groups), COLLAPSED_FACTOR_SHIFT
    )
    for d in entities:
        normals = variates.normal((shift_normals,))
        prior = spec.prior
        params = factor_shift(
            params, structure.groups, d, normals, prior.gamma0, prior.mu0, COLLAPSED_FACTOR_SHIFT
        )
    for t in owned:
        params = owned_shift(params, data, grams[t.dim], t, variates.normal((t.n_levels,)))
    for d in biased:
        params = bias_shift(params, d, spec.prior.bias_scale, variates.normal())
    return params


def _cutpoint_shift(params, spec: ModelSpec, dim: str, normal: jnp.ndarray) -> dict:
    """Exact draw along the ordinal model's location ridge through entity ``dim``.

    Adding ``delta`` to every cutpoint, to every utility and to ``w_{dim}`` and its mean
    ``w_mu_{dim}`` (each row holds one level of ``dim``) changes no likelihood term and no
    deviation ``w - w_mu``; only the priors of ``c_0`` (Normal(0, 3) on the unconstrained
    scale, where the gaps do not move) and of ``w_mu_{dim}`` see it. So ``delta`` has a
    Gaussian conditional, drawn here (a translation-group move, Liu & Wu, 1999). Without it
    the cutpoints and the bias means trade off by a slow random walk. The utilities are
    redrawn at the start of the next sweep, so they are not stored. ``normal``: one
    standard normal variate.
    """
    prior = spec.prior
    lam = prior.gamma0 * params[f"w_lambda_{dim}"]
    c0, mu = params["cutpoints"][0], params[f"w_mu_{dim}"]
    prec = 1.0 / CUTPOINT_PRIOR_SCALE**2 + lam
    mean = (-c0 / CUTPOINT_PRIOR_SCALE**2 + lam * (prior.mu0 - mu)) / prec
    delta = mean + normal / jnp.sqrt(prec)
    return {
        **params,
        "cutpoints": params["cutpoints"] + delta,
        f"w_mu_{dim}": mu + delta,
        f"w_{dim}": params[f"w_{dim}"] + delta,
    }


def _augment(params, data, offset, labels, spec: ModelSpec, key_cut, key_util):
    """Albert–Chib step of the probit tasks (see :mod:`bayesfm.augment`): the scale move
    (:mod:`bayesfm.probit_scale`) and the cutpoints (ordinal), both with the utilities
    integrated out, then the utilities given everything.
    Returns the parameters and the utilities, which take the place of ``y`` for the rest of
    the sweep."""
    params = dict(params)
    eta = -_residual(params, data, offset, jnp.float32(0.0), spec.structure)[0]
    weight = data.get("row_mask", 1.0)
    if PROBIT_SCALE_MOVE:
        key_cut, key_scale = jax.random.split(key_cut)
        params, eta = probit_scale_move(
            key_scale,
            params,
            spec.structure.groups,
            eta,
            offset,
            labels,
            weight,
            spec.task,
            spec.prior,
        )
    cutpoints = None
    if spec.task == "ordinal":
        cutpoints = update_cutpoints(key_cut, params["cutpoints"], eta, labels, weight)
        params["cutpoints"] = cutpoints
    lower, upper = utility_bounds(labels, spec.task, cutpoints)
    return params, truncated_normal(key_util, eta, lower, upper)


def scale_exchange(
    v_a: jnp.ndarray,
    v_b: jnp.ndarray,
    mu_a: jnp.ndarray,
    lam_a: jnp.ndarray,
    mu_b: jnp.ndarray,
    lam_b: jnp.ndarray,
    normals: jnp.ndarray,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Move ``(v_a[:, f], v_b[:, f]) -> (c_f v_a[:, f], v_b[:, f] / c_f)`` by Metropolis.

    The likelihood depends on ``v_a v_b^T`` only, so along this orbit only the priors
    ``v_a[:, f] ~ N(mu_a[f], 1/lam_a[f])`` (same for ``b``) and the Jacobian
    ``c^(n_a - n_b)`` matter. With ``t = log c`` and the Haar measure ``dt``, the target is

    ``log p(t) = -lam_a/2 (e^2t Sxx - 2 e^t mu_a Sx) - lam_b/2 (e^-2t Syy - 2 e^-t mu_b Sy)
    + (n_a - n_b) t``

    (sums over levels), evaluated in O(1) per step. A random walk on ``t`` whose scale is
    an orbit invariant (``Sxx Syy`` does not change along the orbit) is a symmetric proposal,
    so each step leaves the joint posterior invariant (the group-move argument of Liu & Wu,
    1999). Factors move independently. ``normals`` (steps, 2, rank): standard normals, per
    step one for each factor's proposal and one whose ``log Phi`` is the log of the uniform
    acceptance variate. Returns the new tables and ``t``.
    """
    n_a, n_b = v_a.shape[0], v_b.shape[0]
    sx, sxx = v_a.sum(0), (v_a * v_a).sum(0)
    sy, syy = v_b.sum(0), (v_b * v_b).sum(0)

    def log_target(t):
        c = jnp.exp(t)
        return (
            -0.5 * lam_a * (c * c * sxx - 2.0 * c * mu_a * sx)
            - 0.5 * lam_b * (syy / (c * c) - 2.0 * mu_b * sy / c)
            + (n_a - n_b) * t
        )

    # curvature at the balanced point, 4 sqrt(lam_a lam_b Sxx Syy), is invariant on the orbit
    scale = 2.4 / jnp.sqrt(4.0 * jnp.sqrt(lam_a * lam_b * sxx * syy) + 1e-12)

    def step(carry, z):
        t, lp = carry
        t_new = t + scale * z[0]
        lp_new = log_target(t_new)
        # Phi(Z) is uniform for a standard normal Z
        accept = log_ndtr(z[1]) < lp_new - lp
        return (jnp.where(accept, t_new, t), jnp.where(accept, lp_new, lp)), None

    t0 = jnp.zeros_like(sx)
    (t, _), _ = jax.lax.scan(step, (t0, log_target(t0)), normals)
    c = jnp.exp(t)
    return v_a * c, v_b / c, t


class FMGibbs(MCMCKernel):
    """Conjugate blocked Gibbs kernel for :func:`bayesfm.fm.fm_model`.

    It covers regression, and the binary (probit link) and ordinal tasks through probit
    data augmentation; estimators run it for ``inference="gibbs"``. Use it with
    :class:`numpyro.infer.MCMC` and ``jit_model_args=True``; the model arguments are
    ``(data, offset, y)`` where ``data`` also holds ``data["gibbs"] = gibbs_plan(...)``.

    Parameters
    ----------
    spec : ModelSpec
        The model; its parametrization is ignored (Gibbs draws the centred sites).
    mesh : jax.sharding.Mesh, optional
        The mesh the training rows are sharded over (``gibbs_plan(..., n_shards)`` must
        match its size); per-level sums are then computed per device and added.
    unroll_entities : bool, optional
        Unroll the batched Cholesky of the entity draws: slower to compile, faster per
        sweep. ``None``: the default of :mod:`bayesfm.linalg`. The estimators pass
        :func:`unroll_entity_draws` of the fit's length.
    collect_latent : bool, default False
        Keep each training row's latent predictor after every sweep in the state's
        ``latent`` field, so that a driver can collect it with the draws
        (:func:`bayesfm.sweeps.run_kernel`'s ``extra_fields``). The sweep computes it anyway
        for regression; the estimators use it for the pointwise InferenceData groups instead
        of recomputing every draw's predictions afterwards.

    Raises
    ------
    ValueError
        The binary task with a link other than ``"probit"``.

    Examples
    --------
    The kernel of a fitted model's spec, wrapped in NumPyro's MCMC driver (what
    ``inference=bfm.GibbsConfig(...)`` runs):

    >>> from numpyro.infer import MCMC
    >>> from bayesfm.gibbs import FMGibbs
    >>> kernel = FMGibbs(model.spec_)
    >>> kernel.spec.prior.parametrization
    'centered'
    >>> mcmc = MCMC(kernel, num_warmup=200, num_samples=500, jit_model_args=True,
    ...             progress_bar=False)
    >>> mcmc.num_samples
    500
    """

    sample_field = "z"

    def __init__(
        self,
        spec: ModelSpec,
        mesh=None,
        unroll_entities: bool | None = None,
        collect_latent: bool = False,
    ):
        if spec.task == "binary" and spec.link != "probit":
            raise ValueError(
                f"link: got {spec.link!r}; the Gibbs sampler needs link='probit' for the "
                "binary task (its data augmentation is the probit's)"
            )
        self.spec = replace(spec, prior=replace(spec.prior, parametrization="centered"))
        self._model = partial(fm_model, spec=self.spec)
        self.mesh = mesh
        self.unroll_entities = unroll_entities
        self.collect_latent = collect_latent

    @property
    def model(self):
        """The NumPyro model whose sites the kernel samples."""
        return self._model

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        k_init, k_run = jax.random.split(rng_key)
        z = dict(init_params) if init_params is not None else initial_values(self.spec, k_init)
        if self.spec.task == "regression":
            z["sigma"] = 1.0 / jnp.sqrt(z["noise_precision"])
        latent = None
        if self.collect_latent:
            _, _, y = model_args
            latent = jnp.zeros(y.shape, jnp.float32)  # every sweep overwrites it
        return GibbsState(z, k_run, latent)

    def sample(self, state, model_args, model_kwargs):
        data, offset, y = model_args
        key, k_sweep = jax.random.split(state.rng_key)
        out = gibbs_sweep(
            state.z,
            data,
            offset,
            y,
            k_sweep,
            self.spec,
            self.mesh,
            self.unroll_entities,
            with_latent=self.collect_latent,
        )
        if self.collect_latent:
            z, latent = out
            return GibbsState(z, key, latent)
        return GibbsState(out, key)
