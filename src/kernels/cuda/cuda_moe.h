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
// Weights bf16 (uint16_t bit patterns), activations and accumulation f32. Reads each chosen expert's weights
// once per pair with 16-byte streaming loads. hidden and inter must be multiples of 8.
//
// Limits: top_k <= 64; hidden * 4 bytes must fit in a block's shared memory (hidden <= 58K on the H100/H200);
// x, h, w13 and w2 16-byte aligned. h of a skipped pair is left unwritten (and never read). Two kernels on the
// context's stream, no allocation, no synchronization.
struct MoeExpertsArgs {
  const float* x = nullptr;        // [num_tokens, hidden]
  const int32_t* ids = nullptr;    // [num_tokens, top_k]
  const float* weights = nullptr;  // [num_tokens, top_k]
  const uint16_t* w13 = nullptr;   // [num_experts, 2 * inter, hidden]
  const uint16_t* w2 = nullptr;    // [num_experts, hidden, inter]
  float* h = nullptr;              // workspace [num_tokens * top_k, inter]
  float* out = nullptr;            // [num_tokens, hidden], added into
  int64_t num_tokens = 0, top_k = 0, num_experts = 0, hidden = 0, inter = 0;
};
Status moe_experts_gemv(CudaContext& ctx, const MoeExpertsArgs& args);

}  // namespace dsi::cuda
