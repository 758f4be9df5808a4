// Internal state of a Tokenizer (not part of the public API).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace dsi::tok {

// Leftmost-longest matcher over a set of added tokens (a byte trie), with HF's lstrip/rstrip/single_word rules.
class AddedTokenMatcher {
 public:
  void build(const std::vector<AddedToken>& tokens, const std::vector<int>& which);
  bool empty() const { return nodes_.size() <= 1; }
  // Splits text into pieces: (token index or -1, begin, end).
  struct Split {
    int token;  // index into the token list given to build(), or -1 for plain text
    size_t begin;
    size_t end;
  };
  void split(std::string_view text, const std::vector<AddedToken>& tokens, std::vector<Split>& out) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;
    int32_t token = -1;
  };
  // Longest token starting at text[i], or -1; sets len.
  int longest_at(std::string_view text, size_t i, size_t& len) const;
  std::vector<Node> nodes_;
  bool first_byte_[256] = {};
};

enum class NormalizerKind { kNone, kNfc, kNfkc, kLowercase };

struct PostTemplate {
  // Items of the "single" template: >= 0 a fixed id list index into special_ids, -1 the sequence.
  std::vector<std::vector<int32_t>> items;  // empty vector = the sequence
  bool present = false;
};

struct TokenizerImpl {
  BpeModel bpe;
  std::vector<AddedToken> added;              // all added tokens
  std::vector<int32_t> added_by_id_index;     // id -> index into added, -1 if none (size max id + 1)
  StringIdMap added_ids;                      // content -> id
  AddedTokenMatcher raw_matcher;              // normalized == false
  AddedTokenMatcher normalized_matcher;       // normalized == true
  std::vector<NormalizerKind> normalizers;
  std::vector<SplitStep> splits;
  bool byte_level_prefix_space = false;
  std::shared_ptr<Regex> byte_level_regex;    // ByteLevel use_regex: the GPT-2 pattern
  PostTemplate post;
  bool add_bos = false;
  bool add_eos = false;
  std::optional<std::string> bos, eos, pad;
  std::string chat_template;
  size_t n_ids = 0;

  void encode_segment(std::string_view text, std::vector<int32_t>& out) const;
  void pretokenize_and_bpe(std::string_view text, std::vector<int32_t>& out) const;
  const AddedToken* added_for_id(int32_t id) const {
    if (id < 0 || id >= static_cast<int32_t>(added_by_id_index.size()) || added_by_id_index[id] < 0) return nullptr;
    return &added[added_by_id_index[id]];
  }
  std::optional<int32_t> id_of(const std::optional<std::string>& tok) const;
};

// Applies one normalizer (NFC needs ICU; without it the text is returned unchanged and load fails earlier).
std::string normalize_text(NormalizerKind kind, std::string_view text);
bool normalizer_available(NormalizerKind kind);

}  // namespace dsi::tok
