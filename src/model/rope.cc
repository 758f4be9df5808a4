#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace dsi {

double yarn_get_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

namespace {

// Dimension index at which a frequency completes `num_rotations` over the original context.
double yarn_correction_dim(double num_rotations, int64_t dim, double base, double original_max) {
  return (static_cast<double>(dim) * std::log(original_max / (num_rotations * 2.0 * M_PI))) / (2.0 * std::log(base));
}

void apply_yarn(const RopeScaling& s, int64_t dim, double base, RopeParams* p) {
  const int64_t half = dim / 2;
  double low = std::floor(yarn_correction_dim(s.beta_fast, dim, base, s.original_max_position_embeddings));
  double high = std::ceil(yarn_correction_dim(s.beta_slow, dim, base, s.original_max_position_embeddings));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < half; ++i) {
    double extrapolation = p->inv_freq[i];
    double interpolation = extrapolation / s.factor;
    double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    // ramp 0 -> keep the original (high) frequency, ramp 1 -> interpolate.
    p->inv_freq[i] = interpolation * ramp + extrapolation * (1.0 - ramp);
  }
  if (s.mscale != 0.0 && s.mscale_all_dim != 0.0) {
    p->attn_factor = yarn_get_mscale(s.factor, s.mscale) / yarn_get_mscale(s.factor, s.mscale_all_dim);
  } else {
    p->attn_factor = yarn_get_mscale(s.factor, 1.0);
  }
}

void apply_llama3(const RopeScaling& s, RopeParams* p) {
  const double orig = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelen = orig / s.low_freq_factor;
  const double high_freq_wavelen = orig / s.high_freq_factor;
  for (double& f : p->inv_freq) {
    double wavelen = 2.0 * M_PI / f;
    if (wavelen < high_freq_wavelen) continue;  // high frequency: unchanged
    if (wavelen > low_freq_wavelen) {
      f /= s.factor;  // low frequency: fully interpolated
      continue;
    }
    double smooth = (orig / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    f = (1.0 - smooth) * f / s.factor + smooth * f;
  }
}

}  // namespace

RopeParams make_rope_params(const ModelConfig& config, int64_t rot_dim) {
  RopeParams p;
  const int64_t half = rot_dim / 2;
  p.inv_freq.resize(half);
  // transformers computes base^(2i/dim) in float32 before inverting; the 1e-4 tolerance is far above that gap,
  // so use double throughout.
  for (int64_t i = 0; i < half; ++i) {
    p.inv_freq[i] = 1.0 / std::pow(config.rope_theta, static_cast<double>(2 * i) / static_cast<double>(rot_dim));
  }
  const RopeScaling& s = config.rope_scaling;
  switch (s.type) {
    case RopeScalingType::kNone: break;
    case RopeScalingType::kLinear:
      for (double& f : p.inv_freq) f /= s.factor;
      break;
    case RopeScalingType::kYarn: apply_yarn(s, rot_dim, config.rope_theta, &p); break;
    case RopeScalingType::kLlama3: apply_llama3(s, &p); break;
  }
  return p;
}

double mla_softmax_scale(const ModelConfig& config) {
  double scale = 1.0 / std::sqrt(static_cast<double>(config.qk_head_dim()));
  const RopeScaling& s = config.rope_scaling;
  if (s.type == RopeScalingType::kYarn && s.mscale_all_dim != 0.0) {
    double m = yarn_get_mscale(s.factor, s.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

}  // namespace dsi
