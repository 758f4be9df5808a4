// The vectorized per-head matmul (cuda_model_ops.h: head_matmul) as a block body, so that a kernel can run it
// beside other work in one launch (mla_prep_absorb), and its launch shape.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_model_ops.h"

namespace dsi::cuda::head_mm {

constexpr int kThreads = 256;

// bf16 weights with 16-byte aligned rows (k % 8 == 0) and 16-byte aligned x chunks.
inline bool vec_ok(const HeadMatmulArgs& a) {
  return a.w_dtype == DType::kBF16 && a.k % 8 == 0 && a.w_head_stride % 8 == 0 && a.w_row_stride % 8 == 0 &&
         a.x_token_stride % 4 == 0 && a.x_head_stride % 4 == 0 && reinterpret_cast<uintptr_t>(a.w) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(a.x) % 16 == 0;
}

// Lanes per output: k / 8 chunks, at most 32, a power of two.
inline int vec_lanes(int64_t k) {
  const int64_t chunks = k / 8;
  return chunks >= 32 ? 32 : chunks >= 16 ? 16 : chunks >= 8 ? 8 : chunks >= 4 ? 4 : chunks >= 2 ? 2 : 1;
}

// Threads the vectorized kernel would like: S lanes per output, rounded up to whole warps.
inline int64_t vec_threads(const HeadMatmulArgs& a, int s) {
  return (a.num_tokens * a.num_heads * a.n * s + 31) / 32 * 32;
}

// S lanes per output (S = k / 8 up to 32), each lane a 16-byte chunk of the row at a time; several outputs per warp
// when k is short (MLA's W_UK: k = 128). `block` of `blocks` blocks of kThreads threads: a grid-stride loop.
template <int S>
__device__ __forceinline__ void vec_body(const HeadMatmulArgs& a, int64_t block, int64_t blocks) {
  const int lane = threadIdx.x & 31, sub = lane % S;
  constexpr int kPerWarp = 32 / S;
  const int64_t groups = (blocks * kThreads >> 5) * kPerWarp;
  const int64_t total = a.num_tokens * a.num_heads * a.n;
  const int64_t first = ((block * kThreads + threadIdx.x) >> 5) * kPerWarp + lane / S;
  // Every lane runs the same trip count (the shuffles below need the whole warp).
  for (int64_t base = first - lane / S; base < total; base += groups) {
    const int64_t item = base + lane / S;
    const bool valid = item < total;
    float s = 0.0f;
    if (valid) {
      const int64_t n = item % a.n, th = item / a.n, h = th % a.num_heads, t = th / a.num_heads;
      const float* x = a.x + t * a.x_token_stride + h * a.x_head_stride;
      const uint16_t* w = static_cast<const uint16_t*>(a.w) + h * a.w_head_stride + n * a.w_row_stride;
      for (int64_t k0 = int64_t{sub} * 8; k0 < a.k; k0 += 8 * S) {
        const uint4 wv = *reinterpret_cast<const uint4*>(w + k0);
        const float4 xa = *reinterpret_cast<const float4*>(x + k0);
        const float4 xb = *reinterpret_cast<const float4*>(x + k0 + 4);
        s = fmaf(__uint_as_float(wv.x << 16), xa.x, s);
        s = fmaf(__uint_as_float(wv.x & 0xffff0000u), xa.y, s);
        s = fmaf(__uint_as_float(wv.y << 16), xa.z, s);
        s = fmaf(__uint_as_float(wv.y & 0xffff0000u), xa.w, s);
        s = fmaf(__uint_as_float(wv.z << 16), xb.x, s);
        s = fmaf(__uint_as_float(wv.z & 0xffff0000u), xb.y, s);
        s = fmaf(__uint_as_float(wv.w << 16), xb.z, s);
        s = fmaf(__uint_as_float(wv.w & 0xffff0000u), xb.w, s);
      }
    }
#pragma unroll
    for (int o = S / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (valid && sub == 0) {
      const int64_t n = item % a.n, th = item / a.n, h = th % a.num_heads, t = th / a.num_heads;
      a.y[t * a.y_token_stride + h * a.y_head_stride + n] = s;
    }
  }
}

}  // namespace dsi::cuda::head_mm
