#!/usr/bin/env bash
# GPU check for tropref.cluster (issue 5): CuPy tests, then CuPy vs NumPy on the quick cases.
#
# Meant for the lent NVIDIA machine (one short call, from the repository root):
#   bash benchmarks/gpu_check.sh            # output on stdout and in $OUT/gpu_check.txt if OUT is set
# That machine has cupy, numpy, pytest, hypothesis but not array-api-compat / array-api-strict:
# put their wheels in .whl/ first (see docs/performance.md) and carry .whl with the call.
set -uo pipefail
cd "$(dirname "$0")/.."
log=${OUT:-/tmp}/gpu_check.txt
{
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  fi
  export PYTHONPATH=$PWD:${PYTHONPATH:-}
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import cupy; n = cupy.cuda.runtime.getDeviceCount(); print('cupy', cupy.__version__, 'devices', n); assert n > 0"
  echo "== pytest tests/test_cluster.py (the xp fixture adds the cupy backend when a GPU is present)"
  timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_cluster.py -k "cupy or same_seed" 2>&1 | tail -15
  echo "== pytest tests/test_structured_fold.py -k segment_sum (segment sums on the cupy backend)"
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_structured_fold.py -k segment_sum 2>&1 | tail -5
  echo "== CuPy vs NumPy, same data and seed"
  timeout 300 python3 benchmarks/gpu_compare.py
  echo "rc=$?"
} 2>&1 | tee "$log"
