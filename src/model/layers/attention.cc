#include "model/layers/attention.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "model/weights.h"

namespace dsi {

Result<GqaAttention> GqaAttention::load(TensorStore& store, const std::string& prefix, const ModelConfig& config,
                                        const ShardSpec& shard) {
  GqaAttention a;
  const int64_t hidden = config.hidden_size, d = config.head_dim;
  DSI_ASSIGN_OR_RETURN(SliceRange heads, shard_range(config.num_attention_heads, shard.rank, shard.world,
                                                     prefix + " attention heads"));
  DSI_ASSIGN_OR_RETURN(SliceRange kv_heads, shard_range(config.num_key_value_heads, shard.rank, shard.world,
                                                        prefix + " key/value heads"));
  a.num_heads_ = heads.size;
  a.num_kv_heads_ = kv_heads.size;
  a.head_dim_ = d;
  ShardSpec col = shard, row = shard;
  col.kind = shard.world > 1 ? ShardKind::kColumn : ShardKind::kReplicated;
  row.kind = shard.world > 1 ? ShardKind::kRow : ShardKind::kReplicated;
  const bool qkv_bias = config.attention_bias;
  const QuantConfig& q = config.quant;
  DSI_ASSIGN_OR_RETURN(a.q_, Linear::load(store, {prefix + ".q_proj", hidden, config.num_attention_heads * d, col,
                                                  qkv_bias}, q));
  DSI_ASSIGN_OR_RETURN(a.k_, Linear::load(store, {prefix + ".k_proj", hidden, config.num_key_value_heads * d, col,
                                                  qkv_bias}, q));
  DSI_ASSIGN_OR_RETURN(a.v_, Linear::load(store, {prefix + ".v_proj", hidden, config.num_key_value_heads * d, col,
                                                  qkv_bias}, q));
  // Qwen2 has q/k/v biases but none on o_proj; Llama's attention_bias covers o_proj too.
  const bool o_bias = config.arch == Arch::kLlama && config.attention_bias;
  DSI_ASSIGN_OR_RETURN(a.o_, Linear::load(store, {prefix + ".o_proj", config.num_attention_heads * d, hidden, row,
                                                  o_bias}, q));
  a.rope_ = make_rope_params(config, d);
  a.scale_ = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  return a;
}

void GqaAttention::forward(const LayerContext& ctx, const float* x, const ForwardBatch& batch, KvCache& cache,
                           int64_t layer, float* out) const {
  const int64_t t_all = batch.num_tokens(), d = head_dim_;
  const int64_t qw = num_heads_ * d, kw = k_width(), vw = v_width();
  std::vector<float> q(static_cast<size_t>(t_all * qw)), k(static_cast<size_t>(t_all * kw)),
      v(static_cast<size_t>(t_all * vw));
  q_.forward(ctx, x, t_all, q.data());
  k_.forward(ctx, x, t_all, k.data());
  v_.forward(ctx, x, t_all, v.data());

  RopeArgs r;
  r.positions = batch.positions.data();
  r.num_tokens = t_all;
  r.rot_dim = d;
  r.inv_freq = rope_.inv_freq.data();
  r.attn_factor = rope_.attn_factor;
  r.style = RopeStyle::kNeox;
  r.head_stride = d;
  r.x = q.data();
  r.num_heads = num_heads_;
  r.token_stride = qw;
  ctx.ops.rope(r);
  r.x = k.data();
  r.num_heads = num_kv_heads_;
  r.token_stride = kw;
  ctx.ops.rope(r);

  std::vector<float> attn(static_cast<size_t>(t_all * qw));  // [num_tokens, num_heads, d]
  int64_t row = 0;
  std::vector<float> k_scratch, v_scratch;
  for (const SequenceChunk& c : batch.chunks) {
    for (int64_t i = 0; i < c.num_tokens; ++i) {
      std::memcpy(cache.k_row(layer, c.block_table, c.start_pos + i), &k[(row + i) * kw], kw * sizeof(float));
      std::memcpy(cache.v_row(layer, c.block_table, c.start_pos + i), &v[(row + i) * vw], vw * sizeof(float));
    }
    const int64_t kv_len = c.start_pos + c.num_tokens;
    const float* kc = cache.k_rows(layer, c.block_table, kv_len, k_scratch);
    const float* vc = cache.v_rows(layer, c.block_table, kv_len, v_scratch);
    AttentionArgs a;
    a.q = &q[row * qw];
    a.k = kc;
    a.v = vc;
    a.out = &attn[row * qw];
    a.num_q = c.num_tokens;
    a.kv_len = kv_len;
    a.num_q_heads = num_heads_;
    a.num_kv_heads = num_kv_heads_;
    a.head_dim = d;
    a.v_dim = d;
    a.q_token_stride = qw;
    a.q_head_stride = d;
    a.k_token_stride = kw;
    a.k_head_stride = d;
    a.v_token_stride = vw;
    a.v_head_stride = d;
    a.out_token_stride = qw;
    a.out_head_stride = d;
    a.scale = scale_;
    ctx.ops.attention(a);
    row += c.num_tokens;
  }
  o_.forward(ctx, attn.data(), t_all, out);
}

}  // namespace dsi
