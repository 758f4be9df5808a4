// Copies a model's host parts (decoder.h) to the device for the GPU runner: owns every weight block, fuses
// matmuls that read the same input (q/k/v, gate/up, MLA's q_a/kv_a) by stacking their rows, and lays out routed
// experts contiguously ([experts, 2 * inter, hidden] and [experts, hidden, inter]) so kernels index them by id.
#pragma once

#include <initializer_list>
#include <vector>

#include "model/cuda/cuda_layers.h"
#include "model/cuda/cuda_model.h"

namespace dsi::cuda_model {

class Uploader {
 public:
  explicit Uploader(CudaContext* ctx) : ctx_(ctx) {}
  // Raw bytes of a host tensor (any dtype) on the device.
  Result<const void*> tensor(const Tensor& t);
  // A 1-D f32 tensor (norm weights, biases); null for an empty tensor.
  Result<const float*> floats(const Tensor& t);
  // Row-stacked weights of linears with the same input width and dtype; biases stacked (zeros where absent).
  // as_f32: converts bf16 weights to f32 (the MoE router: expert choice must not flip on bf16 rounding).
  Result<DLinear> linear(std::initializer_list<const Linear*> parts, bool as_f32 = false);
  Result<DMlp> mlp(const GatedMlp& m);
  Result<DLayer> layer(const ModelConfig& config, const DecoderLayer& layer, const CudaModelOptions& options);

 private:
  Result<void*> alloc(size_t bytes);
  Result<void*> copy(const void* src, size_t bytes);
  Result<DRope> rope(const RopeParams& p);
  Result<DMoe> moe(const MoeLayer& m, const CudaModelOptions& options);
  CudaContext* ctx_;
  std::vector<DeviceBuffer<uint8_t>> owned_;
};

}  // namespace dsi::cuda_model
