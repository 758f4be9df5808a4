// SiLU-gated MLP: down(silu(gate(x)) * up(x)). gate/up column parallel, down row parallel; the caller decides
// when to all-reduce (the MoE layer reduces once for all experts).
#pragma once

#include <string>

#include "model/layers/linear.h"

namespace dsi {

class GatedMlp {
 public:
  // prefix: e.g. "model.layers.0.mlp" (-> gate_proj, up_proj, down_proj).
  static Result<GatedMlp> load(TensorStore& store, const std::string& prefix, int64_t hidden, int64_t intermediate,
                               const ShardSpec& shard, const QuantConfig& quant, bool bias = false);

  // out[m, hidden] = mlp(x[m, hidden]).
  // The result is this rank's partial sum under tensor parallelism.
  void forward(const LayerContext& ctx, const float* x, int64_t m, float* out) const;

  // For backends that copy the weights (the GPU runner).
  const Linear& gate() const { return gate_; }
  const Linear& up() const { return up_; }
  const Linear& down() const { return down_; }

 private:
  Linear gate_, up_, down_;
};

}  // namespace dsi
