#!/usr/bin/env bash
# The GPU checks of issue 12, as one script for the device machine (PyTorch with CUDA is
# preinstalled there as python3; carry the mnist1d wheel, see the device tool's README):
#   bash benchmarks/gpu_check.sh [WHEEL_DIR]
# Writes what it measured under $OUT (or ./gpu-check) and prints it.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
if [ -n "${1:-}" ]; then python3 -m pip install -q --no-index --find-links "$1" mnist1d rich hypothesis; fi
python3 -m pip install -q --no-deps -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_devices.py 2>&1 | tail -15 | tee "$out/tests.txt"
python3 benchmarks/gpu.py 2>&1 | tee "$out/bench.txt"
/usr/bin/time -v python3 -m firepbt compare mnist1d --seeds 0 1 2 --device cuda \
    --out "$out/table1-gpu" > "$out/compare.txt" 2> "$out/compare-time.txt"
tail -8 "$out/compare.txt"; grep -E "Elapsed|Maximum resident" "$out/compare-time.txt"
