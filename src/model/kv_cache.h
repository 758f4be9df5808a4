// Paged KV cache storage: per layer, a pool of fixed-size blocks of `block_size` token rows. Which blocks a
// sequence uses is the block table in its SequenceChunk (the engine's BlockAllocator decides; SimpleKvCache
// below does it for single-process tools and tests).
// Row layouts: GQA rows are K [num_kv_heads * head_dim] and V [num_kv_heads * head_dim]; MLA rows are the
// compressed latent [kv_lora_rank + qk_rope_head_dim] (normalized c_kv then the rotated k_pe) and there is no V
// (the absorbed form reads values from the latent).
// Thread use: owned by the engine thread.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "model/forward_batch.h"

namespace dsi {

struct KvLayout {
  int64_t num_layers = 0;
  int64_t k_width = 0;  // floats per token per layer in K (or the MLA latent)
  int64_t v_width = 0;  // floats per token per layer in V (0 for MLA)
  // False when the model keeps the KV rows in its own (device) memory: this object then only sizes and checks
  // block tables, and allocates no host rows.
  bool host_storage = true;
  int64_t elem_bytes = 4;  // bytes per cached value where the rows live (f32 on the host, bf16 on the GPU)
};

class KvCache {
 public:
  KvCache(KvLayout layout, int64_t block_size, int64_t num_blocks);

  const KvLayout& layout() const { return layout_; }
  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t bytes_per_block() const;
  // Grows the pool (existing blocks keep their contents; row pointers taken before are invalidated).
  void grow(int64_t num_blocks);

  // Row of position `pos` of a sequence with `block_table` in `layer`.
  float* k_row(int64_t layer, const std::vector<int32_t>& block_table, int64_t pos) {
    return k_[layer].data() + row_index(block_table, pos) * layout_.k_width;
  }
  float* v_row(int64_t layer, const std::vector<int32_t>& block_table, int64_t pos) {
    return v_[layer].data() + row_index(block_table, pos) * layout_.v_width;
  }
  // Rows [0, len) of K (or V) of a sequence as one contiguous [len, width] array: a direct pointer when the
  // sequence's blocks are consecutive, else a copy into `scratch`.
  const float* k_rows(int64_t layer, const std::vector<int32_t>& block_table, int64_t len, std::vector<float>& scratch);
  const float* v_rows(int64_t layer, const std::vector<int32_t>& block_table, int64_t len, std::vector<float>& scratch);

  // The table covers `len` positions with valid block ids.
  Status check_table(const std::vector<int32_t>& block_table, int64_t len) const;

 private:
  int64_t row_index(const std::vector<int32_t>& block_table, int64_t pos) const {
    return static_cast<int64_t>(block_table[pos / block_size_]) * block_size_ + pos % block_size_;
  }
  const float* rows(std::vector<float>& pool, int64_t width, const std::vector<int32_t>& block_table, int64_t len,
                    std::vector<float>& scratch) const;

  KvLayout layout_;
  int64_t block_size_;
  int64_t num_blocks_;
  std::vector<std::vector<float>> k_, v_;  // per layer: [num_blocks * block_size, width]
};

// For tools and tests without a scheduler: sequences get blocks in order from a pool that grows on demand.
class SimpleKvCache {
 public:
  explicit SimpleKvCache(KvLayout layout, int64_t block_size = 16) : cache_(layout, block_size, 0) {}
  int64_t add_sequence();
  // Appends a chunk of `ids` at `start_pos` for `seq` to `batch`, allocating the blocks it needs.
  void add_chunk(ForwardBatch& batch, int64_t seq, int64_t start_pos, const std::vector<int64_t>& ids);
  KvCache& cache() { return cache_; }

 private:
  KvCache cache_;
  int64_t next_block_ = 0;
  std::vector<std::vector<int32_t>> tables_;
};

}  // namespace dsi
