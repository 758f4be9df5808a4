#include "model/moe_grouping.h"

namespace dsi {

int64_t padded_expert_rows(int64_t n) {
  if (n <= 0) return 0;
  if (n > 64) return (n + 63) / 64 * 64;
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

Result<ExpertGroups> group_pairs_by_expert(const int32_t* ids, int64_t num_tokens, int64_t top_k, int64_t experts) {
  const int64_t pairs = num_tokens * top_k;
  std::vector<int64_t> count(static_cast<size_t>(experts), 0);
  for (int64_t p = 0; p < pairs; ++p) {
    if (ids[p] < 0 || ids[p] >= experts) {
      return Status::Internal(str_cat("moe: the router chose expert ", ids[p], " of ", experts, " for token ",
                                      p / top_k));
    }
    ++count[static_cast<size_t>(ids[p])];
  }
  ExpertGroups g;
  g.first.assign(static_cast<size_t>(experts) + 1, 0);
  for (int64_t e = 0; e < experts; ++e) g.first[e + 1] = g.first[e] + padded_expert_rows(count[e]);
  g.rows = g.first[experts];
  g.row_token.assign(static_cast<size_t>(g.rows), 0);
  g.pair_row.assign(static_cast<size_t>(pairs), 0);
  std::vector<int64_t> fill(g.first.begin(), g.first.end() - 1);
  for (int64_t p = 0; p < pairs; ++p) {
    const int64_t row = fill[ids[p]]++;
    g.row_token[row] = static_cast<int32_t>(p / top_k);
    g.pair_row[p] = static_cast<int32_t>(row);
  }
  return g;
}

}  // namespace dsi
