#include "io/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace dsi {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string models_dir() { return std::string(DSI_SOURCE_DIR) + "/tests/golden/models/"; }
std::string shapes_dir() { return std::string(DSI_SOURCE_DIR) + "/bench/shapes/"; }

ModelConfig load_ok(const std::string& dir) {
  auto c = load_model_config(dir);
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return c.ok() ? *c : ModelConfig{};
}

ModelConfig parse_ok(const std::string& path) {
  auto c = parse_model_config(read_text(path), path);
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return c.ok() ? *c : ModelConfig{};
}

std::string parse_error(const json& j, StatusCode expected_code = StatusCode::kInvalidArgument) {
  auto c = parse_model_config(j.dump(), "cfg/config.json");
  EXPECT_FALSE(c.ok()) << "parsed unexpectedly: " << j.dump();
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), expected_code) << c.status().to_string();
  EXPECT_THAT(c.status().message(), HasSubstr("cfg/config.json"));
  return c.status().message();
}

json fixture(const std::string& name) { return json::parse(read_text(models_dir() + name + "/config.json")); }

TEST(ModelConfig, Ds3Tiny) {
  ModelConfig c = load_ok(models_dir() + "ds3-tiny");
  EXPECT_EQ(c.arch, Arch::kDeepseekV3);
  EXPECT_EQ(c.model_type, "deepseek_v3");
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.intermediate_size, 512);
  EXPECT_EQ(c.moe_intermediate_size, 64);
  EXPECT_EQ(c.num_hidden_layers, 4);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.q_lora_rank, 64);
  EXPECT_EQ(c.kv_lora_rank, 32);
  EXPECT_EQ(c.qk_nope_head_dim, 32);
  EXPECT_EQ(c.qk_rope_head_dim, 16);
  EXPECT_EQ(c.qk_head_dim(), 48);
  EXPECT_EQ(c.v_head_dim, 32);
  EXPECT_EQ(c.n_routed_experts, 16);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(c.num_experts_per_tok, 4);
  EXPECT_EQ(c.n_group, 4);
  EXPECT_EQ(c.topk_group, 2);
  EXPECT_EQ(c.first_k_dense_replace, 1);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSigmoid);
  EXPECT_EQ(c.topk_method, TopkMethod::kNoauxTc);
  EXPECT_EQ(c.max_position_embeddings, 5120);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kYarn);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 40.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 128);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale_all_dim, 1.0);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_ids, (std::vector<int64_t>{0}));
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1}));
  EXPECT_FALSE(c.quant.fp8);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_TRUE(c.is_moe_layer(3));
}

TEST(ModelConfig, Ds3TinyFp8) {
  ModelConfig c = load_ok(models_dir() + "ds3-tiny-fp8");
  EXPECT_EQ(c.arch, Arch::kDeepseekV3);
  EXPECT_EQ(c.intermediate_size, 384);
  EXPECT_EQ(c.moe_intermediate_size, 128);
  EXPECT_TRUE(c.quant.fp8);
  EXPECT_EQ(c.quant.block_n, 128);
  EXPECT_EQ(c.quant.block_k, 128);
}

TEST(ModelConfig, Ds2Tiny) {
  ModelConfig c = load_ok(models_dir() + "ds2-tiny");
  EXPECT_EQ(c.arch, Arch::kDeepseekV2);
  EXPECT_TRUE(c.is_deepseek());
  EXPECT_EQ(c.q_lora_rank, 0);  // null: plain q_proj
  EXPECT_EQ(c.n_shared_experts, 2);
  EXPECT_EQ(c.num_experts_per_tok, 6);
  EXPECT_EQ(c.n_group, 1);
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSoftmax);
  EXPECT_EQ(c.topk_method, TopkMethod::kGreedy);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale, 0.707);
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale_all_dim, 0.707);
}

TEST(ModelConfig, LlamaTiny) {
  ModelConfig c = load_ok(models_dir() + "llama-tiny");
  EXPECT_EQ(c.arch, Arch::kLlama);
  EXPECT_FALSE(c.is_deepseek());
  EXPECT_EQ(c.hidden_size, 128);
  EXPECT_EQ(c.num_hidden_layers, 3);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.n_routed_experts, 0);
  EXPECT_FALSE(c.is_moe_layer(1));
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 64);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.mlp_bias);
}

TEST(ModelConfig, Qwen2Tiny) {
  ModelConfig c = load_ok(models_dir() + "qwen2-tiny");
  EXPECT_EQ(c.arch, Arch::kQwen2);
  EXPECT_EQ(c.head_dim, 32);  // hidden_size / num_attention_heads
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_TRUE(c.attention_bias);  // Qwen2 always has q/k/v bias
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::kNone);
  EXPECT_EQ(c.max_position_embeddings, 4096);
}

TEST(ModelConfig, PublishedShapes) {
  ModelConfig v3 = parse_ok(shapes_dir() + "deepseek-v3.json");
  EXPECT_EQ(v3.arch, Arch::kDeepseekV3);
  EXPECT_EQ(v3.hidden_size, 7168);
  EXPECT_EQ(v3.num_hidden_layers, 61);
  EXPECT_EQ(v3.n_routed_experts, 256);
  EXPECT_EQ(v3.num_experts_per_tok, 8);
  EXPECT_EQ(v3.n_group, 8);
  EXPECT_EQ(v3.topk_group, 4);
  EXPECT_EQ(v3.first_k_dense_replace, 3);
  EXPECT_EQ(v3.q_lora_rank, 1536);
  EXPECT_EQ(v3.kv_lora_rank, 512);
  EXPECT_EQ(v3.num_nextn_predict_layers, 1);
  EXPECT_EQ(v3.vocab_size, 129280);
  EXPECT_TRUE(v3.quant.fp8);
  EXPECT_EQ(v3.rope_scaling.original_max_position_embeddings, 4096);
  EXPECT_FALSE(v3.is_moe_layer(2));
  EXPECT_TRUE(v3.is_moe_layer(3));

  ModelConfig v2 = parse_ok(shapes_dir() + "deepseek-v2-lite.json");
  EXPECT_EQ(v2.arch, Arch::kDeepseekV2);
  EXPECT_EQ(v2.q_lora_rank, 0);
  EXPECT_EQ(v2.n_routed_experts, 64);
  EXPECT_EQ(v2.moe_intermediate_size, 1408);
  EXPECT_EQ(v2.num_hidden_layers, 27);
  EXPECT_FALSE(v2.quant.fp8);

  ModelConfig llama = parse_ok(shapes_dir() + "r1-distill-llama-8b.json");
  EXPECT_EQ(llama.arch, Arch::kLlama);
  EXPECT_EQ(llama.num_key_value_heads, 8);
  EXPECT_EQ(llama.head_dim, 128);
  EXPECT_EQ(llama.vocab_size, 128256);
  EXPECT_EQ(llama.eos_token_ids, (std::vector<int64_t>{128001}));

  ModelConfig q15 = parse_ok(shapes_dir() + "r1-distill-qwen-1.5b.json");
  EXPECT_EQ(q15.arch, Arch::kQwen2);
  EXPECT_EQ(q15.head_dim, 128);
  EXPECT_EQ(q15.num_key_value_heads, 2);
  EXPECT_EQ(q15.num_hidden_layers, 28);

  ModelConfig q7 = parse_ok(shapes_dir() + "r1-distill-qwen-7b.json");
  EXPECT_EQ(q7.hidden_size, 3584);
  EXPECT_EQ(q7.head_dim, 128);
  EXPECT_EQ(q7.num_key_value_heads, 4);
}

TEST(ModelConfig, Defaults) {
  json j = fixture("llama-tiny");
  for (const char* k : {"num_key_value_heads", "head_dim", "rope_theta", "rope_scaling", "tie_word_embeddings",
                        "attention_bias", "max_position_embeddings", "bos_token_id"}) {
    j.erase(k);
  }
  j["eos_token_id"] = {1, 2};
  auto c = parse_model_config(j.dump(), "cfg/config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kNone);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_TRUE(c->bos_token_ids.empty());
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{1, 2}));

  json d = fixture("ds3-tiny");
  for (const char* k : {"n_shared_experts", "n_group", "topk_group", "first_k_dense_replace", "moe_layer_freq",
                        "routed_scaling_factor", "norm_topk_prob", "scoring_func", "topk_method",
                        "num_nextn_predict_layers"}) {
    d.erase(k);
  }
  d["q_lora_rank"] = nullptr;
  d["rope_scaling"].erase("mscale");
  d["rope_scaling"].erase("mscale_all_dim");
  auto e = parse_model_config(d.dump(), "cfg/config.json");
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  EXPECT_EQ(e->q_lora_rank, 0);
  EXPECT_EQ(e->n_shared_experts, 0);
  EXPECT_EQ(e->n_group, 1);
  EXPECT_EQ(e->topk_group, 1);
  EXPECT_EQ(e->moe_layer_freq, 1);
  EXPECT_EQ(e->scoring_func, ScoringFunc::kSoftmax);
  EXPECT_EQ(e->topk_method, TopkMethod::kGreedy);
  EXPECT_DOUBLE_EQ(e->rope_scaling.mscale, 1.0);
  EXPECT_DOUBLE_EQ(e->rope_scaling.mscale_all_dim, 0.0);

  // n_routed_experts null: a dense DeepSeek model, MoE fields not required.
  d["n_routed_experts"] = nullptr;
  d.erase("moe_intermediate_size");
  d.erase("num_experts_per_tok");
  auto dense = parse_model_config(d.dump(), "cfg/config.json");
  ASSERT_TRUE(dense.ok()) << dense.status().to_string();
  EXPECT_EQ(dense->n_routed_experts, 0);
  EXPECT_FALSE(dense->is_moe_layer(2));
}

TEST(ModelConfig, UnknownArchitecture) {
  json j = fixture("llama-tiny");
  j["architectures"] = {"MistralForCausalLM"};
  std::string msg = parse_error(j, StatusCode::kUnsupported);
  EXPECT_THAT(msg, HasSubstr("MistralForCausalLM"));
  EXPECT_THAT(msg, HasSubstr("DeepseekV3ForCausalLM, DeepseekV2ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM"));
  j.erase("architectures");
  EXPECT_THAT(parse_error(j), HasSubstr("'architectures'"));
}

TEST(ModelConfig, MissingRequiredFields) {
  for (const char* field : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                            "intermediate_size", "rms_norm_eps"}) {
    for (const char* model : {"llama-tiny", "qwen2-tiny", "ds3-tiny"}) {
      json j = fixture(model);
      j.erase(field);
      std::string msg = parse_error(j);
      EXPECT_THAT(msg, HasSubstr(std::string("'") + field + "'")) << model;
      EXPECT_THAT(msg, HasSubstr("missing")) << model;
    }
  }
  for (const char* field : {"kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                            "moe_intermediate_size", "num_experts_per_tok"}) {
    for (const char* model : {"ds2-tiny", "ds3-tiny"}) {
      json j = fixture(model);
      j[field] = nullptr;  // null counts as missing
      std::string msg = parse_error(j);
      EXPECT_THAT(msg, HasSubstr(std::string("'") + field + "'")) << model;
    }
  }
}

TEST(ModelConfig, WrongTypes) {
  json j = fixture("ds3-tiny");
  j["hidden_size"] = "256";
  std::string msg = parse_error(j);
  EXPECT_THAT(msg, HasSubstr("'hidden_size'"));
  EXPECT_THAT(msg, HasSubstr("integer"));
  EXPECT_THAT(msg, HasSubstr("\"256\""));

  j = fixture("ds3-tiny");
  j["num_hidden_layers"] = 4.5;
  EXPECT_THAT(parse_error(j), HasSubstr("'num_hidden_layers'"));
  j = fixture("ds3-tiny");
  j["num_hidden_layers"] = 4.0;  // integral floats are accepted
  EXPECT_TRUE(parse_model_config(j.dump(), "x").ok());

  j = fixture("ds3-tiny");
  j["norm_topk_prob"] = 1;
  EXPECT_THAT(parse_error(j), HasSubstr("'norm_topk_prob'"));
  j = fixture("ds3-tiny");
  j["rms_norm_eps"] = "1e-6";
  EXPECT_THAT(parse_error(j), HasSubstr("'rms_norm_eps'"));
  j = fixture("ds3-tiny");
  j["rope_scaling"]["factor"] = "40";
  EXPECT_THAT(parse_error(j), HasSubstr("'rope_scaling.factor'"));
  j = fixture("ds3-tiny");
  j["eos_token_id"] = "</s>";
  EXPECT_THAT(parse_error(j), HasSubstr("'eos_token_id'"));
  j = fixture("ds3-tiny");
  j["topk_method"] = "random";
  msg = parse_error(j, StatusCode::kUnsupported);
  EXPECT_THAT(msg, HasSubstr("random"));
  EXPECT_THAT(msg, HasSubstr("noaux_tc"));
  EXPECT_THAT(parse_error(json::array()), HasSubstr("array"));
  auto bad_json = parse_model_config("{\"vocab_size\": ", "cfg/config.json");
  ASSERT_FALSE(bad_json.ok());
  EXPECT_THAT(bad_json.status().message(), HasSubstr("cfg/config.json"));
}

// Regression (found by fuzzing): a deeply nested value in a field overflowed the stack when described.
TEST(ModelConfig, DeeplyNestedValues) {
  const int depth = 100000;
  std::string nested = std::string(depth, '[') + std::string(depth, ']');
  for (const char* field : {"vocab_size", "eos_token_id", "rope_scaling"}) {
    json j = fixture("llama-tiny");
    j.erase(field);
    std::string text = j.dump();
    text.insert(1, std::string("\"") + field + "\": " + nested + ", ");
    auto c = parse_model_config(text, "cfg/config.json");
    ASSERT_FALSE(c.ok()) << field;
    EXPECT_THAT(c.status().message(), HasSubstr(field));
    EXPECT_LT(c.status().message().size(), 400u);
  }
}

TEST(ModelConfig, RopeScaling) {
  json j = fixture("llama-tiny");
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  std::string msg = parse_error(j, StatusCode::kUnsupported);
  EXPECT_THAT(msg, HasSubstr("'dynamic'"));
  EXPECT_THAT(msg, HasSubstr("yarn, llama3, linear"));

  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  auto c = parse_model_config(j.dump(), "x");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 2.0);

  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_THAT(parse_error(j), HasSubstr("'rope_scaling.low_freq_factor'"));
  j["rope_scaling"] = {{"factor", 8.0}};
  EXPECT_THAT(parse_error(j), HasSubstr("rope_type"));
  j["rope_scaling"] = "yarn";
  EXPECT_THAT(parse_error(j), HasSubstr("'rope_scaling'"));
  j["rope_scaling"] = nullptr;
  EXPECT_TRUE(parse_model_config(j.dump(), "x").ok());
}

TEST(ModelConfig, Quantization) {
  json j = fixture("ds3-tiny-fp8");
  j["quantization_config"]["quant_method"] = "awq";
  std::string msg = parse_error(j, StatusCode::kUnsupported);
  EXPECT_THAT(msg, HasSubstr("'awq'"));
  j = fixture("ds3-tiny-fp8");
  j["quantization_config"]["fmt"] = "e5m2";
  EXPECT_THAT(parse_error(j, StatusCode::kUnsupported), HasSubstr("e5m2"));
  j = fixture("ds3-tiny-fp8");
  j["quantization_config"].erase("weight_block_size");
  EXPECT_THAT(parse_error(j, StatusCode::kUnsupported), HasSubstr("weight_block_size"));
  j = fixture("ds3-tiny-fp8");
  j["quantization_config"]["weight_block_size"] = {128};
  EXPECT_THAT(parse_error(j), HasSubstr("weight_block_size"));
}

TEST(ModelConfig, RangeChecks) {
  auto expect_bad = [](const char* model, const char* field, json value, const char* field_in_msg) {
    json j = fixture(model);
    j[field] = std::move(value);
    EXPECT_THAT(parse_error(j), HasSubstr(field_in_msg)) << field;
  };
  expect_bad("llama-tiny", "num_key_value_heads", 3, "'num_key_value_heads'");
  expect_bad("llama-tiny", "num_key_value_heads", 0, "'num_key_value_heads'");
  expect_bad("llama-tiny", "hidden_size", -128, "'hidden_size'");
  expect_bad("llama-tiny", "num_attention_heads", 0, "'num_attention_heads'");
  expect_bad("llama-tiny", "rms_norm_eps", 0, "'rms_norm_eps'");
  expect_bad("llama-tiny", "vocab_size", 0, "'vocab_size'");
  expect_bad("llama-tiny", "eos_token_id", 512, "'eos_token_id'");
  expect_bad("qwen2-tiny", "hidden_size", 130, "'hidden_size'");  // 130 / 4 heads without head_dim
  expect_bad("ds3-tiny", "num_experts_per_tok", 17, "'num_experts_per_tok'");
  expect_bad("ds3-tiny", "n_group", 3, "'n_group'");
  expect_bad("ds3-tiny", "topk_group", 5, "'topk_group'");
  expect_bad("ds3-tiny", "moe_layer_freq", 0, "'moe_layer_freq'");
  expect_bad("ds3-tiny", "kv_lora_rank", 0, "'kv_lora_rank'");
  expect_bad("ds3-tiny", "qk_rope_head_dim", 15, "'qk_rope_head_dim'");
  expect_bad("ds3-tiny", "n_routed_experts", -1, "'n_routed_experts'");
  expect_bad("ds3-tiny", "vocab_size", 18446744073709551615ull, "'vocab_size'");
}

TEST(ModelConfig, LoadMissingDirectory) {
  auto c = load_model_config("/nonexistent/model");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(), HasSubstr("/nonexistent/model/config.json"));
  EXPECT_THAT(c.status().message(), HasSubstr("Hugging Face model directory"));
}

TEST(ModelConfig, ArchNames) {
  EXPECT_STREQ(arch_name(Arch::kDeepseekV3), "DeepseekV3ForCausalLM");
  EXPECT_STREQ(arch_name(Arch::kDeepseekV2), "DeepseekV2ForCausalLM");
  EXPECT_STREQ(arch_name(Arch::kQwen2), "Qwen2ForCausalLM");
  EXPECT_STREQ(arch_name(Arch::kLlama), "LlamaForCausalLM");
}

}  // namespace
}  // namespace dsi
