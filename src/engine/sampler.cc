#include "engine/sampler.h"

#include <vector>

namespace dsi {

void apply_penalties(float* logits, int64_t vocab, std::span<const int64_t> prompt, std::span<const int64_t> output,
                     const SamplingParams& params) {
  if (params.repetition_penalty != 1.0f && params.repetition_penalty > 0.0f) {
    std::vector<bool> seen(static_cast<size_t>(vocab), false);
    for (auto ids : {prompt, output}) {
      for (int64_t id : ids) {
        if (id < 0 || id >= vocab || seen[id]) continue;
        seen[id] = true;
        float& l = logits[id];
        l = l > 0 ? l / params.repetition_penalty : l * params.repetition_penalty;
      }
    }
  }
  if (params.presence_penalty == 0.0f && params.frequency_penalty == 0.0f) return;
  std::vector<int32_t> counts(static_cast<size_t>(vocab), 0);
  for (int64_t id : output) {
    if (id >= 0 && id < vocab) ++counts[id];
  }
  for (int64_t id = 0; id < vocab; ++id) {
    if (counts[id] == 0) continue;
    logits[id] -= params.frequency_penalty * static_cast<float>(counts[id]) + params.presence_penalty;
  }
}

// r = u01 * mass, with u01 from uniform_real_distribution(0, 1): the same bits as the former
// uniform_real_distribution(0, mass) draw (both are canonical * width + 0), so seeded outputs are unchanged.
int64_t Sampler::sample(const float* logits, int64_t vocab, const SamplingParams& params) {
  const SampleParams p = sample_params(params);
  if (is_greedy(p)) return ref_argmax(logits, vocab);
  return ref_sample(logits, vocab, p, next_uniform());
}

}  // namespace dsi
