// Activation quantization for DeepSeek's block-scaled FP8: one scale per token and per 128 channels.
#include <cuda_fp8.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/warp_reduce.cuh"

namespace dsi::cuda {
namespace {

// One warp per (row, 128-channel block); each lane handles 4 channels.
__global__ void quantize_fp8_kernel(QuantizeFp8Args a, int64_t xs, int64_t num_kb) {
  const int lane = threadIdx.x & 31;
  const int64_t item = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (item >= a.m * num_kb) return;
  const int64_t row = item / num_kb, kb = item % num_kb;
  const int64_t c0 = kb * 128 + lane * 4;
  float v[4];
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[i] = c0 + i < a.k ? a.x[row * xs + c0 + i] : 0.0f;
    amax = fmaxf(amax, fabsf(v[i]));
  }
  amax = fmaxf(warp_max(amax), 1e-12f);
  const float s = amax / 448.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if (c0 + i < a.k) {
      a.q[row * a.k + c0 + i] = static_cast<uint8_t>(__nv_cvt_float_to_fp8(v[i] / s, __NV_SATFINITE, __NV_E4M3));
    }
  }
  if (lane == 0) a.scale[kb * a.m + row] = s;
}

}  // namespace

Status quantize_fp8(CudaContext& ctx, const QuantizeFp8Args& a) {
  if (a.m < 0 || a.k < 0) return Status::InvalidArgument("quantize_fp8: negative shape");
  if (a.m == 0 || a.k == 0) return Status::Ok();
  const int64_t num_kb = (a.k + 127) / 128;
  const int64_t warps = a.m * num_kb;
  quantize_fp8_kernel<<<static_cast<unsigned>((warps + 7) / 8), 256, 0, ctx.stream()>>>(a, a.x_stride ? a.x_stride : a.k,
                                                                                      num_kb);
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

}  // namespace dsi::cuda
