// Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (+ tokenizer_config.json), byte-for-byte
// compatible with Hugging Face `tokenizers` for the DeepSeek-V3/R1, Qwen2 and Llama-3 families.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace dsi::tok {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool single_word = false;
};

struct EncodeOptions {
  bool add_special_tokens = false;  // BOS/EOS as the post-processor (or add_bos_token / add_eos_token) says
};
struct DecodeOptions {
  bool skip_special_tokens = false;
};

struct TokenizerImpl;

// Immutable after loading; encode/decode may be called from any number of threads (the per-word cache is
// guarded by a mutex).
class Tokenizer {
 public:
  // Loads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json.
  static Result<std::unique_ptr<Tokenizer>> load_dir(const std::string& dir);
  // From file contents; config_json may be empty.
  static Result<std::unique_ptr<Tokenizer>> from_json(std::string_view tokenizer_json, std::string_view config_json);
  ~Tokenizer();

  // Invalid UTF-8 in text is replaced with U+FFFD first.
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& opts = {}) const;
  // Errors name the first unknown id.
  Result<std::string> decode(std::span<const int32_t> ids, const DecodeOptions& opts = {}) const;
  // Positional-flag forms, kept for existing callers (engine, server, generate).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const {
    return encode(text, EncodeOptions{.add_special_tokens = add_special_tokens});
  }
  Result<std::string> decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
    return decode(ids, DecodeOptions{.skip_special_tokens = skip_special_tokens});
  }
  // Raw bytes a token contributes to decoded text (may be part of a UTF-8 character).
  Result<std::string> token_bytes(int32_t id) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;  // vocab or added token text
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  size_t vocab_size() const;  // number of ids (max id + 1)

  const std::optional<std::string>& bos_token() const;
  const std::optional<std::string>& eos_token() const;
  const std::optional<std::string>& pad_token() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  std::optional<int32_t> pad_id() const;
  // The chat template from tokenizer_config.json (the default one when it is a list of named templates).
  const std::string& chat_template() const;
  const std::vector<AddedToken>& added_tokens() const;

 private:
  Tokenizer();
  std::unique_ptr<TokenizerImpl> impl_;
};

}  // namespace dsi::tok
