// What a model consumes: tokens of several sequences, each a contiguous chunk of new positions (a prefill chunk
// or one decode token), plus the KV cache slot each sequence uses. Models never see requests or scheduling.
#pragma once

#include <cstdint>
#include <vector>

namespace dsi {

struct SequenceChunk {
  int64_t cache_slot = 0;  // which KvCache sequence slot holds this sequence's history
  int64_t start_pos = 0;   // position of the first new token (= tokens already in the cache)
  int64_t num_tokens = 0;  // new tokens in this chunk
};

struct ForwardBatch {
  std::vector<int64_t> token_ids;    // [num_tokens], chunks concatenated in `chunks` order
  std::vector<int64_t> positions;    // [num_tokens]
  std::vector<SequenceChunk> chunks;
  bool all_logits = false;  // logits for every token, else only for the last token of each chunk

  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
  // Appends one chunk of tokens at positions start_pos, start_pos + 1, ...
  void add_chunk(int64_t cache_slot, int64_t start_pos, const std::vector<int64_t>& ids) {
    chunks.push_back({cache_slot, start_pos, static_cast<int64_t>(ids.size())});
    for (size_t i = 0; i < ids.size(); ++i) {
      token_ids.push_back(ids[i]);
      positions.push_back(start_pos + static_cast<int64_t>(i));
    }
  }
};

}  // namespace dsi
