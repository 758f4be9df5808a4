// The reference ops against hand-computed expectations (the ground truth needs its own ground truth).
#include <numbers>

#include "kernel_test_util.h"

namespace dsi::testing {
namespace {

const Ops& ref = ref_ops();

TEST(RefMatmul, TinyF32WithBias) {
  const float x[] = {1, 2,   // [2, 2]
                     3, 4};
  const float w[] = {1, 0,   // [3, 2]
                     0, 1,
                     1, 1};
  const float bias[] = {0.5f, 0.0f, -1.0f};
  float y[6] = {};
  ref.matmul({.x = x, .w = w, .bias = bias, .y = y, .m = 2, .n = 3, .k = 2});
  EXPECT_THAT(y, ::testing::ElementsAre(1.5f, 2.0f, 2.0f, 3.5f, 4.0f, 6.0f));
}

TEST(RefMatmul, Bf16WeightsStridesAndAccumulate) {
  const float x[] = {1, 2, 99,  // [1, 2] with x_stride 3
                     -1, 1, 99};
  const uint16_t w[] = {f32_to_bf16(0.5f), f32_to_bf16(-2.0f)};  // [1, 2]
  float y[] = {10, 77, 20, 77};                                   // [2, 1] with y_stride 2
  ref.matmul({.x = x, .w = w, .w_dtype = DType::kBF16, .y = y, .m = 2, .n = 1, .k = 2, .x_stride = 3,
              .y_stride = 2, .accumulate = true});
  // row 0: 0.5 - 4 = -3.5; row 1: -0.5 - 2 = -2.5; added to 10 and 20; padding kept.
  EXPECT_THAT(y, ::testing::ElementsAre(6.5f, 77.0f, 17.5f, 77.0f));
}

TEST(RefRmsNorm, KnownVectorInPlace) {
  float x[] = {3, 4, 0, 0};  // mean square 25/4, rms 2.5
  const float w[] = {1, 2, 3, 4};
  ref.rmsnorm({.x = x, .w = w, .y = x, .m = 1, .d = 4, .eps = 0.0f});
  EXPECT_FLOAT_EQ(x[0], 1.2f);
  EXPECT_FLOAT_EQ(x[1], 3.2f);
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_EQ(x[3], 0.0f);
}

TEST(RefRmsNorm, EpsInsideTheRoot) {
  const float x[] = {1, 1};
  const float w[] = {1, 1};
  float y[2];
  ref.rmsnorm({.x = x, .w = w, .y = y, .m = 1, .d = 2, .eps = 3.0f});  // 1 / sqrt(1 + 3)
  EXPECT_FLOAT_EQ(y[0], 0.5f);
  EXPECT_FLOAT_EQ(y[1], 0.5f);
}

TEST(RefRope, NeoxRotatesHalvesOfAPartialHead) {
  // head_stride 6, rot_dim 4: pairs (0, 2) and (1, 3); elements 4, 5 untouched.
  float x[] = {1, 0, 0, 1, 7, 8};
  const int64_t pos[] = {2};
  const double inv_freq[] = {std::numbers::pi / 6, std::numbers::pi / 4};  // angles pi/3 and pi/2
  ref.rope({.x = x, .positions = pos, .num_tokens = 1, .num_heads = 1, .token_stride = 6, .head_stride = 6,
            .rot_dim = 4, .inv_freq = inv_freq, .style = RopeStyle::kNeox});
  EXPECT_NEAR(x[0], 0.5, 1e-7);                  // 1 * cos(pi/3)
  EXPECT_NEAR(x[2], std::sqrt(3.0) / 2, 1e-7);   // 1 * sin(pi/3)
  EXPECT_NEAR(x[1], -1.0, 1e-7);                 // 0 * cos(pi/2) - 1 * sin(pi/2)
  EXPECT_NEAR(x[3], 0.0, 1e-7);                  // 1 * cos(pi/2) + 0 * sin(pi/2)
  EXPECT_EQ(x[4], 7.0f);
  EXPECT_EQ(x[5], 8.0f);
}

TEST(RefRope, InterleavedRotatesAdjacentPairsWithAttnFactor) {
  float x[] = {1, 0, 0, 1,   // token 0, one head
               1, 0, 0, 1};  // token 1 at position 0: only scaled
  const int64_t pos[] = {2, 0};
  const double inv_freq[] = {std::numbers::pi / 6, std::numbers::pi / 4};
  ref.rope({.x = x, .positions = pos, .num_tokens = 2, .num_heads = 1, .token_stride = 4, .head_stride = 4,
            .rot_dim = 4, .inv_freq = inv_freq, .attn_factor = 2.0, .style = RopeStyle::kInterleaved});
  EXPECT_NEAR(x[0], 2 * 0.5, 1e-7);
  EXPECT_NEAR(x[1], 2 * std::sqrt(3.0) / 2, 1e-7);
  EXPECT_NEAR(x[2], -2.0, 1e-7);
  EXPECT_NEAR(x[3], 0.0, 1e-7);
  EXPECT_THAT(std::vector<float>(x + 4, x + 8), ::testing::ElementsAre(2.0f, 0.0f, 0.0f, 2.0f));
}

// One kv head, head_dim 1; packed strides.
AttentionArgs tiny_attention(const float* q, const float* k, const float* v, float* out, int64_t num_q,
                             int64_t kv_len) {
  return {.q = q, .k = k, .v = v, .out = out, .num_q = num_q, .kv_len = kv_len, .num_q_heads = 1,
          .num_kv_heads = 1, .head_dim = 1, .v_dim = 1, .q_token_stride = 1, .q_head_stride = 1,
          .k_token_stride = 1, .k_head_stride = 1, .v_token_stride = 1, .v_head_stride = 1,
          .out_token_stride = 1, .out_head_stride = 1, .scale = 1.0f};
}

TEST(RefAttention, OneKeyReturnsItsValue) {
  const float q[] = {3}, k[] = {-5}, v[] = {0.25f};
  float out[1];
  ref.attention(tiny_attention(q, k, v, out, 1, 1));
  EXPECT_FLOAT_EQ(out[0], 0.25f);
}

TEST(RefAttention, SoftmaxWeightsAndScale) {
  // scores = scale * q k = 0.5 * 2 * {0, ln 3} -> weights 1/4, 3/4 -> out = 3/4 * 4.
  const float q[] = {2}, k[] = {0, static_cast<float>(std::log(3.0))}, v[] = {0, 4};
  float out[1];
  AttentionArgs args = tiny_attention(q, k, v, out, 1, 2);
  args.scale = 0.5f;
  ref.attention(args);
  EXPECT_NEAR(out[0], 3.0, 1e-6);
}

TEST(RefAttention, CausalWithPrefix) {
  // kv_len 3, num_q 2: query 0 sits at position 1 (sees keys 0, 1), query 1 at position 2 (sees all).
  const float q[] = {0, 0}, k[] = {1, 2, 3}, v[] = {1, 2, 6};
  float out[2];
  ref.attention(tiny_attention(q, k, v, out, 2, 3));
  EXPECT_FLOAT_EQ(out[0], 1.5f);  // uniform over v0, v1
  EXPECT_FLOAT_EQ(out[1], 3.0f);  // uniform over v0, v1, v2
}

TEST(RefAttention, LargeScoresDoNotOverflow) {
  const float q[] = {1000}, k[] = {1, 1}, v[] = {2, 4};
  float out[1];
  ref.attention(tiny_attention(q, k, v, out, 1, 2));
  EXPECT_FLOAT_EQ(out[0], 3.0f);
}

TEST(RefAttention, GqaMapsHeadPairsToKvHeads) {
  // 4 query heads, 2 kv heads, one key: heads 0, 1 read kv head 0; heads 2, 3 read kv head 1.
  const float q[] = {1, 1, 1, 1}, k[] = {1, 1};
  const float v[] = {10, 20};
  float out[4];
  ref.attention({.q = q, .k = k, .v = v, .out = out, .num_q = 1, .kv_len = 1, .num_q_heads = 4,
                 .num_kv_heads = 2, .head_dim = 1, .v_dim = 1, .q_token_stride = 4, .q_head_stride = 1,
                 .k_token_stride = 2, .k_head_stride = 1, .v_token_stride = 2, .v_head_stride = 1,
                 .out_token_stride = 4, .out_head_stride = 1});
  EXPECT_THAT(out, ::testing::ElementsAre(10.0f, 10.0f, 20.0f, 20.0f));
}

TEST(RefAttention, MlaValueIsAPrefixOfTheKey) {
  // head_dim 3, v_dim 2, v = k: one key -> out = k[:2].
  const float q[] = {1, 2, 3}, k[] = {7, -8, 9};
  float out[2];
  ref.attention({.q = q, .k = k, .v = k, .out = out, .num_q = 1, .kv_len = 1, .num_q_heads = 1,
                 .num_kv_heads = 1, .head_dim = 3, .v_dim = 2, .q_token_stride = 3, .q_head_stride = 3,
                 .k_token_stride = 3, .k_head_stride = 3, .v_token_stride = 3, .v_head_stride = 3,
                 .out_token_stride = 2, .out_head_stride = 2, .scale = 0.1f});
  EXPECT_THAT(out, ::testing::ElementsAre(7.0f, -8.0f));
}

TEST(RefSiluMul, KnownValues) {
  const float gate[] = {0, 1, -2}, up[] = {5, 2, 3};
  float out[3];
  ref.silu_mul({.gate = gate, .up = up, .out = out, .m = 1, .d = 3});
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_FLOAT_EQ(out[1], static_cast<float>(2.0 / (1.0 + std::exp(-1.0))));
  EXPECT_FLOAT_EQ(out[2], static_cast<float>(3.0 * -2.0 / (1.0 + std::exp(2.0))));
}

TEST(RefEmbedding, GathersBf16Rows) {
  const uint16_t table[] = {f32_to_bf16(1.0f), f32_to_bf16(2.0f),  // [3, 2]
                            f32_to_bf16(-3.0f), f32_to_bf16(0.5f),
                            f32_to_bf16(8.0f), f32_to_bf16(9.0f)};
  const int64_t ids[] = {2, 0, 2};
  float out[6];
  ref.embedding({.table = table, .table_dtype = DType::kBF16, .ids = ids, .out = out, .num_tokens = 3, .vocab = 3,
                 .d = 2});
  EXPECT_THAT(out, ::testing::ElementsAre(8.0f, 9.0f, 1.0f, 2.0f, 8.0f, 9.0f));
}

}  // namespace
}  // namespace dsi::testing
