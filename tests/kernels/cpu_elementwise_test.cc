// cpu rmsnorm, rope, silu_mul, embedding and moe_route vs ref on random inputs, for every instruction set.
#include <numbers>

#include "kernel_test_util.h"

namespace dsi::testing {
namespace {

using CpuElementwiseTest = CpuIsaTest;

TEST_P(CpuElementwiseTest, RmsNormMatchesRefWithStridesAndAliasing) {
  uint32_t seed = 1;
  for (int64_t m : {1, 3, 17}) {
    for (int64_t d : {1, 7, 64, 1000, 7168}) {
      std::mt19937 rng(seed++);
      const int64_t stride = d + 2;
      std::vector<float> x = random_normal(static_cast<size_t>(m * stride), rng, 3.0f);
      std::vector<float> w = random_normal(static_cast<size_t>(d), rng);
      std::vector<float> y_ref(x.size(), kSentinel), y_cpu = y_ref;
      RmsNormArgs args{.x = x.data(), .w = w.data(), .m = m, .d = d, .x_stride = stride, .y_stride = stride,
                       .eps = 1e-6f};
      args.y = y_ref.data();
      ref().rmsnorm(args);
      args.y = y_cpu.data();
      cpu().rmsnorm(args);
      EXPECT_LT(max_rel_error(y_cpu, y_ref), 1e-5) << "m=" << m << " d=" << d;
      EXPECT_EQ(y_cpu[d], kSentinel) << "wrote padding, d=" << d;
      // In place (x == y), packed rows.
      std::vector<float> packed(static_cast<size_t>(m * d));
      for (int64_t i = 0; i < m; ++i)
        std::copy_n(x.begin() + i * stride, d, packed.begin() + i * d);
      std::vector<float> packed_ref(packed.size());
      RmsNormArgs in_place{.x = packed.data(), .w = w.data(), .y = packed.data(), .m = m, .d = d, .eps = 1e-6f};
      RmsNormArgs out_of_place = in_place;
      out_of_place.y = packed_ref.data();
      ref().rmsnorm(out_of_place);
      cpu().rmsnorm(in_place);
      EXPECT_LT(max_rel_error(packed, packed_ref), 1e-5) << "in place m=" << m << " d=" << d;
    }
  }
}

TEST_P(CpuElementwiseTest, RopeMatchesRefBothStylesPartialRotation) {
  uint32_t seed = 1;
  for (RopeStyle style : {RopeStyle::kNeox, RopeStyle::kInterleaved}) {
    for (int64_t num_tokens : {1, 5, 300}) {
      for (int64_t rot_dim : {2, 64}) {
        std::mt19937 rng(seed++);
        const int64_t num_heads = 3, head_stride = rot_dim + 128 + 1;  // rotate a prefix of each head
        const int64_t token_stride = num_heads * head_stride + 7;
        std::vector<float> x = random_normal(static_cast<size_t>(num_tokens * token_stride), rng);
        std::vector<int64_t> positions(static_cast<size_t>(num_tokens));
        std::uniform_int_distribution<int64_t> pos_dist(0, 200000);
        for (int64_t& p : positions) p = pos_dist(rng);
        std::vector<double> inv_freq(static_cast<size_t>(rot_dim / 2));
        for (size_t i = 0; i < inv_freq.size(); ++i) inv_freq[i] = std::pow(10000.0, -2.0 * i / rot_dim) / 40.0;
        std::vector<float> x_ref = x, x_cpu = x;
        RopeArgs args{.positions = positions.data(), .num_tokens = num_tokens, .num_heads = num_heads,
                      .token_stride = token_stride, .head_stride = head_stride, .rot_dim = rot_dim,
                      .inv_freq = inv_freq.data(), .attn_factor = 1.3, .style = style};
        args.x = x_ref.data();
        ref().rope(args);
        args.x = x_cpu.data();
        cpu().rope(args);
        EXPECT_LT(max_rel_error(x_cpu, x_ref), 1e-5) << "tokens=" << num_tokens << " rot_dim=" << rot_dim;
        // Elements past rot_dim (and padding) are untouched.
        for (int64_t t = 0; t < num_tokens; ++t) {
          for (int64_t h = 0; h < num_heads; ++h) {
            const int64_t base = t * token_stride + h * head_stride;
            for (int64_t p = rot_dim; p < head_stride; ++p) ASSERT_EQ(x_cpu[base + p], x[base + p]);
          }
        }
      }
    }
  }
}

TEST_P(CpuElementwiseTest, SiluMulMatchesRefOnFusedGateUp) {
  uint32_t seed = 1;
  for (int64_t m : {1, 4, 33}) {
    for (int64_t d : {1, 7, 1000}) {
      std::mt19937 rng(seed++);
      // gate and up interleaved per row as a fused gate_up projection writes them: [m, 2d].
      std::vector<float> gate_up = random_normal(static_cast<size_t>(m * 2 * d), rng, 4.0f);
      gate_up[0] = -100.0f;  // exp overflow side
      if (gate_up.size() > 2) gate_up[1] = 100.0f;
      std::vector<float> out_ref(static_cast<size_t>(m * d)), out_cpu(out_ref.size());
      SiluMulArgs args{.gate = gate_up.data(), .up = gate_up.data() + d, .m = m, .d = d, .in_stride = 2 * d};
      args.out = out_ref.data();
      ref().silu_mul(args);
      args.out = out_cpu.data();
      cpu().silu_mul(args);
      EXPECT_LT(max_rel_error(out_cpu, out_ref), 1e-5) << "m=" << m << " d=" << d;
    }
  }
}

TEST_P(CpuElementwiseTest, EmbeddingMatchesRefBothDtypes) {
  std::mt19937 rng(5);
  const int64_t vocab = 1000, d = 129, num_tokens = 64;
  std::vector<float> table = random_normal(static_cast<size_t>(vocab * d), rng);
  std::vector<uint16_t> table_bf16 = to_bf16(table);
  std::vector<int64_t> ids(static_cast<size_t>(num_tokens));
  std::uniform_int_distribution<int64_t> id_dist(0, vocab - 1);
  for (int64_t& id : ids) id = id_dist(rng);
  ids[0] = 0;
  ids[1] = vocab - 1;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    std::vector<float> out_ref(static_cast<size_t>(num_tokens * d)), out_cpu(out_ref.size());
    EmbeddingArgs args{.table = dtype == DType::kF32 ? static_cast<const void*>(table.data()) : table_bf16.data(),
                       .table_dtype = dtype, .ids = ids.data(), .num_tokens = num_tokens, .vocab = vocab, .d = d};
    args.out = out_ref.data();
    ref().embedding(args);
    args.out = out_cpu.data();
    cpu().embedding(args);
    EXPECT_EQ(out_cpu, out_ref) << dtype_name(dtype);
  }
}

TEST_P(CpuElementwiseTest, MoeRouteMatchesRef) {
  std::mt19937 rng(9);
  const int64_t num_tokens = 32, num_experts = 64, top_k = 6;
  std::vector<float> logits = random_normal(static_cast<size_t>(num_tokens * num_experts), rng);
  std::vector<float> bias = random_normal(static_cast<size_t>(num_experts), rng, 0.1f);
  for (MoeTopk method : {MoeTopk::kGreedy, MoeTopk::kGroupLimitedGreedy, MoeTopk::kNoauxTc}) {
    std::vector<int32_t> ids_ref(static_cast<size_t>(num_tokens * top_k)), ids_cpu(ids_ref.size());
    std::vector<float> w_ref(ids_ref.size()), w_cpu(ids_ref.size());
    MoeRouteArgs args{.logits = logits.data(), .bias = method == MoeTopk::kNoauxTc ? bias.data() : nullptr,
                      .num_tokens = num_tokens, .num_experts = num_experts, .top_k = top_k, .n_group = 8,
                      .topk_group = 3,
                      .scoring = method == MoeTopk::kNoauxTc ? MoeScoring::kSigmoid : MoeScoring::kSoftmax,
                      .method = method, .norm_topk_prob = method == MoeTopk::kNoauxTc,
                      .routed_scaling_factor = 2.5f};
    args.expert_ids = ids_ref.data();
    args.weights = w_ref.data();
    ref().moe_route(args);
    args.expert_ids = ids_cpu.data();
    args.weights = w_cpu.data();
    cpu().moe_route(args);
    EXPECT_EQ(ids_cpu, ids_ref);
    EXPECT_LT(max_rel_error(w_cpu, w_ref), 1e-6);
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, CpuElementwiseTest, ::testing::ValuesIn(all_cpu_isas()), isa_param_name);

}  // namespace
}  // namespace dsi::testing
