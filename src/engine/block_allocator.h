// Paged KV cache bookkeeping: fixed-size blocks of `block_size` token slots, a block table per sequence,
// reference counts, and prefix caching. No tensors here: a block id indexes the KvCache's block storage.
//
// Prefix caching: once every slot of a block holds computed KV, the block is registered under
// hash = XXH64(token ids of the block, seed = hash of the previous block) (kRootHash for the first block), so a
// hash names the whole prefix up to the block's end. A new sequence starts from the longest chain of registered
// blocks matching its tokens (begin_sequence), taking a reference on each. A registered block whose reference
// count drops to 0 keeps its KV and its hash and becomes evictable (LRU, oldest first); allocation takes blocks
// from the free list first and then evicts the least recently released evictable block, dropping its hash.
// Only full blocks are ever shared, so there is no copy-on-write: the last, partial block of a sequence is its own.
//
// Thread use: owned by the engine thread (through the Scheduler); not thread-safe.
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

namespace dsi {

using BlockId = int32_t;

struct BlockAllocatorConfig {
  int64_t num_blocks = 0;
  int64_t block_size = 16;  // token slots per block
  bool enable_prefix_caching = true;
};

// Counted per admitted sequence (begin_sequence not followed by cancel_sequence), in tokens, as vLLM counts.
struct PrefixCacheStats {
  int64_t num_queries = 0;         // sequences looked up
  int64_t num_queried_tokens = 0;  // their tokens
  int64_t num_hit_tokens = 0;      // tokens served from the cache
};

class BlockAllocator {
 public:
  static constexpr uint64_t kRootHash = 0x6473696e66657221ull;  // parent "hash" of a sequence's first block

  explicit BlockAllocator(BlockAllocatorConfig config);

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  int64_t capacity_tokens() const { return num_blocks() * block_size_; }
  // Blocks available to allocation: never used or released, plus evictable cached blocks.
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size() + evictable_.size()); }
  int64_t num_evictable_blocks() const { return static_cast<int64_t>(evictable_.size()); }
  int64_t num_used_blocks() const { return num_blocks() - num_free_blocks(); }  // reference count > 0
  // used / total, in [0, 1]: what dsinfer:kv_cache_usage_perc reports.
  double usage() const;
  int64_t num_cached_blocks() const { return static_cast<int64_t>(hash_to_block_.size()); }
  const PrefixCacheStats& prefix_cache_stats() const { return stats_; }
  // Blocks needed to hold `num_tokens` slots.
  int64_t blocks_for(int64_t num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }

  // Starts the block table of `seq_id` with the longest cached prefix of `token_ids`, in whole blocks and at
  // most `max_cached_tokens` tokens, taking a reference on each block. Returns the number of cached tokens
  // (a multiple of block_size). Counts a prefix-cache query. The sequence must not have a table yet.
  int64_t begin_sequence(int64_t seq_id, std::span<const int64_t> token_ids, int64_t max_cached_tokens);
  // Grows the table of `seq_id` to at least `num_tokens` slots. Returns false, changing nothing, when there are
  // not enough free blocks.
  [[nodiscard]] bool reserve(int64_t seq_id, int64_t num_tokens);
  // Makes room for one more token after the `num_slots` the table holds now.
  [[nodiscard]] bool append_slot(int64_t seq_id) { return reserve(seq_id, num_slots(seq_id) + 1); }
  // Registers the full blocks among the first `num_computed_tokens` tokens (whose KV is now written) in the
  // prefix cache. `token_ids` holds at least num_computed_tokens tokens of the sequence.
  void cache_full_blocks(int64_t seq_id, std::span<const int64_t> token_ids, int64_t num_computed_tokens);
  // Drops the table of `seq_id` and its block references (blocks released last-to-first, so a sequence's tail
  // is evicted before its head).
  void free_sequence(int64_t seq_id);
  // free_sequence for a table whose admission failed: also takes back its prefix-cache query from the stats.
  void cancel_sequence(int64_t seq_id);

  bool has_sequence(int64_t seq_id) const { return tables_.count(seq_id) != 0; }
  int64_t num_sequences() const { return static_cast<int64_t>(tables_.size()); }
  std::span<const BlockId> block_table(int64_t seq_id) const { return table(seq_id).blocks; }
  int64_t num_slots(int64_t seq_id) const {
    return static_cast<int64_t>(table(seq_id).blocks.size()) * block_size_;
  }
  int32_t ref_count(BlockId block) const { return blocks_.at(block).ref_count; }
  bool is_cached(BlockId block) const { return blocks_.at(block).hashed; }

  // The chained block hash described above.
  static uint64_t hash_block(uint64_t parent_hash, std::span<const int64_t> token_ids);

  // Aborts (DSI_CHECK) if the books disagree: every block is in exactly one of free list / evictable LRU /
  // referenced, reference counts equal the number of tables holding the block, the hash index matches. O(blocks).
  void check_invariants() const;

 private:
  struct Block {
    int32_t ref_count = 0;
    bool hashed = false;
    bool evictable = false;
    uint64_t hash = 0;
    std::vector<int64_t> token_ids;         // when hashed: checked on lookup, so a hash collision is a miss
    std::list<BlockId>::iterator lru_pos;   // valid while evictable
  };
  struct Table {
    std::vector<BlockId> blocks;
    int64_t num_hashed_blocks = 0;  // leading blocks whose chained hash is computed
    uint64_t last_hash = kRootHash;
    int64_t num_queried_tokens = 0;
    int64_t num_hit_tokens = 0;
  };

  const Table& table(int64_t seq_id) const;
  Table& table(int64_t seq_id);
  // A block with reference count 1: from the free list, else evicted from the LRU.
  BlockId take_block();
  void add_ref(BlockId block);
  void release(BlockId block);
  // The registered block with this hash and these tokens, or -1.
  BlockId lookup(uint64_t hash, std::span<const int64_t> token_ids) const;

  int64_t block_size_;
  bool enable_prefix_caching_;
  std::vector<Block> blocks_;
  std::vector<BlockId> free_;        // a stack; the lowest ids are handed out first
  std::list<BlockId> evictable_;     // front: least recently released
  std::unordered_map<uint64_t, BlockId> hash_to_block_;
  std::unordered_map<int64_t, Table> tables_;
  PrefixCacheStats stats_;
};

}  // namespace dsi
