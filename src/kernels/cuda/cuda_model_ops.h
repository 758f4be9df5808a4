// Data-movement and small ops the GPU model runner needs between the big kernels: writing K/V rows into the
// paged bf16 cache, gathering rows, strided copies, per-head matmuls (MLA absorption) and the MoE combine.
// All on device pointers, queued on the context's stream.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/ops.h"

namespace dsi::cuda {

// pool[slots[t] * row_width + col0 + c] = bf16(src[t * src_stride + c]) for c < width (slots < 0: skipped).
struct KvWriteArgs {
  const float* src = nullptr;
  int64_t src_stride = 0;
  uint16_t* pool = nullptr;
  int64_t row_width = 0, col0 = 0, width = 0;
  const int32_t* slots = nullptr;  // [num_tokens]
  int64_t num_tokens = 0;
};
Status kv_write(CudaContext& ctx, const KvWriteArgs& args);

// dst[i, :] = f32(pool[row(i), :width]) for positions i < len of one sequence (row through its block table).
Status gather_paged_rows(CudaContext& ctx, const uint16_t* pool, int64_t row_width, const int32_t* block_table,
                         int64_t block_size, int64_t len, int64_t width, float* dst);

// dst[i * dst_stride + c] = src[index[i] * src_stride + c] for c < width (f32).
Status gather_rows(CudaContext& ctx, const float* src, int64_t src_stride, const int32_t* index, int64_t n,
                   int64_t width, float* dst, int64_t dst_stride);

// dst[i * d0 + j * d1 + c] = src[i * s0 + j * s1 + c] for i < n0, j < n1, c < width (f32; s1 = 0 broadcasts).
struct Copy3dArgs {
  const float* src = nullptr;
  float* dst = nullptr;
  int64_t n0 = 0, n1 = 0, width = 0;
  int64_t s0 = 0, s1 = 0, d0 = 0, d1 = 0;
};
Status copy_3d(CudaContext& ctx, const Copy3dArgs& args);

// MLA prefill (the naive form): the bf16 K and V of the flash prefill kernel from the latents expanded through
// kv_b_proj, in one pass: for i < len, h < heads
//   k[i, h, :] = bf16([kv[i, h (nope + v_dim) + 0 .. nope) | lat[i * lat_stride + r + 0 .. rope_dim)])
//   v[i, h, :] = bf16(kv[i, h (nope + v_dim) + nope .. + v_dim))
// (k: [len, heads, nope + rope_dim], v: [len, heads, v_dim], kv rows heads (nope + v_dim) wide; round to nearest
// even). nope, rope_dim, v_dim, r and lat_stride multiples of 8 and the pointers 16-byte aligned
// (mla_kv_expand_supported); otherwise InvalidArgument.
struct MlaKvExpandArgs {
  const float* kv = nullptr;
  const float* lat = nullptr;
  int64_t lat_stride = 0, r = 0;
  uint16_t* k = nullptr;
  uint16_t* v = nullptr;
  int64_t len = 0, heads = 0, nope = 0, rope_dim = 0, v_dim = 0;
};
bool mla_kv_expand_supported(const MlaKvExpandArgs& args);
Status mla_kv_expand_bf16(CudaContext& ctx, const MlaKvExpandArgs& args);

// Per-head matmul: y[t, h, n] = sum_k x[t, h, k] w_h[n, k], w_h = w + h * w_head_stride with row stride
// w_row_stride (bf16 or f32). Strides in elements.
struct HeadMatmulArgs {
  const float* x = nullptr;
  int64_t x_token_stride = 0, x_head_stride = 0;
  const void* w = nullptr;
  DType w_dtype = DType::kBF16;
  int64_t w_head_stride = 0, w_row_stride = 0;
  float* y = nullptr;
  int64_t y_token_stride = 0, y_head_stride = 0;
  int64_t num_tokens = 0, num_heads = 0, n = 0, k = 0;
};
Status head_matmul(CudaContext& ctx, const HeadMatmulArgs& args);

// out[t, :] += sum_j weights[t, j] * ys[pos[t, j], :] over pairs with pos >= 0 (deterministic order).
Status moe_combine(CudaContext& ctx, const float* ys, const int32_t* pos, const float* weights, int64_t num_tokens,
                   int64_t top_k, int64_t hidden, float* out);

// MLA before the absorbed attention, one token per block (mla_prep.cu), in place of rmsnorm + rope + rope +
// kv_write + copy_3d: the cache row of token t (slots[t] >= 0) becomes bf16(rmsnorm(c_kv) * norm_w) then
// bf16(rope(k_pe)), with lat = [c_kv (r) | k_pe (rope_dim)]; and q_lat[t, h, r + i] = rope(q[t, h, nope + i]).
struct MlaPrepArgs {
  const float* lat = nullptr;
  int64_t lat_stride = 0;
  const float* norm_w = nullptr;  // [r]
  float eps = 1e-6f;
  const float* q = nullptr;
  int64_t q_token_stride = 0, q_head_stride = 0, nope = 0;
  float* q_lat = nullptr;
  int64_t q_lat_token_stride = 0, q_lat_head_stride = 0;
  uint16_t* pool = nullptr;        // [rows, r + rope_dim]
  const int32_t* slots = nullptr;  // [num_tokens]
  const int64_t* positions = nullptr;
  const double* inv_freq = nullptr;  // [rope_dim / 2]
  double attn_factor = 1.0;
  RopeStyle style = RopeStyle::kInterleaved;
  int64_t num_tokens = 0, heads = 0, r = 0, rope_dim = 0;
};
Status mla_prep(CudaContext& ctx, const MlaPrepArgs& args);
// mla_prep and head_matmul(h) in one launch (decode: the query absorption q_lat[:, h, :r] = q_nope W_UK_h beside
// the latent's norm and ropes; h must not read what mla_prep writes nor write what it reads). The same results as
// the two calls; where h does not take head_matmul's vectorized kernel, the two calls.
Status mla_prep_absorb(CudaContext& ctx, const MlaPrepArgs& args, const HeadMatmulArgs& h);

// y[i] += x[i] (f32).
Status add_inplace(CudaContext& ctx, float* y, const float* x, int64_t n);

}  // namespace dsi::cuda
