// What a model consumes: tokens of several sequences, each a contiguous chunk of new positions (a prefill chunk
// or one decode token), with the block table that maps the sequence's positions to KV cache blocks.
// Models never see requests or scheduling.
#pragma once

#include <cstdint>
#include <vector>

namespace dsi {

struct SequenceChunk {
  std::vector<int32_t> block_table;  // KV block of positions [i * block_size, (i + 1) * block_size)
  int64_t start_pos = 0;   // position of the first new token (= tokens already in the cache)
  int64_t num_tokens = 0;  // new tokens in this chunk
};

struct ForwardBatch {
  std::vector<int64_t> token_ids;  // [num_tokens], chunks concatenated in `chunks` order
  std::vector<int64_t> positions;  // [num_tokens]
  std::vector<SequenceChunk> chunks;
  bool all_logits = false;  // logits for every token, else only for the last token of each chunk

  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
  // Appends one chunk of tokens at positions start_pos, start_pos + 1, ...
  void add_chunk(std::vector<int32_t> block_table, int64_t start_pos, const std::vector<int64_t>& ids) {
    chunks.push_back({std::move(block_table), start_pos, static_cast<int64_t>(ids.size())});
    for (size_t i = 0; i < ids.size(); ++i) {
      token_ids.push_back(ids[i]);
      positions.push_back(start_pos + static_cast<int64_t>(i));
    }
  }
};

}  // namespace dsi
