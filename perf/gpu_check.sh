#!/usr/bin/env bash
# One device call: correctness, compute-sanitizer, timings, crossover and sweep of the Triton
# kernels (perf/bench_gpu.py), within ~5 minutes. Results go to $OUT (the device tool's output
# folder) when set, else perf/results/<gpu>_<date>/.  Usage: bash perf/gpu_check.sh [--budget S]
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TRITON_DEFAULT_FP_FUSION=1
unset TRITON_INTERPRET
args=()
if [[ -n "${OUT:-}" ]]; then args+=(--out "$OUT"); fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
timeout 345 python -m perf.bench_gpu "${args[@]}" "$@"
rc=$?
echo "bench_gpu exit code: $rc"
# The Huffman GPU form (decoder, fused GEMV vs fixed-width and cuBLAS): at most 2 minutes.
timeout 120 python -m perf.bench_gpu_huffman "${args[@]}"
rc_huffman=$?
echo "bench_gpu_huffman exit code: $rc_huffman"
exit $(( rc != 0 ? rc : rc_huffman ))
