// MLA absorbed decode: the tensor-core flash-decoding kernel, the combine kernel and the split planner
// (mla_decode.cu launches them). A latent cache row is [576] bf16: all 576 dims are the key, the first 512 the value.
//
// mla_decode_tc_kernel<M>: grid (head group of 16 M heads, split, sequence), 8 warps, one block per SM. Per
// 32-token tile of the latent cache (a kStages-deep cp.async ring in shared memory, 36 KB per stage; Q in shared
// memory as bf16; both with 16-byte chunks XOR-swizzled by row so that ldmatrix is conflict-free):
//   1. partial scores: warp (mw, nw, kw) computes heads [16 kMT mw, +16 kMT) x tokens [8 kNT nw, +8 kNT) over the
//      dims [144 kw, +144) (mma.sync m16n8k16, Q and K fragments by ldmatrix) and stores them (f32) in s[kw];
//   2. online softmax (exp2 domain): 4 threads per head sum the 4 partials of 8 tokens each, share the tile max,
//      write P (bf16) and the head's rescale factor alpha;
//   3. O = alpha O + P V: warp w owns the value dims [64 w, 64 w + 64) of every head of the block (ldmatrix.trans
//      of the same tile; 32 M f32 accumulators per thread).
// Each latent tile is read from memory once per head group (once per sequence up to 64 heads). With one split the
// kernel writes the normalized output. With several, each split writes (O unnormalized, m, l) to the workspace and
// either (Params::counters set, the default) the last split block of each (sequence, head group) to finish merges
// them and writes the output (a stream-K style fixup: no second launch), or mla_combine_kernel merges them.
// Fused merge: a split block with tokens writes its partials, __threadfence(), and one thread counts its arrival on
// counters[sequence * groups + group]; the block that arrives last (the sequence's splits with tokens all have)
// resets the counter to 0 (so the counters are zero between launches, CUDA graphs included), fences, reads every
// split's (m, l) and O with __ldcg (L2, not a stale L1) and adds them up in split order: the result does not depend
// on which block came last. Splits past the end of a sequence neither write nor arrive; a sequence whose tokens
// fall in one split is normalized by that split directly; an empty sequence gets zeros from split 0.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/mma_ptx.cuh"

namespace dsi::cuda::mla {

constexpr int kDim = 576;          // kv_lora_rank + rope_dim
constexpr int kVDim = 512;         // kv_lora_rank
constexpr int kChunks = kDim / 8;  // 16-byte chunks per latent row
constexpr float kLog2e = 1.4426950408889634f;

// Arguments of the decode kernels (also the earlier kernel in mla_decode.cu).
struct Params {
  const float* q;               // [batch, heads, 576]
  const uint16_t* cache;        // bf16 latent rows: [batch, max_tokens, 576] or the paged pool
  const int32_t* seq_lens;      // [batch]
  const int32_t* block_tables;  // null: contiguous per sequence
  int64_t max_blocks, block_size;
  int64_t heads, max_tokens;
  int splits;
  int64_t split_tokens;  // tokens per split, a multiple of the tile
  float scale_log2;      // scale * log2(e)
  float* ws_o;           // [batch, heads, splits, 512]: unnormalized output of each split (splits > 1)
  float* ws_ml;          // [batch, heads, splits, 2]: running max (log2 domain) and sum of each split
  float* out;            // [batch, heads, 512]: set when splits == 1 or counters is set (the tensor-core kernel
                         // normalizes itself); null: mla_combine_kernel writes the output
  bool q_aligned;        // q is 16-byte aligned (vector loads)
  unsigned* counters;    // [batch, groups] arrival counters, zero (splits > 1, fused merge); null: separate combine
};

// Row `tok` of sequence b: contiguous, or through the sequence's block table.
__device__ __forceinline__ const uint16_t* token_row(const Params& p, int64_t b, int64_t tok) {
  if (p.block_tables == nullptr) return p.cache + (b * p.max_tokens + tok) * kDim;
  const int64_t blk = tok / p.block_size;
  const int64_t row = int64_t{p.block_tables[b * p.max_blocks + blk]} * p.block_size + (tok - blk * p.block_size);
  return p.cache + row * kDim;
}

// 16-byte chunk c (8 dims) of head head0 + h's query of sequence b as bf16 (zeros for a head past num_heads).
__device__ __forceinline__ uint4 q_chunk_bf16(const Params& p, int64_t b, int64_t head0, int h, int c) {
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (head0 + h >= p.heads) return v;
  const float* src = p.q + (b * p.heads + head0 + h) * kDim + c * 8;
  float x[8];
  if (p.q_aligned) {
    const float4 lo = reinterpret_cast<const float4*>(src)[0], hi = reinterpret_cast<const float4*>(src)[1];
    x[0] = lo.x, x[1] = lo.y, x[2] = lo.z, x[3] = lo.w, x[4] = hi.x, x[5] = hi.y, x[6] = hi.z, x[7] = hi.w;
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] = src[e];
  }
  v = make_uint4(ptx::pack_bf16(x[0], x[1]), ptx::pack_bf16(x[2], x[3]), ptx::pack_bf16(x[4], x[5]),
                 ptx::pack_bf16(x[6], x[7]));
  return v;
}

// Element offset of (row, col) in a [rows][576] bf16 array whose 16-byte chunks are XOR-swizzled by row % 8: the 8
// rows one ldmatrix phase reads (consecutive, from a multiple of 8) fall in 8 different bank groups although the
// row pitch (1152 B) is a multiple of 128 B.
__device__ __forceinline__ int swz(int row, int col) {
  return row * kDim + ((((col >> 3) ^ (row & 7)) << 3) | (col & 7));
}

constexpr int kTile = 32;                      // tokens per pipeline stage
constexpr int kThreads = 256;                  // 8 warps
constexpr int kKSplit = 4;                     // phase 1 splits the 576 dims of a score over 4 warps ...
constexpr int kKSteps = kDim / 16 / kKSplit;   // ... of 9 k-steps each
constexpr int kSStride = kTile + 8;            // partial scores: 160-byte rows (float2 stores and loads conflict-free)
constexpr int kPStride = kTile + 8;            // probabilities: 80-byte rows (ldmatrix conflict-free)
constexpr int kStageBytes = kTile * kDim * 2;  // 36 KB
constexpr int kMaxSmem = 227 * 1024;           // opt-in shared memory per block (sm_90)
constexpr int kMaxStages = 5;

// kM m16 tiles of heads per block (16, 32, 48 or 64 heads).
template <int kM>
struct TcConfig {
  static constexpr int kHeads = 16 * kM;
  static constexpr int kMW = kM == 4 ? 2 : 1;                  // phase-1 warps along heads
  static constexpr int kNW = kThreads / 32 / kKSplit / kMW;   // phase-1 warps along tokens
  static constexpr int kMT = kM / kMW;                         // m16 tiles per warp in phase 1
  static constexpr int kNT = kTile / 8 / kNW;                  // n8 tiles per warp in phase 1
  static constexpr int kFixedBytes = kHeads * (kDim * 2 + kKSplit * kSStride * 4 + kPStride * 2 + 2 * 4);
  static constexpr int kStages = (kMaxSmem - kFixedBytes) / kStageBytes < kMaxStages
                                     ? (kMaxSmem - kFixedBytes) / kStageBytes
                                     : kMaxStages;
  // The fused merge keeps each (head, split)'s (m, l), then its weight, as a float2 in the latent ring.
  static constexpr int kMaxFusedSplits = kStages * kStageBytes / (8 * kHeads);
  struct Smem {
    uint16_t k[kStages][kTile * kDim];   // latent tiles, swz rows
    uint16_t q[kHeads * kDim];           // queries (bf16), swz rows
    float s[kKSplit][kHeads][kSStride];  // partial scores of each quarter of the dims
    uint16_t p[kHeads][kPStride];        // probabilities (bf16)
    float alpha[kHeads];                 // this tile's rescale of the running output
    float inv_l[kHeads];                 // 1 / sum at the end (splits == 1)
  };
  static_assert(kM >= 1 && kM <= 4);
  static_assert(kMW * kNW * kKSplit * 32 == kThreads && kMT * kMW == kM && kNT % 2 == 0);
  static_assert(kStages >= 2 && sizeof(Smem) <= kMaxSmem);
  static_assert(kTile * 8 == kThreads);  // the tile loader: 8 threads per token row
  static_assert(4 * kHeads <= kThreads && (4 * kHeads) % 32 == 0);  // softmax: 4 threads per head, whole warps
  static_assert(kThreads == 2 * (kVDim / 4) && kMaxFusedSplits >= 64);  // merge: 2 heads x 128 float4 per pass
};

// The fused merge, by the whole block of the last split to arrive for (sequence b, heads head0 .. +kHeads):
// out = sum_s w_s O_s / sum_s w_s l_s with w_s = 2^(m_s - max m) over the `live` splits (l_s > 0), summed in split
// order. wl: shared memory for kHeads x live float2 ((m, l), then (w, l)); inv_l: kHeads floats.
template <int kHeads>
__device__ __forceinline__ void merge_splits(const Params& p, float2* wl, float* inv_l, int64_t b, int64_t head0,
                                             int live) {
  const int tid = static_cast<int>(threadIdx.x);
  if (tid < 4 * kHeads) {  // 4 threads per head (whole warps): the splits seg, seg + 4, ...
    const int h = tid >> 2, seg = tid & 3;
    const bool valid = head0 + h < p.heads;
    const float2* ml = reinterpret_cast<const float2*>(p.ws_ml) + (b * p.heads + head0 + h) * p.splits;
    float mx = -INFINITY;
    if (valid) {
      for (int s = seg; s < live; s += 4) {
        const float2 v = __ldcg(ml + s);
        wl[h * live + s] = v;
        if (v.y > 0.0f) mx = fmaxf(mx, v.x);
      }
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    float den = 0.0f;
    if (valid) {
      for (int s = seg; s < live; s += 4) {
        const float2 v = wl[h * live + s];
        const float w = v.y > 0.0f ? exp2f(v.x - mx) : 0.0f;
        den += w * v.y;
        wl[h * live + s].x = w;
      }
    }
    den += __shfl_xor_sync(0xffffffffu, den, 1);
    den += __shfl_xor_sync(0xffffffffu, den, 2);
    if (seg == 0) inv_l[h] = den > 0.0f ? 1.0f / den : 0.0f;
  }
  __syncthreads();
  // Thread tid owns the float4 column c of heads hb, hb + 2, ...: every split's loads of a pass are independent.
  constexpr int kItems = kHeads / 2;
  const int c = tid & (kVDim / 4 - 1), hb = tid / (kVDim / 4);
  float4 acc[kItems];
#pragma unroll
  for (int k = 0; k < kItems; ++k) acc[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  const float4* ws = reinterpret_cast<const float4*>(p.ws_o);
  for (int s = 0; s < live; ++s) {
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int h = hb + 2 * k;
      if (head0 + h >= p.heads) continue;
      const float w = wl[h * live + s].x;
      const float4 v = __ldcg(ws + ((b * p.heads + head0 + h) * p.splits + s) * (kVDim / 4) + c);
      acc[k].x += w * v.x;
      acc[k].y += w * v.y;
      acc[k].z += w * v.z;
      acc[k].w += w * v.w;
    }
  }
#pragma unroll
  for (int k = 0; k < kItems; ++k) {
    const int h = hb + 2 * k;
    if (head0 + h >= p.heads) continue;
    const float f = inv_l[h];
    reinterpret_cast<float4*>(p.out + (b * p.heads + head0 + h) * kVDim)[c] =
        make_float4(acc[k].x * f, acc[k].y * f, acc[k].z * f, acc[k].w * f);
  }
}

template <int kM>
__global__ void __launch_bounds__(kThreads, 1) mla_decode_tc_kernel(Params p) {
  pdl_enter();
  using Cfg = TcConfig<kM>;
  constexpr int kHeads = Cfg::kHeads, kStages = Cfg::kStages, kMT = Cfg::kMT, kNT = Cfg::kNT;
  auto& sm = *reinterpret_cast<typename Cfg::Smem*>(ptx::dynamic_smem());
  const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;  // fragment row and column pair
  const int group = static_cast<int>(blockIdx.x), split = static_cast<int>(blockIdx.y);
  const int64_t b = blockIdx.z;
  const int64_t head0 = int64_t{group} * kHeads;
  const int64_t len = p.seq_lens[b];
  const int64_t start = int64_t{split} * p.split_tokens;
  const int64_t end = len < start + p.split_tokens ? len : start + p.split_tokens;
  const int sm_head = tid >> 2, sm_seg = tid & 3;  // softmax role: 4 threads per head
  const bool sm_active = tid < 4 * kHeads;
  const int64_t ws_row = (b * p.heads + head0 + sm_head) * p.splits + split;
  // Splits of this sequence that hold tokens (the first `live`); with out set and live <= 1 no merge is needed.
  const int64_t reached = len <= 0 ? 0 : (len + p.split_tokens - 1) / p.split_tokens;
  const int64_t live = reached < p.splits ? reached : p.splits;
  const bool direct = p.out != nullptr && live <= 1;

  if (start >= end) {  // an empty split (or an empty sequence: zeros)
    if (p.out != nullptr) {  // one split, or the fused merge: only an empty sequence's split 0 writes (zeros)
      if (split == 0) {
        for (int i = tid; i < kHeads * kVDim; i += kThreads) {
          if (head0 + i / kVDim < p.heads) p.out[(b * p.heads + head0) * kVDim + i] = 0.0f;
        }
      }
    } else if (sm_active && sm_seg == 0 && head0 + sm_head < p.heads) {
      p.ws_ml[ws_row * 2] = -INFINITY;
      p.ws_ml[ws_row * 2 + 1] = 0.0f;
    }
    return;
  }

  // Tile loader: thread copies the 16-byte chunks ld_c + 8 j (j < 9) of token row ld_row.
  const int num_tiles = static_cast<int>((end - start + kTile - 1) / kTile);
  const int ld_row = tid >> 3, ld_c = tid & 7;
  const auto load_tile = [&](int tile) {
    if (tile < num_tiles) {
      const int64_t tok = start + int64_t{tile} * kTile + ld_row;
      const bool valid = tok < end;
      const uint16_t* src = valid ? token_row(p, b, tok) : p.cache;
      uint16_t* dst = sm.k[tile % kStages] + ld_row * kDim;
#pragma unroll
      for (int j = 0; j < kChunks / 8; ++j) {
        const int c = 8 * j + ld_c;
        ptx::cp_async16(dst + ((c ^ (ld_row & 7)) << 3), src + c * 8, valid);
      }
    }
    ptx::cp_async_commit();  // always: one group per tile index keeps the wait counts uniform
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) load_tile(s);

  // Q (f32) -> bf16 in shared memory; the heads past num_heads are zeros (scores 0, never written out).
  for (int i = tid; i < kHeads * kChunks; i += kThreads) {
    const int h = i / kChunks, c = i - h * kChunks;
    *reinterpret_cast<uint4*>(sm.q + swz(h, c * 8)) = q_chunk_bf16(p, b, head0, h, c);
  }

  float o[kM][8][4];  // heads [16 mt, +16) x dims [64 warp + 8 j, +8)
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) {
#pragma unroll
    for (int j = 0; j < 8; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.0f;
  }
  float m_run = -INFINITY, l_run = 0.0f;  // softmax role: the head's running max; this thread's part of the sum

  const int kw = warp % kKSplit, nw = (warp / kKSplit) % Cfg::kNW, mw = warp / (kKSplit * Cfg::kNW);
  for (int it = 0; it < num_tiles; ++it) {
    ptx::cp_async_wait<kStages - 2>();  // this thread's copies of tile `it` have landed
    __syncthreads();                    // everyone's have; tile it - 1 and its scores are consumed
    load_tile(it + kStages - 1);        // into the buffer of tile it - 1
    const uint16_t* kt = sm.k[it % kStages];
    const int64_t t0 = start + int64_t{it} * kTile;

    // 1. Partial scores of heads [16 kMT mw, +16 kMT) x tokens [8 kNT nw, +8 kNT) over the dims [144 kw, +144).
    {
      float acc[kMT][kNT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
      }
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        const int k0 = (kw * kKSteps + ks) * 16;
        uint32_t a[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          ptx::ldmatrix_x4(a[mt], sm.q + swz((mw * kMT + mt) * 16 + (lane & 15), k0 + (lane >> 4) * 8));
        }
#pragma unroll
        for (int np = 0; np < kNT / 2; ++np) {  // two n8 tiles (16 tokens) per ldmatrix
          uint32_t bk[4];
          ptx::ldmatrix_x4(bk, kt + swz((nw * kNT + 2 * np) * 8 + (lane & 7) + (lane >> 4) * 8,
                                        k0 + ((lane >> 3) & 1) * 8));
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            ptx::mma_bf16(acc[mt][2 * np], a[mt], bk[0], bk[1]);
            ptx::mma_bf16(acc[mt][2 * np + 1], a[mt], bk[2], bk[3]);
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          const int row = (mw * kMT + mt) * 16 + g, col = (nw * kNT + nt) * 8 + 2 * t4;
          *reinterpret_cast<float2*>(&sm.s[kw][row][col]) = make_float2(acc[mt][nt][0], acc[mt][nt][1]);
          *reinterpret_cast<float2*>(&sm.s[kw][row + 8][col]) = make_float2(acc[mt][nt][2], acc[mt][nt][3]);
        }
      }
    }
    __syncthreads();

    // 2. Online softmax: thread (sm_head, sm_seg) owns the tokens 8 j + 2 sm_seg, +1 (j < 4) of its head.
    if (sm_active) {
      float sv[8];
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = 8 * j + 2 * sm_seg;
        float2 v = *reinterpret_cast<const float2*>(&sm.s[0][sm_head][col]);
#pragma unroll
        for (int q = 1; q < kKSplit; ++q) {
          const float2 w = *reinterpret_cast<const float2*>(&sm.s[q][sm_head][col]);
          v.x += w.x;
          v.y += w.y;
        }
        sv[2 * j] = t0 + col < end ? v.x * p.scale_log2 : -INFINITY;
        sv[2 * j + 1] = t0 + col + 1 < end ? v.y * p.scale_log2 : -INFINITY;
        mx = fmaxf(mx, fmaxf(sv[2 * j], sv[2 * j + 1]));
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run, mx);  // finite: every tile holds a valid token
      const float alpha = exp2f(m_run - m_new);
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float p0 = exp2f(sv[2 * j] - m_new), p1 = exp2f(sv[2 * j + 1] - m_new);
        sum += p0 + p1;
        *reinterpret_cast<uint32_t*>(&sm.p[sm_head][8 * j + 2 * sm_seg]) = ptx::pack_bf16(p0, p1);
      }
      l_run = l_run * alpha + sum;
      m_run = m_new;
      if (sm_seg == 0) sm.alpha[sm_head] = alpha;
    }
    __syncthreads();

    // 3. O = alpha O + P V over the value dims [64 warp, 64 warp + 64).
#pragma unroll
    for (int mt = 0; mt < kM; ++mt) {
      const float a_lo = sm.alpha[mt * 16 + g], a_hi = sm.alpha[mt * 16 + g + 8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        o[mt][j][0] *= a_lo;
        o[mt][j][1] *= a_lo;
        o[mt][j][2] *= a_hi;
        o[mt][j][3] *= a_hi;
      }
    }
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      uint32_t a[kM][4];
#pragma unroll
      for (int mt = 0; mt < kM; ++mt) ptx::ldmatrix_x4(a[mt], &sm.p[mt * 16 + (lane & 15)][kk * 16 + (lane >> 4) * 8]);
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {  // two n8 tiles (16 dims) per ldmatrix
        uint32_t bv[4];
        ptx::ldmatrix_x4_trans(bv, kt + swz(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                            warp * 64 + jj * 16 + (lane >> 4) * 8));
#pragma unroll
        for (int mt = 0; mt < kM; ++mt) {
          ptx::mma_bf16(o[mt][2 * jj], a[mt], bv[0], bv[1]);
          ptx::mma_bf16(o[mt][2 * jj + 1], a[mt], bv[2], bv[3]);
        }
      }
    }
  }

  if (sm_active) {  // the head's sum over its 4 threads
    l_run += __shfl_xor_sync(0xffffffffu, l_run, 1);
    l_run += __shfl_xor_sync(0xffffffffu, l_run, 2);
  }
  if (direct) {  // the sequence's only split with tokens: normalize here
    if (sm_active && sm_seg == 0) sm.inv_l[sm_head] = 1.0f / l_run;
    __syncthreads();
  } else if (sm_active && sm_seg == 0 && head0 + sm_head < p.heads) {
    p.ws_ml[ws_row * 2] = m_run;
    p.ws_ml[ws_row * 2 + 1] = l_run;
  }
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int h = mt * 16 + g + 8 * half;
      if (head0 + h >= p.heads) continue;
      float* dst;
      float f = 1.0f;
      if (direct) {
        dst = p.out + (b * p.heads + head0 + h) * kVDim;
        f = sm.inv_l[h];
      } else {
        dst = p.ws_o + ((b * p.heads + head0 + h) * p.splits + split) * kVDim;
      }
      dst += warp * 64 + 2 * t4;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        *reinterpret_cast<float2*>(dst + 8 * j) = make_float2(o[mt][j][2 * half] * f, o[mt][j][2 * half + 1] * f);
      }
    }
  }
  if (direct || p.counters == nullptr) return;

  // Fused merge: count this split's arrival; the last of the `live` splits adds them all up.
  __threadfence();  // this thread's partials are visible device-wide before the arrival is counted
  __syncthreads();
  int last = 0;
  if (tid == 0) {
    unsigned* counter = p.counters + b * gridDim.x + group;
    last = atomicAdd(counter, 1u) == static_cast<unsigned>(live - 1);
    if (last) *counter = 0;  // every live split has arrived: ready for the next launch
  }
  if (!__syncthreads_or(last)) return;  // (also the barrier before the ring is reused)
  __threadfence();
  merge_splits<kHeads>(p, reinterpret_cast<float2*>(sm.k[0]), sm.inv_l, b, head0, static_cast<int>(live));
}

// One block of 128 threads per (sequence, head): out = sum_s 2^(m_s - M) O_s / sum_s 2^(m_s - M) l_s over the
// splits with l_s > 0.
__global__ void __launch_bounds__(kVDim / 4) mla_combine_kernel(const float* ws_o, const float* ws_ml, float* out,
                                                               int splits) {
  pdl_enter();
  const int64_t row = blockIdx.x;  // b * heads + h
  const int tid = static_cast<int>(threadIdx.x);
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) {
    if (ws_ml[(row * splits + s) * 2 + 1] > 0.0f) mx = fmaxf(mx, ws_ml[(row * splits + s) * 2]);
  }
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  float denom = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float l = ws_ml[(row * splits + s) * 2 + 1];
    if (!(l > 0.0f)) continue;
    const float w = exp2f(ws_ml[(row * splits + s) * 2] - mx);
    denom += w * l;
    const float4 v = reinterpret_cast<const float4*>(ws_o + (row * splits + s) * kVDim)[tid];
    acc[0] += w * v.x;
    acc[1] += w * v.y;
    acc[2] += w * v.z;
    acc[3] += w * v.w;
  }
  const float inv = denom > 0.0f ? 1.0f / denom : 0.0f;  // no split saw a token: an empty sequence (zeros)
  reinterpret_cast<float4*>(out + row * kVDim)[tid] =
      make_float4(acc[0] * inv, acc[1] * inv, acc[2] * inv, acc[3] * inv);
}

// The number of splits of the sequence axis when the caller leaves it open: `batch` x `groups` blocks per split
// run `slots` at a time (resident blocks on the whole GPU). A split count costs its waves times the tiles of a
// split (plus kFixedTiles of start-up: Q, the first loads, the epilogue) and, past one split, the merge, in tiles:
// - separate combine (mla_combine_kernel): the workspace the splits write and the combine reads back (2 KB per
//   head and split each way), spread over the whole GPU (its launch is not counted);
// - fused (the last split merges): kFuseTiles for the fence, the arrival atomic and the last block's second pass,
//   plus the bytes one block streams: its own partials written (2 KB per head), then the merging block reading
//   every split's (2 KB per head and split) -- on one SM, so this grows with splits x heads per block and is
//   what stops the split count. These are L2-resident streams with no math, counted at kMergeBytesPerTile = two
//   36 KB stages per tile step (a tile step is a 36 KB HBM load plus three barrier-separated mma/softmax phases).
//   Merges of different (sequence, head group)s run on different SMs: ceil(batch groups / slots) after another.
struct SplitShape {
  int64_t batch = 0, heads = 0, groups = 0;
  int64_t heads_per_block = 0;  // 16 kM: the fused merge's rows per block
  int64_t max_seq_len = 0;
  int64_t slots = 0;
  bool fused = false;
};
constexpr double kFuseTiles = 1.0;
constexpr double kMergeBytesPerTile = 2.0 * kStageBytes;
inline int choose_splits(const SplitShape& a) {
  constexpr int64_t kFixedTiles = 2, kMaxSplits = 64;
  constexpr double kRowBytes = kVDim * 4 + 8;  // one head's partial O, m and l
  const int64_t blocks = a.batch * a.groups;
  const int64_t most = std::max<int64_t>(1, std::min<int64_t>(kMaxSplits, (a.max_seq_len + kTile - 1) / kTile));
  const double merge_waves = static_cast<double>((blocks + a.slots - 1) / a.slots);
  const double block_rows = static_cast<double>(a.heads_per_block);
  int best = 1;
  double best_cost = 0.0;
  for (int64_t s = 1; s <= most; ++s) {
    const int64_t waves = (blocks * s + a.slots - 1) / a.slots;
    const int64_t tiles = ((a.max_seq_len + s - 1) / s + kTile - 1) / kTile;
    double cost = static_cast<double>(waves * (tiles + kFixedTiles));
    if (s > 1 && a.fused) {
      cost += kFuseTiles + block_rows * kRowBytes * (1.0 + merge_waves * static_cast<double>(s)) / kMergeBytesPerTile;
    } else if (s > 1) {
      const double ws_bytes = static_cast<double>(a.batch * a.heads * s) * kRowBytes * 2;
      cost += ws_bytes / (static_cast<double>(a.slots) * kStageBytes);
    }
    if (s == 1 || cost < best_cost) {
      best = static_cast<int>(s);
      best_cost = cost;
    }
  }
  return best;
}

}  // namespace dsi::cuda::mla
