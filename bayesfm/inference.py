"""Inference runners (NUTS, SVI) behind one result type, :class:`PosteriorDraws`.

Both runners return draws shaped ``(chain, draw, ...)`` for every parameter site, so that
prediction, InferenceData and diagnostics are shared.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import monitoring
from jax.flatten_util import ravel_pytree
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO, TraceMeanField_ELBO
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from numpyro.infer.initialization import init_to_value

from .compile_cache import shared_within_block
from .priors import PARAMETRIZATIONS
from .sweeps import run_kernel

__all__ = [
    "NUTSConfig",
    "SVIConfig",
    "GibbsConfig",
    "PosteriorDraws",
    "INFERENCE_METHODS",
    "resolve_inference",
    "run_nuts",
    "run_svi",
    "run_gibbs",
    "compile_timer",
]

INFERENCE_METHODS = ("nuts", "svi", "gibbs")
SVI_GUIDES = ("normal", "lowrank")
CHAIN_METHODS = ("auto", "parallel", "sequential", "vectorized")


@dataclass(frozen=True)
class NUTSConfig:
    """Settings of the NUTS sampler (numpyro's argument names).

    Parameters
    ----------
    num_warmup, num_samples, num_chains, thinning : int
        As in :class:`numpyro.infer.MCMC`.
    target_accept_prob, max_tree_depth : float, int
        As in :class:`numpyro.infer.NUTS`.
    chain_method : {"auto", "parallel", "sequential", "vectorized"}
        ``"auto"`` runs chains in parallel when there are enough devices, vectorized on a
        GPU, and sequentially otherwise.
    parametrization : {"entity", "centered", "noncentered"}
        Parametrization of the hierarchical groups used by NUTS (see :mod:`bayesfm.priors`).
        Centred suits groups whose members have many observations (users and items of rating
        data): on MovieLens-100K MF it took 63 leapfrog steps per iteration against 255
        (saturated) non-centred. ``"entity"`` (the default) is centred, but samples each
        entity that owns features as its total, which removes the long directions along
        which owned features and their owners trade; it is the centred model for MF. On the
        MovieLens-100K FM with the release year (ua, 4 chains x (400 + 500), H200) it took the
        R-hat of sigma from 1.075 to 1.009 and the median R-hat of 200 probe predictions from
        1.056 to 1.016 (docs/benchmarks_core.md).
    init_svi_steps : int
        Steps of a mean-field SVI fit used to initialize the chains (0: prior median).
        The chains start from independent draws of that fit, and the diagonal mass matrix
        from its variances.
    progress_bar : bool
        Show progress bars.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> bfm.NUTSConfig(num_chains=2, num_samples=200).num_warmup
    500
    """

    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 4
    thinning: int = 1
    target_accept_prob: float = 0.8
    max_tree_depth: int = 8
    chain_method: str = "auto"
    parametrization: str = "entity"
    init_svi_steps: int = 1500
    progress_bar: bool = True

    def __post_init__(self) -> None:
        _check_mcmc_settings(self)
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"parametrization: got {self.parametrization!r}; allowed {list(PARAMETRIZATIONS)}"
            )
        if not 0 < self.target_accept_prob < 1:
            raise ValueError(f"target_accept_prob: got {self.target_accept_prob!r}; allowed (0, 1)")


@dataclass(frozen=True)
class SVIConfig:
    """Settings of stochastic variational inference.

    Parameters
    ----------
    num_steps : int
        Optimization steps.
    learning_rate : float
        Initial Adam step size; decays exponentially to ``lr_decay`` times it.
    lr_decay : float
        Final learning rate as a fraction of the initial one.
    guide : {"normal", "lowrank"}
        Mean-field ``AutoNormal`` or ``AutoLowRankMultivariateNormal``.
    guide_rank : int
        Rank of the low-rank guide.
    num_samples : int
        Posterior draws taken from the fitted guide (one chain).
    num_particles : int
        ELBO particles per step.
    batch_size : int or None
        Rows per optimization step. ``None`` (default) uses every row in every step. An
        integer subsamples the likelihood: batches of a fixed size are cut from a reshuffled
        copy of the rows on the host each epoch, the likelihood is scaled by N / batch_size,
        and each user's or item's variational parameters move only in the steps whose batch
        contains it (``guide="normal"`` only).
    holdout : float
        Share of the training rows kept out of the fit to monitor convergence (0: none). The
        plug-in RMSE and log density on them are recorded every ``eval_every`` steps, in
        ``idata_.sample_stats`` (``holdout_rmse``, ``holdout_lpd``).
    eval_every : int
        Steps between two held-out evaluations.
    patience : int
        Stop once the held-out log density has not improved for this many evaluations
        (0: never stop early). Needs ``holdout > 0``.
    steps_per_call : int
        Minibatch steps run by one compiled call (batches are sent to the device together).
    progress_bar : bool
        Show a progress bar.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> bfm.SVIConfig(num_steps=500).guide
    'normal'
    >>> bfm.SVIConfig(batch_size=10_000, holdout=0.01).eval_every
    500
    """

    num_steps: int = 3000
    learning_rate: float = 0.02
    lr_decay: float = 0.1
    guide: str = "normal"
    guide_rank: int = 10
    num_samples: int = 500
    num_particles: int = 1
    batch_size: int | None = None
    holdout: float = 0.0
    eval_every: int = 500
    patience: int = 0
    steps_per_call: int = 50
    progress_bar: bool = True

    @property
    def minibatch(self) -> bool:
        """Whether the fit runs on the minibatch path (batches or a held-out share).

        Examples
        --------
        >>> import bayesfm as bfm
        >>> bfm.SVIConfig().minibatch, bfm.SVIConfig(batch_size=10_000).minibatch
        (False, True)
        """
        return self.batch_size is not None or self.holdout > 0

    def __post_init__(self) -> None:
        _check_positive(
            self,
            (
                "num_steps",
                "num_samples",
                "num_particles",
                "guide_rank",
                "eval_every",
                "steps_per_call",
            ),
        )
        if self.guide not in SVI_GUIDES:
            raise ValueError(f"guide: got {self.guide!r}; allowed {list(SVI_GUIDES)}")
        if self.batch_size is not None:
            _check_positive(self, ("batch_size",))
        if not (isinstance(self.holdout, float | int) and 0 <= self.holdout < 0.5):
            raise ValueError(f"holdout: got {self.holdout!r}; allowed a share in [0, 0.5)")
        if self.minibatch:
            why = f"batch_size={self.batch_size}, holdout={self.holdout}"
            if self.guide != "normal":
                raise ValueError(
                    f"guide: got {self.guide!r} with {why}; minibatch and monitored SVI "
                    "support guide='normal'"
                )
            if self.num_particles != 1:
                raise ValueError(
                    f"num_particles: got {self.num_particles!r} with {why}; minibatch and "
                    "monitored SVI use one particle per step"
                )
        if (
            not isinstance(self.patience, int)
            or isinstance(self.patience, bool)
            or self.patience < 0
        ):
            raise ValueError(f"patience: got {self.patience!r}; must be an integer >= 0")
        if self.patience and not self.holdout:
            raise ValueError(
                f"patience: got {self.patience!r} with holdout=0; early stopping needs a "
                "held-out share (holdout > 0)"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: got {self.learning_rate!r}; must be positive")


@dataclass(frozen=True)
class GibbsConfig:
    """Settings of the conjugate blocked Gibbs sampler (numpyro's argument names).

    Parameters
    ----------
    num_warmup, num_samples, num_chains, thinning : int
        As in :class:`numpyro.infer.MCMC`; a sweep updates every parameter once.
    chain_method : {"auto", "vectorized", "sequential", "parallel"}
        ``"auto"`` runs the chains vectorized (one program for all chains); ``"parallel"``
        runs that program with its chains split over the local devices (as many as divide
        ``num_chains``; on one device it is ``"vectorized"``).
    progress_bar : bool
        Show a progress bar.

    Examples
    --------
    >>> import bayesfm as bfm
    >>> bfm.GibbsConfig(num_samples=100).num_warmup
    200
    """

    num_warmup: int = 200
    num_samples: int = 500
    num_chains: int = 4
    thinning: int = 1
    chain_method: str = "auto"
    progress_bar: bool = True

    def __post_init__(self) -> None:
        _check_mcmc_settings(self)


InferenceConfig = NUTSConfig | SVIConfig | GibbsConfig
_DEFAULT_CONFIGS = {"nuts": NUTSConfig, "svi": SVIConfig, "gibbs": GibbsConfig}


def _check_mcmc_settings(cfg: Any) -> None:
    """Checks shared by the MCMC configs (draw counts and the chain method)."""
    _check_positive(cfg, ("num_warmup", "num_samples", "num_chains", "thinning"))
    if cfg.chain_method not in CHAIN_METHODS:
        raise ValueError(f"chain_method: got {cfg.chain_method!r}; allowed {list(CHAIN_METHODS)}")


def _check_positive(cfg: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: got {value!r}; must be an integer >= 1")


def resolve_inference(inference: str | InferenceConfig) -> InferenceConfig:
    """Turn ``"nuts"``/``"svi"``/``"gibbs"`` or a config object into a config object."""
    if isinstance(inference, NUTSConfig | SVIConfig | GibbsConfig):
        return inference
    if isinstance(inference, str) and inference.lower() in INFERENCE_METHODS:
        return _DEFAULT_CONFIGS[inference.lower()]()
    raise ValueError(
        f"inference: got {inference!r}; allowed are {list(INFERENCE_METHODS)} "
        "or a NUTSConfig / SVIConfig / GibbsConfig object"
    )


@dataclass
class PosteriorDraws:
    """Posterior draws of every site, shaped ``(chain, draw, ...)``, plus run information."""

    samples: dict[str, np.ndarray]
    method: str
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    loss: np.ndarray | None = None
    # the training rows' latent predictor per draw, (chain, draw, row), when the sampler
    # kept it (Gibbs); only the fit's InferenceData reads it, and it is not saved
    latent: np.ndarray | None = None

    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.samples.values())).shape[1]


@contextlib.contextmanager
def compile_timer() -> Iterator[dict[str, float]]:
    """Accumulate JAX tracing + lowering + compilation seconds inside the block.

    Yields a dict whose ``"compile_s"`` entry is filled in as compilation events arrive.
    """
    out = {"compile_s": 0.0}
    active = [True]

    def listener(event: str, duration: float, **kwargs: Any) -> None:
        if active[0] and event.startswith("/jax/core/compile/"):
            out["compile_s"] += duration

    monitoring.register_event_duration_secs_listener(listener)
    try:
        yield out
    finally:
        active[0] = False
        with contextlib.suppress(Exception):
            monitoring.unregister_event_duration_listener(listener)


# ------------------------------------------------------------------------------------ SVI
class _FlatNoiseAutoNormal(AutoNormal):
    """``AutoNormal`` whose reparametrization noise for all sites is one flat draw.

    The same guide, parameters and ELBO; only the noise is drawn differently. numpyro's
    ``AutoNormal`` splits a key and draws a normal per site, and each of those is a threefry
    hash that XLA compiles separately: one SVI step of the ordinal MovieLens FM card (about
    50 sites) compiled in 28 s that way and in 16 s with one draw.
    """

    def __call__(self, *args, **kwargs):
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        key = numpyro.prng_key()
        if key is None:  # not seeded: numpyro's own path draws (or fails) as usual
            return super().__call__(*args, **kwargs)
        # shapes only: the prototype's values may be tracers of an earlier jit
        shapes = {k: jnp.shape(v) for k, v in self._init_locs.items()}
        sizes = [int(np.prod(shape)) for shape in shapes.values()]
        flat = jax.random.normal(key, (sum(sizes),))
        pieces = jnp.split(flat, np.cumsum(sizes)[:-1])
        eps = {k: p.reshape(shape) for (k, shape), p in zip(shapes.items(), pieces, strict=True)}

        def reparametrized(msg: dict) -> jnp.ndarray | None:
            if msg["type"] != "sample" or msg["name"] not in eps:
                return None
            fn = msg["fn"]  # Normal(loc, scale), maybe Independent, maybe transformed
            base = fn.base_dist if isinstance(fn, dist.TransformedDistribution) else fn
            normal = base.base_dist if isinstance(base, dist.Independent) else base
            value = normal.loc + normal.scale * eps[msg["name"]]
            if isinstance(fn, dist.TransformedDistribution):
                for transform in fn.transforms:
                    value = transform(value)
            return value

        with numpyro.handlers.substitute(substitute_fn=reparametrized):
            return super().__call__(*args, **kwargs)


def _make_guide(model: Callable, cfg: SVIConfig, init_values: dict):
    init = init_to_value(values=init_values)
    if cfg.guide == "lowrank":
        return AutoLowRankMultivariateNormal(
            model, rank=cfg.guide_rank, init_loc_fn=init, init_scale=0.05
        )
    return _FlatNoiseAutoNormal(model, init_loc_fn=init, init_scale=0.05)


def build_svi(model: Callable, cfg: SVIConfig, init_values: dict) -> tuple[Any, SVI]:
    """The autoguide and the :class:`numpyro.infer.SVI` object of a full-batch fit."""
    guide = _make_guide(model, cfg, init_values)
    lr, decay, n = cfg.learning_rate, cfg.lr_decay, cfg.num_steps

    def schedule(i):
        return lr * decay ** (i / n)

    optim = numpyro.optim.ClippedAdam(step_size=schedule, clip_norm=10.0)
    elbo_cls = TraceMeanField_ELBO if cfg.guide == "normal" else Trace_ELBO
    return guide, SVI(model, guide, optim, elbo_cls(num_particles=cfg.num_particles))


def fit_svi(
    model: Callable, args: tuple, cfg: SVIConfig, rng_key: jax.Array, init_values: dict
) -> tuple[Any, dict, np.ndarray, dict[str, float]]:
    """Optimize the ELBO; return the guide, its parameters, the loss trace and timings.

    ``init_values`` gives every latent site's starting value; initializing inside one jitted
    call avoids numpyro's op-by-op model execution, which spends ~10 s compiling.
    """
    guide, svi = build_svi(model, cfg, init_values)
    n = cfg.num_steps
    t0 = time.perf_counter()
    with compile_timer() as ct:
        k_init, k_run = jax.random.split(rng_key)
        state = jax.jit(svi.init)(k_init, *args)
        result = svi.run(
            k_run, n, *args, progress_bar=cfg.progress_bar, stable_update=True, init_state=state
        )
        jax.block_until_ready(result.params)
    timings = {"svi_compile_s": ct["compile_s"], "svi_total_s": time.perf_counter() - t0}
    return guide, result.params, np.asarray(result.losses), timings


def run_svi(
    model: Callable,
    args: tuple,
    cfg: SVIConfig,
    rng_key: jax.Array,
    postprocess: Callable[[dict], dict],
    init_values: dict,
) -> PosteriorDraws:
    """Fit SVI and draw ``cfg.num_samples`` posterior samples as one chain."""
    k_fit, k_draw = jax.random.split(rng_key)
    guide, params, losses, timings = fit_svi(model, args, cfg, k_fit, init_values)
    t0 = time.perf_counter()
    draw = jax.jit(partial(guide_draws, guide, num_samples=cfg.num_samples))
    samples = postprocess({k: np.asarray(v) for k, v in draw(params, k_draw).items()})
    timings["draw_s"] = time.perf_counter() - t0
    samples = {k: v[None] for k, v in samples.items()}
    return PosteriorDraws(samples, "svi", {"loss": losses}, timings, losses)


def guide_draws(guide: Any, params: dict, key: jax.Array, num_samples: int) -> dict:
    """Draws from a fitted autoguide, in the model's unconstrained space.

    Reads the variational parameters directly: the guide's own ``sample_posterior`` would
    re-use the model arguments captured when it was initialized under ``jit``.
    """
    if isinstance(guide, AutoNormal):
        loc = {k[: -len("_auto_loc")]: v for k, v in params.items() if k.endswith("_auto_loc")}
        scale = {k: params[f"{k}_auto_scale"] for k in loc}
        return guide_draws_normal(loc, scale, key, num_samples)
    loc, factor, scale = params["auto_loc"], params["auto_cov_factor"], params["auto_scale"]
    k1, k2 = jax.random.split(key)
    eps_low = jax.random.normal(k1, (num_samples, factor.shape[1]))
    eps_diag = jax.random.normal(k2, (num_samples, loc.shape[0]))
    flat = loc + eps_low @ factor.T + scale * eps_diag
    return jax.vmap(guide._unpack_latent)(flat)


def guide_draws_normal(loc: dict, scale: dict, key: jax.Array, num_samples: int) -> dict:
    """Draws ``loc + scale * eps`` of a mean-field Normal guide, per site."""
    # one flat draw: a threefry call per site makes XLA's compilation several times slower
    flat, unravel = ravel_pytree(loc)
    eps = jax.vmap(unravel)(jax.random.normal(key, (num_samples, flat.shape[0])))
    return {k: v + scale[k] * eps[k] for k, v in loc.items()}


# ----------------------------------------------------------------------------------- NUTS
def _chain_method(cfg: NUTSConfig) -> str:
    if cfg.chain_method != "auto":
        return cfg.chain_method
    if cfg.num_chains > 1 and jax.local_device_count() >= cfg.num_chains:
        return "parallel"
    if jax.default_backend() != "cpu":
        return "vectorized"
    return "sequential"


class _CompiledInitNUTS(NUTS):
    """NUTS whose single-chain initialization runs as one compiled program.

    numpyro initializes a single chain (``chain_method="sequential"``) eagerly: it evaluates
    the model's log density and gradient op by op, and JAX compiles a program for every op.
    For the test suite's tiny FM on the 2-core CPU that was about 1,800 one-op programs and
    25 s of a 50 s fit. Under ``jit`` the same initialization is one program. Vectorized
    and parallel chains are traced already (``vmap``, ``pmap``).
    """

    def init(self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs={}):  # noqa: B006
        from numpyro.util import is_prng_key, not_jax_tracer

        if not (is_prng_key(rng_key) and not_jax_tracer(rng_key)):  # traced by numpyro already
            return super().init(rng_key, num_warmup, init_params, model_args, model_kwargs)
        compiled = getattr(self, "_compiled_init", None)
        if compiled is None or compiled[0] != num_warmup:
            fn = jax.jit(
                lambda key, params, args, kwargs: NUTS.init(
                    self, key, num_warmup, params, args, kwargs
                )
            )
            compiled = self._compiled_init = (num_warmup, fn)
        state = compiled[1](rng_key, init_params, model_args, model_kwargs)
        # numpyro's own check is skipped under jit
        if not np.isfinite(np.asarray(state.potential_energy)):
            raise RuntimeError(
                "NUTS could not start: the log density at the initial values is not finite"
            )
        return state


def run_nuts(
    model: Callable,
    args: tuple,
    cfg: NUTSConfig,
    rng_key: jax.Array,
    postprocess: Callable[[dict], dict],
    init_values: dict,
    svi_init: Callable[[jax.Array], tuple[dict, dict, dict[str, float]]] | None = None,
) -> PosteriorDraws:
    """Run NUTS with several chains.

    ``init_values`` are constrained starting values of every latent site (used as they are
    when ``svi_init`` is None). ``svi_init(key)`` may return
    ``(init_params, inverse_mass_diag, timings)`` in the unconstrained space of ``model``, with
    a leading chain axis for the initial values.
    """
    k_init, k_mcmc = jax.random.split(rng_key)
    timings: dict[str, float] = {}
    init_params, inv_mass = None, None
    if svi_init is not None:
        init_params, inv_mass, timings = svi_init(k_init)
    kernel = _CompiledInitNUTS(
        model,
        target_accept_prob=cfg.target_accept_prob,
        max_tree_depth=cfg.max_tree_depth,
        inverse_mass_matrix=inv_mass,
        init_strategy=init_to_value(values=init_values),
    )
    chain_method = _chain_method(cfg)
    mcmc = MCMC(
        kernel,
        num_warmup=cfg.num_warmup,
        num_samples=cfg.num_samples * cfg.thinning,
        num_chains=cfg.num_chains,
        thinning=cfg.thinning,
        chain_method=chain_method,
        progress_bar=cfg.progress_bar,
        # data as arguments of the compiled sampler, not constants (smaller programs); the
        # loop is still rebuilt per sequential chain, hence shared_within_block below
        jit_model_args=True,
    )
    t0 = time.perf_counter()
    share = chain_method == "sequential" and cfg.num_chains > 1
    with compile_timer() as ct, shared_within_block() if share else contextlib.nullcontext():
        mcmc.run(
            k_mcmc,
            *args,
            init_params=init_params,
            extra_fields=("diverging", "num_steps", "energy", "adapt_state.step_size"),
        )
        samples = mcmc.get_samples(group_by_chain=True)
        jax.block_until_ready(samples)
    timings["nuts_compile_s"] = ct["compile_s"]
    timings["nuts_total_s"] = time.perf_counter() - t0
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {
        "diverging": np.asarray(extra["diverging"]),
        "n_steps": np.asarray(extra["num_steps"]),
        "tree_depth": np.floor(np.log2(np.asarray(extra["num_steps"]) + 1)).astype(int),
        "energy": np.asarray(extra["energy"]),
        "step_size": np.asarray(extra["adapt_state.step_size"]),
    }
    flat = {k: np.asarray(v) for k, v in samples.items()}
    c, d = next(iter(flat.values())).shape[:2]
    merged = postprocess({k: v.reshape((c * d, *v.shape[2:])) for k, v in flat.items()})
    out = {k: v.reshape((c, d, *v.shape[1:])) for k, v in merged.items()}
    timings["chain_method"] = chain_method  # type: ignore[assignment]
    return PosteriorDraws(out, "nuts", stats, timings)


# ---------------------------------------------------------------------------------- Gibbs
def run_gibbs(kernel: Any, args: tuple, cfg: GibbsConfig, rng_key: jax.Array) -> PosteriorDraws:
    """Run the Gibbs ``kernel`` for ``cfg``'s chains (:func:`bayesfm.sweeps.run_kernel`).

    The draws are those of :class:`numpyro.infer.MCMC` with the same key; the loop is
    compiled with :data:`bayesfm.sweeps.CPU_COMPILER_OPTIONS` on CPU. The data travel as
    arguments of the compiled program, not as constants. A kernel built with
    ``collect_latent=True`` also hands back the training rows' latent predictor per draw
    (``PosteriorDraws.latent``).
    """
    chain_method = "vectorized" if cfg.chain_method == "auto" else cfg.chain_method
    if cfg.num_chains == 1:
        chain_method = "sequential"
    devices = 1
    if chain_method == "parallel":
        # the vectorized program, its chains split over the devices (as many as divide them)
        devices = max(d for d in range(1, jax.local_device_count() + 1) if cfg.num_chains % d == 0)
        chain_method = "parallel" if devices > 1 else "vectorized"
    t0 = time.perf_counter()
    with compile_timer() as ct, warnings.catch_warnings():
        # the loop donates its carry; buffers it cannot reuse only cost a copy
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        extra = ("latent",) if getattr(kernel, "collect_latent", False) else ()
        out = run_kernel(
            kernel,
            args,
            rng_key,
            num_warmup=cfg.num_warmup,
            num_samples=cfg.num_samples,
            thinning=cfg.thinning,
            num_chains=cfg.num_chains,
            vectorized=chain_method != "sequential",
            chain_devices=devices,
            progress_bar=cfg.progress_bar,
            extra_fields=extra,
        )
    samples, latent = (out[0], out[1]["latent"]) if extra else (out, None)
    timings: dict[str, Any] = {
        "gibbs_compile_s": ct["compile_s"],
        "gibbs_total_s": time.perf_counter() - t0,
        "chain_method": chain_method,
    }
    return PosteriorDraws(samples, "gibbs", {}, timings, latent=latent)


def config_to_dict(cfg: InferenceConfig) -> dict[str, Any]:
    """JSON-friendly description of a config, with its kind."""
    return {"kind": type(cfg).__name__, **asdict(cfg)}


def config_from_dict(d: dict[str, Any]) -> InferenceConfig:
    """Inverse of :func:`config_to_dict`."""
    d = dict(d)
    kind = d.pop("kind")
    cls = {"NUTSConfig": NUTSConfig, "SVIConfig": SVIConfig, "GibbsConfig": GibbsConfig}[kind]
    return cls(**d)


def with_progress(cfg: InferenceConfig, progress_bar: bool) -> InferenceConfig:
    """A copy of ``cfg`` with the progress bar switched."""
    return replace(cfg, progress_bar=progress_bar)


def to_jax(tree: Any) -> Any:
    """numpy leaves to jax arrays (float64 -> float32)."""
    return jax.tree.map(
        lambda x: jnp.asarray(x, jnp.float32) if np.asarray(x).dtype == np.float64 else x, tree
    )
