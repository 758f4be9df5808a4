// Token sampling on the GPU with ref_sample's semantics (kernels/ref/ref_sampling.h), so the runner downloads one
// id per row instead of [rows, vocab] logits.
//
// Per row, for the same u01, the same token as ref_sample up to rounding: probabilities are f32 exp weights
// summed as 2^-40 fixed point (exact, order-independent integer sums, so a row always gives the same token)
// instead of normalized doubles; a choice can differ only where the reference's cumulative probability lies
// within about 1e-6 of r or of top_p (or a probability of the min_p floor). Ties keep the reference's order
// (equal logits rank by ascending id). NaN logits rank as -inf; tokens with weight below 2^-41 of the top one
// are never drawn.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "kernels/cuda/cuda_context.h"

namespace dsi::cuda {

// One row's sampling parameters (SampleParams plus the row's random number), read on the device.
struct DeviceSampleParams {
  float temperature = 0.0f;
  float top_p = 1.0f;
  float min_p = 0.0f;
  int32_t greedy = 1;  // non-zero: argmax (so are temperature <= 0 and top_k == 1); draws nothing
  int64_t top_k = 0;
  double u01 = 0.0;  // in [0, 1) (clamped); unused by greedy rows
};

struct SampleRowsArgs {
  const float* logits = nullptr;  // [rows, row_stride], device
  int64_t rows = 0, vocab = 0, row_stride = 0;
  const DeviceSampleParams* params = nullptr;  // [rows], device
  int32_t* out_ids = nullptr;                  // [rows], device
};

// One block per row: a block argmax for greedy rows; otherwise radix selects (8-bit digits of an order-preserving
// key of the logit) over count and mass histograms for top_k, top_p and the draw, ties resolved by id. No sort,
// no allocation, no synchronization; one kernel on the context's stream.
Status sample_rows(CudaContext& ctx, const SampleRowsArgs& args);

}  // namespace dsi::cuda
