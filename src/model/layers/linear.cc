#include "model/layers/linear.h"

#include <cstring>

#include "model/weights.h"

namespace dsi {

Result<Linear> Linear::load(TensorStore& store, const LinearSpec& spec, const QuantConfig& quant) {
  Linear l;
  DSI_ASSIGN_OR_RETURN(l.weight_, load_matrix(store, spec.name + ".weight", spec.out_features, spec.in_features,
                                              spec.shard, quant));
  if (l.weight_.dtype() == DType::kF8E4M3) {
    const Shape scale_shape = {(spec.out_features + quant.block_n - 1) / quant.block_n,
                               (spec.in_features + quant.block_k - 1) / quant.block_k};
    DSI_ASSIGN_OR_RETURN(TensorView s, store.get(spec.name + ".weight_scale_inv", scale_shape, {DType::kF32}));
    l.weight_scale_ = Tensor(DType::kF32, scale_shape);
    std::memcpy(l.weight_scale_.raw(), s.data, l.weight_scale_.nbytes());
  }
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
  DSI_CHECK(weight_.dtype() != DType::kF8E4M3, "Linear::forward: FP8 weights kept for the GPU runner reached a "
                                               "host kernel");
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
