// cpu attention vs ref on random inputs: MHA, GQA, MQA, MLA-absorbed (v aliasing k), decode and prefill with a
// cached prefix, padded strides, for every instruction set.
#include "kernel_test_util.h"

namespace dsi::testing {
namespace {

struct AttentionCase {
  int64_t num_q_heads, num_kv_heads, head_dim, v_dim, kv_len, num_q;
  bool v_in_k;  // MLA absorbed: v is the first v_dim elements of k
};

std::string describe(const AttentionCase& c) {
  return str_cat("heads=", c.num_q_heads, "/", c.num_kv_heads, " head_dim=", c.head_dim, " v_dim=", c.v_dim,
                 " kv_len=", c.kv_len, " num_q=", c.num_q, " v_in_k=", c.v_in_k);
}

double run_attention_case(const Ops& cpu, const AttentionCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  // Padded layouts: one spare element per head, three per token.
  const int64_t q_hs = c.head_dim + 1, q_ts = c.num_q_heads * q_hs + 3;
  const int64_t k_hs = c.head_dim + 1, k_ts = c.num_kv_heads * k_hs + 3;
  const int64_t v_hs = c.v_dim + 1, v_ts = c.num_kv_heads * v_hs + 3;
  const int64_t o_hs = c.v_dim + 1, o_ts = c.num_q_heads * o_hs + 3;
  // stddev 2 makes the softmax peaky enough that a wrong mask or max shift shows.
  std::vector<float> q = random_normal(static_cast<size_t>(c.num_q * q_ts), rng, 2.0f);
  std::vector<float> k = random_normal(static_cast<size_t>(c.kv_len * k_ts), rng, 2.0f);
  std::vector<float> v = random_normal(static_cast<size_t>(c.kv_len * v_ts), rng);
  std::vector<float> out_ref(static_cast<size_t>(c.num_q * o_ts), kSentinel), out_cpu = out_ref;
  AttentionArgs args{.q = q.data(), .k = k.data(), .v = c.v_in_k ? k.data() : v.data(),
                     .num_q = c.num_q, .kv_len = c.kv_len,
                     .num_q_heads = c.num_q_heads, .num_kv_heads = c.num_kv_heads,
                     .head_dim = c.head_dim, .v_dim = c.v_dim,
                     .q_token_stride = q_ts, .q_head_stride = q_hs,
                     .k_token_stride = k_ts, .k_head_stride = k_hs,
                     .v_token_stride = c.v_in_k ? k_ts : v_ts, .v_head_stride = c.v_in_k ? k_hs : v_hs,
                     .out_token_stride = o_ts, .out_head_stride = o_hs,
                     .scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)))};
  args.out = out_ref.data();
  ref_ops().attention(args);
  args.out = out_cpu.data();
  cpu.attention(args);
  for (size_t i = 0; i < out_cpu.size(); ++i) {
    const int64_t in_token = static_cast<int64_t>(i) % o_ts;
    if (in_token >= c.num_q_heads * o_hs || in_token % o_hs == c.v_dim) {
      EXPECT_EQ(out_cpu[i], kSentinel) << describe(c) << " wrote padding at " << i;
    }
  }
  return max_rel_error(out_cpu, out_ref);
}

using CpuAttentionTest = CpuIsaTest;

TEST_P(CpuAttentionTest, MatchesRef) {
  const AttentionCase cases[] = {
      {4, 4, 64, 64, 37, 1, false},     // MHA decode
      {4, 4, 64, 64, 37, 37, false},    // MHA prefill, no prefix
      {4, 2, 64, 64, 50, 7, false},     // GQA 4:2, prefill after a 43-token prefix
      {8, 1, 33, 33, 20, 20, false},    // MQA, odd head_dim
      {6, 2, 17, 9, 11, 3, false},      // odd everything, v_dim != head_dim
      {16, 1, 72, 64, 40, 3, true},     // MLA absorbed: v = k[..., :64]
      {128, 1, 576, 512, 300, 1, true}, // DeepSeek-V3 absorbed decode shape
      {20, 2, 40, 40, 9, 1, false},     // group of 10 heads: two head chunks per kv head
      {3, 3, 8, 8, 1, 1, false},        // a single key
  };
  uint32_t seed = 1;
  for (const AttentionCase& c : cases) EXPECT_LT(run_attention_case(cpu(), c, seed++), 1e-5) << describe(c);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, CpuAttentionTest, ::testing::ValuesIn(all_cpu_isas()), isa_param_name);

}  // namespace
}  // namespace dsi::testing
