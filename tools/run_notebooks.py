"""Execute the notebooks in ``notebooks/`` from a fresh kernel each.

Usage::

    python tools/run_notebooks.py --quick          # CI: BAYESFM_QUICK=1, outputs discarded
                                                   # (and most XLA optimizations off)
    python tools/run_notebooks.py                  # full size: outputs written back in place
    python tools/run_notebooks.py 02_movielens     # only the notebooks whose names contain this

Each notebook runs with ``notebooks/`` as its working directory. Run times are printed and
recorded in ``notebooks/run_times.json`` (per mode), which the docs page of the notebooks
shows. Any cell error fails the run (exit status 1) after every notebook has been tried.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TIMES = NOTEBOOKS / "run_times.json"


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("names", nargs="*", help="substrings of notebook names (default: all)")
    p.add_argument("--quick", action="store_true", help="BAYESFM_QUICK=1; outputs not saved")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    p.add_argument("--kernel", default="python3")
    return p.parse_args()


def run(path: Path, quick: bool, timeout: int, kernel: str) -> float:
    """Execute one notebook; write its outputs back unless `quick`. Returns seconds."""
    nb = nbformat.read(path, as_version=4)
    os.environ["BAYESFM_QUICK"] = "1" if quick else "0"
    # a quick run is a smoke run: on its tiny data XLA's optimizations cost more time than
    # they save (as for the benchmark scripts' --quick; see benchmarks/smoke.py)
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1" if quick else "0"
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel,
        resources={"metadata": {"path": str(path.parent)}},
    )
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    if not quick:
        nbformat.write(nb, path)
    return seconds


def record_time(name: str, mode: str, seconds: float) -> None:
    """Merge one run time into ``run_times.json`` (locked: several runners may share it),
    with the machine's 5-minute load average, which says whether the run had the cores
    to itself."""
    with open(TIMES.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
        times.setdefault(name, {})[mode] = round(seconds, 1)
        times[name][f"{mode}_load"] = round(os.getloadavg()[1], 1)
        times[name][f"{mode}_cores"] = os.cpu_count()
        TIMES.write_text(json.dumps(times, indent=1, sort_keys=True) + "\n")


def main() -> int:
    args = _args()
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.names:
        paths = [p for p in paths if any(n in p.stem for n in args.names)]
    if not paths:
        print(f"no notebook in {NOTEBOOKS} matches {args.names}", file=sys.stderr)
        return 1
    mode = "quick" if args.quick else "full"
    failed = []
    for path in paths:
        print(f"{path.name} ({mode}) ...", flush=True)
        try:
            seconds = run(path, args.quick, args.timeout, args.kernel)
        except CellExecutionError as err:
            print(f"FAILED {path.name}:\n{err}", file=sys.stderr)
            failed.append(path.name)
            continue
        print(f"  {seconds:.1f} s", flush=True)
        record_time(path.stem, mode, seconds)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"{len(paths)} notebook(s) ran without error ({mode} mode)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
