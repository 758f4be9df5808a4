// The MLA steps between the fused down-projection and the absorbed attention, one block per token: RMSNorm of
// the latent c_kv (kv_a_layernorm) and RoPE of k_pe, written together as the token's bf16 cache row, and RoPE of
// every head's q_pe, written into the absorbed query's rope columns. Five decode kernels (rmsnorm, two ropes,
// kv_write, the q_pe copy) become one; the math is theirs (f32 norm, RoPE in double, bf16 round to nearest even).
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_model_ops.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/warp_reduce.cuh"

namespace dsi::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxHalf = 64;  // rope_dim <= 128

__device__ __forceinline__ uint16_t round_bf16(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__global__ void __launch_bounds__(kThreads) mla_prep_kernel(MlaPrepArgs a) {
  pdl_enter();
  __shared__ double cs[kMaxHalf], sn[kMaxHalf];
  __shared__ float partial[kThreads / 32];
  __shared__ float inv_rms;
  const int64_t t = blockIdx.x;
  const int64_t half = a.rope_dim / 2;
  const float* lat = a.lat + t * a.lat_stride;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    double s, c;
    sincos(static_cast<double>(a.positions[t]) * a.inv_freq[i], &s, &c);
    cs[i] = c * a.attn_factor;
    sn[i] = s * a.attn_factor;
  }
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < a.r; i += blockDim.x) sq += lat[i] * lat[i];
  sq = warp_sum(sq);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sq;
  __syncthreads();
  if (threadIdx.x < 32) {
    float s = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0.0f;
    s = warp_sum(s);
    if (threadIdx.x == 0) inv_rms = rsqrtf(s / static_cast<float>(a.r) + a.eps);
  }
  __syncthreads();
  const bool neox = a.style == RopeStyle::kNeox;
  const int64_t slot = a.slots[t];
  if (slot >= 0) {
    uint16_t* row = a.pool + slot * (a.r + a.rope_dim);
    for (int64_t i = threadIdx.x; i < a.r; i += blockDim.x) row[i] = round_bf16(lat[i] * inv_rms * a.norm_w[i]);
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
      const int64_t i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
      const double x0 = lat[a.r + i0], x1 = lat[a.r + i1];
      row[a.r + i0] = round_bf16(static_cast<float>(x0 * cs[i] - x1 * sn[i]));
      row[a.r + i1] = round_bf16(static_cast<float>(x1 * cs[i] + x0 * sn[i]));
    }
  }
  for (int64_t idx = threadIdx.x; idx < a.heads * half; idx += blockDim.x) {
    const int64_t h = idx / half, i = idx % half;
    const int64_t i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
    const float* q = a.q + t * a.q_token_stride + h * a.q_head_stride + a.nope;
    float* out = a.q_lat + t * a.q_lat_token_stride + h * a.q_lat_head_stride + a.r;
    const double x0 = q[i0], x1 = q[i1];
    out[i0] = static_cast<float>(x0 * cs[i] - x1 * sn[i]);
    out[i1] = static_cast<float>(x1 * cs[i] + x0 * sn[i]);
  }
}

}  // namespace

Status mla_prep(CudaContext& ctx, const MlaPrepArgs& a) {
  if (a.num_tokens <= 0) return Status::Ok();
  if (a.rope_dim % 2 != 0 || a.rope_dim / 2 > kMaxHalf || a.r <= 0 || a.heads <= 0) {
    return Status::InvalidArgument(str_cat("mla_prep: rope_dim ", a.rope_dim, " (even, <= ", 2 * kMaxHalf,
                                           "), kv_lora_rank ", a.r, ", heads ", a.heads));
  }
  if (a.num_tokens > 0x7fffffff) return Status::InvalidArgument("mla_prep: too many tokens");
  DSI_CUDA_LAUNCH(ctx, mla_prep_kernel, dim3(static_cast<unsigned>(a.num_tokens)), dim3(kThreads), 0, a);
  return Status::Ok();
}

}  // namespace dsi::cuda
