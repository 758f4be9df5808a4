// A checkpoint of random weights for a config: every tensor the loader expects, with the published names,
// shapes and dtypes (BF16, or FP8 e4m3 + block scales when the config is FP8). For benchmarks on real shapes
// without the real weights, and for the demo model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/model_config.h"

namespace dsi {

struct TensorSpec {
  std::string name;
  Shape shape;
  DType dtype = DType::kBF16;
  float scale = 0.02f;  // random values ~ U(-scale, scale) * sqrt(3); norms are ones; FP8 scales fixed
  bool ones = false;
};

// Tensors of the checkpoint for `config` (all layers < num_hidden_layers).
std::vector<TensorSpec> expected_tensors(const ModelConfig& config);

// Writes `path` (a .safetensors file) with random values: weights scaled by 1/sqrt(fan_in) so activations stay
// O(1) through many layers; norm weights 1.
Status write_random_checkpoint(const ModelConfig& config, const std::string& path, uint64_t seed);

}  // namespace dsi
