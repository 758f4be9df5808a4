// MoE routed experts as grouped GEMMs on tensor cores, for batches past the decode GEMV (cuda_moe.h) up to prefill.
// The expert ids stay on the device: pairs are grouped by expert on the device, so a call has no host
// synchronization, does not depend on the routing on the host, and can be captured in a CUDA graph.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/cuda_ops.h"

namespace dsi::cuda {

// The semantics of moe_experts_gemv: for each pair p = (t, j), e = ids[t * top_k + j] (e outside
// [0, num_experts) skips the pair):
//   h[p, :] = silu(x[t] W13[e][0:inter]^T) * (x[t] W13[e][inter:2 inter]^T)     (gate rows, then up rows)
//   out[t, :] += sum_j weights[t * top_k + j] * (h[p] W2[e]^T)                 (in j order: no atomics)
// Weights bf16 (uint16_t bit patterns) or, with w_dtype kF8E4M3, DeepSeek's FP8 as moe_experts_gemv takes them
// (cuda_moe.h): e4m3 codes with 128x128 block scales, the weight being code * scale (weight-only FP8: the
// activations stay bf16).
// Precision: x and h are rounded to bf16 (round to nearest even) for the tensor cores; FP8 weights are dequantized
// to bf16 as bf16(f32(code value * scale)) (the exact product rounded to f32, then to bf16, nearest even both);
// products accumulate in f32, each pair's down projection is kept in f32 and combined in f32. Results are bitwise
// reproducible.
//
// Requirements: hidden and inter positive multiples of 8; num_experts <= 1024; num_tokens * top_k <= 2^30;
// x (or x_bf16), w13, w2, out and workspace 16-byte aligned; FP8: w13_scale and w2_scale; workspace of
// moe_grouped_workspace_bytes. Experts that no pair chooses are never read (weights nor scales). At most five
// kernels on the context's stream, no allocation, no synchronization.
// The tensor-core instructions of the two GEMMs: mma.sync (any tile shape, bf16 or FP8 weights) or Hopper's
// warpgroup wgmma (bf16 weights, or FP8 ones with hidden and inter multiples of 16; 64- or 128-row tiles, sm_90
// devices).
enum class MoeGemmKernel { kAuto, kMma, kWgmma };
// How gemm 1 gets its rows: kCopy, a kernel copies x into a permuted matrix A [pairs, hidden] bf16 first; kInLoader,
// gemm 1 reads each row of x (as bf16, [num_tokens, hidden]) in place through the plan's token of each row (no
// copy: the pairs' rows are written and read back once less). kAuto: kInLoader with DSI_MOE_FUSED_GATHER=1, else
// kCopy (the in-loader gather has not yet run on a GPU). Both give the same bits.
enum class MoeGather { kAuto, kCopy, kInLoader };
// How the plan finds a warp's pairs of one expert: __match_any_sync, or one ballot per bit of the expert id. The
// same plan either way. kAuto: kBallot with DSI_MOE_PLAN_BALLOT=1 (not yet run on a GPU), else kMatch.
enum class MoePlanMatch { kAuto, kMatch, kBallot };

struct MoeGroupedArgs {
  const float* x = nullptr;        // [num_tokens, hidden]
  // Optional: x already rounded to bf16 (round to nearest even; [num_tokens, hidden], 16-byte aligned), e.g. shared
  // with the shared expert's GEMM; the call then never reads x.
  const uint16_t* x_bf16 = nullptr;
  const int32_t* ids = nullptr;    // [num_tokens, top_k]
  const float* weights = nullptr;  // [num_tokens, top_k]
  const void* w13 = nullptr;       // [num_experts, 2 * inter, hidden] bf16 or e4m3
  const void* w2 = nullptr;        // [num_experts, hidden, inter] bf16 or e4m3
  float* out = nullptr;            // [num_tokens, hidden], added into
  void* workspace = nullptr;       // device, moe_grouped_workspace_bytes(...) bytes; contents need no init
  size_t workspace_bytes = 0;
  int64_t num_tokens = 0, top_k = 0, num_experts = 0, hidden = 0, inter = 0;
  // Rows per GEMM tile: 0 chooses from the average rows per expert (32 or 64 for decode-sized batches, 128 for
  // prefill); 32, 64 or 128 force one tile shape (tests, benchmarks).
  int64_t block_m = 0;
  // Warps per block of the 64- and 128-row tiles: 8 (64 x 32 or 32 x 32 rows x columns each) or 4 (64 x 64 or
  // 32 x 64); 0 picks (4 for bf16 weights, 8 for FP8; environment DSI_MOE_GEMM_WARPS overrides the pick).
  int gemm_warps = 0;
  // kAuto: wgmma for bf16 experts where it can run and gemm_warps is 0 (environment DSI_MOE_WGMMA=0 keeps
  // mma.sync; DSI_MOE_WGMMA=1 takes wgmma for FP8 experts too, which is not yet the default), else mma.sync;
  // kWgmma where it cannot run is Unsupported.
  MoeGemmKernel gemm_kernel = MoeGemmKernel::kAuto;
  MoeGather gather = MoeGather::kAuto;
  MoePlanMatch plan = MoePlanMatch::kAuto;
  DType w_dtype = DType::kBF16;  // kBF16 or kF8E4M3
  // FP8 only: per expert (contiguous blocks) the scales of W13 (gate rows then up rows; row i's scale row is
  // i / 128 over all 2 * inter rows) and of W2, as MoeExpertsArgs.
  const float* w13_scale = nullptr;  // [num_experts, ceil(2 * inter / 128), ceil(hidden / 128)]
  const float* w2_scale = nullptr;   // [num_experts, ceil(hidden / 128), ceil(inter / 128)]
};

// Workspace for a call with these sizes (about num_tokens * top_k * (4 hidden + 2 inter) bytes); it depends on
// the sizes only, never on the routing or the tile shape.
size_t moe_grouped_workspace_bytes(int64_t num_tokens, int64_t top_k, int64_t num_experts, int64_t hidden,
                                   int64_t inter);

Status moe_experts_grouped(CudaContext& ctx, const MoeGroupedArgs& args);

}  // namespace dsi::cuda
