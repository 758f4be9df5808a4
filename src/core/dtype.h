// Element types of weights and activations, and scalar conversions between them.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "core/status.h"

namespace dsi {

enum class DType : uint8_t { kF32, kBF16, kF16, kF8E4M3, kI8, kI32, kI64 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // safetensors spelling: "F32", "BF16", "F8_E4M3", ...
// Parses the safetensors dtype string; an unknown or unsupported one is an error naming it.
Result<DType> parse_safetensors_dtype(std::string_view name);

inline float bf16_to_f32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_f32(uint16_t v);
uint16_t f32_to_f16(float f);
// OCP FP8 E4M3 (the "fn" variant: no infinities, 0x7f/0xff are NaN, max 448).
float fp8e4m3_to_f32(uint8_t v);
uint8_t f32_to_fp8e4m3(float f);  // round to nearest even, saturating to +-448

// Converts n elements of any floating dtype to f32.
void convert_to_f32(const void* src, DType dtype, float* dst, size_t n);

}  // namespace dsi
