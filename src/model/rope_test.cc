#include "model/rope.h"

#include <gtest/gtest.h>

#include <cmath>

namespace dsi {
namespace {

// Expected values transcribed from transformers' _compute_yarn_parameters / _compute_llama3_parameters (Python,
// float64) for the fixture configs.
TEST(Rope, YarnInvFreqMatchesTransformers) {
  ModelConfig c;
  c.arch = Arch::kDeepseekV3;
  c.rope_theta = 10000;
  c.rope_scaling = {.type = RopeScalingType::kYarn, .factor = 40, .original_max_position_embeddings = 128,
                    .beta_fast = 32, .beta_slow = 1, .mscale = 1.0, .mscale_all_dim = 1.0};
  RopeParams p = make_rope_params(c, 16);
  const double expected[] = {1.0, 0.21345374206136564, 0.035, 0.000790569415042095, 0.00025,
                             7.905694150420948e-05, 2.5e-05, 7.905694150420947e-06};
  ASSERT_EQ(p.inv_freq.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(p.inv_freq[i] / expected[i], 1.0, 1e-12) << i;
  EXPECT_DOUBLE_EQ(p.attn_factor, 1.0);  // mscale == mscale_all_dim
}

TEST(Rope, YarnAttnFactorAndMlaScale) {
  ModelConfig c;
  c.arch = Arch::kDeepseekV3;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.rope_scaling = {.type = RopeScalingType::kYarn, .factor = 40, .original_max_position_embeddings = 4096,
                    .mscale = 1.0, .mscale_all_dim = 0.5};
  RopeParams p = make_rope_params(c, 64);
  const double m1 = 0.1 * std::log(40.0) + 1, m05 = 0.05 * std::log(40.0) + 1;
  EXPECT_NEAR(p.attn_factor, m1 / m05, 1e-12);
  EXPECT_NEAR(mla_softmax_scale(c), m05 * m05 / std::sqrt(192.0), 1e-12);
  c.arch = Arch::kDeepseekV2;  // the same correction for V2 (golden logits of ds2-tiny confirm it)
  EXPECT_NEAR(mla_softmax_scale(c), m05 * m05 / std::sqrt(192.0), 1e-12);
  c.rope_scaling.type = RopeScalingType::kNone;
  EXPECT_NEAR(mla_softmax_scale(c), 1 / std::sqrt(192.0), 1e-12);
}

TEST(Rope, Llama3MatchesTransformers) {
  ModelConfig c;
  c.rope_theta = 500000;
  c.rope_scaling = {.type = RopeScalingType::kLlama3, .factor = 8, .original_max_position_embeddings = 64,
                    .low_freq_factor = 1, .high_freq_factor = 4};
  RopeParams p = make_rope_params(c, 32);
  const double expected[] = {1.0, 0.44036660267178046, 0.0794030091792082, 0.010674637535720701,
                             0.004700753866357992, 0.002070055010124306, 0.0009115830921521386,
                             0.0004014307493440739, 0.00017677669529663688, 7.78465527393245e-05,
                             3.428102195952591e-05, 1.509621717643313e-05, 6.647869871181236e-06,
                             2.9274998701761677e-06, 1.2891731721515574e-06, 5.677088100759837e-07};
  for (int i = 0; i < 16; ++i) EXPECT_NEAR(p.inv_freq[i] / expected[i], 1.0, 1e-12) << i;
}

TEST(Rope, UnscaledAndLinear) {
  ModelConfig c;
  c.rope_theta = 10000;
  RopeParams p = make_rope_params(c, 8);
  EXPECT_DOUBLE_EQ(p.inv_freq[0], 1.0);
  EXPECT_NEAR(p.inv_freq[2], std::pow(10000.0, -0.5), 1e-15);
  c.rope_scaling = {.type = RopeScalingType::kLinear, .factor = 4};
  EXPECT_NEAR(make_rope_params(c, 8).inv_freq[2], std::pow(10000.0, -0.5) / 4, 1e-15);
}

}  // namespace
}  // namespace dsi
