#!/usr/bin/env bash
# The GPU columns of docs/benchmarks.md: run from the repository root on a machine whose jax
# sees a GPU (pip install ".[gpu,bench]"). Results go to $OUT (default bench_out/gpu),
# starting from the committed benchmarks/results/suite_gpu.json so that steps not rerun keep
# their rows; copy $OUT/suite_gpu.json back to benchmarks/results/ and run
# `python -m benchmarks.suite --doc-only`.
#   GPU_STEPS  which steps run (default: all): scaling mf fm fm_full nuts
#   GPU_NOTE   replaces the machine note shown under the GPU tables (rows not rerun, say)
# Each step is time-boxed and saves its rows when it ends, so a cut-off run keeps what ran.
set -u
OUT=${OUT:-bench_out/gpu}
DATA=${BAYESFM_ML100K:-../shared/data/ml-100k}
STEPS=${GPU_STEPS:-scaling mf fm fm_full nuts}
mkdir -p "$OUT"
[ -f "$OUT/suite_gpu.json" ] || cp benchmarks/results/suite_gpu.json "$OUT/" 2>/dev/null
export PYTHONUNBUFFERED=1 OUT
# the machine record of the GPU tables, read from the machine rather than typed
python3 - <<'EOF' || exit 1
import datetime, json, os, subprocess
from importlib import metadata
import jax, numpyro, bayesfm
print("devices", jax.devices(), "jax", jax.__version__, "numpyro", numpyro.__version__)
assert jax.default_backend() == "gpu", "no GPU visible to jax"
path = os.path.join(os.environ["OUT"], "suite_gpu.json")
results = json.load(open(path)) if os.path.exists(path) else {}
query = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
name, mib = (s.strip() for s in subprocess.check_output(query, text=True).splitlines()[0].split(","))
plugins = sorted(
    f"{d.metadata['Name']} {d.version}" for d in metadata.distributions()
    if (d.metadata["Name"] or "").startswith("jax-cuda") and "plugin" in d.metadata["Name"]
)
machine = results.get("machine", {})
machine.update(
    device=f"{name} ({int(mib):,} MiB)",
    cpu_cores=os.cpu_count(),
    jax=f"{jax.__version__} ({', '.join(plugins) or 'no CUDA plugin found'})",
    numpyro=numpyro.__version__,
    date=datetime.date.today().isoformat(),
)
if os.environ.get("GPU_NOTE"):
    machine["note"] = os.environ["GPU_NOTE"]
results["machine"] = machine
open(path, "w").write(json.dumps(results, indent=1))
print(machine)
EOF
SUITE=(python3 -m benchmarks.suite --data "$DATA" --out "$OUT/suite_gpu.json"
       --doc "$OUT/benchmarks_gpu.md")
UA=(--parts accuracy --splits ua --systems)
for step in $STEPS; do
    echo "== $step $(date +%T)"
    case $step in
        # the sizes where a GPU matters
        scaling) timeout "${SCALING_S:-260}" "${SUITE[@]}" --parts scaling \
                     --scaling-n 1000000 10000000 ;;
        # accuracy on ua, with myFM (first) on the same machine's CPU for the time ratio
        mf) timeout "${MF_S:-120}" "${SUITE[@]}" "${UA[@]}" \
                myfm/mf bayesfm/mf/gibbs bayesfm/mf/svi ;;
        fm) timeout "${FM_S:-180}" "${SUITE[@]}" "${UA[@]}" \
                myfm/fm bayesfm/fm/gibbs bayesfm/fm/svi ;;
        fm_full) timeout "${FM_FULL_S:-330}" "${SUITE[@]}" "${UA[@]}" \
                     myfm/fm_full bayesfm/fm_full/gibbs bayesfm/fm_full/svi ;;
        # NUTS, four chains vectorized on the GPU, for whatever time is left
        nuts) timeout "${NUTS_S:-150}" "${SUITE[@]}" "${UA[@]}" myfm/mf bayesfm/mf/nuts ;;
        *) echo "unknown step $step (allowed: scaling mf fm fm_full nuts)"; exit 2 ;;
    esac
    echo "== $step rc=$? $(date +%T)"
done
ls -la "$OUT"
