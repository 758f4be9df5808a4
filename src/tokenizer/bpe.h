// Byte-level BPE model: vocabulary over raw bytes, merges ranked by priority, a merge-rank heap per word and a
// per-word cache.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace dsi::tok {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // vocab: byte-level token text -> id. merges: pairs of byte-level token texts, in rank order.
  static Result<BpeModel> build(const std::vector<std::pair<std::string, int32_t>>& vocab,
                                const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges);
  BpeModel() = default;
  BpeModel(BpeModel&& o) noexcept;
  BpeModel& operator=(BpeModel&& o) noexcept;

  // Appends the ids of one pre-tokenized word given as raw bytes.
  void encode_word(std::string_view raw, std::vector<int32_t>& out) const;

  // Raw bytes of a vocabulary id ("" and false if the id is not in the vocabulary).
  bool id_to_bytes(int32_t id, std::string& out) const;
  // Byte-level text of a vocabulary id as written in tokenizer.json.
  const std::string* id_to_token(int32_t id) const;
  int32_t max_id() const { return static_cast<int32_t>(id_tokens_.size()) - 1; }
  size_t vocab_size() const { return vocab_size_; }
  std::optional<int32_t> token_to_id(std::string_view byte_level_text) const;

 private:
  struct MergeInfo {
    int32_t rank;
    int32_t new_id;
  };
  void merge_word(std::string_view raw, std::vector<int32_t>& out) const;
  const MergeInfo* find_merge(int32_t a, int32_t b) const {
    auto it = merges_.find((static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  StringIdMap raw_vocab_;                  // raw bytes -> id (tokens whose text is all byte-level characters)
  StringIdMap text_vocab_;                 // byte-level text -> id
  std::vector<std::string> id_tokens_;     // id -> byte-level text ("" for holes)
  std::vector<std::string> id_bytes_;      // id -> raw bytes (HF ByteLevel decoder rule)
  std::vector<uint8_t> id_present_;
  std::unordered_map<uint64_t, MergeInfo> merges_;
  int32_t byte_ids_[256];
  size_t vocab_size_ = 0;
  bool ignore_merges_ = false;

  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace dsi::tok
