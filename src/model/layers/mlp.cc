#include "model/layers/mlp.h"

#include <vector>

namespace dsi {

Result<GatedMlp> GatedMlp::load(TensorStore& store, const std::string& prefix, int64_t hidden,
                                int64_t intermediate, const ShardSpec& shard, const QuantConfig& quant,
                                bool bias) {
  GatedMlp mlp;
  ShardSpec col = shard, row = shard;
  col.kind = shard.world > 1 ? ShardKind::kColumn : ShardKind::kReplicated;
  row.kind = shard.world > 1 ? ShardKind::kRow : ShardKind::kReplicated;
  DSI_ASSIGN_OR_RETURN(mlp.gate_, Linear::load(store, {prefix + ".gate_proj", hidden, intermediate, col, bias}, quant));
  DSI_ASSIGN_OR_RETURN(mlp.up_, Linear::load(store, {prefix + ".up_proj", hidden, intermediate, col, bias}, quant));
  DSI_ASSIGN_OR_RETURN(mlp.down_, Linear::load(store, {prefix + ".down_proj", intermediate, hidden, row, bias}, quant));
  return mlp;
}

void GatedMlp::forward(const LayerContext& ctx, const float* x, int64_t m, float* out) const {
  const int64_t inter = gate_.out_local();
  std::vector<float> gate_up(static_cast<size_t>(m * 2 * inter));  // [m, 2 * inter]: gate | up
  gate_.forward(ctx, x, m, gate_up.data(), 0, 2 * inter);
  up_.forward(ctx, x, m, gate_up.data() + inter, 0, 2 * inter);
  std::vector<float> act(static_cast<size_t>(m * inter));  // [m, inter]
  SiluMulArgs s;
  s.gate = gate_up.data();
  s.up = gate_up.data() + inter;
  s.out = act.data();
  s.m = m;
  s.d = inter;
  s.in_stride = 2 * inter;
  ctx.ops.silu_mul(s);
  down_.forward(ctx, act.data(), m, out);
}

}  // namespace dsi
