// Loading weights from a TensorStore into host tensors: shard slicing for tensor parallelism and FP8 block
// dequantization (`weight_scale_inv`, one f32 scale per 128x128 block, partial blocks at the edges).
#pragma once

#include <string>

#include "core/tensor.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "parallel/communicator.h"

namespace dsi {

// Loads the [out_features, in_features] matrix `name` (full, unsharded shape checked), keeping this rank's slice:
// rows for kColumn, columns for kRow. BF16 stays BF16; F32 stays F32; F16 and FP8 (dequantized with
// `name`_scale_inv) become F32, unless quant.keep_fp8 and the matrix is not sliced: then the FP8 codes are kept
// as stored (Linear::load reads the scales). Errors name the tensor and what was wrong.
Result<Tensor> load_matrix(TensorStore& store, const std::string& name, int64_t out_features, int64_t in_features,
                           const ShardSpec& shard, const QuantConfig& quant);

// Loads a 1-D tensor of `size` elements (norm weights, biases, router bias) as F32, optionally sliced
// (kColumn slices it, as for a column-parallel bias).
Result<Tensor> load_vector(TensorStore& store, const std::string& name, int64_t size,
                           const ShardSpec& shard = {});

// Dequantizes FP8 e4m3 q[out, in] with scales[ceil(out/bn), ceil(in/bk)] into f32.
void dequantize_fp8_blocks(const uint8_t* q, const float* scales, int64_t out, int64_t in, int64_t block_n,
                           int64_t block_k, float* dst);

// Range of a dimension of `full` elements owned by `rank` of `world` (must divide evenly).
struct SliceRange {
  int64_t begin = 0;
  int64_t size = 0;
};
Result<SliceRange> shard_range(int64_t full, int rank, int world, const std::string& what);

}  // namespace dsi
