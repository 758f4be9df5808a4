// Token sampling from logits: greedy, or temperature with top-k / top-p / min-p, reproducible from a seed.
// (The serving engine adds penalties, stop handling and logprobs on top.)
// Thread use: one Sampler per sequence or per engine thread; not shared.
#pragma once

#include <cstdint>
#include <random>
#include <span>

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
  // logits: [vocab]. Ties in greedy go to the lowest id.
  int64_t sample(const float* logits, int64_t vocab, const SamplingParams& params);

 private:
  std::mt19937_64 rng_;
};

int64_t argmax(const float* logits, int64_t vocab);

// Repetition penalty over prompt and output tokens (positive logits divided, negative multiplied), then presence
// and frequency penalties over output tokens (OpenAI semantics), in place. No-op with default params.
void apply_penalties(float* logits, int64_t vocab, std::span<const int64_t> prompt, std::span<const int64_t> output,
                     const SamplingParams& params);

}  // namespace dsi
