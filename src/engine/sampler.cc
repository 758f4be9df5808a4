#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace dsi {

int64_t argmax(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

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

int64_t Sampler::sample(const float* logits, int64_t vocab, const SamplingParams& params) {
  if (params.temperature <= 0.0f || params.top_k == 1) return argmax(logits, vocab);
  // Candidates sorted by logit, descending (stable on id for reproducibility).
  std::vector<int64_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  size_t keep = ids.size();
  if (params.top_k > 0) keep = std::min(keep, static_cast<size_t>(params.top_k));
  const double max_logit = logits[ids[0]];
  std::vector<double> probs(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp((logits[ids[i]] - max_logit) / params.temperature);
    total += probs[i];
  }
  for (double& p : probs) p /= total;
  if (params.min_p > 0.0f) {
    const double floor = params.min_p * probs[0];
    size_t k = 1;
    while (k < keep && probs[k] >= floor) ++k;
    keep = k;
  }
  if (params.top_p < 1.0f) {
    double cum = 0;
    size_t k = 0;
    while (k < keep) {
      cum += probs[k++];
      if (cum >= params.top_p) break;
    }
    keep = std::max<size_t>(k, 1);
  }
  const double mass = std::accumulate(probs.begin(), probs.begin() + static_cast<long>(keep), 0.0);
  std::uniform_real_distribution<double> u(0.0, mass);
  double r = u(rng_), cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += probs[i];
    if (r < cum) return ids[i];
  }
  return ids[keep - 1];
}

}  // namespace dsi
