// Self-consistency on shapes the fixtures do not have (odd sizes, no q_lora, softmax/sigmoid routing, GQA 3:1,
// tied embeddings, FP8 with partial blocks): random-weight checkpoints, no reference logits, so every path is
// compared with every other path, and a 2-rank tensor/expert-parallel run with the single-process logits.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <thread>

#include "model/golden.h"
#include "model/random_weights.h"
#include "parallel/local_communicator.h"

namespace dsi {
namespace {

ModelConfig deepseek_config(bool v3, bool fp8) {
  ModelConfig c;
  c.arch = v3 ? Arch::kDeepseekV3 : Arch::kDeepseekV2;
  c.vocab_size = 301;
  c.hidden_size = 96;
  c.intermediate_size = 200;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 6;
  c.max_position_embeddings = 4096;
  c.q_lora_rank = v3 ? 40 : 0;
  c.kv_lora_rank = 48;
  c.qk_nope_head_dim = 24;
  c.qk_rope_head_dim = 8;
  c.v_head_dim = 20;
  c.moe_intermediate_size = 56;
  c.n_routed_experts = 12;
  c.n_shared_experts = v3 ? 1 : 2;
  c.num_experts_per_tok = v3 ? 3 : 4;
  c.n_group = v3 ? 4 : 3;
  c.topk_group = 2;
  c.first_k_dense_replace = 1;
  c.routed_scaling_factor = v3 ? 2.5 : 1.0;
  c.norm_topk_prob = v3;
  c.scoring_func = v3 ? ScoringFunc::kSigmoid : ScoringFunc::kSoftmax;
  c.topk_method = v3 ? TopkMethod::kNoauxTc : TopkMethod::kGroupLimitedGreedy;
  c.rope_scaling = {.type = RopeScalingType::kYarn, .factor = 8, .original_max_position_embeddings = 64,
                    .mscale = 1.0, .mscale_all_dim = v3 ? 1.0 : 0.707};
  c.quant.fp8 = fp8;
  return c;
}

ModelConfig llama_config(bool qwen) {
  ModelConfig c;
  c.arch = qwen ? Arch::kQwen2 : Arch::kLlama;
  c.vocab_size = 257;
  c.hidden_size = 72;
  c.intermediate_size = 130;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 2;
  c.head_dim = 12;
  c.max_position_embeddings = 4096;
  c.attention_bias = qwen;
  c.tie_word_embeddings = !qwen;
  if (!qwen) {
    c.rope_scaling = {.type = RopeScalingType::kLlama3, .factor = 8, .original_max_position_embeddings = 32,
                      .low_freq_factor = 1, .high_freq_factor = 4};
  }
  return c;
}

struct Fixture {
  std::string path;
  ModelConfig config;
};

Fixture make_checkpoint(const ModelConfig& c, const std::string& name) {
  Fixture f{(std::filesystem::temp_directory_path() / ("dsi_consistency_" + name + ".safetensors")).string(), c};
  Status s = write_random_checkpoint(c, f.path, 11);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return f;
}

// Logits for three prompts: full forward, all positions.
std::vector<std::vector<float>> run(Model& model, const std::vector<std::vector<int64_t>>& prompts, bool incremental) {
  std::vector<std::vector<float>> out;
  const int64_t v = model.config().vocab_size;
  for (const auto& ids : prompts) {
    SimpleKvCache cache(model.kv_layout());
    const int64_t slot = cache.add_sequence();
    std::vector<float> logits;
    const size_t first = incremental ? 3 : ids.size();
    ForwardBatch b;
    b.all_logits = true;
    cache.add_chunk(b, slot, 0, std::vector<int64_t>(ids.begin(), ids.begin() + first));
    auto r = model.forward(b, cache.cache());
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    logits.insert(logits.end(), r->data<float>(), r->data<float>() + r->numel());
    for (size_t i = first; i < ids.size(); ++i) {
      ForwardBatch s;
      cache.add_chunk(s, slot, static_cast<int64_t>(i), {ids[i]});
      auto l = model.forward(s, cache.cache());
      EXPECT_TRUE(l.ok());
      logits.insert(logits.end(), l->data<float>(), l->data<float>() + v);
    }
    out.push_back(std::move(logits));
  }
  return out;
}

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    n += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(d / n);
}

const std::vector<std::vector<int64_t>> kPrompts = {{5, 17, 200, 3, 99, 250, 1, 0, 42, 7, 7, 7},
                                                    {100, 4, 60, 61, 62, 63, 64}};

class Consistency : public testing::TestWithParam<std::string> {};

ModelConfig config_for(const std::string& name) {
  if (name == "dsv3") return deepseek_config(true, false);
  if (name == "dsv3_fp8") return deepseek_config(true, true);
  if (name == "dsv2") return deepseek_config(false, false);
  if (name == "qwen2") return llama_config(true);
  return llama_config(false);
}

TEST_P(Consistency, AllPathsAgree) {
  Fixture f = make_checkpoint(config_for(GetParam()), GetParam());
  auto store = TensorStore::open(f.path);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  auto cpu = build_model(f.config, *store, {.ops = &cpu_ops()});
  ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
  auto store2 = TensorStore::open(f.path);
  auto ref = build_model(f.config, *store2, {.ops = &ref_ops()});
  ASSERT_TRUE(ref.ok());
  auto expected = run(**ref, kPrompts, false);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    double norm = 0;
    for (float x : expected[i]) norm += static_cast<double>(x) * x;
    ASSERT_GT(norm, 1.0) << "degenerate logits";
  }
  for (MlaMode mode : {MlaMode::kAuto, MlaMode::kNaive, MlaMode::kAbsorbed}) {
    (*cpu)->set_mla_mode(mode);
    for (bool incremental : {false, true}) {
      auto got = run(**cpu, kPrompts, incremental);
      for (size_t i = 0; i < kPrompts.size(); ++i) {
        EXPECT_LT(rel_err(got[i], expected[i]), 1e-5) << "mode " << static_cast<int>(mode) << " incremental "
                                                      << incremental << " prompt " << i;
      }
    }
  }

  // Two ranks (threads): attention heads, MLP and shared experts split; routed experts placed 6 + 6.
  LocalGroup group(2);
  std::vector<std::vector<std::vector<float>>> by_rank(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto s = TensorStore::open(f.path);
      ASSERT_TRUE(s.ok());
      auto m = build_model(f.config, *s, {.ops = &cpu_ops(), .comm = &group.rank(r)});
      ASSERT_TRUE(m.ok()) << m.status().to_string();
      by_rank[r] = run(**m, kPrompts, true);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(by_rank[r].size(), kPrompts.size());
    for (size_t i = 0; i < kPrompts.size(); ++i) EXPECT_LT(rel_err(by_rank[r][i], expected[i]), 1e-5) << r;
  }
  std::filesystem::remove(f.path);
}

INSTANTIATE_TEST_SUITE_P(RandomShapes, Consistency, testing::Values("dsv3", "dsv3_fp8", "dsv2", "qwen2", "llama3"));

}  // namespace
}  // namespace dsi
