// MoE routed experts on the GPU for the decode path (small batches), with the router's expert ids left on the
// device so the whole MoE layer can be captured in a CUDA graph.
#pragma once

#include <cstdint>

#include "kernels/cuda/cuda_ops.h"

namespace dsi::cuda {

// Routed experts for small batches (decode) without a host round trip: expert ids stay on the device.
// For each pair p = (t, j), e = ids[t * top_k + j] (e outside [0, num_experts) skips the pair):
//   h[p, :] = silu(x[t] W13[e][0:inter]^T) * (x[t] W13[e][inter:2 inter]^T)     (gate rows, then up rows)
//   out[t, :] += sum_j weights[t * top_k + j] * (h[p] W2[e]^T)                 (deterministic: no atomics)
// Weights bf16 (uint16_t bit patterns) or, with w_dtype kF8E4M3, DeepSeek's FP8: e4m3 codes with 128x128 block
// scales (weight_scale_inv as stored; the weight is code * scale, applied per 128-wide block of each row's
// partial sum). Activations and accumulation f32. Reads each chosen expert's weights once per pair with
// streaming loads (16 bytes; fp8 rows of a length that is not a multiple of 16 use 8-byte loads). hidden and inter
// must be multiples of 8.
//
// Limits: top_k <= 64; hidden * 4 bytes must fit in a block's shared memory (hidden <= 58K on the H100/H200);
// x, h, w13 and w2 16-byte aligned. h of a skipped pair is left unwritten (and never read). Two kernels on the
// context's stream, no allocation, no synchronization; both wait for the kernel before them (PDL) before they read
// ids, x or h.
struct MoeExpertsArgs {
  const float* x = nullptr;        // [num_tokens, hidden]
  const int32_t* ids = nullptr;    // [num_tokens, top_k]
  const float* weights = nullptr;  // [num_tokens, top_k]
  const void* w13 = nullptr;       // [num_experts, 2 * inter, hidden] bf16 or e4m3
  const void* w2 = nullptr;        // [num_experts, hidden, inter] bf16 or e4m3
  float* h = nullptr;              // workspace [num_tokens * top_k, inter]
  float* out = nullptr;            // [num_tokens, hidden], added into
  int64_t num_tokens = 0, top_k = 0, num_experts = 0, hidden = 0, inter = 0;
  DType w_dtype = DType::kBF16;  // kBF16 or kF8E4M3
  // FP8 only: per expert (contiguous blocks) the scales of W13 (gate rows then up rows; row i's scale row is
  // i / 128 over all 2 * inter rows) and of W2.
  const float* w13_scale = nullptr;  // [num_experts, ceil(2 * inter / 128), ceil(hidden / 128)]
  const float* w2_scale = nullptr;   // [num_experts, ceil(hidden / 128), ceil(inter / 128)]
  // Shared experts in the same two kernels (optional, n_shared > 0): the shared MLP of S = n_shared * inter rows
  // runs as n_shared extra pairs j = top_k + s of every token, each a slice of `inter` rows with weight 1: gate
  // rows s * inter + [0, inter) and up rows S + s * inter + [0, inter) of shared_w13 [2 S, hidden], and columns
  // s * inter + [0, inter) of shared_w2 [hidden, S] (the same sum as one MLP of S rows; silu(g) * u is per row).
  // Same dtype as the routed weights; FP8 scales [ceil(2 S / 128), ceil(hidden / 128)] and
  // [ceil(hidden / 128), ceil(S / 128)]. With shared experts out is written (out = shared + routed) rather than
  // added into, and h needs num_tokens * (top_k + n_shared) rows; top_k + n_shared <= 64.
  const void* shared_w13 = nullptr;
  const void* shared_w2 = nullptr;
  const float* shared_w13_scale = nullptr;
  const float* shared_w2_scale = nullptr;
  int64_t n_shared = 0;
  // Warps that share one output row in the down kernel when each warp has one row (few tokens): 1, 2 or 4; 0
  // picks (environment DSI_MOE_DOWN_SPLIT overrides the pick).
  int down_split = 0;
};
Status moe_experts_gemv(CudaContext& ctx, const MoeExpertsArgs& args);

}  // namespace dsi::cuda
