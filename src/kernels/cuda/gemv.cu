// Decode GEMV for bf16 weights: y[m, n] = x[m, k] w[n, k]^T for small m (1..16), f32 activations and accumulation.
// Each weight byte is read once (16-byte streaming loads, no L1 allocation); x sits in shared memory; each warp
// works on R rows at once so one shared-memory read of x feeds R rows. Long k is split over blocks (grid.y), so
// small-n shapes still fill every SM; the last split of a row block to finish adds the partial sums in split
// order (CudaContext::splitk_partials), so there is no memset of y before and the result is deterministic.
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/cuda/bf16_load.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/warp_reduce.cuh"

namespace dsi::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kXSmemFloats = 8192;  // 32 KB of x per block
constexpr int64_t kGemvMaxM = 1;    // matmul() uses the GEMV up to this m
constexpr size_t kGemvNormMaxSmem = 47 << 10;  // gemv_bf16_norm's x in shared memory (48 KB less static)

struct GemvParams {
  const float* x;
  const uint16_t* w;
  const float* bias;
  float* y;
  int64_t m, n, k, xs, ys;
  int64_t k_chunk;  // multiple of 256
  bool atomic;      // accumulate: add into y
  // SwiGLU input: x holds [gate | up] per row and the matmul input is silu(gate) * up (up at x + up_offset).
  bool swiglu;
  int64_t up_offset;
  // Split k (grid.y > 1) without accumulate: each split writes its partial sums here ([splits, m, n]) and the
  // last split of a row block to arrive (counters[blockIdx.x]) adds them up in split order and writes y.
  float* partials;
  unsigned* counters;
  // gemv1 with the norm (GemvNormArgs): x is the branch; norm_w set turns it on.
  const float* norm_residual;
  const float* norm_w;
  float* norm_h;
  float norm_eps;
};

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// x chunk layout in shared memory: for k-offset kk (chunk c = kk / 8, e = kk % 8), element at
// [mt][e / 4][c][e % 4] so that lane-consecutive float4 reads are conflict-free.
// PDL (launch.cuh): the first weight loads are issued before pdl_enter(), so they overlap the previous kernel.
template <int MT, int R>
__global__ void __launch_bounds__(kWarps * 32) gemv_bf16_kernel(GemvParams p) {
  extern __shared__ float4 smem4[];
  float* xs = reinterpret_cast<float*>(smem4);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t kb0 = blockIdx.y * p.k_chunk;
  const int64_t kb1 = min(p.k, kb0 + p.k_chunk);
  const int kc = static_cast<int>(p.k_chunk);
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * R;
  const uint16_t* wrow[R];
  bool valid[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    valid[r] = row0 + r < p.n;
    wrow[r] = p.w + (valid[r] ? row0 + r : 0) * p.k;
  }
  int64_t k0 = kb0 + lane * 8;
  uint4 wv[2][R];
  auto load = [&](int64_t at) {
    const bool second = at + 256 < kb1;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      wv[0][r] = (valid[r] && at < kb1) ? load_stream(wrow[r] + at) : make_uint4(0, 0, 0, 0);
      wv[1][r] = (valid[r] && second) ? load_stream(wrow[r] + at + 256) : make_uint4(0, 0, 0, 0);
    }
  };
  load(k0);
  pdl_enter();
  for (int i = threadIdx.x; i < MT * kc; i += blockDim.x) {
    const int mt = i / kc, kk = i % kc;
    const int64_t kg = kb0 + kk;
    float v = 0.0f;
    if (mt < p.m && kg < kb1) {
      v = p.x[mt * p.xs + kg];
      if (p.swiglu) v = silu_times(v, p.x[mt * p.xs + p.up_offset + kg]);
    }
    const int c = kk >> 3, e = kk & 7;
    xs[mt * kc + (e >> 2) * (kc / 2) + c * 4 + (e & 3)] = v;
  }
  __syncthreads();

  float acc[R * MT];
#pragma unroll
  for (int i = 0; i < R * MT; ++i) acc[i] = 0.0f;
  while (k0 < kb1) {
    const bool second = k0 + 256 < kb1;
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      if (u == 1 && !second) break;
      const int c = static_cast<int>((k0 + u * 256 - kb0) >> 3);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const float4 xa = smem4[(mt * kc + c * 4) / 4];
        const float4 xb = smem4[(mt * kc + kc / 2 + c * 4) / 4];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const uint4 w = wv[u][r];
          float s = acc[r * MT + mt];
          s = fmaf(lo_bf16(w.x), xa.x, s);
          s = fmaf(hi_bf16(w.x), xa.y, s);
          s = fmaf(lo_bf16(w.y), xa.z, s);
          s = fmaf(hi_bf16(w.y), xa.w, s);
          s = fmaf(lo_bf16(w.z), xb.x, s);
          s = fmaf(hi_bf16(w.z), xb.y, s);
          s = fmaf(lo_bf16(w.w), xb.z, s);
          s = fmaf(hi_bf16(w.w), xb.w, s);
          acc[r * MT + mt] = s;
        }
      }
    }
    k0 += 512;
    if (k0 < kb1) load(k0);
  }
  constexpr int V = R * MT;
  warp_reduce_scatter<V, 16>(acc, lane);
  constexpr int kPerLane = V >= 32 ? V / 32 : 1;
  const bool holder = V >= 32 || (lane % (32 / V)) == 0;
  const bool split = p.partials != nullptr;
  if (holder) {
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int idx = i + ((lane * V) >> 5);
      const int r = idx / MT, mt = idx % MT;
      const int64_t row = row0 + r;
      if (mt >= p.m || row >= p.n) continue;
      float v = acc[i];
      if (split) {
        p.partials[(blockIdx.y * p.m + mt) * p.n + row] = v;
        continue;
      }
      if (p.bias != nullptr && blockIdx.y == 0) v += p.bias[row];
      float* y = p.y + mt * p.ys + row;
      if (p.atomic) {
        atomicAdd(y, v);
      } else {
        *y = v;
      }
    }
  }
  if (!split) return;
  // The last split of this row block sums the partials in split order (deterministic, no memset of y first).
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&p.counters[blockIdx.x], 1u) == gridDim.y - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  constexpr int kRows = kWarps * R;
  for (int i = threadIdx.x; i < kRows * MT; i += blockDim.x) {
    const int mt = i / kRows;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kRows + i % kRows;
    if (mt >= p.m || row >= p.n) continue;
    float v = p.bias != nullptr ? p.bias[row] : 0.0f;
    for (unsigned s = 0; s < gridDim.y; ++s) v += __ldcg(p.partials + (s * p.m + mt) * p.n + row);
    p.y[mt * p.ys + row] = v;
  }
  if (threadIdx.x == 0) p.counters[blockIdx.x] = 0;
}

// One row of x (m == 1, the decode step): a block owns RB whole rows of w and its 256 threads split k, so every
// weight load of the block is issued at once (G chunks of 8 per row per thread per round, RB * G loads in flight)
// and the partial sums meet in shared memory: no split of k across blocks, no global partials, one launch.
// Each thread reads its own 8 elements of x straight from global memory (L2) next to its weights: no staging
// barrier. The first round's weights are loaded before the PDL wait.
constexpr int kRowThreads = 256;

// kNorm (gemv_bf16_norm): x is rmsnorm(branch + residual) * w, formed first by every block into its shared memory
// ([k] f32, as rmsnorm_vec_kernel sums at 256 threads); block 0 writes branch + residual to norm_h.
template <int RB, int G, bool kSwiglu, bool kNorm = false>
__global__ void __launch_bounds__(kRowThreads) gemv1_bf16_kernel(GemvParams p) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * RB;
  const int64_t chunks = p.k / 8;
  const uint16_t* wrow[RB];
#pragma unroll
  for (int r = 0; r < RB; ++r) wrow[r] = p.w + min(row0 + r, p.n - 1) * p.k;
  uint4 wv[G][RB];
  auto load = [&](int64_t base) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const int64_t c = base + g * kRowThreads + tid;
#pragma unroll
      for (int r = 0; r < RB; ++r) wv[g][r] = c < chunks ? load_stream(wrow[r] + c * 8) : make_uint4(0, 0, 0, 0);
    }
  };
  load(0);
  pdl_enter();
  float acc[RB];
#pragma unroll
  for (int r = 0; r < RB; ++r) acc[r] = 0.0f;
  const float4* x4 = reinterpret_cast<const float4*>(p.x);
  if constexpr (kNorm) {
    extern __shared__ float4 norm_x4[];
    const int64_t n4 = p.k / 4;
    const float4* b4 = reinterpret_cast<const float4*>(p.x);
    const float4* r4 = reinterpret_cast<const float4*>(p.norm_residual);
    float4* h4 = blockIdx.x == 0 && r4 != nullptr ? reinterpret_cast<float4*>(p.norm_h) : nullptr;
    float sum_sq = 0.0f;
    // Only shared-memory stores here: the loads of every iteration can be in flight at once (h goes out below).
    for (int64_t i = tid; i < n4; i += kRowThreads) {
      float4 h = b4[i];
      if (r4 != nullptr) {
        const float4 r = r4[i];
        h.x += r.x;
        h.y += r.y;
        h.z += r.z;
        h.w += r.w;
      }
      norm_x4[i] = h;
      sum_sq += h.x * h.x + h.y * h.y + h.z * h.z + h.w * h.w;
    }
    const float inv_rms = rsqrtf(block_sum_any(sum_sq) / static_cast<float>(p.k) + p.norm_eps);
    const float4* g4 = reinterpret_cast<const float4*>(p.norm_w);
    for (int64_t i = tid; i < n4; i += kRowThreads) {
      const float4 h = norm_x4[i], g = g4[i];
      if (h4 != nullptr) h4[i] = h;
      norm_x4[i] = make_float4(h.x * inv_rms * g.x, h.y * inv_rms * g.y, h.z * inv_rms * g.z, h.w * inv_rms * g.w);
    }
    __syncthreads();
    x4 = norm_x4;
  }
  const float4* u4 = reinterpret_cast<const float4*>(p.x + p.up_offset);
  for (int64_t base = 0; base < chunks; base += G * kRowThreads) {
    float4 xa[G], xb[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const int64_t c = base + g * kRowThreads + tid;
      xa[g] = xb[g] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (c < chunks) {
        xa[g] = x4[2 * c];
        xb[g] = x4[2 * c + 1];
        if constexpr (kSwiglu) {
          const float4 ua = u4[2 * c], ub = u4[2 * c + 1];
          xa[g] = make_float4(silu_times(xa[g].x, ua.x), silu_times(xa[g].y, ua.y), silu_times(xa[g].z, ua.z),
                              silu_times(xa[g].w, ua.w));
          xb[g] = make_float4(silu_times(xb[g].x, ub.x), silu_times(xb[g].y, ub.y), silu_times(xb[g].z, ub.z),
                              silu_times(xb[g].w, ub.w));
        }
      }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
#pragma unroll
      for (int r = 0; r < RB; ++r) {
        const uint4 w = wv[g][r];
        float s = acc[r];
        s = fmaf(lo_bf16(w.x), xa[g].x, s);
        s = fmaf(hi_bf16(w.x), xa[g].y, s);
        s = fmaf(lo_bf16(w.y), xa[g].z, s);
        s = fmaf(hi_bf16(w.y), xa[g].w, s);
        s = fmaf(lo_bf16(w.z), xb[g].x, s);
        s = fmaf(hi_bf16(w.z), xb[g].y, s);
        s = fmaf(lo_bf16(w.w), xb[g].z, s);
        s = fmaf(hi_bf16(w.w), xb[g].w, s);
        acc[r] = s;
      }
    }
    if (base + G * kRowThreads < chunks) load(base + G * kRowThreads);
  }
  // Lanes, then warps (fixed order: deterministic).
  __shared__ float part[kRowThreads / 32][RB];
  warp_reduce_scatter<RB, 16>(acc, lane);
  if (lane % (32 / RB) == 0) part[warp][(lane * RB) >> 5] = acc[0];
  __syncthreads();
  if (tid < RB && row0 + tid < p.n) {
    float v = p.bias != nullptr ? p.bias[row0 + tid] : 0.0f;
#pragma unroll
    for (int w = 0; w < kRowThreads / 32; ++w) v += part[w][tid];
    float* y = p.y + row0 + tid;
    *y = p.atomic ? *y + v : v;
  }
}

// Fallback for any k (scalar loads): one warp per (row, token).
__global__ void gemv_bf16_simple_kernel(GemvParams p) {
  pdl_enter();
  const int lane = threadIdx.x & 31;
  const int64_t item = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (item >= p.n * p.m) return;
  const int64_t row = item % p.n, mt = item / p.n;
  float s = 0.0f;
  for (int64_t kk = lane; kk < p.k; kk += 32) {
    float xv = p.x[mt * p.xs + kk];
    if (p.swiglu) xv = silu_times(xv, p.x[mt * p.xs + p.up_offset + kk]);
    s += __uint_as_float(uint32_t{p.w[row * p.k + kk]} << 16) * xv;
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) {
    if (p.bias != nullptr) s += p.bias[row];
    float* y = p.y + mt * p.ys + row;
    *y = p.atomic ? *y + s : s;
  }
}

// f32 weights at decode sizes (the MoE router, kept in f32): one warp per (row, token), float4 loads.
// cuBLASLt runs a dot kernel plus a reduction there (two launches for a 64 x 2048 matrix).
__global__ void gemv_f32_kernel(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t n,
                                int64_t k, int64_t xs, int64_t ys, bool accumulate) {
  pdl_enter();
  const int lane = threadIdx.x & 31;
  const int64_t item = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (item >= n * m) return;
  const int64_t row = item % n, t = item / n;
  float s = warp_dot_f32(reinterpret_cast<const float4*>(w + row * k), reinterpret_cast<const float4*>(x + t * xs),
                         k / 4, lane);
  if (lane == 0) {
    if (bias != nullptr) s += bias[row];
    float* out = y + t * ys + row;
    *out = accumulate ? *out + s : s;
  }
}

template <int MT>
Status launch_gemv(CudaContext& ctx, GemvParams p) {
  constexpr int R = MT >= 16 ? 2 : 4;
  const int64_t rows_per_block = kWarps * R;
  const int64_t row_blocks = (p.n + rows_per_block - 1) / rows_per_block;
  // Choose the k split so the grid fills whole waves of resident blocks (a partial last wave of a memory-bound
  // kernel costs a whole wave); the chunk is capped by the shared memory for x.
  int per_sm = 1;
  DSI_CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_bf16_kernel<MT, R>,
                                                                         kWarps * 32, kXSmemFloats * sizeof(float)));
  const int64_t slots = static_cast<int64_t>(std::max(per_sm, 1)) * ctx.num_sms();
  const int64_t max_chunk = kXSmemFloats / MT;
  const int64_t k_tiles = (p.k + 255) / 256;
  int64_t best_chunk = std::min<int64_t>(k_tiles * 256, max_chunk);
  double best_eff = -1.0;
  for (int64_t s = 1; s <= std::min<int64_t>(k_tiles, 64); ++s) {
    const int64_t chunk = ((p.k + s - 1) / s + 255) / 256 * 256;
    if (chunk > max_chunk) continue;
    const int64_t total = row_blocks * ((p.k + chunk - 1) / chunk);
    const int64_t waves = (total + slots - 1) / slots;
    const double eff = static_cast<double>(total) / static_cast<double>(waves * slots);
    if (eff > best_eff + 0.02) {
      best_eff = eff;
      best_chunk = chunk;
    }
  }
  const int64_t chunk = best_chunk;
  const int64_t splits = (p.k + chunk - 1) / chunk;
  p.k_chunk = chunk;
  if (splits > 1 && !p.atomic) {
    if (static_cast<size_t>(splits * p.m * p.n) <= CudaContext::kSplitkPartialFloats &&
        static_cast<size_t>(row_blocks) <= CudaContext::kSplitkCounters) {
      p.partials = ctx.splitk_partials();
      p.counters = ctx.splitk_counters();
    } else {
      // Too large for the split workspace: zero y and let the splits add into it.
      DSI_CUDA_RETURN_IF_ERROR(
          cudaMemset2DAsync(p.y, p.ys * sizeof(float), 0, p.n * sizeof(float), p.m, ctx.stream()));
      p.atomic = true;
    }
  }
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(splits));
  const size_t smem = static_cast<size_t>(MT * chunk) * sizeof(float);
  const auto kernel = gemv_bf16_kernel<MT, R>;
  DSI_CUDA_LAUNCH(ctx, kernel, grid, dim3(kWarps * 32), smem, p);
  return Status::Ok();
}

template <int RB, int G>
Status launch_gemv1_rg(CudaContext& ctx, const GemvParams& p) {
  const dim3 grid(static_cast<unsigned>((p.n + RB - 1) / RB));
  if (p.norm_w != nullptr) {
    const auto kernel = gemv1_bf16_kernel<RB, G, false, true>;
    DSI_CUDA_LAUNCH(ctx, kernel, grid, dim3(kRowThreads), static_cast<size_t>(p.k) * sizeof(float), p);
    return Status::Ok();
  }
  if (p.swiglu) {
    const auto kernel = gemv1_bf16_kernel<RB, G, true>;
    DSI_CUDA_LAUNCH(ctx, kernel, grid, dim3(kRowThreads), 0, p);
  } else {
    const auto kernel = gemv1_bf16_kernel<RB, G, false>;
    DSI_CUDA_LAUNCH(ctx, kernel, grid, dim3(kRowThreads), 0, p);
  }
  return Status::Ok();
}

// Rows per block: the largest RB whose busiest SM (ceil(blocks / SMs) * RB rows) is within 10% of the best
// balance (each block reads all of x from L2: fewer blocks, less of that traffic). Chunks per thread per round: enough
// that most k take one round, with RB * G <= 16 loads in flight per thread.
Status launch_gemv1(CudaContext& ctx, const GemvParams& p) {
  const int64_t rounds1 = (p.k / 8 + kRowThreads - 1) / kRowThreads;  // chunks per thread in all
  const int64_t sms = ctx.num_sms();
  const auto busiest = [&](int64_t c) { return ((p.n + c - 1) / c + sms - 1) / sms * c; };
  int64_t least = busiest(1);
  for (int c : {2, 4, 8, 16}) least = std::min(least, busiest(c));
  int rb = 1;
  for (int c : {16, 8, 4, 2}) {
    if (busiest(c) * 10 <= least * 11) {  // within 10% of the best balance: take the larger blocks
      rb = c;
      break;
    }
  }
  const int g = std::min<int>(rounds1 >= 4 ? 4 : rounds1 >= 2 ? 2 : 1, 16 / rb);
  switch (rb * 10 + g) {
    case 161: return launch_gemv1_rg<16, 1>(ctx, p);
    case 81: return launch_gemv1_rg<8, 1>(ctx, p);
    case 82: return launch_gemv1_rg<8, 2>(ctx, p);
    case 41: return launch_gemv1_rg<4, 1>(ctx, p);
    case 42: return launch_gemv1_rg<4, 2>(ctx, p);
    case 44: return launch_gemv1_rg<4, 4>(ctx, p);
    case 21: return launch_gemv1_rg<2, 1>(ctx, p);
    case 22: return launch_gemv1_rg<2, 2>(ctx, p);
    case 24: return launch_gemv1_rg<2, 4>(ctx, p);
    case 11: return launch_gemv1_rg<1, 1>(ctx, p);
    case 12: return launch_gemv1_rg<1, 2>(ctx, p);
    default: return launch_gemv1_rg<1, 4>(ctx, p);
  }
}

// Rows over blockIdx.y (strided past 65535), kVec elements per thread along the row: no division per element.
// kVec 4 needs k, xs % 4 == 0 and x 16-byte / y 8-byte aligned.
template <int kVec>
__global__ void f32_to_bf16_kernel(const float* __restrict__ x, __nv_bfloat16* __restrict__ y, int64_t m, int64_t k,
                                   int64_t xs) {
  const int64_t chunks = k / kVec;
  for (int64_t r = blockIdx.y; r < m; r += gridDim.y) {
    const float* xr = x + r * xs;
    __nv_bfloat16* yr = y + r * k;
    for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < chunks; c += int64_t{gridDim.x} * blockDim.x) {
      if constexpr (kVec == 4) {
        const float4 v = reinterpret_cast<const float4*>(xr)[c];
        const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
        reinterpret_cast<uint2*>(yr)[c] =
            make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
      } else {
        yr[c] = __float2bfloat16_rn(xr[c]);
      }
    }
  }
}

}  // namespace

Status f32_to_bf16(CudaContext& ctx, const float* x, uint16_t* y, int64_t m, int64_t k, int64_t x_stride) {
  if (m * k == 0) return Status::Ok();
  const int64_t xs = x_stride ? x_stride : k;
  const bool vec = k % 4 == 0 && xs % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(y) % 8 == 0;
  const int64_t chunks = vec ? k / 4 : k;
  // About 8 blocks of 256 threads per SM in all; a row takes as many blocks as its chunks need.
  const int64_t bx = std::min<int64_t>((chunks + 255) / 256, 8 * ctx.num_sms());
  const int64_t by = std::min<int64_t>({m, 65535, std::max<int64_t>(1, 8 * ctx.num_sms() / bx)});
  const dim3 grid(static_cast<unsigned>(bx), static_cast<unsigned>(by));
  auto* yb = reinterpret_cast<__nv_bfloat16*>(y);
  if (vec) {
    f32_to_bf16_kernel<4><<<grid, 256, 0, ctx.stream()>>>(x, yb, m, k, xs);
  } else {
    f32_to_bf16_kernel<1><<<grid, 256, 0, ctx.stream()>>>(x, yb, m, k, xs);
  }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

namespace {
Status run_gemv_bf16(CudaContext& ctx, const MatmulArgs& a, bool swiglu) {
  if (a.w_dtype != DType::kBF16) return Status::Unsupported("gemv_bf16: weights must be bf16");
  if (a.m < 0 || a.n < 0 || a.k < 0) return Status::InvalidArgument("gemv_bf16: negative shape");
  if (a.m == 0 || a.n == 0) return Status::Ok();
  if (a.k == 0) return Status::Unsupported("gemv_bf16: k == 0");
  GemvParams p{.x = a.x, .w = static_cast<const uint16_t*>(a.w), .bias = a.bias, .y = a.y, .m = a.m, .n = a.n,
               .k = a.k, .xs = a.x_stride ? a.x_stride : (swiglu ? 2 * a.k : a.k),
               .ys = a.y_stride ? a.y_stride : a.n, .k_chunk = 0, .atomic = a.accumulate, .swiglu = swiglu,
               .up_offset = a.k, .partials = nullptr, .counters = nullptr};
  const bool vec_ok = a.k % 8 == 0 && reinterpret_cast<uintptr_t>(a.w) % 16 == 0;
  if (!vec_ok || a.m > 16) {
    // Rows of m beyond 16 or unaligned weights: the simple kernel (correct, not fast).
    const int64_t warps = a.n * a.m;
    DSI_CUDA_LAUNCH(ctx, gemv_bf16_simple_kernel, dim3(static_cast<unsigned>((warps * 32 + 255) / 256)), dim3(256),
                    0, p);
    return Status::Ok();
  }
  if (a.m == 1 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0 && (!swiglu || a.k % 4 == 0)) {
    return launch_gemv1(ctx, p);
  }
  if (a.m == 1) return launch_gemv<1>(ctx, p);
  if (a.m == 2) return launch_gemv<2>(ctx, p);
  if (a.m <= 4) return launch_gemv<4>(ctx, p);
  if (a.m <= 8) return launch_gemv<8>(ctx, p);
  return launch_gemv<16>(ctx, p);
}
}  // namespace

Status gemv_bf16(CudaContext& ctx, const MatmulArgs& a) { return run_gemv_bf16(ctx, a, false); }

bool gemv_bf16_norm_fits(const MatmulArgs& a) {
  const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  return a.w_dtype == DType::kBF16 && a.m == 1 && a.n > 0 && a.k > 0 && a.k % 8 == 0 &&
         a.k * sizeof(float) <= kGemvNormMaxSmem && !a.accumulate && aligned(a.w) && aligned(a.x);
}

Status gemv_bf16_norm(CudaContext& ctx, const MatmulArgs& a, const GemvNormArgs& n) {
  const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  if (!gemv_bf16_norm_fits(a) || n.w == nullptr || !aligned(n.w) ||
      (n.residual != nullptr && (!aligned(n.residual) || n.h == nullptr || !aligned(n.h) || n.h == n.residual ||
                                 n.h == a.x))) {
    return Status::InvalidArgument(str_cat("gemv_bf16_norm: m ", a.m, " k ", a.k,
                                           " (one row of bf16 weights, k % 8 == 0, k <= ",
                                           kGemvNormMaxSmem / sizeof(float), ", 16-byte aligned x, w, residual and ",
                                           "h, h apart from x and residual)"));
  }
  GemvParams p{.x = a.x, .w = static_cast<const uint16_t*>(a.w), .bias = a.bias, .y = a.y, .m = 1, .n = a.n,
               .k = a.k, .xs = a.k, .ys = a.n, .k_chunk = 0, .atomic = false, .swiglu = false, .up_offset = 0,
               .partials = nullptr, .counters = nullptr, .norm_residual = n.residual, .norm_w = n.w,
               .norm_h = n.h, .norm_eps = n.eps};
  return launch_gemv1(ctx, p);
}

Status gemv_bf16_silu_mul(CudaContext& ctx, const MatmulArgs& a) { return run_gemv_bf16(ctx, a, true); }

Status matmul(CudaContext& ctx, const MatmulArgs& a) {
  // Measured on the H100 (bench/results/cuda-kernels-*.json): our GEMV matches cuBLASLt at m = 1 and falls
  // behind from m = 2 on, so larger m goes to cuBLASLt (activations rounded to bf16).
  if (a.w_dtype == DType::kBF16 && a.m <= kGemvMaxM && a.k % 8 == 0) return gemv_bf16(ctx, a);
  const int64_t xs = a.x_stride ? a.x_stride : a.k;
  if (a.w_dtype == DType::kF32 && a.m > 0 && a.m <= 4 && a.n > 0 && a.k % 4 == 0 && xs % 4 == 0 &&
      reinterpret_cast<uintptr_t>(a.w) % 16 == 0 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0) {
    const int64_t threads = a.n * a.m * 32;
    DSI_CUDA_LAUNCH(ctx, gemv_f32_kernel, dim3(static_cast<unsigned>((threads + 255) / 256)), dim3(256), 0, a.x,
                    static_cast<const float*>(a.w), a.bias, a.y, a.m, a.n, a.k, xs, a.y_stride ? a.y_stride : a.n,
                    a.accumulate);
    return Status::Ok();
  }
  return gemm_cublaslt(ctx, a);
}

}  // namespace dsi::cuda
