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
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import sparse

from .data import ROW, Structure
from .linalg import gaussian_from_normals

__all__ = ["RIDGE_MAX_LEVELS", "ridge_plan", "owned_shift", "bias_shift", "factor_shift"]

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


def factor_shift_system(params, groups: tuple[str, ...], dim: str):
    """Precision ``P`` (rank x rank) and shift ``b`` of ``delta`` in the move
    ``v_dim + delta``, ``w_j - <delta, v_j>`` (every level of every other group)::

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


def factor_shift(params, groups: tuple[str, ...], dim: str, normals: jnp.ndarray) -> dict:
    """Draw the factor-mean shift of entity ``dim`` from its exact conditional.

    ``normals``: standard normal variates, one per factor dimension.
    """
    precision, shift = factor_shift_system(params, groups, dim)
    delta = gaussian_from_normals(precision, shift, normals, jnp.zeros(shift.shape))
    return apply_factor_shift(params, groups, dim, delta)
