"""Scale move of the probit tasks' Gibbs sampler (a parameter-expansion group move).

In the binary and ordered probit the utilities have unit noise, so the scale of the linear
predictor ``eta`` (and of the cutpoints) against that noise is a parameter like any other.
The Gibbs blocks barely move it: given the utilities, every weight is pinned by thousands of
rows, and the utilities are drawn given the weights. On MovieLens-100K (ordinal, rank 10,
side features and implicit sets) the cutpoints' spread was still growing after 400 sweeps.

The move acts on the whole state with the group ``T_t``, ``c = e^t``:

- first-order sites times ``c``: the cutpoints (ordinal) or the global bias (binary), every
  linear weight ``w_g`` and its mean ``w_mu_g``; their precisions ``w_lambda_g`` over ``c^2``;
- factors times ``sqrt(c)``: every ``v_g`` and its mean ``v_mu_g``; ``v_lambda_g`` over ``c``.

Every FM term is linear in the weights or bilinear in the factors, so ``eta - offset`` is
multiplied by ``c`` and the cutpoints with it. Each weight's and factor's prior density
changes by exactly its Jacobian, so what remains of ``log p(T_t theta) + log |J_t|`` is the
likelihood (utilities integrated out), the Gamma hyperpriors, the means' priors (only if
``mu0 != 0``) and the prior of the cutpoints or the bias: O(rows + groups) per evaluation.
``t`` is drawn by a slice-sampling step from that density started at ``t = 0``, which leaves
the posterior invariant (generalized Gibbs on a group, Liu & Sabatti, 2000). The utilities
are redrawn right after, given the moved state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr
from numpyro.distributions.transforms import OrderedTransform

from .augment import _log_prior, _row_log_lik, slice_coordinate
from .priors import PriorConfig

__all__ = ["scale_sites", "scale_log_target", "probit_scale_move"]

# the initial bracket of t; on MovieLens-100K its conditional sd is a few hundredths
_WIDTH = 0.1


def scale_sites(params: dict[str, Any], groups: tuple[str, ...], t: jnp.ndarray) -> dict:
    """``T_t`` applied to the sites of a probit FM (see the module docstring)."""
    c = jnp.exp(t)
    out = dict(params)
    if "cutpoints" in params:
        out["cutpoints"] = params["cutpoints"] * c
    else:
        out["w0"] = params["w0"] * c
    root = jnp.sqrt(c)
    for g in groups:
        out[f"w_{g}"] = params[f"w_{g}"] * c
        out[f"w_mu_{g}"] = params[f"w_mu_{g}"] * c
        out[f"w_lambda_{g}"] = params[f"w_lambda_{g}"] / (c * c)
        out[f"v_{g}"] = params[f"v_{g}"] * root
        out[f"v_mu_{g}"] = params[f"v_mu_{g}"] * root
        out[f"v_lambda_{g}"] = params[f"v_lambda_{g}"] / c
    return out


def _row_log_liks(task: str, params: dict, eta, labels, weight):
    if task == "ordinal":
        return _row_log_lik(OrderedTransform().inv(params["cutpoints"]), eta, labels, weight)
    sign = jnp.where(labels > 0.5, 1.0, -1.0)
    return jnp.where(jnp.asarray(weight) > 0, log_ndtr(sign * eta), 0.0)


def scale_log_target(
    t: jnp.ndarray,
    params: dict[str, Any],
    groups: tuple[str, ...],
    eta: jnp.ndarray,
    offset: jnp.ndarray,
    labels: jnp.ndarray,
    weight: jnp.ndarray | float,
    task: str,
    prior: PriorConfig,
) -> jnp.ndarray:
    """``log p(T_t theta | y) + log |J_t| - log p(theta | y)``, utilities integrated out.

    ``eta``: the current linear predictor (with ``offset``). The rows' log likelihoods are
    differenced row by row, as in :func:`bayesfm.augment.update_cutpoints`, so that float32
    rounding of a sum of order ``-rows`` does not swamp the difference.
    """
    c = jnp.exp(t)
    moved = scale_sites(params, groups, t)
    rows = _row_log_liks(task, moved, offset + c * (eta - offset), labels, weight)
    rows = rows - _row_log_liks(task, params, eta, labels, weight)
    if task == "ordinal":
        # the prior is Normal on x = (c_0, log gaps): c_0 scales (Jacobian c), gaps shift
        inv = OrderedTransform().inv
        own = _log_prior(inv(moved["cutpoints"])) - _log_prior(inv(params["cutpoints"])) + t
    else:
        own = -0.5 * (c * c - 1.0) * (params["w0"] / prior.bias_scale) ** 2 + t
    a0, b0, g0, mu0 = prior.alpha0, prior.beta0, prior.gamma0, prior.mu0
    hyper = 0.0
    for kind, power in (("w", 2.0), ("v", 1.0)):
        # lambda -> lambda / c^power: Gamma density and Jacobian, -a0 power t - b0 d(lambda)
        lam = jnp.concatenate([jnp.ravel(params[f"{kind}_lambda_{g}"]) for g in groups])
        mu = jnp.concatenate([jnp.ravel(params[f"{kind}_mu_{g}"]) for g in groups])
        hyper = hyper - a0 * power * t * lam.size - b0 * jnp.sum(lam) * (c**-power - 1.0)
        # the means' Normal(mu0, 1/(g0 lambda)) prior and Jacobian leave only the mu0 shift
        shift = mu0 * c ** (-power / 2)
        hyper = hyper - 0.5 * g0 * jnp.sum(lam * ((mu - shift) ** 2 - (mu - mu0) ** 2))
    return jnp.sum(rows) + own + hyper


def probit_scale_move(
    key: jax.Array,
    params: dict[str, Any],
    groups: tuple[str, ...],
    eta: jnp.ndarray,
    offset: jnp.ndarray,
    labels: jnp.ndarray,
    weight: jnp.ndarray | float,
    task: str,
    prior: PriorConfig,
) -> tuple[dict[str, Any], jnp.ndarray]:
    """Draw ``t`` by one slice step from the group conditional and move the state.

    Returns the moved sites and the moved linear predictor.
    """

    def log_target(x):
        return scale_log_target(x[0], params, groups, eta, offset, labels, weight, task, prior)

    t = slice_coordinate(key, jnp.zeros((1,), eta.dtype), 0, log_target, width=_WIDTH)[0]
    return scale_sites(params, groups, t), offset + jnp.exp(t) * (eta - offset)
