#include "model/kv_cache.h"

#include <algorithm>
#include <cstring>

namespace dsi {

KvCache::KvCache(KvLayout layout, int64_t block_size, int64_t num_blocks)
    : layout_(layout), block_size_(block_size), num_blocks_(0), k_(layout.num_layers), v_(layout.num_layers) {
  DSI_CHECK(block_size > 0);
  grow(num_blocks);
}

int64_t KvCache::bytes_per_block() const {
  return block_size_ * (layout_.k_width + layout_.v_width) * layout_.num_layers * static_cast<int64_t>(sizeof(float));
}

void KvCache::grow(int64_t num_blocks) {
  if (num_blocks <= num_blocks_) return;
  for (int64_t l = 0; l < layout_.num_layers && layout_.host_storage; ++l) {
    k_[l].resize(static_cast<size_t>(num_blocks * block_size_ * layout_.k_width));
    v_[l].resize(static_cast<size_t>(num_blocks * block_size_ * layout_.v_width));
  }
  num_blocks_ = num_blocks;
}

Status KvCache::check_table(const std::vector<int32_t>& block_table, int64_t len) const {
  const int64_t needed = (len + block_size_ - 1) / block_size_;
  if (static_cast<int64_t>(block_table.size()) < needed) {
    return Status::Internal(str_cat("block table of ", block_table.size(), " blocks cannot hold ", len, " positions"));
  }
  for (int64_t i = 0; i < needed; ++i) {
    if (block_table[i] < 0 || block_table[i] >= num_blocks_) {
      return Status::Internal(str_cat("block id ", block_table[i], " outside the cache of ", num_blocks_, " blocks"));
    }
  }
  return Status::Ok();
}

const float* KvCache::rows(std::vector<float>& pool, int64_t width, const std::vector<int32_t>& block_table,
                           int64_t len, std::vector<float>& scratch) const {
  const int64_t nblocks = (len + block_size_ - 1) / block_size_;
  bool consecutive = true;
  for (int64_t i = 1; i < nblocks && consecutive; ++i) consecutive = block_table[i] == block_table[0] + i;
  const float* base = pool.data() + static_cast<int64_t>(block_table[0]) * block_size_ * width;
  if (consecutive) return base;
  scratch.resize(static_cast<size_t>(len * width));
  for (int64_t i = 0; i < nblocks; ++i) {
    const int64_t rows_here = std::min(block_size_, len - i * block_size_);
    std::memcpy(&scratch[i * block_size_ * width], pool.data() + static_cast<int64_t>(block_table[i]) * block_size_ * width,
                static_cast<size_t>(rows_here * width) * sizeof(float));
  }
  return scratch.data();
}

const float* KvCache::k_rows(int64_t layer, const std::vector<int32_t>& block_table, int64_t len,
                             std::vector<float>& scratch) {
  return rows(k_[layer], layout_.k_width, block_table, len, scratch);
}

const float* KvCache::v_rows(int64_t layer, const std::vector<int32_t>& block_table, int64_t len,
                             std::vector<float>& scratch) {
  return rows(v_[layer], layout_.v_width, block_table, len, scratch);
}

int64_t SimpleKvCache::add_sequence() {
  tables_.emplace_back();
  return static_cast<int64_t>(tables_.size()) - 1;
}

void SimpleKvCache::add_chunk(ForwardBatch& batch, int64_t seq, int64_t start_pos, const std::vector<int64_t>& ids) {
  auto& table = tables_[seq];
  const int64_t bs = cache_.block_size();
  const int64_t needed = (start_pos + static_cast<int64_t>(ids.size()) + bs - 1) / bs;
  while (static_cast<int64_t>(table.size()) < needed) table.push_back(static_cast<int32_t>(next_block_++));
  if (next_block_ > cache_.num_blocks()) cache_.grow(std::max(next_block_, cache_.num_blocks() * 2));
  batch.add_chunk(table, start_pos, ids);
}

}  // namespace dsi
