// The grouped GEMM of moe_grouped.cu on Hopper's warpgroup tensor cores (wgmma; sm_90a only, included by
// moe_grouped.cu): the same problem, tile table and outputs as moe_grouped_gemm.cuh's mma.sync kernel, bf16 weights
// or FP8 weights dequantized to bf16 in shared memory (moe_wgmma_fp8_kernel, below).
//
// Block tile BM x 256 x 64, BM = 64 per warpgroup (one or two warpgroups, 128 or 256 threads). Each warpgroup
// multiplies its 64 rows by all 256 weight rows of the tile with wgmma m64n256k16 (f32 accumulators, 128 per
// thread), both operands read by the tensor cores straight from shared memory through matrix descriptors.
// Shared memory: kStages stages of [A tile BM x 64 | B tile 256 x 64] bf16, rows of 128 bytes in the 128-byte
// swizzle (16-byte chunk c of row r at chunk position c ^ (r % 8); stages 1024-byte aligned), filled by cp.async of
// every thread; the pipeline keeps kStages - 2 tiles in flight ahead of the one the tensor cores read, and one
// wgmma group in flight while the next tile's copies are issued:
//   step kt: wait for tile kt's copies, fence them into the async proxy, barrier (tile kt visible to every
//            warpgroup; every warpgroup has retired its wgmma of step kt - 2, whose stage the next copies refill),
//            copy tile kt + kStages - 2, issue the 4 wgmma of tile kt, wait until only they are in flight.
// Gated GEMM (gemm 1): tile rows 0-127 are the gate rows of output columns col0 .. col0 + 127 and rows 128-255 the
// up rows of the same columns, so that a thread's accumulators j (gate) and j + 16 (up) cover the same outputs.
// Accumulator i of a thread (lane l, warp w of its warpgroup): row 16 w + l / 4 (+ 8 for i % 4 >= 2), column
// 8 (i / 4) + 2 (l % 4) + i % 2 of the warpgroup's 64 x 256 product.
// Sums run over k in the tensor cores' order: results differ from the mma.sync kernel's in the last bits, and are
// the same from run to run.
#pragma once

#include <cstdint>

#include "kernels/cuda/moe_grouped_gemm.cuh"
#include "kernels/cuda/wgmma_ptx.cuh"

namespace dsi::cuda::moe_wgmma {

using moe_gemm::GemmParams;

template <int WG, int Stages>
struct WTiles {
  static constexpr int kWG = WG, kStages = Stages;
  static constexpr int kBM = 64 * WG, kBN = 256, kBK = 64;
  static constexpr int kThreads = 128 * WG;
  static constexpr int kABytes = kBM * 128, kBBytes = kBN * 128, kStageBytes = kABytes + kBBytes;
  static constexpr int kSmemBytes = Stages * kStageBytes + 1024;  // + the slack that aligns the stages to 1024
  static constexpr int kRowsPerPass = kThreads / 8;  // 8 threads copy a 128-byte row
  static constexpr int kAIters = kBM / kRowsPerPass, kBIters = kBN / kRowsPerPass;
  static_assert(kRowsPerPass % 8 == 0, "a thread's rows share their swizzle (row % 8)");
  static_assert(kStageBytes % 1024 == 0 && kABytes % 1024 == 0, "swizzle atoms 1024-byte aligned");
  static_assert(Stages >= 3, "a tile in flight beside the one in use and the one being retired");
};
using WgmmaLarge = WTiles<2, 4>;   // 128 x 256: 193 KB of shared memory
using WgmmaMedium = WTiles<1, 5>;  // 64 x 256: 201 KB

// The wgmma primitives (descriptors, fences, m64n256k16): wgmma_ptx.cuh.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
using wgmma::desc_sw128;
using wgmma::fence_acc;
using wgmma::fence_proxy_async;
using wgmma::wgmma_commit;
using wgmma::wgmma_fence;
using wgmma::wgmma_m64n256k16;
using wgmma::wgmma_wait;
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// Tile row s of the B tile at output column col0: {output column, weight row}. Gated: rows 0-127 gate, 128-255 up.
template <bool kGated>
__device__ __forceinline__ int2 wgmma_b_row(int s, int64_t col0, int64_t n, int64_t* w_row) {
  constexpr int kHalf = 128;
  const int64_t col = kGated ? col0 + s % kHalf : col0 + s;
  *w_row = col + (kGated && s >= kHalf ? n : 0);
  return make_int2(static_cast<int>(col - col0), col < n);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// The A tile's copies: thread tid copies 16-byte chunk c of tile rows r0 + i kRowsPerPass (all with r % 8 ==
// r0 % 8) into the swizzled slot c ^ (r % 8).
template <class C>
struct WgmmaALoader {
  const uint16_t* src[C::kAIters];
  bool ok[C::kAIters];
  uint32_t dst0;
  int c;
  __device__ WgmmaALoader(const GemmParams& p, int64_t row0, int rows, int tid) {
    c = tid & 7;
    const int r0 = tid >> 3;
    dst0 = r0 * 128 + ((c ^ (r0 & 7)) << 4);
#pragma unroll
    for (int i = 0; i < C::kAIters; ++i) {
      const int r = r0 + i * C::kRowsPerPass;
      ok[i] = r < rows;  // rows past the expert's count are zeros (never another expert's rows)
      src[i] = p.a + (ok[i] ? moe_gemm::a_source_row(p, row0 + r) : 0) * p.k + c * 8;
    }
  }
  __device__ void load(unsigned char* tile, int64_t k_off, const GemmParams& p) const {
    const bool k_ok = k_off + c * 8 < p.k;  // k % 8 == 0: a chunk is wholly inside or wholly past k
#pragma unroll
    for (int i = 0; i < C::kAIters; ++i) {
      const bool v = ok[i] && k_ok;
      moe_gemm::cp_async16(tile + dst0 + i * C::kRowsPerPass * 128, v ? src[i] + k_off : p.a, v);
    }
  }
};

// This block's row tile {expert or -1, first row, rows}, its first output column and its shared memory aligned to
// 1024 bytes (the swizzle atoms).
struct WgmmaBlock {
  int4 tile;
  int64_t col0;
  unsigned char* smem;
};
template <int kBN, bool kGated>
__device__ __forceinline__ WgmmaBlock wgmma_block(const GemmParams& p, unsigned char* raw_smem) {
  const uint32_t raw = moe_gemm::smem_addr(raw_smem);
  return {p.tiles[blockIdx.x / p.n_tiles],
          int64_t{static_cast<int>(blockIdx.x % p.n_tiles)} * (kGated ? kBN / 2 : kBN),
          raw_smem + ((1024 - (raw & 1023)) & 1023)};
}

// The 4 wgmma of a 64-wide k tile: the warpgroup's 64 rows of the A tile at a_tile, the B tile at b_tile.
__device__ __forceinline__ void wgmma_k_tile(float (&d)[128], uint32_t a_tile, uint32_t b_tile) {
  const uint64_t da = desc_sw128(a_tile), db = desc_sw128(b_tile);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) wgmma_m64n256k16(d, da + 2 * kk, db + 2 * kk);  // +32 bytes per k16 step
  wgmma_commit();
}

// Gated: act = bf16(silu(gate) * up); else Y = the f32 sums.
template <bool kGated>
__device__ __forceinline__ void wgmma_epilogue(const float (&d)[128], const GemmParams& p, int64_t row0, int rows,
                                               int64_t col0, int tid) {
  const int wg = tid >> 7, lane = tid & 31, warp = (tid >> 5) & 3;
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = wg * 64 + warp * 16 + h * 8 + g;
    if (r >= rows) continue;
    const int64_t row = row0 + r;
    if constexpr (kGated) {
      uint16_t* act = static_cast<uint16_t*>(p.y) + row * p.n;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int64_t col = col0 + j * 8 + 2 * t4;
        if (col >= p.n) continue;  // n % 8 == 0: col + 1 < n as well
        const float g0 = d[4 * j + 2 * h], g1 = d[4 * j + 2 * h + 1];
        const float u0 = d[4 * (j + 16) + 2 * h], u1 = d[4 * (j + 16) + 2 * h + 1];
        *reinterpret_cast<uint32_t*>(act + col) =
            moe_gemm::pack_bf16(g0 / (1.0f + expf(-g0)) * u0, g1 / (1.0f + expf(-g1)) * u1);
      }
    } else {
      float* y = static_cast<float*>(p.y) + row * p.n;
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        const int64_t col = col0 + j * 8 + 2 * t4;
        if (col < p.n) *reinterpret_cast<float2*>(y + col) = make_float2(d[4 * j + 2 * h], d[4 * j + 2 * h + 1]);
      }
    }
  }
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <class C, bool kGated>
__global__ void __launch_bounds__(C::kThreads, 1) moe_wgmma_kernel(GemmParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(128) unsigned char wgmma_smem[];
  const WgmmaBlock blk = wgmma_block<C::kBN, kGated>(p, wgmma_smem);
  if (blk.tile.x < 0) return;  // past the routed tiles: block-uniform, before any barrier
  const int4 tile = blk.tile;
  unsigned char* const smem = blk.smem;
  const uint32_t sbase = moe_gemm::smem_addr(smem);
  const int64_t row0 = tile.y, col0 = blk.col0;
  const int rows = tile.z;
  const int tid = threadIdx.x;
  const WgmmaALoader<C> a_load(p, row0, rows, tid);
  // B: chunk c of tile rows r0 + i kRowsPerPass, like A.
  const uint16_t* w = static_cast<const uint16_t*>(p.w) + tile.x * p.w_expert_stride;
  const uint16_t* b_src[C::kBIters];
  bool b_ok[C::kBIters];
#pragma unroll
  for (int i = 0; i < C::kBIters; ++i) {
    int64_t w_row;
    b_ok[i] = wgmma_b_row<kGated>((tid >> 3) + i * C::kRowsPerPass, col0, p.n, &w_row).y != 0;
    b_src[i] = w + (b_ok[i] ? w_row : 0) * p.k + a_load.c * 8;
  }
  const auto load_stage = [&](int stage, int kt) {
    const int64_t k_off = int64_t{kt} * C::kBK;
    unsigned char* st = smem + stage * C::kStageBytes;
    a_load.load(st, k_off, p);
    const bool k_ok = k_off + a_load.c * 8 < p.k;
#pragma unroll
    for (int i = 0; i < C::kBIters; ++i) {
      const bool v = b_ok[i] && k_ok;
      moe_gemm::cp_async16(st + C::kABytes + a_load.dst0 + i * C::kRowsPerPass * 128, v ? b_src[i] + k_off : p.w,
                           v);
    }
  };

  float d[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) d[i] = 0.0f;
  const int k_tiles = static_cast<int>((p.k + C::kBK - 1) / C::kBK);
  const int wg = tid >> 7;
  // A warpgroup whose 64 rows are all past the tile's rows (an expert's last, short tile) issues no wgmma: the
  // tensor cores then run only the other warpgroup's (it still copies and dequantizes its share).
  const bool busy = wg * 64 < rows;
  constexpr int kAhead = C::kStages - 2;
  // One commit group per k tile (empty past the end): at step kt, wait_group<kAhead - 1> means tile kt has landed.
#pragma unroll
  for (int s = 0; s < kAhead; ++s) {
    if (s < k_tiles) load_stage(s, s);
    moe_gemm::cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    moe_gemm::cp_async_wait<kAhead - 1>();
    fence_proxy_async();
    __syncthreads();
    const int next = kt + kAhead;
    if (next < k_tiles) load_stage(next % C::kStages, next);
    moe_gemm::cp_async_commit();
    const uint32_t st = sbase + (kt % C::kStages) * C::kStageBytes;
    if (busy) wgmma_k_tile(d, st + wg * 64 * 128, st + C::kABytes);
    wgmma_wait<1>();
  }
  wgmma_wait<0>();
  fence_acc(d);
  moe_gemm::cp_async_wait<0>();  // only empty groups remain; leave none behind
  wgmma_epilogue<kGated>(d, p, row0, rows, col0, tid);
#else
  __trap();  // the host launches this kernel on sm_90a devices only (moe_grouped.cu)
#endif
}

// FP8 weights (e4m3 codes, 128x128 block scales; k % 16 == 0). Shared memory: kStages stages of A tiles (as for
// bf16), of codes [256 rows][64 bytes] (16-byte chunk q of row r at chunk position q ^ ((r / 2) % 4): a quarter
// warp's dequantization reads of 8 rows hit 8 distinct bank groups) and of one scale per 8 B rows; then two bf16 B
// tiles in the 128-byte swizzle. Step kt, with one barrier:
//   wait for tile kt + 1's copies and for this warpgroup's wgmma of tile kt - 1, fence, barrier (tile kt's
//   dequantized B and A visible to all; every warpgroup done with B tile (kt + 1) % 2 and the stage refilled next),
//   copy tile kt + kStages - 1, issue the wgmma of tile kt, dequantize tile kt + 1 into the other B tile meanwhile.
// A weight is bf16(f32(code value * scale)), as in moe_grouped_gemm.cuh.
template <int WG, int Stages>
struct WFp8Tiles : WTiles<WG, Stages> {
  using B = WTiles<WG, Stages>;
  static constexpr int kCodeBytes = B::kBN * 64, kScales = B::kBN / 8;
  static constexpr int kAOff = 0, kCodeOff = Stages * B::kABytes, kScaleOff = kCodeOff + Stages * kCodeBytes;
  static constexpr int kBOff = (kScaleOff + Stages * kScales * 4 + 1023) / 1024 * 1024;
  static constexpr int kSmemBytes = kBOff + 2 * B::kBBytes + 1024;
  static constexpr int kCIters = B::kBN * 4 / B::kThreads;  // 16-byte code chunks each thread copies
  static constexpr int kDRows = B::kBN / B::kThreads;       // B rows each thread dequantizes
  static_assert(B::kThreads >= kScales && kCIters * B::kThreads == B::kBN * 4);
};
using WgmmaFp8Large = WFp8Tiles<2, 4>;   // 194 KB
using WgmmaFp8Medium = WFp8Tiles<1, 4>;  // 162 KB

template <class C, bool kGated>
__global__ void __launch_bounds__(C::kThreads, 1) moe_wgmma_fp8_kernel(GemmParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(128) unsigned char wgmma_smem[];
  const WgmmaBlock blk = wgmma_block<C::kBN, kGated>(p, wgmma_smem);
  if (blk.tile.x < 0) return;  // past the routed tiles: block-uniform, before any barrier
  const int4 tile = blk.tile;
  unsigned char* const smem = blk.smem;
  const uint32_t sbase = moe_gemm::smem_addr(smem);
  const int64_t row0 = tile.y, col0 = blk.col0;
  const int rows = tile.z;
  const int tid = threadIdx.x;
  const WgmmaALoader<C> a_load(p, row0, rows, tid);
  const uint8_t* w = static_cast<const uint8_t*>(p.w) + tile.x * p.w_expert_stride;
  // Codes: chunk u = tid + i kThreads is chunk u % 4 = tid % 4 of row u / 4.
  const int c_k = (tid & 3) * 16;  // the chunk's first k within a tile
  const uint8_t* c_src[C::kCIters];
  uint32_t c_dst[C::kCIters];
  bool c_ok[C::kCIters];
#pragma unroll
  for (int i = 0; i < C::kCIters; ++i) {
    const int u = tid + i * C::kThreads, r = u >> 2, q = u & 3;  // q * 16 == c_k
    int64_t w_row;
    c_ok[i] = wgmma_b_row<kGated>(r, col0, p.n, &w_row).y != 0;
    c_src[i] = w + (c_ok[i] ? w_row : 0) * p.k + c_k;
    c_dst[i] = r * 64 + ((q ^ ((r >> 1) & 3)) << 4);
  }
  // Scales: thread tid < kScales copies the scale of B rows 8 tid .. 8 tid + 7 (one 128-row block: n % 8 == 0).
  const float* s_src = p.w_scale;
  bool s_ok = false;
  if (tid < C::kScales) {
    int64_t w_row;
    s_ok = wgmma_b_row<kGated>(8 * tid, col0, p.n, &w_row).y != 0;
    if (s_ok) s_src = p.w_scale + tile.x * p.scale_expert_stride + (w_row / 128) * p.k_blocks;
  }
  const auto load_stage = [&](int stage, int kt) {
    const int64_t k_off = int64_t{kt} * C::kBK;
    a_load.load(smem + C::kAOff + stage * C::kABytes, k_off, p);
    unsigned char* codes = smem + C::kCodeOff + stage * C::kCodeBytes;
#pragma unroll
    for (int i = 0; i < C::kCIters; ++i) {
      const bool v = c_ok[i] && k_off + c_k < p.k;  // k % 16 == 0: a chunk is wholly inside or wholly past k
      moe_gemm::cp_async16(codes + c_dst[i], v ? c_src[i] + k_off : p.w, v);
    }
    if (tid < C::kScales) {
      moe_gemm::cp_async_small<4>(smem + C::kScaleOff + (stage * C::kScales + tid) * 4,
                                  s_ok ? s_src + k_off / 128 : p.w_scale, s_ok);
    }
  };
  // Tile kt's codes (stage kt % kStages) into bf16 B tile kt % 2: thread tid converts rows tid + i kThreads.
  const auto dequant = [&](int kt) {
    const int stage = kt % C::kStages;
    const unsigned char* codes = smem + C::kCodeOff + stage * C::kCodeBytes;
    const float* scales = reinterpret_cast<const float*>(smem + C::kScaleOff) + stage * C::kScales;
    unsigned char* bt = smem + C::kBOff + (kt & 1) * C::kBBytes;
#pragma unroll
    for (int i = 0; i < C::kDRows; ++i) {
      const int r = tid + i * C::kThreads;
      const float s = scales[r >> 3] * kFp8Unscale;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const uint4 v = *reinterpret_cast<const uint4*>(codes + r * 64 + ((q ^ ((r >> 1) & 3)) << 4));
        const uint2 w0 = moe_gemm::dequant4(v.x, s), w1 = moe_gemm::dequant4(v.y, s);
        const uint2 w2 = moe_gemm::dequant4(v.z, s), w3 = moe_gemm::dequant4(v.w, s);
        const int c0 = 2 * q, c1 = 2 * q + 1;  // the two 8-element chunks of these 16 codes
        *reinterpret_cast<uint4*>(bt + r * 128 + ((c0 ^ (r & 7)) << 4)) = make_uint4(w0.x, w0.y, w1.x, w1.y);
        *reinterpret_cast<uint4*>(bt + r * 128 + ((c1 ^ (r & 7)) << 4)) = make_uint4(w2.x, w2.y, w3.x, w3.y);
      }
    }
  };

  float d[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) d[i] = 0.0f;
  const int k_tiles = static_cast<int>((p.k + C::kBK - 1) / C::kBK);
  const int wg = tid >> 7;
  // A warpgroup whose 64 rows are all past the tile's rows (an expert's last, short tile) issues no wgmma: the
  // tensor cores then run only the other warpgroup's (it still copies and dequantizes its share).
  const bool busy = wg * 64 < rows;
  // One commit group per k tile (empty past the end). Prologue: tiles 0 .. kStages - 2, then tile 0 dequantized.
#pragma unroll
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    moe_gemm::cp_async_commit();
  }
  moe_gemm::cp_async_wait<C::kStages - 2>();
  __syncthreads();  // tile 0's codes visible to all
  dequant(0);
  for (int kt = 0; kt < k_tiles; ++kt) {
    moe_gemm::cp_async_wait<C::kStages - 3>();  // tile kt + 1 (and tile kt's A) landed
    wgmma_wait<0>();                            // this warpgroup's wgmma of tile kt - 1 retired
    fence_proxy_async();                        // the A copies and the dequantized B tile, for the tensor cores
    __syncthreads();
    const int next = kt + C::kStages - 1;
    if (next < k_tiles) load_stage(next % C::kStages, next);
    moe_gemm::cp_async_commit();
    if (busy) {
      wgmma_k_tile(d, sbase + C::kAOff + (kt % C::kStages) * C::kABytes + wg * 64 * 128,
                   sbase + C::kBOff + (kt & 1) * C::kBBytes);
    }
    if (kt + 1 < k_tiles) dequant(kt + 1);
  }
  wgmma_wait<0>();
  fence_acc(d);
  moe_gemm::cp_async_wait<0>();  // only empty groups remain; leave none behind
  wgmma_epilogue<kGated>(d, p, row0, rows, col0, tid);
#else
  __trap();  // the host launches this kernel on sm_90a devices only (moe_grouped.cu)
#endif
}

}  // namespace dsi::cuda::moe_wgmma
