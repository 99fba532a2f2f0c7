#!/usr/bin/env bash
# The GPU column of docs/benchmarks.md: run from the repository root on a machine whose jax
# sees a GPU (pip install ".[gpu,bench]"). Results go to $OUT (default bench_out/gpu); copy
# suite_gpu.json to benchmarks/results/ and run `python -m benchmarks.suite --doc-only`.
# Each step is time-boxed and writes its results as it goes, so a cut-off run keeps what ran.
set -u
OUT=${OUT:-bench_out/gpu}
DATA=${BAYESFM_ML100K:-../shared/data/ml-100k}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 - <<'EOF'
import jax, numpyro, bayesfm
print("devices", jax.devices(), "jax", jax.__version__, "numpyro", numpyro.__version__)
assert jax.default_backend() == "gpu", "no GPU visible to jax"
EOF
SUITE=(python3 -m benchmarks.suite --data "$DATA" --out "$OUT/suite_gpu.json"
       --doc "$OUT/benchmarks_gpu.md")
# scaling: the sizes where a GPU matters
timeout "${SCALING_S:-260}" "${SUITE[@]}" --parts scaling --scaling-n 1000000 10000000
# accuracy on ua, with myFM on the same machine's CPU for the time ratio
timeout "${ACCURACY_S:-200}" "${SUITE[@]}" --parts accuracy --splits ua \
    --systems bayesfm/mf/gibbs bayesfm/fm/gibbs bayesfm/mf/svi bayesfm/fm/svi myfm/mf myfm/fm
# NUTS, four chains vectorized on the GPU, for whatever time is left
timeout "${NUTS_S:-150}" "${SUITE[@]}" --parts accuracy --splits ua \
    --systems bayesfm/mf/nuts myfm/mf
ls -la "$OUT"
