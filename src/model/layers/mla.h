// Multi-head latent attention (DeepSeek-V2/V3). The cache holds, per token, the normalized latent c_kv
// [kv_lora_rank] and the rotated k_pe [qk_rope_head_dim]. Two forms, numerically equivalent:
// - naive (prefill): expand the cached latent through kv_b_proj into per-head k_nope and v, attend with
//   K = [k_nope | k_pe] and V = v;
// - absorbed (decode): fold W_UK into the query (q_lat = q_nope W_UK), attend directly over the latent cache
//   (one shared kv head, value = c_kv), and apply W_UV to the result. Reads the cache once, no expansion.
// Heads are split under tensor parallelism; the latent is per token and replicated.
#pragma once

#include <string>

#include "model/forward_batch.h"
#include "model/kv_cache.h"
#include "model/layers/linear.h"
#include "model/rope.h"

namespace dsi {

enum class MlaMode {
  kAuto,      // naive for chunks of more than one token, absorbed for single-token decode
  kNaive,     // always expand
  kAbsorbed,  // always absorb
};

class MlaAttention {
 public:
  static Result<MlaAttention> load(TensorStore& store, const std::string& prefix, const ModelConfig& config,
                                   const ShardSpec& shard);
  int64_t latent_width() const { return kv_lora_rank_ + rope_dim_; }

  void forward(const LayerContext& ctx, const float* x, const ForwardBatch& batch, KvCache& cache, int64_t layer,
               MlaMode mode, float* out) const;

  // For backends that copy the weights (the GPU runner).
  bool has_q_lora() const { return has_q_lora_; }
  const Linear& q_a() const { return q_a_; }
  const Tensor& q_a_norm() const { return q_a_norm_; }
  const Linear& q_b() const { return q_b_; }
  const Linear& q() const { return q_; }
  const Linear& kv_a() const { return kv_a_; }
  const Tensor& kv_a_norm() const { return kv_a_norm_; }
  const Linear& kv_b() const { return kv_b_; }
  const Tensor& w_uk_t() const { return w_uk_t_; }
  const Linear& o() const { return o_; }
  const RopeParams& rope() const { return rope_; }
  int64_t num_heads() const { return num_heads_; }
  int64_t nope_dim() const { return nope_; }
  int64_t rope_dim() const { return rope_dim_; }
  int64_t v_dim() const { return v_dim_; }
  int64_t kv_lora_rank() const { return kv_lora_rank_; }
  float norm_eps() const { return eps_; }
  float scale() const { return scale_; }

 private:
  // Attention of one chunk; q: [n, heads, nope + rope] rows of the chunk; attn: [n, heads, v_head_dim].
  void attend_naive(const LayerContext& ctx, const float* q, int64_t n, const float* latent, int64_t kv_len,
                    float* attn) const;
  void attend_absorbed(const LayerContext& ctx, const float* q, int64_t n, const float* latent, int64_t kv_len,
                       float* attn) const;

  bool has_q_lora_ = false;
  Linear q_a_, q_b_, q_;  // q_a/q_b with q compression, else q_proj
  Tensor q_a_norm_;       // [q_lora_rank]
  Linear kv_a_;           // [kv_lora_rank + rope, hidden], replicated
  Tensor kv_a_norm_;      // [kv_lora_rank]
  Linear kv_b_;           // [heads * (nope + v), kv_lora_rank], column parallel
  Tensor w_uk_t_;         // [heads, kv_lora_rank, nope] f32: W_UK transposed per head, for absorption
  Linear o_;
  RopeParams rope_;
  int64_t num_heads_ = 0, nope_ = 0, rope_dim_ = 0, v_dim_ = 0, kv_lora_rank_ = 0;
  float eps_ = 1e-6f;
  float scale_ = 1.0f;
};

}  // namespace dsi
