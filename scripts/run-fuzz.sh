#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -DDSI_FUZZ=ON) in build-fuzz and runs every fuzz_* executable for SECONDS
# each, starting from a temporary copy of its seed corpus (tests/fuzz/corpus/<name without fuzz_>/), so the repository
# is never modified. Exits non-zero when any target crashes, times out or runs out of memory, and prints the
# reproducer path: rerun it with `build-fuzz/tests/fuzz/fuzz_X <reproducer>`.
#
# Usage: scripts/run-fuzz.sh [SECONDS]        (default 60)
# Environment: BUILD_DIR (default <repo>/build-fuzz), JOBS (default 2), FUZZ_ARTIFACTS (default <repo>/build-fuzz/
# artifacts: where crash-*/timeout-*/oom-* files go), SRC_DIR (default the repository root).
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
  echo "usage: $0 [SECONDS]   (a positive number of seconds per fuzz target)" >&2
  exit 2
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${SRC_DIR:-$repo}"
build="${BUILD_DIR:-$repo/build-fuzz}"
jobs="${JOBS:-2}"
artifacts="${FUZZ_ARTIFACTS:-$build/artifacts}"

for tool in clang clang++ cmake ninja; do
  command -v "$tool" >/dev/null || { echo "run-fuzz: '$tool' not found (install clang and libclang-rt-dev)" >&2; exit 2; }
done
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

CC=clang CXX=clang++ cmake -S "$src" -B "$build" -G Ninja -DDSI_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "${launcher[@]}" >/dev/null
# Build every fuzz target the configure step registered (fuzz_* executables under tests/fuzz).
mapfile -t targets < <(cmake --build "$build" --target help | sed -n 's/^\(fuzz_[A-Za-z0-9_]*\):.*/\1/p' | sort -u)
if [[ ${#targets[@]} -eq 0 ]]; then
  echo "run-fuzz: no fuzz_* targets registered (see tests/fuzz/CMakeLists.txt)" >&2
  exit 2
fi
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

mkdir -p "$artifacts"
work="$(mktemp -d "${TMPDIR:-/tmp}/dsi-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

failed=()
for exe in "$build"/tests/fuzz/fuzz_*; do
  [[ -x "$exe" && -f "$exe" ]] || continue
  name="$(basename "$exe")"
  corpus="$work/$name"
  mkdir -p "$corpus"
  seed="$src/tests/fuzz/corpus/${name#fuzz_}"
  [[ -d "$seed" ]] && cp -r "$seed"/. "$corpus"/
  log="$artifacts/$name.log"
  echo "== $name: ${seconds}s, corpus $(find "$corpus" -type f | wc -l) files, log $log"
  set +e
  "$exe" "$corpus" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/$name-" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^Done [0-9]+ runs' "$log" | sed 's/^/   /' || true
  if [[ $rc -ne 0 ]]; then
    failed+=("$name")
    echo "!! $name failed (exit $rc); last lines of $log:"
    tail -n 30 "$log" | sed 's/^/   /'
    repro="$(grep -oE "Test unit written to [^ ]+" "$log" | tail -n 1 | sed 's/Test unit written to //')"
    if [[ -n "$repro" ]]; then
      echo "!! reproducer: $repro   (rerun: $exe $repro)"
    fi
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "run-fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "run-fuzz: all fuzz targets ran ${seconds}s without a crash"
