// Weight-only FP8 matmuls with DeepSeek's 128x128 block scales: y[m, n] = x[m, k] (w * scale)[n, k]^T.
//
// gemv_fp8 (decode, m <= 16): the structure of gemv.cu's bf16 GEMV. Each lane streams 16 codes (one 16-byte load)
// of each of its warp's R rows per step; 16 codes starting at a multiple of 16 lie in one 128-wide k block, so the
// lane sums the 16 products (codes decoded exactly as value / 256, fp8_load.cuh) and adds that partial sum times
// the block's scale * 256 to its accumulator. x sits in shared memory; the k range is split over grid.y when n
// alone does not fill the GPU, and the partial sums meet in y through atomicAdd.
//
// gemm_fp8_weight_only (any shape): 64x64 output tiles, 32-wide k steps; x and the dequantized weights (code *
// scale, in f32) are staged in shared memory; each thread computes 4x4 outputs. Correct, not fast.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_fp8.h"
#include "kernels/cuda/fp8_load.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/warp_reduce.cuh"

namespace dsi::cuda {
namespace {

constexpr int kBlock = 128;  // DeepSeek's scale block (rows and columns)

// ---- GEMV ----------------------------------------------------------------------------------------------------

constexpr int kWarps = 8;
constexpr int kXSmemFloats = 8192;  // 32 KB of x per block
constexpr int kGroup = 16;          // codes per lane per load
constexpr int kStep = 32 * kGroup;  // k covered by one warp-wide load: 512

struct GemvFp8Params {
  const float* x;
  const uint8_t* w;
  const float* scale;
  const float* bias;
  float* y;
  int64_t m, n, k, xs, ys;
  int64_t kb;       // ceil(k / 128): length of a scale row
  int64_t k_chunk;  // multiple of kStep (and so of 16)
  bool atomic;      // grid.y > 1 or accumulate: add into y
  // SwiGLU input: x holds gate | up per row and the matmul input is silu(gate) * up (up at x + up_offset).
  bool swiglu;
  int64_t up_offset;
};

// Block (row block, k chunk). Shared memory: the chunk of x for MT tokens (rows >= m are zeros). Element kk of
// token mt (group c = kk / 16, e = kk % 16) sits at float [mt][e / 4][c][e % 4]: quarter j of group c is the
// float4 mt * kc / 4 + j * kc / 16 + c, so lanes reading consecutive groups hit consecutive banks.
// Warp w computes rows row0 = (blockIdx.x * kWarps + w) * R + [0, R); R divides 128 and row0 % R == 0, so all R
// rows share one scale row.
template <int MT, int R>
__global__ void __launch_bounds__(kWarps * 32) gemv_fp8_kernel(GemvFp8Params p) {
  static_assert(kBlock % R == 0 && kBlock % kGroup == 0);
  extern __shared__ float4 smem4[];
  float* xs = reinterpret_cast<float*>(smem4);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t k_begin = blockIdx.y * p.k_chunk;
  const int64_t k_end = min(p.k, k_begin + p.k_chunk);
  const int kc = static_cast<int>(p.k_chunk);
  pdl_enter();  // (PDL, launch.cuh) before the first read of x
  for (int i = threadIdx.x; i < MT * kc; i += blockDim.x) {
    const int mt = i / kc, kk = i % kc;
    const int64_t kg = k_begin + kk;
    float v = 0.0f;
    if (mt < p.m && kg < k_end) {
      v = p.x[mt * p.xs + kg];
      if (p.swiglu) {
        const float u = p.x[mt * p.xs + p.up_offset + kg];
        v = v / (1.0f + expf(-v)) * u;
      }
    }
    xs[mt * kc + ((kk & 15) >> 2) * (kc / 4) + (kk >> 4) * 4 + (kk & 3)] = v;
  }
  __syncthreads();

  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * R;
  if (row0 >= p.n) return;  // the whole warp is past the last row (no barrier follows)
  const uint8_t* wrow[R];
  bool valid[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    valid[r] = row0 + r < p.n;
    wrow[r] = p.w + (valid[r] ? row0 + r : row0) * p.k;
  }
  const float* srow = p.scale + (row0 / kBlock) * p.kb;
  float acc[R * MT];
#pragma unroll
  for (int i = 0; i < R * MT; ++i) acc[i] = 0.0f;

  // Lane groups start at k_begin + lane * 16 (k_begin % 512 == 0) and never cross a 128 block; k % 16 == 0, so a
  // group that starts before k_end ends there too.
  for (int64_t k0 = k_begin + lane * kGroup; k0 < k_end; k0 += 2 * kStep) {
    const bool second = k0 + kStep < k_end;
    uint4 wv[2][R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      wv[0][r] = valid[r] ? load_stream(wrow[r] + k0) : make_uint4(0, 0, 0, 0);
      wv[1][r] = (valid[r] && second) ? load_stream(wrow[r] + k0 + kStep) : make_uint4(0, 0, 0, 0);
    }
    float s[2];
    s[0] = __ldg(srow + k0 / kBlock) * kFp8Unscale;
    s[1] = second ? __ldg(srow + (k0 + kStep) / kBlock) * kFp8Unscale : 0.0f;
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      if (u == 1 && !second) break;
      const int c = static_cast<int>((k0 + u * kStep - k_begin) >> 4);  // this lane's group in the chunk
      float d[R * MT];  // sums over the group of code / 256 * x
#pragma unroll
      for (int i = 0; i < R * MT; ++i) d[i] = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float4 wf[R];  // codes 4j .. 4j + 3 of the group of row r, / 256
#pragma unroll
        for (int r = 0; r < R; ++r) wf[r] = fp8x4_to_float4_div256(word(wv[u][r], j));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const float4 xv = smem4[mt * (kc / 4) + j * (kc / 16) + c];
#pragma unroll
          for (int r = 0; r < R; ++r) d[r * MT + mt] = dot4(wf[r], xv, d[r * MT + mt]);
        }
      }
#pragma unroll
      for (int i = 0; i < R * MT; ++i) acc[i] = fmaf(d[i], s[u], acc[i]);
    }
  }
  constexpr int V = R * MT;
  warp_reduce_scatter<V, 16>(acc, lane);
  constexpr int kPerLane = V >= 32 ? V / 32 : 1;
  if (V < 32 && (lane % (32 / V)) != 0) return;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int idx = i + ((lane * V) >> 5);
    const int r = idx / MT, mt = idx % MT;
    const int64_t row = row0 + r;
    if (mt >= p.m || row >= p.n) continue;
    float v = acc[i];
    if (p.bias != nullptr && blockIdx.y == 0) v += p.bias[row];
    float* y = p.y + mt * p.ys + row;
    if (p.atomic) {
      atomicAdd(y, v);
    } else {
      *y = v;
    }
  }
}

template <int MT>
Status launch_gemv(CudaContext& ctx, GemvFp8Params p) {
  constexpr int R = MT >= 8 ? 2 : 4;
  const int64_t rows_per_block = kWarps * R;
  const int64_t row_blocks = (p.n + rows_per_block - 1) / rows_per_block;
  // As gemv.cu: the k split that fills whole waves of resident blocks, the chunk capped by shared memory for x.
  int per_sm = 1;
  DSI_CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_fp8_kernel<MT, R>,
                                                                         kWarps * 32, kXSmemFloats * sizeof(float)));
  const int64_t slots = static_cast<int64_t>(std::max(per_sm, 1)) * ctx.num_sms();
  const int64_t max_chunk = kXSmemFloats / MT;  // a multiple of kStep for MT <= 16
  const int64_t k_tiles = (p.k + kStep - 1) / kStep;
  int64_t best_chunk = std::min<int64_t>(k_tiles * kStep, max_chunk);
  double best_eff = -1.0;
  for (int64_t s = 1; s <= std::min<int64_t>(k_tiles, 64); ++s) {
    const int64_t chunk = ((p.k + s - 1) / s + kStep - 1) / kStep * kStep;
    if (chunk > max_chunk) continue;
    const int64_t total = row_blocks * ((p.k + chunk - 1) / chunk);
    const int64_t waves = (total + slots - 1) / slots;
    const double eff = static_cast<double>(total) / static_cast<double>(waves * slots);
    if (eff > best_eff + 0.02) {
      best_eff = eff;
      best_chunk = chunk;
    }
  }
  const int64_t splits = (p.k + best_chunk - 1) / best_chunk;
  if (row_blocks > 0x7fffffff || splits > 65535) {
    return Status::Unsupported(str_cat("gemv_fp8: n ", p.n, " k ", p.k, " exceeds the grid"));
  }
  p.k_chunk = best_chunk;
  const bool accumulate = p.atomic;
  p.atomic = accumulate || splits > 1;
  if (splits > 1 && !accumulate) {
    DSI_CUDA_RETURN_IF_ERROR(cudaMemset2DAsync(p.y, p.ys * sizeof(float), 0, p.n * sizeof(float), p.m, ctx.stream()));
  }
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(splits));
  const size_t smem = static_cast<size_t>(MT * best_chunk) * sizeof(float);
  const auto kernel = gemv_fp8_kernel<MT, R>;
  DSI_CUDA_LAUNCH(ctx, kernel, grid, dim3(kWarps * 32), smem, p);
  return Status::Ok();
}

// ---- Tiled GEMM ----------------------------------------------------------------------------------------------

constexpr int kTileM = 64, kTileN = 64, kTileK = 32;
constexpr int kTileThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each

__device__ __forceinline__ float e4m3_to_f32(uint8_t code) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(code), __NV_E4M3)));
}

// Block (n tile, m tile). Thread (tx, ty) owns outputs (m0 + ty + 16 i, n0 + tx + 16 j), i, j in [0, 4).
__global__ void __launch_bounds__(kTileThreads) gemm_fp8_tiled_kernel(GemvFp8Params p) {
  pdl_enter();
  __shared__ float xt[kTileK][kTileM + 1];  // x tile, transposed: [k][m]
  __shared__ float wt[kTileK][kTileN + 1];  // dequantized weight tile, transposed: [k][n]
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTileM, n0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
  }
  for (int64_t k0 = 0; k0 < p.k; k0 += kTileK) {
    for (int i = threadIdx.x; i < kTileM * kTileK; i += kTileThreads) {
      const int r = i / kTileK, c = i % kTileK;
      const int64_t gm = m0 + r, gk = k0 + c;
      xt[c][r] = (gm < p.m && gk < p.k) ? p.x[gm * p.xs + gk] : 0.0f;
    }
    for (int i = threadIdx.x; i < kTileN * kTileK; i += kTileThreads) {
      const int r = i / kTileK, c = i % kTileK;
      const int64_t gn = n0 + r, gk = k0 + c;
      wt[c][r] = (gn < p.n && gk < p.k)
                     ? e4m3_to_f32(p.w[gn * p.k + gk]) * p.scale[(gn / kBlock) * p.kb + gk / kBlock]
                     : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int c = 0; c < kTileK; ++c) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = xt[c][ty + 16 * i];
        b[i] = wt[c][tx + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t gm = m0 + ty + 16 * i;
    if (gm >= p.m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t gn = n0 + tx + 16 * j;
      if (gn >= p.n) continue;
      float v = acc[i][j];
      if (p.bias != nullptr) v += p.bias[gn];
      float* y = p.y + gm * p.ys + gn;
      *y = p.atomic ? *y + v : v;
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Checks the arguments and fills the kernel parameters; *empty when there is nothing to compute.
Status make_params(const GemvFp8Args& a, const char* fn, GemvFp8Params* p, bool* empty) {
  if (a.m < 0 || a.n < 0 || a.k < 0) {
    return Status::InvalidArgument(str_cat(fn, ": negative shape m ", a.m, " n ", a.n, " k ", a.k));
  }
  if ((a.x_stride != 0 && a.x_stride < a.k) || (a.y_stride != 0 && a.y_stride < a.n)) {
    return Status::InvalidArgument(str_cat(fn, ": x_stride ", a.x_stride, " < k ", a.k, " or y_stride ", a.y_stride,
                                           " < n ", a.n));
  }
  *empty = a.m == 0 || a.n == 0;
  if (*empty) return Status::Ok();
  if (a.y == nullptr) return Status::InvalidArgument(str_cat(fn, ": y is null"));
  if (a.k > 0 && (a.x == nullptr || a.w == nullptr || a.w_scale == nullptr)) {
    return Status::InvalidArgument(str_cat(fn, ": x, w or w_scale is null"));
  }
  *p = GemvFp8Params{.x = a.x, .w = a.w, .scale = a.w_scale, .bias = a.bias, .y = a.y, .m = a.m, .n = a.n,
                     .k = a.k, .xs = a.x_stride ? a.x_stride : (a.silu_mul ? 2 * a.k : a.k),
                     .ys = a.y_stride ? a.y_stride : a.n, .kb = (a.k + kBlock - 1) / kBlock, .k_chunk = 0,
                     .atomic = a.accumulate, .swiglu = a.silu_mul, .up_offset = a.k};
  return Status::Ok();
}

}  // namespace

Status gemm_fp8_weight_only(CudaContext& ctx, const GemvFp8Args& a) {
  GemvFp8Params p;
  bool empty = false;
  DSI_RETURN_IF_ERROR(make_params(a, "gemm_fp8_weight_only", &p, &empty));
  if (empty) return Status::Ok();
  if (a.silu_mul) return Status::Unsupported("gemm_fp8_weight_only: silu_mul input (the GEMV path only)");
  const int64_t n_tiles = (a.n + kTileN - 1) / kTileN, m_tiles = (a.m + kTileM - 1) / kTileM;
  if (n_tiles > 0x7fffffff || m_tiles > 65535) {
    return Status::Unsupported(str_cat("gemm_fp8_weight_only: m ", a.m, " n ", a.n, " exceeds the grid"));
  }
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(m_tiles));
  DSI_CUDA_LAUNCH(ctx, gemm_fp8_tiled_kernel, grid, dim3(kTileThreads), 0, p);
  return Status::Ok();
}

Status gemv_fp8(CudaContext& ctx, const GemvFp8Args& a) {
  GemvFp8Params p;
  bool empty = false;
  DSI_RETURN_IF_ERROR(make_params(a, "gemv_fp8", &p, &empty));
  if (empty) return Status::Ok();
  if (a.m > 16 || a.k == 0 || a.k % kGroup != 0 || !aligned16(a.w)) {
    if (a.silu_mul) return Status::Unsupported("gemv_fp8: silu_mul input needs m <= 16, k % 16 == 0");
    return gemm_fp8_weight_only(ctx, a);
  }
  if (a.m == 1) return launch_gemv<1>(ctx, p);
  if (a.m == 2) return launch_gemv<2>(ctx, p);
  if (a.m <= 4) return launch_gemv<4>(ctx, p);
  if (a.m <= 8) return launch_gemv<8>(ctx, p);
  return launch_gemv<16>(ctx, p);
}

}  // namespace dsi::cuda
