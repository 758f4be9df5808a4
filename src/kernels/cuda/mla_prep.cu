// The MLA steps between the fused down-projection and the absorbed attention, one block per token: RMSNorm of
// the latent c_kv (kv_a_layernorm) and RoPE of k_pe, written together as the token's bf16 cache row, and RoPE of
// every head's q_pe, written into the absorbed query's rope columns. Five decode kernels (rmsnorm, two ropes,
// kv_write, the q_pe copy) become one; the math is theirs (f32 norm, RoPE in double, bf16 round to nearest even).
#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_model_ops.h"
#include "kernels/cuda/head_matmul.cuh"
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

// Token t, by a block of kThreads threads.
__device__ __forceinline__ void mla_prep_body(const MlaPrepArgs& a, int64_t t) {
  __shared__ double cs[kMaxHalf], sn[kMaxHalf];
  __shared__ float partial[kThreads / 32];
  __shared__ float inv_rms;
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

__global__ void __launch_bounds__(kThreads) mla_prep_kernel(MlaPrepArgs a) {
  pdl_enter();
  mla_prep_body(a, blockIdx.x);
}

// mla_prep's blocks (one per token) first, then the blocks of the query absorption (head_matmul's vectorized
// kernel with S lanes per output): the two write disjoint columns of q_lat and read nothing the other writes.
template <int S>
__global__ void __launch_bounds__(kThreads) mla_prep_absorb_kernel(MlaPrepArgs a, HeadMatmulArgs h,
                                                                     unsigned prep_blocks) {
  static_assert(kThreads == head_mm::kThreads);
  pdl_enter();
  if (blockIdx.x < prep_blocks) {
    mla_prep_body(a, blockIdx.x);
  } else {
    head_mm::vec_body<S>(h, blockIdx.x - prep_blocks, gridDim.x - prep_blocks);
  }
}

Status check_prep(const MlaPrepArgs& a) {
  if (a.rope_dim % 2 != 0 || a.rope_dim / 2 > kMaxHalf || a.r <= 0 || a.heads <= 0) {
    return Status::InvalidArgument(str_cat("mla_prep: rope_dim ", a.rope_dim, " (even, <= ", 2 * kMaxHalf,
                                           "), kv_lora_rank ", a.r, ", heads ", a.heads));
  }
  if (a.num_tokens > 0x7fffffff) return Status::InvalidArgument("mla_prep: too many tokens");
  return Status::Ok();
}

}  // namespace

Status mla_prep(CudaContext& ctx, const MlaPrepArgs& a) {
  if (a.num_tokens <= 0) return Status::Ok();
  DSI_RETURN_IF_ERROR(check_prep(a));
  DSI_CUDA_LAUNCH(ctx, mla_prep_kernel, dim3(static_cast<unsigned>(a.num_tokens)), dim3(kThreads), 0, a);
  return Status::Ok();
}

Status mla_prep_absorb(CudaContext& ctx, const MlaPrepArgs& a, const HeadMatmulArgs& h) {
  if (a.num_tokens <= 0) return head_matmul(ctx, h);
  DSI_RETURN_IF_ERROR(check_prep(a));
  const bool empty = h.num_tokens <= 0 || h.num_heads <= 0 || h.n <= 0;
  if (empty || h.k <= 0 || !head_mm::vec_ok(h)) {  // nothing to fuse with, or the scalar kernel's case
    DSI_RETURN_IF_ERROR(mla_prep(ctx, a));
    return head_matmul(ctx, h);
  }
  const int s = head_mm::vec_lanes(h.k);
  // head_matmul's grid for the absorption (its grid_for: up to 16 blocks per SM).
  const int64_t hm_blocks = std::clamp<int64_t>((head_mm::vec_threads(h, s) + kThreads - 1) / kThreads, 1,
                                                16 * int64_t{ctx.num_sms()});
  const auto prep_blocks = static_cast<unsigned>(a.num_tokens);
  const dim3 grid(static_cast<unsigned>(a.num_tokens + hm_blocks));
  switch (s) {
    case 32: DSI_CUDA_LAUNCH(ctx, mla_prep_absorb_kernel<32>, grid, dim3(kThreads), 0, a, h, prep_blocks); break;
    case 16: DSI_CUDA_LAUNCH(ctx, mla_prep_absorb_kernel<16>, grid, dim3(kThreads), 0, a, h, prep_blocks); break;
    case 8: DSI_CUDA_LAUNCH(ctx, mla_prep_absorb_kernel<8>, grid, dim3(kThreads), 0, a, h, prep_blocks); break;
    case 4: DSI_CUDA_LAUNCH(ctx, mla_prep_absorb_kernel<4>, grid, dim3(kThreads), 0, a, h, prep_blocks); break;
    case 2: DSI_CUDA_LAUNCH(ctx, mla_prep_absorb_kernel<2>, grid, dim3(kThreads), 0, a, h, prep_blocks); break;
    default: DSI_CUDA_LAUNCH(ctx, mla_prep_absorb_kernel<1>, grid, dim3(kThreads), 0, a, h, prep_blocks); break;
  }
  return Status::Ok();
}

}  // namespace dsi::cuda
