#!/usr/bin/env bash
# Every GPU check in one go, for a device machine (a few minutes): the `gpu` tests and the GPU
# serving bench, results written to $OUT (the device tool brings that folder back) or ./gpu-results.
# Runs with the machine's python3, seqserve from ./service (PYTHONPATH), onnxruntime-gpu installed:
#   bash .gpu/c4/install.sh && export PYTHONPATH=/root/site:$PWD/service && make gpu-check
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  "$python" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())'
} 2>&1 | tee "$out/machine.txt"
# Without the CUDA EP the tests below would all skip: that is a failed check, not a passed one.
"$python" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' \
  || { echo "gpu-check: this onnxruntime has no CUDAExecutionProvider" | tee -a "$out/machine.txt"; status=1; }
# -p no:asyncio: the GPU tests are synchronous, and the machine has no pytest-asyncio.
"$python" -m pytest tests/gpu -p no:cacheprovider -p no:asyncio -rA \
  --junitxml="$out/gpu-tests.xml" 2>&1 | tee "$out/gpu-tests.txt" || status=1
timeout 300 "$python" bench/gpu_serving.py --out "$out" 2>&1 | tee "$out/gpu-serving.log" || status=1
echo "gpu-check: $([ $status = 0 ] && echo passed || echo FAILED); results in $out"
exit $status
