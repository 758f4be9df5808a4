// GQA self-attention (Llama, Qwen2): q/k/v column parallel (heads split), neox RoPE, causal attention over the
// KV cache, o_proj row parallel. The output is this rank's partial sum; the caller all-reduces.
#pragma once

#include <string>

#include "model/forward_batch.h"
#include "model/kv_cache.h"
#include "model/layers/linear.h"
#include "model/rope.h"

namespace dsi {

class GqaAttention {
 public:
  // prefix: "model.layers.N.self_attn".
  static Result<GqaAttention> load(TensorStore& store, const std::string& prefix, const ModelConfig& config,
                                   const ShardSpec& shard);
  // KV cache widths per token for this rank.
  int64_t k_width() const { return num_kv_heads_ * head_dim_; }
  int64_t v_width() const { return num_kv_heads_ * head_dim_; }

  // x: [num_tokens, hidden] -> out: [num_tokens, hidden]. Writes this layer's K/V for the new tokens.
  void forward(const LayerContext& ctx, const float* x, const ForwardBatch& batch, KvCache& cache, int64_t layer,
               float* out) const;

  // For backends that copy the weights (the GPU runner).
  const Linear& q() const { return q_; }
  const Linear& k() const { return k_; }
  const Linear& v() const { return v_; }
  const Linear& o() const { return o_; }
  const RopeParams& rope() const { return rope_; }
  int64_t num_heads() const { return num_heads_; }
  int64_t num_kv_heads() const { return num_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  float scale() const { return scale_; }

 private:
  Linear q_, k_, v_, o_;
  RopeParams rope_;
  int64_t num_heads_ = 0, num_kv_heads_ = 0, head_dim_ = 0;  // local heads
  float scale_ = 1.0f;
};

}  // namespace dsi
