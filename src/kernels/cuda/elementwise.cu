// RMSNorm (plain and with the residual add fused), RoPE, SiLU-and-mul and the embedding gather.
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/warp_reduce.cuh"

namespace dsi::cuda {
namespace {

constexpr int kNormThreads = 256;

__device__ float block_sum(float v) {
  __shared__ float partial[kNormThreads / 32];
  __shared__ float total;
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float s = threadIdx.x < kNormThreads / 32 ? partial[threadIdx.x] : 0.0f;
    s = warp_sum(s);
    if (threadIdx.x == 0) total = s;
  }
  __syncthreads();
  return total;
}

// One block per row. With `residual`, h = x + residual is written back to residual and normalized. With yb, y is
// also written rounded to bf16 (row stride d).
__global__ void __launch_bounds__(kNormThreads)
    rmsnorm_kernel(const float* x, float* residual, const float* w, float* y, __nv_bfloat16* yb, int64_t d,
                   int64_t xs, int64_t ys, float eps) {
  pdl_enter();
  const int64_t row = blockIdx.x;
  const float* xr = x + row * xs;
  float* yr = y + row * ys;
  __nv_bfloat16* ybr = yb != nullptr ? yb + row * d : nullptr;
  float* rr = residual != nullptr ? residual + row * d : nullptr;
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += kNormThreads) {
    float h = xr[i];
    if (rr != nullptr) {
      h += rr[i];
      rr[i] = h;
    }
    sum_sq += h * h;
  }
  const float inv_rms = rsqrtf(block_sum(sum_sq) / static_cast<float>(d) + eps);
  // The block_sum barrier orders every read of x (or write of residual) before y, which may alias x, is written.
  const float* src = rr != nullptr ? rr : xr;
  for (int64_t i = threadIdx.x; i < d; i += kNormThreads) {
    const float v = src[i] * inv_rms * w[i];
    yr[i] = v;
    if (ybr != nullptr) ybr[i] = __float2bfloat16_rn(v);
  }
}

// The same for 16-byte aligned rows (d % 4 == 0): each thread holds V float4 chunks of the row in registers,
// so all loads of a row are issued before any store (the loop above serializes them: its stores may alias its
// loads) and a row is spread over up to 1024 threads. Decode rows (one token) are latency-bound: this matters.
// (block_sum_any: warp_reduce.cuh; the router's fused norm sums the same way.)

template <int V>
__global__ void __launch_bounds__(1024)
    rmsnorm_vec_kernel(const float* x, float* residual, const float* w, float* y, uint2* yb, int64_t d, int64_t xs,
                       int64_t ys, float eps) {
  pdl_enter();
  const int64_t row = blockIdx.x;
  const int n4 = static_cast<int>(d / 4);
  const float4* xr = reinterpret_cast<const float4*>(x + row * xs);
  float4* rr = residual != nullptr ? reinterpret_cast<float4*>(residual + row * d) : nullptr;
  float4 h[V];
  float sum_sq = 0.0f;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    h[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (i < n4) {
      h[j] = xr[i];
      if (rr != nullptr) {
        const float4 r = rr[i];
        h[j].x += r.x;
        h[j].y += r.y;
        h[j].z += r.z;
        h[j].w += r.w;
      }
    }
    sum_sq += h[j].x * h[j].x + h[j].y * h[j].y + h[j].z * h[j].z + h[j].w * h[j].w;
  }
  if (rr != nullptr) {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int i = threadIdx.x + j * blockDim.x;
      if (i < n4) rr[i] = h[j];
    }
  }
  // The barriers in block_sum_any order every thread's loads of x before y (which may alias x) is written.
  const float inv_rms = rsqrtf(block_sum_any(sum_sq) / static_cast<float>(d) + eps);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4* yr = reinterpret_cast<float4*>(y + row * ys);
  uint2* ybr = yb != nullptr ? yb + row * n4 : nullptr;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < n4) {
      const float4 g = w4[i];
      const float4 v = make_float4(h[j].x * inv_rms * g.x, h[j].y * inv_rms * g.y, h[j].z * inv_rms * g.z,
                                   h[j].w * inv_rms * g.w);
      yr[i] = v;
      if (ybr != nullptr) {
        const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
        ybr[i] = make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
      }
    }
  }
}

// One thread per (token, head, pair).
__global__ void rope_kernel(RopeArgs a) {
  pdl_enter();
  const int64_t half = a.rot_dim / 2;
  const int64_t total = a.num_tokens * a.num_heads * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = idx % half, h = (idx / half) % a.num_heads, t = idx / (half * a.num_heads);
    float* x = a.x + t * a.token_stride + h * a.head_stride;
    double s, c;
    sincos(static_cast<double>(a.positions[t]) * a.inv_freq[i], &s, &c);
    c *= a.attn_factor;
    s *= a.attn_factor;
    const int64_t i0 = a.style == RopeStyle::kNeox ? i : 2 * i;
    const int64_t i1 = a.style == RopeStyle::kNeox ? i + half : 2 * i + 1;
    const double x0 = x[i0], x1 = x[i1];
    x[i0] = static_cast<float>(x0 * c - x1 * s);
    x[i1] = static_cast<float>(x1 * c + x0 * s);
  }
}

__global__ void silu_mul_kernel(SiluMulArgs a, int64_t in_stride) {
  pdl_enter();
  const int64_t total = a.m * a.d;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / a.d, c = idx % a.d;
    const float g = a.gate[r * in_stride + c];
    a.out[idx] = g / (1.0f + expf(-g)) * a.up[r * in_stride + c];
  }
}

// Two outputs per thread, one 32-bit store of two bf16.
__global__ void silu_mul_bf16_kernel(SiluMulArgs a, int64_t in_stride, uint32_t* out) {
  pdl_enter();
  const int64_t half = a.d / 2, total = a.m * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / half, c = 2 * (idx % half);
    const float g0 = a.gate[r * in_stride + c], g1 = a.gate[r * in_stride + c + 1];
    const float v0 = g0 / (1.0f + expf(-g0)) * a.up[r * in_stride + c];
    const float v1 = g1 / (1.0f + expf(-g1)) * a.up[r * in_stride + c + 1];
    out[idx] = __bfloat16_as_ushort(__float2bfloat16_rn(v0)) |
               (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(v1))) << 16);
  }
}

template <class T>
__global__ void embedding_kernel(const T* table, const int64_t* ids, float* out, int64_t vocab, int64_t d) {
  pdl_enter();
  const int64_t t = blockIdx.x;
  const int64_t id = ids[t];
  const bool ok = id >= 0 && id < vocab;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float v = 0.0f;
    if (ok) {
      if constexpr (sizeof(T) == 2) {
        v = __uint_as_float(static_cast<uint32_t>(table[id * d + i]) << 16);
      } else {
        v = table[id * d + i];
      }
    }
    out[t * d + i] = v;
  }
}

// rmsnorm with or without the residual: the vectorized kernel where rows are 16-byte aligned, else the loop.
Status launch_rmsnorm(CudaContext& ctx, const float* x, float* residual, const float* w, float* y, uint16_t* yb,
                      int64_t m, int64_t d, int64_t xs, int64_t ys, float eps) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const int64_t n4 = d / 4;
  if (d % 4 == 0 && xs % 4 == 0 && ys % 4 == 0 && aligned(x) && aligned(y) && aligned(w) &&
      (residual == nullptr || aligned(residual)) && reinterpret_cast<uintptr_t>(yb) % 8 == 0 && n4 <= 8 * 1024) {
    uint2* yb2 = reinterpret_cast<uint2*>(yb);
    // About two chunks per thread (more threads for long rows), at least one warp.
    const int64_t threads = std::min<int64_t>(1024, std::max<int64_t>(32, ((n4 + 1) / 2 + 31) / 32 * 32));
    const int64_t v = (n4 + threads - 1) / threads;
    const dim3 grid(static_cast<unsigned>(m)), block(static_cast<unsigned>(threads));
    if (v <= 1) {
      { const auto kernel_fn = rmsnorm_vec_kernel<1>;
        DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(block), 0, x, residual, w, y, yb2, d, xs, ys, eps); }
    } else if (v <= 2) {
      { const auto kernel_fn = rmsnorm_vec_kernel<2>;
        DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(block), 0, x, residual, w, y, yb2, d, xs, ys, eps); }
    } else if (v <= 4) {
      { const auto kernel_fn = rmsnorm_vec_kernel<4>;
        DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(block), 0, x, residual, w, y, yb2, d, xs, ys, eps); }
    } else {
      { const auto kernel_fn = rmsnorm_vec_kernel<8>;
        DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(block), 0, x, residual, w, y, yb2, d, xs, ys, eps); }
    }
  } else {
    { const auto kernel_fn = rmsnorm_kernel;
      DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(static_cast<unsigned>(m)), dim3(kNormThreads), 0, x, residual, w, y,
                      reinterpret_cast<__nv_bfloat16*>(yb), d, xs, ys, eps); }
  }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

unsigned grid_for(int64_t total, int max_blocks) {
  const int64_t b = (total + 255) / 256;
  return static_cast<unsigned>(b < max_blocks ? (b > 0 ? b : 1) : max_blocks);
}

}  // namespace

Status rmsnorm(CudaContext& ctx, const RmsNormArgs& a) {
  if (a.m < 0 || a.d <= 0) return Status::InvalidArgument(str_cat("rmsnorm: shape ", a.m, "x", a.d));
  if (a.m == 0) return Status::Ok();
  return launch_rmsnorm(ctx, a.x, nullptr, a.w, a.y, nullptr, a.m, a.d, a.x_stride ? a.x_stride : a.d,
                        a.y_stride ? a.y_stride : a.d, a.eps);
}

Status rmsnorm_residual(CudaContext& ctx, const RmsNormResidualArgs& a) {
  if (a.m < 0 || a.d <= 0) return Status::InvalidArgument(str_cat("rmsnorm_residual: shape ", a.m, "x", a.d));
  if (a.residual != nullptr && a.residual == a.y) {
    return Status::InvalidArgument("rmsnorm_residual: residual aliases y");
  }
  if (a.m == 0) return Status::Ok();
  return launch_rmsnorm(ctx, a.x, a.residual, a.w, a.y, a.y_bf16, a.m, a.d, a.d, a.d, a.eps);
}

Status rope(CudaContext& ctx, const RopeArgs& a) {
  if (a.rot_dim % 2 != 0) return Status::InvalidArgument(str_cat("rope: odd rot_dim ", a.rot_dim));
  const int64_t total = a.num_tokens * a.num_heads * (a.rot_dim / 2);
  if (total == 0) return Status::Ok();
  { const auto kernel_fn = rope_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid_for(total, 16 * ctx.num_sms())), dim3(256), 0, a); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

Status silu_mul(CudaContext& ctx, const SiluMulArgs& a) {
  const int64_t total = a.m * a.d;
  if (total == 0) return Status::Ok();
  { const auto kernel_fn = silu_mul_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid_for(total, 16 * ctx.num_sms())), dim3(256), 0, a, a.in_stride ? a.in_stride : a.d); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

Status silu_mul_bf16(CudaContext& ctx, const SiluMulArgs& a, uint16_t* out_bf16) {
  if (a.d % 2 != 0) return Status::InvalidArgument(str_cat("silu_mul_bf16: odd d ", a.d));
  if (reinterpret_cast<uintptr_t>(out_bf16) % 4 != 0) {
    return Status::InvalidArgument("silu_mul_bf16: out_bf16 is not 4-byte aligned");
  }
  const int64_t total = a.m * (a.d / 2);
  if (total == 0) return Status::Ok();
  { const auto kernel_fn = silu_mul_bf16_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid_for(total, 16 * ctx.num_sms())), dim3(256), 0, a,
                    a.in_stride ? a.in_stride : a.d, reinterpret_cast<uint32_t*>(out_bf16)); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

Status embedding(CudaContext& ctx, const EmbeddingArgs& a) {
  if (a.num_tokens == 0 || a.d == 0) return Status::Ok();
  const unsigned blocks = static_cast<unsigned>(a.num_tokens);
  if (a.table_dtype == DType::kBF16) {
    const auto kernel_fn = embedding_kernel<uint16_t>;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(blocks), dim3(256), 0, static_cast<const uint16_t*>(a.table), a.ids, a.out,
                    a.vocab, a.d);
  } else if (a.table_dtype == DType::kF32) {
    const auto kernel_fn = embedding_kernel<float>;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(blocks), dim3(256), 0, static_cast<const float*>(a.table), a.ids, a.out,
                    a.vocab, a.d);
  } else {
    return Status::Unsupported(str_cat("embedding: table dtype ", dtype_name(a.table_dtype)));
  }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

}  // namespace dsi::cuda
