#include "model/layers/mla.h"

#include <cstring>
#include <vector>

#include "model/weights.h"

namespace dsi {

Result<MlaAttention> MlaAttention::load(TensorStore& store, const std::string& prefix, const ModelConfig& config,
                                        const ShardSpec& shard) {
  MlaAttention a;
  const int64_t hidden = config.hidden_size, heads = config.num_attention_heads;
  DSI_ASSIGN_OR_RETURN(SliceRange local, shard_range(heads, shard.rank, shard.world, prefix + " attention heads"));
  a.num_heads_ = local.size;
  a.nope_ = config.qk_nope_head_dim;
  a.rope_dim_ = config.qk_rope_head_dim;
  a.v_dim_ = config.v_head_dim;
  a.kv_lora_rank_ = config.kv_lora_rank;
  // transformers builds q_a_layernorm / kv_a_layernorm with the default eps (1e-6), not rms_norm_eps.
  a.eps_ = 1e-6f;
  ShardSpec col = shard, row = shard, rep;
  col.kind = shard.world > 1 ? ShardKind::kColumn : ShardKind::kReplicated;
  row.kind = shard.world > 1 ? ShardKind::kRow : ShardKind::kReplicated;
  const QuantConfig& qc = config.quant;
  const bool bias = config.attention_bias;
  const int64_t qk = config.qk_head_dim();
  a.has_q_lora_ = config.q_lora_rank > 0;
  if (a.has_q_lora_) {
    DSI_ASSIGN_OR_RETURN(a.q_a_, Linear::load(store, {prefix + ".q_a_proj", hidden, config.q_lora_rank, rep, bias}, qc));
    DSI_ASSIGN_OR_RETURN(a.q_a_norm_, load_vector(store, prefix + ".q_a_layernorm.weight", config.q_lora_rank));
    DSI_ASSIGN_OR_RETURN(a.q_b_, Linear::load(store, {prefix + ".q_b_proj", config.q_lora_rank, heads * qk, col}, qc));
  } else {
    DSI_ASSIGN_OR_RETURN(a.q_, Linear::load(store, {prefix + ".q_proj", hidden, heads * qk, col}, qc));
  }
  DSI_ASSIGN_OR_RETURN(a.kv_a_, Linear::load(store, {prefix + ".kv_a_proj_with_mqa", hidden,
                                                     a.kv_lora_rank_ + a.rope_dim_, rep, bias}, qc));
  DSI_ASSIGN_OR_RETURN(a.kv_a_norm_, load_vector(store, prefix + ".kv_a_layernorm.weight", a.kv_lora_rank_));
  // kv_b is always dequantized: its W_UK half is transposed per head below and its W_UV half feeds per-head
  // products (small: heads x (nope + v) x kv_lora).
  QuantConfig kv_b_quant = qc;
  kv_b_quant.keep_fp8 = false;
  DSI_ASSIGN_OR_RETURN(a.kv_b_, Linear::load(store, {prefix + ".kv_b_proj", a.kv_lora_rank_,
                                                     heads * (a.nope_ + a.v_dim_), col}, kv_b_quant));
  DSI_ASSIGN_OR_RETURN(a.o_, Linear::load(store, {prefix + ".o_proj", heads * a.v_dim_, hidden, row, bias}, qc));

  // W_UK_h = kv_b rows [h * (nope + v), + nope) : [nope, kv_lora]; store its transpose per head in f32.
  Tensor kv_b = to_f32(a.kv_b_.weight().view());
  const float* wb = kv_b.data<float>();
  const int64_t r = a.kv_lora_rank_, stride_h = a.nope_ + a.v_dim_;
  a.w_uk_t_ = Tensor(DType::kF32, {a.num_heads_, r, a.nope_});
  float* wt = a.w_uk_t_.data<float>();
  for (int64_t h = 0; h < a.num_heads_; ++h) {
    for (int64_t j = 0; j < a.nope_; ++j) {
      for (int64_t c = 0; c < r; ++c) wt[(h * r + c) * a.nope_ + j] = wb[(h * stride_h + j) * r + c];
    }
  }
  a.rope_ = make_rope_params(config, a.rope_dim_);
  a.scale_ = static_cast<float>(mla_softmax_scale(config));
  return a;
}

void MlaAttention::forward(const LayerContext& ctx, const float* x, const ForwardBatch& batch, KvCache& cache,
                           int64_t layer, MlaMode mode, float* out) const {
  const int64_t t_all = batch.num_tokens(), qk = nope_ + rope_dim_, qw = num_heads_ * qk;
  const int64_t lw = latent_width();

  // Queries: [t, heads, nope + rope].
  std::vector<float> q(static_cast<size_t>(t_all * qw));
  if (has_q_lora_) {
    std::vector<float> qa(static_cast<size_t>(t_all * q_a_.out_local()));
    q_a_.forward(ctx, x, t_all, qa.data());
    ctx.ops.rmsnorm({.x = qa.data(), .w = q_a_norm_.data<float>(), .y = qa.data(), .m = t_all,
                     .d = q_a_.out_local(), .eps = eps_});
    q_b_.forward(ctx, qa.data(), t_all, q.data());
  } else {
    q_.forward(ctx, x, t_all, q.data());
  }
  // Latent: [t, kv_lora + rope] -> normalize c_kv, rotate k_pe.
  std::vector<float> latent(static_cast<size_t>(t_all * lw));
  kv_a_.forward(ctx, x, t_all, latent.data());
  ctx.ops.rmsnorm({.x = latent.data(), .w = kv_a_norm_.data<float>(), .y = latent.data(), .m = t_all,
                   .d = kv_lora_rank_, .x_stride = lw, .y_stride = lw, .eps = eps_});
  RopeArgs r;
  r.positions = batch.positions.data();
  r.num_tokens = t_all;
  r.rot_dim = rope_dim_;
  r.inv_freq = rope_.inv_freq.data();
  r.attn_factor = rope_.attn_factor;
  r.style = RopeStyle::kInterleaved;
  r.x = q.data() + nope_;
  r.num_heads = num_heads_;
  r.token_stride = qw;
  r.head_stride = qk;
  ctx.ops.rope(r);
  r.x = latent.data() + kv_lora_rank_;
  r.num_heads = 1;
  r.token_stride = lw;
  r.head_stride = lw;
  ctx.ops.rope(r);

  const int64_t aw = num_heads_ * v_dim_;
  std::vector<float> attn(static_cast<size_t>(t_all * aw));  // [t, heads, v]
  int64_t row = 0;
  std::vector<float> scratch;
  for (const SequenceChunk& c : batch.chunks) {
    for (int64_t i = 0; i < c.num_tokens; ++i) {
      std::memcpy(cache.k_row(layer, c.block_table, c.start_pos + i), &latent[(row + i) * lw], lw * sizeof(float));
    }
    const int64_t kv_len = c.start_pos + c.num_tokens;
    const float* lc = cache.k_rows(layer, c.block_table, kv_len, scratch);
    const bool absorbed = mode == MlaMode::kAbsorbed || (mode == MlaMode::kAuto && c.num_tokens == 1);
    if (absorbed) {
      attend_absorbed(ctx, &q[row * qw], c.num_tokens, lc, kv_len, &attn[row * aw]);
    } else {
      attend_naive(ctx, &q[row * qw], c.num_tokens, lc, kv_len, &attn[row * aw]);
    }
    row += c.num_tokens;
  }
  o_.forward(ctx, attn.data(), t_all, out);
}

void MlaAttention::attend_naive(const LayerContext& ctx, const float* q, int64_t n, const float* latent,
                                int64_t kv_len, float* attn) const {
  const int64_t qk = nope_ + rope_dim_, lw = latent_width(), kvw = num_heads_ * (nope_ + v_dim_);
  std::vector<float> kv(static_cast<size_t>(kv_len * kvw));  // [kv_len, heads, nope + v]
  kv_b_.forward(ctx, latent, kv_len, kv.data(), lw);
  std::vector<float> k(static_cast<size_t>(kv_len * num_heads_ * qk));  // [kv_len, heads, nope + rope]
  for (int64_t s = 0; s < kv_len; ++s) {
    for (int64_t h = 0; h < num_heads_; ++h) {
      float* dst = &k[(s * num_heads_ + h) * qk];
      std::memcpy(dst, &kv[s * kvw + h * (nope_ + v_dim_)], nope_ * sizeof(float));
      std::memcpy(dst + nope_, latent + s * lw + kv_lora_rank_, rope_dim_ * sizeof(float));
    }
  }
  AttentionArgs a;
  a.q = q;
  a.k = k.data();
  a.v = kv.data() + nope_;
  a.out = attn;
  a.num_q = n;
  a.kv_len = kv_len;
  a.num_q_heads = num_heads_;
  a.num_kv_heads = num_heads_;
  a.head_dim = qk;
  a.v_dim = v_dim_;
  a.q_token_stride = num_heads_ * qk;
  a.q_head_stride = qk;
  a.k_token_stride = num_heads_ * qk;
  a.k_head_stride = qk;
  a.v_token_stride = kvw;
  a.v_head_stride = nope_ + v_dim_;
  a.out_token_stride = num_heads_ * v_dim_;
  a.out_head_stride = v_dim_;
  a.scale = scale_;
  ctx.ops.attention(a);
}

void MlaAttention::attend_absorbed(const LayerContext& ctx, const float* q, int64_t n, const float* latent,
                                   int64_t kv_len, float* attn) const {
  const int64_t qk = nope_ + rope_dim_, lw = latent_width(), r = kv_lora_rank_;
  // q_lat: [n, heads, kv_lora + rope] = [q_nope W_UK_h | q_pe]
  std::vector<float> q_lat(static_cast<size_t>(n * num_heads_ * lw));
  for (int64_t h = 0; h < num_heads_; ++h) {
    ctx.ops.matmul({.x = q + h * qk, .w = w_uk_t_.data<float>() + h * r * nope_, .w_dtype = DType::kF32,
                    .y = &q_lat[h * lw], .m = n, .n = r, .k = nope_, .x_stride = num_heads_ * qk,
                    .y_stride = num_heads_ * lw});
    for (int64_t t = 0; t < n; ++t) {
      std::memcpy(&q_lat[(t * num_heads_ + h) * lw + r], q + t * num_heads_ * qk + h * qk + nope_,
                  rope_dim_ * sizeof(float));
    }
  }
  std::vector<float> o_lat(static_cast<size_t>(n * num_heads_ * r));  // [n, heads, kv_lora]
  AttentionArgs a;
  a.q = q_lat.data();
  a.k = latent;
  a.v = latent;  // the value is the c_kv prefix of the latent
  a.out = o_lat.data();
  a.num_q = n;
  a.kv_len = kv_len;
  a.num_q_heads = num_heads_;
  a.num_kv_heads = 1;
  a.head_dim = lw;
  a.v_dim = r;
  a.q_token_stride = num_heads_ * lw;
  a.q_head_stride = lw;
  a.k_token_stride = lw;
  a.k_head_stride = lw;
  a.v_token_stride = lw;
  a.v_head_stride = lw;
  a.out_token_stride = num_heads_ * r;
  a.out_head_stride = r;
  a.scale = scale_;
  ctx.ops.attention(a);
  // attn[:, h, :] = o_lat[:, h, :] W_UV_h^T, W_UV_h = kv_b rows [h * (nope + v) + nope, + v) : [v, kv_lora].
  const Tensor& wb = kv_b_.weight();
  const size_t esz = dtype_size(wb.dtype());
  for (int64_t h = 0; h < num_heads_; ++h) {
    const auto* w_uv = static_cast<const uint8_t*>(wb.raw()) + static_cast<size_t>((h * (nope_ + v_dim_) + nope_) * r) * esz;
    ctx.ops.matmul({.x = &o_lat[h * r], .w = w_uv, .w_dtype = wb.dtype(), .y = attn + h * v_dim_, .m = n,
                    .n = v_dim_, .k = r, .x_stride = num_heads_ * r, .y_stride = num_heads_ * v_dim_});
  }
}

}  // namespace dsi
