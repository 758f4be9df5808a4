// Token sampling from logits: greedy, or temperature with top-k / top-p / min-p, reproducible from a seed.
// (The serving engine adds penalties, stop handling and logprobs on top.)
// Thread use: one Sampler per sequence or per engine thread; not shared.
#pragma once

#include <cstdint>
#include <random>
#include <span>

#include "kernels/ref/ref_sampling.h"

namespace dsi {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // nucleus: smallest set with cumulative probability >= top_p
  int64_t top_k = 0;         // 0: all
  float min_p = 0.0f;        // drop tokens with probability < min_p * max probability
  float presence_penalty = 0.0f;    // OpenAI: subtract once from the logit of every token generated so far
  float frequency_penalty = 0.0f;   // OpenAI: subtract count times
  float repetition_penalty = 1.0f;  // HF/vLLM: divide positive logits (multiply negative) of prompt+output tokens
};

class Sampler {
 public:
  explicit Sampler(uint64_t seed) : rng_(seed) {}
  // logits: [vocab]. Ties in greedy go to the lowest id. Draws one next_uniform() unless greedy.
  int64_t sample(const float* logits, int64_t vocab, const SamplingParams& params);
  // The one random number a non-greedy sample consumes, in [0, 1). A caller that samples elsewhere (on the GPU)
  // draws it here, so seeded outputs do not depend on where the sampling ran.
  double next_uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

 private:
  std::mt19937_64 rng_;
};

inline SampleParams sample_params(const SamplingParams& p) {
  return {.temperature = p.temperature, .top_p = p.top_p, .min_p = p.min_p, .top_k = p.top_k};
}

inline int64_t argmax(const float* logits, int64_t vocab) { return ref_argmax(logits, vocab); }

// Whether apply_penalties changes anything (the sampler then needs the logits on the host).
inline bool has_penalties(const SamplingParams& p) {
  return (p.repetition_penalty != 1.0f && p.repetition_penalty > 0.0f) || p.presence_penalty != 0.0f ||
         p.frequency_penalty != 0.0f;
}

// Repetition penalty over prompt and output tokens (positive logits divided, negative multiplied), then presence
// and frequency penalties over output tokens (OpenAI semantics), in place. No-op with default params.
void apply_penalties(float* logits, int64_t vocab, std::span<const int64_t> prompt, std::span<const int64_t> output,
                     const SamplingParams& params);

}  // namespace dsi
