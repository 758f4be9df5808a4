// MoE routed experts as grouped GEMMs (cuda_moe_grouped.h). Launches on the context's stream:
//   plan:    one block groups the pairs by expert (stably: pair order within an expert) and writes each pair's row
//            in the permuted matrices and each row's token, plus a table of row tiles {expert, first row, rows} of
//            BM rows each.
//   gather:  A[row(p)] = bf16(x[t])                                     A   [rows, hidden] bf16
//            (MoeGather::kInLoader: no A; xb = bf16(x) [tokens, hidden] unless the caller has it, and gemm 1 reads
//            row r of A as xb[token(r)])
//   gemm 1:  act = silu(A W13[e][gate]^T) * (A W13[e][up]^T)            act [rows, inter]  bf16
//   gemm 2:  Y = act W2[e]^T                                            Y   [rows, hidden] f32 (over A: dead by then)
//   combine: out[t] += sum_j weights[t, j] Y[row(t, j)]                  (in j order)
// Rows are dense: the valid pairs of expert 0, then of expert 1, ...; a skipped pair has no row.
// The GEMMs (moe_grouped_gemm.cuh) run on tensor cores with bf16 operands (FP8 weights dequantized to bf16 in
// shared memory). The grid covers an upper bound of the row tiles (the routing is unknown on the host): block b
// computes n-tile b % n_tiles of row tile b / n_tiles and exits at once when the table marks that tile unused.
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string_view>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_moe_grouped.h"
#include "kernels/cuda/moe_grouped_gemm.cuh"
#include "kernels/cuda/moe_wgmma.cuh"

namespace dsi::cuda {
namespace {

using moe_gemm::GemmParams;
using moe_gemm::LargeTiles;
using moe_gemm::LargeTiles4;
using moe_gemm::MediumTiles;
using moe_gemm::MediumTiles4;
using moe_gemm::moe_gemm_kernel;
using moe_gemm::pack_bf16;
using moe_gemm::SmallTiles;
using moe_gemm::WLoad;
using moe_wgmma::moe_wgmma_fp8_kernel;
using moe_wgmma::moe_wgmma_kernel;
using moe_wgmma::WgmmaFp8Large;
using moe_wgmma::WgmmaFp8Medium;
using moe_wgmma::WgmmaLarge;
using moe_wgmma::WgmmaMedium;

constexpr int64_t kMaxExperts = 1024;
constexpr int64_t kMaxPairs = int64_t{1} << 30;
constexpr int kPlanThreads = 1024;  // one expert per thread in the scans
constexpr int kPlanWarps = kPlanThreads / 32;
constexpr int kPlanBatch = 8;  // ids each lane loads before ranking them (loads in flight)
constexpr int kRowThreads = 256;  // gather and combine: one block per token
constexpr int64_t kMinBlockM = 32;
constexpr size_t kAlign = 256;
constexpr int64_t kScaleBlock = 128;  // DeepSeek's FP8 scale blocks: 128 x 128 weights

// ---- Workspace --------------------------------------------------------------------------------------------------

struct Layout {
  size_t row_of_pair = 0;  // int32 [pairs]: the pair's row in A, act and Y; -1 for a skipped pair
  size_t token_of_row = 0; // int32 [pairs]: the token of each row (rows past the last are not written)
  size_t tiles = 0;        // int4 [max_tiles(pairs, num_experts, kMinBlockM)]: {expert or -1, row0, rows, 0}
  size_t a_y = 0;          // A bf16 [pairs, hidden] (or bf16(x) [tokens, hidden]), then Y f32 [pairs, hidden]
  size_t act = 0;          // bf16 [pairs, inter]
  size_t total = 0;
};

// Row tiles of bm rows number at most this: each of the at most min(experts, pairs) chosen experts leaves at most
// bm - 1 rows of its last tile empty. Decreases with bm.
int64_t max_tiles(int64_t pairs, int64_t num_experts, int64_t bm) {
  return (pairs + std::min(pairs, num_experts) * (bm - 1)) / bm;
}

Layout layout(int64_t pairs, int64_t num_experts, int64_t hidden, int64_t inter) {
  Layout l;
  size_t at = 0;
  const auto take = [&](size_t bytes) {
    const size_t offset = at;
    at = (at + bytes + kAlign - 1) / kAlign * kAlign;
    return offset;
  };
  const auto n = [](int64_t v) { return static_cast<size_t>(v); };
  l.row_of_pair = take(n(pairs) * sizeof(int32_t));
  l.token_of_row = take(n(pairs) * sizeof(int32_t));
  l.tiles = take(n(max_tiles(pairs, num_experts, kMinBlockM)) * sizeof(int4));
  l.a_y = take(n(pairs) * n(hidden) * sizeof(float));
  l.act = take(n(pairs) * n(inter) * sizeof(uint16_t));
  l.total = at;
  return l;
}

// ---- Plan -------------------------------------------------------------------------------------------------------

struct PlanParams {
  const int32_t* ids;    // [pairs]
  int32_t* row_of_pair;  // [pairs]
  int32_t* token_of_row; // [pairs]
  int4* tiles;           // [num_tiles_bound]
  int pairs, num_experts, bm, num_tiles_bound, top_k;
};

// Exclusive prefix sums of v (both fields) over the block of kPlanThreads; *total gets the sums.
__device__ int2 block_exclusive_scan(int2 v, int2* warp_sums, int2* total) {
  static_assert(kPlanWarps == 32, "warp 0 scans one value per warp");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const auto warp_inclusive_scan = [lane](int2 s) {
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int x = __shfl_up_sync(0xffffffffu, s.x, o), y = __shfl_up_sync(0xffffffffu, s.y, o);
      if (lane >= o) s = make_int2(s.x + x, s.y + y);
    }
    return s;
  };
  const int2 inc = warp_inclusive_scan(v);
  if (lane == 31) warp_sums[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    const int2 s = warp_sums[lane];
    const int2 si = warp_inclusive_scan(s);
    warp_sums[lane] = make_int2(si.x - s.x, si.y - s.y);
    if (lane == 31) *total = si;
  }
  __syncthreads();
  const int2 base = warp_sums[warp];
  return make_int2(base.x + inc.x - v.x, base.y + inc.y - v.y);
}

// The lanes whose value equals this lane's (v in [0, 2^bits)): __match_any_sync, or (kBallot) the AND of one ballot
// per bit of v (the same mask; bits ballots instead of one match instruction, whose cost on the GPU is unmeasured).
template <bool kBallot>
__device__ __forceinline__ unsigned lanes_matching(int v, int bits) {
  if constexpr (!kBallot) {
    return __match_any_sync(0xffffffffu, v);
  } else {
    unsigned peers = 0xffffffffu;
    for (int b = 0; b < bits; ++b) {
      const bool one = (v >> b) & 1;
      const unsigned ones = __ballot_sync(0xffffffffu, one);
      peers &= one ? ones : ~ones;
    }
    return peers;
  }
}

// Warp w owns the pairs [w seg, (w + 1) seg). Pass 1 counts each warp's pairs per expert; the scans turn the
// counts into each warp's first row per expert and give each expert's first row and first tile; pass 2 ranks the
// pairs of one expert within a step of 32 with lanes_matching. Rows of one expert follow pair order.
// Shared memory: int cnt[kPlanWarps][E], row_start[E + 1], tile_start[E + 1].
template <bool kBallot>
__global__ void __launch_bounds__(kPlanThreads) moe_plan_kernel(PlanParams p) {
  extern __shared__ int plan_smem[];
  __shared__ int2 warp_sums[kPlanWarps];
  __shared__ int2 total;
  const int num_experts = p.num_experts;
  int* cnt = plan_smem;
  int* row_start = cnt + kPlanWarps * num_experts;
  int* tile_start = row_start + num_experts + 1;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // Bits of an expert id or of num_experts (a skipped pair matches as num_experts: -1 would share the bits of
  // 2^bits - 1).
  const int bits = 32 - __clz(num_experts);
  const auto peers_of = [&](int e) { return lanes_matching<kBallot>(e >= 0 ? e : num_experts, bits); };
  for (int i = tid; i < kPlanWarps * num_experts; i += kPlanThreads) cnt[i] = 0;
  __syncthreads();

  const int seg = (p.pairs + kPlanWarps - 1) / kPlanWarps;
  const int begin = warp * seg, end = min(p.pairs, begin + seg);
  int* warp_cnt = cnt + warp * num_experts;
  // ev[u]: the expert of pair base + 32 u + lane, -1 when skipped or past the segment. Loop bounds are
  // warp-uniform, so every lane reaches each lanes_matching (its match or ballots).
  const auto load_batch = [&](int base, int (&ev)[kPlanBatch]) {
#pragma unroll
    for (int u = 0; u < kPlanBatch; ++u) {
      const int q = base + 32 * u + lane;
      const int e = q < end ? p.ids[q] : -1;
      ev[u] = (e >= 0 && e < num_experts) ? e : -1;
    }
  };
  for (int base = begin; base < end; base += 32 * kPlanBatch) {
    int ev[kPlanBatch];
    load_batch(base, ev);
#pragma unroll
    for (int u = 0; u < kPlanBatch; ++u) {
      const unsigned peers = peers_of(ev[u]);
      if (ev[u] >= 0 && lane == __ffs(peers) - 1) warp_cnt[ev[u]] += __popc(peers);
      __syncwarp();
    }
  }
  __syncthreads();

  // cnt[w][e] becomes the pairs of expert e in the segments of warps before w.
  int2 v = make_int2(0, 0);  // (rows, tiles) of expert tid
  if (tid < num_experts) {
    int run = 0;
    for (int w = 0; w < kPlanWarps; ++w) {
      const int c = cnt[w * num_experts + tid];
      cnt[w * num_experts + tid] = run;
      run += c;
    }
    v = make_int2(run, (run + p.bm - 1) / p.bm);
  }
  const int2 before = block_exclusive_scan(v, warp_sums, &total);
  if (tid < num_experts) {
    row_start[tid] = before.x;
    tile_start[tid] = before.y;
  }
  if (tid == 0) {
    row_start[num_experts] = total.x;
    tile_start[num_experts] = total.y;
  }
  __syncthreads();

  for (int base = begin; base < end; base += 32 * kPlanBatch) {
    int ev[kPlanBatch];
    load_batch(base, ev);
#pragma unroll
    for (int u = 0; u < kPlanBatch; ++u) {
      const int q = base + 32 * u + lane;
      const int e = ev[u];
      const unsigned peers = peers_of(e);
      const int done = e >= 0 ? warp_cnt[e] : 0;  // pairs of e before this step
      __syncwarp();                               // every peer has read warp_cnt[e] before the leader moves it
      if (e >= 0) {
        const int row = row_start[e] + done + __popc(peers & ((1u << lane) - 1u));
        p.row_of_pair[q] = row;
        p.token_of_row[row] = q / p.top_k;
        if (lane == __ffs(peers) - 1) warp_cnt[e] = done + __popc(peers);
      } else if (q < end) {
        p.row_of_pair[q] = -1;
      }
      __syncwarp();
    }
  }

  // Tile t belongs to the last expert whose first tile is <= t (that expert has tiles, as t < tile_start[E]).
  const int num_tiles = tile_start[num_experts];
  for (int t = tid; t < p.num_tiles_bound; t += kPlanThreads) {
    int4 info = make_int4(-1, 0, 0, 0);
    if (t < num_tiles) {
      int lo = 0, hi = num_experts - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (tile_start[mid] <= t) {
          lo = mid;
        } else {
          hi = mid - 1;
        }
      }
      const int row0 = row_start[lo] + (t - tile_start[lo]) * p.bm;
      info = make_int4(lo, row0, min(p.bm, row_start[lo + 1] - row0), 0);
    }
    p.tiles[t] = info;
  }
}

// ---- Gather and combine (one block per token) -------------------------------------------------------------------

// Eight elements of a row as bf16 (16-byte aligned).
__device__ __forceinline__ uint4 load_bf16x8(const float* x) {
  const float4 lo = __ldg(reinterpret_cast<const float4*>(x)), hi = __ldg(reinterpret_cast<const float4*>(x) + 1);
  return make_uint4(pack_bf16(lo.x, lo.y), pack_bf16(lo.z, lo.w), pack_bf16(hi.x, hi.y), pack_bf16(hi.z, hi.w));
}
__device__ __forceinline__ uint4 load_bf16x8(const uint16_t* x) { return __ldg(reinterpret_cast<const uint4*>(x)); }

// Token t's row of x (f32 or bf16) as bf16 into row row(p) of A for each of its pairs p, or into row t of A when
// row_of_pair is null (bf16(x) for the in-loader gather).
template <class Src>
__global__ void __launch_bounds__(kRowThreads) moe_gather_kernel(const Src* x, const int32_t* row_of_pair,
                                                                 int64_t top_k, int64_t hidden, uint16_t* a) {
  const int64_t t = blockIdx.x, chunks = hidden / 8;
  const Src* xt = x + t * hidden;
  for (int64_t c = threadIdx.x; c < chunks; c += kRowThreads) {
    const uint4 v = load_bf16x8(xt + 8 * c);
    if (row_of_pair == nullptr) {
      *reinterpret_cast<uint4*>(a + t * hidden + 8 * c) = v;
      continue;
    }
    for (int64_t j = 0; j < top_k; ++j) {
      const int32_t r = __ldg(row_of_pair + t * top_k + j);
      if (r >= 0) *reinterpret_cast<uint4*>(a + int64_t{r} * hidden + 8 * c) = v;
    }
  }
}

__global__ void __launch_bounds__(kRowThreads) moe_combine_kernel(const float* y, const int32_t* row_of_pair,
                                                                  const float* weights, int64_t top_k,
                                                                  int64_t hidden, float* out) {
  const int64_t t = blockIdx.x, chunks = hidden / 4;
  float4* out4 = reinterpret_cast<float4*>(out + t * hidden);
  const float4* y4 = reinterpret_cast<const float4*>(y);
  for (int64_t c = threadIdx.x; c < chunks; c += kRowThreads) {
    float4 acc = out4[c];
    for (int64_t j = 0; j < top_k; ++j) {
      const int32_t r = __ldg(row_of_pair + t * top_k + j);
      if (r < 0) continue;  // skipped pair: its weight is not read either
      const float w = __ldg(weights + t * top_k + j);
      const float4 v = __ldg(y4 + int64_t{r} * chunks + c);
      acc = make_float4(fmaf(w, v.x, acc.x), fmaf(w, v.y, acc.y), fmaf(w, v.z, acc.z), fmaf(w, v.w, acc.w));
    }
    out4[c] = acc;
  }
}

// ---- Host side --------------------------------------------------------------------------------------------------

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Rows per tile from the average rows per chosen expert: a tile that mostly holds padding wastes tensor-core
// work, while each extra tile of an expert reads its weights again.
int64_t auto_block_m(int64_t pairs, int64_t num_experts) {
  const int64_t rows_per_expert = pairs / std::min(pairs, num_experts);
  if (rows_per_expert <= 24) return 32;
  if (rows_per_expert <= 64) return 64;
  return 128;
}

// Warps per block of the 64- and 128-row tiles: the caller's, else the environment's (DSI_MOE_GEMM_WARPS), else 4
// for bf16 weights and 8 for FP8 ones. H200, cuda_kernels_test timings (V2-Lite and V3 expert shapes):
// bf16 4 warps 241 against 209 TFLOP/s at 4096 tokens x 6 of 64 experts, 279 against 246 at 1024 rows per
// V3 expert; FP8 (whose dequantization has half the threads with 4 warps) 225 against 241.
int gemm_warps(const MoeGroupedArgs& a) {
  if (a.gemm_warps != 0) return a.gemm_warps;
  static const int from_env = [] {
    const char* v = std::getenv("DSI_MOE_GEMM_WARPS");
    return v == nullptr ? 0 : std::atoi(v);
  }();
  if (from_env == 4 || from_env == 8) return from_env;
  return a.w_dtype == DType::kF8E4M3 ? 8 : 4;
}

// Shared memory and output columns per block of the tile shape with bm rows (the shapes differ in BM and BK only;
// gemm 1 covers BN / 2 columns of inter per block).
struct GemmShape {
  size_t smem;
  int64_t bn;
};
GemmShape gemm_shape(int64_t bm, bool fp8) {
  static_assert(SmallTiles::kBN == MediumTiles::kBN && MediumTiles::kBN == LargeTiles::kBN);
  static_assert(MediumTiles4::kSmemBytes == MediumTiles::kSmemBytes && LargeTiles4::kSmemBytes == LargeTiles::kSmemBytes &&
                    MediumTiles4::kFp8SmemBytes == MediumTiles::kFp8SmemBytes &&
                    LargeTiles4::kFp8SmemBytes == LargeTiles::kFp8SmemBytes,
                "the warp count leaves the shared memory as it is");
  const auto pick = [bm](int small, int medium, int large) { return bm == 32 ? small : bm == 64 ? medium : large; };
  const int smem = fp8 ? pick(SmallTiles::kFp8SmemBytes, MediumTiles::kFp8SmemBytes, LargeTiles::kFp8SmemBytes)
                       : pick(SmallTiles::kSmemBytes, MediumTiles::kSmemBytes, LargeTiles::kSmemBytes);
  return {static_cast<size_t>(smem), LargeTiles::kBN};
}

template <class Kernel>
Status launch_checked(Kernel kernel, int64_t blocks, int threads, size_t smem, cudaStream_t stream,
                      const GemmParams& p) {
  DSI_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  // Two blocks per SM need most of the unified L1 / shared memory as shared memory (the tiles bypass L1).
  DSI_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
  kernel<<<static_cast<unsigned>(blocks), threads, smem, stream>>>(p);
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

struct Problem {
  const MoeGroupedArgs& a;
  const Layout& l;
  const uint16_t* a1;       // gemm 1's A: the gathered rows, or bf16(x) read through a1_rows
  const int32_t* a1_rows;   // null, or the token of each row (MoeGather::kInLoader)
};

uint16_t* act_of(const Problem& pr) {
  return reinterpret_cast<uint16_t*>(static_cast<char*>(pr.a.workspace) + pr.l.act);
}
char* ay_of(const Problem& pr) { return static_cast<char*>(pr.a.workspace) + pr.l.a_y; }
const int4* tiles_of(const Problem& pr) {
  return reinterpret_cast<const int4*>(static_cast<char*>(pr.a.workspace) + pr.l.tiles);
}

// One GEMM: bf16 weights, or FP8 codes in 16-byte copies where k allows (rows 16-byte aligned), else 8-byte ones.
template <class C, bool kGated>
Status launch_gemm(CudaContext& ctx, const GemmParams& p, bool fp8, int64_t num_tiles_bound) {
  const int64_t blocks = num_tiles_bound * p.n_tiles;
  if (!fp8) {
    return launch_checked(moe_gemm_kernel<C, kGated, WLoad::kBf16>, blocks, C::kThreads, C::kSmemBytes,
                          ctx.stream(), p);
  }
  if (p.k % 16 == 0) {
    return launch_checked(moe_gemm_kernel<C, kGated, WLoad::kFp8x16>, blocks, C::kThreads, C::kFp8SmemBytes,
                          ctx.stream(), p);
  }
  return launch_checked(moe_gemm_kernel<C, kGated, WLoad::kFp8x8>, blocks, C::kThreads, C::kFp8SmemBytes,
                        ctx.stream(), p);
}

// The parameters of gemm 1 (gated) or gemm 2 for block tiles of bn weight rows.
GemmParams gemm_params(const Problem& pr, bool gated, int bn) {
  const MoeGroupedArgs& a = pr.a;
  const int64_t hidden_blocks = ceil_div(a.hidden, kScaleBlock), inter_blocks = ceil_div(a.inter, kScaleBlock);
  if (gated) {
    return {.a = pr.a1, .w = a.w13, .w_scale = a.w13_scale, .y = act_of(pr),
            .tiles = tiles_of(pr), .n = a.inter, .k = a.hidden, .w_expert_stride = 2 * a.inter * a.hidden,
            .scale_expert_stride = ceil_div(2 * a.inter, kScaleBlock) * hidden_blocks, .k_blocks = hidden_blocks,
            .n_tiles = static_cast<int>(ceil_div(a.inter, bn / 2)), .a_rows = pr.a1_rows};
  }
  return {.a = act_of(pr), .w = a.w2, .w_scale = a.w2_scale, .y = ay_of(pr), .tiles = tiles_of(pr), .n = a.hidden,
          .k = a.inter, .w_expert_stride = a.hidden * a.inter, .scale_expert_stride = hidden_blocks * inter_blocks,
          .k_blocks = inter_blocks, .n_tiles = static_cast<int>(ceil_div(a.hidden, bn))};
}

// Both GEMMs with one tile shape; the plan built the tile table for C::kBM rows per tile.
template <class C>
Status launch_gemms(CudaContext& ctx, const Problem& pr, int64_t num_tiles_bound) {
  const bool fp8 = pr.a.w_dtype == DType::kF8E4M3;
  DSI_RETURN_IF_ERROR((launch_gemm<C, true>(ctx, gemm_params(pr, true, C::kBN), fp8, num_tiles_bound)));
  return launch_gemm<C, false>(ctx, gemm_params(pr, false, C::kBN), fp8, num_tiles_bound);
}

// Both GEMMs on the warpgroup tensor cores (sm_90a): C the bf16 tiles, F the FP8 ones of the same height.
template <class C, class F>
Status launch_wgmma_gemms(CudaContext& ctx, const Problem& pr, int64_t num_tiles_bound) {
  static_assert(C::kBM == F::kBM && C::kBN == F::kBN && C::kThreads == F::kThreads);
  const bool fp8 = pr.a.w_dtype == DType::kF8E4M3;
  for (const bool gated : {true, false}) {
    const GemmParams p = gemm_params(pr, gated, C::kBN);
    const auto kernel = fp8 ? (gated ? moe_wgmma_fp8_kernel<F, true> : moe_wgmma_fp8_kernel<F, false>)
                            : (gated ? moe_wgmma_kernel<C, true> : moe_wgmma_kernel<C, false>);
    DSI_RETURN_IF_ERROR(launch_checked(kernel, num_tiles_bound * p.n_tiles, C::kThreads,
                                       fp8 ? F::kSmemBytes : C::kSmemBytes, ctx.stream(), p));
  }
  return Status::Ok();
}

// Whether the GEMMs run on the warpgroup tensor cores: bf16 weights (or FP8 ones, k % 16 == 0), 64- or 128-row
// tiles, an sm_90 device (the library's sm_90a code; wgmma does not exist in the compute_90 PTX). The caller's
// choice, else the environment's (below), else for bf16 experts wherever it can run unless a warp count (an
// mma.sync tiling) was given.
// H100, cuda_kernels_test moe_grouped: V2-Lite experts at 4096 tokens 356 against 216 TFLOP/s (128-row tiles), at
// 512 tokens 115 against 112 (64-row tiles, bound by reading the weights); V3 experts at 1024 rows each 450 against
// 242.
Result<bool> use_wgmma(const CudaContext& ctx, const MoeGroupedArgs& a, int64_t bm) {
  const size_t smem = std::max<size_t>({WgmmaMedium::kSmemBytes, WgmmaLarge::kSmemBytes, WgmmaFp8Medium::kSmemBytes,
                                        WgmmaFp8Large::kSmemBytes});
  // FP8: 16-byte code copies (k % 16 == 0 for both GEMMs).
  const bool weights = a.w_dtype == DType::kBF16 ||
                       (a.w_dtype == DType::kF8E4M3 && a.hidden % 16 == 0 && a.inter % 16 == 0);
  const bool can = weights && (bm == 64 || bm == 128) && ctx.props().major == 9 && ctx.props().minor == 0 &&
                   smem <= ctx.props().sharedMemPerBlockOptin;
  if (a.gemm_kernel == MoeGemmKernel::kMma) return false;
  if (a.gemm_kernel == MoeGemmKernel::kWgmma) {
    if (!can) {
      return Status::Unsupported(str_cat("moe_experts_grouped: wgmma needs bf16 weights or FP8 ones with hidden and ",
                                         "inter multiples of 16, block_m 64 or 128 and an sm_90 device (have ",
                                         dtype_name(a.w_dtype), ", hidden ", a.hidden, ", inter ", a.inter,
                                         ", block_m ", bm, ", sm_", ctx.props().major, ctx.props().minor, ")"));
    }
    return true;
  }
  // DSI_MOE_WGMMA: 0 keeps mma.sync, 1 takes wgmma for FP8 experts too (not yet the default: that kernel was
  // compiled but has not run on a GPU; its tests are in moe_grouped_test.cc).
  static const int env = [] {
    const char* v = std::getenv("DSI_MOE_WGMMA");
    return v == nullptr ? -1 : std::string_view(v) == "0" ? 0 : std::string_view(v) == "1" ? 1 : -1;
  }();
  const bool fp8_ok = a.w_dtype != DType::kF8E4M3 || env == 1;
  return can && env != 0 && fp8_ok && a.gemm_warps == 0;  // a warp count asks for the mma.sync tiles
}

// Whether the plan ranks pairs with ballots: the caller's choice, else DSI_MOE_PLAN_BALLOT=1.
bool plan_by_ballot(const MoeGroupedArgs& a) {
  if (a.plan != MoePlanMatch::kAuto) return a.plan == MoePlanMatch::kBallot;
  static const bool env = [] {
    const char* v = std::getenv("DSI_MOE_PLAN_BALLOT");
    return v != nullptr && std::string_view(v) == "1";
  }();
  return env;
}

// Whether gemm 1 reads the rows of x in place: the caller's choice, else DSI_MOE_FUSED_GATHER=1.
bool gather_in_loader(const MoeGroupedArgs& a) {
  if (a.gather != MoeGather::kAuto) return a.gather == MoeGather::kInLoader;
  static const bool env = [] {
    const char* v = std::getenv("DSI_MOE_FUSED_GATHER");
    return v != nullptr && std::string_view(v) == "1";
  }();
  return env;
}

}  // namespace

size_t moe_grouped_workspace_bytes(int64_t num_tokens, int64_t top_k, int64_t num_experts, int64_t hidden,
                                   int64_t inter) {
  if (num_tokens <= 0 || top_k <= 0 || num_experts <= 0 || hidden <= 0 || inter <= 0) return 0;
  return layout(num_tokens * top_k, num_experts, hidden, inter).total;
}

Status moe_experts_grouped(CudaContext& ctx, const MoeGroupedArgs& a) {
  if (a.num_tokens < 0) return Status::InvalidArgument(str_cat("moe_experts_grouped: num_tokens ", a.num_tokens));
  if (a.top_k <= 0) return Status::InvalidArgument(str_cat("moe_experts_grouped: top_k ", a.top_k));
  if (a.w_dtype != DType::kBF16 && a.w_dtype != DType::kF8E4M3) {
    return Status::Unsupported(
        str_cat("moe_experts_grouped: w_dtype ", dtype_name(a.w_dtype), " (bf16 or e4m3 with block scales)"));
  }
  if (a.num_experts <= 0) {
    return Status::InvalidArgument(str_cat("moe_experts_grouped: num_experts ", a.num_experts));
  }
  if (a.num_experts > kMaxExperts) {
    return Status::Unsupported(
        str_cat("moe_experts_grouped: num_experts ", a.num_experts, " (at most ", kMaxExperts, ")"));
  }
  if (a.hidden <= 0 || a.hidden % 8 != 0) {
    return Status::InvalidArgument(str_cat("moe_experts_grouped: hidden ", a.hidden, " (a positive multiple of 8)"));
  }
  if (a.inter <= 0 || a.inter % 8 != 0) {
    return Status::InvalidArgument(str_cat("moe_experts_grouped: inter ", a.inter, " (a positive multiple of 8)"));
  }
  if (a.gemm_warps != 0 && a.gemm_warps != 4 && a.gemm_warps != 8) {
    return Status::InvalidArgument(str_cat("moe_experts_grouped: gemm_warps ", a.gemm_warps, " (0, 4 or 8)"));
  }
  if (a.block_m != 0 && a.block_m != 32 && a.block_m != 64 && a.block_m != 128) {
    return Status::InvalidArgument(str_cat("moe_experts_grouped: block_m ", a.block_m, " (0, 32, 64 or 128)"));
  }
  if (a.num_tokens > kMaxPairs / a.top_k) {
    return Status::Unsupported(str_cat("moe_experts_grouped: ", a.num_tokens, " tokens x top_k ", a.top_k,
                                       " pairs (at most ", kMaxPairs, ")"));
  }
  if (a.num_tokens == 0) return Status::Ok();
  const struct {
    const void* p;
    const char* name;
    bool vec;  // read or written in 16-byte vectors: 16-byte alignment
  } ptrs[] = {{a.x_bf16 != nullptr ? static_cast<const void*>(a.x_bf16) : a.x,
               a.x_bf16 != nullptr ? "x_bf16" : "x", true},
              {a.ids, "ids", false}, {a.weights, "weights", false}, {a.w13, "w13", true},
              {a.w2, "w2", true}, {a.out, "out", true},  {a.workspace, "workspace", true}};
  for (const auto& p : ptrs) {
    if (p.p == nullptr) return Status::InvalidArgument(str_cat("moe_experts_grouped: ", p.name, " is null"));
    if (p.vec && !aligned16(p.p)) {
      return Status::InvalidArgument(str_cat("moe_experts_grouped: ", p.name, " is not 16-byte aligned"));
    }
  }
  const bool fp8 = a.w_dtype == DType::kF8E4M3;
  if (fp8 && (a.w13_scale == nullptr || a.w2_scale == nullptr)) {
    return Status::InvalidArgument("moe_experts_grouped: fp8 weights need w13_scale and w2_scale");
  }
  const int64_t pairs = a.num_tokens * a.top_k;
  const Layout l = layout(pairs, a.num_experts, a.hidden, a.inter);
  if (a.workspace_bytes < l.total) {
    return Status::InvalidArgument(str_cat("moe_experts_grouped: workspace of ", a.workspace_bytes,
                                           " bytes, needs ", l.total, " (moe_grouped_workspace_bytes)"));
  }
  const size_t plan_smem = (kPlanWarps * a.num_experts + 2 * (a.num_experts + 1)) * sizeof(int);
  if (plan_smem > ctx.props().sharedMemPerBlockOptin) {
    return Status::Unsupported(str_cat("moe_experts_grouped: num_experts ", a.num_experts, " needs ", plan_smem,
                                       " bytes of shared memory, the device has ",
                                       ctx.props().sharedMemPerBlockOptin));
  }
  const int64_t bm = a.block_m != 0 ? a.block_m : auto_block_m(pairs, a.num_experts);
  const int64_t num_tiles_bound = max_tiles(pairs, a.num_experts, bm);  // <= the table's capacity (bm >= 32)
  const GemmShape shape = gemm_shape(bm, fp8);
  if (shape.smem > ctx.props().sharedMemPerBlockOptin) {
    return Status::Unsupported(str_cat("moe_experts_grouped: block_m ", bm, " tiles need ", shape.smem,
                                       " bytes of shared memory, the device has ",
                                       ctx.props().sharedMemPerBlockOptin));
  }
  const int64_t most_n_tiles = std::max(ceil_div(a.inter, shape.bn / 2), ceil_div(a.hidden, shape.bn));
  if (num_tiles_bound * most_n_tiles > INT_MAX) {
    return Status::Unsupported(str_cat("moe_experts_grouped: ", num_tiles_bound, " row tiles x ", most_n_tiles,
                                       " column tiles exceed the grid (tokens ", a.num_tokens, ", top_k ", a.top_k,
                                       ", hidden ", a.hidden, ", inter ", a.inter, ")"));
  }
  DSI_ASSIGN_OR_RETURN(const bool wgmma, use_wgmma(ctx, a, bm));
  char* ws = static_cast<char*>(a.workspace);
  int32_t* row_of_pair = reinterpret_cast<int32_t*>(ws + l.row_of_pair);

  int32_t* token_of_row = reinterpret_cast<int32_t*>(ws + l.token_of_row);
  const PlanParams plan{.ids = a.ids, .row_of_pair = row_of_pair, .token_of_row = token_of_row,
                        .tiles = reinterpret_cast<int4*>(ws + l.tiles), .pairs = static_cast<int>(pairs),
                        .num_experts = static_cast<int>(a.num_experts), .bm = static_cast<int>(bm),
                        .num_tiles_bound = static_cast<int>(num_tiles_bound), .top_k = static_cast<int>(a.top_k)};
  const auto plan_kernel = plan_by_ballot(a) ? moe_plan_kernel<true> : moe_plan_kernel<false>;
  DSI_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(plan_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(plan_smem)));
  plan_kernel<<<1, kPlanThreads, plan_smem, ctx.stream()>>>(plan);
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();

  const auto blocks = static_cast<unsigned>(a.num_tokens);  // < 2^30
  uint16_t* a_rows = reinterpret_cast<uint16_t*>(ws + l.a_y);
  const bool in_loader = gather_in_loader(a);
  // In the loader: bf16(x) [tokens, hidden] (the caller's, or converted here into the A / Y space, which gemm 2
  // overwrites only after gemm 1 has read it). Else the pairs' rows copied into A.
  const uint16_t* a1 = in_loader && a.x_bf16 != nullptr ? a.x_bf16 : a_rows;
  if (!(in_loader && a.x_bf16 != nullptr)) {
    const int32_t* scatter = in_loader ? nullptr : row_of_pair;
    if (a.x_bf16 != nullptr) {
      moe_gather_kernel<<<blocks, kRowThreads, 0, ctx.stream()>>>(a.x_bf16, scatter, a.top_k, a.hidden, a_rows);
    } else {
      moe_gather_kernel<<<blocks, kRowThreads, 0, ctx.stream()>>>(a.x, scatter, a.top_k, a.hidden, a_rows);
    }
    DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  }

  const Problem pr{.a = a, .l = l, .a1 = a1, .a1_rows = in_loader ? token_of_row : nullptr};
  const bool four_warps = gemm_warps(a) == 4;
  if (wgmma) {
    DSI_RETURN_IF_ERROR((bm == 64 ? launch_wgmma_gemms<WgmmaMedium, WgmmaFp8Medium>(ctx, pr, num_tiles_bound)
                                  : launch_wgmma_gemms<WgmmaLarge, WgmmaFp8Large>(ctx, pr, num_tiles_bound)));
  } else {
    switch (bm) {
      case 32:
        DSI_RETURN_IF_ERROR(launch_gemms<SmallTiles>(ctx, pr, num_tiles_bound));
        break;
      case 64:
        DSI_RETURN_IF_ERROR(four_warps ? launch_gemms<MediumTiles4>(ctx, pr, num_tiles_bound)
                                       : launch_gemms<MediumTiles>(ctx, pr, num_tiles_bound));
        break;
      default:
        DSI_RETURN_IF_ERROR(four_warps ? launch_gemms<LargeTiles4>(ctx, pr, num_tiles_bound)
                                       : launch_gemms<LargeTiles>(ctx, pr, num_tiles_bound));
        break;
    }
  }

  moe_combine_kernel<<<blocks, kRowThreads, 0, ctx.stream()>>>(reinterpret_cast<const float*>(ws + l.a_y),
                                                               row_of_pair, a.weights, a.top_k, a.hidden, a.out);
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

}  // namespace dsi::cuda
