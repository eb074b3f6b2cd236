#!/usr/bin/env bash
# The GPU checks of issue 12, as one script for the device machine (PyTorch with CUDA is
# preinstalled there as python3; carry the mnist1d wheel, see the device tool's README):
#   bash benchmarks/gpu_check.sh [WHEEL_DIR] [PART ...]
# PARTs: tests, bench, compare (default: all three, in that order; each has a time limit, so
# a part that hangs cannot use up the machine's time: run them in separate calls if a call's
# limit is short). Writes what it measured under $OUT (or ./gpu-check) and prints it.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
wheels="${1:-}"
shift || true
parts="${*:-tests bench compare}"
if [ -n "$wheels" ]; then
    python3 -m pip install -q --no-index --find-links "$wheels" mnist1d rich hypothesis
fi
python3 -m pip install -q --no-deps -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
for part in $parts; do
    case "$part" in
        tests)
            timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py \
                tests/test_devices.py 2>&1 | tail -15 | tee "$out/tests.txt" ;;
        bench)
            timeout 300 python3 benchmarks/gpu.py 2>&1 | tee "$out/bench.txt" ;;
        compare)
            # the Table 1 protocol, replays included; the target is <= 5 minutes
            /usr/bin/time -v timeout 420 python3 -m firepbt compare mnist1d --seeds 0 1 2 \
                --device cuda --out "$out/table1-gpu" > "$out/compare.txt" \
                2> "$out/compare-time.txt"
            tail -8 "$out/compare.txt"
            grep -E "Elapsed|Maximum resident|Command exited" "$out/compare-time.txt" ;;
        *) echo "unknown part: $part (tests, bench, compare)"; exit 2 ;;
    esac
done
