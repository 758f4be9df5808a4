// Flash-attention-2 prefill on tensor cores (the contract is in cuda_attention.h). Grid (query head, query tile,
// split); 4 warps, warp w owns query rows [16 w, 16 w + 16) of the block's 64-row tile.
//   Q: the warp's A fragments for all of head_dim, read once from f32 memory and rounded to bf16 (registers).
//   K/V: 64-key tiles in shared memory as bf16 [key][dim] (rows padded by 8 elements: 16 mod 128 bytes, so the
//     8 row addresses of an ldmatrix hit distinct banks), double buffered; thread (key tid / 2, half tid % 2)
//     loads the 16-byte chunks half, half + 2, ... of its key's K and V rows (one block-table lookup per key,
//     done a tile ahead).
//   S = Q K^T: per 16-dim step, ldmatrix.x4 of K gives the B fragments of two 8-key n-tiles.
//   Online softmax on the C fragments (rows g and g + 8 of the warp, lane quad = one row), exp2 domain.
//   O += P V: the C fragments of two adjacent n-tiles are the A fragment of one 16-key step (rounded to bf16);
//     V's B fragments by ldmatrix.x4.trans.
//   End: O / l as f32 at the output strides, or with splits (O, m, l) to a workspace merged by flash_combine.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstring>

#include "kernels/cuda/cuda_attention.h"
#include "kernels/cuda/cuda_check.h"

namespace dsi::cuda {
namespace {

constexpr int kThreads = 128;  // 4 warps
constexpr int kRows = 64;      // query rows per block (16 per warp)
constexpr int kKeys = 64;      // keys per K/V tile
constexpr int kMaxSplits = 32;
constexpr int kMinTilesPerSplit = 8;
constexpr int kMinChunkTokens = 16;  // mean tokens per chunk for paged_attention to pick this kernel
constexpr float kLog2e = 1.4426950408889634f;

enum class Src { kPaged, kBf16, kF32 };

template <int kD, int kDv>
struct Smem {
  uint16_t k[2][kKeys][kD + 8];
  uint16_t v[2][kKeys][kDv + 8];
  int max_pos[kThreads / 32];
};

struct FlashParams {
  PagedAttentionArgs a;
  int64_t group;  // query heads per kv head
  int num_chunks, tiles_per_chunk;
  int splits;
  int64_t split_len;  // keys per split, a multiple of kKeys
  float scale_log2;   // scale * log2(e)
  float* ws_o;        // splits > 1: [num_tokens, num_q_heads, splits, v_dim]
  float* ws_ml;       // splits > 1: [num_tokens, num_q_heads, splits, 2] (m in the log2 domain, l)
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
// c += a b: a = 16x16 (row), b = 16x8 (col), bf16 in, f32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 16 bytes global -> shared; valid = false zero-fills the destination (src is then not read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_async_wait_1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

// Two floats as a bf16 pair (lo in the low half: the lower column of a fragment), round to nearest even.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t r;
  memcpy(&r, &v, sizeof(r));
  return r;
}

// Cache row (paged) or position (contiguous) of key p; -1 from `end` on (those keys are zero-filled).
template <Src kSrc>
__device__ __forceinline__ int64_t key_row(const PagedAttentionArgs& a, const int32_t* table, int64_t p,
                                           int64_t end) {
  if (p >= end) return -1;
  if constexpr (kSrc == Src::kPaged) {
    const uint32_t bs = static_cast<uint32_t>(a.block_size), pu = static_cast<uint32_t>(p);
    const uint32_t b = pu / bs;
    return int64_t{table[b]} * a.block_size + (pu - b * bs);
  } else {
    return p;
  }
}

// This thread's part of a K/V tile: key r = tid / 2 of the tile (cache row `row`, -1: zeros), 16-byte chunks
// half, half + 2, ... (8 elements each) of its K row (kD / 16 chunks) and V row (kDv / 16).
template <int kD, int kDv, Src kSrc>
__device__ __forceinline__ void load_kv(Smem<kD, kDv>& sm, int buf, int64_t row, const void* kbase,
                                        const void* vbase, int64_t k_stride, int64_t v_stride) {
  const int r = threadIdx.x >> 1, half = threadIdx.x & 1;
  if constexpr (kSrc == Src::kF32) {
    const float* k = static_cast<const float*>(kbase) + (row >= 0 ? row : 0) * k_stride;
    const float* v = static_cast<const float*>(vbase) + (row >= 0 ? row : 0) * v_stride;
    auto convert = [&](const float* src, uint16_t* dst) {
      uint4 w = make_uint4(0u, 0u, 0u, 0u);
      if (row >= 0) {
        const float4 x = *reinterpret_cast<const float4*>(src);
        const float4 y = *reinterpret_cast<const float4*>(src + 4);
        w = make_uint4(pack_bf16(x.x, x.y), pack_bf16(x.z, x.w), pack_bf16(y.x, y.y), pack_bf16(y.z, y.w));
      }
      *reinterpret_cast<uint4*>(dst) = w;
    };
#pragma unroll 4
    for (int j = 0; j < kD / 16; ++j) convert(k + (half + 2 * j) * 8, &sm.k[buf][r][(half + 2 * j) * 8]);
#pragma unroll 4
    for (int j = 0; j < kDv / 16; ++j) convert(v + (half + 2 * j) * 8, &sm.v[buf][r][(half + 2 * j) * 8]);
  } else {
    const uint16_t* k = static_cast<const uint16_t*>(kbase) + (row >= 0 ? row : 0) * k_stride;
    const uint16_t* v = static_cast<const uint16_t*>(vbase) + (row >= 0 ? row : 0) * v_stride;
#pragma unroll
    for (int j = 0; j < kD / 16; ++j) {
      cp_async16(&sm.k[buf][r][(half + 2 * j) * 8], k + (half + 2 * j) * 8, row >= 0);
    }
#pragma unroll
    for (int j = 0; j < kDv / 16; ++j) {
      cp_async16(&sm.v[buf][r][(half + 2 * j) * 8], v + (half + 2 * j) * 8, row >= 0);
    }
  }
}

// Blocks per SM the registers must allow: 3 (<= 168 registers) for bf16 K/V up to head_dim 128 (shared memory
// 37 or 70 KB), else 2 (the f32 loads need more registers; head_dim 192 takes 86 KB of shared memory).
template <int kD, Src kSrc>
constexpr int kMinBlocks = kSrc != Src::kF32 && kD <= 128 ? 3 : 2;

template <int kD, int kDv, Src kSrc>
__global__ void __launch_bounds__(kThreads, kMinBlocks<kD, kSrc>) flash_prefill_kernel(FlashParams P) {
  static_assert(kD % 16 == 0 && kDv % 16 == 0 && kKeys == 64 && kRows == 16 * (kThreads / 32));
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem<kD, kDv>& sm = *reinterpret_cast<Smem<kD, kDv>*>(smem_raw);
  const PagedAttentionArgs& a = P.a;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;  // fragment row (and row + 8), column pair
  const int64_t h = blockIdx.x, kvh = h / P.group;
  const int split = blockIdx.z;
  // The heaviest tiles (last of their chunk: the most keys) have the lowest blockIdx.y and start first.
  const int chunk = static_cast<int>(blockIdx.y % P.num_chunks);
  const int tile = P.tiles_per_chunk - 1 - static_cast<int>(blockIdx.y / P.num_chunks);
  int64_t row0 = int64_t{tile} * kRows, row_end = a.num_tokens;
  if (a.chunk_starts != nullptr) {
    row0 += a.chunk_starts[chunk];
    row_end = a.chunk_starts[chunk + 1];
  }
  if (row0 >= row_end) return;  // a shorter chunk than the longest

  // This thread's two query rows; rows past the chunk's end have position -1 (every key masked, not stored).
  const int64_t tok_lo = row0 + warp * 16 + g, tok_hi = tok_lo + 8;
  const bool ok_lo = tok_lo < row_end, ok_hi = tok_hi < row_end;
  const int pos_lo = ok_lo ? a.token_pos[tok_lo] : -1;
  const int pos_hi = ok_hi ? a.token_pos[tok_hi] : -1;
  int warp_max = max(pos_lo, pos_hi);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) warp_max = max(warp_max, __shfl_xor_sync(0xffffffffu, warp_max, o));
  if (lane == 0) sm.max_pos[warp] = warp_max;
  __syncthreads();
  int block_max = sm.max_pos[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) block_max = max(block_max, sm.max_pos[w]);
  // This split's keys [start, end): the tile's causal bound cut to the split.
  const int64_t start = split * P.split_len;
  const int64_t end = min(int64_t{block_max} + 1, start + P.split_len);
  const int64_t ws_lo = (tok_lo * a.num_q_heads + h) * P.splits + split;
  const int64_t ws_hi = (tok_hi * a.num_q_heads + h) * P.splits + split;
  if (start >= end) {  // splits > 1 here (split 0 holds key 0): an empty partial result
    if (t4 == 0 && ok_lo) {
      P.ws_ml[ws_lo * 2] = -INFINITY;
      P.ws_ml[ws_lo * 2 + 1] = 0.0f;
    }
    if (t4 == 0 && ok_hi) {
      P.ws_ml[ws_hi * 2] = -INFINITY;
      P.ws_ml[ws_hi * 2 + 1] = 0.0f;
    }
    return;
  }
  // Key p is visible to a row iff p <= its limit (its position, cut to the split's end).
  const int lim_lo = static_cast<int>(min(int64_t{pos_lo}, end - 1));
  const int lim_hi = static_cast<int>(min(int64_t{pos_hi}, end - 1));
  const int warp_lim = static_cast<int>(min(int64_t{warp_max}, end - 1));  // = max of lim_lo, lim_hi over the warp

  const int32_t* table = nullptr;
  const void* kbase;
  const void* vbase;
  int64_t k_stride, v_stride;
  if constexpr (kSrc == Src::kPaged) {
    table = a.block_tables + int64_t{a.token_seq[row0]} * a.max_blocks;
    kbase = a.k_pool + kvh * a.k_head_stride;
    vbase = a.v_pool + kvh * a.v_head_stride;
    k_stride = a.k_row_width;
    v_stride = a.v_row_width;
  } else {
    // Contiguous K/V: this chunk's context starts kv0 rows in (kv_starts), else at row 0.
    const int64_t kv0 = a.kv_starts != nullptr ? int64_t{a.kv_starts[chunk]} - a.kv_starts[0] : 0;
    k_stride = a.k_token_stride;
    v_stride = a.v_token_stride;
    if constexpr (kSrc == Src::kBf16) {
      kbase = a.k_bf16 + kvh * a.k_head_stride + kv0 * k_stride;
      vbase = a.v_bf16 + kvh * a.v_head_stride + kv0 * v_stride;
    } else {
      kbase = a.k_f32 + kvh * a.k_head_stride + kv0 * k_stride;
      vbase = a.v_f32 + kvh * a.v_head_stride + kv0 * v_stride;
    }
  }
  const int n_tiles = static_cast<int>((end - start + kKeys - 1) / kKeys);
  const int my_key = tid >> 1;
  int64_t row = key_row<kSrc>(a, table, start + my_key, end);
  load_kv<kD, kDv, kSrc>(sm, 0, row, kbase, vbase, k_stride, v_stride);
  cp_async_commit();
  row = key_row<kSrc>(a, table, start + kKeys + my_key, end);  // one tile ahead of the loads

  // Q fragments (A of m16n8k16, per 16-dim step ks): {row g, cols 2 t4 .. +1}, {row g + 8, same}, {row g, cols
  // 2 t4 + 8 .. +9}, {row g + 8, same}.
  uint32_t qf[kD / 16][4];
  {
    const float* q_lo = a.q + (ok_lo ? tok_lo : 0) * a.q_token_stride + h * a.q_head_stride;
    const float* q_hi = a.q + (ok_hi ? tok_hi : 0) * a.q_token_stride + h * a.q_head_stride;
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      const int c = ks * 16 + 2 * t4;
      qf[ks][0] = ok_lo ? pack_bf16(q_lo[c], q_lo[c + 1]) : 0u;
      qf[ks][1] = ok_hi ? pack_bf16(q_hi[c], q_hi[c + 1]) : 0u;
      qf[ks][2] = ok_lo ? pack_bf16(q_lo[c + 8], q_lo[c + 9]) : 0u;
      qf[ks][3] = ok_hi ? pack_bf16(q_hi[c + 8], q_hi[c + 9]) : 0u;
    }
  }

  float o[kDv / 8][4];  // C fragments of O: n-tile j = dims [8 j, 8 j + 8)
#pragma unroll
  for (int j = 0; j < kDv / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m_lo = -INFINITY, m_hi = -INFINITY;  // running max (log2 domain) of rows g and g + 8
  float l_lo = 0.0f, l_hi = 0.0f;            // this lane's part of the running sums (the quad adds up at the end)

  for (int it = 0; it < n_tiles; ++it) {
    const int buf = it & 1;
    const int k0 = static_cast<int>(start) + it * kKeys;
    if (it + 1 < n_tiles) {
      load_kv<kD, kDv, kSrc>(sm, buf ^ 1, row, kbase, vbase, k_stride, v_stride);
      row = key_row<kSrc>(a, table, int64_t{k0} + 2 * kKeys + my_key, end);
    }
    cp_async_commit();
    cp_async_wait_1();  // this tile's group is complete
    __syncthreads();
    if (k0 <= warp_lim) {  // else every key of the tile is past this warp's rows
      // S = Q K^T: s[n] = keys [k0 + 8 n, k0 + 8 n + 8). ldmatrix.x4 matrices: keys 16 np + 0..7 at dims
      // 16 ks + 0..7 / + 8..15 (b0, b1 of n-tile 2 np), keys 16 np + 8..15 likewise (n-tile 2 np + 1).
      float s[kKeys / 8][4];
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kD / 16; ++ks) {
#pragma unroll
        for (int np = 0; np < kKeys / 16; ++np) {
          uint32_t b[4];
          ldmatrix_x4(b, &sm.k[buf][np * 16 + (lane & 7) + ((lane >> 4) << 3)][ks * 16 + ((lane >> 3) & 1) * 8]);
          mma_bf16(s[2 * np], qf[ks], b[0], b[1]);
          mma_bf16(s[2 * np + 1], qf[ks], b[2], b[3]);
        }
      }
      // Scale, causal mask, tile max per row (C fragment: s[n][0..1] row g keys 8 n + 2 t4 + 0..1, [2..3] row g + 8).
      float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int key = k0 + n * 8 + 2 * t4 + e;
          s[n][e] = key <= lim_lo ? s[n][e] * P.scale_log2 : -INFINITY;
          s[n][2 + e] = key <= lim_hi ? s[n][2 + e] * P.scale_log2 : -INFINITY;
          mx_lo = fmaxf(mx_lo, s[n][e]);
          mx_hi = fmaxf(mx_hi, s[n][2 + e]);
        }
      }
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 1));
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 2));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 1));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 2));
      const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
      // No visible key yet: subtract 0 (p = 0, alpha = 0) instead of -inf (NaN).
      const float mu_lo = mn_lo == -INFINITY ? 0.0f : mn_lo, mu_hi = mn_hi == -INFINITY ? 0.0f : mn_hi;
      const float alpha_lo = exp2f(m_lo - mu_lo), alpha_hi = exp2f(m_hi - mu_hi);
      m_lo = mn_lo;
      m_hi = mn_hi;
      float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
      for (int n = 0; n < kKeys / 8; ++n) {
        s[n][0] = exp2f(s[n][0] - mu_lo);
        s[n][1] = exp2f(s[n][1] - mu_lo);
        s[n][2] = exp2f(s[n][2] - mu_hi);
        s[n][3] = exp2f(s[n][3] - mu_hi);
        sum_lo += s[n][0] + s[n][1];
        sum_hi += s[n][2] + s[n][3];
      }
      l_lo = l_lo * alpha_lo + sum_lo;
      l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
      for (int j = 0; j < kDv / 8; ++j) {
        o[j][0] *= alpha_lo;
        o[j][1] *= alpha_lo;
        o[j][2] *= alpha_hi;
        o[j][3] *= alpha_hi;
      }
      // O += P V over 16-key steps kk: A = {s[2 kk][0..1], s[2 kk][2..3], s[2 kk + 1][0..1], s[2 kk + 1][2..3]}.
      // ldmatrix.x4.trans matrices: keys 16 kk + 0..7 / + 8..15 at dims 16 jj + 0..7 (b0, b1 of n-tile 2 jj),
      // then at dims 16 jj + 8..15 (n-tile 2 jj + 1).
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int jj = 0; jj < kDv / 16; ++jj) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, &sm.v[buf][kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8][jj * 16 + (lane >> 4) * 8]);
          mma_bf16(o[2 * jj], pa, b[0], b[1]);
          mma_bf16(o[2 * jj + 1], pa, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the next iteration's loads overwrite this buffer
  }

  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);
  if (P.splits == 1) {  // every stored row saw key 0: l > 0
    const float inv_lo = 1.0f / l_lo, inv_hi = 1.0f / l_hi;
    float* out_lo = a.out + tok_lo * a.out_token_stride + h * a.out_head_stride;
    float* out_hi = a.out + tok_hi * a.out_token_stride + h * a.out_head_stride;
#pragma unroll
    for (int j = 0; j < kDv / 8; ++j) {
      const int d = j * 8 + 2 * t4;
      if (ok_lo) {
        out_lo[d] = o[j][0] * inv_lo;
        out_lo[d + 1] = o[j][1] * inv_lo;
      }
      if (ok_hi) {
        out_hi[d] = o[j][2] * inv_hi;
        out_hi[d + 1] = o[j][3] * inv_hi;
      }
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < kDv / 8; ++j) {
    const int d = j * 8 + 2 * t4;
    if (ok_lo) *reinterpret_cast<float2*>(P.ws_o + ws_lo * kDv + d) = make_float2(o[j][0], o[j][1]);
    if (ok_hi) *reinterpret_cast<float2*>(P.ws_o + ws_hi * kDv + d) = make_float2(o[j][2], o[j][3]);
  }
  if (t4 == 0 && ok_lo) {
    P.ws_ml[ws_lo * 2] = m_lo;
    P.ws_ml[ws_lo * 2 + 1] = l_lo;
  }
  if (t4 == 0 && ok_hi) {
    P.ws_ml[ws_hi * 2] = m_hi;
    P.ws_ml[ws_hi * 2 + 1] = l_hi;
  }
}

// One block per (token, head): out = sum_s 2^(m_s - M) O_s / sum_s 2^(m_s - M) l_s over the splits that saw a key
// (l > 0; split 0 always did).
__global__ void flash_combine_kernel(FlashParams P) {
  const PagedAttentionArgs& a = P.a;
  const int64_t row = blockIdx.x;  // token * num_q_heads + head
  const int64_t t = row / a.num_q_heads, h = row % a.num_q_heads;
  const float* ml = P.ws_ml + row * P.splits * 2;
  float mx = -INFINITY;
  for (int s = 0; s < P.splits; ++s) {
    if (ml[2 * s + 1] > 0.0f) mx = fmaxf(mx, ml[2 * s]);
  }
  float denom = 0.0f;
  for (int s = 0; s < P.splits; ++s) {
    if (ml[2 * s + 1] > 0.0f) denom += exp2f(ml[2 * s] - mx) * ml[2 * s + 1];
  }
  const float inv = 1.0f / denom;
  float* out = a.out + t * a.out_token_stride + h * a.out_head_stride;
  for (int64_t d = threadIdx.x; d < a.v_dim; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < P.splits; ++s) {
      if (ml[2 * s + 1] > 0.0f) acc += exp2f(ml[2 * s] - mx) * P.ws_o[(row * P.splits + s) * a.v_dim + d];
    }
    out[d] = acc * inv;
  }
}

template <int kD, int kDv, Src kSrc>
Status launch(CudaContext& ctx, const FlashParams& P, const dim3& grid) {
  const size_t smem = sizeof(Smem<kD, kDv>);
  auto* kernel = flash_prefill_kernel<kD, kDv, kSrc>;
  DSI_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  DSI_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
  kernel<<<grid, kThreads, smem, ctx.stream()>>>(P);
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

template <int kD, int kDv>
Status launch_src(CudaContext& ctx, const FlashParams& P, const dim3& grid) {
  if (P.a.k_pool != nullptr) return launch<kD, kDv, Src::kPaged>(ctx, P, grid);
  if (P.a.k_bf16 != nullptr) return launch<kD, kDv, Src::kBf16>(ctx, P, grid);
  return launch<kD, kDv, Src::kF32>(ctx, P, grid);
}

template <int kD>
Status launch_dv(CudaContext& ctx, const FlashParams& P, const dim3& grid) {
  return P.a.v_dim == 64 ? launch_src<kD, 64>(ctx, P, grid) : launch_src<kD, 128>(ctx, P, grid);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Chunks and query tiles per chunk of the grid.
void chunk_layout(const PagedAttentionArgs& a, int64_t* num_chunks, int64_t* tiles_per_chunk) {
  *num_chunks = a.chunk_starts != nullptr ? a.num_chunks : 1;
  const int64_t longest = a.chunk_starts != nullptr ? a.max_chunk_tokens : a.num_tokens;
  *tiles_per_chunk = (longest + kRows - 1) / kRows;
}

}  // namespace

bool flash_prefill_supported(const PagedAttentionArgs& a) {
  const bool paged = a.k_pool != nullptr, bf16 = a.k_bf16 != nullptr, f32 = a.k_f32 != nullptr;
  if (int{paged} + int{bf16} + int{f32} != 1) return false;
  if (a.head_dim != 64 && a.head_dim != 128 && a.head_dim != 192) return false;
  if (a.v_dim != 64 && a.v_dim != 128) return false;
  if (a.num_tokens <= 0 || a.num_q_heads <= 0 || a.num_kv_heads <= 0 || a.num_q_heads % a.num_kv_heads != 0) {
    return false;
  }
  if (a.q == nullptr || a.out == nullptr || a.token_pos == nullptr) return false;
  if (a.chunk_starts != nullptr) {
    if (a.num_chunks <= 0 || a.max_chunk_tokens <= 0) return false;
  } else if (!a.single_sequence) {
    return false;
  }
  if (a.kv_starts != nullptr && (paged || a.chunk_starts == nullptr)) return false;
  int64_t chunks = 0, tiles = 0;
  chunk_layout(a, &chunks, &tiles);
  if (chunks * tiles > 65535) return false;  // grid y
  const void* k = paged ? static_cast<const void*>(a.k_pool) : bf16 ? static_cast<const void*>(a.k_bf16) : a.k_f32;
  const void* v = paged ? static_cast<const void*>(a.v_pool) : bf16 ? static_cast<const void*>(a.v_bf16) : a.v_f32;
  if (k == nullptr || v == nullptr || !aligned16(k) || !aligned16(v)) return false;
  const int64_t e = f32 ? 4 : 8;  // elements per 16 bytes
  const int64_t k_row = paged ? a.k_row_width : a.k_token_stride, v_row = paged ? a.v_row_width : a.v_token_stride;
  if (k_row % e != 0 || v_row % e != 0 || a.k_head_stride % e != 0 || a.v_head_stride % e != 0) return false;
  if (paged && (a.block_tables == nullptr || a.token_seq == nullptr || a.block_size <= 0)) return false;
  return true;
}

bool picks_flash_prefill(const PagedAttentionArgs& a, const PagedAttentionOptions& options) {
  if (!options.flash_prefill || !flash_prefill_supported(a)) return false;
  const int64_t chunks = a.chunk_starts != nullptr ? a.num_chunks : 1;
  return a.k_bf16 != nullptr || a.num_tokens >= kMinChunkTokens * chunks;
}

Status flash_prefill_attention(CudaContext& ctx, const PagedAttentionArgs& a) {
  if (!flash_prefill_supported(a)) {
    return Status::Unsupported(str_cat("flash_prefill_attention: head_dim ", a.head_dim, " v_dim ", a.v_dim,
                                       " (supported: 64, 128, 192 / 64, 128), 16-byte aligned K/V rows and heads,"
                                       " chunk_starts or single_sequence, one K/V source"));
  }
  if (a.max_kv_len <= 0) return Status::InvalidArgument("flash_prefill_attention: max_kv_len must be positive");
  int64_t chunks = 0, tiles = 0;
  chunk_layout(a, &chunks, &tiles);
  FlashParams P{.a = a, .group = a.num_q_heads / a.num_kv_heads, .num_chunks = static_cast<int>(chunks),
                .tiles_per_chunk = static_cast<int>(tiles), .splits = 1, .split_len = 0,
                .scale_log2 = a.scale * kLog2e, .ws_o = nullptr, .ws_ml = nullptr};
  // Splits over the keys only while the grid leaves SMs idle (about 2 blocks per SM at head_dim 192, 3 at 128)
  // and the keys are many: each split keeps >= kMinTilesPerSplit tiles, so the (O, m, l) round trip through the
  // workspace and the combine launch stay small against the split's work.
  const int64_t key_tiles = (a.max_kv_len + kKeys - 1) / kKeys;
  const int64_t blocks = a.num_q_heads * chunks * tiles;
  const int64_t want = (2 * int64_t{ctx.num_sms()} + blocks - 1) / blocks;
  const int64_t most = std::max<int64_t>(1, key_tiles / kMinTilesPerSplit);
  int64_t splits = std::clamp<int64_t>(want, 1, std::min<int64_t>(most, kMaxSplits));
  P.split_len = (key_tiles + splits - 1) / splits * kKeys;
  splits = (a.max_kv_len + P.split_len - 1) / P.split_len;
  P.splits = static_cast<int>(splits);
  if (P.splits > 1) {
    const size_t rows = static_cast<size_t>(a.num_tokens * a.num_q_heads * P.splits);
    DSI_ASSIGN_OR_RETURN(void* ws, ctx.scratch(rows * (a.v_dim + 2) * sizeof(float)));
    P.ws_o = static_cast<float*>(ws);
    P.ws_ml = P.ws_o + rows * a.v_dim;
  }
  const dim3 grid(static_cast<unsigned>(a.num_q_heads), static_cast<unsigned>(chunks * tiles),
                  static_cast<unsigned>(P.splits));
  if (a.head_dim == 64) {
    DSI_RETURN_IF_ERROR(launch_dv<64>(ctx, P, grid));
  } else if (a.head_dim == 128) {
    DSI_RETURN_IF_ERROR(launch_dv<128>(ctx, P, grid));
  } else {
    DSI_RETURN_IF_ERROR(launch_dv<192>(ctx, P, grid));
  }
  if (P.splits > 1) {
    flash_combine_kernel<<<static_cast<unsigned>(a.num_tokens * a.num_q_heads), 128, 0, ctx.stream()>>>(P);
    DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  }
  return Status::Ok();
}

}  // namespace dsi::cuda
