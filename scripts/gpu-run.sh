#!/usr/bin/env bash
# On the GPU machine: run the GPU tests, the golden checks on the GPU and the benchmarks of a build made on the
# build machine and packed by scripts/gpu-bundle.sh (carried as build/gpu-bundle.tar.xz), writing logs and JSON
# results to OUT_DIR.
#   scripts/gpu-run.sh OUT_DIR [STEP...]
# steps: test golden golden-optin serve v2lite llama v3 mla peer ab ab-decode profile
#   (default: test golden serve peer v2lite llama mla)
#   golden-optin: the golden checks with every switch that is not yet the default turned on
#   ab, ab-decode: prefill (ab) and decode (ab-decode) of V2-Lite (27 layers), Llama-8B and the V3 slice with each
#       A/B switch of the README against the defaults, printed into ab.txt (no JSON): the evidence for flipping a
#       default; each fits one 10-minute device call
#   serve: `dsinfer serve --device cuda` on the demo model with concurrent requests (scripts/gpu-serve-smoke.py)
#   profile: per-kernel times (nsys, where installed) and the per-section step profile of 4-layer slices
# Results: OUT_DIR/test.log, golden.log, bench.log, and the benchmarks' JSON (cuda-<shape>-<date>.json).
set -uo pipefail
out=${1:?usage: gpu-run.sh OUT_DIR [STEP...]}
shift
steps=${*:-test golden serve peer v2lite llama mla}
root=$(cd "$(dirname "$0")/.." && pwd)
bundle=${DSI_GPU_BUNDLE:-$root/build/gpu-bundle}
if [[ ! -x $bundle/dsinfer && -f $bundle.tar.xz ]]; then
  mkdir -p /tmp/dsi-gpu-bundle && tar -xJf "$bundle.tar.xz" -C /tmp/dsi-gpu-bundle && bundle=/tmp/dsi-gpu-bundle
fi
commit=${DSI_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}
mkdir -p "$out"
if [[ ! -x $bundle/dsinfer ]]; then
  echo "no build at $bundle: run scripts/gpu-bundle.sh on the build machine and carry build/gpu-bundle" >&2
  exit 2
fi
export LD_LIBRARY_PATH=$bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
dsinfer=$bundle/dsinfer
shapes=$bundle/shared/bench/shapes
has() { [[ " $steps " == *" $1 "* ]]; }
rc=0
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/device.log" 2>&1

if has test; then
  "$bundle/cuda_kernels_test" > "$out/test.log" 2>&1 || rc=1
  grep -E "^(FAIL|UNSUP|SUMMARY)" "$out/test.log"
fi

# golden_run LOG [ENV...]: every fixture, mode and MLA form (check-golden --device cuda) under the environment.
golden_run() {
  local log=$1
  shift
  : > "$out/$log.log"
  for m in "$root"/tests/golden/models/*/; do
    name=$(basename "$m")
    modes="incremental batched staggered"
    mlas="auto"
    [[ $name == ds* ]] && mlas="auto naive absorbed"
    for mode in $modes; do
      for mla in $mlas; do
        env "$@" "$dsinfer" check-golden --device cuda --model "$m" --mode "$mode" --mla "$mla" \
          > "$out/golden-one.log" 2>&1
        st=$?
        line=$(tail -1 "$out/golden-one.log")
        [[ $st == 0 ]] || cat "$out/golden-one.log" >> "$out/$log-fail.log"
        { echo "== $name mode=$mode mla=$mla"; grep -E "^prompt " "$out/golden-one.log"; } >> "$out/$log-detail.log"
        echo "$name mode=$mode mla=$mla: $line $([[ $st == 0 ]] && echo PASS || echo FAIL)" | tee -a "$out/$log.log"
        [[ $st == 0 ]] || rc=1
      done
    done
  done
  rm -f "$out/golden-one.log"
}
if has golden; then
  golden_run golden DSI_GOLDEN=default
fi
# The switches that are not yet the default, all on (what flipping them would give).
if has golden-optin; then
  golden_run golden-optin DSI_MOE_FUSED_GATHER=1 DSI_CUDA_ROUTER_NORM=1 DSI_CUDA_PREP_ABSORB=1 DSI_MLA_WGMMA=1 \
    DSI_MOE_WGMMA=1 DSI_MOE_PLAN_BALLOT=1 DSI_CUDA_GEMV_NORM=1
fi

if has serve; then
  demo=/tmp/dsi-demo-model
  DSINFER_DEMO_DIR=$demo DSINFER_DEMO_TOKENIZER=$bundle/tokenizer "$dsinfer" serve --device cuda --port 8123 \
    --kv-cache-gb 2 --max-num-batched-tokens 512 > "$out/serve.log" 2>&1 &
  serve_pid=$!
  timeout 300 python3 "$root/scripts/gpu-serve-smoke.py" 8123 32 | tee "$out/serve-smoke.jsonl"
  [[ ${PIPESTATUS[0]} == 0 ]] || { echo "serve smoke failed"; tail -20 "$out/serve.log"; rc=1; }
  kill -TERM $serve_pid; wait $serve_pid
  grep -E "cuda model|error|Error" "$out/serve.log" | tail -5
fi

# The peer (Hugging Face transformers, random bf16 weights) on the V2-Lite shape, in the same run.
if has peer; then
  timeout 300 python3 "$bundle/shared/bench/hf_peer.py" "$shapes/deepseek-v2-lite.json" --batch 1 8 --prompt 512 \
    --gen 32 > "$out/peer-deepseek-v2-lite.jsonl" 2> "$out/peer.log" || echo "peer failed: $(tail -3 "$out/peer.log")"
  cat "$out/peer-deepseek-v2-lite.jsonl"
fi

bench() {
  "$dsinfer" bench --device cuda --commit "$commit" --out "$out" "$@" 2>> "$out/bench.log" | tee -a "$out/bench.txt"
  [[ ${PIPESTATUS[0]} == 0 ]] || { echo "bench failed: $*"; tail -5 "$out/bench.log"; rc=1; }
}
if has v3; then
  bench --shape "$shapes/deepseek-v3.json" --layers 4 --batch 1 8 --context 512 --decode-steps 8 --prefill 512 \
    --prefill-batch 1 4 --check-batching
fi
if has v2lite; then
  # The peer of this run, else the newest committed one (bench/results/peer-hf-deepseek-v2-lite-DATE.jsonl).
  peer=()
  last_peer=$(ls "$root"/bench/results/peer-hf-deepseek-v2-lite-*.jsonl 2>/dev/null | tail -1)
  if [[ -s $out/peer-deepseek-v2-lite.jsonl ]]; then
    peer=(--peer "$out/peer-deepseek-v2-lite.jsonl")
  elif [[ -n $last_peer ]]; then
    peer=(--peer "$last_peer")
  fi
  bench --shape "$shapes/deepseek-v2-lite.json" --layers 0 --batch 1 8 32 128 --context 512 4096 \
    --decode-steps 16 --prefill 512 --prefill-batch 1 8 --check-batching "${peer[@]}"
fi
if has llama; then
  bench --shape "$shapes/r1-distill-llama-8b.json" --layers 0 --batch 1 16 --context 512 --decode-steps 32 \
    --prefill 512 --prefill-batch 1 8
fi
# ab LABEL ENV... -- BENCH ARGS...: one bench run under the environment, its figures appended to ab.txt.
ab() {
  local label=$1 envs=()
  shift
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  echo "== $label" | tee -a "$out/ab.txt"
  env "${envs[@]}" timeout 300 "$dsinfer" bench --device cuda --commit "$commit" "$@" 2>&1 |
    grep -E "prefill|decode_tok|copy|batching|error|rror" | tee -a "$out/ab.txt"
}
# Prefill switches (V2-Lite 27 layers, the V3 slice); about 10 runs of 30-60 s.
if has ab; then
  v2=(--shape "$shapes/deepseek-v2-lite.json" --layers 0 --batch 1 --context 512 --decode-steps 4 --prefill 512
      --prefill-batch 1 8)
  ab "v2lite default" DSI_AB=0 -- "${v2[@]}" --check-batching
  ab "v2lite DSI_MOE_FUSED_GATHER=1" DSI_MOE_FUSED_GATHER=1 -- "${v2[@]}" --check-batching
  ab "v2lite DSI_MOE_PLAN_BALLOT=1" DSI_MOE_PLAN_BALLOT=1 -- "${v2[@]}"
  ab "v2lite both" DSI_MOE_FUSED_GATHER=1 DSI_MOE_PLAN_BALLOT=1 -- "${v2[@]}"
  ab "v2lite DSI_MOE_WGMMA=0" DSI_MOE_WGMMA=0 -- "${v2[@]}"
  ab "v2lite DSI_CUDA_MLA_BATCH=0" DSI_CUDA_MLA_BATCH=0 -- "${v2[@]}" --check-batching
  ab "v2lite DSI_CUDA_BF16_NORM=0" DSI_CUDA_BF16_NORM=0 -- "${v2[@]}"
  v3=(--shape "$shapes/deepseek-v3.json" --layers 4 --batch 1 --context 512 --decode-steps 4 --prefill 512
      --prefill-batch 1 4)
  ab "v3 default" DSI_AB=0 -- "${v3[@]}"
  ab "v3 DSI_MOE_WGMMA=1 (FP8 experts on wgmma)" DSI_MOE_WGMMA=1 -- "${v3[@]}" --check-batching
  ab "v3 DSI_MOE_WGMMA=1 DSI_MOE_FUSED_GATHER=1" DSI_MOE_WGMMA=1 DSI_MOE_FUSED_GATHER=1 -- "${v3[@]}"
fi
# Decode switches (V2-Lite, Llama-8B, the V3 slice at 4K contexts); about 9 runs.
if has ab-decode; then
  v2d=(--shape "$shapes/deepseek-v2-lite.json" --layers 0 --batch 1 8 --context 512 --decode-steps 16 --prefill 16)
  ab "v2lite decode default" DSI_AB=0 -- "${v2d[@]}"
  ab "v2lite decode DSI_CUDA_ROUTER_NORM=1" DSI_CUDA_ROUTER_NORM=1 -- "${v2d[@]}"
  ab "v2lite decode DSI_CUDA_PREP_ABSORB=1" DSI_CUDA_PREP_ABSORB=1 -- "${v2d[@]}"
  ab "v2lite decode DSI_CUDA_GEMV_NORM=1" DSI_CUDA_GEMV_NORM=1 -- "${v2d[@]}"
  ab "v2lite decode all three" DSI_CUDA_ROUTER_NORM=1 DSI_CUDA_PREP_ABSORB=1 DSI_CUDA_GEMV_NORM=1 -- "${v2d[@]}"
  l8=(--shape "$shapes/r1-distill-llama-8b.json" --layers 0 --batch 1 16 --context 512 --decode-steps 16 --prefill 16)
  ab "llama decode default" DSI_AB=0 -- "${l8[@]}"
  ab "llama decode DSI_CUDA_GEMV_NORM=1" DSI_CUDA_GEMV_NORM=1 -- "${l8[@]}"
  v3d=(--shape "$shapes/deepseek-v3.json" --layers 4 --batch 1 32 128 --context 4096 --decode-steps 8 --prefill 16)
  ab "v3 decode default" DSI_AB=0 -- "${v3d[@]}"
  ab "v3 decode DSI_MLA_WGMMA=1" DSI_MLA_WGMMA=1 -- "${v3d[@]}"
fi
# Kernel micro-benchmarks (GEMV vs cuBLASLt, GEMM rates, MLA decode at batch 64/128 x 4K context), with the
# copy bandwidth of the same run.
if has mla; then
  "$bundle/cuda_bench" "$commit" "$(date -u +%Y-%m-%d)" > "$out/cuda-kernels-$(date -u +%Y-%m-%d).json" \
    2> "$out/kernels.log" || { echo "cuda_bench failed"; rc=1; }
  grep -E "copy|mla_decode|gemm_bf16 " "$out/kernels.log" | head -12
fi
if has profile; then
  nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
  for shape in deepseek-v2-lite r1-distill-llama-8b; do
    args=(bench --device cuda --shape "$shapes/$shape.json" --layers 4 --batch 1 32 --context 512 --decode-steps 8
          --prefill 512 --prefill-batch 1 --out /tmp/dsi-prof)
    DSI_CUDA_PROFILE=1 "$dsinfer" "${args[@]}" > /dev/null 2> "$out/profile-$shape.log"
    ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
    if [[ -n $ncu ]]; then
      # Per-kernel device times of 4 decode steps at batch 1 and of one prefill (Nsight Compute replays each
      # kernel; the bench brackets the region with cudaProfilerStart/Stop); clocks and caches left as in a real step.
      # prefill8: a prefill of 8 x 512 tokens (compute-bound; batch 1 is bound by reading the experts' weights).
      for range in decode prefill prefill8; do
        pb=1; [[ $range == prefill8 ]] && pb=8
        "$ncu" --clock-control none --cache-control none --profile-from-start off --metrics gpu__time_duration.sum \
          --csv "$dsinfer" bench --device cuda \
          --shape "$shapes/$shape.json" --layers 4 --batch 1 --context 512 --decode-steps 4 --prefill 512 \
          --prefill-batch $pb --cuda-profiler-range ${range%8} > /tmp/ncu-$range.csv 2> /tmp/ncu-$range.log
        steps=4; [[ $range == prefill* ]] && steps=1
        python3 "$root/scripts/ncu-summary.py" /tmp/ncu-$range.csv $steps > "$out/ncu-$shape-$range.txt" 2>&1 ||
          tail -5 /tmp/ncu-$range.log >> "$out/ncu-$shape-$range.txt"
        head -14 "$out/ncu-$shape-$range.txt"
        xz -c /tmp/ncu-$range.csv > "$out/ncu-$shape-$range.csv.xz"
      done
    fi
    if [[ -n $nsys ]]; then
      "$nsys" profile -o /tmp/dsi-prof-$shape --force-overwrite true "$dsinfer" "${args[@]}" > /dev/null 2>&1
      "$nsys" stats --report cuda_gpu_kern_sum --format csv /tmp/dsi-prof-$shape.nsys-rep > "$out/kern-$shape.csv" 2>&1
      head -25 "$out/kern-$shape.csv"
    fi
  done
fi

exit $rc
