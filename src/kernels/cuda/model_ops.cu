// Data-movement and small ops for the GPU model runner (cuda_model_ops.h). Memory-bound and simple: grid-stride
// loops over elements, one warp per output where a dot product is involved.
#include <algorithm>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/cuda_model_ops.h"
#include "kernels/cuda/head_matmul.cuh"

namespace dsi::cuda {
namespace {

__device__ __forceinline__ uint16_t to_bf16(float f) {
  // Round to nearest even (NaN stays NaN), as core/dtype.cc.
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
__device__ __forceinline__ float from_bf16(uint16_t v) { return __uint_as_float(uint32_t{v} << 16); }

unsigned grid_for(CudaContext& ctx, int64_t n, int threads = 256) {
  return static_cast<unsigned>(std::clamp<int64_t>((n + threads - 1) / threads, 1, 16 * int64_t{ctx.num_sms()}));
}

__global__ void kv_write_kernel(KvWriteArgs a) {
  pdl_enter();
  const int64_t total = a.num_tokens * a.width;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / a.width, c = i % a.width;
    const int64_t slot = a.slots[t];
    if (slot < 0) continue;
    a.pool[slot * a.row_width + a.col0 + c] = to_bf16(a.src[t * a.src_stride + c]);
  }
}

__global__ void gather_paged_kernel(const uint16_t* pool, int64_t row_width, const int32_t* table, int64_t bs,
                                    int64_t len, int64_t width, float* dst) {
  pdl_enter();
  const int64_t total = len * width;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t p = i / width, c = i % width;
    const int64_t row = static_cast<int64_t>(table[p / bs]) * bs + p % bs;
    dst[i] = from_bf16(pool[row * row_width + c]);
  }
}

__global__ void gather_rows_kernel(const float* src, int64_t ss, const int32_t* index, int64_t n, int64_t width,
                                   float* dst, int64_t ds) {
  pdl_enter();
  const int64_t total = n * width;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / width, c = i % width;
    dst[r * ds + c] = src[static_cast<int64_t>(index[r]) * ss + c];
  }
}

__global__ void copy_3d_kernel(Copy3dArgs a) {
  pdl_enter();
  const int64_t total = a.n0 * a.n1 * a.width;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % a.width, ij = i / a.width, j = ij % a.n1, i0 = ij / a.n1;
    a.dst[i0 * a.d0 + j * a.d1 + c] = a.src[i0 * a.s0 + j * a.s1 + c];
  }
}

// One thread per 8 consecutive outputs of a (token, head) row [k (nope + rope_dim) | v (v_dim)].
__global__ void mla_kv_expand_kernel(MlaKvExpandArgs a) {
  pdl_enter();
  const int64_t qk = a.nope + a.rope_dim, row = qk + a.v_dim, chunks = row / 8;
  const int64_t kvw = a.heads * (a.nope + a.v_dim);
  const int64_t total = a.len * a.heads * chunks;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = (i % chunks) * 8, th = i / chunks, h = th % a.heads, t = th / a.heads;
    const float* src;
    uint16_t* dst;
    if (c < a.nope) {
      src = a.kv + t * kvw + h * (a.nope + a.v_dim) + c;
      dst = a.k + th * qk + c;
    } else if (c < qk) {
      src = a.lat + t * a.lat_stride + a.r + (c - a.nope);
      dst = a.k + th * qk + c;
    } else {
      src = a.kv + t * kvw + h * (a.nope + a.v_dim) + a.nope + (c - qk);
      dst = a.v + th * a.v_dim + (c - qk);
    }
    const float4 x0 = __ldg(reinterpret_cast<const float4*>(src));
    const float4 x1 = __ldg(reinterpret_cast<const float4*>(src) + 1);
    const auto pack = [](float lo, float hi) {
      return static_cast<uint32_t>(to_bf16(lo)) | (static_cast<uint32_t>(to_bf16(hi)) << 16);
    };
    *reinterpret_cast<uint4*>(dst) = make_uint4(pack(x0.x, x0.y), pack(x0.z, x0.w), pack(x1.x, x1.y),
                                                pack(x1.z, x1.w));
  }
}

// One warp per output (t, h, n); lanes across k.
template <typename W>
__global__ void head_matmul_kernel(HeadMatmulArgs a) {
  pdl_enter();
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t{gridDim.x} * (blockDim.x >> 5);
  const int64_t total = a.num_tokens * a.num_heads * a.n;
  for (int64_t item = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) >> 5; item < total; item += warps) {
    const int64_t n = item % a.n, th = item / a.n, h = th % a.num_heads, t = th / a.num_heads;
    const float* x = a.x + t * a.x_token_stride + h * a.x_head_stride;
    const W* w = static_cast<const W*>(a.w) + h * a.w_head_stride + n * a.w_row_stride;
    float s = 0.0f;
    for (int64_t k = lane; k < a.k; k += 32) {
      if constexpr (sizeof(W) == 2) {
        s = fmaf(x[k], from_bf16(w[k]), s);
      } else {
        s = fmaf(x[k], w[k], s);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) a.y[t * a.y_token_stride + h * a.y_head_stride + n] = s;
  }
}

// bf16 weights with 16-byte aligned rows: head_matmul.cuh.
template <int S>
__global__ void head_matmul_vec_kernel(HeadMatmulArgs a) {
  pdl_enter();
  head_mm::vec_body<S>(a, blockIdx.x, gridDim.x);
}

__global__ void moe_combine_kernel(const float* ys, const int32_t* pos, const float* w, int64_t tokens, int64_t top_k,
                                   int64_t hidden, float* out) {
  pdl_enter();
  const int64_t total = tokens * hidden;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / hidden, c = i % hidden;
    float acc = out[i];
    for (int64_t j = 0; j < top_k; ++j) {
      const int32_t p = pos[t * top_k + j];
      if (p >= 0) acc = fmaf(w[t * top_k + j], ys[int64_t{p} * hidden + c], acc);
    }
    out[i] = acc;
  }
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  pdl_enter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    y[i] += x[i];
  }
}

}  // namespace

Status kv_write(CudaContext& ctx, const KvWriteArgs& a) {
  if (a.num_tokens <= 0 || a.width <= 0) return Status::Ok();
  if (a.col0 < 0 || a.col0 + a.width > a.row_width) {
    return Status::InvalidArgument(str_cat("kv_write: columns [", a.col0, ", ", a.col0 + a.width,
                                           ") outside a row of ", a.row_width));
  }
  { const auto kernel_fn = kv_write_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid_for(ctx, a.num_tokens * a.width)), dim3(256), 0, a); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

Status gather_paged_rows(CudaContext& ctx, const uint16_t* pool, int64_t row_width, const int32_t* block_table,
                         int64_t block_size, int64_t len, int64_t width, float* dst) {
  if (len <= 0 || width <= 0) return Status::Ok();
  if (width > row_width || block_size <= 0) return Status::InvalidArgument("gather_paged_rows: bad width or block");
  { const auto kernel_fn = gather_paged_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid_for(ctx, len * width)), dim3(256), 0, pool, row_width, block_table, block_size, len, width, dst); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

Status gather_rows(CudaContext& ctx, const float* src, int64_t src_stride, const int32_t* index, int64_t n,
                   int64_t width, float* dst, int64_t dst_stride) {
  if (n <= 0 || width <= 0) return Status::Ok();
  { const auto kernel_fn = gather_rows_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid_for(ctx, n * width)), dim3(256), 0, src, src_stride, index, n, width, dst, dst_stride); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

Status copy_3d(CudaContext& ctx, const Copy3dArgs& a) {
  if (a.n0 <= 0 || a.n1 <= 0 || a.width <= 0) return Status::Ok();
  { const auto kernel_fn = copy_3d_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid_for(ctx, a.n0 * a.n1 * a.width)), dim3(256), 0, a); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

bool mla_kv_expand_supported(const MlaKvExpandArgs& a) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return a.nope % 8 == 0 && a.rope_dim % 8 == 0 && a.v_dim % 8 == 0 && a.r % 8 == 0 && a.lat_stride % 8 == 0 &&
         a.nope >= 0 && a.rope_dim >= 0 && a.v_dim >= 0 && a.r >= 0 && a.heads >= 0 && a.len >= 0 &&
         aligned(a.kv) && aligned(a.lat) && aligned(a.k) && aligned(a.v);
}

Status mla_kv_expand_bf16(CudaContext& ctx, const MlaKvExpandArgs& a) {
  if (!mla_kv_expand_supported(a)) {
    return Status::InvalidArgument(str_cat("mla_kv_expand_bf16: nope ", a.nope, " rope_dim ", a.rope_dim, " v_dim ",
                                           a.v_dim, " r ", a.r, " lat_stride ", a.lat_stride,
                                           " (multiples of 8, 16-byte aligned pointers)"));
  }
  const int64_t total = a.len * a.heads * ((a.nope + a.rope_dim + a.v_dim) / 8);
  if (total == 0) return Status::Ok();
  { const auto kernel_fn = mla_kv_expand_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid_for(ctx, total)), dim3(256), 0, a); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

Status head_matmul(CudaContext& ctx, const HeadMatmulArgs& a) {
  if (a.num_tokens <= 0 || a.num_heads <= 0 || a.n <= 0) return Status::Ok();
  if (a.k <= 0) return Status::InvalidArgument("head_matmul: k must be positive");
  const int64_t warps = a.num_tokens * a.num_heads * a.n;
  const unsigned grid = grid_for(ctx, warps * 32);
  // 16-byte rows and x chunks: the vectorized kernel.
  if (head_mm::vec_ok(a)) {
    const int s = head_mm::vec_lanes(a.k);
    const unsigned vgrid = grid_for(ctx, head_mm::vec_threads(a, s));
    switch (s) {
      case 32: { const auto kernel_fn = head_matmul_vec_kernel<32>;
        DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(vgrid), dim3(256), 0, a); } break;
      case 16: { const auto kernel_fn = head_matmul_vec_kernel<16>;
        DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(vgrid), dim3(256), 0, a); } break;
      case 8: { const auto kernel_fn = head_matmul_vec_kernel<8>;
        DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(vgrid), dim3(256), 0, a); } break;
      case 4: { const auto kernel_fn = head_matmul_vec_kernel<4>;
        DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(vgrid), dim3(256), 0, a); } break;
      case 2: { const auto kernel_fn = head_matmul_vec_kernel<2>;
        DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(vgrid), dim3(256), 0, a); } break;
      default: { const auto kernel_fn = head_matmul_vec_kernel<1>;
        DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(vgrid), dim3(256), 0, a); } break;
    }
    DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
    return Status::Ok();
  }
  if (a.w_dtype == DType::kBF16) {
    { const auto kernel_fn = head_matmul_kernel<uint16_t>;
      DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(256), 0, a); }
  } else if (a.w_dtype == DType::kF32) {
    { const auto kernel_fn = head_matmul_kernel<float>;
      DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(256), 0, a); }
  } else {
    return Status::Unsupported(str_cat("head_matmul: weights of dtype ", dtype_name(a.w_dtype)));
  }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

Status moe_combine(CudaContext& ctx, const float* ys, const int32_t* pos, const float* weights, int64_t num_tokens,
                   int64_t top_k, int64_t hidden, float* out) {
  if (num_tokens <= 0) return Status::Ok();
  { const auto kernel_fn = moe_combine_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid_for(ctx, num_tokens * hidden)), dim3(256), 0, ys, pos, weights, num_tokens, top_k, hidden, out); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

Status add_inplace(CudaContext& ctx, float* y, const float* x, int64_t n) {
  if (n <= 0) return Status::Ok();
  { const auto kernel_fn = add_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid_for(ctx, n)), dim3(256), 0, y, x, n); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

}  // namespace dsi::cuda
