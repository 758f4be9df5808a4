// Linear layer that knows which slice of the full weight it holds (replicated, column or row parallel).
// Column parallel: this rank computes out_features / world outputs. Row parallel: this rank consumes
// in_features / world inputs and its output is a partial sum (the caller all-reduces; the bias is added by
// rank 0 only, so the reduced sum carries it once).
#pragma once

#include <string>

#include "core/tensor.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "model/layers/context.h"

namespace dsi {

struct LinearSpec {
  std::string name;  // prefix: `name`.weight, `name`.bias, `name`.weight_scale_inv
  int64_t in_features = 0;   // full (unsharded)
  int64_t out_features = 0;  // full (unsharded)
  ShardSpec shard;
  bool bias = false;
};

class Linear {
 public:
  static Result<Linear> load(TensorStore& store, const LinearSpec& spec, const QuantConfig& quant);

  // y[m, out_local] = x[m, in_local] W^T (+ b). Strides default to the row widths.
  void forward(const LayerContext& ctx, const float* x, int64_t m, float* y, int64_t x_stride = 0,
               int64_t y_stride = 0) const;

  int64_t in_local() const { return weight_.dim(1); }
  int64_t out_local() const { return weight_.dim(0); }
  const Tensor& weight() const { return weight_; }  // [out_local, in_local], BF16 or F32
  const Tensor& bias() const { return bias_; }      // [out_local] f32 or empty
  // FP8 weights kept as stored (QuantConfig::keep_fp8): [ceil(out/block_n), ceil(in/block_k)] f32, else empty.
  const Tensor& weight_scale() const { return weight_scale_; }

 private:
  Tensor weight_;
  Tensor weight_scale_;
  Tensor bias_;  // empty when none (or on ranks > 0 for row parallel)
};

}  // namespace dsi
