// DeepSeek MoE: router (softmax|sigmoid scores; greedy, group-limited or noaux_tc top-k), routed experts
// addressed through an ExpertPlacement (this rank computes only its own experts), and shared experts.
// The output is this rank's partial sum; the caller all-reduces once.
#pragma once

#include <string>
#include <vector>

#include "model/layers/mlp.h"

namespace dsi {

class MoeLayer {
 public:
  // prefix: "model.layers.N.mlp".
  static Result<MoeLayer> load(TensorStore& store, const std::string& prefix, const ModelConfig& config,
                               const ShardSpec& shard, const ExpertPlacement& placement);

  // out[m, hidden] = sum over chosen local experts of weight * expert(x) + shared(x) (partial under TP/EP).
  void forward(const LayerContext& ctx, const float* x, int64_t m, float* out) const;

  // For backends that copy the weights (the GPU runner).
  const MoeRouteArgs& route_template() const { return route_template_; }
  const Linear& router() const { return router_; }
  const Tensor& correction_bias() const { return correction_bias_; }
  const ExpertPlacement& placement() const { return placement_; }
  const std::vector<GatedMlp>& experts() const { return experts_; }
  bool has_shared() const { return has_shared_; }
  const GatedMlp& shared() const { return shared_; }

 private:
  MoeRouteArgs route_template_;  // routing settings from the config; pointers filled per call
  Linear router_;                // [n_routed_experts, hidden], replicated, f32 logits
  Tensor correction_bias_;       // [n_routed_experts] (noaux_tc) or empty
  ExpertPlacement placement_;
  std::vector<GatedMlp> experts_;  // local experts, by placement local index
  bool has_shared_ = false;
  GatedMlp shared_;
  int64_t hidden_ = 0;
};

}  // namespace dsi
