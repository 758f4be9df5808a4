#include "engine/block_allocator.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <vector>

namespace dsi {
namespace {

std::vector<int64_t> iota_tokens(int64_t n, int64_t first = 100) {
  std::vector<int64_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

std::vector<BlockId> table_of(const BlockAllocator& a, int64_t seq) {
  auto t = a.block_table(seq);
  return {t.begin(), t.end()};
}

// Runs a sequence through the allocator as the scheduler would: begin, reserve all, compute all, keep it.
int64_t compute_sequence(BlockAllocator& a, int64_t seq, const std::vector<int64_t>& tokens) {
  const int64_t cached = a.begin_sequence(seq, tokens, static_cast<int64_t>(tokens.size()) - 1);
  EXPECT_TRUE(a.reserve(seq, static_cast<int64_t>(tokens.size())));
  a.cache_full_blocks(seq, tokens, static_cast<int64_t>(tokens.size()));
  a.check_invariants();
  return cached;
}

TEST(BlockAllocator, AllocateAppendAndFree) {
  BlockAllocator a({.num_blocks = 8, .block_size = 4});
  EXPECT_EQ(a.capacity_tokens(), 32);
  EXPECT_EQ(a.begin_sequence(1, iota_tokens(10), 9), 0);
  ASSERT_TRUE(a.reserve(1, 10));
  EXPECT_EQ(a.block_table(1).size(), 3u);
  EXPECT_EQ(a.num_slots(1), 12);
  EXPECT_EQ(a.num_used_blocks(), 3);
  EXPECT_DOUBLE_EQ(a.usage(), 3.0 / 8.0);
  for (BlockId b : a.block_table(1)) EXPECT_EQ(a.ref_count(b), 1);
  ASSERT_TRUE(a.append_slot(1));  // the 13th slot needs a fourth block
  EXPECT_EQ(a.block_table(1).size(), 4u);
  ASSERT_TRUE(a.reserve(1, 16));  // already covered
  EXPECT_EQ(a.block_table(1).size(), 4u);
  a.check_invariants();

  const auto blocks = table_of(a, 1);
  a.free_sequence(1);
  EXPECT_FALSE(a.has_sequence(1));
  EXPECT_EQ(a.num_used_blocks(), 0);
  EXPECT_EQ(a.usage(), 0.0);
  for (BlockId b : blocks) EXPECT_EQ(a.ref_count(b), 0);
  a.check_invariants();
}

TEST(BlockAllocator, ReserveFailsWithoutChangingAnything) {
  BlockAllocator a({.num_blocks = 4, .block_size = 4});
  a.begin_sequence(1, iota_tokens(8), 7);
  ASSERT_TRUE(a.reserve(1, 8));
  a.begin_sequence(2, iota_tokens(20, 500), 19);
  EXPECT_FALSE(a.reserve(2, 20));  // needs 5 blocks, 2 free
  EXPECT_TRUE(a.block_table(2).empty());
  EXPECT_EQ(a.num_free_blocks(), 2);
  EXPECT_TRUE(a.reserve(2, 8));
  EXPECT_EQ(a.num_free_blocks(), 0);
  EXPECT_FALSE(a.append_slot(2));
  a.check_invariants();
  a.free_sequence(1);
  a.free_sequence(2);
  EXPECT_EQ(a.num_free_blocks(), 4);
}

TEST(BlockAllocator, PrefixHitReturnsTheSameBlocksAndCountsReferences) {
  BlockAllocator a({.num_blocks = 16, .block_size = 4});
  const auto prompt = iota_tokens(12);
  EXPECT_EQ(compute_sequence(a, 1, prompt), 0);
  EXPECT_EQ(a.num_cached_blocks(), 3);

  auto longer = prompt;
  longer.insert(longer.end(), {7, 8, 9});
  EXPECT_EQ(a.begin_sequence(2, longer, 14), 12);
  const auto t1 = table_of(a, 1), t2 = table_of(a, 2);
  ASSERT_EQ(t2.size(), 3u);
  EXPECT_EQ(t2, t1);
  for (BlockId b : t1) EXPECT_EQ(a.ref_count(b), 2);
  ASSERT_TRUE(a.reserve(2, 15));
  EXPECT_EQ(a.block_table(2).size(), 4u);
  EXPECT_EQ(a.ref_count(a.block_table(2)[3]), 1);

  // The limit counts: at most 11 tokens -> two whole blocks.
  EXPECT_EQ(a.begin_sequence(3, prompt, 11), 8);
  EXPECT_EQ(table_of(a, 3), std::vector<BlockId>(t1.begin(), t1.begin() + 2));
  EXPECT_EQ(a.ref_count(t1[0]), 3);
  EXPECT_EQ(a.ref_count(t1[2]), 2);

  const PrefixCacheStats& s = a.prefix_cache_stats();
  EXPECT_EQ(s.num_queries, 3);
  EXPECT_EQ(s.num_queried_tokens, 12 + 15 + 12);
  EXPECT_EQ(s.num_hit_tokens, 12 + 8);
  a.cancel_sequence(3);  // an admission that failed takes back its query
  EXPECT_EQ(s.num_queries, 2);
  EXPECT_EQ(s.num_hit_tokens, 12);
  EXPECT_EQ(a.ref_count(t1[0]), 2);
  a.check_invariants();
  a.free_sequence(1);
  a.free_sequence(2);
  EXPECT_EQ(a.num_used_blocks(), 0);
  a.check_invariants();
}

TEST(BlockAllocator, HashChainsTheWholePrefix) {
  BlockAllocator a({.num_blocks = 16, .block_size = 4});
  const auto base = iota_tokens(8);
  compute_sequence(a, 1, base);
  auto diverge = base;
  diverge[5] = 9999;  // same first block, different second
  EXPECT_EQ(a.begin_sequence(2, diverge, 8), 4);
  auto other_head = base;
  other_head[0] = 9999;  // second block tokens equal, but its prefix differs
  EXPECT_EQ(a.begin_sequence(3, other_head, 8), 0);
  EXPECT_NE(BlockAllocator::hash_block(1, base), BlockAllocator::hash_block(2, base));
  a.free_sequence(1);
  a.free_sequence(2);
  a.free_sequence(3);
  a.check_invariants();
}

TEST(BlockAllocator, ReleasedCachedBlocksStayReusable) {
  BlockAllocator a({.num_blocks = 8, .block_size = 4});
  const auto prompt = iota_tokens(13);
  compute_sequence(a, 1, prompt);
  const auto t1 = table_of(a, 1);
  a.free_sequence(1);
  EXPECT_EQ(a.num_used_blocks(), 0);
  EXPECT_EQ(a.usage(), 0.0);
  EXPECT_EQ(a.num_evictable_blocks(), 3);  // the three full blocks; the partial one went to the free list
  EXPECT_EQ(a.num_free_blocks(), 8);

  EXPECT_EQ(compute_sequence(a, 2, prompt), 12);
  const auto t2 = table_of(a, 2);
  EXPECT_EQ(std::vector<BlockId>(t1.begin(), t1.begin() + 3), std::vector<BlockId>(t2.begin(), t2.begin() + 3));
  EXPECT_EQ(a.num_evictable_blocks(), 0);
  a.free_sequence(2);
  a.check_invariants();
}

TEST(BlockAllocator, EvictsLeastRecentlyReleasedAndTailsFirst) {
  BlockAllocator a({.num_blocks = 4, .block_size = 2});
  const std::vector<int64_t> pa = {1, 2, 3, 4}, pb = {5, 6};
  compute_sequence(a, 1, pa);  // blocks a0 a1
  compute_sequence(a, 2, pb);  // block b0
  const auto ta = table_of(a, 1);
  const BlockId b0 = a.block_table(2)[0];
  a.free_sequence(1);  // LRU: a1, a0 (tail first)
  a.free_sequence(2);  // LRU: a1, a0, b0
  EXPECT_EQ(a.num_evictable_blocks(), 3);

  // One never-used block is left: it goes first, then evictions in LRU order.
  a.begin_sequence(3, {}, 0);
  ASSERT_TRUE(a.reserve(3, 2));
  EXPECT_EQ(a.num_evictable_blocks(), 3);
  ASSERT_TRUE(a.reserve(3, 4));
  EXPECT_FALSE(a.is_cached(ta[1]));
  EXPECT_TRUE(a.is_cached(ta[0]));
  EXPECT_TRUE(a.is_cached(b0));
  EXPECT_EQ(a.block_table(3)[1], ta[1]);
  // Prefix of A now hits only its first block.
  EXPECT_EQ(a.begin_sequence(4, pa, 4), 2);
  a.cancel_sequence(4);  // a0 back to the LRU tail: LRU is b0, a0
  ASSERT_TRUE(a.reserve(3, 6));
  EXPECT_FALSE(a.is_cached(b0));
  EXPECT_TRUE(a.is_cached(ta[0]));
  ASSERT_TRUE(a.reserve(3, 8));
  EXPECT_EQ(a.num_cached_blocks(), 0);
  EXPECT_FALSE(a.reserve(3, 9));
  a.check_invariants();
  a.free_sequence(3);
  EXPECT_EQ(a.num_free_blocks(), 4);
}

TEST(BlockAllocator, SamePrefixComputedTwiceKeepsOneCachedCopy) {
  BlockAllocator a({.num_blocks = 8, .block_size = 4});
  const auto prompt = iota_tokens(8);
  EXPECT_EQ(a.begin_sequence(1, prompt, 7), 0);
  EXPECT_EQ(a.begin_sequence(2, prompt, 7), 0);  // both miss: neither is computed yet
  ASSERT_TRUE(a.reserve(1, 8));
  ASSERT_TRUE(a.reserve(2, 8));
  a.cache_full_blocks(1, prompt, 8);
  a.cache_full_blocks(2, prompt, 8);
  EXPECT_EQ(a.num_cached_blocks(), 2);
  a.check_invariants();
  a.free_sequence(2);
  a.free_sequence(1);
  EXPECT_EQ(a.num_evictable_blocks(), 2);
  a.check_invariants();
}

TEST(BlockAllocator, IncrementalCachingAsChunksComplete) {
  BlockAllocator a({.num_blocks = 8, .block_size = 4});
  const auto prompt = iota_tokens(10);
  a.begin_sequence(1, prompt, 9);
  ASSERT_TRUE(a.reserve(1, 6));
  a.cache_full_blocks(1, prompt, 6);
  EXPECT_EQ(a.num_cached_blocks(), 1);
  ASSERT_TRUE(a.reserve(1, 10));
  a.cache_full_blocks(1, prompt, 10);
  EXPECT_EQ(a.num_cached_blocks(), 2);
  EXPECT_EQ(a.begin_sequence(2, prompt, 9), 8);
  a.free_sequence(1);
  a.free_sequence(2);
  a.check_invariants();
}

TEST(BlockAllocator, PrefixCachingOff) {
  BlockAllocator a({.num_blocks = 8, .block_size = 4, .enable_prefix_caching = false});
  const auto prompt = iota_tokens(12);
  compute_sequence(a, 1, prompt);
  EXPECT_EQ(a.num_cached_blocks(), 0);
  EXPECT_EQ(a.begin_sequence(2, prompt, 11), 0);
  a.free_sequence(1);
  a.free_sequence(2);
  EXPECT_EQ(a.num_evictable_blocks(), 0);
  EXPECT_EQ(a.num_free_blocks(), 8);
}

TEST(BlockAllocator, RandomOperationsKeepTheBooks) {
  BlockAllocator a({.num_blocks = 32, .block_size = 4});
  std::mt19937_64 rng(7);
  std::vector<std::vector<int64_t>> prefixes;
  for (int i = 0; i < 4; ++i) prefixes.push_back(iota_tokens(16, 1000 * i));
  std::vector<int64_t> live;
  for (int64_t step = 0; step < 3000; ++step) {
    if (!live.empty() && rng() % 3 == 0) {
      const size_t k = rng() % live.size();
      a.free_sequence(live[k]);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
    } else {
      auto tokens = prefixes[rng() % prefixes.size()];
      tokens.resize(rng() % 16 + 1);
      for (int64_t extra = static_cast<int64_t>(rng() % 12); extra > 0; --extra) tokens.push_back(rng() % 50);
      const int64_t n = static_cast<int64_t>(tokens.size());
      const int64_t cached = a.begin_sequence(step, tokens, n - 1);
      EXPECT_EQ(cached % 4, 0);
      EXPECT_LT(cached, n);
      if (!a.reserve(step, n)) {
        a.cancel_sequence(step);
      } else {
        a.cache_full_blocks(step, tokens, n);
        live.push_back(step);
      }
    }
    a.check_invariants();
  }
  for (int64_t s : live) a.free_sequence(s);
  EXPECT_EQ(a.num_used_blocks(), 0);
  EXPECT_GT(a.prefix_cache_stats().num_hit_tokens, 0);
  a.check_invariants();
}

}  // namespace
}  // namespace dsi
