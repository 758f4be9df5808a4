// MoE routed experts as grouped GEMMs (cuda_moe_grouped.h). Launches on the context's stream:
//   plan:    one block groups the pairs by expert (stably: pair order within an expert) and writes each pair's row
//            in the permuted matrices, plus a table of row tiles {expert, first row, rows} of BM rows each.
//   gather:  A[row(p)] = bf16(x[t])                                     A   [rows, hidden] bf16
//   gemm 1:  act = silu(A W13[e][gate]^T) * (A W13[e][up]^T)            act [rows, inter]  bf16
//   gemm 2:  Y = act W2[e]^T                                            Y   [rows, hidden] f32 (over A: dead by then)
//   combine: out[t] += sum_j weights[t, j] Y[row(t, j)]                  (in j order)
// Rows are dense: the valid pairs of expert 0, then of expert 1, ...; a skipped pair has no row.
// GEMMs: block tile BM x BN x BK, 8 warps, mma.sync m16n8k16 bf16 -> f32, ldmatrix from padded shared-memory rows,
// a kStages-deep cp.async pipeline. In gemm 1 a block's BN weight rows are BN / 2 gate rows and the matching BN / 2
// up rows, interleaved per warp so that each thread holds the gate and up sums of the same outputs. The grid
// covers an upper bound of the row tiles (the routing is unknown on the host): block b computes n-tile
// b % n_tiles of row tile b / n_tiles and exits at once when the table marks that tile unused.
#include <algorithm>
#include <climits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_moe_grouped.h"

namespace dsi::cuda {
namespace {

constexpr int64_t kMaxExperts = 1024;
constexpr int64_t kMaxPairs = int64_t{1} << 30;
constexpr int kPlanThreads = 1024;  // one expert per thread in the scans
constexpr int kPlanWarps = kPlanThreads / 32;
constexpr int kPlanBatch = 8;  // ids each lane loads before ranking them (loads in flight)
constexpr int kRowThreads = 256;  // gather and combine: one block per token
constexpr int64_t kMinBlockM = 32;
constexpr size_t kAlign = 256;

// ---- Workspace --------------------------------------------------------------------------------------------------

struct Layout {
  size_t row_of_pair = 0;  // int32 [pairs]: the pair's row in A, act and Y; -1 for a skipped pair
  size_t tiles = 0;        // int4 [max_tiles(pairs, num_experts, kMinBlockM)]: {expert or -1, row0, rows, 0}
  size_t a_y = 0;          // A bf16 [pairs, hidden], then Y f32 [pairs, hidden]
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
  l.tiles = take(n(max_tiles(pairs, num_experts, kMinBlockM)) * sizeof(int4));
  l.a_y = take(n(pairs) * n(hidden) * sizeof(float));
  l.act = take(n(pairs) * n(inter) * sizeof(uint16_t));
  l.total = at;
  return l;
}

// ---- Device helpers ---------------------------------------------------------------------------------------------

// Round to nearest even (NaN stays NaN), as core/dtype.h f32_to_bf16; two values packed low half first.
__device__ __forceinline__ uint32_t bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) { return bf16_bits(lo) | (bf16_bits(hi) << 16); }

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared, bypassing L1; valid == false writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---- Plan -------------------------------------------------------------------------------------------------------

struct PlanParams {
  const int32_t* ids;    // [pairs]
  int32_t* row_of_pair;  // [pairs]
  int4* tiles;           // [num_tiles_bound]
  int pairs, num_experts, bm, num_tiles_bound;
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

// Warp w owns the pairs [w seg, (w + 1) seg). Pass 1 counts each warp's pairs per expert; the scans turn the
// counts into each warp's first row per expert and give each expert's first row and first tile; pass 2 ranks the
// pairs of one expert within a step of 32 with __match_any_sync. Rows of one expert follow pair order.
// Shared memory: int cnt[kPlanWarps][E], row_start[E + 1], tile_start[E + 1].
__global__ void __launch_bounds__(kPlanThreads) moe_plan_kernel(PlanParams p) {
  extern __shared__ int plan_smem[];
  __shared__ int2 warp_sums[kPlanWarps];
  __shared__ int2 total;
  const int num_experts = p.num_experts;
  int* cnt = plan_smem;
  int* row_start = cnt + kPlanWarps * num_experts;
  int* tile_start = row_start + num_experts + 1;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int i = tid; i < kPlanWarps * num_experts; i += kPlanThreads) cnt[i] = 0;
  __syncthreads();

  const int seg = (p.pairs + kPlanWarps - 1) / kPlanWarps;
  const int begin = warp * seg, end = min(p.pairs, begin + seg);
  int* warp_cnt = cnt + warp * num_experts;
  // ev[u]: the expert of pair base + 32 u + lane, -1 when skipped or past the segment. Loop bounds are
  // warp-uniform, so every lane reaches each __match_any_sync.
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
      const unsigned peers = __match_any_sync(0xffffffffu, ev[u]);
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
      const unsigned peers = __match_any_sync(0xffffffffu, e);
      const int done = e >= 0 ? warp_cnt[e] : 0;  // pairs of e before this step
      __syncwarp();                               // every peer has read warp_cnt[e] before the leader moves it
      if (e >= 0) {
        p.row_of_pair[q] = row_start[e] + done + __popc(peers & ((1u << lane) - 1u));
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

__global__ void __launch_bounds__(kRowThreads) moe_gather_kernel(const float* x, const int32_t* row_of_pair,
                                                                 int64_t top_k, int64_t hidden, uint16_t* a) {
  const int64_t t = blockIdx.x, chunks = hidden / 8;
  const float4* x4 = reinterpret_cast<const float4*>(x + t * hidden);
  const int32_t* rows = row_of_pair + t * top_k;
  for (int64_t c = threadIdx.x; c < chunks; c += kRowThreads) {
    const float4 lo = __ldg(x4 + 2 * c), hi = __ldg(x4 + 2 * c + 1);
    const uint4 v = make_uint4(pack_bf16(lo.x, lo.y), pack_bf16(lo.z, lo.w), pack_bf16(hi.x, hi.y),
                               pack_bf16(hi.z, hi.w));
    for (int64_t j = 0; j < top_k; ++j) {
      const int32_t r = __ldg(rows + j);
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

// ---- Grouped GEMM -----------------------------------------------------------------------------------------------

template <int BM, int BN, int BK, int WarpsM, int WarpsN, int Stages>
struct Tiles {
  static constexpr int kBM = BM, kBN = BN, kBK = BK, kWarpsN = WarpsN, kStages = Stages;
  static constexpr int kThreads = 32 * WarpsM * WarpsN;
  static constexpr int kWM = BM / WarpsM, kWN = BN / WarpsN;  // warp tile
  static constexpr int kMI = kWM / 16, kNJ = kWN / 8;          // mma tiles per warp
  static constexpr int kStride = BK + 8;  // shared row stride (elements): 8 ldmatrix rows hit 8 distinct 16-byte slots
  static constexpr int kStageElems = (BM + BN) * kStride;  // A tile, then B tile
  static constexpr int kSmemBytes = Stages * kStageElems * 2;
  static constexpr int kKChunks = BK / 8;                 // 16-byte chunks per tile row
  static constexpr int kRowsPerPass = kThreads / kKChunks;  // tile rows one pass of the block copies
  static_assert(kWM % 16 == 0 && kWN % 16 == 0, "B fragments load in pairs of n8 tiles; gate and up halves too");
  static_assert(BK % 16 == 0 && kThreads % kKChunks == 0, "whole k16 steps, whole rows per pass");
  static_assert(BM % kRowsPerPass == 0 && BN % kRowsPerPass == 0, "whole passes per tile");
  static_assert(Stages >= 2, "a pipeline");
};
// Decode-sized groups (weight-bandwidth bound: weights read once per row tile): BM 32 or 64, long BK for bytes in
// flight. Prefill (compute bound): 128 x 128 x 32. Each fits two blocks per SM on the H100 / H200 (227 KB).
using SmallTiles = Tiles<32, 128, 64, 1, 8, 4>;    // 90 KB of shared memory
using MediumTiles = Tiles<64, 128, 64, 2, 4, 4>;   // 108 KB
using LargeTiles = Tiles<128, 128, 32, 2, 4, 4>;   // 80 KB

struct GemmParams {
  const uint16_t* a;        // [rows, k] bf16: A (gemm 1) or act (gemm 2)
  const uint16_t* w;        // [num_experts, w_expert_stride / k, k] bf16
  void* y;                  // [rows, n]: act bf16 (gated) or Y f32
  const int4* tiles;        // from the plan
  int64_t n, k;             // output columns (gated: inter; W rows [0, n) gate, [n, 2 n) up), reduction length
  int64_t w_expert_stride;  // elements per expert in w
  int n_tiles;
};

template <class C, bool kGated>
__global__ void __launch_bounds__(C::kThreads, 2) moe_gemm_kernel(GemmParams p) {
  extern __shared__ __align__(16) unsigned char gemm_smem[];
  uint16_t* smem = reinterpret_cast<uint16_t*>(gemm_smem);
  const int4 tile = p.tiles[blockIdx.x / p.n_tiles];
  if (tile.x < 0) return;  // past the routed tiles: block-uniform, before any barrier
  const int64_t row0 = tile.y;
  const int rows = tile.z;
  const int n_tile = static_cast<int>(blockIdx.x % p.n_tiles);
  const uint16_t* w = p.w + tile.x * p.w_expert_stride;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / C::kWarpsN, wn = warp % C::kWarpsN;
  constexpr int kHalf = C::kWN / 2;  // gated: a warp's gate (then up) columns
  // Output columns of this block start at col0: BN of them, or BN / 2 when each needs a gate and an up row.
  const int64_t col0 = int64_t{n_tile} * (kGated ? C::kBN / 2 : C::kBN);

  // Thread tid copies chunk kc of tile rows tid / kKChunks + i * kRowsPerPass; their global rows are fixed.
  constexpr int kAIters = C::kBM / C::kRowsPerPass, kBIters = C::kBN / C::kRowsPerPass;
  const int kc = tid % C::kKChunks, row_in_pass = tid / C::kKChunks;
  const uint16_t* a_src[kAIters];
  bool a_ok[kAIters];
#pragma unroll
  for (int i = 0; i < kAIters; ++i) {
    const int r = row_in_pass + i * C::kRowsPerPass;
    a_ok[i] = r < rows;  // rows past the expert's count are zeros (never another expert's rows)
    a_src[i] = p.a + (row0 + (a_ok[i] ? r : 0)) * p.k + kc * 8;
  }
  const uint16_t* b_src[kBIters];
  bool b_ok[kBIters];
#pragma unroll
  for (int i = 0; i < kBIters; ++i) {
    const int s = row_in_pass + i * C::kRowsPerPass;  // row of the B tile in shared memory
    int64_t col, w_row;
    if constexpr (kGated) {
      // Warp column block s / kWN: kHalf gate rows, then the kHalf up rows of the same columns.
      const int q = s % C::kWN;
      col = col0 + (s / C::kWN) * kHalf + q % kHalf;
      w_row = col + (q >= kHalf ? p.n : 0);
    } else {
      col = col0 + s;
      w_row = col;
    }
    b_ok[i] = col < p.n;
    b_src[i] = w + (b_ok[i] ? w_row : 0) * p.k + kc * 8;
  }
  const auto load_stage = [&](int stage, int kt) {
    uint16_t* as = smem + stage * C::kStageElems;
    uint16_t* bs = as + C::kBM * C::kStride;
    const int64_t k_off = int64_t{kt} * C::kBK;
    const bool k_ok = k_off + kc * 8 < p.k;  // k % 8 == 0: a chunk is wholly inside or wholly past k
#pragma unroll
    for (int i = 0; i < kAIters; ++i) {
      const bool ok = a_ok[i] && k_ok;
      cp_async16(as + (row_in_pass + i * C::kRowsPerPass) * C::kStride + kc * 8, ok ? a_src[i] + k_off : p.a, ok);
    }
#pragma unroll
    for (int i = 0; i < kBIters; ++i) {
      const bool ok = b_ok[i] && k_ok;
      cp_async16(bs + (row_in_pass + i * C::kRowsPerPass) * C::kStride + kc * 8, ok ? b_src[i] + k_off : p.w, ok);
    }
  };

  float acc[C::kMI][C::kNJ][4];
#pragma unroll
  for (int i = 0; i < C::kMI; ++i) {
#pragma unroll
    for (int j = 0; j < C::kNJ; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
  }
  const int k_tiles = static_cast<int>((p.k + C::kBK - 1) / C::kBK);
  // One commit group per k tile (empty past the end), so that wait_group<kStages - 2> at step kt means tile kt
  // has landed.
#pragma unroll
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<C::kStages - 2>();
    __syncthreads();  // tile kt visible to all; every warp is done with the stage refilled below (step kt - 1)
    const int next = kt + C::kStages - 1;
    if (next < k_tiles) load_stage(next % C::kStages, next);
    cp_async_commit();

    const uint16_t* as = smem + (kt % C::kStages) * C::kStageElems;
    const uint16_t* bs = as + C::kBM * C::kStride;
#pragma unroll
    for (int kk = 0; kk < C::kBK; kk += 16) {
      // A 16x16: matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15); lane l addresses row l % 16, k half l / 16.
      uint32_t af[C::kMI][4];
#pragma unroll
      for (int i = 0; i < C::kMI; ++i) {
        ldmatrix_x4(af[i], as + (wm * C::kWM + i * 16 + (lane & 15)) * C::kStride + kk + (lane >> 4) * 8);
      }
      // B for n8 tiles j, j + 1: matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
      uint32_t bf[C::kNJ][2];
#pragma unroll
      for (int j = 0; j < C::kNJ; j += 2) {
        uint32_t r[4];
        const int n = wn * C::kWN + j * 8 + (lane & 7) + ((lane >> 4) << 3);
        ldmatrix_x4(r, bs + n * C::kStride + kk + ((lane >> 3) & 1) * 8);
        bf[j][0] = r[0];
        bf[j][1] = r[1];
        bf[j + 1][0] = r[2];
        bf[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < C::kMI; ++i) {
#pragma unroll
        for (int j = 0; j < C::kNJ; ++j) mma_bf16(acc[i][j], af[i], bf[j][0], bf[j][1]);
      }
    }
  }
  cp_async_wait<0>();  // only empty groups remain; leave none behind

  // Accumulator c[2 h], c[2 h + 1]: row g + 8 h, columns 2 t4 and 2 t4 + 1 of the m16n8 tile.
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int i = 0; i < C::kMI; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = wm * C::kWM + i * 16 + h * 8 + g;
      if (r >= rows) continue;
      const int64_t row = row0 + r;
      if constexpr (kGated) {
        uint16_t* act = static_cast<uint16_t*>(p.y) + row * p.n;
#pragma unroll
        for (int j = 0; j < C::kNJ / 2; ++j) {
          const int64_t col = col0 + wn * kHalf + j * 8 + 2 * t4;
          if (col >= p.n) continue;  // n % 8 == 0: col + 1 < n as well
          const float g0 = acc[i][j][2 * h], g1 = acc[i][j][2 * h + 1];
          const float u0 = acc[i][j + C::kNJ / 2][2 * h], u1 = acc[i][j + C::kNJ / 2][2 * h + 1];
          *reinterpret_cast<uint32_t*>(act + col) =
              pack_bf16(g0 / (1.0f + expf(-g0)) * u0, g1 / (1.0f + expf(-g1)) * u1);
        }
      } else {
        float* y = static_cast<float*>(p.y) + row * p.n;
#pragma unroll
        for (int j = 0; j < C::kNJ; ++j) {
          const int64_t col = col0 + wn * C::kWN + j * 8 + 2 * t4;
          if (col < p.n) *reinterpret_cast<float2*>(y + col) = make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
        }
      }
    }
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

// Shared memory and output columns per block of the tile shape with bm rows (the shapes differ in BM and BK only;
// gemm 1 covers BN / 2 columns of inter per block).
struct GemmShape {
  size_t smem;
  int64_t bn;
};
GemmShape gemm_shape(int64_t bm) {
  static_assert(SmallTiles::kBN == MediumTiles::kBN && MediumTiles::kBN == LargeTiles::kBN);
  const int smem = bm == 32 ? SmallTiles::kSmemBytes : bm == 64 ? MediumTiles::kSmemBytes : LargeTiles::kSmemBytes;
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
};

uint16_t* act_of(const Problem& pr) {
  return reinterpret_cast<uint16_t*>(static_cast<char*>(pr.a.workspace) + pr.l.act);
}
char* ay_of(const Problem& pr) { return static_cast<char*>(pr.a.workspace) + pr.l.a_y; }
const int4* tiles_of(const Problem& pr) {
  return reinterpret_cast<const int4*>(static_cast<char*>(pr.a.workspace) + pr.l.tiles);
}

// Both GEMMs with one tile shape; the plan built the tile table for C::kBM rows per tile.
template <class C>
Status launch_gemms(CudaContext& ctx, const Problem& pr, int64_t num_tiles_bound) {
  const MoeGroupedArgs& a = pr.a;
  const GemmParams up{.a = reinterpret_cast<const uint16_t*>(ay_of(pr)), .w = a.w13, .y = act_of(pr),
                      .tiles = tiles_of(pr), .n = a.inter, .k = a.hidden, .w_expert_stride = 2 * a.inter * a.hidden,
                      .n_tiles = static_cast<int>(ceil_div(a.inter, C::kBN / 2))};
  const GemmParams down{.a = act_of(pr), .w = a.w2, .y = ay_of(pr), .tiles = tiles_of(pr), .n = a.hidden,
                        .k = a.inter, .w_expert_stride = a.hidden * a.inter,
                        .n_tiles = static_cast<int>(ceil_div(a.hidden, C::kBN))};
  DSI_RETURN_IF_ERROR(launch_checked(moe_gemm_kernel<C, true>, num_tiles_bound * up.n_tiles, C::kThreads,
                                     C::kSmemBytes, ctx.stream(), up));
  return launch_checked(moe_gemm_kernel<C, false>, num_tiles_bound * down.n_tiles, C::kThreads, C::kSmemBytes,
                        ctx.stream(), down);
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
  } ptrs[] = {{a.x, "x", true},   {a.ids, "ids", false}, {a.weights, "weights", false}, {a.w13, "w13", true},
              {a.w2, "w2", true}, {a.out, "out", true},  {a.workspace, "workspace", true}};
  for (const auto& p : ptrs) {
    if (p.p == nullptr) return Status::InvalidArgument(str_cat("moe_experts_grouped: ", p.name, " is null"));
    if (p.vec && !aligned16(p.p)) {
      return Status::InvalidArgument(str_cat("moe_experts_grouped: ", p.name, " is not 16-byte aligned"));
    }
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
  const GemmShape shape = gemm_shape(bm);
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
  char* ws = static_cast<char*>(a.workspace);
  int32_t* row_of_pair = reinterpret_cast<int32_t*>(ws + l.row_of_pair);

  const PlanParams plan{.ids = a.ids, .row_of_pair = row_of_pair, .tiles = reinterpret_cast<int4*>(ws + l.tiles),
                        .pairs = static_cast<int>(pairs), .num_experts = static_cast<int>(a.num_experts),
                        .bm = static_cast<int>(bm), .num_tiles_bound = static_cast<int>(num_tiles_bound)};
  DSI_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(moe_plan_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(plan_smem)));
  moe_plan_kernel<<<1, kPlanThreads, plan_smem, ctx.stream()>>>(plan);
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();

  const auto blocks = static_cast<unsigned>(a.num_tokens);  // < 2^30
  moe_gather_kernel<<<blocks, kRowThreads, 0, ctx.stream()>>>(a.x, row_of_pair, a.top_k, a.hidden,
                                                              reinterpret_cast<uint16_t*>(ws + l.a_y));
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();

  const Problem pr{.a = a, .l = l};
  switch (bm) {
    case 32:
      DSI_RETURN_IF_ERROR(launch_gemms<SmallTiles>(ctx, pr, num_tiles_bound));
      break;
    case 64:
      DSI_RETURN_IF_ERROR(launch_gemms<MediumTiles>(ctx, pr, num_tiles_bound));
      break;
    default:
      DSI_RETURN_IF_ERROR(launch_gemms<LargeTiles>(ctx, pr, num_tiles_bound));
      break;
  }

  moe_combine_kernel<<<blocks, kRowThreads, 0, ctx.stream()>>>(reinterpret_cast<const float*>(ws + l.a_y),
                                                               row_of_pair, a.weights, a.top_k, a.hidden, a.out);
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

}  // namespace dsi::cuda
