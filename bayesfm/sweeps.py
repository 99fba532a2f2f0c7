"""Run the sweeps of a NumPyro MCMC kernel in one compiled program, with bayesfm's XLA options.

:class:`numpyro.infer.MCMC` runs the same loop, but it builds the top-level ``jax.jit`` itself,
and XLA options can only be given there. On CPU two of them make the Gibbs sampler compile
faster and, measured, run no slower (:data:`CPU_COMPILER_OPTIONS`). So the estimators drive
:class:`bayesfm.gibbs.FMGibbs` here; the kernel still runs under ``MCMC`` unchanged, and
``tests/test_sweeps.py`` checks that both give the same draws from the same key.

The collection follows ``MCMC(num_warmup, num_samples * thinning, thinning=thinning)``: of
each run of ``thinning`` sweeps after the warmup, the last is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["CPU_COMPILER_OPTIONS", "default_compiler_options", "run_kernel"]

# XLA's older loop emitters, and LLVM at -O1. MovieLens-100K ua, 200 sweeps, rank 10, one
# chain, 2-core CPU (MF three runs, FM two): MF compile 12.3-13.2 s -> 6.9-8.1 s, sampling
# 5.5-6.2 s -> 3.9-4.4 s; FM with side features compile 28-29 s -> 22-25 s, sampling
# 17-20 s -> 15-16 s. LLVM at -O0 compiled faster still but sampled 3x slower.
CPU_COMPILER_OPTIONS: dict[str, Any] = {
    "xla_cpu_use_fusion_emitters": False,
    "xla_backend_optimization_level": 1,
}
# progress-bar updates per run: the loop returns to Python this often (one call each)
_PROGRESS_CHUNKS = 20


def default_compiler_options() -> dict[str, Any]:
    """:data:`CPU_COMPILER_OPTIONS` on the CPU backend, none elsewhere."""
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else {}


def run_kernel(
    kernel: Any,
    model_args: tuple,
    rng_key: jax.Array,
    *,
    num_warmup: int,
    num_samples: int,
    thinning: int = 1,
    num_chains: int = 1,
    vectorized: bool = True,
    chain_devices: int = 1,
    progress_bar: bool = False,
    compiler_options: dict[str, Any] | None = None,
    extra_fields: tuple[str, ...] = (),
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Initialize and run ``kernel`` for ``num_warmup + num_samples * thinning`` sweeps.

    Parameters
    ----------
    kernel : numpyro.infer.mcmc.MCMCKernel
        A kernel whose ``init`` and ``sample`` can be traced (``init`` with
        ``init_params=None``); its ``sample_field`` of the state is collected.
    model_args : tuple
        The model's arguments, passed to the compiled program (not baked into it).
    rng_key : jax.Array
        Split into one key per chain as :class:`numpyro.infer.MCMC` does (not split for one
        chain), so both give the same draws.
    num_warmup, num_samples, thinning, num_chains : int
        As in ``MCMC``, with ``num_samples`` the draws kept per chain.
    vectorized : bool, default True
        All chains in one program (``jax.vmap``); otherwise one chain after another through
        the same compiled program.
    chain_devices : int, default 1
        Split the chains of the vectorized program over this many devices (it must divide
        ``num_chains``); XLA partitions the program along the chain axis.
    progress_bar : bool, default False
        Show a progress bar per chain (the loop then returns to Python 20 times).
    compiler_options : dict, optional
        XLA options of the program; default :func:`default_compiler_options`.
    extra_fields : tuple of str, default ()
        Other fields of the kernel's state to collect at the kept sweeps, as
        ``MCMC(...).get_extra_fields()`` does (each an array).

    Returns
    -------
    dict of str to numpy.ndarray, or a pair of them
        The collected field, each site shaped ``(chain, draw, ...)``; with
        ``extra_fields``, also the extra fields by name, shaped the same way.
    """
    total = num_warmup + num_samples * thinning
    # one chain keeps its key; a host-side axis compiles nothing
    keys = jax.random.split(rng_key, num_chains) if num_chains > 1 else np.asarray(rng_key)[None]
    options = default_compiler_options() if compiler_options is None else compiler_options
    batch = num_chains if vectorized else 1
    if chain_devices > 1:
        if batch % chain_devices:
            raise ValueError(
                f"chain_devices: got {chain_devices}; it must divide the vectorized chains "
                f"({batch})"
            )
        mesh = Mesh(np.array(jax.local_devices()[:chain_devices]), ("chain",))
        keys = jax.device_put(keys, NamedSharding(mesh, PartitionSpec("chain")))
    program = jax.jit(
        partial(
            _run_sweeps,
            kernel=kernel,
            num_warmup=num_warmup,
            num_samples=num_samples,
            thinning=thinning,
            batched=batch > 1,
        ),
        donate_argnames=("state", "collection"),
        compiler_options=options or None,
    )
    init = partial(_init, kernel, num_warmup=num_warmup, batched=batch > 1)
    shapes = jax.eval_shape(init, keys[:batch], model_args)
    unknown = [f for f in extra_fields if f == kernel.sample_field or not hasattr(shapes, f)]
    if unknown:
        known = [f for f in getattr(shapes, "_fields", ()) if f != kernel.sample_field]
        raise ValueError(
            f"extra_fields: got {unknown!r}; the kernel's state has the extra fields {known!r}"
        )
    fields = (kernel.sample_field, *extra_fields)
    stops = _chunk_stops(total, _PROGRESS_CHUNKS if progress_bar else 1)
    runs = []
    for first in range(0, num_chains, batch):
        # host zeros: stand-ins that the first call replaces with the kernel's initial state
        state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
        collection = jax.tree.map(
            lambda s: np.zeros((num_samples, *s.shape), s.dtype),
            {f: getattr(shapes, f) for f in fields},
        )
        bar = _progress(total, first, batch) if progress_bar else None
        start = 0
        for stop in stops:
            state, collection = program(
                keys[first : first + batch], model_args, start, stop, state, collection
            )
            if bar is not None:
                jax.block_until_ready(collection)
                bar.update(stop - start)
            start = stop
        if bar is not None:
            bar.close()
        runs.append(jax.tree.map(np.asarray, collection))
    if batch > 1:  # (draw, chain, ...) -> (chain, draw, ...), laid out as a loaded fit's
        out = jax.tree.map(lambda v: np.ascontiguousarray(np.swapaxes(v, 0, 1)), runs[0])
    else:
        out = jax.tree.map(lambda *chains: np.stack(chains), *runs)
    if not extra_fields:
        return out[kernel.sample_field]
    return out[kernel.sample_field], {f: out[f] for f in extra_fields}


def _init(kernel, keys, model_args, *, num_warmup: int, batched: bool):
    def one(key):
        return kernel.init(key, num_warmup, None, model_args, {})

    return jax.vmap(one)(keys) if batched else one(keys[0])


def _run_sweeps(
    keys,
    model_args,
    start,
    stop,
    state,
    collection,
    *,
    kernel,
    num_warmup: int,
    num_samples: int,
    thinning: int,
    batched: bool,
):
    """Sweeps ``start`` to ``stop - 1`` (a chain starts from ``kernel.init`` at 0)."""
    fresh = _init(kernel, keys, model_args, num_warmup=num_warmup, batched=batched)
    state = jax.tree.map(lambda a, b: jnp.where(start == 0, a, b), fresh, state)

    def one(s):
        return kernel.sample(s, model_args, {})

    step: Callable = jax.vmap(one) if batched else one

    def body(i, carry):
        s, kept = carry
        s = step(s)
        # warmup sweeps write to slot 0, which the first kept sweep overwrites
        slot = jnp.clip((i - num_warmup) // thinning, 0, num_samples - 1)
        kept = jax.tree.map(
            lambda c, x: jax.lax.dynamic_update_index_in_dim(c, x, slot, 0),
            kept,
            {f: getattr(s, f) for f in kept},
        )
        return s, kept

    return jax.lax.fori_loop(start, stop, body, (state, collection))


def _chunk_stops(total: int, chunks: int) -> list[int]:
    """Ends of ``chunks`` near-equal runs of sweeps covering ``range(total)``."""
    return sorted({int(round(total * (c + 1) / chunks)) for c in range(chunks)} - {0})


def _progress(total: int, first_chain: int, batch: int):
    from tqdm.auto import tqdm

    last = first_chain + batch - 1
    label = f"chain {first_chain}" if batch == 1 else f"chains {first_chain}-{last}"
    return tqdm(total=total, desc=f"Gibbs {label}", unit="sweep")
