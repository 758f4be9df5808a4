// Weight-only FP8 matmuls: DeepSeek's e4m3 weights with 128x128 block scales used as stored, f32 activations.
// (Not the CUDA toolkit's <cuda_fp8.h>: include this one as "kernels/cuda/cuda_fp8.h".)
#pragma once

#include <cstdint>

#include "core/status.h"
#include "kernels/cuda/cuda_context.h"

namespace dsi::cuda {

// y[m, n] = x[m, k] (w[n, k] * w_scale[n / 128, k / 128])^T (+ bias[n]) (+ y with accumulate), as MatmulArgs in
// kernels/ops.h with the weights dequantized exactly; f32 accumulation. Device pointers.
struct GemvFp8Args {
  const float* x = nullptr;        // [m, k], row stride x_stride (0 means k)
  const uint8_t* w = nullptr;      // [n, k] e4m3 (OCP "fn"), row stride k
  const float* w_scale = nullptr;  // [ceil(n / 128), ceil(k / 128)] row-major: weight_scale_inv as stored
  const float* bias = nullptr;     // [n] or null
  float* y = nullptr;              // [m, n], row stride y_stride (0 means n)
  int64_t m = 0, n = 0, k = 0;
  int64_t x_stride = 0;  // 0 means k
  int64_t y_stride = 0;  // 0 means n
  bool accumulate = false;  // y += ... instead of y = ...
  // x holds gate | up per row ([m, 2k], x_stride default 2k) and the input is silu(gate) * up, formed while x is
  // staged (gemv_fp8 only, m <= 16): the MLP's down projection without a silu_mul kernel.
  bool silu_mul = false;
};

// Decode GEMV: reads each weight byte once (16-byte streaming loads), x in shared memory, k split over blocks
// when n is small (partial sums meet in y through atomicAdd, so the last bits depend on scheduling). Fast for
// m <= 4, correct for any m: m > 16, k % 16 != 0 or w not 16-byte aligned run gemm_fp8_weight_only instead.
Status gemv_fp8(CudaContext& ctx, const GemvFp8Args& args);

// Tiled GEMM on CUDA cores (64x64 output tiles, weights dequantized into shared memory) for any m, n and k:
// the fallback for shapes cuBLASLt's block-scaled FP8 refuses (k % 512 != 0). Deterministic, not fast.
Status gemm_fp8_weight_only(CudaContext& ctx, const GemvFp8Args& args);

}  // namespace dsi::cuda
