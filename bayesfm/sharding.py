"""Data parallelism over devices: the rows of the training table split across a 1-D mesh.

Rows are padded to a multiple of the device count (padded rows carry ``row_mask = 0`` and
add nothing to the likelihood or to any Gibbs statistic), placed with
``NamedSharding(mesh, P("data"))``, and every other array is replicated. Jitted code then
runs unchanged: XLA partitions the per-row work and sums across devices where the model
reduces over rows. The Gibbs sampler's per-level Gram sums are computed per device with
``shard_map`` and added with ``psum``.

The same code runs on one CPU, on several GPUs, and on several hosts: call
``jax.distributed.initialize()`` in every process first, and the mesh spans the devices of
all of them (``jax.devices()``). On CPU hosts, set ``jax_cpu_collectives_implementation``
to ``"gloo"`` before that; tests/multihost_check.py runs two such processes. On one CPU,
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (set before JAX is imported)
simulates two devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA_AXIS",
    "row_mesh",
    "resolve_devices",
    "pad_rows",
    "place",
    "is_training_row_array",
]

DATA_AXIS = "data"


def resolve_devices(data_devices: int | str | None) -> int:
    """Number of devices the rows are split over (``None``: 1, ``"all"``: every device)."""
    available = jax.device_count()
    if data_devices is None:
        return 1
    if data_devices == "all":
        return available
    if (
        not isinstance(data_devices, int | np.integer)
        or isinstance(data_devices, bool)
        or not 1 <= data_devices <= available
    ):
        raise ValueError(
            f"data_devices: got {data_devices!r}; allowed None, 'all' or an integer from 1 to "
            f"the {available} device(s) JAX sees"
        )
    return int(data_devices)


def row_mesh(n_devices: int) -> Mesh:
    """A 1-D mesh over the first ``n_devices`` devices, axis ``"data"``.

    The axis type is ``Auto``: numpyro's tracing fails under the default explicit axes.
    """
    devices = np.asarray(jax.devices()[:n_devices])
    return Mesh(devices, (DATA_AXIS,), axis_types=(AxisType.Auto,))


def pad_rows(arrays: dict[str, Any], y: np.ndarray, multiple: int) -> tuple[dict, np.ndarray]:
    """Pad the per-row arrays (entity indices) and ``y`` to a multiple of ``multiple`` rows.

    Adds ``arrays["row_mask"]`` (1 for real rows, 0 for padding). Padded rows point at
    level 0 and hold no term entries; the mask removes them from every sum.
    """
    n = len(y)
    total = -(-n // multiple) * multiple
    out = dict(arrays)
    out["entity"] = {
        d: np.concatenate([a, np.zeros(total - n, a.dtype)]) for d, a in arrays["entity"].items()
    }
    out["row_mask"] = (np.arange(total) < n).astype(np.float32)
    y_pad = np.concatenate([y, np.zeros(total - n, y.dtype)])
    return out, y_pad


def place(tree: Any, mesh: Mesh, is_row_array: Callable[[tuple], bool]) -> Any:
    """Put the leaves for which ``is_row_array(key_path)`` holds sharded on their first
    axis over ``mesh``, and replicate the others. ``key_path`` is a tuple of dict keys."""
    rows = NamedSharding(mesh, P(DATA_AXIS))
    replicated = NamedSharding(mesh, P())

    def put(path, leaf):
        keys = tuple(getattr(k, "key", getattr(k, "idx", None)) for k in path)
        return jax.device_put(leaf, rows if is_row_array(keys) else replicated)

    return jax.tree_util.tree_map_with_path(put, tree)


def is_training_row_array(keys: tuple) -> bool:
    """Row arrays of the encoded training data (see :func:`place`): entity indices, the row
    mask, and the per-device row blocks of the Gibbs plan."""
    return keys[:1] in (("entity",), ("row_mask",)) or (
        keys[:2] == ("gibbs", "entity") and keys[-1] == "rows"
    )
