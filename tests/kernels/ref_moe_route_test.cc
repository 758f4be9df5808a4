// The reference MoE router against hand-made cases, one per method, including group masking, the bias that
// ranks but never weighs (noaux_tc), normalization and scaling, and the tie rule.
#include <cmath>

#include "kernel_test_util.h"

namespace dsi::testing {
namespace {

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

Routed route(MoeRouteArgs args, const std::vector<float>& logits) {
  Routed r{std::vector<int32_t>(static_cast<size_t>(args.top_k)), std::vector<float>(static_cast<size_t>(args.top_k))};
  args.logits = logits.data();
  args.num_tokens = 1;
  args.num_experts = static_cast<int64_t>(logits.size());
  args.expert_ids = r.ids.data();
  args.weights = r.weights.data();
  ref_ops().moe_route(args);
  return r;
}

// Logits whose softmax is exactly the given probabilities (which sum to 1).
std::vector<float> softmax_logits(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

// Logits whose sigmoid is the given score.
std::vector<float> sigmoid_logits(const std::vector<double>& scores) {
  std::vector<float> logits;
  for (double s : scores) logits.push_back(static_cast<float>(std::log(s / (1.0 - s))));
  return logits;
}

using ::testing::ElementsAre;
using ::testing::FloatNear;

TEST(RefMoeRoute, GreedySoftmaxTopkDescending) {
  const std::vector<float> logits = softmax_logits({0.1, 0.2, 0.3, 0.4});
  Routed r = route({.top_k = 2}, logits);
  EXPECT_THAT(r.ids, ElementsAre(3, 2));
  EXPECT_THAT(r.weights, ElementsAre(FloatNear(0.4f, 1e-6f), FloatNear(0.3f, 1e-6f)));
  // Normalized, then scaled.
  r = route({.top_k = 2, .norm_topk_prob = true, .routed_scaling_factor = 2.0f}, logits);
  EXPECT_THAT(r.weights, ElementsAre(FloatNear(2 * 4.0f / 7, 1e-6f), FloatNear(2 * 3.0f / 7, 1e-6f)));
  // top_k 1 (a V2 method): no normalization, scaling still applies.
  r = route({.top_k = 1, .norm_topk_prob = true, .routed_scaling_factor = 2.0f}, logits);
  EXPECT_THAT(r.weights, ElementsAre(FloatNear(0.8f, 1e-6f)));
}

TEST(RefMoeRoute, TiesGoToTheLowerExpert) {
  Routed r = route({.top_k = 3}, {0.5f, 1.0f, 1.0f, 1.0f, 1.0f});
  EXPECT_THAT(r.ids, ElementsAre(1, 2, 3));
}

TEST(RefMoeRoute, GroupLimitedGreedyKeepsGroupsByTheirMax) {
  // Groups of two. Greedy top-3 would be experts 0, 2, 4; group maxima are 0.3, 0.2, 0.15, 0.07, so with
  // topk_group 2 group 2 is dropped and expert 3 (0.11) takes expert 4's place.
  const std::vector<float> logits = softmax_logits({0.30, 0.01, 0.20, 0.11, 0.15, 0.15, 0.07, 0.01});
  Routed greedy = route({.top_k = 3}, logits);
  EXPECT_THAT(greedy.ids, ElementsAre(0, 2, 4));
  const MoeRouteArgs v2{.top_k = 3, .n_group = 4, .topk_group = 2, .method = MoeTopk::kGroupLimitedGreedy};
  Routed r = route(v2, logits);
  EXPECT_THAT(r.ids, ElementsAre(0, 2, 3));
  EXPECT_THAT(r.weights, ElementsAre(FloatNear(0.30f, 1e-6f), FloatNear(0.20f, 1e-6f), FloatNear(0.11f, 1e-6f)));
  // More experts than the kept groups hold: masked experts rank as 0 (lowest index first) and weigh 0.
  MoeRouteArgs wide = v2;
  wide.top_k = 5;
  r = route(wide, logits);
  EXPECT_THAT(r.ids, ElementsAre(0, 2, 3, 1, 4));
  EXPECT_EQ(r.weights[4], 0.0f);
}

TEST(RefMoeRoute, NoauxTcRanksWithBiasWeighsWithoutIt) {
  // scores  0.9 0.1 | 0.5 0.5 | 0.6 0.6 | 0.2 0.2, bias +0.3 on expert 2:
  // choice  0.9 0.1 | 0.8 0.5 | 0.6 0.6 | 0.2 0.2; group sums of top-2: 1.0, 1.3, 1.2, 0.4 -> keep groups 1, 2
  // (group 0 holds the best expert but loses on the sum; a max rule would keep it). Top-2 of choice: expert 2
  // (0.8), then experts 4 and 5 tie at 0.6 -> 4. Weights are the unbiased 0.5 and 0.6.
  const std::vector<float> logits = sigmoid_logits({0.9, 0.1, 0.5, 0.5, 0.6, 0.6, 0.2, 0.2});
  const float bias[] = {0, 0, 0.3f, 0, 0, 0, 0, 0};
  MoeRouteArgs v3{.bias = bias, .top_k = 2, .n_group = 4, .topk_group = 2, .scoring = MoeScoring::kSigmoid,
                  .method = MoeTopk::kNoauxTc};
  Routed r = route(v3, logits);
  EXPECT_THAT(r.ids, ElementsAre(2, 4));
  EXPECT_THAT(r.weights, ElementsAre(FloatNear(0.5f, 1e-6f), FloatNear(0.6f, 1e-6f)));
  v3.norm_topk_prob = true;
  v3.routed_scaling_factor = 2.5f;
  r = route(v3, logits);
  EXPECT_THAT(r.weights, ElementsAre(FloatNear(2.5f * 0.5f / 1.1f, 1e-6f), FloatNear(2.5f * 0.6f / 1.1f, 1e-6f)));
}

TEST(RefMoeRoute, NoauxTcMaskedExpertsScoreZeroLikeTransformers) {
  // All choice scores negative: group 0 (sum -0.3) is kept, group 1 (sum -1.0) masked to 0.0, and 0.0 beats the
  // kept negatives, exactly as transformers' masked_fill(0.0) does (DeepSeek's own model.py uses -inf).
  const std::vector<float> logits = sigmoid_logits({0.5, 0.5, 0.5, 0.5});
  const float bias[] = {-0.6f, -0.7f, -1.0f, -1.0f};
  Routed r = route({.bias = bias, .top_k = 2, .n_group = 2, .topk_group = 1, .scoring = MoeScoring::kSigmoid,
                    .method = MoeTopk::kNoauxTc},
                   logits);
  EXPECT_THAT(r.ids, ElementsAre(2, 3));
  EXPECT_THAT(r.weights, ElementsAre(FloatNear(0.5f, 1e-6f), FloatNear(0.5f, 1e-6f)));
}

TEST(RefMoeRoute, NoauxTcNormalizesEvenOneExpert) {
  const std::vector<float> logits = sigmoid_logits({0.2, 0.7});
  Routed r = route({.top_k = 1, .scoring = MoeScoring::kSigmoid, .method = MoeTopk::kNoauxTc,
                    .norm_topk_prob = true, .routed_scaling_factor = 3.0f},
                   logits);
  EXPECT_THAT(r.ids, ElementsAre(1));
  EXPECT_THAT(r.weights, ElementsAre(FloatNear(3.0f, 1e-6f)));
}

}  // namespace
}  // namespace dsi::testing
