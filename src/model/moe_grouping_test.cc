#include "model/moe_grouping.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

namespace dsi {
namespace {

TEST(MoeGrouping, PaddedSizes) {
  EXPECT_EQ(padded_expert_rows(0), 0);
  EXPECT_EQ(padded_expert_rows(1), 1);
  EXPECT_EQ(padded_expert_rows(3), 4);
  EXPECT_EQ(padded_expert_rows(33), 64);
  EXPECT_EQ(padded_expert_rows(64), 64);
  EXPECT_EQ(padded_expert_rows(65), 128);
  EXPECT_EQ(padded_expert_rows(200), 256);
}

TEST(MoeGrouping, EveryPairHasItsOwnRowOfItsExpert) {
  std::mt19937 rng(3);
  const int64_t tokens = 37, top_k = 6, experts = 16;
  std::vector<int32_t> ids(tokens * top_k);
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<int32_t> all(experts);
    for (int32_t e = 0; e < experts; ++e) all[e] = e;
    std::shuffle(all.begin(), all.end(), rng);  // distinct experts per token, as top-k gives
    for (int64_t j = 0; j < top_k; ++j) ids[t * top_k + j] = all[j];
  }
  auto g = group_pairs_by_expert(ids.data(), tokens, top_k, experts);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  std::set<int32_t> used;
  for (int64_t p = 0; p < tokens * top_k; ++p) {
    const int32_t row = g->pair_row[p];
    const int32_t e = ids[p];
    EXPECT_GE(row, g->first[e]);
    EXPECT_LT(row, g->first[e + 1]);
    EXPECT_EQ(g->row_token[row], p / top_k);
    EXPECT_TRUE(used.insert(row).second) << "row " << row << " used twice";
  }
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t n = std::count(ids.begin(), ids.end(), static_cast<int32_t>(e));
    EXPECT_EQ(g->first[e + 1] - g->first[e], padded_expert_rows(n)) << "expert " << e;
  }
  EXPECT_EQ(g->rows, g->first[experts]);
}

TEST(MoeGrouping, RejectsAnExpertOutsideTheRange) {
  const std::vector<int32_t> ids = {0, 3, 1, 1 << 30};
  auto g = group_pairs_by_expert(ids.data(), 2, 2, 4);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("expert 1073741824"), std::string::npos) << g.status().to_string();
}

}  // namespace
}  // namespace dsi
