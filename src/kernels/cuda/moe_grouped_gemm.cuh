// The grouped GEMM of moe_grouped.cu (included there only): each block multiplies one row tile of one expert's
// rows by that expert's weights, Y[rows, n] = A[rows, k] W[n, k]^T, with bf16 weights or DeepSeek's FP8 weights
// (e4m3 codes with 128x128 block scales) dequantized to bf16 in shared memory.
//
// Block tile BM x BN x BK, 8 warps, mma.sync m16n8k16 bf16 -> f32, ldmatrix from padded shared-memory rows, a
// kStages-deep cp.async pipeline. In the gated GEMM (gemm 1) a block's BN weight rows are BN / 2 gate rows and the
// matching BN / 2 up rows, interleaved per warp so that each thread holds the gate and up sums of the same outputs.
//
// FP8 weights: a pipeline stage holds the A tile, the B tile's codes (BN rows of BK bytes) and one block scale per
// 8 B rows (8 consecutive weight rows, in one 128-row scale block as n % 8 == 0; BK divides 128, so a k tile lies
// in one 128-column block). At step kt the block first dequantizes the codes of tile kt + 1 into one of two bf16
// B tiles, then runs the tensor cores on tile kt from the other, with one barrier per step as for bf16 weights.
// A weight is bf16(f32(code value * scale)): the exact product rounded to f32, then to bf16 (nearest even both).
#pragma once

#include <cstdint>

#include "kernels/cuda/fp8_load.cuh"

namespace dsi::cuda::moe_gemm {

// ---- PTX helpers ------------------------------------------------------------------------------------------------

// Round to nearest even (NaN stays NaN), as core/dtype.h f32_to_bf16; two values packed low half first.
__device__ __forceinline__ uint32_t bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) { return bf16_bits(lo) | (bf16_bits(hi) << 16); }

// The same rounding in one instruction (NaN becomes the canonical bf16 NaN); low half lo.
__device__ __forceinline__ uint32_t cvt_bf16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));  // the first source goes to the high half
  return r;
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared, bypassing L1; valid == false writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0));
}
// kBytes (4 or 8) global -> shared (through L1: .cg takes 16 bytes only), the same way.
template <int kBytes>
__device__ __forceinline__ void cp_async_small(void* dst, const void* src, bool valid) {
  static_assert(kBytes == 4 || kBytes == 8);
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(smem_addr(dst)), "l"(src), "n"(kBytes),
               "r"(valid ? kBytes : 0));
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

// Four e4m3 codes (byte 0 first) as four bf16 (two words: codes 0, 1 then 2, 3), each bf16(f32(value * scale)).
// scale256 is the block scale times kFp8Unscale: the decoded code / 256 and scale * 256 are exact, so the f32
// product is the exact product rounded once.
__device__ __forceinline__ uint2 dequant4(uint32_t q, float scale256) {
  const float4 v = fp8x4_to_float4_div256(q);
  return make_uint2(cvt_bf16x2(__fmul_rn(v.x, scale256), __fmul_rn(v.y, scale256)),
                    cvt_bf16x2(__fmul_rn(v.z, scale256), __fmul_rn(v.w, scale256)));
}

// ---- Tile shapes ------------------------------------------------------------------------------------------------

template <int BM, int BN, int BK, int WarpsM, int WarpsN, int Stages>
struct Tiles {
  static constexpr int kBM = BM, kBN = BN, kBK = BK, kWarpsN = WarpsN, kStages = Stages;
  static constexpr int kThreads = 32 * WarpsM * WarpsN;
  static constexpr int kWM = BM / WarpsM, kWN = BN / WarpsN;  // warp tile
  static constexpr int kMI = kWM / 16, kNJ = kWN / 8;          // mma tiles per warp
  static constexpr int kStride = BK + 8;  // shared row stride (elements): 8 ldmatrix rows hit 8 distinct 16-byte slots
  static constexpr int kStageElems = (BM + BN) * kStride;  // bf16 weights: A tile, then B tile
  static constexpr int kSmemBytes = Stages * kStageElems * 2;
  static constexpr int kKChunks = BK / 8;                 // 16-byte chunks per bf16 tile row
  static constexpr int kRowsPerPass = kThreads / kKChunks;  // tile rows one pass of the block copies
  static_assert(kWM % 16 == 0 && kWN % 16 == 0, "B fragments load in pairs of n8 tiles; gate and up halves too");
  static_assert(BK % 16 == 0 && kThreads % kKChunks == 0, "whole k16 steps, whole rows per pass");
  static_assert(BM % kRowsPerPass == 0 && BN % kRowsPerPass == 0, "whole passes per tile");
  static_assert(Stages >= 2, "a pipeline");

  // FP8 weights. A stage: A tile [BM][kStride] bf16, codes [BN][BK] bytes, scales [kScaleGroups] f32 (B rows
  // 8 g .. 8 g + 7); after the stages two dequantized B tiles [BN][kStride] bf16.
  static constexpr int kCodeChunks = BK / 16;  // 16-byte chunks per codes row
  static constexpr int kScaleGroups = BN / 8;
  static constexpr int kFp8StageBytes = BM * kStride * 2 + BN * BK + kScaleGroups * 4;
  static constexpr int kFp8SmemBytes = Stages * kFp8StageBytes + 2 * BN * kStride * 2;
  static constexpr int kConvIters = BN * kCodeChunks / kThreads;  // 16-code chunks each thread dequantizes per tile
  static_assert(128 % BK == 0, "FP8: a k tile inside one 128-column scale block");
  static_assert(BN % 32 == 0 && kThreads % BN == 0 && kConvIters * kThreads == BN * kCodeChunks,
                "FP8: a warp dequantizes one chunk of 32 consecutive rows");
  static_assert(kFp8StageBytes % 16 == 0, "FP8: 16-byte aligned stages");
  static_assert(Stages >= 3, "FP8: tile kt + 1 lands while tile kt is in use");

  // Byte offset of 16-byte chunk c (k bytes 16 c .. 16 c + 15) of codes row r. Rows are unpadded and the chunk sits
  // at position c ^ ((r / (128 / BK)) % kCodeChunks) of its row, so that both a quarter warp's copies (128
  // contiguous bytes: 128 / BK rows, every chunk) and its dequantization reads (chunk c of 8 consecutive rows,
  // 8 r % 8 == 0) hit 8 distinct 16-byte bank groups.
  __host__ __device__ static constexpr int code_offset(int r, int c) {
    return r * BK + (c ^ ((r / (128 / BK)) % kCodeChunks)) * 16;
  }
};
// Decode-sized groups (weight-bandwidth bound: weights read once per row tile): BM 32 or 64, long BK for bytes in
// flight. Prefill (compute bound): 128 x 128 x 32. Each fits two blocks per SM on the H100 / H200 (227 KB), with
// bf16 weights and with FP8 weights (86 KB, 104 KB, 76 KB).
using SmallTiles = Tiles<32, 128, 64, 1, 8, 4>;    // 90 KB of shared memory
using MediumTiles = Tiles<64, 128, 64, 2, 4, 4>;   // 108 KB
using LargeTiles = Tiles<128, 128, 32, 2, 4, 4>;   // 80 KB
// The same block tiles with 4 warps of twice the tile each (64 x 64 and 32 x 64 per warp): fewer ldmatrix per
// mma.sync (8 per 32 against 6 per 16 with 64 x 32 warp tiles), as shared-memory bandwidth is what a compute-bound
// tile runs out of first; more registers per thread (the accumulators alone are 128 at 64 x 64).
using MediumTiles4 = Tiles<64, 128, 64, 2, 2, 4>;  // 108 KB
using LargeTiles4 = Tiles<128, 128, 32, 2, 2, 4>;  // 80 KB

// ---- Kernel -----------------------------------------------------------------------------------------------------

// How a GEMM reads its weights.
enum class WLoad {
  kBf16,    // bf16 rows, copied into the B tile
  kFp8x16,  // e4m3 codes in 16-byte copies (k % 16 == 0)
  kFp8x8,   // e4m3 codes in 8-byte copies (k % 16 == 8: rows start 8-byte aligned only)
};

struct GemmParams {
  const uint16_t* a;            // [rows, k] bf16: A (gemm 1) or act (gemm 2)
  const void* w;                // [num_experts, w_rows, k] bf16 or e4m3; w_rows = 2 n gated, else n
  const float* w_scale;         // FP8: [num_experts, ceil(w_rows / 128), k_blocks]
  void* y;                      // [rows, n]: act bf16 (gated) or Y f32
  const int4* tiles;            // from the plan
  int64_t n, k;                 // output columns (gated: inter; W rows [0, n) gate, [n, 2 n) up), reduction length
  int64_t w_expert_stride;      // elements per expert in w
  int64_t scale_expert_stride;  // FP8: scales per expert
  int64_t k_blocks;             // FP8: ceil(k / 128)
  int n_tiles;
  // Gemm 1 reading x in place: A row r is row a_rows[r] of a (the pair's token); nullptr: row r itself.
  const int32_t* a_rows = nullptr;
};

// The row of a that valid tile row `row` (a row of the grouped matrices) reads.
__device__ __forceinline__ int64_t a_source_row(const GemmParams& p, int64_t row) {
  return p.a_rows != nullptr ? int64_t{__ldg(p.a_rows + row)} : row;
}

struct BRow {
  int64_t col, w_row;  // output column; weight row (col < n means valid)
};
// Row s of the B tile of the block whose output columns start at col0. Gated: warp column block s / kWN holds kHalf
// gate rows, then the kHalf up rows of the same columns. Rows 8 g .. 8 g + 7 are 8 consecutive weight rows.
template <class C, bool kGated>
__host__ __device__ inline BRow b_tile_row(int s, int64_t col0, int64_t n) {
  if constexpr (kGated) {
    constexpr int kHalf = C::kWN / 2;
    const int q = s % C::kWN;
    const int64_t col = col0 + (s / C::kWN) * kHalf + q % kHalf;
    return {col, col + (q >= kHalf ? n : 0)};
  } else {
    return {col0 + s, col0 + s};
  }
}

// Copies of the bf16 B tile: thread tid copies chunk kc of tile rows tid / kKChunks + i * kRowsPerPass.
template <class C, bool kGated>
struct Bf16BLoader {
  static constexpr int kIters = C::kBN / C::kRowsPerPass;
  const uint16_t* src[kIters];
  bool ok[kIters];
  int kc, row_in_pass;

  __device__ Bf16BLoader(const GemmParams& p, int expert, int64_t col0, int tid) {
    const uint16_t* w = static_cast<const uint16_t*>(p.w) + expert * p.w_expert_stride;
    kc = tid % C::kKChunks;
    row_in_pass = tid / C::kKChunks;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const BRow b = b_tile_row<C, kGated>(row_in_pass + i * C::kRowsPerPass, col0, p.n);
      ok[i] = b.col < p.n;
      src[i] = w + (ok[i] ? b.w_row : 0) * p.k + kc * 8;
    }
  }
  __device__ void load(uint16_t* bs, int64_t k_off, const GemmParams& p) const {
    const bool k_ok = k_off + kc * 8 < p.k;  // k % 8 == 0: a chunk is wholly inside or wholly past k
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const bool v = ok[i] && k_ok;
      cp_async16(bs + (row_in_pass + i * C::kRowsPerPass) * C::kStride + kc * 8, v ? src[i] + k_off : p.w, v);
    }
  }
};

// Copies of the FP8 B tile: thread tid copies kCB-byte chunk kc = tid % kChunksPerRow of codes rows
// tid / kChunksPerRow + i * kRowsPerPass (consecutive threads read consecutive bytes of a row); threads below
// kScaleGroups copy the scale of B rows 8 tid .. 8 tid + 7.
template <class C, bool kGated, int kCB>
struct Fp8BLoader {
  static constexpr int kChunksPerRow = C::kBK / kCB, kRowsPerPass = C::kThreads / kChunksPerRow;
  static constexpr int kIters = C::kBN / kRowsPerPass;
  static_assert(kCB == 16 || kCB == 8);
  static_assert(C::kThreads % kChunksPerRow == 0 && C::kBN % kRowsPerPass == 0, "whole passes per tile");
  static_assert(C::kThreads >= C::kScaleGroups);
  const uint8_t* src[kIters];
  int dst[kIters];  // byte offset in the codes tile
  bool ok[kIters];
  int k_byte;       // the chunk's first k within a tile
  const float* scale_src;  // k block 0 of the scale row of this thread's 8 B rows
  bool scale_ok;

  __device__ Fp8BLoader(const GemmParams& p, int expert, int64_t col0, int tid) {
    const uint8_t* w = static_cast<const uint8_t*>(p.w) + expert * p.w_expert_stride;
    const int kc = tid % kChunksPerRow, row_in_pass = tid / kChunksPerRow;
    k_byte = kc * kCB;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int s = row_in_pass + i * kRowsPerPass;
      const BRow b = b_tile_row<C, kGated>(s, col0, p.n);
      ok[i] = b.col < p.n;
      src[i] = w + (ok[i] ? b.w_row : 0) * p.k + k_byte;
      dst[i] = C::code_offset(s, k_byte / 16) + k_byte % 16;
    }
    scale_ok = false;
    scale_src = p.w_scale;
    if (tid < C::kScaleGroups) {
      const BRow b = b_tile_row<C, kGated>(8 * tid, col0, p.n);  // rows past n: all 8 (n % 8 == 0)
      scale_ok = b.col < p.n;
      if (scale_ok) scale_src = p.w_scale + expert * p.scale_expert_stride + (b.w_row / 128) * p.k_blocks;
    }
  }
  // The codes and scales of the k tile at k_off (a multiple of BK): codes past n or k are zeros, as are the scales
  // of rows past n.
  __device__ void load(unsigned char* codes, float* scales, int64_t k_off, const GemmParams& p, int tid) const {
    const bool k_ok = k_off + k_byte < p.k;  // k % 8 == 0, and k % 16 == 0 for 16-byte chunks
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const bool v = ok[i] && k_ok;
      if constexpr (kCB == 16) {
        cp_async16(codes + dst[i], v ? src[i] + k_off : p.w, v);
      } else {
        cp_async_small<8>(codes + dst[i], v ? src[i] + k_off : p.w, v);
      }
    }
    if (tid < C::kScaleGroups) {
      cp_async_small<4>(scales + tid, scale_ok ? scale_src + k_off / 128 : p.w_scale, scale_ok);
    }
  }
};

// Dequantizes one stage's codes into a bf16 B tile [BN][kStride]: thread tid converts 16-code chunk u / BN of row
// u % BN for u = tid + i * kThreads, so a quarter warp reads and writes chunk c of 8 consecutive rows.
template <class C>
__device__ __forceinline__ void dequant_tile(const unsigned char* codes, const float* scales, uint16_t* bs, int tid) {
#pragma unroll
  for (int i = 0; i < C::kConvIters; ++i) {
    const int u = tid + i * C::kThreads;
    const int r = u % C::kBN, c = u / C::kBN;
    const uint4 q = *reinterpret_cast<const uint4*>(codes + C::code_offset(r, c));
    const float s = scales[r / 8] * kFp8Unscale;
    const uint2 w0 = dequant4(q.x, s), w1 = dequant4(q.y, s), w2 = dequant4(q.z, s), w3 = dequant4(q.w, s);
    uint16_t* out = bs + r * C::kStride + c * 16;
    *reinterpret_cast<uint4*>(out) = make_uint4(w0.x, w0.y, w1.x, w1.y);
    *reinterpret_cast<uint4*>(out + 8) = make_uint4(w2.x, w2.y, w3.x, w3.y);
  }
}

// acc += A tile (as: [BM][kStride]) x B tile (bs: [BN][kStride])^T for the warp's part.
template <class C>
__device__ __forceinline__ void mma_k_tile(float (&acc)[C::kMI][C::kNJ][4], const uint16_t* as, const uint16_t* bs,
                                           int lane, int wm, int wn) {
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

template <class C, bool kGated, WLoad kW>
__global__ void __launch_bounds__(C::kThreads, 2) moe_gemm_kernel(GemmParams p) {
  extern __shared__ __align__(16) unsigned char gemm_smem[];
  const int4 tile = p.tiles[blockIdx.x / p.n_tiles];
  if (tile.x < 0) return;  // past the routed tiles: block-uniform, before any barrier
  const int64_t row0 = tile.y;
  const int rows = tile.z;
  const int n_tile = static_cast<int>(blockIdx.x % p.n_tiles);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / C::kWarpsN, wn = warp % C::kWarpsN;
  constexpr int kHalf = C::kWN / 2;  // gated: a warp's gate (then up) columns
  // Output columns of this block start at col0: BN of them, or BN / 2 when each needs a gate and an up row.
  const int64_t col0 = int64_t{n_tile} * (kGated ? C::kBN / 2 : C::kBN);

  // Thread tid copies chunk kc of A tile rows tid / kKChunks + i * kRowsPerPass; their global rows are fixed.
  constexpr int kAIters = C::kBM / C::kRowsPerPass;
  const int kc = tid % C::kKChunks, row_in_pass = tid / C::kKChunks;
  const uint16_t* a_src[kAIters];
  bool a_ok[kAIters];
#pragma unroll
  for (int i = 0; i < kAIters; ++i) {
    const int r = row_in_pass + i * C::kRowsPerPass;
    a_ok[i] = r < rows;  // rows past the expert's count are zeros (never another expert's rows)
    a_src[i] = p.a + (a_ok[i] ? a_source_row(p, row0 + r) : 0) * p.k + kc * 8;
  }
  const auto load_a = [&](uint16_t* as, int64_t k_off) {
    const bool k_ok = k_off + kc * 8 < p.k;  // k % 8 == 0: a chunk is wholly inside or wholly past k
#pragma unroll
    for (int i = 0; i < kAIters; ++i) {
      const bool ok = a_ok[i] && k_ok;
      cp_async16(as + (row_in_pass + i * C::kRowsPerPass) * C::kStride + kc * 8, ok ? a_src[i] + k_off : p.a, ok);
    }
  };

  float acc[C::kMI][C::kNJ][4];
#pragma unroll
  for (int i = 0; i < C::kMI; ++i) {
#pragma unroll
    for (int j = 0; j < C::kNJ; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
  }
  const int k_tiles = static_cast<int>((p.k + C::kBK - 1) / C::kBK);

  if constexpr (kW == WLoad::kBf16) {
    // Stage s: A tile at smem + s kStageElems, B tile after it.
    uint16_t* smem = reinterpret_cast<uint16_t*>(gemm_smem);
    const Bf16BLoader<C, kGated> b(p, tile.x, col0, tid);
    const auto load_stage = [&](int stage, int kt) {
      uint16_t* as = smem + stage * C::kStageElems;
      const int64_t k_off = int64_t{kt} * C::kBK;
      load_a(as, k_off);
      b.load(as + C::kBM * C::kStride, k_off, p);
    };
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
      mma_k_tile<C>(acc, as, as + C::kBM * C::kStride, lane, wm, wn);
    }
  } else {
    // Stage s at gemm_smem + s kFp8StageBytes: A tile, codes, scales. Dequantized B tile kt in bs[kt % 2].
    constexpr int kABytes = C::kBM * C::kStride * 2, kCodeBytes = C::kBN * C::kBK;
    const auto stage_at = [&](int stage) { return gemm_smem + stage * C::kFp8StageBytes; };
    uint16_t* const bs = reinterpret_cast<uint16_t*>(gemm_smem + C::kStages * C::kFp8StageBytes);
    const Fp8BLoader<C, kGated, kW == WLoad::kFp8x16 ? 16 : 8> b(p, tile.x, col0, tid);
    const auto load_stage = [&](int stage, int kt) {
      unsigned char* at = stage_at(stage);
      const int64_t k_off = int64_t{kt} * C::kBK;
      load_a(reinterpret_cast<uint16_t*>(at), k_off);
      b.load(at + kABytes, reinterpret_cast<float*>(at + kABytes + kCodeBytes), k_off, p, tid);
    };
    const auto dequant = [&](int kt) {
      const unsigned char* at = stage_at(kt % C::kStages);
      dequant_tile<C>(at + kABytes, reinterpret_cast<const float*>(at + kABytes + kCodeBytes),
                      bs + (kt & 1) * C::kBN * C::kStride, tid);
    };
    // One commit group per k tile (empty past the end): after the prologue wait_group<kStages - 2> means tile 0
    // has landed, and at step kt wait_group<kStages - 3> means tile kt + 1 has.
#pragma unroll
    for (int s = 0; s < C::kStages - 1; ++s) {
      if (s < k_tiles) load_stage(s, s);
      cp_async_commit();
    }
    cp_async_wait<C::kStages - 2>();
    __syncthreads();  // tile 0 visible to all
    dequant(0);
    for (int kt = 0; kt < k_tiles; ++kt) {
      cp_async_wait<C::kStages - 3>();
      // Tile kt + 1 and bs[kt % 2] visible to all; every warp is done with step kt - 1: its mma on stage kt - 1 and
      // bs[(kt + 1) % 2] (rewritten below) and, at step kt - 2, its dequantization of stage kt - 1 (refilled below).
      __syncthreads();
      const int next = kt + C::kStages - 1;
      if (next < k_tiles) load_stage(next % C::kStages, next);
      cp_async_commit();
      if (kt + 1 < k_tiles) dequant(kt + 1);
      mma_k_tile<C>(acc, reinterpret_cast<const uint16_t*>(stage_at(kt % C::kStages)),
                    bs + (kt & 1) * C::kBN * C::kStride, lane, wm, wn);
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

}  // namespace dsi::cuda::moe_gemm
