// The scalar reference backend: plain loops, double accumulation, no threads. Semantics follow Hugging Face
// transformers (see the comments on each op); every other backend is tested against these functions.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "kernels/ref/ref_moe_route.h"

namespace dsi {
namespace {

double load_weight(const void* w, DType dtype, int64_t i) {
  if (dtype == DType::kBF16) return bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
  return static_cast<const float*>(w)[i];
}

void check_weight_dtype(DType dtype, const char* op) {
  DSI_CHECK(dtype == DType::kF32 || dtype == DType::kBF16, "unsupported weight dtype ", dtype_name(dtype), " in ", op);
}

// y = x w^T (+ bias); with accumulate, y += x w^T (+ bias).
void ref_matmul(const MatmulArgs& a) {
  check_weight_dtype(a.w_dtype, "matmul");
  DSI_CHECK(a.m >= 0 && a.n >= 0 && a.k >= 0, "matmul: negative shape");
  const int64_t xs = a.x_stride ? a.x_stride : a.k;
  const int64_t ys = a.y_stride ? a.y_stride : a.n;
  for (int64_t i = 0; i < a.m; ++i) {
    for (int64_t j = 0; j < a.n; ++j) {
      double acc = a.bias ? a.bias[j] : 0.0;
      for (int64_t p = 0; p < a.k; ++p) acc += double{a.x[i * xs + p]} * load_weight(a.w, a.w_dtype, j * a.k + p);
      float& y = a.y[i * ys + j];
      y = static_cast<float>(a.accumulate ? y + acc : acc);
    }
  }
}

// HF LlamaRMSNorm / DeepseekV3RMSNorm: x * rsqrt(mean(x^2) + eps) * w.
void ref_rmsnorm(const RmsNormArgs& a) {
  const int64_t xs = a.x_stride ? a.x_stride : a.d;
  const int64_t ys = a.y_stride ? a.y_stride : a.d;
  for (int64_t i = 0; i < a.m; ++i) {
    const float* x = a.x + i * xs;
    float* y = a.y + i * ys;
    double sum_sq = 0.0;
    for (int64_t p = 0; p < a.d; ++p) sum_sq += double{x[p]} * x[p];
    const double inv_rms = 1.0 / std::sqrt(sum_sq / static_cast<double>(a.d) + a.eps);
    for (int64_t p = 0; p < a.d; ++p) y[p] = static_cast<float>(x[p] * inv_rms * a.w[p]);  // x may alias y
  }
}

// out0 = x0 cos - x1 sin; out1 = x1 cos + x0 sin, where (x0, x1) = (x[i], x[i + rot_dim/2]) for neox and
// (x[2i], x[2i+1]) for interleaved, angle = pos * inv_freq[i] in double, cos and sin scaled by attn_factor.
void ref_rope(const RopeArgs& a) {
  DSI_CHECK(a.rot_dim % 2 == 0, "rope: odd rot_dim ", a.rot_dim);
  const int64_t half = a.rot_dim / 2;
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    for (int64_t h = 0; h < a.num_heads; ++h) {
      float* x = a.x + t * a.token_stride + h * a.head_stride;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(a.positions[t]) * a.inv_freq[i];
        const double c = std::cos(angle) * a.attn_factor;
        const double s = std::sin(angle) * a.attn_factor;
        const int64_t i0 = a.style == RopeStyle::kNeox ? i : 2 * i;
        const int64_t i1 = a.style == RopeStyle::kNeox ? i + half : 2 * i + 1;
        const double x0 = x[i0], x1 = x[i1];
        x[i0] = static_cast<float>(x0 * c - x1 * s);
        x[i1] = static_cast<float>(x1 * c + x0 * s);
      }
    }
  }
}

// Causal attention, two passes over the visible keys with a max-subtracted softmax, all in double.
void ref_attention(const AttentionArgs& a) {
  DSI_CHECK(a.num_kv_heads > 0 && a.num_q_heads % a.num_kv_heads == 0, "attention: ", a.num_q_heads,
            " query heads not a multiple of ", a.num_kv_heads, " kv heads");
  DSI_CHECK(a.num_q <= a.kv_len, "attention: num_q ", a.num_q, " > kv_len ", a.kv_len);
  const int64_t group = a.num_q_heads / a.num_kv_heads;
  std::vector<double> scores(static_cast<size_t>(a.kv_len));
  std::vector<double> acc(static_cast<size_t>(a.v_dim));
  for (int64_t t = 0; t < a.num_q; ++t) {
    const int64_t num_visible = a.kv_len - a.num_q + t + 1;
    for (int64_t h = 0; h < a.num_q_heads; ++h) {
      const int64_t kvh = h / group;
      const float* q = a.q + t * a.q_token_stride + h * a.q_head_stride;
      double max_score = -INFINITY;
      for (int64_t s = 0; s < num_visible; ++s) {
        const float* k = a.k + s * a.k_token_stride + kvh * a.k_head_stride;
        double dot = 0.0;
        for (int64_t p = 0; p < a.head_dim; ++p) dot += double{q[p]} * k[p];
        scores[s] = dot * a.scale;
        max_score = std::max(max_score, scores[s]);
      }
      double denom = 0.0;
      for (int64_t s = 0; s < num_visible; ++s) denom += scores[s] = std::exp(scores[s] - max_score);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t s = 0; s < num_visible; ++s) {
        const float* v = a.v + s * a.v_token_stride + kvh * a.v_head_stride;
        for (int64_t p = 0; p < a.v_dim; ++p) acc[p] += scores[s] * v[p];
      }
      float* out = a.out + t * a.out_token_stride + h * a.out_head_stride;
      for (int64_t p = 0; p < a.v_dim; ++p) out[p] = static_cast<float>(acc[p] / denom);
    }
  }
}

void ref_silu_mul(const SiluMulArgs& a) {
  const int64_t in_stride = a.in_stride ? a.in_stride : a.d;
  for (int64_t i = 0; i < a.m; ++i) {
    for (int64_t p = 0; p < a.d; ++p) {
      const double g = a.gate[i * in_stride + p];
      a.out[i * a.d + p] = static_cast<float>(g / (1.0 + std::exp(-g)) * a.up[i * in_stride + p]);
    }
  }
}

void ref_embedding(const EmbeddingArgs& a) {
  check_weight_dtype(a.table_dtype, "embedding");
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const int64_t id = a.ids[t];
    DSI_CHECK(id >= 0 && id < a.vocab, "embedding: token id ", id, " outside [0, ", a.vocab, ")");
    for (int64_t p = 0; p < a.d; ++p) a.out[t * a.d + p] = static_cast<float>(load_weight(a.table, a.table_dtype, id * a.d + p));
  }
}

}  // namespace

const Ops& ref_ops() {
  static const Ops ops{
      .name = "ref",
      .matmul = ref_matmul,
      .rmsnorm = ref_rmsnorm,
      .rope = ref_rope,
      .attention = ref_attention,
      .silu_mul = ref_silu_mul,
      .moe_route = ref_moe_route,
      .embedding = ref_embedding,
  };
  return ops;
}

}  // namespace dsi
