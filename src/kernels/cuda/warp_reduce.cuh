// Warp-level reductions shared by the CUDA kernels.
#pragma once

#include <cstdint>

namespace dsi::cuda {

// Reduce-scatter of V per-lane partial sums across a warp: afterwards lane l holds, in acc[0 .. max(1, V/32)),
// the full sums of values i + (l * V) / 32. Each step halves the live values (V - 1 shuffles in all, plus
// log2(32 / V) plain steps when V < 32) instead of V full butterflies. V is a power of two.
template <int W, int O, int V>
__device__ __forceinline__ void warp_reduce_scatter_step(float (&acc)[V], int lane) {
  if constexpr (O > 0) {
    if constexpr (W == 1) {
      acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], O);
      warp_reduce_scatter_step<1, O / 2, V>(acc, lane);
    } else {
      const bool upper = (lane & O) != 0;
      constexpr int H = W / 2;
      // Once one value per lane remains per group of lanes, later steps are plain reductions (W == 1 above).
#pragma unroll
      for (int i = 0; i < H; ++i) {
        const float send = upper ? acc[i] : acc[i + H];
        const float keep = upper ? acc[i + H] : acc[i];
        acc[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
      }
      warp_reduce_scatter_step<H, O / 2, V>(acc, lane);
    }
  }
}

template <int V, int O>
__device__ __forceinline__ void warp_reduce_scatter(float (&acc)[V], int lane) {
  warp_reduce_scatter_step<V, O, V>(acc, lane);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Dot product of two f32 rows of n4 float4 (16-byte aligned), lanes striding over the row, summed across the warp.
// A lane issues the loads of kBatch steps before their products (one memory round trip per kBatch steps instead
// of one per step); the products are summed in the same order as a plain loop.
__device__ __forceinline__ float warp_dot_f32(const float4* a, const float4* b, int64_t n4, int lane) {
  constexpr int kBatch = 8;
  float s = 0.0f;
  for (int64_t i0 = lane; i0 < n4; i0 += 32 * kBatch) {
    float4 p[kBatch], q[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int64_t i = i0 + 32 * j;
      p[j] = i < n4 ? a[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      q[j] = i < n4 ? b[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      if (i0 + 32 * j >= n4) break;
      s = fmaf(p[j].x, q[j].x, s);
      s = fmaf(p[j].y, q[j].y, s);
      s = fmaf(p[j].z, q[j].z, s);
      s = fmaf(p[j].w, q[j].w, s);
    }
  }
  return warp_sum(s);
}

// Sum of v over the block (any size up to 1024 threads; every thread gets it): warp sums, then warp 0 sums the
// warps' in warp order. Its barriers order each thread's earlier shared and global accesses before the return.
__device__ __forceinline__ float block_sum_any(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  v = warp_sum(v);
  const int warps = (blockDim.x + 31) >> 5;
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float s = static_cast<int>(threadIdx.x) < warps ? partial[threadIdx.x] : 0.0f;
    s = warp_sum(s);
    if (threadIdx.x == 0) total = s;
  }
  __syncthreads();
  return total;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace dsi::cuda
