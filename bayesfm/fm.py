"""The factorization-machine model: predictor in O(k · nnz), likelihoods, and the NumPyro model.

The second-order FM equation for a row with features ``x_j``::

    f(x) = w0 + sum_j w_j x_j + 1/2 sum_f [ (sum_j x_j v_jf)^2 - sum_j x_j^2 v_jf^2 ]

is evaluated per *entity* (user, item, ...) first: each entity's own embedding plus the
aggregated features it owns give ``lin_e``, ``s_e = sum_j x_j v_j`` and
``q_e = sum_j x_j^2 |v_j|^2``; rows then gather these per entity and add row-level terms.
Matrix factorization is the case of exactly two entities and no other field.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr, ndtr
from numpyro import handlers
from numpyro.distributions.transforms import OrderedTransform

from .data import ROW, Structure
from .priors import PriorConfig, sample_group

__all__ = [
    "TASKS",
    "LINKS",
    "ModelSpec",
    "entity_components",
    "owned_sums",
    "entity_owners",
    "fm_components",
    "fm_predictor",
    "mf_predictor",
    "fm_model",
]

TASKS = ("regression", "binary", "ordinal")
LINKS = ("probit", "logit")


@dataclass(frozen=True)
class ModelSpec:
    """Static description of one model (hashable, so that it can be closed over by jit).

    Parameters
    ----------
    structure : Structure
        Entities and terms of the encoded features.
    rank : int
        Number of latent factors.
    task : str
        ``"regression"``, ``"binary"`` or ``"ordinal"``.
    link : str
        ``"probit"`` or ``"logit"`` (binary task only).
    n_classes : int
        Number of ordered classes (ordinal task only).
    prior : PriorConfig
        Hierarchical prior settings.
    use_mf_path : bool
        Use the two-gather MF predictor (only valid for two entities and no terms).
    """

    structure: Structure
    rank: int
    task: str = "regression"
    link: str = "probit"
    n_classes: int = 0
    prior: PriorConfig = PriorConfig()
    use_mf_path: bool = False


def _segment(x: jnp.ndarray, unit: jnp.ndarray, n: int) -> jnp.ndarray:
    return jax.ops.segment_sum(x, unit, num_segments=n, indices_are_sorted=True)


def owned_sums(params: dict[str, jnp.ndarray], terms: dict[str, Any], structure: Structure):
    """``{dim: (lin, s, q)}``: per level of each entity that owns features, the sums of its
    owned features' linear weights (levels,), factors (levels, rank) and squared factor norms
    (levels,); entities that own nothing are left out. Its own weight and factor are not
    included; the ``"entity"`` parametrization samples the totals (see :mod:`bayesfm.priors`).
    Sized by the entity's table in ``params`` (or its training size)."""
    out: dict[str, tuple] = {}
    for t in structure.terms:
        if t.carrier == ROW:
            continue
        lin_t, g, q_t, unit = _term_parts(params, terms[t.dim], t.dim)
        table = params.get(f"w_{t.carrier}")
        n = table.shape[0] if table is not None else structure.n_levels(t.carrier)
        parts = (_segment(lin_t, unit, n), _segment(g, unit, n), _segment(q_t, unit, n))
        if t.carrier in out:
            parts = tuple(a + b for a, b in zip(out[t.carrier], parts, strict=True))
        out[t.carrier] = parts
    return out


def entity_owners(structure: Structure) -> set[str]:
    """The entities that own at least one feature field."""
    return {t.carrier for t in structure.terms if t.carrier != ROW}


def entity_components(
    params: dict[str, jnp.ndarray],
    terms: dict[str, Any],
    structure: Structure,
    owned: dict[str, tuple] | None = None,
):
    """Per-entity sums ``{dim: (lin, s, q)}``: own embedding plus the owned features.

    ``lin`` (levels,), ``s`` (levels, rank) and ``q`` (levels,) aggregate the entity's own
    weight and factor with those of the features it owns (demographics, genres, implicit
    sets). Row-level terms are not included. ``owned``: the output of :func:`owned_sums`
    when the caller already has it.
    """
    owned = owned_sums(params, terms, structure) if owned is None else owned
    ent = {}
    for d, _ in structure.entities:
        w, v = params[f"w_{d}"], params[f"v_{d}"]
        ent[d] = (w, v, jnp.sum(v * v, -1))
        if d in owned:
            ent[d] = tuple(a + b for a, b in zip(ent[d], owned[d], strict=True))
    return ent


def _term_parts(params: dict[str, jnp.ndarray], td: dict[str, jnp.ndarray], dim: str):
    """Per-nonzero linear part, factor contribution and squared norm of one term."""
    index, value = td["index"], td["value"]
    g = params[f"v_{dim}"][index] * value[:, None]
    return params[f"w_{dim}"][index] * value, g, jnp.sum(g * g, -1), td["unit"]


def fm_components(
    params: dict[str, jnp.ndarray],
    data: dict[str, Any],
    structure: Structure,
    entities: dict | None = None,
):
    """Per-row sums of the FM: ``(lin, s, q)`` with ``f = w0 + lin + (|s|^2 - q) / 2``.

    ``lin = sum_j x_j w_j``, ``s = sum_j x_j v_j`` (rows, rank) and ``q = sum_j x_j^2 |v_j|^2``.
    Entity-owned features are aggregated per entity first (or taken from ``entities``, the
    output of :func:`entity_components`), then gathered per row.
    """
    ent = entity_components(params, data["terms"], structure) if entities is None else entities
    n_rows = next(iter(data["entity"].values())).shape[0]
    lin = s = q = 0.0
    for t in structure.terms:
        if t.carrier != ROW:
            continue
        lin_t, g, q_t, unit = _term_parts(params, data["terms"][t.dim], t.dim)
        lin = lin + _segment(lin_t, unit, n_rows)
        s = s + _segment(g, unit, n_rows)
        q = q + _segment(q_t, unit, n_rows)
    for d, _ in structure.entities:
        idx = data["entity"][d]
        ent_lin, ent_s, ent_q = ent[d]
        lin = lin + ent_lin[idx]
        s = s + ent_s[idx]
        q = q + ent_q[idx]
    return lin, s, q


def fm_predictor(
    params: dict[str, jnp.ndarray],
    data: dict[str, Any],
    structure: Structure,
    entities: dict | None = None,
):
    """Latent FM mean per row (without the global offset).

    ``params`` holds ``w0``, ``w_{g}`` and ``v_{g}`` for every group; tables may be longer
    than the training sizes (prediction appends slots for unseen levels). ``entities``: as
    in :func:`fm_components`.
    """
    lin, s, q = fm_components(params, data, structure, entities)
    return params["w0"] + lin + 0.5 * (jnp.sum(s * s, -1) - q)


def mf_predictor(params: dict[str, jnp.ndarray], data: dict[str, Any], structure: Structure):
    """Biased MF mean ``w0 + w_u + w_i + <v_u, v_i>``: the FM with two one-hot fields."""
    (du, _), (di, _) = structure.entities
    u, i = data["entity"][du], data["entity"][di]
    return (
        params["w0"]
        + params[f"w_{du}"][u]
        + params[f"w_{di}"][i]
        + jnp.sum(params[f"v_{du}"][u] * params[f"v_{di}"][i], -1)
    )


def predictor(spec: ModelSpec):
    """The predictor function for ``spec`` (MF fast path or general FM)."""
    return mf_predictor if spec.use_mf_path else fm_predictor


# class probabilities below exp(-69) (1e-30) are floored: such rows are absurd fits, and the
# floor keeps log densities and gradients finite wherever a sampler or optimizer wanders
_LOG_PROB_FLOOR = -69.0776
# bounds beyond 40 sd from the latent mean are moved to 40 sd: Phi is 0 or 1 there in any
# precision, and finite bounds keep every branch's gradient finite
_Z_CLIP = 40.0


def log_interval_prob(lower: jnp.ndarray, upper: jnp.ndarray) -> jnp.ndarray:
    """``log(Phi(upper) - Phi(lower))`` for ``lower <= upper`` (either may be infinite),
    accurate in both tails: an interval right of 0 is mirrored into the left tail, where
    ``log_ndtr`` keeps its relative precision. Floored at log(1e-30)."""
    lower = jnp.clip(lower, -_Z_CLIP, _Z_CLIP)
    upper = jnp.clip(upper, -_Z_CLIP, _Z_CLIP)
    mirror = lower > 0
    lo, hi = jnp.where(mirror, -upper, lower), jnp.where(mirror, -lower, upper)
    log_hi = log_ndtr(hi)
    # log(1 - exp(d)), d < 0, through expm1: exact for tiny |d|, and finite (with a finite
    # gradient) even for an empty interval, so the floor below never meets an inf
    d = jnp.minimum(log_ndtr(lo) - log_hi, -1e-30)
    return jnp.maximum(log_hi + jnp.log(-jnp.expm1(d)), _LOG_PROB_FLOOR)


def ordered_probit_log_probs(eta: jnp.ndarray, cutpoints: jnp.ndarray) -> jnp.ndarray:
    """Log class probabilities of the ordered probit, shape ``eta.shape + (n_classes,)``."""
    upper = jnp.concatenate([cutpoints, jnp.array([jnp.inf])])
    lower = jnp.concatenate([jnp.array([-jnp.inf]), cutpoints])
    return log_interval_prob(lower - eta[..., None], upper - eta[..., None])


def ordered_probit_log_lik(eta: jnp.ndarray, cutpoints: jnp.ndarray, y: jnp.ndarray):
    """Log probability of each row's own class ``y`` (0-based): O(rows), not O(rows x
    classes) as :func:`ordered_probit_log_probs`."""
    edges = jnp.concatenate([jnp.array([-jnp.inf]), cutpoints, jnp.array([jnp.inf])])
    k = y.astype(jnp.int32)
    return log_interval_prob(edges[k] - eta, edges[k + 1] - eta)


def sample_globals(spec: ModelSpec) -> dict[str, jnp.ndarray]:
    """Sample the global bias, noise precision and cutpoints (task dependent)."""
    prior = spec.prior
    out: dict[str, jnp.ndarray] = {}
    if spec.task == "ordinal":
        # the cutpoints absorb the global bias
        out["w0"] = jnp.zeros(())
        base = dist.Normal(0.0, 3.0).expand([spec.n_classes - 1]).to_event(1)
        out["cutpoints"] = numpyro.sample(
            "cutpoints", dist.TransformedDistribution(base, OrderedTransform())
        )
    else:
        out["w0"] = numpyro.sample("w0", dist.Normal(0.0, prior.bias_scale))
    if spec.task == "regression":
        tau = numpyro.sample("noise_precision", dist.Gamma(prior.noise_alpha, prior.noise_beta))
        out["sigma"] = numpyro.deterministic("sigma", 1.0 / jnp.sqrt(tau))
    return out


def initial_values(spec: ModelSpec, key: jax.Array) -> dict[str, jnp.ndarray]:
    """Starting values of every latent site (libFM's: factors ~ N(0, 0.1), precisions 10).

    Small random factors keep the optimizer away from the saddle at zero. Computed as arrays
    so that no op-by-op model execution is needed to initialize, and as one compiled
    program: op by op, the MovieLens MF start compiled some twenty programs in 1.6 s.
    """
    return _initial_values_program(spec, key)


@partial(jax.jit, static_argnums=0)
def _initial_values_program(spec: ModelSpec, key: jax.Array) -> dict[str, jnp.ndarray]:
    values: dict[str, jnp.ndarray] = {}
    if spec.task == "ordinal":
        values["cutpoints"] = jnp.linspace(-1.5, 1.5, spec.n_classes - 1)
    else:
        values["w0"] = jnp.zeros(())
    if spec.task == "regression":
        values["noise_precision"] = jnp.ones(())
    keys = jax.random.split(key, len(spec.structure.groups))
    owners = entity_owners(spec.structure)
    for g, k in zip(spec.structure.groups, keys, strict=True):
        n, r = spec.structure.n_levels(g), spec.rank
        values[f"w_lambda_{g}"] = jnp.full((), 10.0)
        values[f"w_mu_{g}"] = jnp.zeros(())
        values[f"v_lambda_{g}"] = jnp.full((r,), 10.0)
        values[f"v_mu_{g}"] = jnp.zeros((r,))
        v = 0.1 * jax.random.normal(k, (n, r))
        if spec.prior.parametrization == "noncentered":
            values[f"w_{g}_z"] = jnp.zeros((n,))
            values[f"v_{g}_z"] = v * jnp.sqrt(10.0)
        elif spec.prior.parametrization == "entity" and g in owners:
            # a start for the totals: any value is a valid state
            values[f"w_{g}_tot"] = jnp.zeros((n,))
            values[f"v_{g}_tot"] = v
        else:
            values[f"w_{g}"] = jnp.zeros((n,))
            values[f"v_{g}"] = v
    return values


def constrain(unconstrained: dict[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    """Map unconstrained site values (as seen by NUTS and the autoguides) to the model's.

    Precisions (Gamma sites) live on the log scale and the cutpoints on the ordered scale.
    """
    out = {}
    for name, value in unconstrained.items():
        if name == "noise_precision" or "_lambda_" in name:
            out[name] = jnp.exp(value)
        elif name == "cutpoints":
            out[name] = OrderedTransform()(value)
        else:
            out[name] = value
    return out


def likelihood(spec: ModelSpec, eta: jnp.ndarray, globals_: dict[str, jnp.ndarray]):
    """The observation distribution given the latent mean ``eta``."""
    if spec.task == "regression":
        return dist.Normal(eta, globals_["sigma"])
    if spec.task == "binary":
        if spec.link == "logit":
            return dist.Bernoulli(logits=eta)
        return dist.Bernoulli(probs=jnp.clip(ndtr(eta), 1e-7, 1 - 1e-7))
    return dist.Categorical(logits=ordered_probit_log_probs(eta, globals_["cutpoints"]))


def fm_model(data: dict[str, Any], offset: jnp.ndarray, y: jnp.ndarray | None, *, spec: ModelSpec):
    """NumPyro model of the Bayesian FM.

    Parameters
    ----------
    data : dict
        Encoded arrays from :meth:`bayesfm.data.Encoded.arrays`.
    offset : array
        Constant added to the latent mean (training mean, or the probit of the base rate),
        so that the global bias is centred at zero.
    y : array or None
        Observations (float for regression, 0/1 for binary, 0..C-1 for ordinal).
    spec : ModelSpec
        Static model description.
    """
    params = sample_globals(spec)
    structure = spec.structure

    def sample(group: str, owned=None) -> None:
        n = structure.n_levels(group)
        w, v = sample_group(group, n, spec.rank, spec.prior, owned)
        params[f"w_{group}"], params[f"v_{group}"] = w, v

    if spec.prior.parametrization == "entity":
        # the owned features first, so that each owner is sampled as its total
        for t in structure.terms:
            sample(t.dim)
        owned = owned_sums(params, data["terms"], structure)
        for d, _ in structure.entities:
            sample(d, owned[d][:2] if d in owned else None)
    else:
        for group in structure.groups:
            sample(group)
    if spec.prior.parametrization == "entity" and not spec.use_mf_path:
        # reuse the owned sums rather than aggregating the owned features a second time
        ent = entity_components(params, data["terms"], structure, owned)
        eta = offset + fm_predictor(params, data, structure, ent)
    else:
        eta = offset + predictor(spec)(params, data, structure)
    n = eta.shape[0]
    # rows padded for an even split over devices carry row_mask = 0
    keep = data["row_mask"] > 0 if "row_mask" in data else True
    with numpyro.plate("obs", n, dim=-1), handlers.mask(mask=keep):
        numpyro.sample("y", likelihood(spec, eta, params), obs=y)
