#!/usr/bin/env bash
# On the GPU machine: build the CUDA backend, its tests and benchmarks with nvcc/g++ directly (the machine has no
# gtest, nlohmann or OpenMP packages, so the full CMake tree does not configure there), run the tests and the
# benchmarks, and write logs and JSON results to the folder given as $1.
#   scripts/gpu-run.sh OUT_DIR [commit]
# Results: OUT_DIR/cuda-kernels-<date>.json (one JSON object per line), OUT_DIR/test.log, OUT_DIR/bench.log,
# OUT_DIR/build.log.
set -uo pipefail
out=${1:?usage: gpu-run.sh OUT_DIR [commit]}
commit=${2:-${DSI_COMMIT:-unknown}}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
build=${DSI_CUDA_BUILD:-/tmp/dsi-cuda-build}
mkdir -p "$build"
date=$(date -u +%Y-%m-%d)
cd "$root"

{
  echo "== $(date -u) on $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  nvcc --version | tail -1
  ls /usr/local/cuda/lib64 | grep -E 'cublasLt|cudart' | head
  ls /usr/lib/gcc/x86_64-linux-gnu/*/libgomp* 2>&1 | head -3
} > "$out/build.log" 2>&1

gencode="-gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90"
cxx_flags="-std=c++20 -O3 -Wall -Wextra -Wno-unused-parameter -Isrc -Itests/kernels/cuda -I/usr/local/cuda/include"
nvcc_flags="-std=c++20 -O3 $gencode -Isrc -Xcompiler=-Wall,-Wno-unused-parameter"
sources=(src/core/status.cc src/core/dtype.cc src/core/tensor.cc src/core/log.cc
         src/kernels/ref/ref_ops.cc src/kernels/ref/ref_moe_route.cc
         src/kernels/cuda/cuda_context.cc src/kernels/cuda/device_pool.cc src/kernels/cuda/gemm_cublaslt.cc
         src/kernels/cuda/elementwise.cu src/kernels/cuda/fp8_quant.cu src/kernels/cuda/gemv.cu
         src/kernels/cuda/mla_decode.cu src/kernels/cuda/moe_route.cu
         tests/kernels/cuda/cuda_kernels_test.cc tests/kernels/cuda/elementwise_test.cc
         tests/kernels/cuda/fp8_test.cc tests/kernels/cuda/gemm_test.cc tests/kernels/cuda/mla_moe_test.cc
         bench/cuda/cuda_bench.cc)
pids=()
for src in "${sources[@]}"; do
  obj="$build/$(echo "$src" | tr / _).o"
  if [[ $src == *.cu ]]; then
    nvcc $nvcc_flags -c "$src" -o "$obj" > "$obj.log" 2>&1 &
  else
    g++ $cxx_flags -c "$src" -o "$obj" > "$obj.log" 2>&1 &
  fi
  pids+=($!)
done
fail=0
for pid in "${pids[@]}"; do wait "$pid" || fail=1; done
cat "$build"/*.log >> "$out/build.log"
if [[ $fail != 0 ]]; then
  echo "BUILD FAILED" | tee -a "$out/build.log"
  tail -60 "$out/build.log"
  exit 1
fi
o() { for s in "$@"; do echo "$build/$(echo "$s" | tr / _).o"; done; }
lib_objs=$(o src/core/status.cc src/core/dtype.cc src/core/tensor.cc src/core/log.cc src/kernels/ref/ref_ops.cc \
  src/kernels/ref/ref_moe_route.cc src/kernels/cuda/cuda_context.cc src/kernels/cuda/device_pool.cc \
  src/kernels/cuda/gemm_cublaslt.cc src/kernels/cuda/elementwise.cu src/kernels/cuda/fp8_quant.cu \
  src/kernels/cuda/gemv.cu src/kernels/cuda/mla_decode.cu src/kernels/cuda/moe_route.cu)
link="-L/usr/local/cuda/lib64 -lcublasLt -lcudart"
nvcc $gencode -o "$build/cuda_kernels_test" $lib_objs $(o tests/kernels/cuda/cuda_kernels_test.cc \
  tests/kernels/cuda/elementwise_test.cc tests/kernels/cuda/fp8_test.cc tests/kernels/cuda/gemm_test.cc \
  tests/kernels/cuda/mla_moe_test.cc) $link >> "$out/build.log" 2>&1 || { echo "LINK FAILED"; tail -30 "$out/build.log"; exit 1; }
nvcc $gencode -o "$build/cuda_bench" $lib_objs $(o bench/cuda/cuda_bench.cc) $link >> "$out/build.log" 2>&1 \
  || { echo "LINK FAILED"; tail -30 "$out/build.log"; exit 1; }
echo "build ok"

"$build/cuda_kernels_test" 2>&1 | tee "$out/test.log"
test_rc=${PIPESTATUS[0]}
echo "cuda_kernels_test exit code: $test_rc"

if [[ ${DSI_SKIP_BENCH:-0} != 1 ]]; then
  "$build/cuda_bench" "$commit" "$date" > "$out/cuda-kernels-$date.json" 2> "$out/bench.log"
  echo "cuda_bench exit code: $?"
  cat "$out/bench.log"
fi
exit "$test_rc"
