// CUDA kernels with the semantics of kernels/ops.h, on device pointers, queued on the context's stream.
// Each launcher validates its arguments (InvalidArgument / Unsupported) and returns launch errors as Status.
//
// Dtypes: activations are f32 unless a field says otherwise; bf16 values are passed as uint16_t bit patterns;
// FP8 is OCP e4m3 ("fn") as uint8_t. Tests compare every launcher with its kernels/ref twin.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/ops.h"

namespace dsi::cuda {

// ---- GEMM: y[m, n] = x[m, k] w[n, k]^T (+ bias) (+ y with accumulate) ---------------------------------------
// MatmulArgs from ops.h with device pointers. w bf16: m == 1 runs our GEMV (f32 activations, f32 accumulation,
// reads w once); larger m runs cuBLASLt with the activations rounded to bf16 (f32 accumulation and output), which
// measured faster from m = 2 on (bench/results/cuda-kernels-2026-11-24.json).
// w f32: cuBLASLt in f32. k must be a multiple of 8 for bf16 weights (16-byte rows).
Status matmul(CudaContext& ctx, const MatmulArgs& args);
// Forced paths (for tests and benchmarks).
Status gemv_bf16(CudaContext& ctx, const MatmulArgs& args);      // any m (fast for m <= 16)
// y = (silu(gate) * up) w^T with gate | up side by side in each row of x ([m, 2k], row stride x_stride, default
// 2k): the SwiGLU product is formed while x is staged, so the MLP's down projection needs no silu_mul kernel.
Status gemv_bf16_silu_mul(CudaContext& ctx, const MatmulArgs& args);
// One row with the RMSNorm before it in the same launch (decode's input norm ahead of the first GEMV of attention):
// h = x + residual (x: args.x, the branch), y = (rmsnorm(h) * w) W^T + bias, and h written to `h` (with a residual;
// h is then the new residual stream, in a buffer apart from x and residual: blocks read those while it is written).
// Without a residual, rmsnorm(x) * w. Every block normalizes x in its shared memory (256 threads: the sums of
// rmsnorm_residual where it runs 256 threads per row, hidden 1796..2048, the same bits there).
struct GemvNormArgs {
  const float* residual = nullptr;  // [k] or null
  const float* w = nullptr;         // [k]
  float* h = nullptr;               // [k], with a residual
  float eps = 1e-6f;
};
bool gemv_bf16_norm_fits(const MatmulArgs& args);
Status gemv_bf16_norm(CudaContext& ctx, const MatmulArgs& args, const GemvNormArgs& norm);
Status gemm_cublaslt(CudaContext& ctx, const MatmulArgs& args);  // cuBLASLt

// bf16 x bf16 GEMM with bf16 activations already on the device (prefill path).
struct GemmBf16Args {
  const uint16_t* x = nullptr;  // [m, k] bf16, row stride k
  const uint16_t* w = nullptr;  // [n, k] bf16
  void* y = nullptr;            // [m, n], row stride n, f32 or bf16
  DType y_dtype = DType::kF32;
  int64_t m = 0, n = 0, k = 0;
};
Status gemm_bf16(CudaContext& ctx, const GemmBf16Args& args);

// ---- FP8 e4m3 with DeepSeek block scales --------------------------------------------------------------------
// Per token and per 128 channels: s = max|x| / 448 (max|x| floored at 1e-12), q = e4m3(x / s), RNE, saturating.
struct QuantizeFp8Args {
  const float* x = nullptr;  // [m, k], row stride x_stride (0 means k)
  uint8_t* q = nullptr;      // [m, k] e4m3, row stride k
  float* scale = nullptr;    // [ceil(k / 128), m]: M-major, as cuBLASLt's VEC128 scale of the activations
  int64_t m = 0, k = 0, x_stride = 0;
};
Status quantize_fp8(CudaContext& ctx, const QuantizeFp8Args& args);

// y[m, n] = sum_k (q_x[m, k] s_x[k/128, m]) (q_w[n, k] s_w[n/128, k/128]), through cuBLASLt
// (VEC128_32F x BLK128x128_32F, f32 accumulation); w_scale is DeepSeek's weight_scale_inv as stored.
struct GemmFp8Args {
  const uint8_t* x = nullptr;      // [m, k] e4m3
  const float* x_scale = nullptr;  // [ceil(k/128), m] (from quantize_fp8)
  const uint8_t* w = nullptr;      // [n, k] e4m3
  const float* w_scale = nullptr;  // [ceil(n/128), ceil(k/128)] row-major
  void* y = nullptr;               // [m, n] f32 or bf16, row stride n
  DType y_dtype = DType::kBF16;
  int64_t m = 0, n = 0, k = 0;
};
// k % 512 == 0 (other k give wrong results in cuBLASLt 13.1 on the H100: Unsupported). cuBLASLt's block-scaled kernels need m % 16 == 0: other m are staged through zero-padded
// scratch copies (x, x_scale, y), which costs a few small copies per call; callers that allocate
// fp8_gemm_rows(m) rows and pass that as m avoid them.
Status gemm_fp8(CudaContext& ctx, const GemmFp8Args& args);
int64_t fp8_gemm_rows(int64_t m);

// ---- Element-wise and small ops (ops.h semantics) -----------------------------------------------------------
Status rmsnorm(CudaContext& ctx, const RmsNormArgs& args);
// h = x + residual; residual = h; y = rmsnorm(h) * w. y may alias x; residual must not alias y.
struct RmsNormResidualArgs {
  const float* x = nullptr;   // [m, d], row stride d
  float* residual = nullptr;  // [m, d], in/out; null: y = rmsnorm(x) (no residual)
  const float* w = nullptr;   // [d]
  float* y = nullptr;         // [m, d]
  int64_t m = 0, d = 0;
  float eps = 1e-6f;
  // Optional: y rounded to bf16 as well ([m, d], nearest even; bit for bit f32_to_bf16 of y), the input of a bf16
  // GEMM without a conversion pass.
  uint16_t* y_bf16 = nullptr;
};
Status rmsnorm_residual(CudaContext& ctx, const RmsNormResidualArgs& args);
// RopeArgs with device x, positions and inv_freq (double, [rot_dim / 2]); angles in double as the reference.
Status rope(CudaContext& ctx, const RopeArgs& args);
Status silu_mul(CudaContext& ctx, const SiluMulArgs& args);
// The same product rounded to bf16 (nearest even) into out_bf16 [m, d] (args.out unused): the input of a bf16
// GEMM (gemm_bf16) without an f32 round trip. Bit for bit f32_to_bf16 of silu_mul's output. d even.
Status silu_mul_bf16(CudaContext& ctx, const SiluMulArgs& args, uint16_t* out_bf16);
// EmbeddingArgs on the device; ids outside [0, vocab) give rows of zeros (the reference aborts on the host).
Status embedding(CudaContext& ctx, const EmbeddingArgs& args);
// MoeRouteArgs on the device (num_experts <= 1024, top_k <= 32, n_group <= 32); scores in double, ties to the
// lower index, exactly as ref_moe_route.
Status moe_route(CudaContext& ctx, const MoeRouteArgs& args);
// The router matmul (f32 weights [num_experts, hidden], f32 x [num_tokens, hidden], 16-byte rows) into
// args.logits and then moe_route, in one launch (decode sizes: moe_router_route_fits).
// With `norm`, the residual add and RMSNorm before the router run in the same launch: h = branch + residual,
// residual = h, normed = rmsnorm(h) * w (rmsnorm_residual's semantics; x is not read) and the router multiplies
// normed. Every block normalizes the rows in its shared memory (256 threads, summing as rmsnorm_residual does when
// it runs 256 threads per row, as for hidden 1796..2048: the same bits there); the last block writes residual and
// normed. branch, residual and normed 16-byte aligned, none aliasing another.
struct RouterNormArgs {
  const float* branch = nullptr;  // [num_tokens, hidden]
  float* residual = nullptr;      // [num_tokens, hidden], in/out
  const float* w = nullptr;       // [hidden]
  float* normed = nullptr;        // [num_tokens, hidden], out
  float eps = 1e-6f;
};
bool moe_router_route_fits(int64_t num_tokens, int64_t num_experts, int64_t hidden, bool with_norm = false);
Status moe_router_route(CudaContext& ctx, const float* x, const float* w, int64_t hidden, const MoeRouteArgs& args,
                        const RouterNormArgs* norm = nullptr);

// Conversions.
Status f32_to_bf16(CudaContext& ctx, const float* x, uint16_t* y, int64_t m, int64_t k, int64_t x_stride);

// ---- MLA absorbed decode -----------------------------------------------------------------------------------
// One query token per sequence over its latent cache [tokens, kv_lora_rank + rope_dim] (bf16, contiguous per
// sequence): out[b, h, :] = softmax(scale * q[b, h] . c[s]) c[s, :kv_lora_rank]. Split-K over the sequence
// (flash-decoding); with more than one split a combine kernel merges the splits, or (MlaDecodeOptions::
// fused_combine) the last split block of each sequence and head group to finish does (arrival counters in the
// upper half of ctx.splitk_counters(); deterministic: split order); tensor cores (mma.sync bf16, q and
// the probabilities rounded to bf16, f32 accumulation). One block reads each latent tile for up to 64 heads
// (mla_decode_kernels.cuh). Supports kv_lora_rank 512 and rope_dim 64 (DeepSeek V2/V3).
struct MlaDecodeArgs {
  const float* q = nullptr;          // [batch, num_heads, kv_lora_rank + rope_dim] ([q_nope W_UK | q_pe])
  const uint16_t* cache = nullptr;   // [batch, max_tokens, kv_lora_rank + rope_dim] bf16, or the paged pool
  const int32_t* seq_lens = nullptr; // [batch] device, each in [0, max_tokens] (0: zeros)
  // Paged cache (block_tables set): token p of sequence b is row
  // block_tables[b * max_blocks + p / block_size] * block_size + p % block_size of `cache`; max_tokens unused.
  const int32_t* block_tables = nullptr;
  int64_t max_blocks = 0, block_size = 0;
  float* out = nullptr;              // [batch, num_heads, kv_lora_rank]
  int64_t batch = 0, num_heads = 0, max_tokens = 0;
  int64_t kv_lora_rank = 512, rope_dim = 64;
  int64_t max_seq_len = 0;  // upper bound of seq_lens (host), sizes the split
  float scale = 1.0f;
  int num_splits = 0;  // 0: chosen from the SM count
};
Status mla_decode(CudaContext& ctx, const MlaDecodeArgs& args);

// Kernel choices, for tests and timing comparisons only: mla_decode(ctx, args) uses the defaults. The result is
// the same (up to rounding) under every choice.
struct MlaDecodeOptions {
  // Heads per block of the tensor-core kernel: 16, 32, 48 or 64; 0 chooses (all heads up to 64, else groups of
  // at most 64 of equal size rounded up to 16).
  int heads_per_block = 0;
  // The earlier kernel: one block of 4 warps per 16 heads, 32-token tiles double-buffered, its own split rule.
  bool legacy = false;
  // Splits merged by the last split block of the tensor-core kernel (one launch, its own split rule) instead of by
  // mla_combine_kernel. Off by default: measured on the H200 it was slower at batch 1 (16 heads, 512 tokens:
  // 10.5 us against 8.6 us for both launches; 128 heads: 47 against 15 us, the merge runs on one SM) and equal
  // from batch 64. The legacy kernel always combines separately.
  bool fused_combine = false;
  // The warpgroup-MMA kernel (sm_90a): 64 heads per block (heads past num_heads padded), 64-token tiles, splits
  // merged by mla_combine_kernel. Unsupported on other devices.
  bool wgmma = false;
};
Status mla_decode(CudaContext& ctx, const MlaDecodeArgs& args, const MlaDecodeOptions& options);
// The options mla_decode(ctx, args) uses: the defaults, with wgmma where DSI_MLA_WGMMA=1, num_heads % 64 == 0 and
// the device runs it.
MlaDecodeOptions default_mla_decode_options(const CudaContext& ctx, int64_t num_heads);

}  // namespace dsi::cuda
