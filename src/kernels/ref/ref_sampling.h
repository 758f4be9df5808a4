// The reference token sampler (kernels/ref): the ground truth the engine's host Sampler runs and the CUDA
// sampler (kernels/cuda/cuda_sampling.h) is tested against. The random number comes in as u01 so that the
// caller owns the generator and both backends can be fed the same draw.
#pragma once

#include <cstdint>

namespace dsi {

struct SampleParams {
  float temperature = 0.0f;  // <= 0: greedy
  float top_p = 1.0f;        // nucleus: smallest prefix with cumulative probability >= top_p (>= 1: off)
  float min_p = 0.0f;        // drop tokens with probability < min_p * max probability (<= 0: off)
  int64_t top_k = 0;         // <= 0: all; 1: greedy
};

// Greedy: temperature <= 0 or top_k == 1. Greedy sampling draws no random number.
inline bool is_greedy(const SampleParams& p) { return p.temperature <= 0.0f || p.top_k == 1; }

// Index of the largest logit; ties go to the lowest id.
int64_t ref_argmax(const float* logits, int64_t vocab);

// Candidates in descending logit order (ties: lower id first); the first top_k of them; probabilities
// exp((l - max) / T) normalized over those (double); min_p keeps the leading run with probs >= min_p * probs[0];
// top_p keeps the smallest leading run whose cumulative reaches top_p (at least one); then r = u01 * (mass kept)
// and the first kept token whose cumulative exceeds r. Greedy params give ref_argmax. u01 in [0, 1).
int64_t ref_sample(const float* logits, int64_t vocab, const SampleParams& p, double u01);

}  // namespace dsi
