// MLA absorbed decode on Hopper's warpgroup tensor cores (wgmma, sm_90a; included by mla_decode.cu): the problem
// and the split workspace of mla_decode_kernels.cuh (Params; partials merged by mla_combine_kernel), for head
// counts where a block's 64 heads fill the m64 tiles (V3's 128 heads: two head groups).
//
// Block: 64 heads of one sequence over one split of its tokens, two warpgroups (256 threads), one block per SM.
// Shared memory (1024-byte aligned, every tile in the 128-byte swizzle as [9 column blocks][64 rows][64 bf16]):
// Q (64 heads x 576, bf16), two latent tiles of 64 tokens x 576 (cp.async, one in flight while the other is used),
// P (64 heads x 64 tokens, bf16), and the two warpgroups' row maxima and sums: 226 KB. Per tile:
//   1. S = Q K^T: warpgroup g scores tokens [32 g, 32 g + 32) of the tile for the 64 heads (36 wgmma m64n32k16,
//      A = Q and B = the tile, both K-major);
//   2. online softmax (exp2 domain): the tile's row maximum of both halves (exchanged through shared memory), P in
//      bf16 into shared memory, the running output rescaled;
//   3. O += P V: warpgroup g accumulates value dims [256 g, 256 g + 256) over all 64 tokens (4 wgmma m64n256k16,
//      A = P K-major, B = the same latent tile read MN-major: its first 512 dims are V).
// Each latent tile is read from memory once per 64 heads; the math runs on the warpgroup MMA at about twice the
// mma.sync kernel's rate per SM. Rows past num_heads score zeros and are never written. With one split (Params::out
// set) the block writes the normalized output itself; with several, (O, m, l) to the workspace.
#pragma once

#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/mla_decode_kernels.cuh"
#include "kernels/cuda/mma_ptx.cuh"
#include "kernels/cuda/wgmma_ptx.cuh"

namespace dsi::cuda::mla_wg {

constexpr int kHeads = 64;                   // heads per block (the m64 of every wgmma)
constexpr int kTile = 64;                    // tokens per latent tile
constexpr int kThreads = 256;                // two warpgroups
constexpr int kBlockBytes = 64 * 128;        // one column block: 64 rows x 64 bf16
constexpr int kTileBytes = 9 * kBlockBytes;  // 64 rows x 576 bf16: 72 KB
constexpr int kQOff = 0;
constexpr int kStageOff = kTileBytes;                  // two stages
constexpr int kPOff = 3 * kTileBytes;                  // 64 x 64 bf16: one column block
constexpr int kMaxOff = kPOff + kBlockBytes;           // float [2][64]
constexpr int kSumOff = kMaxOff + 2 * kHeads * 4;      // float [2][64]
constexpr int kSmemBytes = kSumOff + 2 * kHeads * 4 + 1024;  // + the slack that aligns the base to 1024
static_assert(mla::kDim == 9 * 64 && mla::kVDim == 8 * 64, "576 = 9 column blocks, V = the first 8");
static_assert(kSmemBytes <= 227 * 1024, "fits the opt-in shared memory of an sm_90 block");

// Byte offset of 16-byte chunk cc (of a row's 72) of row r in a [9][64][64] swizzled tile.
__device__ __forceinline__ uint32_t chunk_off(int r, int cc) {
  return static_cast<uint32_t>((cc >> 3) * kBlockBytes + r * 128 + (((cc & 7) ^ (r & 7)) << 4));
}

__global__ void __launch_bounds__(kThreads, 1) mla_decode_wgmma_kernel(mla::Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace wgmma;
  pdl_enter();
  unsigned char* raw_smem = ptx::dynamic_smem();
  const uint32_t raw = ptx::smem_addr(raw_smem);
  unsigned char* sm = raw_smem + ((1024 - (raw & 1023)) & 1023);
  const uint32_t sbase = ptx::smem_addr(sm);
  float* row_max = reinterpret_cast<float*>(sm + kMaxOff);  // [warpgroup][head]
  float* row_sum = reinterpret_cast<float*>(sm + kSumOff);

  const int tid = static_cast<int>(threadIdx.x), lane = tid & 31;
  const int wg = tid >> 7, warp = (tid >> 5) & 3;  // warpgroup, warp within it
  const int r0 = 16 * warp + (lane >> 2), r1 = r0 + 8;  // the two heads (rows) of this thread's accumulators
  const int quad = lane & 3;
  const int group = static_cast<int>(blockIdx.x), split = static_cast<int>(blockIdx.y);
  const int64_t b = blockIdx.z;
  const int64_t head0 = int64_t{group} * kHeads;
  const int64_t len = p.seq_lens[b];
  const int64_t start = int64_t{split} * p.split_tokens;
  const int64_t end = len < start + p.split_tokens ? len : start + p.split_tokens;
  const auto ws_row = [&](int r) { return (b * p.heads + head0 + r) * p.splits + split; };

  if (start >= end) {  // an empty split (or an empty sequence): nothing to add in the combine
    if (p.out != nullptr) {  // one split: an empty sequence's output is zeros
      for (int i = tid; i < kHeads * mla::kVDim; i += kThreads) {
        if (head0 + i / mla::kVDim < p.heads) p.out[(b * p.heads + head0) * mla::kVDim + i] = 0.0f;
      }
    } else if (tid < kHeads && head0 + tid < p.heads) {
      p.ws_ml[ws_row(tid) * 2] = -INFINITY;
      p.ws_ml[ws_row(tid) * 2 + 1] = 0.0f;
    }
    return;
  }

  // Tile loader: thread tid copies chunks tid + 256 j (j < 18) of the tile's 64 x 72.
  const int num_tiles = static_cast<int>((end - start + kTile - 1) / kTile);
  const auto load_tile = [&](int tile) {
    const uint32_t dst = kStageOff + (tile & 1) * kTileBytes;
#pragma unroll 6
    for (int j = 0; j < kTile * mla::kChunks / kThreads; ++j) {
      const int idx = tid + kThreads * j, row = idx / mla::kChunks, cc = idx - row * mla::kChunks;
      const int64_t tok = start + int64_t{tile} * kTile + row;
      const bool valid = tok < end;
      const uint16_t* src = valid ? mla::token_row(p, b, tok) + cc * 8 : p.cache;
      ptx::cp_async16(sm + dst + chunk_off(row, cc), src, valid);
    }
    ptx::cp_async_commit();
  };
  load_tile(0);

  // Q (f32) -> bf16; heads past num_heads are zeros.
  for (int i = tid; i < kHeads * mla::kChunks; i += kThreads) {
    const int h = i / mla::kChunks, cc = i - h * mla::kChunks;
    *reinterpret_cast<uint4*>(sm + kQOff + chunk_off(h, cc)) = mla::q_chunk_bf16(p, b, head0, h, cc);
  }

  float o[128];  // O of heads r0 / r1 (i % 4 < 2 / >= 2), dims 256 wg + 8 (i / 4) + 2 quad + i % 2
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY};  // running max of rows r0, r1 (log2 domain; the same in both groups)
  float l_run[2] = {0.0f, 0.0f};            // this thread's part of the rows' sums (its 8 columns per tile)

  for (int it = 0; it < num_tiles; ++it) {
    ptx::cp_async_wait<0>();  // this thread's copies of tile it have landed
    fence_proxy_async();      // ... and Q's stores: visible to the tensor cores
    __syncthreads();          // everyone's; both warpgroups are past tile it - 1 (its stage and P are free)
    if (it + 1 < num_tiles) load_tile(it + 1);
    const uint32_t kt = sbase + kStageOff + (it & 1) * kTileBytes;
    const int64_t t0 = start + int64_t{it} * kTile;

    // 1. S for tokens [32 wg, 32 wg + 32) of the tile.
    float s[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) s[i] = 0.0f;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < mla::kDim / 16; ++kk) {
      const uint32_t col = (kk >> 2) * kBlockBytes + (kk & 3) * 32;  // 16 dims of column block kk / 4
      wgmma_m64n32k16(s, desc_sw128(sbase + kQOff + col), desc_sw128(kt + (32 * wg) * 128 + col));
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_acc(s);

    // 2. Online softmax. s[i]: row r0 (i % 4 < 2) or r1, token 32 wg + 8 (i / 4) + 2 quad + i % 2.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int col = 32 * wg + 8 * (i >> 2) + 2 * quad + (i & 1);
      s[i] = t0 + col < end ? s[i] * p.scale_log2 : -INFINITY;
      mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    }
    if (quad == 0) {
      row_max[wg * kHeads + r0] = mx[0];
      row_max[wg * kHeads + r1] = mx[1];
    }
    __syncthreads();
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = h == 0 ? r0 : r1;
      const float m_new = fmaxf(m_run[h], fmaxf(row_max[r], row_max[kHeads + r]));  // finite: a valid token
      alpha[h] = exp2f(m_run[h] - m_new);
      m_run[h] = m_new;
      l_run[h] *= alpha[h];
    }
#pragma unroll
    for (int c = 0; c < 4; ++c) {  // token pair 32 wg + 8 c + 2 quad, +1 of rows r0 (i = 4c, 4c+1) and r1
      const int col = 32 * wg + 8 * c + 2 * quad;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = h == 0 ? r0 : r1;
        const float p0 = exp2f(s[4 * c + 2 * h] - m_run[h]), p1 = exp2f(s[4 * c + 2 * h + 1] - m_run[h]);
        l_run[h] += p0 + p1;
        *reinterpret_cast<uint32_t*>(sm + kPOff + r * 128 + (((col >> 3) ^ (r & 7)) << 4) + (col & 7) * 2) =
            ptx::pack_bf16(p0, p1);
      }
    }
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] *= alpha[(i >> 1) & 1];
    fence_proxy_async();  // P's stores, for the tensor cores
    __syncthreads();      // both halves of P

    // 3. O += P V over the value dims [256 wg, 256 wg + 256): 16 tokens per step, B MN-major (4 column blocks
    //    kBlockBytes apart, 8-token groups 1024 bytes apart).
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < kTile / 16; ++j) {
      wgmma_m64n256k16<1>(o, desc_sw128(sbase + kPOff + j * 32),
                          desc_sw128_mn(kt + wg * 4 * kBlockBytes + j * 2 * 1024, kBlockBytes, 1024));
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_acc(o);
  }

  // The rows' sums: over the quad, then both warpgroups.
  float l[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] = l_run[h] + __shfl_xor_sync(0xffffffffu, l_run[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
  if (quad == 0) {
    row_sum[wg * kHeads + r0] = l[0];
    row_sum[wg * kHeads + r1] = l[1];
  }
  __syncthreads();
  const bool direct = p.out != nullptr;  // one split: normalize here
  if (!direct && wg == 0 && quad == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = h == 0 ? r0 : r1;
      if (head0 + r < p.heads) {
        p.ws_ml[ws_row(r) * 2] = m_run[h];
        p.ws_ml[ws_row(r) * 2 + 1] = row_sum[r] + row_sum[kHeads + r];
      }
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = h == 0 ? r0 : r1;
    if (head0 + r >= p.heads) continue;
    const float f = direct ? 1.0f / (row_sum[r] + row_sum[kHeads + r]) : 1.0f;  // > 0: the split has a token
    float* dst = (direct ? p.out + (b * p.heads + head0 + r) * mla::kVDim : p.ws_o + ws_row(r) * mla::kVDim) +
                 256 * wg + 2 * quad;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      *reinterpret_cast<float2*>(dst + 8 * c) = make_float2(o[4 * c + 2 * h] * f, o[4 * c + 2 * h + 1] * f);
    }
  }
#else
  __trap();  // the host launches this kernel on sm_90a devices only (mla_decode.cu)
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

}  // namespace dsi::cuda::mla_wg
