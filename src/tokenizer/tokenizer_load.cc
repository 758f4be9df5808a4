// Loading tokenizer.json and tokenizer_config.json (nlohmann stays in this file; its exceptions stop here).
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace dsi::tok {

namespace {

using json = nlohmann::json;

// The GPT-2 pattern ByteLevel uses when use_regex is true.
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::NotFound(str_cat(path, ": cannot open"));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string escape_regex_literal(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

Status parse_pre_tokenizer(const json& j, TokenizerImpl& m, bool last) {
  if (j.is_null()) return Status::Ok();
  std::string type = j.value("type", "");
  if (type == "Sequence") {
    const json& list = j.at("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i) DSI_RETURN_IF_ERROR(parse_pre_tokenizer(list[i], m, i + 1 == list.size()));
    return Status::Ok();
  }
  if (type == "Split") {
    const json& pat = j.at("pattern");
    std::string re;
    if (pat.contains("Regex")) {
      re = pat.at("Regex").get<std::string>();
    } else if (pat.contains("String")) {
      re = escape_regex_literal(pat.at("String").get<std::string>());
    } else {
      return Status::Unsupported("pre_tokenizer Split: pattern is neither Regex nor String");
    }
    SplitStep step;
    DSI_ASSIGN_OR_RETURN(step.regex, Regex::compile(re));
    std::string beh = j.value("behavior", "Isolated");
    if (beh == "Isolated") step.behavior = SplitBehavior::kIsolated;
    else if (beh == "Removed") step.behavior = SplitBehavior::kRemoved;
    else if (beh == "MergedWithPrevious") step.behavior = SplitBehavior::kMergedWithPrevious;
    else if (beh == "MergedWithNext") step.behavior = SplitBehavior::kMergedWithNext;
    else if (beh == "Contiguous") step.behavior = SplitBehavior::kContiguous;
    else return Status::Unsupported(str_cat("pre_tokenizer Split: behavior '", beh, "'"));
    step.invert = j.value("invert", false);
    m.splits.push_back(std::move(step));
    return Status::Ok();
  }
  if (type == "ByteLevel") {
    if (!last) return Status::Unsupported("pre_tokenizer ByteLevel must be the last step of the sequence");
    m.byte_level_prefix_space = j.value("add_prefix_space", false);
    if (j.value("use_regex", true)) {
      DSI_ASSIGN_OR_RETURN(m.byte_level_regex, Regex::compile(kGpt2Pattern));
    }
    return Status::Ok();
  }
  return Status::Unsupported(str_cat("pre_tokenizer type '", type, "'"));
}

Status parse_normalizer(const json& j, TokenizerImpl& m) {
  if (j.is_null()) return Status::Ok();
  std::string type = j.value("type", "");
  if (type == "Sequence") {
    for (const auto& n : j.at("normalizers")) DSI_RETURN_IF_ERROR(parse_normalizer(n, m));
    return Status::Ok();
  }
  NormalizerKind k;
  if (type == "NFC") k = NormalizerKind::kNfc;
  else if (type == "NFKC") k = NormalizerKind::kNfkc;
  else if (type == "Lowercase") k = NormalizerKind::kLowercase;
  else return Status::Unsupported(str_cat("normalizer type '", type, "'"));
  if (!normalizer_available(k)) return Status::Unsupported(str_cat("normalizer ", type, " needs ICU (not in this build)"));
  m.normalizers.push_back(k);
  return Status::Ok();
}

Status parse_post_processor(const json& j, TokenizerImpl& m) {
  if (j.is_null()) return Status::Ok();
  std::string type = j.value("type", "");
  if (type == "Sequence") {
    for (const auto& p : j.at("processors")) DSI_RETURN_IF_ERROR(parse_post_processor(p, m));
    return Status::Ok();
  }
  if (type != "TemplateProcessing") return Status::Ok();  // ByteLevel etc. do not change ids
  m.post.present = true;
  const json& specials = j.at("special_tokens");
  for (const auto& item : j.at("single")) {
    if (item.contains("Sequence")) {
      m.post.items.emplace_back();
    } else if (item.contains("SpecialToken")) {
      std::string name = item["SpecialToken"].at("id").get<std::string>();
      if (!specials.contains(name)) return Status::Corrupt(str_cat("post_processor: special token '", name, "' undefined"));
      std::vector<int32_t> ids = specials[name].at("ids").get<std::vector<int32_t>>();
      if (ids.empty()) continue;
      m.post.items.push_back(std::move(ids));
    }
  }
  return Status::Ok();
}

// bos_token etc.: a string, null, or an AddedToken object {"content": ...}.
std::optional<std::string> token_field(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return std::nullopt;
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

Status load_impl(std::string_view tokenizer_json, std::string_view config_json, TokenizerImpl& m) {
  json tj = json::parse(tokenizer_json);
  const json& model = tj.at("model");
  std::string mtype = model.value("type", "BPE");
  if (mtype != "BPE") return Status::Unsupported(str_cat("model type '", mtype, "' (only BPE)"));
  if (model.contains("byte_fallback") && model["byte_fallback"].is_boolean() && model["byte_fallback"].get<bool>()) {
    return Status::Unsupported("BPE byte_fallback (SentencePiece-style models)");
  }
  std::vector<std::pair<std::string, int32_t>> vocab;
  vocab.reserve(model.at("vocab").size());
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) vocab.emplace_back(it.key(), it.value().get<int32_t>());
  std::vector<std::pair<std::string, std::string>> merges;
  const json& mj = model.at("merges");
  merges.reserve(mj.size());
  for (size_t r = 0; r < mj.size(); ++r) {
    const json& e = mj[r];
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return Status::Corrupt(str_cat("merges[", r, "]: '", s, "' is not two tokens separated by one space"));
      }
      merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (e.is_array() && e.size() == 2) {
      merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
    } else {
      return Status::Corrupt(str_cat("merges[", r, "]: neither \"a b\" nor [\"a\", \"b\"]"));
    }
  }
  bool ignore_merges = model.value("ignore_merges", false);
  DSI_ASSIGN_OR_RETURN(m.bpe, BpeModel::build(vocab, merges, ignore_merges));
  int32_t max_id = m.bpe.max_id();
  if (tj.contains("added_tokens") && tj["added_tokens"].is_array()) {
    for (const auto& a : tj["added_tokens"]) {
      AddedToken t;
      t.content = a.at("content").get<std::string>();
      t.id = a.at("id").get<int32_t>();
      if (t.id < 0 || t.id > (1 << 24)) return Status::Corrupt(str_cat("added token '", t.content, "': bad id ", t.id));
      t.special = a.value("special", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.normalized = a.value("normalized", !t.special);
      t.single_word = a.value("single_word", false);
      if (!utf8_is_valid(t.content)) return Status::Corrupt(str_cat("added token id ", t.id, ": invalid UTF-8"));
      max_id = std::max(max_id, t.id);
      m.added.push_back(std::move(t));
    }
  }
  m.n_ids = static_cast<size_t>(max_id + 1);
  m.added_by_id_index.assign(m.n_ids, -1);
  std::vector<int> raw_idx, norm_idx;
  for (size_t i = 0; i < m.added.size(); ++i) {
    m.added_by_id_index[m.added[i].id] = static_cast<int32_t>(i);
    m.added_ids[m.added[i].content] = m.added[i].id;
    (m.added[i].normalized ? norm_idx : raw_idx).push_back(static_cast<int>(i));
  }
  m.raw_matcher.build(m.added, raw_idx);
  m.normalized_matcher.build(m.added, norm_idx);
  if (tj.contains("normalizer")) DSI_RETURN_IF_ERROR(parse_normalizer(tj["normalizer"], m));
  if (tj.contains("pre_tokenizer")) DSI_RETURN_IF_ERROR(parse_pre_tokenizer(tj["pre_tokenizer"], m, true));
  if (tj.contains("decoder") && !tj["decoder"].is_null()) {
    std::string d = tj["decoder"].value("type", "");
    if (d != "ByteLevel") return Status::Unsupported(str_cat("decoder type '", d, "' (only ByteLevel)"));
  }
  if (tj.contains("post_processor")) DSI_RETURN_IF_ERROR(parse_post_processor(tj["post_processor"], m));

  if (!config_json.empty()) {
    json cfg = json::parse(config_json);
    m.bos = token_field(cfg, "bos_token");
    m.eos = token_field(cfg, "eos_token");
    m.pad = token_field(cfg, "pad_token");
    // LlamaTokenizerFast rebuilds its post-processor from add_bos_token / add_eos_token.
    if (cfg.contains("add_bos_token") || cfg.contains("add_eos_token")) {
      m.post = PostTemplate{};
      m.add_bos = cfg.value("add_bos_token", false);
      m.add_eos = cfg.value("add_eos_token", false);
    }
    if (cfg.contains("chat_template")) {
      const json& ct = cfg["chat_template"];
      if (ct.is_string()) {
        m.chat_template = ct.get<std::string>();
      } else if (ct.is_array()) {
        for (const auto& e : ct) {
          if (e.value("name", "") == "default") m.chat_template = e.value("template", "");
        }
        if (m.chat_template.empty() && !ct.empty()) m.chat_template = ct[0].value("template", "");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  try {
    DSI_RETURN_IF_ERROR(load_impl(tokenizer_json, config_json, *t->impl_));
  } catch (const std::exception& e) {
    return Status::Corrupt(str_cat("tokenizer json: ", e.what()));
  }
  return t;
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::load_dir(const std::string& dir) {
  std::string tpath = dir + "/tokenizer.json";
  DSI_ASSIGN_OR_RETURN(std::string tj, read_file(tpath));
  std::string cj;
  auto cfg = read_file(dir + "/tokenizer_config.json");
  if (cfg.ok()) cj = std::move(cfg).value();
  auto r = from_json(tj, cj);
  if (!r.ok()) return r.status().with_context(dir);
  return r;
}

}  // namespace dsi::tok
