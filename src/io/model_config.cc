#include "io/model_config.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "io/json_util.h"

namespace dsi {
namespace {

using json = nlohmann::json;

constexpr const char* kSupportedArchs =
    "DeepseekV3ForCausalLM, DeepseekV2ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM";

// Typed access to the fields of one JSON object. Errors name the source file and the field (with its parent
// object, e.g. "rope_scaling.factor"). Absent and null are the same for optional fields.
// A JSON integer (or an integral float such as 4096.0) that fits in int64.
bool to_int(const json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(v.get<uint64_t>());
    return true;
  }
  if (v.is_number_integer()) {
    *out = v.get<int64_t>();
    return true;
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e18) {
      *out = static_cast<int64_t>(d);
      return true;
    }
  }
  return false;
}

class Fields {
 public:
  Fields(const json& j, const std::string& source, std::string prefix = "")
      : j_(j), source_(source), prefix_(std::move(prefix)) {}

  bool has(const char* key) const { return find(key) != nullptr; }

  Status missing(const char* key) const {
    return Status::InvalidArgument(str_cat(source_, ": required field '", prefix_, key, "' is missing"));
  }
  Status bad(const char* key, const char* expected, const std::string& detail = "") const {
    const json* v = find(key);
    std::string found = v ? str_cat(v->type_name(), " ", brief_json(*v)) : std::string("no value (absent or null)");
    return Status::InvalidArgument(str_cat(source_, ": field '", prefix_, key, "' must be ", expected, ", found ",
                                           found, detail));
  }

  Status get_int(const char* key, int64_t* out, bool required) const {
    const json* v = find(key);
    if (v == nullptr) return required ? missing(key) : Status::Ok();
    if (!to_int(*v, out)) return bad(key, "an integer");
    return Status::Ok();
  }
  Status get_double(const char* key, double* out, bool required) const {
    const json* v = find(key);
    if (v == nullptr) return required ? missing(key) : Status::Ok();
    if (!v->is_number() || !std::isfinite(v->get<double>())) return bad(key, "a finite number");
    *out = v->get<double>();
    return Status::Ok();
  }
  Status get_bool(const char* key, bool* out) const {
    const json* v = find(key);
    if (v == nullptr) return Status::Ok();
    if (!v->is_boolean()) return bad(key, "true or false");
    *out = v->get<bool>();
    return Status::Ok();
  }
  Status get_string(const char* key, std::string* out, bool required) const {
    const json* v = find(key);
    if (v == nullptr) return required ? missing(key) : Status::Ok();
    if (!v->is_string()) return bad(key, "a string");
    *out = v->get<std::string>();
    return Status::Ok();
  }
  // An int, a list of ints, or null (bos_token_id / eos_token_id).
  Status get_int_list(const char* key, std::vector<int64_t>* out) const {
    const json* v = find(key);
    if (v == nullptr) return Status::Ok();
    if (v->is_array()) {
      for (const json& e : *v) {
        int64_t x = 0;
        if (!to_int(e, &x)) return bad(key, "an integer or a list of integers");
        out->push_back(x);
      }
      return Status::Ok();
    }
    int64_t x = 0;
    if (!get_int(key, &x, true).ok()) return bad(key, "an integer or a list of integers");
    out->push_back(x);
    return Status::Ok();
  }
  const json* find(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  const std::string& source() const { return source_; }
  const std::string& prefix() const { return prefix_; }

 private:
  const json& j_;
  const std::string& source_;
  std::string prefix_;
};

Status parse_arch(const Fields& f, Arch* arch) {
  const json* a = f.find("architectures");
  if (a == nullptr) {
    return Status::InvalidArgument(str_cat(f.source(), ": field 'architectures' is missing (expected a list such as ",
                                           "[\"DeepseekV3ForCausalLM\"]; supported: ", kSupportedArchs, ")"));
  }
  if (!a->is_array() || a->empty() || !(*a)[0].is_string()) {
    return f.bad("architectures", "a non-empty list of strings");
  }
  const std::string& name = (*a)[0].get_ref<const std::string&>();
  for (Arch candidate : {Arch::kDeepseekV3, Arch::kDeepseekV2, Arch::kQwen2, Arch::kLlama}) {
    if (name == arch_name(candidate)) {
      *arch = candidate;
      return Status::Ok();
    }
  }
  return Status::Unsupported(str_cat(f.source(), ": architecture '", name, "' is not supported (supported: ",
                                     kSupportedArchs, ")"));
}

Status parse_rope_scaling(const Fields& top, RopeScaling* rs, int64_t max_position_embeddings) {
  const json* v = top.find("rope_scaling");
  if (v == nullptr) return Status::Ok();
  if (!v->is_object()) return top.bad("rope_scaling", "null or an object");
  Fields f(*v, top.source(), "rope_scaling.");
  std::string type;
  const char* type_key = f.has("rope_type") ? "rope_type" : "type";
  if (!f.has(type_key)) return f.missing("rope_type");
  DSI_RETURN_IF_ERROR(f.get_string(type_key, &type, true));
  if (type == "default") {
    rs->type = RopeScalingType::kNone;
    return Status::Ok();
  }
  if (type == "yarn") {
    rs->type = RopeScalingType::kYarn;
    rs->original_max_position_embeddings = max_position_embeddings;
    DSI_RETURN_IF_ERROR(f.get_double("factor", &rs->factor, true));
    DSI_RETURN_IF_ERROR(f.get_int("original_max_position_embeddings", &rs->original_max_position_embeddings, false));
    DSI_RETURN_IF_ERROR(f.get_double("beta_fast", &rs->beta_fast, false));
    DSI_RETURN_IF_ERROR(f.get_double("beta_slow", &rs->beta_slow, false));
    DSI_RETURN_IF_ERROR(f.get_double("mscale", &rs->mscale, false));
    DSI_RETURN_IF_ERROR(f.get_double("mscale_all_dim", &rs->mscale_all_dim, false));
    if (rs->beta_fast <= rs->beta_slow) return f.bad("beta_fast", "greater than beta_slow");
  } else if (type == "llama3") {
    rs->type = RopeScalingType::kLlama3;
    DSI_RETURN_IF_ERROR(f.get_double("factor", &rs->factor, true));
    DSI_RETURN_IF_ERROR(f.get_double("low_freq_factor", &rs->low_freq_factor, true));
    DSI_RETURN_IF_ERROR(f.get_double("high_freq_factor", &rs->high_freq_factor, true));
    DSI_RETURN_IF_ERROR(f.get_int("original_max_position_embeddings", &rs->original_max_position_embeddings, true));
    if (rs->low_freq_factor <= 0) return f.bad("low_freq_factor", "positive");
    if (rs->high_freq_factor <= rs->low_freq_factor) return f.bad("high_freq_factor", "greater than low_freq_factor");
  } else if (type == "linear") {
    rs->type = RopeScalingType::kLinear;
    DSI_RETURN_IF_ERROR(f.get_double("factor", &rs->factor, true));
  } else {
    return Status::Unsupported(str_cat(top.source(), ": rope_scaling type '", type,
                                       "' is not supported (supported: yarn, llama3, linear, default, or null)"));
  }
  if (rs->factor <= 0) return f.bad("factor", "positive");
  if (rs->type != RopeScalingType::kLinear && rs->original_max_position_embeddings <= 0) {
    return f.bad("original_max_position_embeddings", "positive");
  }
  return Status::Ok();
}

Status parse_quant(const Fields& top, QuantConfig* q) {
  const json* v = top.find("quantization_config");
  if (v == nullptr) return Status::Ok();
  if (!v->is_object()) return top.bad("quantization_config", "null or an object");
  Fields f(*v, top.source(), "quantization_config.");
  std::string method;
  DSI_RETURN_IF_ERROR(f.get_string("quant_method", &method, true));
  if (method != "fp8") {
    return Status::Unsupported(str_cat(top.source(), ": quant_method '", method,
                                       "' is not supported (supported: fp8 with 128x128 weight blocks, as in "
                                       "DeepSeek-V3; or an unquantized bf16/f16/f32 model)"));
  }
  std::string fmt = "e4m3", scheme = "dynamic";
  DSI_RETURN_IF_ERROR(f.get_string("fmt", &fmt, false));
  DSI_RETURN_IF_ERROR(f.get_string("activation_scheme", &scheme, false));
  if (fmt != "e4m3") {
    return Status::Unsupported(str_cat(top.source(), ": quantization_config.fmt '", fmt,
                                       "' is not supported (supported: e4m3)"));
  }
  if (scheme != "dynamic") {
    return Status::Unsupported(str_cat(top.source(), ": quantization_config.activation_scheme '", scheme,
                                       "' is not supported (supported: dynamic)"));
  }
  const json* blocks = f.find("weight_block_size");
  if (blocks == nullptr) {
    return Status::Unsupported(str_cat(top.source(), ": fp8 without quantization_config.weight_block_size "
                                                     "(per-tensor scales) is not supported; expected [128, 128]"));
  }
  if (!blocks->is_array() || blocks->size() != 2 || !(*blocks)[0].is_number_integer() ||
      !(*blocks)[1].is_number_integer() || (*blocks)[0].get<int64_t>() <= 0 || (*blocks)[1].get<int64_t>() <= 0) {
    return f.bad("weight_block_size", "a list of two positive integers such as [128, 128]");
  }
  q->fp8 = true;
  q->block_n = (*blocks)[0].get<int64_t>();
  q->block_k = (*blocks)[1].get<int64_t>();
  return Status::Ok();
}

Status parse_deepseek(const Fields& f, ModelConfig* c) {
  DSI_RETURN_IF_ERROR(f.get_int("kv_lora_rank", &c->kv_lora_rank, true));
  DSI_RETURN_IF_ERROR(f.get_int("qk_nope_head_dim", &c->qk_nope_head_dim, true));
  DSI_RETURN_IF_ERROR(f.get_int("qk_rope_head_dim", &c->qk_rope_head_dim, true));
  DSI_RETURN_IF_ERROR(f.get_int("v_head_dim", &c->v_head_dim, true));
  DSI_RETURN_IF_ERROR(f.get_int("q_lora_rank", &c->q_lora_rank, false));
  DSI_RETURN_IF_ERROR(f.get_int("n_routed_experts", &c->n_routed_experts, false));
  DSI_RETURN_IF_ERROR(f.get_int("n_shared_experts", &c->n_shared_experts, false));
  DSI_RETURN_IF_ERROR(f.get_int("n_group", &c->n_group, false));
  DSI_RETURN_IF_ERROR(f.get_int("topk_group", &c->topk_group, false));
  DSI_RETURN_IF_ERROR(f.get_int("first_k_dense_replace", &c->first_k_dense_replace, false));
  DSI_RETURN_IF_ERROR(f.get_int("moe_layer_freq", &c->moe_layer_freq, false));
  DSI_RETURN_IF_ERROR(f.get_double("routed_scaling_factor", &c->routed_scaling_factor, false));
  DSI_RETURN_IF_ERROR(f.get_bool("norm_topk_prob", &c->norm_topk_prob));
  DSI_RETURN_IF_ERROR(f.get_int("num_nextn_predict_layers", &c->num_nextn_predict_layers, false));
  bool moe = c->n_routed_experts != 0;
  DSI_RETURN_IF_ERROR(f.get_int("moe_intermediate_size", &c->moe_intermediate_size, moe));
  DSI_RETURN_IF_ERROR(f.get_int("num_experts_per_tok", &c->num_experts_per_tok, moe));

  std::string scoring = "softmax", topk = "greedy";
  DSI_RETURN_IF_ERROR(f.get_string("scoring_func", &scoring, false));
  DSI_RETURN_IF_ERROR(f.get_string("topk_method", &topk, false));
  if (scoring == "softmax") {
    c->scoring_func = ScoringFunc::kSoftmax;
  } else if (scoring == "sigmoid") {
    c->scoring_func = ScoringFunc::kSigmoid;
  } else {
    return Status::Unsupported(str_cat(f.source(), ": scoring_func '", scoring,
                                       "' is not supported (supported: softmax, sigmoid)"));
  }
  if (topk == "greedy") {
    c->topk_method = TopkMethod::kGreedy;
  } else if (topk == "group_limited_greedy") {
    c->topk_method = TopkMethod::kGroupLimitedGreedy;
  } else if (topk == "noaux_tc") {
    c->topk_method = TopkMethod::kNoauxTc;
  } else {
    return Status::Unsupported(str_cat(f.source(), ": topk_method '", topk,
                                       "' is not supported (supported: greedy, group_limited_greedy, noaux_tc)"));
  }
  return Status::Ok();
}

// Range checks after all fields are read. Messages say which values disagree.
Status check_ranges(const Fields& f, const ModelConfig& c) {
  auto positive = [&](const char* key, int64_t v) { return v > 0 ? Status::Ok() : f.bad(key, "positive"); };
  auto non_negative = [&](const char* key, int64_t v) { return v >= 0 ? Status::Ok() : f.bad(key, "non-negative"); };
  DSI_RETURN_IF_ERROR(positive("vocab_size", c.vocab_size));
  DSI_RETURN_IF_ERROR(positive("hidden_size", c.hidden_size));
  DSI_RETURN_IF_ERROR(positive("intermediate_size", c.intermediate_size));
  DSI_RETURN_IF_ERROR(positive("num_hidden_layers", c.num_hidden_layers));
  DSI_RETURN_IF_ERROR(positive("num_attention_heads", c.num_attention_heads));
  DSI_RETURN_IF_ERROR(positive("num_key_value_heads", c.num_key_value_heads));
  DSI_RETURN_IF_ERROR(positive("max_position_embeddings", c.max_position_embeddings));
  if (c.rms_norm_eps <= 0) return f.bad("rms_norm_eps", "positive");
  if (c.rope_theta <= 0) return f.bad("rope_theta", "positive");
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return f.bad("num_key_value_heads", "a divisor of num_attention_heads",
                 str_cat(" (num_attention_heads is ", c.num_attention_heads, ")"));
  }
  for (int64_t id : c.bos_token_ids) {
    if (id < 0 || id >= c.vocab_size) return f.bad("bos_token_id", "in [0, vocab_size)");
  }
  for (int64_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) return f.bad("eos_token_id", "in [0, vocab_size)");
  }
  if (!c.is_deepseek()) {
    DSI_RETURN_IF_ERROR(positive("head_dim", c.head_dim));
    if (c.head_dim % 2 != 0) return f.bad("head_dim", "even (rotary embedding pairs)");
    return Status::Ok();
  }
  DSI_RETURN_IF_ERROR(positive("kv_lora_rank", c.kv_lora_rank));
  DSI_RETURN_IF_ERROR(non_negative("qk_nope_head_dim", c.qk_nope_head_dim));
  DSI_RETURN_IF_ERROR(positive("qk_rope_head_dim", c.qk_rope_head_dim));
  if (c.qk_rope_head_dim % 2 != 0) return f.bad("qk_rope_head_dim", "even (rotary embedding pairs)");
  DSI_RETURN_IF_ERROR(positive("v_head_dim", c.v_head_dim));
  DSI_RETURN_IF_ERROR(non_negative("q_lora_rank", c.q_lora_rank));
  DSI_RETURN_IF_ERROR(non_negative("n_routed_experts", c.n_routed_experts));
  DSI_RETURN_IF_ERROR(non_negative("n_shared_experts", c.n_shared_experts));
  DSI_RETURN_IF_ERROR(non_negative("first_k_dense_replace", c.first_k_dense_replace));
  DSI_RETURN_IF_ERROR(non_negative("num_nextn_predict_layers", c.num_nextn_predict_layers));
  DSI_RETURN_IF_ERROR(positive("moe_layer_freq", c.moe_layer_freq));
  if (c.n_routed_experts == 0) return Status::Ok();
  DSI_RETURN_IF_ERROR(positive("moe_intermediate_size", c.moe_intermediate_size));
  DSI_RETURN_IF_ERROR(positive("num_experts_per_tok", c.num_experts_per_tok));
  DSI_RETURN_IF_ERROR(positive("n_group", c.n_group));
  DSI_RETURN_IF_ERROR(positive("topk_group", c.topk_group));
  if (c.num_experts_per_tok > c.n_routed_experts) {
    return f.bad("num_experts_per_tok", "at most n_routed_experts", str_cat(" (n_routed_experts is ",
                                                                          c.n_routed_experts, ")"));
  }
  if (c.n_routed_experts % c.n_group != 0) {
    return f.bad("n_group", "a divisor of n_routed_experts", str_cat(" (n_routed_experts is ", c.n_routed_experts,
                                                                     ")"));
  }
  if (c.topk_group > c.n_group) {
    return f.bad("topk_group", "at most n_group", str_cat(" (n_group is ", c.n_group, ")"));
  }
  if (c.topk_method != TopkMethod::kGreedy) {
    int64_t per_group = c.n_routed_experts / c.n_group;
    if (c.num_experts_per_tok > c.topk_group * per_group) {
      return f.bad("num_experts_per_tok", "at most topk_group * n_routed_experts / n_group",
                   str_cat(" (", c.topk_group, " groups of ", per_group, " experts)"));
    }
    if (c.topk_method == TopkMethod::kNoauxTc && per_group < 2) {
      return f.bad("n_group", "at most n_routed_experts / 2 for topk_method noaux_tc (groups are scored by their "
                              "top-2 experts)");
    }
  }
  return Status::Ok();
}

Status parse_fields(const json& j, const std::string& source, ModelConfig* c) {
  if (!j.is_object()) {
    return Status::InvalidArgument(str_cat(source, ": expected a JSON object, found a JSON ", j.type_name()));
  }
  Fields f(j, source);
  DSI_RETURN_IF_ERROR(parse_arch(f, &c->arch));
  DSI_RETURN_IF_ERROR(f.get_string("model_type", &c->model_type, false));
  DSI_RETURN_IF_ERROR(f.get_int("vocab_size", &c->vocab_size, true));
  DSI_RETURN_IF_ERROR(f.get_int("hidden_size", &c->hidden_size, true));
  DSI_RETURN_IF_ERROR(f.get_int("num_hidden_layers", &c->num_hidden_layers, true));
  DSI_RETURN_IF_ERROR(f.get_int("num_attention_heads", &c->num_attention_heads, true));
  DSI_RETURN_IF_ERROR(f.get_int("intermediate_size", &c->intermediate_size, true));
  DSI_RETURN_IF_ERROR(f.get_double("rms_norm_eps", &c->rms_norm_eps, true));
  if (c->num_attention_heads <= 0) return f.bad("num_attention_heads", "positive");

  c->num_key_value_heads = c->num_attention_heads;
  c->head_dim = c->hidden_size / c->num_attention_heads;
  bool has_head_dim = f.has("head_dim");
  DSI_RETURN_IF_ERROR(f.get_int("num_key_value_heads", &c->num_key_value_heads, false));
  DSI_RETURN_IF_ERROR(f.get_int("head_dim", &c->head_dim, false));
  if (!has_head_dim && !c->is_deepseek() && c->hidden_size % c->num_attention_heads != 0) {
    return f.bad("hidden_size", "a multiple of num_attention_heads when head_dim is not given");
  }
  switch (c->arch) {  // Hugging Face defaults of each config class
    case Arch::kDeepseekV3: c->max_position_embeddings = 4096; break;
    case Arch::kDeepseekV2: c->max_position_embeddings = 2048; break;
    case Arch::kQwen2: c->max_position_embeddings = 32768; break;
    case Arch::kLlama: c->max_position_embeddings = 2048; break;
  }
  DSI_RETURN_IF_ERROR(f.get_int("max_position_embeddings", &c->max_position_embeddings, false));
  DSI_RETURN_IF_ERROR(f.get_double("rope_theta", &c->rope_theta, false));
  DSI_RETURN_IF_ERROR(f.get_bool("tie_word_embeddings", &c->tie_word_embeddings));
  DSI_RETURN_IF_ERROR(f.get_bool("attention_bias", &c->attention_bias));
  DSI_RETURN_IF_ERROR(f.get_bool("mlp_bias", &c->mlp_bias));
  if (c->arch == Arch::kQwen2) c->attention_bias = true;  // Qwen2 q/k/v projections always carry a bias
  DSI_RETURN_IF_ERROR(f.get_int_list("bos_token_id", &c->bos_token_ids));
  DSI_RETURN_IF_ERROR(f.get_int_list("eos_token_id", &c->eos_token_ids));
  DSI_RETURN_IF_ERROR(parse_rope_scaling(f, &c->rope_scaling, c->max_position_embeddings));
  DSI_RETURN_IF_ERROR(parse_quant(f, &c->quant));
  if (c->is_deepseek()) DSI_RETURN_IF_ERROR(parse_deepseek(f, c));
  return check_ranges(f, *c);
}

}  // namespace

const char* arch_name(Arch arch) {
  switch (arch) {
    case Arch::kDeepseekV3: return "DeepseekV3ForCausalLM";
    case Arch::kDeepseekV2: return "DeepseekV2ForCausalLM";
    case Arch::kQwen2: return "Qwen2ForCausalLM";
    case Arch::kLlama: return "LlamaForCausalLM";
  }
  return "?";
}

Result<ModelConfig> parse_model_config(std::string_view json_text, const std::string& source) {
  json j;
  try {
    j = json::parse(json_text.begin(), json_text.end());
  } catch (const json::exception& e) {
    return Status::InvalidArgument(str_cat(source, ": not valid JSON: ", e.what()));
  }
  ModelConfig config;
  try {
    DSI_RETURN_IF_ERROR(parse_fields(j, source, &config));
  } catch (const json::exception& e) {  // not expected: every access is type-checked first
    return Status::InvalidArgument(str_cat(source, ": malformed config: ", e.what()));
  }
  return config;
}

Result<ModelConfig> load_model_config(const std::string& model_dir) {
  std::string path = join_path(model_dir, "config.json");
  Result<std::string> text = read_file(path);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) {
      return Status::NotFound(str_cat(path, " not found: expected a Hugging Face model directory (config.json, "
                                            "*.safetensors, tokenizer.json) at ", model_dir));
    }
    return text.status();
  }
  return parse_model_config(*text, path);
}

}  // namespace dsi
