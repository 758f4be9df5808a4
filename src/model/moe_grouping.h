// Grouping a batch's (token, expert slot) pairs by expert, for per-expert matmuls over contiguous rows (the GPU
// runner's large-batch MoE path). Each expert's rows are padded to a power of two up to 64 and to a multiple of
// 64 above, so the matmul shapes, and the GEMM plans keyed by them, repeat from step to step; padding rows point
// at token 0 and their results are never read.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace dsi {

struct ExpertGroups {
  std::vector<int64_t> first;      // [experts + 1]: first row of each expert; rows of e are [first[e], first[e+1])
  std::vector<int32_t> row_token;  // [rows]: the token each row reads (padding rows: 0)
  std::vector<int32_t> pair_row;   // [num_tokens * top_k]: the row of each pair
  int64_t rows = 0;
};

int64_t padded_expert_rows(int64_t n);

// ids: [num_tokens, top_k] expert of each pair; an id outside [0, experts) is an error (a router bug).
Result<ExpertGroups> group_pairs_by_expert(const int32_t* ids, int64_t num_tokens, int64_t top_k, int64_t experts);

}  // namespace dsi
