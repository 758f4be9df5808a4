#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

namespace dsi {
namespace {

TEST(Sampler, GreedyPicksMaxLowestIdOnTies) {
  Sampler s(1);
  const float logits[] = {0.5f, 2.0f, 2.0f, -1.0f};
  EXPECT_EQ(s.sample(logits, 4, {}), 1);
}

TEST(Sampler, SameSeedSameTokens) {
  const float logits[] = {1.0f, 1.1f, 0.9f, 1.05f, 0.2f};
  SamplingParams p{.temperature = 1.0f};
  Sampler a(42), b(42);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.sample(logits, 5, p), b.sample(logits, 5, p));
}

TEST(Sampler, TopKAndTopPRestrictTheSupport) {
  const float logits[] = {3.0f, 2.9f, 0.0f, -5.0f};
  Sampler s(3);
  std::map<int64_t, int> seen;
  for (int i = 0; i < 500; ++i) seen[s.sample(logits, 4, {.temperature = 1.0f, .top_k = 2})]++;
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[0], 150);
  EXPECT_GT(seen[1], 150);
  seen.clear();
  for (int i = 0; i < 200; ++i) seen[s.sample(logits, 4, {.temperature = 1.0f, .top_p = 0.3f})]++;
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen.begin()->first, 0);
}

TEST(Sampler, TemperatureSpreadsChoices) {
  const float logits[] = {1.0f, 0.9f, 0.8f};
  Sampler s(5);
  std::map<int64_t, int> seen;
  for (int i = 0; i < 300; ++i) seen[s.sample(logits, 3, {.temperature = 1.0f})]++;
  EXPECT_EQ(seen.size(), 3u);
}

// ref_sample is the inverse CDF of the kept distribution in descending logit order, ties by ascending id.
TEST(Sampler, RefSampleInverseCdf) {
  const float logits[] = {0.0f, std::log(3.0f)};  // probabilities 1/4, 3/4: order id 1, id 0
  const SampleParams p{.temperature = 1.0f};
  EXPECT_EQ(ref_sample(logits, 2, p, 0.0), 1);
  EXPECT_EQ(ref_sample(logits, 2, p, 0.74), 1);
  EXPECT_EQ(ref_sample(logits, 2, p, 0.76), 0);
  const float tied[] = {1.0f, 2.0f, 1.0f, 2.0f, 1.0f};  // order: 1, 3, 0, 2, 4
  EXPECT_EQ(ref_sample(tied, 5, {.temperature = 1.0f, .top_k = 3}, 0.999), 0);
  EXPECT_EQ(ref_sample(tied, 5, {.temperature = 1.0f, .top_k = 2}, 0.6), 3);
  EXPECT_EQ(ref_sample(tied, 5, {.temperature = 1.0f, .top_p = 0.3f}, 0.999), 1);  // the first of the tied pair
  EXPECT_EQ(ref_sample(tied, 5, {.temperature = 1.0f, .min_p = 0.5f}, 0.999), 3);  // e^-1 < 0.5: only 1 and 3
  EXPECT_EQ(ref_sample(tied, 5, {.temperature = 0.0f}, 0.999), 1);                 // greedy: argmax, lowest id
}

// Sampler draws u01 from uniform(0, 1) and scales it by the kept mass; the former uniform(0, mass) draw gave the
// same bits, so seeded outputs did not change.
TEST(Sampler, ScaledUniformEqualsRangedUniform) {
  std::mt19937_64 a(7), b(7);
  std::uniform_real_distribution<double> mass(1e-3, 1.0);
  std::mt19937_64 m(1);
  for (int i = 0; i < 1000; ++i) {
    const double w = mass(m);
    const double ranged = std::uniform_real_distribution<double>(0.0, w)(a);
    EXPECT_EQ(ranged, w * std::uniform_real_distribution<double>(0.0, 1.0)(b));
  }
}

TEST(Sampler, Penalties) {
  float logits[] = {2.0f, -2.0f, 1.0f, 0.5f};
  const int64_t prompt[] = {0};
  const int64_t output[] = {1, 2, 2};
  apply_penalties(logits, 4, prompt, output,
                  {.presence_penalty = 0.5f, .frequency_penalty = 0.25f, .repetition_penalty = 2.0f});
  EXPECT_FLOAT_EQ(logits[0], 1.0f);                  // 2 / 2 (prompt token)
  EXPECT_FLOAT_EQ(logits[1], -4.0f - 0.25f - 0.5f);  // -2 * 2, then once in the output
  EXPECT_FLOAT_EQ(logits[2], 0.5f - 0.5f - 0.5f);    // 1 / 2, then twice in the output
  EXPECT_FLOAT_EQ(logits[3], 0.5f);                  // untouched
}

}  // namespace
}  // namespace dsi
