// Reference MoE routing, following Hugging Face transformers:
//   kGreedy            (DeepseekV2MoEGate topk_method "greedy"): topk(scores); weights = those scores.
//   kGroupLimitedGreedy (DeepseekV2 "group_limited_greedy"): group score = max score in the group; keep the
//                      topk_group best groups; other experts' scores become 0; topk; weights = the masked scores.
//   kNoauxTc           (DeepseekV3 "noaux_tc"): choice = scores + bias; group score = sum of the two largest choice
//                      scores in the group; keep topk_group groups; other experts' choice becomes 0.0
//                      (masked_fill 0.0, not -inf); topk over choice; weights = the UNBIASED scores of the chosen.
// Then, if norm_topk_prob: weights /= (sum + 1e-20) (for the V2 methods only when top_k > 1, as DeepseekV2 does;
// DeepseekV3 normalizes for any top_k), and weights *= routed_scaling_factor always.
#include "kernels/ref/ref_moe_route.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

namespace dsi {
namespace {

// Indices of the k largest values, descending; equal values keep ascending index order.
std::vector<int64_t> top_k_indices(const std::vector<double>& values, int64_t k) {
  std::vector<int64_t> order(values.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return values[a] > values[b]; });
  order.resize(static_cast<size_t>(k));
  return order;
}

std::vector<double> score_logits(const float* logits, int64_t num_experts, MoeScoring scoring) {
  std::vector<double> scores(static_cast<size_t>(num_experts));
  if (scoring == MoeScoring::kSigmoid) {
    for (int64_t e = 0; e < num_experts; ++e) scores[e] = 1.0 / (1.0 + std::exp(-double{logits[e]}));
    return scores;
  }
  double max_logit = -INFINITY;
  for (int64_t e = 0; e < num_experts; ++e) max_logit = std::max(max_logit, double{logits[e]});
  double sum = 0.0;
  for (int64_t e = 0; e < num_experts; ++e) sum += scores[e] = std::exp(double{logits[e]} - max_logit);
  for (double& s : scores) s /= sum;
  return scores;
}

// Zeroes choice[e] for experts outside the topk_group best groups (group score by `group_score`).
template <class GroupScore>
void mask_groups(std::vector<double>& choice, int64_t n_group, int64_t topk_group, GroupScore group_score) {
  const int64_t group_size = static_cast<int64_t>(choice.size()) / n_group;
  std::vector<double> group_scores(static_cast<size_t>(n_group));
  for (int64_t g = 0; g < n_group; ++g) {
    group_scores[g] = group_score(std::vector<double>(choice.begin() + g * group_size,
                                                      choice.begin() + (g + 1) * group_size));
  }
  std::vector<bool> keep(static_cast<size_t>(n_group), false);
  for (int64_t g : top_k_indices(group_scores, topk_group)) keep[g] = true;
  for (int64_t e = 0; e < static_cast<int64_t>(choice.size()); ++e) {
    if (!keep[e / group_size]) choice[e] = 0.0;
  }
}

double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

double sum_of_top2(std::vector<double> v) {
  std::sort(v.begin(), v.end(), std::greater<double>());
  return v.size() == 1 ? v[0] : v[0] + v[1];
}

}  // namespace

void ref_moe_route(const MoeRouteArgs& a) {
  DSI_CHECK(a.num_experts > 0 && a.top_k > 0 && a.top_k <= a.num_experts, "moe_route: top_k ", a.top_k,
            " of ", a.num_experts, " experts");
  const bool grouped = a.method != MoeTopk::kGreedy;
  if (grouped) {
    DSI_CHECK(a.n_group > 0 && a.num_experts % a.n_group == 0, "moe_route: ", a.num_experts,
              " experts not divisible into ", a.n_group, " groups");
    DSI_CHECK(a.topk_group > 0 && a.topk_group <= a.n_group, "moe_route: topk_group ", a.topk_group, " of ",
              a.n_group, " groups");
  }
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const std::vector<double> scores = score_logits(a.logits + t * a.num_experts, a.num_experts, a.scoring);
    std::vector<double> choice = scores;
    if (a.method == MoeTopk::kGroupLimitedGreedy) {
      mask_groups(choice, a.n_group, a.topk_group, max_of);
    } else if (a.method == MoeTopk::kNoauxTc) {
      if (a.bias != nullptr) {
        for (int64_t e = 0; e < a.num_experts; ++e) choice[e] += a.bias[e];
      }
      mask_groups(choice, a.n_group, a.topk_group, sum_of_top2);
    }
    const std::vector<int64_t> chosen = top_k_indices(choice, a.top_k);
    // V2 methods take the (masked) values topk returned; V3 gathers the unbiased, unmasked scores.
    const std::vector<double>& weight_source = a.method == MoeTopk::kNoauxTc ? scores : choice;
    std::vector<double> weights(chosen.size());
    double sum = 0.0;
    for (size_t i = 0; i < chosen.size(); ++i) sum += weights[i] = weight_source[chosen[i]];
    const bool normalize = a.norm_topk_prob && (a.method == MoeTopk::kNoauxTc || a.top_k > 1);
    for (size_t i = 0; i < chosen.size(); ++i) {
      double w = normalize ? weights[i] / (sum + 1e-20) : weights[i];
      a.expert_ids[t * a.top_k + i] = static_cast<int32_t>(chosen[i]);
      a.weights[t * a.top_k + i] = static_cast<float>(w * a.routed_scaling_factor);
    }
  }
}

}  // namespace dsi
