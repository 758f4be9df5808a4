#include "core/dtype.h"

#include <array>
#include <cmath>

namespace dsi {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kF8E4M3: return 1;
    case DType::kI8: return 1;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kI8: return "I8";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
  }
  return "?";
}

Result<DType> parse_safetensors_dtype(std::string_view name) {
  static constexpr std::array<DType, 7> kAll = {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3,
                                                DType::kI8,  DType::kI32,  DType::kI64};
  for (DType d : kAll) {
    if (name == dtype_name(d)) return d;
  }
  return Status::Unsupported(str_cat("dtype '", name,
                                     "' is not supported (supported: F32, BF16, F16, F8_E4M3, I8, I32, I64)"));
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

uint16_t f32_to_f16(float f) {
  uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00;
  if (a >= 65520.0f) return sign | 0x7c00;
  if (a < std::ldexp(1.0f, -14)) {  // subnormal: multiples of 2^-24
    auto m = static_cast<uint16_t>(std::nearbyint(a * std::ldexp(1.0f, 24)));
    return sign | m;
  }
  int e;
  float frac = std::frexp(a, &e);  // a = frac * 2^e, frac in [0.5, 1)
  auto m = static_cast<uint32_t>(std::nearbyint((frac * 2.0f - 1.0f) * 1024.0f));
  int exp = e - 1 + 15;
  if (m == 1024) { m = 0; ++exp; }
  if (exp >= 31) return sign | 0x7c00;
  return sign | static_cast<uint16_t>(exp << 10) | static_cast<uint16_t>(m);
}

namespace {
std::array<float, 256> make_fp8_table() {
  std::array<float, 256> t{};
  for (int i = 0; i < 256; ++i) {
    int sign = (i >> 7) & 1, exp = (i >> 3) & 0xf, mant = i & 7;
    float v;
    if (exp == 0xf && mant == 7) {
      v = NAN;
    } else if (exp == 0) {
      v = std::ldexp(static_cast<float>(mant), -9);  // subnormal: mant/8 * 2^-6
    } else {
      v = std::ldexp(static_cast<float>(8 + mant), exp - 10);  // (1 + mant/8) * 2^(exp-7)
    }
    t[i] = sign ? -v : v;
  }
  return t;
}
const std::array<float, 256> kFp8Table = make_fp8_table();
}  // namespace

float fp8e4m3_to_f32(uint8_t v) { return kFp8Table[v]; }

uint8_t f32_to_fp8e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;
  // Search the 127 non-negative finite codes for the nearest (ties to even code).
  int best = 0;
  float best_err = INFINITY;
  for (int c = 0; c <= 0x7e; ++c) {
    float err = std::fabs(kFp8Table[c] - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) {
      best = c;
      best_err = err;
    }
  }
  return sign | static_cast<uint8_t>(best);
}

void convert_to_f32(const void* src, DType dtype, float* dst, size_t n) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::kF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::kF8E4M3: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = kFp8Table[s[i]];
      return;
    }
    default:
      DSI_CHECK(false, "convert_to_f32: not a floating dtype: ", dtype_name(dtype));
  }
}

}  // namespace dsi
