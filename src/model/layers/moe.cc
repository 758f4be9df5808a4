#include "model/layers/moe.h"

#include <cstring>

#include "model/weights.h"

namespace dsi {

Result<MoeLayer> MoeLayer::load(TensorStore& store, const std::string& prefix, const ModelConfig& config,
                                const ShardSpec& shard, const ExpertPlacement& placement) {
  MoeLayer moe;
  moe.hidden_ = config.hidden_size;
  moe.placement_ = placement;
  const int64_t num_experts = config.n_routed_experts;
  // The router is never quantized and always replicated.
  DSI_ASSIGN_OR_RETURN(moe.router_, Linear::load(store, {prefix + ".gate", config.hidden_size, num_experts, {}, false},
                                                 config.quant));
  if (config.topk_method == TopkMethod::kNoauxTc) {
    DSI_ASSIGN_OR_RETURN(moe.correction_bias_,
                         load_vector(store, prefix + ".gate.e_score_correction_bias", num_experts));
  }
  MoeRouteArgs& r = moe.route_template_;
  r.num_experts = num_experts;
  r.top_k = config.num_experts_per_tok;
  r.n_group = config.n_group;
  r.topk_group = config.topk_group;
  r.scoring = config.scoring_func == ScoringFunc::kSigmoid ? MoeScoring::kSigmoid : MoeScoring::kSoftmax;
  r.method = config.topk_method == TopkMethod::kNoauxTc            ? MoeTopk::kNoauxTc
             : config.topk_method == TopkMethod::kGroupLimitedGreedy ? MoeTopk::kGroupLimitedGreedy
                                                                     : MoeTopk::kGreedy;
  r.norm_topk_prob = config.norm_topk_prob;
  r.routed_scaling_factor = static_cast<float>(config.routed_scaling_factor);

  // Each routed expert is whole on its owner rank (expert parallelism), so experts load replicated.
  moe.experts_.resize(placement.num_local());
  for (int64_t e = 0; e < num_experts; ++e) {
    const std::string name = str_cat(prefix, ".experts.", e);
    if (!placement.is_local(e)) {
      // Another rank computes this expert: check the tensors exist, read none of their bytes.
      for (const char* proj : {".gate_proj", ".up_proj", ".down_proj"}) {
        DSI_RETURN_IF_ERROR(store.info(name + proj + ".weight").status());
        if (config.quant.fp8) DSI_RETURN_IF_ERROR(store.info(name + proj + ".weight_scale_inv").status());
      }
      continue;
    }
    DSI_ASSIGN_OR_RETURN(moe.experts_[placement.local_index(e)],
                         GatedMlp::load(store, name, config.hidden_size, config.moe_intermediate_size, {},
                                        config.quant));
  }
  if (config.n_shared_experts > 0) {
    moe.has_shared_ = true;
    DSI_ASSIGN_OR_RETURN(moe.shared_, GatedMlp::load(store, prefix + ".shared_experts", config.hidden_size,
                                                     config.moe_intermediate_size * config.n_shared_experts,
                                                     shard, config.quant));
  }
  return moe;
}

void MoeLayer::forward(const LayerContext& ctx, const float* x, int64_t m, float* out) const {
  const int64_t num_experts = route_template_.num_experts, top_k = route_template_.top_k, h = hidden_;
  std::vector<float> logits(static_cast<size_t>(m * num_experts));  // [m, num_experts]
  router_.forward(ctx, x, m, logits.data());
  std::vector<int32_t> ids(static_cast<size_t>(m * top_k));  // [m, top_k]
  std::vector<float> weights(static_cast<size_t>(m * top_k));
  MoeRouteArgs r = route_template_;
  r.logits = logits.data();
  r.bias = correction_bias_.empty() ? nullptr : correction_bias_.data<float>();
  r.num_tokens = m;
  r.expert_ids = ids.data();
  r.weights = weights.data();
  ctx.ops.moe_route(r);

  // Shared experts first (writes out), then routed experts accumulate.
  if (has_shared_) {
    shared_.forward(ctx, x, m, out);
  } else {
    std::memset(out, 0, static_cast<size_t>(m * h) * sizeof(float));
  }

  // Group the (token, weight) pairs by local expert; one batched MLP call per active expert.
  std::vector<std::vector<std::pair<int64_t, float>>> assigned(placement_.num_local());
  for (int64_t t = 0; t < m; ++t) {
    for (int64_t j = 0; j < top_k; ++j) {
      int32_t e = ids[t * top_k + j];
      if (placement_.is_local(e)) assigned[placement_.local_index(e)].push_back({t, weights[t * top_k + j]});
    }
  }
  std::vector<float> xs, ys;
  for (int64_t le = 0; le < placement_.num_local(); ++le) {
    const auto& toks = assigned[le];
    if (toks.empty()) continue;
    const auto n = static_cast<int64_t>(toks.size());
    xs.resize(static_cast<size_t>(n * h));
    ys.resize(static_cast<size_t>(n * h));
    for (int64_t i = 0; i < n; ++i) std::memcpy(&xs[i * h], x + toks[i].first * h, h * sizeof(float));
    experts_[le].forward(ctx, xs.data(), n, ys.data());
    for (int64_t i = 0; i < n; ++i) {
      float* dst = out + toks[i].first * h;
      const float w = toks[i].second;
      for (int64_t c = 0; c < h; ++c) dst[c] += w * ys[i * h + c];
    }
  }
}

}  // namespace dsi
