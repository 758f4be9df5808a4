// MLA absorbed decode (flash-decoding): the launcher, and the earlier kernel kept for timing comparisons
// (MlaDecodeOptions::legacy, always with the separate combine kernel). The tensor-core kernel (which merges its
// splits itself by default), the combine kernel and the split rule are in mla_decode_kernels.cuh.
//
// Earlier kernel: grid (split, head group of 16, sequence), 4 warps. Per 32-token tile of the latent cache
// (cp.async double-buffered in padded shared-memory rows):
//   1. S = Q K^T: warp w scores tokens [8w, 8w + 8) for the 16 heads (mma.sync m16n8k16, 36 k-steps);
//   2. online softmax over the tile (exp2 domain), P in bf16;
//   3. O += P V: warp w owns output dims [128w, 128w + 128) (V = the first 512 latent dims, ldmatrix.trans).
// With 128 heads each latent tile is loaded by 8 blocks, each doing little math per byte (8% of the copy
// bandwidth on the H200); the tensor-core kernel loads it once per 64 heads.
#include <algorithm>
#include <cstdlib>
#include <string_view>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/mla_decode_kernels.cuh"
#include "kernels/cuda/mla_decode_wgmma.cuh"

namespace dsi::cuda {
namespace {

using mla::kDim;
using mla::kVDim;
using mla::Params;

// The split workspace: (O, m, l) of every (sequence, head, split), for the combine or the fused merge.
Status split_workspace(CudaContext& ctx, const MlaDecodeArgs& a, int splits, Params& p) {
  const size_t rows = static_cast<size_t>(a.batch * a.num_heads * splits);
  DSI_ASSIGN_OR_RETURN(void* ws, ctx.scratch(rows * (kVDim + 2) * sizeof(float)));
  p.ws_o = static_cast<float*>(ws);
  p.ws_ml = static_cast<float*>(ws) + rows * kVDim;
  return Status::Ok();
}

namespace legacy {

constexpr int kHeads = 16;          // heads per block (one m16 tile)
constexpr int kTile = 32;           // tokens per tile
constexpr int kStride = kDim + 8;   // smem row stride (elements): 1168 B, conflict-free ldmatrix
constexpr int kPStride = kTile + 8; // 80 B rows
constexpr int kThreads = 128;

struct Smem {
  uint16_t k[2][kTile][kStride];
  uint16_t q[kHeads][kStride];
  float s[kHeads][kTile];
  uint16_t p[kHeads][kPStride];
  float alpha[kHeads];
};

__device__ void load_tile(const Params& p, Smem& sm, int buf, int64_t b, int64_t t0, int64_t end) {
  constexpr int kChunks = kDim / 8;  // 16-byte chunks per token
  for (int i = threadIdx.x; i < kTile * kChunks; i += kThreads) {
    const int row = i / kChunks, c = i % kChunks;
    const int64_t tok = t0 + row;
    const bool valid = tok < end;
    ptx::cp_async16(&sm.k[buf][row][c * 8], valid ? mla::token_row(p, b, tok) + c * 8 : p.cache, valid);
  }
}

__global__ void __launch_bounds__(kThreads, 2) mla_decode_kernel(Params p) {
  pdl_enter();
  Smem& sm = *reinterpret_cast<Smem*>(ptx::dynamic_smem());
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
  load_tile(p, sm, 0, b, start, end);
  ptx::cp_async_commit();
  for (int i = tid; i < kHeads * kDim; i += kThreads) {
    const int h = i / kDim, d = i % kDim;
    const float v = head0 + h < p.heads ? p.q[((b * p.heads) + head0 + h) * kDim + d] : 0.0f;
    sm.q[h][d] = ptx::bf16_bits(v);
  }

  float o[16][4];
#pragma unroll
  for (int j = 0; j < 16; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m_run = -INFINITY, l_run = 0.0f;
  const int g = lane >> 2, t4 = lane & 3;

  int it = 0;
  for (int64_t t0 = start; t0 < end; t0 += kTile, ++it) {
    const int buf = it & 1;
    if (t0 + kTile < end) load_tile(p, sm, buf ^ 1, b, t0 + kTile, end);
    ptx::cp_async_commit();
    ptx::cp_async_wait<1>();
    __syncthreads();

    // 1. Scores for tokens [8 warp, 8 warp + 8).
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
    for (int ks = 0; ks < kDim / 16; ++ks) {
      uint32_t a[4], bb[2];
      ptx::ldmatrix_x4(a, &sm.q[lane & 15][ks * 16 + (lane >> 4) * 8]);
      ptx::ldmatrix_x2(bb, &sm.k[buf][warp * 8 + (lane & 7)][ks * 16 + ((lane >> 3) & 1) * 8]);
      ptx::mma_bf16(c, a, bb[0], bb[1]);
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
        sm.p[sm_head][sub * 4 + i] = ptx::bf16_bits(pv);
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
      ptx::ldmatrix_x4(a, &sm.p[lane & 15][kt * 16 + (lane >> 4) * 8]);
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) {
        uint32_t bb[4];
        const int n0 = warp * 128 + jj * 16;
        ptx::ldmatrix_x4_trans(bb, &sm.k[buf][kt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8][n0 + (lane >> 4) * 8]);
        ptx::mma_bf16(o[2 * jj], a, bb[0], bb[1]);
        ptx::mma_bf16(o[2 * jj + 1], a, bb[2], bb[3]);
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

Status launch(CudaContext& ctx, const MlaDecodeArgs& a, Params p) {
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
  DSI_RETURN_IF_ERROR(split_workspace(ctx, a, splits, p));
  p.out = nullptr;
  p.splits = splits;
  p.split_tokens = split_tokens;
  const size_t smem = sizeof(Smem);
  DSI_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(mla_decode_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(groups), static_cast<unsigned>(a.batch));
  { const auto kernel_fn = mla_decode_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(kThreads), smem, p); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  { const auto kernel_fn = mla::mla_combine_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(static_cast<unsigned>(a.batch * a.num_heads)), dim3(kVDim / 4), 0,  p.ws_o, p.ws_ml, a.out, splits); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  return Status::Ok();
}

}  // namespace legacy

// Arrival counters of the fused merge: the upper half of the context's split-k counters (the GEMVs index the
// lower half by row block), one per (sequence, head group).
constexpr int64_t kCounterBase = static_cast<int64_t>(CudaContext::kSplitkCounters / 2);
constexpr int64_t kMaxCounters = static_cast<int64_t>(CudaContext::kSplitkCounters) - kCounterBase;

// The tensor-core kernel with 16 kM heads per block (the earlier kernel where its shared memory does not fit).
template <int kM>
Status launch_tc(CudaContext& ctx, const MlaDecodeArgs& a, const MlaDecodeOptions& options, Params p,
                 int64_t groups) {
  using Cfg = mla::TcConfig<kM>;
  const auto kernel = mla::mla_decode_tc_kernel<kM>;
  const size_t smem = sizeof(typename Cfg::Smem);
  const cudaDeviceProp& props = ctx.props();
  if (smem > props.sharedMemPerBlockOptin) return legacy::launch(ctx, a, p);
  DSI_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  // Resident blocks per SM from shared memory alone (1 on the H100/H200; registers allow no more either).
  const int64_t per_sm = std::max<int64_t>(
      1, static_cast<int64_t>(props.sharedMemPerMultiprocessor / (smem + props.reservedSharedMemPerBlock)));
  // The last split merges (no combine launch) unless asked otherwise or out of counters / merge shared memory.
  const bool can_fuse = options.fused_combine && a.batch * groups <= kMaxCounters;
  const int splits = a.num_splits > 0 ? a.num_splits
                                      : mla::choose_splits({.batch = a.batch, .heads = a.num_heads, .groups = groups,
                                                            .heads_per_block = Cfg::kHeads,
                                                            .max_seq_len = a.max_seq_len,
                                                            .slots = per_sm * ctx.num_sms(), .fused = can_fuse});
  const bool fused = can_fuse && splits <= Cfg::kMaxFusedSplits;
  int64_t split_tokens = (a.max_seq_len + splits - 1) / splits;
  split_tokens = (split_tokens + mla::kTile - 1) / mla::kTile * mla::kTile;
  p.splits = splits;
  p.split_tokens = split_tokens;
  if (splits == 1) {
    p.out = a.out;  // normalized in the kernel; no workspace, no combine
  } else {
    DSI_RETURN_IF_ERROR(split_workspace(ctx, a, splits, p));
    if (fused) {
      p.out = a.out;
      p.counters = ctx.splitk_counters() + kCounterBase;
    }
  }
  const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(splits), static_cast<unsigned>(a.batch));
  { const auto kernel_fn = kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(grid), dim3(mla::kThreads), smem, p); }
  DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  if (splits > 1 && !fused) {
    { const auto kernel_fn = mla::mla_combine_kernel;
      DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(static_cast<unsigned>(a.batch * a.num_heads)), dim3(kVDim / 4), 0,  p.ws_o, p.ws_ml, a.out, splits); }
    DSI_CUDA_RETURN_IF_LAUNCH_FAILED();
  }
  return Status::Ok();
}

// The warpgroup kernel (mla_decode_wgmma.cuh): 64 heads per block, splits merged by mla_combine_kernel.
bool wgmma_runs_here(const CudaContext& ctx) {
  return ctx.props().major == 9 && ctx.props().minor == 0 &&
         ctx.props().sharedMemPerBlockOptin >= static_cast<size_t>(mla_wg::kSmemBytes);
}

Status launch_wgmma(CudaContext& ctx, const MlaDecodeArgs& a, Params p) {
  if (!wgmma_runs_here(ctx)) {
    return Status::Unsupported(str_cat("mla_decode: the wgmma kernel needs an sm_90 device with ", mla_wg::kSmemBytes,
                                       " bytes of shared memory per block (have sm_", ctx.props().major,
                                       ctx.props().minor, ", ", ctx.props().sharedMemPerBlockOptin, ")"));
  }
  const int64_t groups = (a.num_heads + mla_wg::kHeads - 1) / mla_wg::kHeads;
  // One block per SM; splits as for the tensor-core kernel with 64 heads per block and a separate combine.
  int splits = a.num_splits > 0 ? a.num_splits
                                 : mla::choose_splits({.batch = a.batch, .heads = a.num_heads, .groups = groups,
                                                       .heads_per_block = mla_wg::kHeads,
                                                       .max_seq_len = a.max_seq_len, .slots = ctx.num_sms(),
                                                       .fused = false});
  int64_t split_tokens = (a.max_seq_len + splits - 1) / splits;
  split_tokens = (split_tokens + mla_wg::kTile - 1) / mla_wg::kTile * mla_wg::kTile;
  // The chooser counts 32-token tiles: after rounding to 64 the last splits may hold no token of any sequence.
  if (a.num_splits <= 0) splits = static_cast<int>((a.max_seq_len + split_tokens - 1) / split_tokens);
  p.counters = nullptr;
  if (splits == 1) {
    p.out = a.out;  // normalized in the kernel: no workspace, no combine
  } else {
    DSI_RETURN_IF_ERROR(split_workspace(ctx, a, splits, p));
    p.out = nullptr;
  }
  p.splits = splits;
  p.split_tokens = split_tokens;
  DSI_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(mla_wg::mla_decode_wgmma_kernel,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, mla_wg::kSmemBytes));
  const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(splits), static_cast<unsigned>(a.batch));
  DSI_CUDA_LAUNCH(ctx, mla_wg::mla_decode_wgmma_kernel, grid, dim3(mla_wg::kThreads),
                  static_cast<size_t>(mla_wg::kSmemBytes), p);
  if (splits == 1) return Status::Ok();
  { const auto kernel_fn = mla::mla_combine_kernel;
    DSI_CUDA_LAUNCH(ctx, kernel_fn, dim3(static_cast<unsigned>(a.batch * a.num_heads)), dim3(kVDim / 4), 0, p.ws_o,
                    p.ws_ml, a.out, splits); }
  return Status::Ok();
}

}  // namespace

MlaDecodeOptions default_mla_decode_options(const CudaContext& ctx, int64_t num_heads) {
  // DSI_MLA_WGMMA=1: the warpgroup kernel where the heads fill its 64-head blocks (not yet the default: it has
  // not run on a GPU).
  static const bool env = [] {
    const char* v = std::getenv("DSI_MLA_WGMMA");
    return v != nullptr && std::string_view(v) == "1";
  }();
  MlaDecodeOptions o;
  o.wgmma = env && num_heads % mla_wg::kHeads == 0 && wgmma_runs_here(ctx);
  return o;
}

Status mla_decode(CudaContext& ctx, const MlaDecodeArgs& a) {
  return mla_decode(ctx, a, default_mla_decode_options(ctx, a.num_heads));
}

Status mla_decode(CudaContext& ctx, const MlaDecodeArgs& a, const MlaDecodeOptions& options) {
  if (a.kv_lora_rank != kVDim || a.kv_lora_rank + a.rope_dim != kDim) {
    return Status::Unsupported(str_cat("mla_decode: kv_lora_rank ", a.kv_lora_rank, " + rope ", a.rope_dim,
                                       " (only 512 + 64 is built)"));
  }
  const int64_t capacity = a.block_tables ? a.max_blocks * a.block_size : a.max_tokens;
  if (a.batch <= 0 || a.batch > 65535 || a.num_heads <= 0 || a.max_seq_len <= 0 || a.max_seq_len > capacity ||
      a.num_splits > 65535) {
    return Status::InvalidArgument(str_cat("mla_decode: batch ", a.batch, " heads ", a.num_heads, " max_seq_len ",
                                           a.max_seq_len, " max_tokens ", a.max_tokens, " num_splits ",
                                           a.num_splits));
  }
  const int hpb = options.heads_per_block;
  if (hpb != 0 && (hpb % 16 != 0 || hpb < 16 || hpb > 64)) {
    return Status::InvalidArgument(str_cat("mla_decode: heads_per_block ", hpb, " (16, 32, 48 or 64)"));
  }
  Params p{.q = a.q, .cache = a.cache, .seq_lens = a.seq_lens, .block_tables = a.block_tables,
           .max_blocks = a.max_blocks, .block_size = a.block_size, .heads = a.num_heads,
           .max_tokens = a.max_tokens, .splits = 1, .split_tokens = 0, .scale_log2 = a.scale * mla::kLog2e,
           .ws_o = nullptr, .ws_ml = nullptr, .out = nullptr,
           .q_aligned = reinterpret_cast<uintptr_t>(a.q) % 16 == 0, .counters = nullptr};
  if (options.legacy) return legacy::launch(ctx, a, p);
  if (options.wgmma) return launch_wgmma(ctx, a, p);
  // Heads per block: hpb, or up to 64 in as few equal groups as possible (128 -> 2 x 64, 80 -> 2 x 48, 24 -> 32).
  const int64_t groups = hpb > 0 ? (a.num_heads + hpb - 1) / hpb : (a.num_heads + 63) / 64;
  if (groups > 65535) return Status::InvalidArgument(str_cat("mla_decode: ", a.num_heads, " heads"));
  const int64_t m = hpb > 0 ? hpb / 16 : (a.num_heads + 16 * groups - 1) / (16 * groups);
  switch (m) {
    case 1: return launch_tc<1>(ctx, a, options, p, groups);
    case 2: return launch_tc<2>(ctx, a, options, p, groups);
    case 3: return launch_tc<3>(ctx, a, options, p, groups);
    default: return launch_tc<4>(ctx, a, options, p, groups);
  }
}

}  // namespace dsi::cuda
