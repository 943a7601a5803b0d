#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see benchmarks/RESULTS.md): environment, the GPU test suite, then the
# paper-scale benchmark. Python packages the machine's image lacks travel as wheels in .whl/ (gitignored).
# Usage on the device, from the repository root: OUT=<folder> bash benchmarks/device_run.sh
set -uo pipefail
OUT=${OUT:-/tmp/device_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
{
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  lscpu | grep -E "Model name|^CPU\(s\)"
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version())"
} 2>&1 | tee "$OUT/env.txt"
export STYLEGAN2_OPS_CUDA_ARCHS=${STYLEGAN2_OPS_CUDA_ARCHS:-90}
timeout "${BENCH_TIMEOUT:-150}" python3 benchmarks/bench_manipulation.py --gpu-full --skip-cpu 2>&1 | tee "$OUT/bench_manipulation.txt"
timeout "${GPU_TESTS_TIMEOUT:-120}" python3 -m pytest -m gpu -q -p no:cacheprovider --continue-on-collection-errors \
  -o addopts="" tests 2>&1 | tail -40 | tee "$OUT/gpu_tests.txt"
