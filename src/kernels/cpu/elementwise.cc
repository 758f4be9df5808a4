// cpu backend row-wise ops: rmsnorm, rope, silu_mul, embedding (OpenMP over rows, loops written for the
// compiler's vectorizer), and moe_route (the reference router: a few hundred scores per token).
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/ref/ref_moe_route.h"

namespace dsi::cpu {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMinElements = 1 << 14;

}  // namespace

void cpu_rmsnorm(const RmsNormArgs& a) {
  const int64_t xs = a.x_stride ? a.x_stride : a.d;
  const int64_t ys = a.y_stride ? a.y_stride : a.d;
#pragma omp parallel for schedule(static) if (a.m > 1 && a.m * a.d >= kParallelMinElements)
  for (int64_t i = 0; i < a.m; ++i) {
    const float* x = a.x + i * xs;
    float* y = a.y + i * ys;
    double sum_sq = 0.0;
#pragma omp simd reduction(+ : sum_sq)
    for (int64_t p = 0; p < a.d; ++p) sum_sq += double{x[p]} * x[p];
    const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(a.d) + a.eps));
    for (int64_t p = 0; p < a.d; ++p) y[p] = x[p] * inv_rms * a.w[p];  // x may alias y: same index only
  }
}

void cpu_rope(const RopeArgs& a) {
  DSI_CHECK(a.rot_dim % 2 == 0, "rope: odd rot_dim ", a.rot_dim);
  const int64_t half = a.rot_dim / 2;
  const bool neox = a.style == RopeStyle::kNeox;
#pragma omp parallel if (a.num_tokens > 1 && a.num_tokens * a.num_heads * a.rot_dim >= kParallelMinElements)
  {
    std::vector<float> cos_sin(static_cast<size_t>(2 * half));  // [cos..., sin...] of this token
#pragma omp for schedule(static)
    for (int64_t t = 0; t < a.num_tokens; ++t) {
      float* c = cos_sin.data();
      float* s = c + half;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(a.positions[t]) * a.inv_freq[i];
        c[i] = static_cast<float>(std::cos(angle) * a.attn_factor);
        s[i] = static_cast<float>(std::sin(angle) * a.attn_factor);
      }
      for (int64_t h = 0; h < a.num_heads; ++h) {
        float* x = a.x + t * a.token_stride + h * a.head_stride;
        if (neox) {
          float* x1 = x + half;
          for (int64_t i = 0; i < half; ++i) {
            const float v0 = x[i], v1 = x1[i];
            x[i] = v0 * c[i] - v1 * s[i];
            x1[i] = v1 * c[i] + v0 * s[i];
          }
        } else {
          for (int64_t i = 0; i < half; ++i) {
            const float v0 = x[2 * i], v1 = x[2 * i + 1];
            x[2 * i] = v0 * c[i] - v1 * s[i];
            x[2 * i + 1] = v1 * c[i] + v0 * s[i];
          }
        }
      }
    }
  }
}

void cpu_silu_mul(const SiluMulArgs& a) {
  const int64_t in_stride = a.in_stride ? a.in_stride : a.d;
#pragma omp parallel for schedule(static) if (a.m > 1 && a.m * a.d >= kParallelMinElements)
  for (int64_t i = 0; i < a.m; ++i) {
    const float* g = a.gate + i * in_stride;
    const float* u = a.up + i * in_stride;
    float* out = a.out + i * a.d;
    for (int64_t p = 0; p < a.d; ++p) out[p] = g[p] / (1.0f + std::exp(-g[p])) * u[p];
  }
}

void cpu_embedding(const EmbeddingArgs& a) {
  DSI_CHECK(a.table_dtype == DType::kF32 || a.table_dtype == DType::kBF16, "embedding: unsupported table dtype ",
            dtype_name(a.table_dtype));
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    DSI_CHECK(a.ids[t] >= 0 && a.ids[t] < a.vocab, "embedding: token id ", a.ids[t], " outside [0, ", a.vocab, ")");
  }
#pragma omp parallel for schedule(static) if (a.num_tokens > 1 && a.num_tokens * a.d >= kParallelMinElements)
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    float* out = a.out + t * a.d;
    if (a.table_dtype == DType::kBF16) {
      const uint16_t* row = static_cast<const uint16_t*>(a.table) + a.ids[t] * a.d;
      for (int64_t p = 0; p < a.d; ++p) out[p] = bf16_to_f32(row[p]);
    } else {
      const float* row = static_cast<const float*>(a.table) + a.ids[t] * a.d;
      for (int64_t p = 0; p < a.d; ++p) out[p] = row[p];
    }
  }
}

void cpu_moe_route(const MoeRouteArgs& args) { ref_moe_route(args); }

}  // namespace dsi::cpu
