// Decode-path MoE routed experts with the expert ids on the device (no host round trip: graph-capturable),
// optionally with the shared experts in the same two kernels (as n_shared extra pairs per token, weight 1).
// Two kernels on the context's stream:
//   gate/up: grid (pairs, row blocks of inter). Each warp computes R rows i of one pair p = (t, j): gate row i and
//            up row i of expert ids[p] (or of shared slice j - top_k) against x[t] (staged in shared memory), then
//            h[p, i] = silu(g) * u.
//   down:    grid (tokens, row blocks of hidden). Each warp computes R rows n of out[t] as one dot product over
//            the top_k (+ n_shared) h rows of token t laid end to end (they are contiguous in h), each 8-element
//            chunk scaled by its pair's routing weight; then out[t, n] += sum (with shared experts: = sum). One
//            warp owns each output element, so there are no atomics and the result does not depend on scheduling.
// Every weight byte of a chosen expert is read once per pair with streaming loads (no L1 allocation); rows are
// split finely over blocks so that a single token (6 experts) still fills every SM.
//
// A lane's unit of work is a chunk of C consecutive weights of a row (one load): bf16 C = 8 (16 bytes); fp8 C = 16
// (16 bytes) when the row length is a multiple of 16, else C = 8 (8 bytes). The activations a chunk meets (x or h)
// are staged in shared memory as C / 4 quarters: quarter j of chunk c (floats 4j .. 4j + 3 of it) is float4
// j * chunks + c, so lanes reading consecutive chunks hit consecutive banks. FP8 chunks never cross a 128-column
// scale block (C divides 128), and a warp's R rows share one 128-row block (R divides 8, which divides inter,
// hidden and 128, and the first row is a multiple of R): one scale per chunk, applied to the chunk's sum.
#include <algorithm>
#include <climits>
#include <cstdlib>

#include "kernels/cuda/bf16_load.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/cuda_moe.h"
#include "kernels/cuda/fp8_load.cuh"
#include "kernels/cuda/warp_reduce.cuh"

namespace dsi::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kMaxTopK = 64;
constexpr int64_t kScaleBlock = 128;  // DeepSeek's FP8 scale blocks: 128 x 128 weights
constexpr size_t kMaxSmemH = 96 << 10;  // a token's h rows beyond this are read from global memory
// Static shared memory of the down kernel is 512 bytes; dynamic shared memory that would bring a block past the
// default 48 KB needs the opt-in attribute (set from this size on, leaving room for the static part).
constexpr size_t kStaticSmemRoom = 1 << 10;
constexpr size_t kDefaultSmem = (48 << 10) - kStaticSmemRoom;
static_assert(kMaxTopK * (sizeof(int32_t) + sizeof(float)) <= kStaticSmemRoom);

// Starts moving 16 bytes' cache line from HBM into L2 without waiting (used before the staging barrier).
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// s + dot(8 bf16 weights, [a, b]).
__device__ __forceinline__ float dot8(uint4 w, float4 a, float4 b, float s) {
  s = fmaf(lo_bf16(w.x), a.x, s);
  s = fmaf(hi_bf16(w.x), a.y, s);
  s = fmaf(lo_bf16(w.y), a.z, s);
  s = fmaf(hi_bf16(w.y), a.w, s);
  s = fmaf(lo_bf16(w.z), b.x, s);
  s = fmaf(hi_bf16(w.z), b.y, s);
  s = fmaf(lo_bf16(w.w), b.z, s);
  s = fmaf(hi_bf16(w.w), b.w, s);
  return s;
}

// Weight formats: T the stored element, Vec one chunk of C elements (one streaming load).
struct Bf16x8 {
  using T = uint16_t;
  using Vec = uint4;
  static constexpr int kC = 8;
  static constexpr bool kFp8 = false;
};
struct Fp8x16 {
  using T = uint8_t;
  using Vec = uint4;
  static constexpr int kC = 16;
  static constexpr bool kFp8 = true;
};
struct Fp8x8 {
  using T = uint8_t;
  using Vec = uint2;
  static constexpr int kC = 8;
  static constexpr bool kFp8 = true;
};

template <class F>
__device__ __forceinline__ typename F::Vec load_chunk(const typename F::T* p) {
  if constexpr (sizeof(typename F::Vec) == 16) {
    return load_stream(p);
  } else {
    return load_stream8(p);
  }
}

// s + dot(chunk w, x[0 .. C/4) quarters): bf16 weights as they are, fp8 codes as value / 256 (fp8_load.cuh).
template <class F>
__device__ __forceinline__ float dot_chunk(const typename F::Vec& w, const float4 (&x)[F::kC / 4], float s) {
  if constexpr (!F::kFp8) {
    return dot8(w, x[0], x[1], s);
  } else {
#pragma unroll
    for (int j = 0; j < F::kC / 4; ++j) s = dot4(fp8x4_to_float4_div256(word(w, j)), x[j], s);
    return s;
  }
}

// Copies `chunks` chunks of 4 Q floats from src (global, 16-byte aligned) to shared memory in quarters: float4 j
// of chunk c goes to dst[j * chunks + c]. Loads are issued in batches so a block waits for a few L2 round trips
// only.
template <int Q>
__device__ __forceinline__ void stage_chunks(float4* dst, const float4* src, int chunks) {
  constexpr int kBatch = 8;
  const int n4 = Q * chunks;
  for (int i0 = threadIdx.x; i0 < n4; i0 += kBatch * blockDim.x) {
    float4 v[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int i = i0 + b * blockDim.x;
      if (i < n4) v[b] = __ldg(src + i);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int i = i0 + b * blockDim.x;
      if (i < n4) dst[static_cast<unsigned>(i) % Q * chunks + static_cast<unsigned>(i) / Q] = v[b];
    }
  }
}

// Block (pair, row block): warp w computes rows i = (blockIdx.y * kWarps + w) * R + [0, R) of h[pair], U chunks
// per lane per step (2 R U loads in flight). Pairs are token-major, K = top_k + n_shared per token: j < top_k a
// routed pair, else shared slice j - top_k. Shared memory: x[t] (hidden floats, in quarters).
//
// PDL (launch.cuh): a shared slice's first weights head for L2 before pdl_wait(); the ids (from the router, the
// kernel just before when the shared experts are folded in) and x are read after it.
template <class F, int R, int U>
__global__ void __launch_bounds__(kWarps * 32) moe_gate_up_kernel(MoeExpertsArgs a) {
  pdl_trigger();
  using T = typename F::T;
  constexpr int C = F::kC, Q = C / 4;
  static_assert(8 % R == 0, "inter % 8 == 0 must cover whole warps' rows");
  constexpr int V = 2 * R;  // value v < R: gate row row0 + v; value R + v: the matching up row
  static_assert(V <= 32, "one value per lane group");
  extern __shared__ float4 smem4[];
  const int64_t K = a.top_k + a.n_shared;
  const int64_t pair = blockIdx.x;
  const int64_t t = pair / K, slot = pair % K;
  const bool shared = slot >= a.top_k;
  const int chunks = static_cast<int>(a.hidden / C);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.y) * kWarps + warp) * R;
  const bool active = row0 < a.inter;  // inter % 8 == 0 and 8 % R == 0: rows row0 .. row0 + R - 1 all exist
  const int64_t first = active ? row0 : 0;
  const T* w[V];
  // FP8: the scale rows of the gate rows and of the up rows (row i of a matrix has scale row i / 128).
  [[maybe_unused]] const float* scale_gate = nullptr;
  [[maybe_unused]] const float* scale_up = nullptr;
  // The rows of pair `slot` (expert e when routed): expert e's [2 inter, hidden] block of w13, or the slice's rows
  // of shared_w13 [2 S, hidden].
  const auto set_rows = [&](int32_t e) {
    const int64_t kb = (a.hidden + kScaleBlock - 1) / kScaleBlock;
    const T* mat = static_cast<const T*>(a.shared_w13);
    int64_t g0 = (slot - a.top_k) * a.inter, u0 = a.n_shared * a.inter + g0;  // shared slice slot - top_k
    const float* scales = a.shared_w13_scale;
    if (!shared) {
      mat = static_cast<const T*>(a.w13) + static_cast<int64_t>(e) * 2 * a.inter * a.hidden;
      g0 = 0;
      u0 = a.inter;
      const int64_t nb = (2 * a.inter + kScaleBlock - 1) / kScaleBlock;
      scales = F::kFp8 ? a.w13_scale + static_cast<int64_t>(e) * nb * kb : nullptr;
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      w[r] = mat + (g0 + first + r) * a.hidden;
      w[R + r] = mat + (u0 + first + r) * a.hidden;
    }
    if constexpr (F::kFp8) {
      scale_gate = scales + ((g0 + first) / kScaleBlock) * kb;
      scale_up = scales + ((u0 + first) / kScaleBlock) * kb;
    }
  };
  // The first step's weights head for L2 while x is staged.
  const auto prefetch_first_step = [&] {
    if (!active) return;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = lane + 32 * u;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        if (c < chunks) prefetch_l2(w[v] + c * C);
      }
    }
  };
  if (shared) {
    set_rows(0);
    prefetch_first_step();
  }
  pdl_wait();
  if (!shared) {
    const int32_t e = a.ids[t * a.top_k + slot];
    if (e < 0 || e >= a.num_experts) return;  // skipped pair: block-uniform, before any barrier
    set_rows(e);
    prefetch_first_step();
  }
  stage_chunks<Q>(smem4, reinterpret_cast<const float4*>(a.x + t * a.hidden), chunks);
  __syncthreads();
  if (!active) return;

  float acc[V];
#pragma unroll
  for (int v = 0; v < V; ++v) acc[v] = 0.0f;
  for (int c0 = lane; c0 < chunks; c0 += 32 * U) {
    typename F::Vec wv[U][V];
    // FP8: the scales of chunk c's 128-column block for the gate and the up rows, times 256.
    [[maybe_unused]] float sg[U], su[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
#pragma unroll
      for (int v = 0; v < V; ++v) wv[u][v] = c < chunks ? load_chunk<F>(w[v] + c * C) : typename F::Vec{};
      if constexpr (F::kFp8) {
        const int kblock = c * C / static_cast<int>(kScaleBlock);
        sg[u] = c < chunks ? __ldg(scale_gate + kblock) * kFp8Unscale : 0.0f;
        su[u] = c < chunks ? __ldg(scale_up + kblock) * kFp8Unscale : 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
      float4 xv[Q];
#pragma unroll
      for (int j = 0; j < Q; ++j) xv[j] = smem4[j * chunks + c];
#pragma unroll
      for (int v = 0; v < V; ++v) {
        if constexpr (F::kFp8) {
          acc[v] = fmaf(dot_chunk<F>(wv[u][v], xv, 0.0f), v < R ? sg[u] : su[u], acc[v]);
        } else {
          acc[v] = dot_chunk<F>(wv[u][v], xv, acc[v]);
        }
      }
    }
  }
  warp_reduce_scatter<V, 16>(acc, lane);
  // Lane l holds value (l * V) / 32: lanes [0, 16) the gate rows, lane l + 16 the up row of the same i.
  const float up = __shfl_down_sync(0xffffffffu, acc[0], 16);
  if (lane < 16 && lane % (32 / V) == 0) {
    const float g = acc[0];
    const int r = (lane * V) >> 5;
    a.h[pair * a.inter + row0 + r] = g / (1.0f + expf(-g)) * up;
  }
}

// Block (token, row block): the S warps w = S g + p (p < S) compute rows n = (blockIdx.y * kWarps / S + g) * R +
// [0, R) of out[t], U chunks per lane per step (R U loads in flight), over the token's K = top_k + n_shared h rows:
// warp p takes the steps p, p + S, ... and the S partial sums are added in p order (S > 1 puts more loads in
// flight when one token leaves few rows per SM).
// kSmemH: h[t, 0..K) staged in shared memory (in quarters); otherwise read through L1 from global memory.
// PDL: waits first (ids come from the router, h from the kernel just before).
template <class F, int R, int U, bool kSmemH, int S>
__global__ void __launch_bounds__(kWarps * 32) moe_down_kernel(MoeExpertsArgs a) {
  using T = typename F::T;
  constexpr int C = F::kC, Q = C / 4;
  static_assert(8 % R == 0, "hidden % 8 == 0 must cover whole warps' rows");
  extern __shared__ float4 smem4[];
  __shared__ int32_t expert[kMaxTopK];  // -1: skipped pair; num_experts + s: shared slice s
  __shared__ float weight[kMaxTopK];
  const int64_t t = blockIdx.x;
  const int top_k = static_cast<int>(a.top_k), K = top_k + static_cast<int>(a.n_shared);
  const int per_pair = static_cast<int>(a.inter / C);  // chunks per h row
  const int chunks = K * per_pair;                     // the token's h rows end to end
  static_assert(kWarps % S == 0, "whole row groups per block");
  __shared__ float partial[S > 1 ? kWarps * R : 1];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % S;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.y) * (kWarps / S) + warp / S) * R;
  const bool active = row0 < a.hidden;
  const int64_t shared_rows = a.n_shared * a.inter;
  // Chunk q of the flattened h is chunk q % per_pair of pair j = q / per_pair; it meets the same C columns of
  // rows row0 + r of W2[e_j] (row stride inter), or of the slice's columns of shared_w2 (row stride S).
  const auto w_chunk = [&](int32_t e, int q, int j) {
    const int64_t col = static_cast<int64_t>(q - j * per_pair) * C;
    if (e >= a.num_experts) {
      return static_cast<const T*>(a.shared_w2) + row0 * shared_rows + (e - a.num_experts) * a.inter + col;
    }
    return static_cast<const T*>(a.w2) + (static_cast<int64_t>(e) * a.hidden + row0) * a.inter + col;
  };
  const auto w_ld = [&](int32_t e) { return e >= a.num_experts ? shared_rows : a.inter; };
  // FP8: the scale of that chunk for rows row0 .. row0 + R - 1 (W2[e] scales: [ceil(hidden/128), ceil(inter/128)];
  // shared_w2's: [ceil(hidden/128), ceil(S/128)]).
  const auto w_scale = [&](int32_t e, int q, int j) {
    const int64_t col = static_cast<int64_t>(q - j * per_pair) * C;
    const int64_t rb = row0 / kScaleBlock;
    if (e >= a.num_experts) {
      const int64_t kb = (shared_rows + kScaleBlock - 1) / kScaleBlock;
      return __ldg(a.shared_w2_scale + rb * kb + ((e - a.num_experts) * a.inter + col) / kScaleBlock);
    }
    const int64_t kb = (a.inter + kScaleBlock - 1) / kScaleBlock;
    const int64_t nb = (a.hidden + kScaleBlock - 1) / kScaleBlock;
    return __ldg(a.w2_scale + (static_cast<int64_t>(e) * nb + rb) * kb + col / kScaleBlock);
  };
  pdl_enter();
  for (int j = threadIdx.x; j < K; j += blockDim.x) {
    if (j < top_k) {
      const int32_t e = a.ids[t * top_k + j];
      expert[j] = (e >= 0 && e < a.num_experts) ? e : -1;
      weight[j] = a.weights[t * top_k + j];
    } else {
      expert[j] = static_cast<int32_t>(a.num_experts + (j - top_k));
      weight[j] = 1.0f;
    }
  }
  __syncthreads();
  // The first step's weights head for L2 while h is staged.
  if (active) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int q = lane + 32 * (u + U * part);
      if (q >= chunks) break;
      const int j = q / per_pair;
      const int32_t e = expert[j];
      if (e < 0) continue;
#pragma unroll
      for (int r = 0; r < R; ++r) prefetch_l2(w_chunk(e, q, j) + r * w_ld(e));
    }
  }
  const float4* h4 = reinterpret_cast<const float4*>(a.h + t * K * a.inter);
  if constexpr (kSmemH) {
    stage_chunks<Q>(smem4, h4, chunks);
    __syncthreads();
  }
  if (S == 1 && !active) return;  // (with S > 1 every warp reaches the barrier below)

  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  for (int q0 = lane + 32 * U * part; active && q0 < chunks; q0 += 32 * U * S) {
    typename F::Vec wv[U][R];
    float scale[U];  // the routing weight (FP8: times the chunk's scale times 256)
    bool on[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int q = q0 + 32 * u;
      const int j = q / per_pair;
      const int32_t e = q < chunks ? expert[j] : -1;
      on[u] = e >= 0;
      scale[u] = on[u] ? weight[j] : 0.0f;
      if constexpr (F::kFp8) {
        if (on[u]) scale[u] *= w_scale(e, q, j) * kFp8Unscale;
      }
      const T* w = w_chunk(on[u] ? e : 0, q, j);
      const int64_t ld = w_ld(on[u] ? e : 0);
#pragma unroll
      for (int r = 0; r < R; ++r) wv[u][r] = on[u] ? load_chunk<F>(w + r * ld) : typename F::Vec{};
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (!on[u]) continue;  // never touch h of a skipped pair (it is not written)
      const int q = q0 + 32 * u;
      float4 hv[Q];
#pragma unroll
      for (int i = 0; i < Q; ++i) {
        if constexpr (kSmemH) {
          hv[i] = smem4[i * chunks + q];
        } else {
          hv[i] = __ldg(h4 + Q * q + i);
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] = fmaf(scale[u], dot_chunk<F>(wv[u][r], hv, 0.0f), acc[r]);
    }
  }
  warp_reduce_scatter<R, 16>(acc, lane);
  // Lane l holds row (l * R) / 32; the first lane of each group writes it (with shared experts: the whole sum).
  const bool writer = lane % (32 / R) == 0;
  const int r = (lane * R) >> 5;
  if constexpr (S > 1) {
    if (writer) partial[warp * R + r] = acc[0];
    __syncthreads();
    if (part != 0 || !active) return;
#pragma unroll
    for (int p = 1; p < S; ++p) acc[0] += partial[(warp + p) * R + r];
  }
  if (writer) {
    float* o = a.out + t * a.hidden + row0 + r;
    *o = a.n_shared > 0 ? acc[0] : *o + acc[0];
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Grid (items, row blocks of `rows` at R rows per warp).
template <int R>
dim3 row_grid(int64_t items, int64_t rows) {
  const int64_t per_block = kWarps * R;
  return dim3(static_cast<unsigned>(items), static_cast<unsigned>((rows + per_block - 1) / per_block));
}

// Largest R in {2, 1} whose grid still gives every SM two blocks (a single token needs the finer split).
int rows_per_warp(const CudaContext& ctx, int64_t items, int64_t rows) {
  const int64_t blocks2 = items * ((rows + 2 * kWarps - 1) / (2 * kWarps));
  return blocks2 >= 2 * static_cast<int64_t>(ctx.num_sms()) ? 2 : 1;
}

template <class Kernel>
Status allow_smem(Kernel kernel, size_t smem) {
  if (smem > kDefaultSmem) {
    DSI_CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  return Status::Ok();
}

// Both kernels keep 8 loads of 16 bytes (or 16 of 8 bytes) per lane in flight: U = 8 / (rows of weights per
// warp) * (16 / bytes per load).
template <class F, int R>
Status launch_gate_up(CudaContext& ctx, const MoeExpertsArgs& a) {
  constexpr int U = 4 / R * (16 / static_cast<int>(sizeof(typename F::Vec)));
  const size_t smem = static_cast<size_t>(a.hidden) * sizeof(float);
  DSI_RETURN_IF_ERROR(allow_smem(moe_gate_up_kernel<F, R, U>, smem));
  { const auto kernel_fn = moe_gate_up_kernel<F, R, U>;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(row_grid<R>(a.num_tokens * (a.top_k + a.n_shared), a.inter)), dim3(kWarps * 32), smem, a); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

template <class F, int R, bool kSmemH, int S>
Status launch_down(CudaContext& ctx, const MoeExpertsArgs& a) {
  // (16 loads per lane measured slower on the H200 at one token: 18.2 against 16.1 us for V2-Lite's 6 experts.)
  constexpr int U = 8 / R * (16 / static_cast<int>(sizeof(typename F::Vec)));
  const size_t smem = kSmemH ? static_cast<size_t>((a.top_k + a.n_shared) * a.inter) * sizeof(float) : 0;
  DSI_RETURN_IF_ERROR(allow_smem(moe_down_kernel<F, R, U, kSmemH, S>, smem));
  const int64_t rows_per_block = kWarps / S * R;
  const dim3 grid(static_cast<unsigned>(a.num_tokens),
                  static_cast<unsigned>((a.hidden + rows_per_block - 1) / rows_per_block));
  { const auto kernel_fn = moe_down_kernel<F, R, U, kSmemH, S>;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, grid, dim3(kWarps * 32), smem, a); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

template <class F>
Status launch_gate_up(CudaContext& ctx, const MoeExpertsArgs& a) {
  const int64_t pairs = a.num_tokens * (a.top_k + a.n_shared);
  return rows_per_warp(ctx, pairs, a.inter) == 2 ? launch_gate_up<F, 2>(ctx, a) : launch_gate_up<F, 1>(ctx, a);
}

// An integer from the environment (tuning overrides), else `otherwise`.
int env_int(const char* name, int otherwise) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : otherwise;
}

template <class F, bool kSmemH>
Status launch_down_one_row(CudaContext& ctx, const MoeExpertsArgs& a, int split) {
  switch (split) {
    case 4:
      return launch_down<F, 1, kSmemH, 4>(ctx, a);
    case 2:
      return launch_down<F, 1, kSmemH, 2>(ctx, a);
    default:
      return launch_down<F, 1, kSmemH, 1>(ctx, a);
  }
}

template <class F>
Status launch_down(CudaContext& ctx, const MoeExpertsArgs& a) {
  const size_t h_smem = static_cast<size_t>((a.top_k + a.n_shared) * a.inter) * sizeof(float);
  const bool fits = h_smem <= std::min(kMaxSmemH, ctx.props().sharedMemPerBlockOptin - kStaticSmemRoom);
  static const bool smem_h_allowed = env_int("DSI_MOE_DOWN_SMEM_H", 1) != 0;  // read once
  const bool smem_h = fits && smem_h_allowed;
  if (rows_per_warp(ctx, a.num_tokens, a.hidden) == 2) {
    return smem_h ? launch_down<F, 2, true, 1>(ctx, a) : launch_down<F, 2, false, 1>(ctx, a);
  }
  // Split 1: on the H200 at one V2-Lite token, 2 and 4 warps per row measured within run-to-run noise of it
  // (Nsight Compute: 21.6, 21.0 and 27.4 us).
  static const int env_split = env_int("DSI_MOE_DOWN_SPLIT", 1);  // read once
  const int split = a.down_split > 0 ? a.down_split : env_split;
  return smem_h ? launch_down_one_row<F, true>(ctx, a, split) : launch_down_one_row<F, false>(ctx, a, split);
}

}  // namespace

Status moe_experts_gemv(CudaContext& ctx, const MoeExpertsArgs& a) {
  if (a.num_tokens < 0) return Status::InvalidArgument(str_cat("moe_experts_gemv: num_tokens ", a.num_tokens));
  if (a.top_k <= 0) return Status::InvalidArgument(str_cat("moe_experts_gemv: top_k ", a.top_k));
  const bool fp8 = a.w_dtype == DType::kF8E4M3;
  if (!fp8 && a.w_dtype != DType::kBF16) {
    return Status::Unsupported(
        str_cat("moe_experts_gemv: w_dtype ", dtype_name(a.w_dtype), " (bf16 or e4m3 with block scales)"));
  }
  if (a.down_split != 0 && a.down_split != 1 && a.down_split != 2 && a.down_split != 4) {
    return Status::InvalidArgument(str_cat("moe_experts_gemv: down_split ", a.down_split, " (0, 1, 2 or 4)"));
  }
  if (a.n_shared < 0) return Status::InvalidArgument(str_cat("moe_experts_gemv: n_shared ", a.n_shared));
  if (a.top_k + a.n_shared > kMaxTopK) {
    return Status::Unsupported(str_cat("moe_experts_gemv: top_k ", a.top_k, " + n_shared ", a.n_shared,
                                       " (at most ", kMaxTopK, ")"));
  }
  if (a.num_experts <= 0) return Status::InvalidArgument(str_cat("moe_experts_gemv: num_experts ", a.num_experts));
  if (a.hidden <= 0 || a.hidden % 8 != 0) {
    return Status::InvalidArgument(str_cat("moe_experts_gemv: hidden ", a.hidden, " (a positive multiple of 8)"));
  }
  if (a.inter <= 0 || a.inter % 8 != 0) {
    return Status::InvalidArgument(str_cat("moe_experts_gemv: inter ", a.inter, " (a positive multiple of 8)"));
  }
  const size_t x_smem = static_cast<size_t>(a.hidden) * sizeof(float);
  if (x_smem > ctx.props().sharedMemPerBlockOptin) {
    return Status::Unsupported(str_cat("moe_experts_gemv: hidden ", a.hidden, " (x needs ", x_smem,
                                       " bytes of shared memory, the device has ", ctx.props().sharedMemPerBlockOptin,
                                       ")"));
  }
  // Grid limits: row blocks in grid.y (at R = 1), pairs in grid.x, flattened chunk indices in int.
  const int64_t per_token = a.top_k + a.n_shared;
  if (a.inter / kWarps > 65535 || a.hidden / kWarps > 65535 || a.num_tokens * per_token > INT_MAX ||
      per_token * a.inter > INT_MAX) {
    return Status::Unsupported(str_cat("moe_experts_gemv: shape tokens ", a.num_tokens, " top_k ", a.top_k,
                                       " n_shared ", a.n_shared, " hidden ", a.hidden, " inter ", a.inter,
                                       " exceeds the grid"));
  }
  if (a.num_tokens == 0) return Status::Ok();
  const struct {
    const void* p;
    const char* name;
    bool vec;  // read or written as float4 / 16-byte vectors: 16-byte alignment
  } ptrs[] = {{a.x, "x", true},   {a.ids, "ids", false}, {a.weights, "weights", false}, {a.w13, "w13", true},
              {a.w2, "w2", true}, {a.h, "h", true},      {a.out, "out", false}};
  for (const auto& p : ptrs) {
    if (p.p == nullptr) return Status::InvalidArgument(str_cat("moe_experts_gemv: ", p.name, " is null"));
    if (p.vec && !aligned16(p.p)) {
      return Status::InvalidArgument(str_cat("moe_experts_gemv: ", p.name, " is not 16-byte aligned"));
    }
  }
  if (a.n_shared > 0) {
    if (a.shared_w13 == nullptr || a.shared_w2 == nullptr) {
      return Status::InvalidArgument("moe_experts_gemv: n_shared > 0 needs shared_w13 and shared_w2");
    }
    if (!aligned16(a.shared_w13) || !aligned16(a.shared_w2)) {
      return Status::InvalidArgument("moe_experts_gemv: shared_w13 and shared_w2 must be 16-byte aligned");
    }
    if (fp8 && (a.shared_w13_scale == nullptr || a.shared_w2_scale == nullptr)) {
      return Status::InvalidArgument("moe_experts_gemv: fp8 shared experts need shared_w13_scale and shared_w2_scale");
    }
  }
  if (!fp8) {
    DSI_RETURN_IF_ERROR(launch_gate_up<Bf16x8>(ctx, a));
    return launch_down<Bf16x8>(ctx, a);
  }
  if (a.w13_scale == nullptr || a.w2_scale == nullptr) {
    return Status::InvalidArgument("moe_experts_gemv: fp8 weights need w13_scale and w2_scale");
  }
  // 16 codes per load where the rows allow it (row starts 16-byte aligned), else 8.
  DSI_RETURN_IF_ERROR(a.hidden % 16 == 0 ? launch_gate_up<Fp8x16>(ctx, a) : launch_gate_up<Fp8x8>(ctx, a));
  return a.inter % 16 == 0 ? launch_down<Fp8x16>(ctx, a) : launch_down<Fp8x8>(ctx, a);
}

}  // namespace dsi::cuda
