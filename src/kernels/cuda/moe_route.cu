// MoE router on the GPU with ref_moe_route's semantics: scores in double, group-limited selection, top-k with
// ties to the lower index, weights from the masked scores (V2) or the unbiased scores (V3 noaux_tc).
#include <algorithm>
#include <cmath>
#include <utility>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/warp_reduce.cuh"

namespace dsi::cuda {
namespace {

constexpr int kMaxExperts = 1024;
constexpr int kMaxTopK = 32;

// Warp-wide argmax of (value, index): larger value wins, ties go to the lower index.
__device__ void warp_argmax(double& v, int& idx) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const double ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (ov > v || (ov == v && oi < idx)) {
      v = ov;
      idx = oi;
    }
  }
}

// Routes token t with one warp; scores and choice: E doubles each of shared memory. Logits are read through L2
// (__ldcg): in the fused router they were written by other blocks of the same kernel.
__device__ void route_token(const MoeRouteArgs& a, int64_t t, double* scores, double* choice, int lane) {
  const int64_t E = a.num_experts;
  const float* logits = a.logits + t * E;

  if (a.scoring == MoeScoring::kSigmoid) {
    for (int64_t e = lane; e < E; e += 32) scores[e] = 1.0 / (1.0 + exp(-static_cast<double>(__ldcg(logits + e))));
  } else {
    double mx = -INFINITY;
    for (int64_t e = lane; e < E; e += 32) mx = fmax(mx, static_cast<double>(__ldcg(logits + e)));
    for (int o = 16; o > 0; o >>= 1) mx = fmax(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    double sum = 0.0;
    for (int64_t e = lane; e < E; e += 32) sum += scores[e] = exp(static_cast<double>(__ldcg(logits + e)) - mx);
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    for (int64_t e = lane; e < E; e += 32) scores[e] /= sum;
  }
  for (int64_t e = lane; e < E; e += 32) {
    choice[e] = scores[e] + (a.method == MoeTopk::kNoauxTc && a.bias != nullptr ? a.bias[e] : 0.0f);
  }
  __syncwarp();

  if (a.method != MoeTopk::kGreedy) {
    const int64_t gs = E / a.n_group;
    // Lane g scores group g.
    double gscore = -INFINITY;
    if (lane < a.n_group) {
      double best = -INFINITY, second = -INFINITY;
      for (int64_t e = lane * gs; e < (lane + 1) * gs; ++e) {
        const double v = choice[e];
        if (v > best) {
          second = best;
          best = v;
        } else if (v > second) {
          second = v;
        }
      }
      gscore = a.method == MoeTopk::kGroupLimitedGreedy ? best : (gs == 1 ? best : best + second);
    }
    bool keep = false;
    for (int64_t r = 0; r < a.topk_group; ++r) {
      double v = (lane < a.n_group && !keep) ? gscore : -INFINITY;
      int idx = (lane < a.n_group && !keep) ? lane : 1 << 30;
      warp_argmax(v, idx);
      if (lane == idx) keep = true;
    }
    const unsigned keep_mask = __ballot_sync(0xffffffffu, keep);
    for (int64_t e = lane; e < E; e += 32) {
      if (((keep_mask >> (e / gs)) & 1u) == 0) choice[e] = 0.0;
    }
    __syncwarp();
  }

  // Top-k: k rounds of warp argmax; a chosen expert's choice becomes -inf.
  int chosen_id = 0;       // lane i < top_k holds the i-th pick
  double chosen_w = 0.0;
  for (int64_t r = 0; r < a.top_k; ++r) {
    double v = -INFINITY;
    int idx = 1 << 30;
    for (int64_t e = lane; e < E; e += 32) {
      if (choice[e] > v) {  // ascending e per lane: ties keep the lower index
        v = choice[e];
        idx = static_cast<int>(e);
      }
    }
    warp_argmax(v, idx);
    if (lane == r) {
      chosen_id = idx;
      chosen_w = a.method == MoeTopk::kNoauxTc ? scores[idx] : v;
    }
    __syncwarp();
    if (lane == 0) choice[idx] = -INFINITY;
    __syncwarp();
  }
  double sum = lane < a.top_k ? chosen_w : 0.0;
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const bool normalize = a.norm_topk_prob && (a.method == MoeTopk::kNoauxTc || a.top_k > 1);
  if (lane < a.top_k) {
    const double w = normalize ? chosen_w / (sum + 1e-20) : chosen_w;
    a.expert_ids[t * a.top_k + lane] = chosen_id;
    a.weights[t * a.top_k + lane] = static_cast<float>(w * a.routed_scaling_factor);
  }
}


// One warp (one block) per token. Shared memory: scores[E], choice[E] (double).
__global__ void moe_route_kernel(MoeRouteArgs a) {
  pdl_enter();
  extern __shared__ double smem[];
  route_token(a, blockIdx.x, smem, smem + a.num_experts, static_cast<int>(threadIdx.x));
}

// The router matmul and the routing in one launch (decode sizes): one warp per (token, expert) dot product of
// f32 x and the f32 router row into logits; the last block to finish (an arrival counter, reset by it) routes the
// tokens, one warp each. Shared memory: scores and choice of up to 8 tokens, then (fused norm) the normalized rows.
constexpr int kRouterThreads = 256;

__device__ __forceinline__ float4 add4(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

// Token t's h = branch + residual normalized into xs ([hidden] f32, shared memory) by the whole block: the sums of
// rmsnorm_vec_kernel at 256 threads (thread i holds chunks i, i + 256, ...; block_sum_any).
__device__ void router_norm_row(const RouterNormArgs& n, int64_t t, int64_t hidden, float4* xs) {
  const int64_t n4 = hidden / 4;
  const float4* b4 = reinterpret_cast<const float4*>(n.branch + t * hidden);
  const float4* r4 = reinterpret_cast<const float4*>(n.residual + t * hidden);
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < n4; i += kRouterThreads) {
    const float4 h = add4(b4[i], r4[i]);
    xs[i] = h;
    sum_sq += h.x * h.x + h.y * h.y + h.z * h.z + h.w * h.w;
  }
  const float inv_rms = rsqrtf(block_sum_any(sum_sq) / static_cast<float>(hidden) + n.eps);
  const float4* w4 = reinterpret_cast<const float4*>(n.w);
  for (int64_t i = threadIdx.x; i < n4; i += kRouterThreads) {  // each thread rescales its own chunks
    const float4 h = xs[i], g = w4[i];
    xs[i] = make_float4(h.x * inv_rms * g.x, h.y * inv_rms * g.y, h.z * inv_rms * g.z, h.w * inv_rms * g.w);
  }
}

__global__ void __launch_bounds__(kRouterThreads) moe_router_route_kernel(const float* x, const float* w,
                                                                          int64_t hidden, MoeRouteArgs a,
                                                                          unsigned* counter, RouterNormArgs norm) {
  pdl_enter();
  extern __shared__ double smem[];
  __shared__ bool last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t E = a.num_experts;
  const int64_t route_warps = a.num_tokens < kRouterThreads / 32 ? a.num_tokens : kRouterThreads / 32;
  // The normalized rows after the routing scratch (2 E route_warps doubles: a multiple of 16 bytes).
  float4* xs = reinterpret_cast<float4*>(smem + 2 * E * route_warps);
  const bool fused = norm.w != nullptr;
  if (fused) {
    for (int64_t t = 0; t < a.num_tokens; ++t) router_norm_row(norm, t, hidden, xs + t * (hidden / 4));
    __syncthreads();  // every row complete before any warp's dot product
  }
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (kRouterThreads / 32) + warp;
  if (item < a.num_tokens * E) {
    const int64_t e = item % E, t = item / E;
    const float4* xt = fused ? xs + t * (hidden / 4) : reinterpret_cast<const float4*>(x + t * hidden);
    const float s = warp_dot_f32(reinterpret_cast<const float4*>(w + e * hidden), xt, hidden / 4, lane);
    if (lane == 0) const_cast<float*>(a.logits)[t * E + e] = s;
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  if (fused) {
    // Every other block has read branch and residual (it arrived after its norm): residual and normed now.
    const int64_t n4 = a.num_tokens * hidden / 4;
    float4* r4 = reinterpret_cast<float4*>(norm.residual);
    const float4* b4 = reinterpret_cast<const float4*>(norm.branch);
    float4* y4 = reinterpret_cast<float4*>(norm.normed);
    for (int64_t i = threadIdx.x; i < n4; i += kRouterThreads) {
      r4[i] = add4(b4[i], r4[i]);
      y4[i] = xs[i];
    }
  }
  for (int64_t t = warp; t < a.num_tokens; t += kRouterThreads / 32) {
    double* scores = smem + 2 * E * warp;
    route_token(a, t, scores, scores + E, lane);
  }
  if (threadIdx.x == 0) *counter = 0;
}

}  // namespace

namespace {
Status check_route_args(const MoeRouteArgs& a) {
  if (a.num_experts <= 0 || a.num_experts > kMaxExperts || a.top_k <= 0 || a.top_k > kMaxTopK ||
      a.top_k > a.num_experts) {
    return Status::Unsupported(str_cat("moe_route: top_k ", a.top_k, " of ", a.num_experts, " experts (at most ",
                                       kMaxTopK, " of ", kMaxExperts, ")"));
  }
  if (a.method != MoeTopk::kGreedy &&
      (a.n_group <= 0 || a.n_group > 32 || a.num_experts % a.n_group != 0 || a.topk_group <= 0 ||
       a.topk_group > a.n_group)) {
    return Status::InvalidArgument(str_cat("moe_route: ", a.num_experts, " experts in ", a.n_group,
                                           " groups, keep ", a.topk_group));
  }
  return Status::Ok();
}
}  // namespace

Status moe_route(CudaContext& ctx, const MoeRouteArgs& a) {
  DSI_RETURN_IF_ERROR(check_route_args(a));
  if (a.num_tokens == 0) return Status::Ok();
  const size_t smem = static_cast<size_t>(2 * a.num_experts) * sizeof(double);
  { const auto kernel_fn = moe_route_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(static_cast<unsigned>(a.num_tokens)), dim3(32), smem, a); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

namespace {
// Dynamic shared memory of the fused router: the routing scratch, then (with the norm) the normalized rows.
size_t router_smem(int64_t num_tokens, int64_t num_experts, int64_t hidden, bool with_norm) {
  const int64_t warps = std::min<int64_t>(num_tokens, kRouterThreads / 32);
  return static_cast<size_t>(2 * num_experts * warps) * sizeof(double) +
         (with_norm ? static_cast<size_t>(num_tokens * hidden) * sizeof(float) : 0);
}
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
}  // namespace

bool moe_router_route_fits(int64_t num_tokens, int64_t num_experts, int64_t hidden, bool with_norm) {
  // 48 KB of shared memory without the opt-in, less a margin for the kernel's static shared memory.
  return num_tokens >= 1 && num_tokens <= 64 && hidden % 4 == 0 && num_experts >= 1 &&
         router_smem(num_tokens, num_experts, hidden, with_norm) <= (48 << 10) - 1024;
}

Status moe_router_route(CudaContext& ctx, const float* x, const float* w, int64_t hidden, const MoeRouteArgs& a,
                        const RouterNormArgs* norm) {
  DSI_RETURN_IF_ERROR(check_route_args(a));
  if (a.num_tokens == 0) return Status::Ok();
  const bool with_norm = norm != nullptr;
  if (!moe_router_route_fits(a.num_tokens, a.num_experts, hidden, with_norm) || !aligned16(w) ||
      (!with_norm && !aligned16(x))) {
    return Status::InvalidArgument(str_cat("moe_router_route: ", a.num_tokens, " tokens, ", a.num_experts,
                                           " experts, hidden ", hidden, with_norm ? " with the norm" : "",
                                           " (see moe_router_route_fits; 16-byte rows)"));
  }
  RouterNormArgs n;
  if (with_norm) {
    n = *norm;
    if (n.branch == nullptr || n.residual == nullptr || n.w == nullptr || n.normed == nullptr ||
        !aligned16(n.branch) || !aligned16(n.residual) || !aligned16(n.w) || !aligned16(n.normed)) {
      return Status::InvalidArgument("moe_router_route: the norm needs branch, residual, w and normed, 16-byte "
                                     "aligned");
    }
    const auto rows = [&](const void* p) {
      const auto* c = static_cast<const char*>(p);
      return std::pair{c, c + static_cast<size_t>(a.num_tokens * hidden) * sizeof(float)};
    };
    const auto overlap = [&](const void* p, const void* q) {
      const auto [p0, p1] = rows(p);
      const auto [q0, q1] = rows(q);
      return p0 < q1 && q0 < p1;
    };
    if (overlap(n.branch, n.residual) || overlap(n.branch, n.normed) || overlap(n.residual, n.normed)) {
      return Status::InvalidArgument("moe_router_route: the norm's branch, residual and normed overlap");
    }
  }
  const size_t smem = router_smem(a.num_tokens, a.num_experts, hidden, with_norm);
  const int64_t blocks = (a.num_tokens * a.num_experts + kRouterThreads / 32 - 1) / (kRouterThreads / 32);
  DSI_CUDA_LAUNCH(ctx, moe_router_route_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kRouterThreads), smem, x,
                  w, hidden, a, ctx.moe_route_counter(), n);
  return Status::Ok();
}

}  // namespace dsi::cuda
