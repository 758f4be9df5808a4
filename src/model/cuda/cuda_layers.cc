#include "model/cuda/cuda_layers.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string_view>
#include <string>

#include "kernels/cuda/cuda_attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_fp8.h"
#include "kernels/cuda/cuda_model_ops.h"
#include "kernels/cuda/cuda_moe.h"
#include "kernels/cuda/cuda_moe_grouped.h"
#include "kernels/cuda/cuda_ops.h"
#include "model/moe_grouping.h"

namespace dsi::cuda_model {

namespace cu = ::dsi::cuda;

// ---- Profile ---------------------------------------------------------------------------------------------------

namespace {
struct Profile {
  bool on = std::getenv("DSI_CUDA_PROFILE") != nullptr && std::string(std::getenv("DSI_CUDA_PROFILE")) == "1";
  std::chrono::steady_clock::time_point last = std::chrono::steady_clock::now();
  std::map<std::string, double> total;
};
Profile& profile() {
  static Profile p;
  return p;
}
}  // namespace

bool profiling() { return profile().on; }

void profile_mark(CudaContext& ctx, const char* label) {
  Profile& p = profile();
  if (!p.on) return;
  cudaStreamSynchronize(ctx.stream());
  const auto now = std::chrono::steady_clock::now();
  p.total[label] += std::chrono::duration<double>(now - p.last).count();
  p.last = now;
}

void profile_report(const char* title) {
  Profile& p = profile();
  if (!p.on) return;
  double sum = 0;
  for (const auto& [k, v] : p.total) sum += v;
  std::fprintf(stderr, "profile %s: %.3f ms:", title, sum * 1e3);
  for (const auto& [k, v] : p.total) std::fprintf(stderr, " %s=%.3f", k.c_str(), v * 1e3);
  std::fprintf(stderr, "\n");
  p.total.clear();
  p.last = std::chrono::steady_clock::now();
}

// ---- Arena ----------------------------------------------------------------------------------------------------

Result<void*> Arena::alloc(size_t bytes) {
  bytes = (bytes + 255) / 256 * 256;
  while (current_ < blocks_.size()) {
    if (offset_ + bytes <= blocks_[current_].size()) {
      void* p = blocks_[current_].get() + offset_;
      offset_ += bytes;
      size_t used = offset_;
      for (size_t i = 0; i < current_; ++i) used += blocks_[i].size();
      high_water_ = std::max(high_water_, used);
      return p;
    }
    ++current_;
    offset_ = 0;
  }
  const size_t last = blocks_.empty() ? 0 : blocks_.back().size();
  const size_t size = std::max<size_t>({bytes, 2 * last, size_t{64} << 20});
  DSI_ASSIGN_OR_RETURN(void* p, ctx_->pool().alloc(size));
  blocks_.emplace_back(&ctx_->pool(), static_cast<uint8_t*>(p), size);
  ++generation_;
  current_ = blocks_.size() - 1;
  offset_ = bytes;
  size_t used = 0;
  for (const auto& b : blocks_) used += b.size();
  high_water_ = std::max(high_water_, used - (size - bytes));
  return p;
}

void Arena::reset() {
  // A spike (one huge prefill) should not keep its memory: shrink a block four times larger than the use.
  if (blocks_.size() == 1 && blocks_[0].size() > (size_t{256} << 20) && blocks_[0].size() > 4 * high_water_) {
    blocks_.clear();
    ++generation_;
  }
  high_water_ = 0;
  if (blocks_.size() > 1) {
    size_t total = 0;
    for (const auto& b : blocks_) total += b.size();
    blocks_.clear();
    // One block of the combined size next time: the first alloc creates it.
    auto p = ctx_->pool().alloc(total);
    if (p.ok()) blocks_.emplace_back(&ctx_->pool(), static_cast<uint8_t*>(*p), total);
    ++generation_;
  }
  rewind();
}

// ---- Linear and MLP -------------------------------------------------------------------------------------------

namespace {
// FP8 matmuls: the GEMV up to this many rows (it reads the weights once; cuBLASLt pads to 16 rows).
constexpr int64_t kFp8GemvMaxM = 4;
}  // namespace

Status DLinear::forward(CudaContext& ctx, Arena& arena, const float* x, int64_t m, float* y, int64_t x_stride,
                        int64_t y_stride, const uint16_t* x_bf16) const {
  if (x_bf16 != nullptr && takes_bf16_input(m) && (x_stride == 0 || x_stride == k) &&
      (y_stride == 0 || y_stride == n)) {
    // What cu::matmul does for these m (cuBLASLt on bf16(x)), without rounding x again.
    return cu::gemm_bf16(ctx, {.x = x_bf16, .w = static_cast<const uint16_t*>(w), .y = y, .y_dtype = DType::kF32,
                               .m = m, .n = n, .k = k});
  }
  if (dtype == DType::kF8E4M3) {
    const cu::GemvFp8Args g{.x = x, .w = static_cast<const uint8_t*>(w), .w_scale = scale, .bias = bias, .y = y,
                            .m = m, .n = n, .k = k, .x_stride = x_stride, .y_stride = y_stride};
    if (m <= kFp8GemvMaxM) return cu::gemv_fp8(ctx, g);
    if (k % 512 != 0 || bias != nullptr) {
      // cuBLASLt's block-scaled FP8 needs k % 512 == 0 (see cuda_ops.h); small test models take this path.
      return m <= 16 ? cu::gemv_fp8(ctx, g) : cu::gemm_fp8_weight_only(ctx, g);
    }
    // FP8 activations: per token and 128 channels (DeepSeek's scheme), then cuBLASLt with f32 output.
    const Arena::Mark mark = arena.mark();
    DSI_ASSIGN_OR_RETURN(uint8_t* q, arena.bytes(m * k));
    DSI_ASSIGN_OR_RETURN(float* qs, arena.floats((k + 127) / 128 * m));
    DSI_RETURN_IF_ERROR(cu::quantize_fp8(ctx, {.x = x, .q = q, .scale = qs, .m = m, .k = k, .x_stride = x_stride}));
    const bool direct = y_stride == 0 || y_stride == n;
    float* out = y;
    if (!direct) {
      DSI_ASSIGN_OR_RETURN(out, arena.floats(m * n));
    }
    DSI_RETURN_IF_ERROR(cu::gemm_fp8(ctx, {.x = q, .x_scale = qs, .w = static_cast<const uint8_t*>(w),
                                           .w_scale = scale, .y = out, .y_dtype = DType::kF32, .m = m, .n = n,
                                           .k = k}));
    if (!direct) {
      DSI_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(y, y_stride * sizeof(float), out, n * sizeof(float),
                                                 n * sizeof(float), m, cudaMemcpyDeviceToDevice, ctx.stream()));
    }
    arena.rewind_to(mark);  // stream order keeps the buffers alive for the kernels just queued
    return Status::Ok();
  }
  return cu::matmul(ctx, matmul_args(x, m, y, x_stride, y_stride));
}

bool DLinear::fuses_norm(int64_t m) const {
  static const bool enabled = [] {
    const char* v = std::getenv("DSI_CUDA_GEMV_NORM");
    return v != nullptr && std::string_view(v) == "1";
  }();
  // x's alignment is the caller's (the runner's activation buffers are 256-byte aligned); 16 stands in for it.
  return enabled && m == 1 && dtype == DType::kBF16 &&
         cu::gemv_bf16_norm_fits(matmul_args(reinterpret_cast<const float*>(16), 1, nullptr, 0, 0));
}

Status DLinear::forward_normed(CudaContext& ctx, const float* x, const cu::GemvNormArgs& norm, float* y) const {
  return cu::gemv_bf16_norm(ctx, matmul_args(x, 1, y, 0, 0), norm);
}

MatmulArgs DLinear::matmul_args(const float* x, int64_t m, float* y, int64_t x_stride, int64_t y_stride) const {
  MatmulArgs a;
  a.x = x;
  a.w = w;
  a.w_dtype = dtype;
  a.bias = bias;
  a.y = y;
  a.m = m;
  a.n = n;
  a.k = k;
  a.x_stride = x_stride;
  a.y_stride = y_stride;
  return a;
}

bool DLinear::fuses_silu_mul(int64_t m) const {
  const bool aligned = reinterpret_cast<uintptr_t>(w) % 16 == 0;
  if (dtype == DType::kBF16) return m == 1 && k % 8 == 0 && aligned;
  if (dtype == DType::kF8E4M3) return m >= 1 && m <= kFp8GemvMaxM && k % 16 == 0 && aligned;
  return false;
}

Status DLinear::forward_silu_mul(CudaContext& ctx, const float* gate_up, int64_t m, float* y) const {
  if (dtype == DType::kF8E4M3) {
    return cu::gemv_fp8(ctx, {.x = gate_up, .w = static_cast<const uint8_t*>(w), .w_scale = scale, .bias = bias,
                              .y = y, .m = m, .n = n, .k = k, .x_stride = 2 * k, .silu_mul = true});
  }
  return cu::gemv_bf16_silu_mul(ctx, matmul_args(gate_up, m, y, 2 * k, 0));
}

Status DMlp::forward(CudaContext& ctx, Arena& arena, const float* x, int64_t m, float* out,
                     const uint16_t* x_bf16) const {
  DSI_ASSIGN_OR_RETURN(float* gu, arena.floats(m * 2 * inter));
  DSI_ASSIGN_OR_RETURN(float* act, arena.floats(m * inter));
  DSI_RETURN_IF_ERROR(gate_up.forward(ctx, arena, x, m, gu, 0, 0, x_bf16));
  profile_mark(ctx, "mlp_gate_up");
  if (down.fuses_silu_mul(m)) {
    // Decode rows: the down GEMV forms silu(gate) * up as it stages its input (one kernel less).
    DSI_RETURN_IF_ERROR(down.forward_silu_mul(ctx, gu, m, out));
    profile_mark(ctx, "mlp_down");
    return Status::Ok();
  }
  const SiluMulArgs silu{.gate = gu, .up = gu + inter, .out = act, .m = m, .d = inter, .in_stride = 2 * inter};
  if (down.dtype == DType::kBF16 && down.bias == nullptr && inter % 8 == 0) {
    // bf16 weights: the product goes to bf16 directly, the GEMM's input (the f32 route rounds the same values).
    DSI_ASSIGN_OR_RETURN(uint8_t* act_bf16, arena.bytes(m * inter * 2));
    DSI_RETURN_IF_ERROR(cu::silu_mul_bf16(ctx, silu, reinterpret_cast<uint16_t*>(act_bf16)));
    DSI_RETURN_IF_ERROR(cu::gemm_bf16(ctx, {.x = reinterpret_cast<const uint16_t*>(act_bf16),
                                            .w = static_cast<const uint16_t*>(down.w), .y = out,
                                            .y_dtype = DType::kF32, .m = m, .n = down.n, .k = inter}));
  } else {
    DSI_RETURN_IF_ERROR(cu::silu_mul(ctx, silu));
    DSI_RETURN_IF_ERROR(down.forward(ctx, arena, act, m, out));
  }
  profile_mark(ctx, "mlp_down");
  return Status::Ok();
}

// ---- Attention over the paged cache -------------------------------------------------------------------------

namespace {
// The batch-dependent fields of a paged attention call (tables, per-token sequence and position, split size).
cu::PagedAttentionArgs paged_args(const BatchMeta& b) {
  cu::PagedAttentionArgs a;
  a.block_tables = b.block_tables;
  a.max_blocks = b.max_blocks;
  a.block_size = b.block_size;
  a.token_seq = b.token_seq;
  a.token_pos = b.token_pos;
  a.num_tokens = b.num_tokens;
  a.max_kv_len = b.max_kv_len;
  a.single_sequence = b.num_seqs == 1;
  if (!b.any_single && b.num_seqs > 1) {
    // Prefill of several sequences: chunk boundaries let the flash prefill kernel take the whole batch (steps
    // with decode tokens keep the per-token kernels, which share K/V loads across a GQA group).
    a.chunk_starts = b.chunk_starts;
    a.num_chunks = b.num_seqs;
    a.max_chunk_tokens = b.max_chunk_tokens;
  }
  return a;
}
}  // namespace

// ---- GQA attention ---------------------------------------------------------------------------------------------

Status DGqa::forward(CudaContext& ctx, Arena& arena, const float* x, const BatchMeta& b, float* out,
                     const uint16_t* x_bf16, const cu::GemvNormArgs* norm) const {
  const int64_t t = b.num_tokens, width = (hq + 2 * hkv) * d, kw = hkv * d;
  DSI_ASSIGN_OR_RETURN(float* qkv_buf, arena.floats(t * width));
  DSI_ASSIGN_OR_RETURN(float* attn, arena.floats(t * hq * d));
  if (norm != nullptr) {
    DSI_RETURN_IF_ERROR(qkv.forward_normed(ctx, x, *norm, qkv_buf));
  } else {
    DSI_RETURN_IF_ERROR(qkv.forward(ctx, arena, x, t, qkv_buf, 0, 0, x_bf16));
  }
  profile_mark(ctx, "attn_qkv");
  RopeArgs r;
  r.positions = b.positions;
  r.num_tokens = t;
  r.rot_dim = d;
  r.inv_freq = rope.inv_freq;
  r.attn_factor = rope.attn_factor;
  r.style = RopeStyle::kNeox;
  r.token_stride = width;
  r.head_stride = d;
  r.x = qkv_buf;
  r.num_heads = hq + hkv;  // q heads then k heads: one rotation
  DSI_RETURN_IF_ERROR(cu::rope(ctx, r));
  // K and V of a token sit side by side in qkv_buf and in the cache row: one write.
  DSI_RETURN_IF_ERROR(cu::kv_write(ctx, {.src = qkv_buf + hq * d, .src_stride = width, .pool = k_pool,
                                         .row_width = 2 * kw, .col0 = 0, .width = 2 * kw, .slots = b.slots,
                                         .num_tokens = t}));
  profile_mark(ctx, "attn_rope_kv");
  cu::PagedAttentionArgs a = paged_args(b);
  a.q = qkv_buf;
  a.q_token_stride = width;
  a.q_head_stride = d;
  a.k_pool = k_pool;
  a.v_pool = v_pool;
  a.k_row_width = a.v_row_width = 2 * kw;
  a.k_head_stride = a.v_head_stride = d;
  a.out = attn;
  a.out_token_stride = hq * d;
  a.out_head_stride = d;
  a.num_q_heads = hq;
  a.num_kv_heads = hkv;
  a.head_dim = a.v_dim = d;
  a.scale = scale;
  DSI_RETURN_IF_ERROR(cu::paged_attention(ctx, a));
  profile_mark(ctx, "attn_core");
  DSI_RETURN_IF_ERROR(o.forward(ctx, arena, attn, t, out));
  profile_mark(ctx, "attn_o");
  return Status::Ok();
}

// ---- MLA -------------------------------------------------------------------------------------------------------

Status DMla::forward(CudaContext& ctx, Arena& arena, const float* x, const BatchMeta& b, float* out,
                     const uint16_t* x_bf16, const cu::GemvNormArgs* norm) const {
  const int64_t t = b.num_tokens, qk = nope + rope_dim, qw = heads * qk;
  const int64_t fw = fused_a.n;  // [q_lora | q] then the latent
  const int64_t lat0 = fw - lw();
  DSI_ASSIGN_OR_RETURN(float* fa, arena.floats(t * fw));
  if (norm != nullptr) {
    DSI_RETURN_IF_ERROR(fused_a.forward_normed(ctx, x, *norm, fa));
  } else {
    DSI_RETURN_IF_ERROR(fused_a.forward(ctx, arena, x, t, fa, 0, 0, x_bf16));
  }
  profile_mark(ctx, "mla_a");
  float* q = fa;  // without q compression the queries are the first qw columns
  int64_t q_stride = fw;
  if (q_lora) {
    DSI_RETURN_IF_ERROR(cu::rmsnorm(ctx, {.x = fa, .w = q_a_norm, .y = fa, .m = t, .d = q_lora_rank,
                                          .x_stride = fw, .y_stride = fw, .eps = eps}));
    DSI_ASSIGN_OR_RETURN(q, arena.floats(t * qw));
    DSI_RETURN_IF_ERROR(q_b.forward(ctx, arena, fa, t, q, fw));
    q_stride = qw;
  }
  float* lat = fa + lat0;
  DSI_ASSIGN_OR_RETURN(float* attn, arena.floats(t * heads * v));
  // Auto: absorbed for decode steps, naive for prefill-only steps. A step that mixes decode tokens with prefill
  // chunks runs absorbed throughout: the naive form would expand a decode token's whole context (every head, f32)
  // to attend with one query.
  const bool absorbed = mode == MlaMode::kAbsorbed || (mode == MlaMode::kAuto && b.any_single);
  if (absorbed) {
    // One kernel normalizes and ropes the latent into the cache and ropes q_pe into the absorbed query.
    DSI_ASSIGN_OR_RETURN(float* q_lat, arena.floats(t * heads * lw()));  // [t, heads, r + rope]
    const cu::MlaPrepArgs prep{.lat = lat, .lat_stride = fw, .norm_w = kv_a_norm, .eps = eps, .q = q,
                               .q_token_stride = q_stride, .q_head_stride = qk, .nope = nope, .q_lat = q_lat,
                               .q_lat_token_stride = heads * lw(), .q_lat_head_stride = lw(), .pool = pool,
                               .slots = b.slots, .positions = b.positions, .inv_freq = rope.inv_freq,
                               .attn_factor = rope.attn_factor, .style = RopeStyle::kInterleaved, .num_tokens = t,
                               .heads = heads, .r = r, .rope_dim = rope_dim};
    // DSI_CUDA_PREP_ABSORB=1: the query absorption in the same launch (not yet the default: not run on a GPU).
    static const bool fuse_absorb = [] {
      const char* v = std::getenv("DSI_CUDA_PREP_ABSORB");
      return v != nullptr && std::string_view(v) == "1";
    }();
    if (fuse_absorb) {
      DSI_RETURN_IF_ERROR(cu::mla_prep_absorb(ctx, prep, q_absorb_args(q, q_stride, q_lat, t)));
    } else {
      DSI_RETURN_IF_ERROR(cu::mla_prep(ctx, prep));
    }
    profile_mark(ctx, "mla_q_rope_kv");
    DSI_RETURN_IF_ERROR(attend_absorbed(ctx, arena, q, q_stride, q_lat, b, attn, /*q_absorbed=*/fuse_absorb));
  } else {
    DSI_RETURN_IF_ERROR(cu::rmsnorm(ctx, {.x = lat, .w = kv_a_norm, .y = lat, .m = t, .d = r, .x_stride = fw,
                                          .y_stride = fw, .eps = eps}));
    RopeArgs rp;
    rp.positions = b.positions;
    rp.num_tokens = t;
    rp.rot_dim = rope_dim;
    rp.inv_freq = rope.inv_freq;
    rp.attn_factor = rope.attn_factor;
    rp.style = RopeStyle::kInterleaved;
    rp.x = q + nope;
    rp.num_heads = heads;
    rp.token_stride = q_stride;
    rp.head_stride = qk;
    DSI_RETURN_IF_ERROR(cu::rope(ctx, rp));
    rp.x = lat + r;
    rp.num_heads = 1;
    rp.token_stride = fw;
    rp.head_stride = fw;
    DSI_RETURN_IF_ERROR(cu::rope(ctx, rp));
    DSI_RETURN_IF_ERROR(cu::kv_write(ctx, {.src = lat, .src_stride = fw, .pool = pool, .row_width = lw(),
                                           .col0 = 0, .width = lw(), .slots = b.slots, .num_tokens = t}));
    profile_mark(ctx, "mla_q_rope_kv");
    DSI_RETURN_IF_ERROR(attend_naive(ctx, arena, q, q_stride, b, attn));
  }
  profile_mark(ctx, absorbed ? "mla_absorbed" : "mla_naive");
  DSI_RETURN_IF_ERROR(o.forward(ctx, arena, attn, t, out));
  profile_mark(ctx, "attn_o");
  return Status::Ok();
}

cu::HeadMatmulArgs DMla::q_absorb_args(const float* q, int64_t q_stride, float* q_lat, int64_t t) const {
  const int64_t qk = nope + rope_dim, w = lw();
  return {.x = q, .x_token_stride = q_stride, .x_head_stride = qk, .w = w_uk_t, .w_dtype = kv_b.dtype,
          .w_head_stride = r * nope, .w_row_stride = nope, .y = q_lat, .y_token_stride = heads * w,
          .y_head_stride = w, .num_tokens = t, .num_heads = heads, .n = r, .k = nope};
}

Status DMla::attend_absorbed(CudaContext& ctx, Arena& arena, const float* q, int64_t q_stride, float* q_lat,
                             const BatchMeta& b, float* attn, bool q_absorbed) const {
  const int64_t t = b.num_tokens, w = lw();
  DSI_ASSIGN_OR_RETURN(float* o_lat, arena.floats(t * heads * r));  // [t, heads, r]
  // q_lat[:, h, :r] = q_nope[:, h] W_UK_h (its rope columns are mla_prep's), unless mla_prep_absorb did it.
  if (!q_absorbed) DSI_RETURN_IF_ERROR(cu::head_matmul(ctx, q_absorb_args(q, q_stride, q_lat, t)));
  if (b.all_single && r == 512 && rope_dim == 64) {
    // One query per sequence: the tensor-core split-K kernel over the paged latent cache.
    cu::MlaDecodeArgs m;
    m.q = q_lat;
    m.cache = pool;
    m.seq_lens = b.seq_lens;
    m.block_tables = b.block_tables;
    m.max_blocks = b.max_blocks;
    m.block_size = b.block_size;
    m.out = o_lat;
    m.batch = t;
    m.num_heads = heads;
    m.kv_lora_rank = r;
    m.rope_dim = rope_dim;
    m.max_seq_len = b.max_kv_len;
    m.scale = scale;
    // Rows of the batch are sequences here: token_seq[i] == i when every chunk is one token.
    DSI_RETURN_IF_ERROR(cu::mla_decode(ctx, m));
  } else {
    cu::PagedAttentionArgs a = paged_args(b);
    a.q = q_lat;
    a.q_token_stride = heads * w;
    a.q_head_stride = w;
    a.k_pool = a.v_pool = pool;
    a.k_row_width = a.v_row_width = w;
    a.out = o_lat;
    a.out_token_stride = heads * r;
    a.out_head_stride = r;
    a.num_q_heads = heads;
    a.num_kv_heads = 1;
    a.head_dim = w;
    a.v_dim = r;
    a.scale = scale;
    a.single_sequence = false;  // the multi-query kernel is not yet validated on the GPU at 576/512 widths
    DSI_RETURN_IF_ERROR(cu::paged_attention(ctx, a));
  }
  // attn[:, h, :] = o_lat[:, h, :] W_UV_h^T, W_UV_h = kv_b rows [h (nope + v) + nope, + v).
  const size_t esz = dtype_size(kv_b.dtype);
  const void* w_uv = static_cast<const uint8_t*>(kv_b.w) + static_cast<size_t>(nope * r) * esz;
  return cu::head_matmul(ctx, {.x = o_lat, .x_token_stride = heads * r, .x_head_stride = r, .w = w_uv,
                               .w_dtype = kv_b.dtype, .w_head_stride = (nope + v) * r, .w_row_stride = r, .y = attn,
                               .y_token_stride = heads * v, .y_head_stride = v, .num_tokens = t, .num_heads = heads,
                               .n = v, .k = r});
}

namespace {
// The batched naive MLA prefill holds every chunk's context expanded at once (f32 latent and kv_b output, bf16 K
// and V) up to this many bytes; past it (or with a short chunk) it expands chunk by chunk.
constexpr int64_t kNaiveBatchBytes = int64_t{1} << 30;
}  // namespace

Status DMla::attend_naive(CudaContext& ctx, Arena& arena, const float* q, int64_t q_stride, const BatchMeta& b,
                          float* attn) const {
  const int64_t qk = nope + rope_dim, w = lw(), kvw = heads * (nope + v);
  DSI_ASSIGN_OR_RETURN(const bool batched, attend_naive_batched(ctx, arena, q, q_stride, b, attn));
  if (batched) return Status::Ok();
  int64_t row = 0;
  const Arena::Mark mark = arena.mark();
  for (size_t c = 0; c < b.chunk_start.size(); ++c) {
    arena.rewind_to(mark);  // each chunk's expansion reuses the previous chunk's space
    const int64_t n = b.chunk_tokens[c], kv_len = b.chunk_start[c] + n;
    DSI_ASSIGN_OR_RETURN(float* lat, arena.floats(kv_len * w));
    DSI_ASSIGN_OR_RETURN(float* kv, arena.floats(kv_len * kvw));
    DSI_RETURN_IF_ERROR(cu::gather_paged_rows(ctx, pool, w, b.block_tables + c * b.max_blocks, b.block_size, kv_len,
                                              w, lat));
    DSI_RETURN_IF_ERROR(kv_b.forward(ctx, arena, lat, kv_len, kv, w));
    cu::PagedAttentionArgs a;
    a.q = q + row * q_stride;
    a.q_token_stride = q_stride;
    a.q_head_stride = qk;
    a.k_token_stride = heads * qk;
    a.k_head_stride = qk;
    a.token_seq = b.token_seq + row;
    a.token_pos = b.token_pos + row;
    a.out = attn + row * heads * v;
    a.out_token_stride = heads * v;
    a.out_head_stride = v;
    a.num_tokens = n;
    a.num_q_heads = a.num_kv_heads = heads;
    a.head_dim = qk;
    a.v_dim = v;
    a.max_kv_len = kv_len;
    a.scale = scale;
    a.single_sequence = true;
    // The tensor-core kernel streams bf16 K/V with cp.async: K = [k_nope | k_pe] and V per head, converted from
    // the expansion in one pass (f32 K/V it would convert while loading, slower).
    cu::PagedAttentionArgs bf = a;
    bf.v_token_stride = heads * v;
    bf.v_head_stride = v;
    bf.k_bf16 = bf.v_bf16 = reinterpret_cast<const uint16_t*>(kv);  // placeholders (aligned) for the checks
    cu::MlaKvExpandArgs ex{.kv = kv, .lat = lat, .lat_stride = w, .r = r, .k = nullptr, .v = nullptr, .len = kv_len,
                           .heads = heads, .nope = nope, .rope_dim = rope_dim, .v_dim = v};
    ex.k = ex.v = reinterpret_cast<uint16_t*>(kv);
    if (n >= 16 && cu::picks_flash_prefill(bf) && cu::mla_kv_expand_supported(ex)) {
      DSI_ASSIGN_OR_RETURN(uint8_t* kb, arena.bytes(kv_len * heads * qk * 2));
      DSI_ASSIGN_OR_RETURN(uint8_t* vb, arena.bytes(kv_len * heads * v * 2));
      ex.k = reinterpret_cast<uint16_t*>(kb);
      ex.v = reinterpret_cast<uint16_t*>(vb);
      DSI_RETURN_IF_ERROR(cu::mla_kv_expand_bf16(ctx, ex));
      bf.k_bf16 = ex.k;
      bf.v_bf16 = ex.v;
      DSI_RETURN_IF_ERROR(cu::paged_attention(ctx, bf));
    } else {
      DSI_ASSIGN_OR_RETURN(float* k, arena.floats(kv_len * heads * qk));
      DSI_RETURN_IF_ERROR(cu::copy_3d(ctx, {.src = kv, .dst = k, .n0 = kv_len, .n1 = heads, .width = nope, .s0 = kvw,
                                            .s1 = nope + v, .d0 = heads * qk, .d1 = qk}));
      DSI_RETURN_IF_ERROR(cu::copy_3d(ctx, {.src = lat + r, .dst = k + nope, .n0 = kv_len, .n1 = heads,
                                            .width = rope_dim, .s0 = w, .s1 = 0, .d0 = heads * qk, .d1 = qk}));
      a.k_f32 = k;
      a.v_f32 = kv + nope;
      a.v_token_stride = kvw;
      a.v_head_stride = nope + v;
      DSI_RETURN_IF_ERROR(cu::paged_attention(ctx, a));
    }
    row += n;
  }
  return Status::Ok();
}

Result<bool> DMla::attend_naive_batched(CudaContext& ctx, Arena& arena, const float* q, int64_t q_stride,
                                        const BatchMeta& b, float* attn) const {
  const int64_t qk = nope + rope_dim, w = lw(), kvw = heads * (nope + v);
  static const bool enabled = [] {
    const char* e = std::getenv("DSI_CUDA_MLA_BATCH");
    return e == nullptr || std::string_view(e) != "0";
  }();
  const auto chunks = static_cast<int64_t>(b.chunk_start.size());
  if (!enabled || chunks < 2 || b.kv_starts == nullptr || b.chunk_starts == nullptr) return false;
  int64_t total = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    if (b.chunk_tokens[c] < 2) return false;  // a decode token: the per-chunk path
    total += b.chunk_start[c] + b.chunk_tokens[c];
  }
  const int64_t row_bytes = 4 * (w + kvw) + 2 * heads * (qk + v);
  if (total * row_bytes > kNaiveBatchBytes) return false;
  // One call over all chunks: their contexts back to back (row kv_starts[c] + p is position p of chunk c).
  cu::PagedAttentionArgs a;
  a.q = q;
  a.q_token_stride = q_stride;
  a.q_head_stride = qk;
  a.k_token_stride = heads * qk;
  a.k_head_stride = qk;
  a.v_token_stride = heads * v;
  a.v_head_stride = v;
  a.token_seq = b.token_seq;
  a.token_pos = b.token_pos;
  a.chunk_starts = b.chunk_starts;
  a.num_chunks = chunks;
  a.max_chunk_tokens = b.max_chunk_tokens;
  a.kv_starts = b.kv_starts;
  a.out = attn;
  a.out_token_stride = heads * v;
  a.out_head_stride = v;
  a.num_tokens = b.num_tokens;
  a.num_q_heads = a.num_kv_heads = heads;
  a.head_dim = qk;
  a.v_dim = v;
  a.max_kv_len = b.max_kv_len;
  a.scale = scale;
  // Device memory for the whole batch; where the pool cannot give it, the per-chunk path needs far less.
  const Arena::Mark mark = arena.mark();
  auto lat_r = arena.floats(total * w);
  auto kv_r = lat_r.ok() ? arena.floats(total * kvw) : Result<float*>(lat_r.status());
  auto kb_r = kv_r.ok() ? arena.bytes(total * heads * qk * 2) : Result<uint8_t*>(kv_r.status());
  auto vb_r = kb_r.ok() ? arena.bytes(total * heads * v * 2) : Result<uint8_t*>(kb_r.status());
  if (!vb_r.ok()) {
    arena.rewind_to(mark);
    return false;
  }
  float* lat = *lat_r;
  cu::MlaKvExpandArgs ex{.kv = *kv_r, .lat = lat, .lat_stride = w, .r = r,
                         .k = reinterpret_cast<uint16_t*>(*kb_r), .v = reinterpret_cast<uint16_t*>(*vb_r),
                         .len = total, .heads = heads, .nope = nope, .rope_dim = rope_dim, .v_dim = v};
  float* kv = *kv_r;
  a.k_bf16 = ex.k;
  a.v_bf16 = ex.v;
  if (!cu::picks_flash_prefill(a) || !cu::mla_kv_expand_supported(ex)) {
    arena.rewind_to(mark);
    return false;
  }
  for (int64_t c = 0, at = 0; c < chunks; ++c) {
    const int64_t kv_len = b.chunk_start[c] + b.chunk_tokens[c];
    DSI_RETURN_IF_ERROR(cu::gather_paged_rows(ctx, pool, w, b.block_tables + c * b.max_blocks, b.block_size, kv_len,
                                              w, lat + at * w));
    at += kv_len;
  }
  DSI_RETURN_IF_ERROR(kv_b.forward(ctx, arena, lat, total, kv, w));
  DSI_RETURN_IF_ERROR(cu::mla_kv_expand_bf16(ctx, ex));
  DSI_RETURN_IF_ERROR(cu::paged_attention(ctx, a));
  arena.rewind_to(mark);  // stream order keeps the buffers alive for the kernels just queued
  return true;
}

// ---- MoE -------------------------------------------------------------------------------------------------------

DLinear DMoe::expert_gate_up(int64_t e) const {
  const size_t esz = dtype_size(dtype);
  const int64_t scales = (2 * inter + 127) / 128 * ((hidden + 127) / 128);
  return {.w = static_cast<const uint8_t*>(w13) + static_cast<size_t>(e * 2 * inter * hidden) * esz, .dtype = dtype,
          .scale = w13_scale != nullptr ? w13_scale + e * scales : nullptr, .bias = nullptr, .n = 2 * inter,
          .k = hidden};
}

DLinear DMoe::expert_down(int64_t e) const {
  const size_t esz = dtype_size(dtype);
  const int64_t scales = (hidden + 127) / 128 * ((inter + 127) / 128);
  return {.w = static_cast<const uint8_t*>(w2) + static_cast<size_t>(e * hidden * inter) * esz, .dtype = dtype,
          .scale = w2_scale != nullptr ? w2_scale + e * scales : nullptr, .bias = nullptr, .n = hidden, .k = inter};
}

DMoe::Path DMoe::path(int64_t m) const {
  const bool aligned = hidden % 8 == 0 && inter % 8 == 0;
  if (!device_routing || !aligned) return Path::kHost;
  if (m * route.top_k <= 64 && (dtype == DType::kBF16 || dtype == DType::kF8E4M3)) return Path::kGemv;
  if ((dtype == DType::kBF16 || dtype == DType::kF8E4M3) && experts <= 1024) return Path::kGrouped;
  return Path::kHost;
}

int64_t DMoe::shared_slices() const {
  static const bool enabled = [] {
    const char* v = std::getenv("DSI_CUDA_FOLD_SHARED");
    return v == nullptr || std::string_view(v) != "0";
  }();
  if (!enabled || !has_shared || inter <= 0 || shared.inter % inter != 0) return 0;
  const DLinear& gu = shared.gate_up;
  const DLinear& dn = shared.down;
  if (gu.dtype != dtype || dn.dtype != dtype || gu.bias != nullptr || dn.bias != nullptr) return 0;
  if (gu.n != 2 * shared.inter || gu.k != hidden || dn.n != hidden || dn.k != shared.inter) return 0;
  if (dtype == DType::kF8E4M3 && (gu.scale == nullptr || dn.scale == nullptr)) return 0;
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (!aligned(gu.w) || !aligned(dn.w)) return 0;
  const int64_t slices = shared.inter / inter;
  return route.top_k + slices <= 64 ? slices : 0;
}

bool DMoe::fused_router(int64_t m, bool with_norm) const {
  return router.dtype == DType::kF32 && router.bias == nullptr && reinterpret_cast<uintptr_t>(router.w) % 16 == 0 &&
         m <= 4 && cu::moe_router_route_fits(m, experts, hidden, with_norm);
}

bool DMoe::fuses_norm(int64_t m) const {
  static const bool enabled = [] {
    const char* v = std::getenv("DSI_CUDA_ROUTER_NORM");
    return v != nullptr && std::string_view(v) == "1";
  }();
  return enabled && fused_router(m, true);
}

Status DMoe::forward(CudaContext& ctx, Arena& arena, const float* x, int64_t m, float* out,
                     const uint16_t* x_bf16_in, const cu::RouterNormArgs* norm) const {
  const int64_t top_k = route.top_k, pairs = m * top_k;
  DSI_ASSIGN_OR_RETURN(float* logits, arena.floats(m * experts));
  DSI_ASSIGN_OR_RETURN(int32_t* ids, arena.ints(pairs));
  DSI_ASSIGN_OR_RETURN(float* weights, arena.floats(pairs));
  MoeRouteArgs r = route;
  r.logits = logits;
  r.bias = correction_bias;
  r.num_tokens = m;
  r.expert_ids = ids;
  r.weights = weights;
  bool one_launch = norm != nullptr && fused_router(m, true);
  if (norm != nullptr && !one_launch) {
    // The norm the caller left to the router, on its own (x is its output).
    DSI_RETURN_IF_ERROR(cu::rmsnorm_residual(ctx, {.x = norm->branch, .residual = norm->residual, .w = norm->w,
                                                   .y = norm->normed, .m = m, .d = hidden, .eps = norm->eps}));
    norm = nullptr;
  }
  if (norm == nullptr) one_launch = fused_router(m, false) && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  if (one_launch) {
    // Decode: the router matmul and the routing (and with `norm` the residual add and RMSNorm) in one launch.
    DSI_RETURN_IF_ERROR(cu::moe_router_route(ctx, x, static_cast<const float*>(router.w), hidden, r, norm));
  } else {
    DSI_RETURN_IF_ERROR(router.forward(ctx, arena, x, m, logits));
    DSI_RETURN_IF_ERROR(cu::moe_route(ctx, r));
  }
  profile_mark(ctx, "moe_route");
  const Path how = path(m);
  const int64_t n_shared = how == Path::kGemv ? shared_slices() : 0;
  if (how == Path::kGemv) {
    // Decode-sized batches: expert ids never leave the device; the shared experts, where their weights allow,
    // run as extra pairs of the same two kernels (which then write out rather than add into it).
    if (n_shared == 0) {
      if (has_shared) {
        DSI_RETURN_IF_ERROR(shared.forward(ctx, arena, x, m, out));
      } else {
        DSI_CUDA_RETURN_IF_ERROR(
            cudaMemsetAsync(out, 0, static_cast<size_t>(m * hidden) * sizeof(float), ctx.stream()));
      }
      profile_mark(ctx, "moe_shared");
    }
    DSI_ASSIGN_OR_RETURN(float* h, arena.floats(m * (top_k + n_shared) * inter));
    cu::MoeExpertsArgs a{.x = x, .ids = ids, .weights = weights, .w13 = w13, .w2 = w2, .h = h, .out = out,
                         .num_tokens = m, .top_k = top_k, .num_experts = experts, .hidden = hidden, .inter = inter,
                         .w_dtype = dtype, .w13_scale = w13_scale, .w2_scale = w2_scale};
    if (n_shared > 0) {
      a.shared_w13 = shared.gate_up.w;
      a.shared_w2 = shared.down.w;
      a.shared_w13_scale = shared.gate_up.scale;
      a.shared_w2_scale = shared.down.scale;
      a.n_shared = n_shared;
    }
    DSI_RETURN_IF_ERROR(cu::moe_experts_gemv(ctx, a));
    profile_mark(ctx, "moe_experts_gemv");
    return Status::Ok();
  }
  // Prefill: x rounded to bf16 once (by the caller's norm, else here), for the shared experts' GEMM and the grouped
  // experts' first GEMM.
  const uint16_t* x_bf16 = how == Path::kGrouped ? x_bf16_in : nullptr;
  if (x_bf16 == nullptr && how == Path::kGrouped && has_shared && shared.takes_bf16_input(m) && hidden % 8 == 0) {
    DSI_ASSIGN_OR_RETURN(uint8_t* xb, arena.bytes(m * hidden * 2));
    DSI_RETURN_IF_ERROR(cu::f32_to_bf16(ctx, x, reinterpret_cast<uint16_t*>(xb), m, hidden, hidden));
    x_bf16 = reinterpret_cast<const uint16_t*>(xb);
  }
  if (has_shared) {
    DSI_RETURN_IF_ERROR(shared.forward(ctx, arena, x, m, out, x_bf16));
  } else {
    DSI_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, static_cast<size_t>(m * hidden) * sizeof(float), ctx.stream()));
  }
  profile_mark(ctx, "moe_shared");

  if (how == Path::kGrouped) {
    // Larger batches: pairs sorted by expert on the device, one tensor-core GEMM over all active experts (FP8
    // weights dequantized to bf16 tile by tile).
    const size_t ws_bytes = cu::moe_grouped_workspace_bytes(m, top_k, experts, hidden, inter);
    DSI_ASSIGN_OR_RETURN(uint8_t* ws, arena.bytes(static_cast<int64_t>(ws_bytes)));
    DSI_RETURN_IF_ERROR(cu::moe_experts_grouped(
        ctx, {.x = x, .x_bf16 = x_bf16, .ids = ids, .weights = weights, .w13 = w13, .w2 = w2, .out = out,
              .workspace = ws, .workspace_bytes = ws_bytes, .num_tokens = m, .top_k = top_k, .num_experts = experts,
              .hidden = hidden, .inter = inter, .w_dtype = dtype, .w13_scale = w13_scale,
              .w2_scale = w2_scale}));
    profile_mark(ctx, "moe_experts_grouped");
    return Status::Ok();
  }

  // Larger batches: read the routing back, group the pairs by expert on the host (moe_grouping.h: padded
  // row counts, so cuBLASLt's plans repeat), one matmul per active expert.
  std::vector<int32_t> host_ids(static_cast<size_t>(pairs));
  DSI_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_ids.data(), ids, host_ids.size() * sizeof(int32_t),
                                           cudaMemcpyDeviceToHost, ctx.stream()));
  DSI_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream()));
  DSI_ASSIGN_OR_RETURN(ExpertGroups groups, group_pairs_by_expert(host_ids.data(), m, top_k, experts));
  const int64_t rows = groups.rows;
  const std::vector<int64_t>& first = groups.first;
  DSI_ASSIGN_OR_RETURN(int32_t* meta, arena.ints(rows + pairs));  // [rows] token of each row, [pairs] row of pair
  DSI_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(meta, groups.row_token.data(), rows * sizeof(int32_t),
                                           cudaMemcpyHostToDevice, ctx.stream()));
  DSI_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(meta + rows, groups.pair_row.data(), pairs * sizeof(int32_t),
                                           cudaMemcpyHostToDevice, ctx.stream()));
  DSI_ASSIGN_OR_RETURN(float* xs, arena.floats(rows * hidden));
  DSI_ASSIGN_OR_RETURN(float* gu, arena.floats(rows * 2 * inter));
  DSI_ASSIGN_OR_RETURN(float* act, arena.floats(rows * inter));
  DSI_ASSIGN_OR_RETURN(float* ys, arena.floats(rows * hidden));
  DSI_RETURN_IF_ERROR(cu::gather_rows(ctx, x, hidden, meta, rows, hidden, xs, hidden));
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t n = first[e + 1] - first[e];
    if (n == 0) continue;
    DSI_RETURN_IF_ERROR(expert_gate_up(e).forward(ctx, arena, xs + first[e] * hidden, n, gu + first[e] * 2 * inter));
  }
  DSI_RETURN_IF_ERROR(cu::silu_mul(ctx, {.gate = gu, .up = gu + inter, .out = act, .m = rows, .d = inter,
                                         .in_stride = 2 * inter}));
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t n = first[e + 1] - first[e];
    if (n == 0) continue;
    DSI_RETURN_IF_ERROR(expert_down(e).forward(ctx, arena, act + first[e] * inter, n, ys + first[e] * hidden));
  }
  DSI_RETURN_IF_ERROR(cu::moe_combine(ctx, ys, meta + rows, weights, m, top_k, hidden, out));
  profile_mark(ctx, "moe_experts_host");
  return Status::Ok();
}

}  // namespace dsi::cuda_model
