// Matmul kernel templates over SIMD traits V (cpu/simd_*.h). Included only by the cpu/isa_*.cc files, each
// compiled for one instruction set; everything is internal to that translation unit (anonymous namespace, no std
// templates), so no function compiled with AVX-512 can be picked by the linker for a generic caller.
//
// Layout: y[m, n] = x[m, k] w[n, k]^T. Both operands are read along k, so the register tile is a dot-product
// tile: MR activation rows x NR weight rows, each accumulator a vector of partial sums over k, reduced once at
// the end. Work is split over blocks of weight rows (OpenMP, static), so every weight row is read from memory
// once. bf16 weights are widened by a 16-bit shift; for many activation rows a block is first widened into an
// f32 panel (sized for L2) and reused by every row tile; for fewer rows it is widened on the fly (for m <= 4 this
// is a pure weight-streaming GEMV, memory-bandwidth bound).
#pragma once

#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/ops.h"

namespace dsi::cpu {
namespace {

inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }

inline float scalar_f32(const float* p) { return *p; }
inline float scalar_f32(const uint16_t* p) {
  const uint32_t bits = static_cast<uint32_t>(*p) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// sums[i * NR + j] = x[i, :k] . w[j, :k] for i < MR, j < NR (rows at the given strides), f32 accumulation.
template <class V, int MR, int NR, class WT>
inline void dot_tile(const float* x, int64_t x_stride, const WT* w, int64_t w_stride, int64_t k, float* sums) {
  using F = typename V::F;
  F acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = V::zero();
  int64_t p = 0;
  for (; p + V::kWidth <= k; p += V::kWidth) {
    F wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = V::load(w + j * w_stride + p);
    for (int i = 0; i < MR; ++i) {
      const F xv = V::load(x + i * x_stride + p);
      for (int j = 0; j < NR; ++j) acc[i][j] = V::fma(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) sums[i * NR + j] = V::reduce_add(acc[i][j]);
  for (; p < k; ++p) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) sums[i * NR + j] += x[i * x_stride + p] * scalar_f32(w + j * w_stride + p);
  }
}

// dot_tile with a run-time row count mr in [1, MaxMR] (sums keep the row pitch NR).
template <class V, int MaxMR, int NR, class WT>
inline void dot_tile_rows(int64_t mr, const float* x, int64_t x_stride, const WT* w, int64_t w_stride, int64_t k,
                          float* sums) {
  if constexpr (MaxMR > 1) {
    if (mr < MaxMR) return dot_tile_rows<V, MaxMR - 1, NR, WT>(mr, x, x_stride, w, w_stride, k, sums);
  }
  dot_tile<V, MaxMR, NR, WT>(x, x_stride, w, w_stride, k, sums);
}

// y rows [i0, i0 + mr) x weight rows [j0, j0 + rows) of one block; w points at weight row j0.
template <class V, class WT>
void matmul_block(const MatmulArgs& a, const WT* w, int64_t j0, int64_t rows) {
  constexpr int MR = V::kMatmulMr;
  constexpr int NR = V::kMatmulNr;
  float sums[MR * NR];
  for (int64_t i0 = 0; i0 < a.m; i0 += MR) {
    const int64_t mr = min_i64(MR, a.m - i0);
    const float* x = a.x + i0 * a.x_stride;
    for (int64_t jj = 0; jj < rows; jj += NR) {
      const int64_t nr = min_i64(NR, rows - jj);
      if (nr == NR) {
        dot_tile_rows<V, MR, NR, WT>(mr, x, a.x_stride, w + jj * a.k, a.k, a.k, sums);
      } else {
        float one[MR];
        for (int64_t j = 0; j < nr; ++j) {
          dot_tile_rows<V, MR, 1, WT>(mr, x, a.x_stride, w + (jj + j) * a.k, a.k, a.k, one);
          for (int64_t i = 0; i < mr; ++i) sums[i * NR + j] = one[i];
        }
      }
      for (int64_t i = 0; i < mr; ++i) {
        float* y = a.y + (i0 + i) * a.y_stride + j0 + jj;
        for (int64_t j = 0; j < nr; ++j) {
          float v = sums[i * NR + j];
          if (a.bias != nullptr) v += a.bias[j0 + jj + j];
          y[j] = a.accumulate ? y[j] + v : v;
        }
      }
    }
  }
}

// Widens rows x k bf16 weights to f32.
template <class V>
void widen_bf16(const uint16_t* src, int64_t count, float* dst) {
  int64_t p = 0;
  for (; p + V::kWidth <= count; p += V::kWidth) V::store(dst + p, V::load(src + p));
  for (; p < count; ++p) dst[p] = scalar_f32(src + p);
}

constexpr int64_t kPanelBytes = 256 * 1024;  // f32 weight block kept in L2 while all row tiles use it
// From this many activation rows on, a bf16 block is widened once into an f32 panel. Widening on the fly costs
// a zero-extend and a shift per vector but halves the bytes loaded, so on Zen 5 both are equal at m = 512 and on-the-fly wins
// clearly at m = 16; the panel is kept for CPUs with weaker shuffle throughput.
constexpr int64_t kWidenMinRows = 64;

template <class V>
void matmul_impl(const MatmulArgs& a) {
  constexpr int NR = V::kMatmulNr;
  const bool bf16 = a.w_dtype == DType::kBF16;
  const bool widen = bf16 && a.m >= kWidenMinRows;
  const int64_t threads = omp_get_max_threads();
  // Rows per block: fits the panel budget, a multiple of NR, and leaves >= 4 blocks per thread when n allows.
  int64_t rows_per_block = min_i64(64, kPanelBytes / (4 * max_i64(a.k, 1))) / NR * NR;
  rows_per_block = max_i64(NR, min_i64(rows_per_block, (a.n / (4 * threads)) / NR * NR));
  const int64_t num_blocks = (a.n + rows_per_block - 1) / rows_per_block;
  const bool parallel = threads > 1 && num_blocks > 1 && a.m * a.n * a.k >= (int64_t{1} << 16);
#pragma omp parallel if (parallel)
  {
    float* panel = widen ? static_cast<float*>(std::malloc(sizeof(float) * rows_per_block * a.k)) : nullptr;
    if (widen && panel == nullptr) std::abort();  // out of memory for a few hundred KiB
#pragma omp for schedule(static)
    for (int64_t b = 0; b < num_blocks; ++b) {
      const int64_t j0 = b * rows_per_block;
      const int64_t rows = min_i64(rows_per_block, a.n - j0);
      if (!bf16) {
        matmul_block<V>(a, static_cast<const float*>(a.w) + j0 * a.k, j0, rows);
      } else if (widen) {
        widen_bf16<V>(static_cast<const uint16_t*>(a.w) + j0 * a.k, rows * a.k, panel);
        matmul_block<V>(a, static_cast<const float*>(panel), j0, rows);
      } else {
        matmul_block<V>(a, static_cast<const uint16_t*>(a.w) + j0 * a.k, j0, rows);
      }
    }
    std::free(panel);
  }
}

}  // namespace
}  // namespace dsi::cpu
