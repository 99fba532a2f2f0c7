"""Quick (smoke) runs of the benchmark scripts: compile for speed of compilation.

A ``--quick`` run only checks that a script's code still runs (its figures are thrown
away), and on its tiny data XLA's optimization passes cost more time than they save:
without them a quick fit compiles a quarter to a third faster. JAX's
``jax_disable_most_optimizations`` flag exists for such smoke runs.
"""

from __future__ import annotations

# for subprocesses, which read the flag from their environment when JAX is imported
SMOKE_ENV = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


def compile_for_smoke_run() -> None:
    """Switch off most XLA optimizations in this process (before anything is compiled)."""
    import jax

    jax.config.update("jax_disable_most_optimizations", True)
