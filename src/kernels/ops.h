// Backend-neutral op signatures. Each backend (ref/, cpu/, later cuda/) fills an `Ops` table; models call ops only
// through it, so the same model code runs on every backend and tests compare backends op by op.
//
// Conventions: row-major; activations are f32 (the CPU compute dtype); pointers are the backend's memory (host for
// ref and cpu). Strides are in elements. Shapes in comments: [rows, cols].
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace dsi {

// y[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]). w is f32 or bf16 ([out_features, in_features], as in HF).
struct MatmulArgs {
  const float* x = nullptr;  // [m, k], row stride x_stride (default k)
  const void* w = nullptr;   // [n, k]
  DType w_dtype = DType::kF32;
  const float* bias = nullptr;  // [n] or null
  float* y = nullptr;           // [m, n], row stride y_stride (default n)
  int64_t m = 0, n = 0, k = 0;
  int64_t x_stride = 0;  // 0 means k
  int64_t y_stride = 0;  // 0 means n
  bool accumulate = false;  // y += x w^T instead of y = x w^T
};

// y[i, :] = x[i, :] * rsqrt(mean(x[i, :]^2) + eps) * w. x and y may alias.
struct RmsNormArgs {
  const float* x = nullptr;  // [m, d], row stride x_stride (0 means d)
  const float* w = nullptr;  // [d]
  float* y = nullptr;        // [m, d], row stride y_stride (0 means d)
  int64_t m = 0, d = 0;
  int64_t x_stride = 0, y_stride = 0;
  float eps = 1e-6f;
};

enum class RopeStyle {
  kNeox,         // rotate halves: (x[i], x[i + d/2]) with frequency i (Llama, Qwen2)
  kInterleaved,  // rotate pairs: (x[2i], x[2i+1]) with frequency i (DeepSeek MLA)
};

// In place on the first rot_dim elements of each head:
// x[t, h, :rot_dim] rotated by angle positions[t] * inv_freq[i], with cos/sin scaled by attn_factor.
struct RopeArgs {
  float* x = nullptr;
  const int64_t* positions = nullptr;  // [num_tokens]
  int64_t num_tokens = 0, num_heads = 0;
  int64_t token_stride = 0;  // elements between tokens
  int64_t head_stride = 0;   // elements between heads
  int64_t rot_dim = 0;       // even
  const double* inv_freq = nullptr;  // [rot_dim / 2], scaling already applied
  double attn_factor = 1.0;          // YaRN: cos and sin multiplied by it
  RopeStyle style = RopeStyle::kNeox;
};

// Causal softmax attention for one sequence with grouped KV heads.
// Query t sits at position kv_len - num_q + t and sees keys 0 .. kv_len - num_q + t.
// out[t, h, :] = softmax(scale * q[t, h] . k[s, h / (num_q_heads / num_kv_heads)]) v[s, ...]
// MLA's absorbed decode is this op with one kv head whose value is a prefix of the key (v points into k).
struct AttentionArgs {
  const float* q = nullptr;  // [num_q, num_q_heads, head_dim] via strides
  const float* k = nullptr;  // [kv_len, num_kv_heads, head_dim]
  const float* v = nullptr;  // [kv_len, num_kv_heads, v_dim]
  float* out = nullptr;      // [num_q, num_q_heads, v_dim]
  int64_t num_q = 0, kv_len = 0;
  int64_t num_q_heads = 0, num_kv_heads = 0;
  int64_t head_dim = 0, v_dim = 0;
  int64_t q_token_stride = 0, q_head_stride = 0;
  int64_t k_token_stride = 0, k_head_stride = 0;
  int64_t v_token_stride = 0, v_head_stride = 0;
  int64_t out_token_stride = 0, out_head_stride = 0;
  float scale = 1.0f;
};

// out[m, i] = silu(gate[m, i]) * up[m, i]
struct SiluMulArgs {
  const float* gate = nullptr;  // [m, d], row stride in_stride
  const float* up = nullptr;    // [m, d], row stride in_stride
  float* out = nullptr;         // [m, d], row stride d
  int64_t m = 0, d = 0;
  int64_t in_stride = 0;  // 0 means d
};

enum class MoeScoring { kSoftmax, kSigmoid };
enum class MoeTopk {
  kGreedy,              // top-k over all experts
  kGroupLimitedGreedy,  // DeepSeek-V2: group score = max in group; keep topk_group groups
  kNoauxTc,             // DeepSeek-V3: group score = sum of top-2 (biased) in group; keep topk_group groups
};

// Router: scores from gate logits, top-k experts and their weights per token.
struct MoeRouteArgs {
  const float* logits = nullptr;  // [num_tokens, num_experts]
  const float* bias = nullptr;    // [num_experts] e_score_correction_bias (noaux_tc) or null
  int64_t num_tokens = 0, num_experts = 0, top_k = 0;
  int64_t n_group = 1, topk_group = 1;
  MoeScoring scoring = MoeScoring::kSoftmax;
  MoeTopk method = MoeTopk::kGreedy;
  bool norm_topk_prob = false;
  float routed_scaling_factor = 1.0f;
  int32_t* expert_ids = nullptr;  // [num_tokens, top_k]
  float* weights = nullptr;       // [num_tokens, top_k]
};

// out[t, :] = table[ids[t], :] (table f32 or bf16)
struct EmbeddingArgs {
  const void* table = nullptr;  // [vocab, d]
  DType table_dtype = DType::kF32;
  const int64_t* ids = nullptr;  // [num_tokens], each in [0, vocab)
  float* out = nullptr;          // [num_tokens, d]
  int64_t num_tokens = 0, vocab = 0, d = 0;
};

struct Ops {
  const char* name = "";
  void (*matmul)(const MatmulArgs&) = nullptr;
  void (*rmsnorm)(const RmsNormArgs&) = nullptr;
  void (*rope)(const RopeArgs&) = nullptr;
  void (*attention)(const AttentionArgs&) = nullptr;
  void (*silu_mul)(const SiluMulArgs&) = nullptr;
  void (*moe_route)(const MoeRouteArgs&) = nullptr;
  void (*embedding)(const EmbeddingArgs&) = nullptr;
};

// The scalar reference backend (kernels/ref): obviously correct, slow; the ground truth for every other backend.
const Ops& ref_ops();
// The optimized CPU backend (kernels/cpu): threads (OpenMP) and SIMD.
const Ops& cpu_ops();

}  // namespace dsi
