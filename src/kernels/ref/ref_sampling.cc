#include "kernels/ref/ref_sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace dsi {

int64_t ref_argmax(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

int64_t ref_sample(const float* logits, int64_t vocab, const SampleParams& p, double u01) {
  if (is_greedy(p)) return ref_argmax(logits, vocab);
  // Candidates sorted by logit, descending (stable on id for reproducibility).
  std::vector<int64_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  size_t keep = ids.size();
  if (p.top_k > 0) keep = std::min(keep, static_cast<size_t>(p.top_k));
  const double max_logit = logits[ids[0]];
  std::vector<double> probs(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp((logits[ids[i]] - max_logit) / p.temperature);
    total += probs[i];
  }
  for (double& q : probs) q /= total;
  if (p.min_p > 0.0f) {
    const double floor = p.min_p * probs[0];
    size_t k = 1;
    while (k < keep && probs[k] >= floor) ++k;
    keep = k;
  }
  if (p.top_p < 1.0f) {
    double cum = 0;
    size_t k = 0;
    while (k < keep) {
      cum += probs[k++];
      if (cum >= p.top_p) break;
    }
    keep = std::max<size_t>(k, 1);
  }
  const double mass = std::accumulate(probs.begin(), probs.begin() + static_cast<long>(keep), 0.0);
  const double r = u01 * mass;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += probs[i];
    if (r < cum) return ids[i];
  }
  return ids[keep - 1];
}

}  // namespace dsi
