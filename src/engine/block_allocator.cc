#include "engine/block_allocator.h"

#include <algorithm>

#include "core/status.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace dsi {

BlockAllocator::BlockAllocator(BlockAllocatorConfig config)
    : block_size_(config.block_size), enable_prefix_caching_(config.enable_prefix_caching) {
  DSI_CHECK(config.num_blocks > 0 && config.num_blocks <= INT32_MAX, "num_blocks = ", config.num_blocks);
  DSI_CHECK(config.block_size > 0, "block_size = ", config.block_size);
  blocks_.resize(static_cast<size_t>(config.num_blocks));
  free_.reserve(blocks_.size());
  for (int64_t b = config.num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<BlockId>(b));
}

double BlockAllocator::usage() const {
  return static_cast<double>(num_used_blocks()) / static_cast<double>(num_blocks());
}

uint64_t BlockAllocator::hash_block(uint64_t parent_hash, std::span<const int64_t> token_ids) {
  return XXH64(token_ids.data(), token_ids.size_bytes(), parent_hash);
}

const BlockAllocator::Table& BlockAllocator::table(int64_t seq_id) const {
  auto it = tables_.find(seq_id);
  DSI_CHECK(it != tables_.end(), "no block table for sequence ", seq_id);
  return it->second;
}

BlockAllocator::Table& BlockAllocator::table(int64_t seq_id) {
  auto it = tables_.find(seq_id);
  DSI_CHECK(it != tables_.end(), "no block table for sequence ", seq_id);
  return it->second;
}

BlockId BlockAllocator::take_block() {
  BlockId id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    DSI_CHECK(!evictable_.empty(), "take_block with no free block");
    id = evictable_.front();
    evictable_.pop_front();
    Block& b = blocks_[id];
    DSI_CHECK(b.hashed && b.ref_count == 0);
    hash_to_block_.erase(b.hash);
    b.evictable = false;
    b.hashed = false;
    b.token_ids.clear();
  }
  Block& b = blocks_[id];
  DSI_CHECK(b.ref_count == 0 && !b.hashed, "block ", id, " handed out while in use");
  b.ref_count = 1;
  return id;
}

void BlockAllocator::add_ref(BlockId id) {
  Block& b = blocks_[id];
  if (b.evictable) {
    DSI_CHECK(b.ref_count == 0);
    evictable_.erase(b.lru_pos);
    b.evictable = false;
  }
  ++b.ref_count;
}

void BlockAllocator::release(BlockId id) {
  Block& b = blocks_[id];
  DSI_CHECK(b.ref_count > 0, "block ", id, " released more often than referenced");
  if (--b.ref_count > 0) return;
  if (b.hashed) {
    b.lru_pos = evictable_.insert(evictable_.end(), id);
    b.evictable = true;
  } else {
    free_.push_back(id);
  }
}

BlockId BlockAllocator::lookup(uint64_t hash, std::span<const int64_t> token_ids) const {
  auto it = hash_to_block_.find(hash);
  if (it == hash_to_block_.end()) return -1;
  const Block& b = blocks_[it->second];
  if (!std::equal(token_ids.begin(), token_ids.end(), b.token_ids.begin(), b.token_ids.end())) return -1;
  return it->second;
}

int64_t BlockAllocator::begin_sequence(int64_t seq_id, std::span<const int64_t> token_ids,
                                       int64_t max_cached_tokens) {
  auto [it, inserted] = tables_.try_emplace(seq_id);
  DSI_CHECK(inserted, "sequence ", seq_id, " already has a block table");
  Table& t = it->second;
  const int64_t limit = std::min<int64_t>(max_cached_tokens, static_cast<int64_t>(token_ids.size()));
  if (enable_prefix_caching_) {
    for (int64_t start = 0; start + block_size_ <= limit; start += block_size_) {
      auto block_tokens = token_ids.subspan(static_cast<size_t>(start), static_cast<size_t>(block_size_));
      const uint64_t hash = hash_block(t.last_hash, block_tokens);
      const BlockId id = lookup(hash, block_tokens);
      if (id < 0) break;
      add_ref(id);
      t.blocks.push_back(id);
      t.last_hash = hash;
    }
  }
  t.num_hashed_blocks = static_cast<int64_t>(t.blocks.size());
  t.num_queried_tokens = static_cast<int64_t>(token_ids.size());
  t.num_hit_tokens = t.num_hashed_blocks * block_size_;
  ++stats_.num_queries;
  stats_.num_queried_tokens += t.num_queried_tokens;
  stats_.num_hit_tokens += t.num_hit_tokens;
  return t.num_hit_tokens;
}

bool BlockAllocator::reserve(int64_t seq_id, int64_t num_tokens) {
  Table& t = table(seq_id);
  const int64_t needed = blocks_for(num_tokens) - static_cast<int64_t>(t.blocks.size());
  if (needed <= 0) return true;
  if (needed > num_free_blocks()) return false;
  for (int64_t i = 0; i < needed; ++i) t.blocks.push_back(take_block());
  return true;
}

void BlockAllocator::cache_full_blocks(int64_t seq_id, std::span<const int64_t> token_ids,
                                       int64_t num_computed_tokens) {
  if (!enable_prefix_caching_) return;
  Table& t = table(seq_id);
  DSI_CHECK(num_computed_tokens <= static_cast<int64_t>(token_ids.size()) && num_computed_tokens <= num_slots(seq_id),
            "sequence ", seq_id, ": ", num_computed_tokens, " computed tokens, ", token_ids.size(), " known, ",
            num_slots(seq_id), " slots");
  const int64_t num_full = num_computed_tokens / block_size_;
  for (int64_t i = t.num_hashed_blocks; i < num_full; ++i) {
    auto block_tokens = token_ids.subspan(static_cast<size_t>(i * block_size_), static_cast<size_t>(block_size_));
    const uint64_t hash = hash_block(t.last_hash, block_tokens);
    Block& b = blocks_[t.blocks[i]];
    DSI_CHECK(!b.hashed, "block ", t.blocks[i], " of sequence ", seq_id, " hashed twice");
    // When another block already holds this prefix (two sequences computed it at once), keep that one and leave
    // this block private: it goes to the free list when released.
    if (hash_to_block_.try_emplace(hash, t.blocks[i]).second) {
      b.hashed = true;
      b.hash = hash;
      b.token_ids.assign(block_tokens.begin(), block_tokens.end());
    }
    t.last_hash = hash;
  }
  t.num_hashed_blocks = std::max(t.num_hashed_blocks, num_full);
}

void BlockAllocator::free_sequence(int64_t seq_id) {
  auto it = tables_.find(seq_id);
  DSI_CHECK(it != tables_.end(), "free of sequence ", seq_id, " without a block table");
  const std::vector<BlockId>& blocks = it->second.blocks;
  for (auto b = blocks.rbegin(); b != blocks.rend(); ++b) release(*b);
  tables_.erase(it);
}

void BlockAllocator::cancel_sequence(int64_t seq_id) {
  const Table& t = table(seq_id);
  --stats_.num_queries;
  stats_.num_queried_tokens -= t.num_queried_tokens;
  stats_.num_hit_tokens -= t.num_hit_tokens;
  free_sequence(seq_id);
}

void BlockAllocator::check_invariants() const {
  std::vector<int32_t> refs(blocks_.size(), 0);
  for (const auto& [seq_id, t] : tables_) {
    DSI_CHECK(t.num_hashed_blocks <= static_cast<int64_t>(t.blocks.size()), "sequence ", seq_id);
    for (BlockId b : t.blocks) ++refs[static_cast<size_t>(b)];
  }
  std::vector<int> where(blocks_.size(), 0);  // how many of {free list, LRU, referenced} hold the block
  for (BlockId b : free_) {
    ++where[static_cast<size_t>(b)];
    DSI_CHECK(!blocks_[b].hashed && !blocks_[b].evictable, "free block ", b, " is cached");
  }
  for (BlockId b : evictable_) {
    ++where[static_cast<size_t>(b)];
    DSI_CHECK(blocks_[b].hashed && blocks_[b].evictable, "evictable block ", b, " is not cached");
  }
  for (size_t b = 0; b < blocks_.size(); ++b) {
    const Block& blk = blocks_[b];
    DSI_CHECK(blk.ref_count == refs[b], "block ", b, " ref_count ", blk.ref_count, " but ", refs[b], " tables");
    if (blk.ref_count > 0) ++where[b];
    DSI_CHECK(where[b] == 1, "block ", b, " is in ", where[b], " of free list / LRU / in use");
    if (blk.hashed) {
      auto it = hash_to_block_.find(blk.hash);
      DSI_CHECK(it != hash_to_block_.end() && it->second == static_cast<BlockId>(b), "block ", b, " hash index");
      DSI_CHECK(static_cast<int64_t>(blk.token_ids.size()) == block_size_);
    }
  }
  for (const auto& [hash, b] : hash_to_block_) DSI_CHECK(blocks_[b].hashed && blocks_[b].hash == hash);
}

}  // namespace dsi
