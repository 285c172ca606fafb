#!/bin/bash
# The benchmarks on one GPU, absolute times (issue: record them in RESULTS.md with the
# hardware named). Needs a Python whose jax sees the GPU, e.g.
#   pip install -e . "jax[cuda12]"
# (the device machines lent to sessions have no internet: bring such an environment).
#   bash benchmarks/gpu.sh [python]
set -euo pipefail
PY=${1:-python}
cd "$(dirname "$0")/.."
"$PY" - <<'PYEOF'
import jax, sys
backend = jax.default_backend()
print("jax", jax.__version__, "backend", backend, "devices", jax.devices())
sys.exit(0 if backend == "gpu" else "jax does not see a GPU here: install jax[cuda12] first")
PYEOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
export PYTHONPATH=.
"$PY" benchmarks/step_vs_torch.py --widths 8 16 32 --steps 50
"$PY" benchmarks/sweep_speed.py --widths 8 16 32 --steps 30 --devices 1
"$PY" benchmarks/protocol.py --width 32 --images 50000 --repeats 2
"$PY" benchmarks/gd_step.py --width 32 --images 4500 --micro 0 500 --steps 5
"$PY" benchmarks/compile_time.py
