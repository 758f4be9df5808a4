// Attention kernel template over SIMD traits V (cpu/simd_*.h); internal to the cpu/isa_*.cc file including it,
// like matmul_kernels.h (included first).
//
// One work item = one query token x one kv head x up to V::kAttnHeads query heads of that kv head's group, so a
// pass over K and V serves several heads (all 128 heads of MLA's absorbed decode share one kv head). Per item:
// scores = scale * Q K^T with the matmul dot tile, an exact two-pass softmax (max subtraction, f32), then
// out = P V accumulated four keys at a time into an f32 row per head, divided by the softmax sum at the end.
#pragma once

#include <cstdint>
#include <cstdlib>

#include "kernels/ops.h"

namespace dsi::cpu {
namespace {

// acc[g, :v_dim] += sum over keys s in [s0, s0 + KN) of p[g, s] v[s, :], for KN = 4 or 1.
template <class V, int KN>
inline void accumulate_values(const AttentionArgs& a, const float* v, int64_t s0, int64_t num_heads,
                              const float* p, int64_t p_pitch, float* acc) {
  using F = typename V::F;
  const float* rows[KN];
  for (int s = 0; s < KN; ++s) rows[s] = v + (s0 + s) * a.v_token_stride;
  int64_t c = 0;
  for (; c + V::kWidth <= a.v_dim; c += V::kWidth) {
    F vv[KN];
    for (int s = 0; s < KN; ++s) vv[s] = V::load(rows[s] + c);
    for (int64_t g = 0; g < num_heads; ++g) {
      F sum = V::load(acc + g * a.v_dim + c);
      for (int s = 0; s < KN; ++s) sum = V::fma(V::set1(p[g * p_pitch + s0 + s]), vv[s], sum);
      V::store(acc + g * a.v_dim + c, sum);
    }
  }
  for (; c < a.v_dim; ++c) {
    for (int64_t g = 0; g < num_heads; ++g) {
      for (int s = 0; s < KN; ++s) acc[g * a.v_dim + c] += p[g * p_pitch + s0 + s] * rows[s][c];
    }
  }
}

template <class V>
void attention_impl(const AttentionArgs& a) {
  constexpr int G = V::kAttnHeads;
  constexpr int KN = V::kAttnKeys;
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  const int64_t head_chunks = (group + G - 1) / G;
  const int64_t num_items = a.num_q * a.num_kv_heads * head_chunks;
  const bool parallel = num_items > 1 && a.kv_len * a.head_dim * a.num_q_heads >= 4096;
#pragma omp parallel if (parallel)
  {
    float* scores = static_cast<float*>(std::malloc(sizeof(float) * G * (a.kv_len + 1)));  // [G, kv_len]
    float* acc = static_cast<float*>(std::malloc(sizeof(float) * G * (a.v_dim + 1)));       // [G, v_dim]
    if (scores == nullptr || acc == nullptr) std::abort();
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < num_items; ++item) {
      const int64_t t = item / (a.num_kv_heads * head_chunks);
      const int64_t kvh = item / head_chunks % a.num_kv_heads;
      const int64_t chunk = item % head_chunks;
      const int64_t h0 = kvh * group + chunk * G;
      const int64_t heads = min_i64(G, group - chunk * G);
      const int64_t num_visible = a.kv_len - a.num_q + t + 1;
      const float* q = a.q + t * a.q_token_stride + h0 * a.q_head_stride;
      const float* k = a.k + kvh * a.k_head_stride;
      const float* v = a.v + kvh * a.v_head_stride;

      // scores[g, s] = scale * q[g] . k[s]
      float sums[G * KN];
      for (int64_t s0 = 0; s0 < num_visible; s0 += KN) {
        const int64_t kn = min_i64(KN, num_visible - s0);
        if (kn == KN) {
          dot_tile_rows<V, G, KN, float>(heads, q, a.q_head_stride, k + s0 * a.k_token_stride, a.k_token_stride,
                                         a.head_dim, sums);
        } else {
          for (int64_t j = 0; j < kn; ++j) {
            float one[G];
            dot_tile_rows<V, G, 1, float>(heads, q, a.q_head_stride, k + (s0 + j) * a.k_token_stride,
                                          a.k_token_stride, a.head_dim, one);
            for (int64_t g = 0; g < heads; ++g) sums[g * KN + j] = one[g];
          }
        }
        for (int64_t g = 0; g < heads; ++g)
          for (int64_t j = 0; j < kn; ++j) scores[g * num_visible + s0 + j] = sums[g * KN + j] * a.scale;
      }

      // softmax numerators in place; inv_sum per head
      float inv_sum[G];
      for (int64_t g = 0; g < heads; ++g) {
        float* row = scores + g * num_visible;
        float max_score = row[0];
        for (int64_t s = 1; s < num_visible; ++s) max_score = row[s] > max_score ? row[s] : max_score;
        float sum = 0.0f;
        for (int64_t s = 0; s < num_visible; ++s) sum += row[s] = __builtin_expf(row[s] - max_score);
        inv_sum[g] = 1.0f / sum;
      }

      for (int64_t i = 0; i < heads * a.v_dim; ++i) acc[i] = 0.0f;
      int64_t s0 = 0;
      for (; s0 + 4 <= num_visible; s0 += 4) accumulate_values<V, 4>(a, v, s0, heads, scores, num_visible, acc);
      for (; s0 < num_visible; ++s0) accumulate_values<V, 1>(a, v, s0, heads, scores, num_visible, acc);

      for (int64_t g = 0; g < heads; ++g) {
        float* out = a.out + t * a.out_token_stride + (h0 + g) * a.out_head_stride;
        for (int64_t c = 0; c < a.v_dim; ++c) out[c] = acc[g * a.v_dim + c] * inv_sum[g];
      }
    }
    std::free(scores);
    std::free(acc);
  }
}

}  // namespace
}  // namespace dsi::cpu
