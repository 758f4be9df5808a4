// MLA absorbed decode (flash-decoding). Grid (split, head group of 16, sequence); 4 warps per block.
// Per 32-token tile of the latent cache [tokens, 576] (bf16, cp.async double-buffered in shared memory):
//   1. S = Q K^T: warp w scores tokens [8w, 8w + 8) for the 16 heads (mma.sync m16n8k16, 36 k-steps);
//   2. online softmax over the tile (exp2 domain), P in bf16;
//   3. O += P V: warp w owns output dims [128w, 128w + 128) (V = the first 512 latent dims, ldmatrix.trans).
// Each split writes (O unnormalized, m, l); mla_combine merges the splits.
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"

namespace dsi::cuda {
namespace {

constexpr int kDim = 576;           // kv_lora_rank + rope_dim
constexpr int kVDim = 512;          // kv_lora_rank
constexpr int kHeads = 16;          // heads per block (one m16 tile)
constexpr int kTile = 32;           // tokens per tile
constexpr int kStride = kDim + 8;   // smem row stride (elements): 1168 B, conflict-free ldmatrix
constexpr int kPStride = kTile + 8; // 80 B rows
constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;

struct Smem {
  __nv_bfloat16 k[2][kTile][kStride];
  __nv_bfloat16 q[kHeads][kStride];
  float s[kHeads][kTile];
  __nv_bfloat16 p[kHeads][kPStride];
  float alpha[kHeads];
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
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
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_async_wait_1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

struct MlaParams {
  const float* q;
  const __nv_bfloat16* cache;
  const int32_t* seq_lens;
  float* ws_o;   // [batch, heads, splits, 512]
  float* ws_ml;  // [batch, heads, splits, 2]
  int64_t heads, max_tokens;
  const int32_t* block_tables;  // null: contiguous per sequence
  int64_t max_blocks, block_size;
  int splits;
  int64_t split_tokens;  // multiple of kTile
  float scale_log2;      // scale * log2(e)
};

// Row `tok` of sequence b: contiguous, or through the sequence's block table.
__device__ __forceinline__ const __nv_bfloat16* token_row(const MlaParams& p, const __nv_bfloat16* seq, int64_t b,
                                                          int64_t tok) {
  if (p.block_tables == nullptr) return seq + tok * kDim;
  const int64_t row = static_cast<int64_t>(p.block_tables[b * p.max_blocks + tok / p.block_size]) * p.block_size +
                      tok % p.block_size;
  return p.cache + row * kDim;
}

__device__ void load_tile(const MlaParams& p, Smem& sm, int buf, const __nv_bfloat16* seq, int64_t b, int64_t t0,
                          int64_t end) {
  constexpr int kChunks = kDim / 8;  // 16-byte chunks per token
  for (int i = threadIdx.x; i < kTile * kChunks; i += kThreads) {
    const int row = i / kChunks, c = i % kChunks;
    const int64_t tok = t0 + row;
    const bool valid = tok < end;
    cp_async16(&sm.k[buf][row][c * 8], valid ? token_row(p, seq, b, tok) + c * 8 : p.cache, valid);
  }
}

__global__ void __launch_bounds__(kThreads, 2) mla_decode_kernel(MlaParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_raw);
  const int split = blockIdx.x, group = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t len = p.seq_lens[b];
  const int64_t start = split * p.split_tokens;
  const int64_t end = min(len, start + p.split_tokens);
  const int64_t head0 = int64_t{group} * kHeads;
  const int sm_head = tid >> 3, sub = tid & 7;  // softmax role: 8 threads per head
  const int64_t ws_row = (b * p.heads + head0 + sm_head) * p.splits + split;

  if (start >= end) {
    if (sub == 0 && head0 + sm_head < p.heads) {
      p.ws_ml[ws_row * 2] = -INFINITY;
      p.ws_ml[ws_row * 2 + 1] = 0.0f;
    }
    return;
  }
  const __nv_bfloat16* seq = p.block_tables ? p.cache : p.cache + b * p.max_tokens * kDim;
  load_tile(p, sm, 0, seq, b, start, end);
  cp_async_commit();
  for (int i = tid; i < kHeads * kDim; i += kThreads) {
    const int h = i / kDim, d = i % kDim;
    const float v = head0 + h < p.heads ? p.q[((b * p.heads) + head0 + h) * kDim + d] : 0.0f;
    sm.q[h][d] = __float2bfloat16_rn(v);
  }

  float o[16][4];
#pragma unroll
  for (int j = 0; j < 16; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m_run = -INFINITY, l_run = 0.0f;
  const int g = lane >> 2, t4 = lane & 3;

  int it = 0;
  for (int64_t t0 = start; t0 < end; t0 += kTile, ++it) {
    const int buf = it & 1;
    if (t0 + kTile < end) load_tile(p, sm, buf ^ 1, seq, b, t0 + kTile, end);
    cp_async_commit();
    cp_async_wait_1();
    __syncthreads();

    // 1. Scores for tokens [8 warp, 8 warp + 8).
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
    for (int ks = 0; ks < kDim / 16; ++ks) {
      uint32_t a[4], bb[2];
      ldmatrix_x4(a, &sm.q[lane & 15][ks * 16 + (lane >> 4) * 8]);
      ldmatrix_x2(bb, &sm.k[buf][warp * 8 + (lane & 7)][ks * 16 + ((lane >> 3) & 1) * 8]);
      mma_bf16(c, a, bb[0], bb[1]);
    }
    {
      const int col = warp * 8 + 2 * t4;
      const bool v0 = t0 + col < end, v1 = t0 + col + 1 < end;
      sm.s[g][col] = v0 ? c[0] * p.scale_log2 : -INFINITY;
      sm.s[g][col + 1] = v1 ? c[1] * p.scale_log2 : -INFINITY;
      sm.s[g + 8][col] = v0 ? c[2] * p.scale_log2 : -INFINITY;
      sm.s[g + 8][col + 1] = v1 ? c[3] * p.scale_log2 : -INFINITY;
    }
    __syncthreads();

    // 2. Online softmax: thread (sm_head, sub) handles tokens [4 sub, 4 sub + 4).
    {
      float sv[4];
      float mx = -INFINITY;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        sv[i] = sm.s[sm_head][sub * 4 + i];
        mx = fmaxf(mx, sv[i]);
      }
#pragma unroll
      for (int o2 = 1; o2 < 8; o2 <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o2));
      const float m_new = fmaxf(m_run, mx);
      const float alpha = exp2f(m_run - m_new);
      float sum = 0.0f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float pv = exp2f(sv[i] - m_new);
        sum += pv;
        sm.p[sm_head][sub * 4 + i] = __float2bfloat16_rn(pv);
      }
#pragma unroll
      for (int o2 = 1; o2 < 8; o2 <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o2);
      l_run = l_run * alpha + sum;
      m_run = m_new;
      if (sub == 0) sm.alpha[sm_head] = alpha;
    }
    __syncthreads();

    // 3. O = alpha O + P V over dims [128 warp, 128 warp + 128).
    const float a_lo = sm.alpha[g], a_hi = sm.alpha[g + 8];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      o[j][0] *= a_lo;
      o[j][1] *= a_lo;
      o[j][2] *= a_hi;
      o[j][3] *= a_hi;
    }
#pragma unroll
    for (int kt = 0; kt < kTile / 16; ++kt) {
      uint32_t a[4];
      ldmatrix_x4(a, &sm.p[lane & 15][kt * 16 + (lane >> 4) * 8]);
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) {
        uint32_t bb[4];
        const int n0 = warp * 128 + jj * 16;
        ldmatrix_x4_trans(bb, &sm.k[buf][kt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8][n0 + (lane >> 4) * 8]);
        mma_bf16(o[2 * jj], a, bb[0], bb[1]);
        mma_bf16(o[2 * jj + 1], a, bb[2], bb[3]);
      }
    }
    __syncthreads();
  }

  // Partial results of this split.
  if (sub == 0 && head0 + sm_head < p.heads) {
    p.ws_ml[ws_row * 2] = m_run;
    p.ws_ml[ws_row * 2 + 1] = l_run;
  }
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    const int d = warp * 128 + j * 8 + 2 * t4;
    if (head0 + g < p.heads) {
      float* dst = p.ws_o + ((b * p.heads + head0 + g) * p.splits + split) * kVDim + d;
      *reinterpret_cast<float2*>(dst) = make_float2(o[j][0], o[j][1]);
    }
    if (head0 + g + 8 < p.heads) {
      float* dst = p.ws_o + ((b * p.heads + head0 + g + 8) * p.splits + split) * kVDim + d;
      *reinterpret_cast<float2*>(dst) = make_float2(o[j][2], o[j][3]);
    }
  }
}

// One block of 128 threads per (sequence, head): out = sum_s 2^(m_s - M) O_s / sum_s 2^(m_s - M) l_s.
__global__ void mla_combine_kernel(const float* ws_o, const float* ws_ml, float* out, int splits) {
  const int64_t row = blockIdx.x;  // b * heads + h
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
    const float4 v = reinterpret_cast<const float4*>(ws_o + (row * splits + s) * kVDim)[threadIdx.x];
    acc[0] += w * v.x;
    acc[1] += w * v.y;
    acc[2] += w * v.z;
    acc[3] += w * v.w;
  }
  const float inv = 1.0f / denom;
  reinterpret_cast<float4*>(out + row * kVDim)[threadIdx.x] =
      make_float4(acc[0] * inv, acc[1] * inv, acc[2] * inv, acc[3] * inv);
}

}  // namespace

Status mla_decode(CudaContext& ctx, const MlaDecodeArgs& a) {
  if (a.kv_lora_rank != kVDim || a.kv_lora_rank + a.rope_dim != kDim) {
    return Status::Unsupported(str_cat("mla_decode: kv_lora_rank ", a.kv_lora_rank, " + rope ", a.rope_dim,
                                       " (only 512 + 64 is built)"));
  }
  const int64_t capacity = a.block_tables ? a.max_blocks * a.block_size : a.max_tokens;
  if (a.batch <= 0 || a.num_heads <= 0 || a.max_seq_len <= 0 || a.max_seq_len > capacity) {
    return Status::InvalidArgument(str_cat("mla_decode: batch ", a.batch, " heads ", a.num_heads, " max_seq_len ",
                                           a.max_seq_len, " max_tokens ", a.max_tokens));
  }
  const int64_t groups = (a.num_heads + kHeads - 1) / kHeads;
  int splits = a.num_splits;
  if (splits <= 0) {
    const int64_t base = a.batch * groups;
    const int64_t want = (4 * ctx.num_sms() + base - 1) / base;             // about two waves of 2 blocks per SM
    const int64_t most = std::max<int64_t>(1, a.max_seq_len / (4 * kTile));  // at least 4 tiles per split
    splits = static_cast<int>(std::clamp<int64_t>(want, 1, std::min<int64_t>(most, 64)));
  }
  int64_t split_tokens = (a.max_seq_len + splits - 1) / splits;
  split_tokens = (split_tokens + kTile - 1) / kTile * kTile;

  const size_t rows = static_cast<size_t>(a.batch * a.num_heads * splits);
  DSI_ASSIGN_OR_RETURN(void* ws, ctx.scratch(rows * (kVDim + 2) * sizeof(float)));
  MlaParams p{.q = a.q, .cache = reinterpret_cast<const __nv_bfloat16*>(a.cache), .seq_lens = a.seq_lens,
              .ws_o = static_cast<float*>(ws), .ws_ml = static_cast<float*>(ws) + rows * kVDim,
              .heads = a.num_heads, .max_tokens = a.max_tokens, .block_tables = a.block_tables,
              .max_blocks = a.max_blocks, .block_size = a.block_size, .splits = splits, .split_tokens = split_tokens,
              .scale_log2 = a.scale * kLog2e};
  const size_t smem = sizeof(Smem);
  DSI_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(mla_decode_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(groups), static_cast<unsigned>(a.batch));
  mla_decode_kernel<<<grid, kThreads, smem, ctx.stream()>>>(p);
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  mla_combine_kernel<<<static_cast<unsigned>(a.batch * a.num_heads), kVDim / 4, 0, ctx.stream()>>>(
      p.ws_o, p.ws_ml, a.out, splits);
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

}  // namespace dsi::cuda
