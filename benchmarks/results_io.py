"""Saving result rows and writing generated doc pages, shared by the benchmark scripts.

Every saved row records the machine that produced it and the hyperprior it was fitted
under: the result files gather rows from runs over several sessions, and a page must not
label them all with the machine or the default prior of the run that wrote it last.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name (Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def accelerator() -> str | None:
    """The device kind JAX computes on (e.g. ``"NVIDIA H100 80GB HBM3"``), or ``None`` on a
    CPU. Only asked of a JAX that the script has already imported and configured."""
    jax = sys.modules.get("jax")
    if jax is None or jax.default_backend() == "cpu":
        return None
    return jax.devices()[0].device_kind


def this_machine() -> str:
    """The CPU model and core count of the machine running this process, and its
    accelerator if JAX computes on one."""
    gpu = accelerator()
    return f"{cpu_model()}, {os.cpu_count()} cores" + (f", {gpu}" if gpu else "")


def default_prior() -> str:
    """The package's default hyperprior in words, e.g. ``"Gamma(0.5, 0.5) on precisions,
    Gamma(0.5, 0.5) on the noise precision"`` (the benchmarks fit every model under it)."""
    from bayesfm import PriorConfig

    prior = PriorConfig()
    return (
        f"Gamma({prior.alpha0:g}, {prior.beta0:g}) on precisions, "
        f"Gamma({prior.noise_alpha:g}, {prior.noise_beta:g}) on the noise precision"
    )


# Rows saved before the prior was recorded were fitted under bayesfm 0.1's default.
PRIOR_BEFORE_RECORDING = "Gamma(1, 1) on precisions, Gamma(1, 1) on the noise precision"


def fitted_by_bayesfm(row: dict) -> bool:
    """Whether a row comes from a bayesfm fit (rows of other systems name theirs)."""
    return str(row.get("system", "bayesfm")).startswith("bayesfm")


def row_saver(results: dict, out: Path, persist: bool) -> Callable[[str, dict], None]:
    """A ``save(key, row)`` that stamps the row with this machine and, for a bayesfm fit,
    the default prior (unless the row names them), records it, prints it and, if
    ``persist``, rewrites ``out`` at once (so that a run cut off keeps every row it
    finished)."""

    def save(key: str, row: dict) -> None:
        row.setdefault("machine", this_machine())
        if fitted_by_bayesfm(row):
            row.setdefault("prior", default_prior())
        results[key] = row
        print(json.dumps({key: row}), flush=True)
        if persist:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))

    return save


def _count_line(names: Iterable[str]) -> str:
    """``"name: n rows"`` per distinct name, sorted by name."""
    return ", ".join(f"{k}: {v} rows" for k, v in sorted(Counter(names).items()))


def machine_counts(rows: Iterable[dict]) -> str:
    """How many rows each recorded machine produced, e.g. ``"Xeon, 2 cores: 12 rows"``
    (rows saved before machines were recorded are counted as such)."""
    return _count_line(
        row.get("machine", "not recorded") if isinstance(row, dict) else "not recorded"
        for row in rows
    )


def prior_of(row: dict) -> str:
    """The hyperprior a bayesfm row was fitted under."""
    return row.get("prior", PRIOR_BEFORE_RECORDING)


def prior_label(row: dict) -> str:
    """The precisions' part of :func:`prior_of`, for a table column: ``"Gamma(0.5, 0.5)"``."""
    return prior_of(row).split(" on ")[0]


def prior_counts(rows: Iterable[dict]) -> str:
    """How many rows were fitted under each hyperprior (rows saved before priors were
    recorded count under bayesfm 0.1's default)."""
    return _count_line(
        prior_of(row) for row in rows if isinstance(row, dict) and fitted_by_bayesfm(row)
    )


def machine_line(rows: Iterable[dict]) -> str:
    """The header text of a generated page: this run's machine, then the rows' machines
    and hyperpriors."""
    rows = list(rows)
    return (
        f"machine of this page's last run: {this_machine()}; "
        f"rows per recorded machine: {machine_counts(rows)}; "
        f"rows per hyperprior: {prior_counts(rows)}"
    )


def write_lines(doc: Path, lines: list[str]) -> None:
    """Write a generated markdown page."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")
    print(f"wrote {doc}")
