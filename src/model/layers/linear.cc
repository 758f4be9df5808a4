#include "model/layers/linear.h"

#include "model/weights.h"

namespace dsi {

Result<Linear> Linear::load(TensorStore& store, const LinearSpec& spec, const QuantConfig& quant) {
  Linear l;
  DSI_ASSIGN_OR_RETURN(l.weight_, load_matrix(store, spec.name + ".weight", spec.out_features, spec.in_features,
                                              spec.shard, quant));
  if (spec.bias) {
    ShardSpec bias_shard = spec.shard;
    if (spec.shard.kind == ShardKind::kRow) bias_shard.kind = ShardKind::kReplicated;
    DSI_ASSIGN_OR_RETURN(Tensor b, load_vector(store, spec.name + ".bias", spec.out_features, bias_shard));
    if (spec.shard.kind != ShardKind::kRow || spec.shard.rank == 0) l.bias_ = std::move(b);
  }
  return l;
}

void Linear::forward(const LayerContext& ctx, const float* x, int64_t m, float* y, int64_t x_stride,
                     int64_t y_stride) const {
  MatmulArgs a;
  a.x = x;
  a.w = weight_.raw();
  a.w_dtype = weight_.dtype();
  a.bias = bias_.empty() ? nullptr : bias_.data<float>();
  a.y = y;
  a.m = m;
  a.n = out_local();
  a.k = in_local();
  a.x_stride = x_stride;
  a.y_stride = y_stride;
  ctx.ops.matmul(a);
}

}  // namespace dsi
