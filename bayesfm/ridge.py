"""Exact moves along flat directions of the FM likelihood (for the Gibbs sampler).

Three kinds of direction leave every prediction unchanged and are pinned down by the priors
alone:

- **global bias against an entity**: ``w0 + c`` with ``w_e - c`` for every level ``e`` of an
  entity field (each row holds exactly one of its levels);
- **an owned attribute against its owner**: ``w_l + c_l`` for the levels ``l`` of an attribute
  owned by entity ``d`` (a user's occupation or age, an item's genres) with
  ``w_e - sum_l A[e, l] c_l`` for every entity ``e``, where ``A[e, l]`` is the attribute's value
  for ``e``. An entity's total ``w_e + sum_l A[e, l] w_l`` is what its rows see;
- **a factor mean against the linear weights**: ``v_e + delta`` for every level of an entity
  field with ``w_j - <delta, v_j>`` for every level ``j`` of every other field. A row holds one
  level of the entity, so its interactions with the row's other features gain
  ``sum_j x_j <delta, v_j>``, which the linear weights give back. Along this direction the
  global location ``w0 + sum_g mu_g`` and the weight of a numeric field trade off against the
  factors, so without the move they drift across chains.

When an entity has many rows, its single-site conditional pins that total down, so
coordinate-wise Gibbs crosses these ridges by a slow random walk (on a synthetic FM the
weight of an owned numeric attribute had R-hat 1.4-1.5 after 4 x 700 sweeps). Each move below
draws the shift ``c`` from its exact Gaussian conditional: along a fixed direction ``B`` the
target ``p(theta + B c)`` is proportional to the priors' Gaussian in ``c``. A translation is a
group move with unit Jacobian, so the draw leaves the posterior invariant (Liu & Wu, 1999).

The factor-mean shift moves every level of an entity, so given the group means its prior
pins ``delta`` to about ``1 / sqrt(n_levels lambda)``, and the means then follow the levels'
average by as little. Its target therefore integrates out the means it moves (``v_mu`` of
the entity, ``w_mu`` of the other groups; still Gaussian in ``delta``), and the move redraws
them from their conditionals right after: a blocked Gibbs draw of ``(delta, means)`` given
the precisions.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import sparse

from .data import ROW, Structure
from .linalg import gaussian_from_normals

__all__ = [
    "RIDGE_MAX_LEVELS",
    "ridge_plan",
    "owned_shift",
    "bias_shift",
    "factor_shift",
    "factor_shift_normal_count",
]

# a move solves one levels x levels system per sweep; bigger attributes (implicit sets over
# thousands of items) are left to the single-site updates
RIDGE_MAX_LEVELS = 256


def ridge_plan(data: dict[str, Any], structure: Structure) -> dict[str, np.ndarray]:
    """``A^T A`` of every owned attribute small enough for a joint move, keyed by its dim.

    Computed once on the host from the encoded training data (``data["terms"]``), where
    ``A`` is the (entities x levels) matrix of the attribute's values per owner.
    """
    owners = {d: n for d, n in structure.entities}
    plan = {}
    for t in structure.terms:
        if t.carrier == ROW or t.carrier not in owners or t.n_levels > RIDGE_MAX_LEVELS:
            continue
        td = data["terms"][t.dim]
        entries = (np.asarray(td["unit"]), np.asarray(td["index"]))
        a = sparse.csr_matrix(
            (np.asarray(td["value"], np.float64), entries), shape=(owners[t.carrier], t.n_levels)
        )
        plan[t.dim] = np.asarray((a.T @ a).toarray(), np.float32)
    return plan


def owned_shift_system(params, data, gram, term) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Precision ``P`` and shift ``b`` of the conditional ``c ~ N(P^-1 b, P^-1)`` of the move
    ``w_term += c``, ``w_owner -= A c``: ``P = lam_t I + lam_d A^T A`` and
    ``b = -lam_t (w_t - mu_t) + lam_d A^T (w_d - mu_d)``."""
    t, d = term.dim, term.carrier
    td = data["terms"][t]
    lam_t, lam_d = params[f"w_lambda_{t}"], params[f"w_lambda_{d}"]
    dev_d = params[f"w_{d}"] - params[f"w_mu_{d}"]
    a_t_dev = jax.ops.segment_sum(td["value"] * dev_d[td["unit"]], td["index"], term.n_levels)
    precision = lam_t * jnp.eye(term.n_levels) + lam_d * gram
    shift = -lam_t * (params[f"w_{t}"] - params[f"w_mu_{t}"]) + lam_d * a_t_dev
    return precision, shift


def apply_owned_shift(params, data, term, c: jnp.ndarray) -> dict:
    """``w_term + c`` and ``w_owner - A c``: every row's linear predictor is unchanged."""
    t, d = term.dim, term.carrier
    td = data["terms"][t]
    n_owner = params[f"w_{d}"].shape[0]
    a_c = jax.ops.segment_sum(
        td["value"] * c[td["index"]], td["unit"], n_owner, indices_are_sorted=True
    )
    return {**params, f"w_{t}": params[f"w_{t}"] + c, f"w_{d}": params[f"w_{d}"] - a_c}


def owned_shift(params, data, gram, term, normals: jnp.ndarray) -> dict:
    """Draw the shift of an owned attribute against its owner from its exact conditional.

    ``normals``: standard normal variates, one per level of the attribute.
    """
    precision, shift = owned_shift_system(params, data, gram, term)
    c = gaussian_from_normals(precision, shift, normals, jnp.zeros(term.n_levels))
    return apply_owned_shift(params, data, term, c)


def bias_shift(params, dim: str, bias_scale: float, normal: jnp.ndarray) -> dict:
    """Draw ``c`` in ``w0 + c``, ``w_dim - c`` (entity ``dim``) from its exact conditional,
    given one standard normal variate ``normal``.

    ``w0 ~ N(0, bias_scale^2)`` (around the training offset) and the deviations
    ``w_e - mu`` have precision ``lam``, so ``c ~ N(b / P, 1 / P)`` with
    ``P = 1 / bias_scale^2 + lam * n_levels`` and ``b = -w0 / bias_scale^2 + lam * sum(w_e - mu)``.
    """
    w, w0 = params[f"w_{dim}"], params["w0"]
    lam = params[f"w_lambda_{dim}"]
    prior_prec = 1.0 / bias_scale**2
    precision = prior_prec + lam * w.shape[0]
    mean = (-w0 * prior_prec + lam * jnp.sum(w - params[f"w_mu_{dim}"])) / precision
    c = mean + normal / jnp.sqrt(precision)
    return {**params, "w0": w0 + c, f"w_{dim}": w - c}


def _collapsed_weight(n: int, gamma0: float) -> float:
    """``gamma0 n / (gamma0 + n)``: what is left of ``n`` members' pull on their mean's
    location once ``mu ~ N(mu0, 1 / (gamma0 lambda))`` is integrated out."""
    return gamma0 * n / (gamma0 + n)


def factor_shift_system(params, groups: tuple[str, ...], dim: str, gamma0: float, mu0: float):
    """Precision ``P`` (rank x rank) and shift ``b`` of ``delta`` in the move
    ``v_dim + delta``, ``w_j - <delta, v_j>`` (every level of every other group), with the
    means ``v_mu_dim`` and ``w_mu_g`` integrated out (their precisions held)::

        P = kappa_dim diag(lam_v) + sum_g lam_g (Vc_g^T Vc_g + kappa_g vbar_g vbar_g^T)
        b = -lam_v kappa_dim (vbar_dim - mu0)
            + sum_g lam_g (Vc_g^T wc_g + kappa_g vbar_g (wbar_g - mu0))

    where ``Vc``, ``wc`` are centred over the group's levels, bars are their means and
    ``kappa = gamma0 n / (gamma0 + n)``. Given the means, ``n_dim lam_v`` would pin ``delta``
    to about ``1 / sqrt(n_dim lam_v)`` per sweep, and the means follow the factors' average
    just as slowly: on MovieLens-100K ua (MF) the inner product of the user and item factor
    means had an effective sample size of 13 in 4 x 500 sweeps.
    """
    v = params[f"v_{dim}"]
    lam_v = params[f"v_lambda_{dim}"]
    pull = lam_v * _collapsed_weight(v.shape[0], gamma0)
    precision = jnp.diag(pull)
    shift = -pull * (jnp.mean(v, axis=0) - mu0)
    for g in groups:
        if g == dim:
            continue
        v_g, w_g, lam_g = params[f"v_{g}"], params[f"w_{g}"], params[f"w_lambda_{g}"]
        v_bar, w_bar = jnp.mean(v_g, axis=0), jnp.mean(w_g)
        v_c, w_c = v_g - v_bar, w_g - w_bar
        kappa = _collapsed_weight(v_g.shape[0], gamma0)
        precision = precision + lam_g * (v_c.T @ v_c + kappa * jnp.outer(v_bar, v_bar))
        shift = shift + lam_g * (w_c @ v_c + kappa * v_bar * (w_bar - mu0))
    return precision, shift


def factor_shift_system_given_means(params, groups: tuple[str, ...], dim: str):
    """:func:`factor_shift_system` with the means held (what the sampler runs by default)::

    P = n_dim diag(lam_v) + sum_g lam_g V_g^T V_g
    b = -lam_v * sum_e (v_e - mu_v) + sum_g lam_g V_g^T (w_g - mu_g)
    """
    v = params[f"v_{dim}"]
    lam_v = params[f"v_lambda_{dim}"]
    precision = jnp.diag(v.shape[0] * lam_v)
    shift = -lam_v * jnp.sum(v - params[f"v_mu_{dim}"], axis=0)
    for g in groups:
        if g == dim:
            continue
        v_g, lam_g = params[f"v_{g}"], params[f"w_lambda_{g}"]
        precision = precision + lam_g * (v_g.T @ v_g)
        shift = shift + lam_g * ((params[f"w_{g}"] - params[f"w_mu_{g}"]) @ v_g)
    return precision, shift


def apply_factor_shift(params, groups: tuple[str, ...], dim: str, delta: jnp.ndarray) -> dict:
    """``v_dim + delta`` and ``w_j - <delta, v_j>`` for the other groups: same predictions."""
    out = {**params, f"v_{dim}": params[f"v_{dim}"] + delta}
    for g in groups:
        if g != dim:
            out[f"w_{g}"] = params[f"w_{g}"] - params[f"v_{g}"] @ delta
    return out


def factor_shift_normal_count(rank: int, n_groups: int, collapsed: bool = False) -> int:
    """Standard normals :func:`factor_shift` takes: ``delta``, then the redrawn means."""
    return 2 * rank + n_groups - 1 if collapsed else rank


def mean_given_precision(x, lam, normal, gamma0: float, mu0: float) -> jnp.ndarray:
    """Draw a group's mean from ``N((gamma0 mu0 + n xbar) / (gamma0 + n), 1 / ((gamma0 + n)
    lam))``, its conditional given the members ``x`` (levels, ...) and their precision."""
    n = x.shape[0]
    loc = (gamma0 * mu0 + n * jnp.mean(x, axis=0)) / (gamma0 + n)
    return loc + normal / jnp.sqrt((gamma0 + n) * lam)


def factor_shift(
    params,
    groups: tuple[str, ...],
    dim: str,
    normals: jnp.ndarray,
    gamma0: float,
    mu0: float,
    collapsed: bool = False,
) -> dict:
    """Draw the factor-mean shift of entity ``dim`` from its exact conditional.

    By default ``delta`` is drawn given the means
    (:func:`factor_shift_system_given_means`), which stay as they are. With ``collapsed``
    it comes from its conditional with the means integrated out
    (:func:`factor_shift_system`), and then ``v_mu_dim`` and every other group's ``w_mu_g``
    from their conditionals given the moved values: together an exact draw of
    ``(delta, means)`` given the precisions (a blocked Gibbs step). ``normals``: standard
    normal variates, as many as :func:`factor_shift_normal_count` (``delta``'s first).
    """
    rank = params[f"v_{dim}"].shape[1]
    if collapsed:
        precision, shift = factor_shift_system(params, groups, dim, gamma0, mu0)
    else:
        precision, shift = factor_shift_system_given_means(params, groups, dim)
    delta = gaussian_from_normals(precision, shift, normals[:rank], jnp.zeros(rank))
    out = apply_factor_shift(params, groups, dim, delta)
    if not collapsed:
        return out
    out[f"v_mu_{dim}"] = mean_given_precision(
        out[f"v_{dim}"], out[f"v_lambda_{dim}"], normals[rank : 2 * rank], gamma0, mu0
    )
    others = [g for g in groups if g != dim]
    for g, z in zip(others, normals[2 * rank :], strict=True):
        out[f"w_mu_{g}"] = mean_given_precision(out[f"w_{g}"], out[f"w_lambda_{g}"], z, gamma0, mu0)
    return out
