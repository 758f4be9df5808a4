// The GPU model runner: the decoder stack of decoder.h with every weight, activation and KV row in device memory
// and every step a CUDA kernel (kernels/cuda). Loading reuses the architecture loaders (host tensors), uploads
// them (fusing q/k/v, gate/up and the MLA down-projections into single matmuls) and drops the host copies.
//
// Numerics: activations f32; bf16 weights stay bf16 (GEMV at one row, cuBLASLt with bf16-rounded activations
// above); FP8 checkpoints stay FP8 (CudaModelOptions::fp8_weights; kv_b_proj is dequantized); f32 weights run
// in f32. The KV cache is bf16
// on the device (GQA: K and V rows; MLA: the latent c_kv + k_pe), paged with the engine's block tables; the host
// KvCache passed to forward only tracks blocks (KvLayout::host_storage is false).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "io/safetensors.h"
#include "model/model.h"

namespace dsi {

struct CudaModelOptions {
  int device = 0;
  size_t pool_bytes = 0;  // the one device allocation; 0: 90% of the free device memory
  MlaMode mla_mode = MlaMode::kAuto;
  bool moe_device_routing = true;  // small batches run the routed experts without a host round trip
  // Decode steps (one token per sequence) replay a CUDA graph per (batch size, context bucket of 256) once the
  // same shape has run eagerly; steps whose MoE needs the host (large batches) and profiled steps run eagerly.
  bool cuda_graphs = true;
  // FP8 checkpoints keep their e4m3 weights and 128x128 block scales on the device (half the bytes of bf16):
  // decode-sized matmuls run the FP8 GEMV, larger ones quantize the activations per token and 128 channels and
  // run cuBLASLt's block-scaled FP8 GEMM (k % 512 == 0; other shapes a weight-only FP8 kernel). False:
  // dequantized to f32 at load, as the CPU engine does.
  bool fp8_weights = true;
};

Result<std::unique_ptr<Model>> build_cuda_model(const ModelConfig& config, TensorStore& store,
                                                const CudaModelOptions& options);
Result<std::unique_ptr<Model>> load_cuda_model(const std::string& model_dir, const CudaModelOptions& options);
// False when the binary runs on a machine without a CUDA device or driver.
bool cuda_available();

}  // namespace dsi
