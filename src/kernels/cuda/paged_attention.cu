// Causal attention over a paged bf16 KV cache (or contiguous f32 K/V). Grid (query token, query head, split);
// 4 warps per block. Per 64-key tile: each warp scores 16 keys (lanes across head_dim, a shuffle reduction),
// the block updates the running max and sum, then each thread accumulates its output dims over the tile's keys
// (lanes read consecutive dims of one value row: coalesced). Splits of a long sequence write (O, m, l) to a
// workspace that attention_combine merges; one split writes the normalized output directly.
// GQA over the paged cache takes attention_gqa_kernel instead: grid (query token, kv head, split), the block
// computes all query heads of its kv head from one read of each K/V row. Prefill-sized chunks go to the tensor-core
// flash kernel (flash_prefill.cu) before any of these.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "kernels/cuda/bf16_load.cuh"
#include "kernels/cuda/cuda_attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/warp_reduce.cuh"

namespace dsi::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 64;
constexpr int kMaxDim = 1024;
constexpr int kMaxVPerThread = kMaxDim / kThreads;
constexpr int kMaxSplits = 64;

struct Params {
  PagedAttentionArgs a;
  int64_t group;  // query heads per kv head
  int splits;
  int64_t split_len;
  float* ws_o;   // [tokens, heads, splits, v_dim]
  float* ws_ml;  // [tokens, heads, splits, 2]
};

__device__ __forceinline__ float bf16_at(const uint16_t* p, int64_t i) { return __uint_as_float(uint32_t{p[i]} << 16); }

template <bool kPaged>
__device__ __forceinline__ int64_t row_of(const PagedAttentionArgs& a, int64_t seq, int64_t p) {
  if constexpr (kPaged) {
    return static_cast<int64_t>(a.block_tables[seq * a.max_blocks + p / a.block_size]) * a.block_size +
           p % a.block_size;
  } else {
    return p;
  }
}

template <bool kPaged>
__global__ void __launch_bounds__(kThreads) paged_attention_kernel(Params P) {
  pdl_enter();
  const PagedAttentionArgs& a = P.a;
  __shared__ float q[kMaxDim];
  __shared__ float s[kTile];
  __shared__ int64_t rows[kTile];
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int split = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t kvh = h / P.group;
  const int64_t seq = a.token_seq[t];
  const int64_t kv_len = int64_t{a.token_pos[t]} + 1;
  const int64_t start = split * P.split_len;
  const int64_t end = min(kv_len, start + P.split_len);
  const int64_t ws_row = (t * a.num_q_heads + h) * P.splits + split;
  if (start >= end) {
    if (tid == 0) {
      P.ws_ml[ws_row * 2] = -INFINITY;
      P.ws_ml[ws_row * 2 + 1] = 0.0f;
    }
    return;
  }
  for (int64_t d = tid; d < a.head_dim; d += kThreads) q[d] = a.q[t * a.q_token_stride + h * a.q_head_stride + d];

  float acc[kMaxVPerThread];
#pragma unroll
  for (int i = 0; i < kMaxVPerThread; ++i) acc[i] = 0.0f;
  float m_run = -INFINITY, l_run = 0.0f;
  __syncthreads();

  for (int64_t t0 = start; t0 < end; t0 += kTile) {
    // 1. Scores: warp w takes keys [16 w, 16 w + 16) of the tile.
    for (int j = warp * (kTile / 4); j < (warp + 1) * (kTile / 4); ++j) {
      const int64_t p = t0 + j;
      float dot = 0.0f;
      int64_t row = 0;
      if (p < end) {
        row = row_of<kPaged>(a, seq, p);
        if constexpr (kPaged) {
          const uint16_t* k = a.k_pool + row * a.k_row_width + kvh * a.k_head_stride;
          for (int64_t d = lane; d < a.head_dim; d += 32) dot = fmaf(q[d], bf16_at(k, d), dot);
        } else {
          const float* k = a.k_f32 + row * a.k_token_stride + kvh * a.k_head_stride;
          for (int64_t d = lane; d < a.head_dim; d += 32) dot = fmaf(q[d], k[d], dot);
        }
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      if (lane == 0) {
        s[j] = p < end ? dot * a.scale : -INFINITY;
        rows[j] = row;
      }
    }
    __syncthreads();
    // 2. Online softmax (every thread keeps the same running max and sum).
    float mx = m_run;
    for (int j = 0; j < kTile; ++j) mx = fmaxf(mx, s[j]);
    const float alpha = __expf(m_run - mx);  // m_run = -inf on the first tile: alpha = 0
    float sum = 0.0f;
    for (int j = 0; j < kTile; ++j) sum += __expf(s[j] - mx);
    l_run = l_run * alpha + sum;
    m_run = mx;
    // 3. Values.
#pragma unroll
    for (int i = 0; i < kMaxVPerThread; ++i) acc[i] *= alpha;
    const int64_t n_keys = min(static_cast<int64_t>(kTile), end - t0);
    for (int j = 0; j < n_keys; ++j) {
      const float pj = __expf(s[j] - mx);
      if constexpr (kPaged) {
        const uint16_t* v = a.v_pool + rows[j] * a.v_row_width + kvh * a.v_head_stride;
#pragma unroll
        for (int i = 0; i < kMaxVPerThread; ++i) {
          const int64_t d = tid + i * kThreads;
          if (d < a.v_dim) acc[i] = fmaf(pj, bf16_at(v, d), acc[i]);
        }
      } else {
        const float* v = a.v_f32 + rows[j] * a.v_token_stride + kvh * a.v_head_stride;
#pragma unroll
        for (int i = 0; i < kMaxVPerThread; ++i) {
          const int64_t d = tid + i * kThreads;
          if (d < a.v_dim) acc[i] = fmaf(pj, v[d], acc[i]);
        }
      }
    }
    __syncthreads();
  }

  if (P.splits == 1) {
    const float inv = 1.0f / l_run;
    float* out = a.out + t * a.out_token_stride + h * a.out_head_stride;
#pragma unroll
    for (int i = 0; i < kMaxVPerThread; ++i) {
      const int64_t d = tid + i * kThreads;
      if (d < a.v_dim) out[d] = acc[i] * inv;
    }
    return;
  }
  if (tid == 0) {
    P.ws_ml[ws_row * 2] = m_run;
    P.ws_ml[ws_row * 2 + 1] = l_run;
  }
#pragma unroll
  for (int i = 0; i < kMaxVPerThread; ++i) {
    const int64_t d = tid + i * kThreads;
    if (d < a.v_dim) P.ws_o[ws_row * a.v_dim + d] = acc[i];
  }
}

// The vectorized kernel: 16-byte loads (8 bf16 or 4 f32), many in flight per thread.
//   rows: the tile's 64 cache rows, computed once per tile;
//   scores: warp w dots 16 keys at once (each lane a slice of head_dim), then a butterfly per key;
//   softmax: warp 0 (running max and sum), probabilities to shared memory;
//   values: thread = (16-byte chunk of v_dim, key group); groups are summed at the end.
template <bool kPaged>
struct Vec {
  using T = std::conditional_t<kPaged, uint16_t, float>;
  static constexpr int kElems = kPaged ? 8 : 4;
};

template <bool kPaged>
__device__ __forceinline__ void load_chunk(const void* base, float (&out)[Vec<kPaged>::kElems]) {
  const uint4 v = *reinterpret_cast<const uint4*>(base);
  if constexpr (kPaged) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = __uint_as_float(w[i] << 16);
      out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  } else {
    out[0] = __uint_as_float(v.x);
    out[1] = __uint_as_float(v.y);
    out[2] = __uint_as_float(v.z);
    out[3] = __uint_as_float(v.w);
  }
}

template <bool kPaged>
__global__ void __launch_bounds__(kThreads) attention_vec_kernel(Params P) {
  pdl_enter();
  using T = typename Vec<kPaged>::T;
  constexpr int E = Vec<kPaged>::kElems;
  constexpr int kKeysPerWarp = kTile / (kThreads / 32);  // 16
  const PagedAttentionArgs& a = P.a;
  __shared__ __align__(16) float q[kMaxDim];
  __shared__ float s[kTile];
  __shared__ float pr[kTile];
  __shared__ int64_t rows[kTile];
  __shared__ float red[kThreads * 8];
  __shared__ float sh_alpha, sh_l;
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int split = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t kvh = h / P.group;
  const int64_t seq = a.token_seq[t];
  const int64_t kv_len = int64_t{a.token_pos[t]} + 1;
  const int64_t start = split * P.split_len;
  const int64_t end = min(kv_len, start + P.split_len);
  const int64_t ws_row = (t * a.num_q_heads + h) * P.splits + split;
  if (start >= end) {
    if (tid == 0) {
      P.ws_ml[ws_row * 2] = -INFINITY;
      P.ws_ml[ws_row * 2 + 1] = 0.0f;
    }
    return;
  }
  for (int64_t d = tid; d < a.head_dim; d += kThreads) q[d] = a.q[t * a.q_token_stride + h * a.q_head_stride + d];
  const T* kbase = kPaged ? reinterpret_cast<const T*>(a.k_pool) + kvh * a.k_head_stride
                          : reinterpret_cast<const T*>(a.k_f32) + kvh * a.k_head_stride;
  const T* vbase = kPaged ? reinterpret_cast<const T*>(a.v_pool) + kvh * a.v_head_stride
                          : reinterpret_cast<const T*>(a.v_f32) + kvh * a.v_head_stride;
  const int64_t k_row = kPaged ? a.k_row_width : a.k_token_stride;
  const int64_t v_row = kPaged ? a.v_row_width : a.v_token_stride;
  const int k_chunks = static_cast<int>(a.head_dim / E), v_chunks = static_cast<int>(a.v_dim / E);
  const int v_per_thread = (v_chunks + kThreads - 1) / kThreads;  // 1 or 2
  const int groups = v_per_thread > 1 ? 1 : kThreads / v_chunks;
  const int my_chunk = tid % v_chunks, my_group = tid / v_chunks;
  const bool v_active = my_group < groups;
  float acc[2][E];
#pragma unroll
  for (int u = 0; u < 2; ++u)
#pragma unroll
    for (int e = 0; e < E; ++e) acc[u][e] = 0.0f;
  float m_run = -INFINITY, l_run = 0.0f;  // meaningful in warp 0

  for (int64_t t0 = start; t0 < end; t0 += kTile) {
    const int n_keys = static_cast<int>(min(static_cast<int64_t>(kTile), end - t0));
    if (tid < kTile) {
      const int64_t p = t0 + tid;
      rows[tid] = tid < n_keys ? row_of<kPaged>(a, seq, p) : -1;
    }
    __syncthreads();
    // Scores.
    float part[kKeysPerWarp];
#pragma unroll
    for (int kk = 0; kk < kKeysPerWarp; ++kk) part[kk] = 0.0f;
    for (int c = lane; c < k_chunks; c += 32) {
      float qv[E];
#pragma unroll
      for (int e = 0; e < E; ++e) qv[e] = q[c * E + e];
#pragma unroll
      for (int kk = 0; kk < kKeysPerWarp; ++kk) {
        const int64_t r = rows[warp * kKeysPerWarp + kk];
        if (r >= 0) {
          float kv[E];
          load_chunk<kPaged>(kbase + r * k_row + c * E, kv);
#pragma unroll
          for (int e = 0; e < E; ++e) part[kk] = fmaf(qv[e], kv[e], part[kk]);
        }
      }
    }
#pragma unroll
    for (int kk = 0; kk < kKeysPerWarp; ++kk) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) part[kk] += __shfl_xor_sync(0xffffffffu, part[kk], o);
    }
    if (lane < kKeysPerWarp) {
      float mine = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kKeysPerWarp; ++kk) mine = lane == kk ? part[kk] : mine;
      const int j = warp * kKeysPerWarp + lane;
      s[j] = j < n_keys ? mine * a.scale : -INFINITY;
    }
    __syncthreads();
    // Online softmax in warp 0.
    if (warp == 0) {
      const float s0 = s[lane], s1 = s[lane + 32];
      float mx = fmaxf(s0, s1);
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_new = fmaxf(m_run, mx);
      const float p0 = __expf(s0 - m_new), p1 = __expf(s1 - m_new);
      pr[lane] = p0;
      pr[lane + 32] = p1;
      float sum = p0 + p1;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      const float alpha = __expf(m_run - m_new);
      l_run = l_run * alpha + sum;
      m_run = m_new;
      if (lane == 0) sh_alpha = alpha;
    }
    __syncthreads();
    // Values.
    if (v_active) {
      const float alpha = sh_alpha;
#pragma unroll
      for (int u = 0; u < 2; ++u)
#pragma unroll
        for (int e = 0; e < E; ++e) acc[u][e] *= alpha;
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const int c = my_chunk + u * kThreads;
        if (u >= v_per_thread || c >= v_chunks) break;
#pragma unroll 4
        for (int j = my_group; j < n_keys; j += groups) {
          float vv[E];
          load_chunk<kPaged>(vbase + rows[j] * v_row + c * E, vv);
          const float pj = pr[j];
#pragma unroll
          for (int e = 0; e < E; ++e) acc[u][e] = fmaf(pj, vv[e], acc[u][e]);
        }
      }
    }
    __syncthreads();
  }
  if (tid == 0) sh_l = l_run;
  // Sum the key groups: red[group][v_dim].
  if (groups > 1) {
    if (v_active) {
#pragma unroll
      for (int e = 0; e < E; ++e) red[my_group * a.v_dim + my_chunk * E + e] = acc[0][e];
    }
    __syncthreads();
  } else {
    __syncthreads();
  }
  const float l = sh_l;
  for (int64_t d = tid; d < a.v_dim; d += kThreads) {
    float o;
    if (groups > 1) {
      o = 0.0f;
      for (int g = 0; g < groups; ++g) o += red[g * a.v_dim + d];
    } else {
      o = NAN;  // filled below from registers
    }
    if (groups > 1) {
      if (P.splits == 1) {
        a.out[t * a.out_token_stride + h * a.out_head_stride + d] = o / l;
      } else {
        P.ws_o[ws_row * a.v_dim + d] = o;
      }
    }
  }
  if (groups == 1) {
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int c = tid + u * kThreads;
      if (u >= v_per_thread || c >= v_chunks) break;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const int64_t d = int64_t{c} * E + e;
        if (P.splits == 1) {
          a.out[t * a.out_token_stride + h * a.out_head_stride + d] = acc[u][e] / l;
        } else {
          P.ws_o[ws_row * a.v_dim + d] = acc[u][e];
        }
      }
    }
  }
  if (P.splits > 1 && tid == 0) {
    P.ws_ml[ws_row * 2] = m_run;
    P.ws_ml[ws_row * 2 + 1] = l_run;
  }
}

// The multi-query variant for prefill: kQ consecutive query tokens of one sequence share each tile's key and value
// loads (the single-query kernel re-reads them from L2 for every token). Each query has its own causal limit,
// running max and sum (softmax in warp q for query q); values: one 16-byte chunk per thread and key group.
constexpr int kQ = 4;

template <bool kPaged>
__global__ void __launch_bounds__(kThreads) attention_mq_kernel(Params P) {
  pdl_enter();
  using T = typename Vec<kPaged>::T;
  constexpr int E = Vec<kPaged>::kElems;
  constexpr int kKeysPerWarp = kTile / (kThreads / 32);  // 16
  constexpr int kVals = kKeysPerWarp * kQ;               // 64 partial dots per lane
  const PagedAttentionArgs& a = P.a;
  __shared__ __align__(16) float q[kQ][kMaxDim];
  __shared__ float s[kQ][kTile];
  __shared__ float pr[kQ][kTile];
  __shared__ int64_t rows[kTile];
  __shared__ float red[kQ][kThreads * E];
  __shared__ float sh_alpha[kQ], sh_l[kQ], sh_m[kQ];
  const int64_t tq0 = int64_t{blockIdx.x} * kQ, h = blockIdx.y;
  const int split = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int nq = static_cast<int>(min(static_cast<int64_t>(kQ), a.num_tokens - tq0));
  const int64_t kvh = h / P.group;
  const int64_t seq = a.token_seq[tq0];
  int64_t qpos[kQ];
  int64_t kv_max = 0;
#pragma unroll
  for (int i = 0; i < kQ; ++i) {
    qpos[i] = i < nq ? int64_t{a.token_pos[tq0 + i]} : -1;
    kv_max = max(kv_max, qpos[i] + 1);
  }
  const int64_t start = split * P.split_len;
  const int64_t end = min(kv_max, start + P.split_len);
  if (start >= end) {
    if (tid < nq) {
      const int64_t ws_row = ((tq0 + tid) * a.num_q_heads + h) * P.splits + split;
      P.ws_ml[ws_row * 2] = -INFINITY;
      P.ws_ml[ws_row * 2 + 1] = 0.0f;
    }
    return;
  }
  for (int i = 0; i < kQ; ++i) {
    for (int64_t d = tid; d < a.head_dim; d += kThreads) {
      q[i][d] = i < nq ? a.q[(tq0 + i) * a.q_token_stride + h * a.q_head_stride + d] : 0.0f;
    }
  }
  const T* kbase = kPaged ? reinterpret_cast<const T*>(a.k_pool) + kvh * a.k_head_stride
                          : reinterpret_cast<const T*>(a.k_f32) + kvh * a.k_head_stride;
  const T* vbase = kPaged ? reinterpret_cast<const T*>(a.v_pool) + kvh * a.v_head_stride
                          : reinterpret_cast<const T*>(a.v_f32) + kvh * a.v_head_stride;
  const int64_t k_row = kPaged ? a.k_row_width : a.k_token_stride;
  const int64_t v_row = kPaged ? a.v_row_width : a.v_token_stride;
  const int k_chunks = static_cast<int>(a.head_dim / E), v_chunks = static_cast<int>(a.v_dim / E);
  const int groups = kThreads / v_chunks;  // the launcher guarantees v_chunks <= kThreads
  const int my_chunk = tid % v_chunks, my_group = tid / v_chunks;
  const bool v_active = my_group < groups;
  float acc[kQ][E];
#pragma unroll
  for (int i = 0; i < kQ; ++i)
#pragma unroll
    for (int e = 0; e < E; ++e) acc[i][e] = 0.0f;
  float m_run = -INFINITY, l_run = 0.0f;  // of query `warp` (warps 0 .. kQ-1)

  for (int64_t t0 = start; t0 < end; t0 += kTile) {
    const int n_keys = static_cast<int>(min(static_cast<int64_t>(kTile), end - t0));
    if (tid < kTile) rows[tid] = tid < n_keys ? row_of<kPaged>(a, seq, t0 + tid) : -1;
    __syncthreads();
    float part[kVals];  // [key kk][query i] at kk * kQ + i
#pragma unroll
    for (int v = 0; v < kVals; ++v) part[v] = 0.0f;
    for (int c = lane; c < k_chunks; c += 32) {
      float qv[kQ][E];
#pragma unroll
      for (int i = 0; i < kQ; ++i)
#pragma unroll
        for (int e = 0; e < E; ++e) qv[i][e] = q[i][c * E + e];
#pragma unroll
      for (int kk = 0; kk < kKeysPerWarp; ++kk) {
        const int64_t r = rows[warp * kKeysPerWarp + kk];
        if (r >= 0) {
          float kv[E];
          load_chunk<kPaged>(kbase + r * k_row + c * E, kv);
#pragma unroll
          for (int i = 0; i < kQ; ++i)
#pragma unroll
            for (int e = 0; e < E; ++e) part[kk * kQ + i] = fmaf(qv[i][e], kv[e], part[kk * kQ + i]);
        }
      }
    }
    // Lane l ends with the full sums of values 2l and 2l + 1.
    warp_reduce_scatter<kVals, 16>(part, lane);
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int v = 2 * lane + u, kk = v / kQ, i = v % kQ;
      const int j = warp * kKeysPerWarp + kk;
      const bool ok = j < n_keys && i < nq && t0 + j <= qpos[i];
      s[i][j] = ok ? part[u] * a.scale : -INFINITY;
    }
    __syncthreads();
    if (warp < kQ) {
      const float s0 = s[warp][lane], s1 = s[warp][lane + 32];
      const float mx = warp_max(fmaxf(s0, s1));
      const float m_new = fmaxf(m_run, mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // no key yet: p = 0, alpha = 0
      const float p0 = __expf(s0 - m_use), p1 = __expf(s1 - m_use);
      pr[warp][lane] = p0;
      pr[warp][lane + 32] = p1;
      const float sum = warp_sum(p0 + p1);
      const float alpha = __expf(m_run - m_use);
      l_run = l_run * alpha + sum;
      m_run = m_new;
      if (lane == 0) sh_alpha[warp] = alpha;
    }
    __syncthreads();
    if (v_active) {
#pragma unroll
      for (int i = 0; i < kQ; ++i) {
        const float alpha = sh_alpha[i];
#pragma unroll
        for (int e = 0; e < E; ++e) acc[i][e] *= alpha;
      }
#pragma unroll 2
      for (int j = my_group; j < n_keys; j += groups) {
        float vv[E];
        load_chunk<kPaged>(vbase + rows[j] * v_row + my_chunk * E, vv);
#pragma unroll
        for (int i = 0; i < kQ; ++i) {
          const float pj = pr[i][j];
#pragma unroll
          for (int e = 0; e < E; ++e) acc[i][e] = fmaf(pj, vv[e], acc[i][e]);
        }
      }
    }
    __syncthreads();
  }
  if (warp < kQ && lane == 0) {
    sh_l[warp] = l_run;
    sh_m[warp] = m_run;
  }
  if (v_active) {
#pragma unroll
    for (int i = 0; i < kQ; ++i)
#pragma unroll
      for (int e = 0; e < E; ++e) red[i][my_group * a.v_dim + my_chunk * E + e] = acc[i][e];
  }
  __syncthreads();
  for (int i = 0; i < nq; ++i) {
    const int64_t tok = tq0 + i;
    const int64_t ws_row = (tok * a.num_q_heads + h) * P.splits + split;
    for (int64_t d = tid; d < a.v_dim; d += kThreads) {
      float o = 0.0f;
      for (int g = 0; g < groups; ++g) o += red[i][g * a.v_dim + d];
      if (P.splits == 1) {
        a.out[tok * a.out_token_stride + h * a.out_head_stride + d] = o / sh_l[i];
      } else {
        P.ws_o[ws_row * a.v_dim + d] = o;
      }
    }
    if (P.splits > 1 && tid == 0) {
      P.ws_ml[ws_row * 2] = sh_m[i];
      P.ws_ml[ws_row * 2 + 1] = sh_l[i];
    }
  }
}

// GQA decode over the paged bf16 cache: one block per (query token, kv head, split) computes the `group` query heads
// that share the kv head (padded to kG in {2, 4, 8}; padded heads have q = 0 and are not written), so each K and V
// byte is read once per block instead of once per query head.
//   Lane groups of kL lanes (16 when head_dim, v_dim <= 128; 8 when <= 64): lane c of a lane group holds 16-byte
//   chunk c of the K and V rows of kGqaKeys keys, loaded together (2 * kGqaKeys loads in flight per lane), so all
//   lanes are busy at head_dim 128 and a block covers kStep = 128 / kL * kGqaKeys keys per step.
//   Scores: kG * kGqaKeys partial dots per lane, reduce-scattered over the lane group; the lanes owning one head's
//   dots take its running max (xor shuffles among them) and probabilities, which reach the lane group's other
//   lanes through shared memory between two __syncwarp.
//   Each lane group keeps its own online softmax (m, l per head, identical in its lanes) and accumulators [kG][8]
//   for its chunk: the key loop has no __syncthreads. The lane groups merge once at the end (weights
//   e^(m_group - M)), then the block writes the output or its split's (O, m, l) rows: ws row (token, q head, split),
//   as the other kernels, for attention_combine.
// Keys per lane group per step: 4 (8 loads of 16 bytes in flight per lane); 2 at kG = 8, whose 64 accumulators
// per lane leave fewer registers.
template <int kG>
constexpr int kGqaKeys = kG == 8 ? 2 : 4;
constexpr int kMaxGroup = 8;       // larger groups (MLA absorbed: 16 .. 128 heads on one latent): per-head kernel
constexpr int kGqaMaxChunks = 16;  // head_dim, v_dim <= 128 (16-byte chunks of 8 bf16)

__device__ __forceinline__ void unpack_bf16x8(const uint4& v, float (&out)[8]) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = lo_bf16(w[i]);
    out[2 * i + 1] = hi_bf16(w[i]);
  }
}

template <int kG, int kL>
__global__ void __launch_bounds__(kThreads) attention_gqa_kernel(Params P) {
  pdl_enter();
  constexpr int kN = kGqaKeys<kG>;
  constexpr int kLaneGroups = kThreads / kL;          // 8 or 16
  constexpr int kStep = kLaneGroups * kN;             // keys per block step: 32 (kL 16) or 64 (kL 8)
  constexpr int kVals = kG * kN;                      // partial dots per lane: head g, key i at g * kN + i
  constexpr int kOwn = kVals >= kL ? kVals / kL : 1;  // full dots per lane after the reduce-scatter
  constexpr int kHeadLanes = kL / kG;                 // the aligned run of lanes that owns one head's dots
  constexpr int kWidth = kL * 8;                      // dims a lane group covers (>= head_dim, v_dim)
  constexpr int kWarps = kThreads / 32;
  static_assert(kN % kOwn == 0 && kHeadLanes >= 1 && 32 % kL == 0 && kTile % kStep == 0);
  const PagedAttentionArgs& a = P.a;
  __shared__ __align__(16) float q_s[kG][kWidth];          // the group's queries, zero past head_dim and group
  __shared__ __align__(16) float p_s[kLaneGroups][kVals];  // a step's probabilities, [head][key] per lane group
  __shared__ float m_s[kLaneGroups][kG];                   // a step's new running max per head
  __shared__ float gm_s[kLaneGroups][kG], gl_s[kLaneGroups][kG];
  __shared__ float hm_s[kG], hl_s[kG];
  __shared__ __align__(16) float red_s[kWarps][kG][kWidth];
  const int64_t t = blockIdx.x, kvh = blockIdx.y;
  const int split = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int grp = tid / kL, lg = tid % kL;  // lane group; lane in it = the 16-byte chunk of head_dim / v_dim
  const int group = static_cast<int>(P.group);
  const int v_dim = static_cast<int>(a.v_dim);
  const int64_t h0 = kvh * P.group;  // first query head of the block
  const int64_t seq = a.token_seq[t];
  const int64_t kv_len = int64_t{a.token_pos[t]} + 1;
  const int64_t start = split * P.split_len;
  const int64_t end = min(kv_len, start + P.split_len);
  const int64_t ws_row0 = (t * a.num_q_heads + h0) * P.splits + split;  // query head h0 + g: ws_row0 + g * splits
  if (start >= end) {
    if (tid < group) {
      P.ws_ml[(ws_row0 + tid * P.splits) * 2] = -INFINITY;
      P.ws_ml[(ws_row0 + tid * P.splits) * 2 + 1] = 0.0f;
    }
    return;
  }
  for (int i = tid; i < kG * kWidth; i += kThreads) {
    const int g = i / kWidth, d = i % kWidth;
    q_s[g][d] = g < group && d < a.head_dim ? a.q[t * a.q_token_stride + (h0 + g) * a.q_head_stride + d] : 0.0f;
  }
  const int32_t* table = a.block_tables + seq * a.max_blocks;
  const uint32_t bs = static_cast<uint32_t>(a.block_size);
  // Cache rows of keys kb .. kb + kN - 1, -1 from the split's end on (one 32-bit division per step).
  auto rows_from = [&](int64_t kb, int64_t (&rows)[kN]) {
    uint32_t b = static_cast<uint32_t>(kb) / bs, o = static_cast<uint32_t>(kb) - b * bs;
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      rows[i] = kb + i < end ? int64_t{table[b]} * a.block_size + o : -1;
      if (++o == bs) {
        o = 0;
        ++b;
      }
    }
  };
  const uint16_t* kbase = a.k_pool + kvh * a.k_head_stride + lg * 8;
  const uint16_t* vbase = a.v_pool + kvh * a.v_head_stride + lg * 8;
  const bool k_lane = lg * 8 < a.head_dim, v_lane = lg * 8 < a.v_dim;
  // After the reduce-scatter this lane owns the full dots v0 .. v0 + kOwn - 1: head g_own, keys i_own ...
  const int v0 = lg * kVals / kL;
  const int g_own = v0 / kN, i_own = v0 % kN;
  float acc[kG][8];
  float m_run[kG], l_run[kG];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    m_run[g] = -INFINITY;
    l_run[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] = 0.0f;
  }
  int64_t rows[kN];
  rows_from(start + grp * kN, rows);
  __syncthreads();  // q_s

  for (int64_t t0 = start; t0 < end; t0 += kStep) {
    const int64_t kb = t0 + grp * kN;  // this lane group's keys: kb .. kb + kN - 1
    uint4 kr[kN], vr[kN];
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      kr[i] = vr[i] = make_uint4(0u, 0u, 0u, 0u);
      if (rows[i] >= 0 && k_lane) kr[i] = load_stream(kbase + rows[i] * a.k_row_width);
      if (rows[i] >= 0 && v_lane) vr[i] = load_stream(vbase + rows[i] * a.v_row_width);
    }
    rows_from(kb + kStep, rows);  // the next step's block-table reads overlap this step's K/V loads
    // Scores: partial dots over this lane's chunk, then the reduce-scatter over the lane group.
    float kf[kN][8];
#pragma unroll
    for (int i = 0; i < kN; ++i) unpack_bf16x8(kr[i], kf[i]);
    float part[kVals];
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      const float4 qa = *reinterpret_cast<const float4*>(&q_s[g][lg * 8]);
      const float4 qb = *reinterpret_cast<const float4*>(&q_s[g][lg * 8 + 4]);
      const float qv[8] = {qa.x, qa.y, qa.z, qa.w, qb.x, qb.y, qb.z, qb.w};
#pragma unroll
      for (int i = 0; i < kN; ++i) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) dot = fmaf(qv[e], kf[i][e], dot);
        part[g * kN + i] = dot;
      }
    }
    warp_reduce_scatter<kVals, kL / 2>(part, lane);
    // The owners of head g_own: its max over the lane group's keys, the new running max and the probabilities.
    float s_own[kOwn];
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < kOwn; ++j) {
      s_own[j] = kb + i_own + j < end ? part[j] * a.scale : -INFINITY;
      mx = fmaxf(mx, s_own[j]);
    }
#pragma unroll
    for (int o = 1; o < kHeadLanes; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float m_old = m_run[0];
#pragma unroll
    for (int g = 1; g < kG; ++g) m_old = g == g_own ? m_run[g] : m_old;
    const float m_new = fmaxf(m_old, mx);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // no key yet: p = 0
#pragma unroll
    for (int j = 0; j < kOwn; ++j) p_s[grp][v0 + j] = __expf(s_own[j] - m_use);
    if (i_own == 0) m_s[grp][g_own] = m_new;
    __syncwarp();
    // Every lane: rescale and accumulate its value chunk for every head.
    float vf[kN][8];
#pragma unroll
    for (int i = 0; i < kN; ++i) unpack_bf16x8(vr[i], vf[i]);
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      const float mn = m_s[grp][g];
      const float alpha = __expf(m_run[g] - (mn == -INFINITY ? 0.0f : mn));  // m_run = -inf: 0
      m_run[g] = mn;
      float pg[kN];
      float psum = 0.0f;
#pragma unroll
      for (int i = 0; i < kN; ++i) {
        pg[i] = p_s[grp][g * kN + i];
        psum += pg[i];
      }
      l_run[g] = l_run[g] * alpha + psum;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        float o = acc[g][e] * alpha;
#pragma unroll
        for (int i = 0; i < kN; ++i) o = fmaf(pg[i], vf[i][e], o);
        acc[g][e] = o;
      }
    }
    __syncwarp();  // p_s and m_s are rewritten by the next step
  }

  // Merge the lane groups. Group 0 saw the split's first key, so every head's max M is finite.
  if (lg == 0) {
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      gm_s[grp][g] = m_run[g];
      gl_s[grp][g] = l_run[g];
    }
  }
  __syncthreads();
  if (tid < kG) {
    float mx = -INFINITY;
    for (int k = 0; k < kLaneGroups; ++k) mx = fmaxf(mx, gm_s[k][tid]);
    float l = 0.0f;
    for (int k = 0; k < kLaneGroups; ++k) l += __expf(gm_s[k][tid] - mx) * gl_s[k][tid];  // empty group: 0 * 0
    hm_s[tid] = mx;
    hl_s[tid] = l;
  }
  __syncthreads();
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    const float w = __expf(m_run[g] - hm_s[g]);  // a lane group that saw no key: m_run = -inf, w = 0
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      float v = acc[g][e] * w;
#pragma unroll
      for (int o = kL; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      acc[g][e] = v;
    }
  }
  if (lane < kL) {  // the warp's first lane group (lg == lane) holds the warp's sums
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      *reinterpret_cast<float4*>(&red_s[warp][g][lg * 8]) = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
      *reinterpret_cast<float4*>(&red_s[warp][g][lg * 8 + 4]) =
          make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
    }
  }
  __syncthreads();
  for (int i = tid; i < group * v_dim; i += kThreads) {
    const int g = i / v_dim, d = i % v_dim;
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) o += red_s[w][g][d];
    if (P.splits == 1) {
      a.out[t * a.out_token_stride + (h0 + g) * a.out_head_stride + d] = o / hl_s[g];
    } else {
      P.ws_o[(ws_row0 + g * P.splits) * a.v_dim + d] = o;
    }
  }
  if (P.splits > 1 && tid < group) {
    P.ws_ml[(ws_row0 + tid * P.splits) * 2] = hm_s[tid];
    P.ws_ml[(ws_row0 + tid * P.splits) * 2 + 1] = hl_s[tid];
  }
}

// One block per (token, head): out = sum_s e^(m_s - M) O_s / sum_s e^(m_s - M) l_s. Splits that saw no key (l = 0)
// left O unwritten and weigh 0. Warp 0 turns the (m, l) rows into weights once; splits <= kMaxSplits.
__global__ void attention_combine_kernel(Params P) {
  pdl_enter();
  const PagedAttentionArgs& a = P.a;
  __shared__ float w[kMaxSplits];
  __shared__ float sh_inv;
  const int64_t t = blockIdx.x / a.num_q_heads, h = blockIdx.x % a.num_q_heads;
  const int64_t base = (t * a.num_q_heads + h) * P.splits;
  if (threadIdx.x < 32) {
    const int lane = static_cast<int>(threadIdx.x);
    float m[2], l[2];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int s = lane + 32 * u;
      l[u] = s < P.splits ? P.ws_ml[(base + s) * 2 + 1] : 0.0f;
      m[u] = l[u] > 0.0f ? P.ws_ml[(base + s) * 2] : -INFINITY;
    }
    const float mx = warp_max(fmaxf(m[0], m[1]));  // split 0 holds key 0: finite
    float denom = 0.0f;
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int s = lane + 32 * u;
      const float ws = l[u] > 0.0f ? __expf(m[u] - mx) : 0.0f;
      if (s < P.splits) w[s] = ws;
      denom += ws * l[u];
    }
    denom = warp_sum(denom);
    if (lane == 0) sh_inv = 1.0f / denom;
  }
  __syncthreads();
  const float inv = sh_inv;
  float* out = a.out + t * a.out_token_stride + h * a.out_head_stride;
  for (int64_t d = threadIdx.x; d < a.v_dim; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < P.splits; ++s) {
      if (w[s] > 0.0f) acc += w[s] * P.ws_o[(base + s) * a.v_dim + d];
    }
    out[d] = acc * inv;
  }
}

template <int kL>
Status launch_gqa(CudaContext& ctx, int64_t group, const dim3& grid, const Params& P) {
  if (group <= 2) {
    { const auto kernel_fn = attention_gqa_kernel<2, kL>;
      DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(kThreads), 0, P); }
  } else if (group <= 4) {
    { const auto kernel_fn = attention_gqa_kernel<4, kL>;
      DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(kThreads), 0, P); }
  } else {
    { const auto kernel_fn = attention_gqa_kernel<8, kL>;
      DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(kThreads), 0, P); }
  }
  return Status::Ok();
}

}  // namespace

Status paged_attention(CudaContext& ctx, const PagedAttentionArgs& a) { return paged_attention(ctx, a, {}); }

Status paged_attention(CudaContext& ctx, const PagedAttentionArgs& a, const PagedAttentionOptions& options) {
  const bool paged = a.k_pool != nullptr;
  if (int{paged} + int{a.k_f32 != nullptr} + int{a.k_bf16 != nullptr} != 1) {
    return Status::InvalidArgument(
        "paged_attention: give exactly one of k_pool (paged bf16), k_f32 and k_bf16 (contiguous)");
  }
  if (a.num_tokens == 0) return Status::Ok();
  // Prefill-sized work: the tensor-core flash kernel (flash_prefill.cu). Contiguous bf16 K/V have no other kernel.
  if (picks_flash_prefill(a, options)) return flash_prefill_attention(ctx, a);
  if (a.k_bf16 != nullptr) {
    return Status::Unsupported(str_cat("paged_attention: contiguous bf16 K/V need the flash prefill kernel (head_dim ",
                                       a.head_dim, " v_dim ", a.v_dim, ", single_sequence or chunk_starts, ",
                                       "16-byte aligned rows; see flash_prefill_supported)"));
  }
  if (a.num_tokens < 0 || a.num_q_heads <= 0 || a.num_kv_heads <= 0 || a.num_q_heads % a.num_kv_heads != 0) {
    return Status::InvalidArgument(str_cat("paged_attention: tokens ", a.num_tokens, " q heads ", a.num_q_heads,
                                           " kv heads ", a.num_kv_heads));
  }
  if (a.head_dim <= 0 || a.head_dim > kMaxDim || a.v_dim <= 0 || a.v_dim > kMaxDim) {
    return Status::Unsupported(str_cat("paged_attention: head_dim ", a.head_dim, " v_dim ", a.v_dim,
                                       " (each must be in [1, ", kMaxDim, "])"));
  }
  if (a.max_kv_len <= 0) return Status::InvalidArgument("paged_attention: max_kv_len must be positive");
  if (paged && (a.block_tables == nullptr || a.block_size <= 0 || a.v_pool == nullptr)) {
    return Status::InvalidArgument("paged_attention: paged K/V need block_tables, block_size and v_pool");
  }
  if (!paged && a.v_f32 == nullptr) return Status::InvalidArgument("paged_attention: k_f32 without v_f32");
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  // The vectorized kernels need 16-byte aligned rows and head slices; anything else takes the scalar kernel.
  const int64_t e = paged ? 8 : 4;
  const void* kp = paged ? static_cast<const void*>(a.k_pool) : a.k_f32;
  const void* vp = paged ? static_cast<const void*>(a.v_pool) : a.v_f32;
  const int64_t k_row = paged ? a.k_row_width : a.k_token_stride, v_row = paged ? a.v_row_width : a.v_token_stride;
  const bool vec = a.head_dim % e == 0 && a.v_dim % e == 0 && k_row % e == 0 && v_row % e == 0 &&
                   a.k_head_stride % e == 0 && a.v_head_stride % e == 0 && reinterpret_cast<uintptr_t>(kp) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(vp) % 16 == 0 && a.v_dim / e <= 2 * kThreads &&
                   std::getenv("DSI_ATTENTION_SCALAR") == nullptr;
  // Prefill of one sequence: kQ queries per block (the split covers the longest of them).
  const bool mq = vec && a.single_sequence && a.num_tokens >= 2 * kQ && a.v_dim / e <= kThreads;
  // GQA over the paged cache (decode, or tokens of several sequences): one block per kv head and group.
  const bool gqa = options.grouped && vec && paged && !mq && group >= 2 && group <= kMaxGroup &&
                   a.head_dim <= 8 * kGqaMaxChunks && a.v_dim <= 8 * kGqaMaxChunks;
  Params P{.a = a, .group = group, .splits = 1, .split_len = 0, .ws_o = nullptr, .ws_ml = nullptr};
  // Splits over the sequence (flash-decoding): about 8 blocks per SM. A split costs, per query head, v_dim + 2
  // floats written to the workspace and read back by the combine kernel (one more launch, a few us): per kv head
  // 8 * group * v_dim bytes against split_len * 2 * (head_dim + v_dim) bytes of K/V, i.e. 2 * group / split_len
  // of the K/V traffic when head_dim = v_dim (1/8 at group 4 and 64-key splits). So splits only while the grid
  // leaves SMs idle: when the batch alone gives 8 blocks per SM there is one split. The single-query kernels may
  // go down to one 64-key tile per split (decode at batch 1: a long split is a serial chain of per-tile load
  // latencies); the multi-query prefill kernel keeps at least 4 tiles.
  const int64_t blocks_per_split = a.num_tokens * (gqa ? a.num_kv_heads : a.num_q_heads);
  const int64_t want = (8 * int64_t{ctx.num_sms()} + blocks_per_split - 1) / blocks_per_split;
  const int64_t min_tiles = mq || !options.short_splits ? 4 : 1;
  const int64_t most = std::max<int64_t>(1, (a.max_kv_len + min_tiles * kTile - 1) / (min_tiles * kTile));
  P.splits = static_cast<int>(std::clamp<int64_t>(want, 1, std::min<int64_t>(most, kMaxSplits)));
  P.split_len = ((a.max_kv_len + P.splits - 1) / P.splits + kTile - 1) / kTile * kTile;
  P.splits = static_cast<int>((a.max_kv_len + P.split_len - 1) / P.split_len);
  const int64_t out_rows = a.num_tokens * a.num_q_heads;
  if (P.splits > 1) {
    const size_t rows = static_cast<size_t>(out_rows * P.splits);
    DSI_ASSIGN_OR_RETURN(void* ws, ctx.scratch(rows * (a.v_dim + 2) * sizeof(float)));
    P.ws_o = static_cast<float*>(ws);
    P.ws_ml = P.ws_o + rows * a.v_dim;
  } else {
    DSI_ASSIGN_OR_RETURN(void* ws, ctx.scratch(static_cast<size_t>(out_rows) * 2 * sizeof(float)));
    P.ws_ml = static_cast<float*>(ws);  // written only by splits that see no key (none when splits == 1)
  }
  const dim3 grid(static_cast<unsigned>(a.num_tokens), static_cast<unsigned>(a.num_q_heads),
                  static_cast<unsigned>(P.splits));
  if (gqa) {
    const dim3 gqa_grid(static_cast<unsigned>(a.num_tokens), static_cast<unsigned>(a.num_kv_heads),
                        static_cast<unsigned>(P.splits));
    if (a.head_dim <= 64 && a.v_dim <= 64) {
      DSI_RETURN_IF_ERROR(launch_gqa<8>(ctx, group, gqa_grid, P));
    } else {
      DSI_RETURN_IF_ERROR(launch_gqa<16>(ctx, group, gqa_grid, P));
    }
  } else if (mq) {
    const dim3 mq_grid(static_cast<unsigned>((a.num_tokens + kQ - 1) / kQ), static_cast<unsigned>(a.num_q_heads),
                       static_cast<unsigned>(P.splits));
    if (paged) {
      { const auto kernel_fn = attention_mq_kernel<true>;
        DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(mq_grid), dim3(kThreads), 0, P); }
    } else {
      { const auto kernel_fn = attention_mq_kernel<false>;
        DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(mq_grid), dim3(kThreads), 0, P); }
    }
  } else if (vec && paged) {
    { const auto kernel_fn = attention_vec_kernel<true>;
      DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(kThreads), 0, P); }
  } else if (vec) {
    { const auto kernel_fn = attention_vec_kernel<false>;
      DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(kThreads), 0, P); }
  } else if (paged) {
    { const auto kernel_fn = paged_attention_kernel<true>;
      DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(kThreads), 0, P); }
  } else {
    { const auto kernel_fn = paged_attention_kernel<false>;
      DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(kThreads), 0, P); }
  }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  if (P.splits > 1) {
    { const auto kernel_fn = attention_combine_kernel;
      DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(static_cast<unsigned>(out_rows)), dim3(128), 0, P); }
    DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  }
  return Status::Ok();
}

}  // namespace dsi::cuda
