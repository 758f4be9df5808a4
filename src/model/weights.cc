#include "model/weights.h"

#include <cstring>

namespace dsi {

Result<SliceRange> shard_range(int64_t full, int rank, int world, const std::string& what) {
  if (world <= 0 || full % world != 0) {
    return Status::InvalidArgument(str_cat(what, ": dimension ", full, " does not split evenly over ", world,
                                           " ranks; choose a tensor-parallel size that divides it"));
  }
  int64_t size = full / world;
  return SliceRange{size * rank, size};
}

void dequantize_fp8_blocks(const uint8_t* q, const float* scales, int64_t out, int64_t in, int64_t block_n,
                           int64_t block_k, float* dst) {
  const int64_t scale_cols = (in + block_k - 1) / block_k;
  for (int64_t r = 0; r < out; ++r) {
    const float* srow = scales + (r / block_n) * scale_cols;
    for (int64_t c = 0; c < in; ++c) dst[r * in + c] = fp8e4m3_to_f32(q[r * in + c]) * srow[c / block_k];
  }
}

namespace {

// Copies rows [r0, r0+nr) and columns [c0, c0+nc) of a row-major [rows, cols] array of elem-byte elements.
void copy_block(const uint8_t* src, int64_t cols, int64_t r0, int64_t nr, int64_t c0, int64_t nc, size_t elem,
                uint8_t* dst) {
  for (int64_t r = 0; r < nr; ++r) {
    std::memcpy(dst + static_cast<size_t>(r * nc) * elem, src + static_cast<size_t>((r0 + r) * cols + c0) * elem,
                static_cast<size_t>(nc) * elem);
  }
}

}  // namespace

Result<Tensor> load_matrix(TensorStore& store, const std::string& name, int64_t out_features, int64_t in_features,
                           const ShardSpec& shard, const QuantConfig& quant) {
  DSI_ASSIGN_OR_RETURN(TensorView w, store.get(name, {out_features, in_features},
                                               {DType::kBF16, DType::kF32, DType::kF16, DType::kF8E4M3}));
  SliceRange rows{0, out_features}, cols{0, in_features};
  if (shard.kind == ShardKind::kColumn) {
    DSI_ASSIGN_OR_RETURN(rows, shard_range(out_features, shard.rank, shard.world, name));
  } else if (shard.kind == ShardKind::kRow) {
    DSI_ASSIGN_OR_RETURN(cols, shard_range(in_features, shard.rank, shard.world, name));
  }

  if (w.dtype == DType::kF8E4M3) {
    const std::string scale_name = name + "_scale_inv";
    if (!store.contains(scale_name)) {
      return Status::NotFound(str_cat("tensor '", name, "' is F8_E4M3 but its block scales '", scale_name,
                                      "' are missing; FP8 checkpoints need one weight_scale_inv per weight"));
    }
    const int64_t bn = quant.block_n, bk = quant.block_k;
    const Shape scale_shape = {(out_features + bn - 1) / bn, (in_features + bk - 1) / bk};
    DSI_ASSIGN_OR_RETURN(TensorView s, store.get(scale_name, scale_shape, {DType::kF32}));
    if (quant.keep_fp8 && rows.size == out_features && cols.size == in_features) {
      Tensor codes(DType::kF8E4M3, {out_features, in_features});
      std::memcpy(codes.raw(), w.data, codes.nbytes());
      return codes;
    }
    // Dequantize the full matrix, then slice (blocks do not align with shard edges in general).
    Tensor full(DType::kF32, {out_features, in_features});
    dequantize_fp8_blocks(w.as<uint8_t>(), s.as<float>(), out_features, in_features, bn, bk, full.data<float>());
    if (rows.size == out_features && cols.size == in_features) return full;
    Tensor part(DType::kF32, {rows.size, cols.size});
    copy_block(full.data<uint8_t>(), in_features, rows.begin, rows.size, cols.begin, cols.size, 4,
               part.data<uint8_t>());
    return part;
  }

  const DType keep = (w.dtype == DType::kBF16) ? DType::kBF16 : DType::kF32;
  Tensor part(w.dtype, {rows.size, cols.size});
  copy_block(static_cast<const uint8_t*>(w.data), in_features, rows.begin, rows.size, cols.begin, cols.size,
             dtype_size(w.dtype), part.data<uint8_t>());
  if (keep == w.dtype) return part;
  return to_f32(part.view());
}

Result<Tensor> load_vector(TensorStore& store, const std::string& name, int64_t size, const ShardSpec& shard) {
  DSI_ASSIGN_OR_RETURN(TensorView v, store.get(name, {size}, {DType::kBF16, DType::kF32, DType::kF16}));
  Tensor full = to_f32(v);
  if (shard.kind != ShardKind::kColumn || shard.world == 1) return full;
  DSI_ASSIGN_OR_RETURN(SliceRange r, shard_range(size, shard.rank, shard.world, name));
  Tensor part(DType::kF32, {r.size});
  std::memcpy(part.raw(), full.data<float>() + r.begin, static_cast<size_t>(r.size) * 4);
  return part;
}

}  // namespace dsi
