// Golden logits: every fixture model against the transformers reference (float64), through a full-sequence
// forward, prefill + incremental decode, and a batch of all prompts at once; DeepSeek models also with MLA forced
// into the naive and the absorbed form. Optimized CPU kernels and the scalar reference kernels both.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "model/golden.h"

namespace dsi {
namespace {

struct Case {
  std::string model;
  GoldenMode mode;
  MlaMode mla;
  bool ref_kernels;
};

std::string case_name(const testing::TestParamInfo<Case>& info) {
  std::string n = info.param.model;
  for (char& c : n) if (c == '-') c = '_';
  n += info.param.mode == GoldenMode::kIncremental ? "_incremental"
       : info.param.mode == GoldenMode::kFullSequence ? "_full"
       : info.param.mode == GoldenMode::kBatched      ? "_batched"
                                                      : "_staggered";
  n += info.param.mla == MlaMode::kNaive ? "_naive" : info.param.mla == MlaMode::kAbsorbed ? "_absorbed" : "";
  n += info.param.ref_kernels ? "_ref" : "_cpu";
  return n;
}

class Golden : public testing::TestWithParam<Case> {};

TEST_P(Golden, LogitsMatchReference) {
  const Case& c = GetParam();
  const std::string dir = std::string(DSI_SOURCE_DIR) + "/tests/golden/models/" + c.model;
  ModelOptions options;
  options.ops = c.ref_kernels ? &ref_ops() : &cpu_ops();
  options.mla_mode = c.mla;
  auto model = load_model(dir, options);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  GoldenOptions g;
  g.mode = c.mode;
  auto report = run_golden(**model, dir + "/expected.safetensors", g);
  ASSERT_TRUE(report.ok()) << report.status().to_string();
  for (const auto& p : report->prompts) {
    EXPECT_LT(p.rel_err, 1e-4) << "prompt " << p.index;
    EXPECT_EQ(p.greedy_agree, p.greedy_total) << "prompt " << p.index;
    EXPECT_GT(p.greedy_total, 0) << "prompt " << p.index;
    // The split of the error: the whole lies between its prompt-row and generated-row parts, and no row does
    // better than the whole everywhere (the worst row is at least the whole, and is a row of the sequence).
    const double lo = std::min(p.prefill_rel_err, p.decode_rel_err), hi = std::max(p.prefill_rel_err,
                                                                                    p.decode_rel_err);
    EXPECT_LE(lo, p.rel_err * (1 + 1e-9)) << "prompt " << p.index;
    EXPECT_GE(hi * (1 + 1e-9), p.rel_err) << "prompt " << p.index;
    EXPECT_GE(p.worst_row_err * (1 + 1e-9), p.rel_err) << "prompt " << p.index;
    EXPECT_GE(p.worst_row, 0);
    EXPECT_LT(p.worst_row, p.total_len);
  }
  EXPECT_TRUE(report->pass);
  std::printf("%s: max_rel_err=%.3g greedy_agree=%d/%d\n", c.model.c_str(), report->max_rel_err,
              report->greedy_agree, report->greedy_total);
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  const char* models[] = {"ds3-tiny", "ds3-tiny-fp8", "ds2-tiny", "qwen2-tiny", "llama-tiny"};
  for (const char* m : models) {
    const bool deepseek = std::string(m).rfind("ds", 0) == 0;
    for (GoldenMode mode : {GoldenMode::kIncremental, GoldenMode::kFullSequence, GoldenMode::kBatched,
                            GoldenMode::kStaggered}) {
      cases.push_back({m, mode, MlaMode::kAuto, false});
    }
    cases.push_back({m, GoldenMode::kIncremental, MlaMode::kAuto, true});
    if (deepseek) {
      cases.push_back({m, GoldenMode::kIncremental, MlaMode::kNaive, false});
      cases.push_back({m, GoldenMode::kIncremental, MlaMode::kAbsorbed, false});
      cases.push_back({m, GoldenMode::kFullSequence, MlaMode::kAbsorbed, false});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, Golden, testing::ValuesIn(all_cases()), case_name);

// A corrupted golden run must fail: perturbing the model's config changes the logits beyond tolerance.
TEST(GoldenSelfCheck, DetectsWrongModel) {
  const std::string dir = std::string(DSI_SOURCE_DIR) + "/tests/golden/models/llama-tiny";
  auto config = load_model_config(dir);
  ASSERT_TRUE(config.ok());
  config->rope_theta = 10000.0;  // wrong on purpose
  auto store = TensorStore::open(dir);
  ASSERT_TRUE(store.ok());
  auto model = build_model(*config, *store);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  auto report = run_golden(**model, dir + "/expected.safetensors", {});
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->pass);
  EXPECT_GT(report->max_rel_err, 1e-3);
}

}  // namespace
}  // namespace dsi
