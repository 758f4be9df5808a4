// Portable "SIMD" traits: one f32 lane, plain C++. The fallback for CPUs without AVX2; also keeps the kernel
// templates honest (they must be correct for any width).
#pragma once

#include <cstdint>
#include <cstring>

namespace dsi::cpu {
namespace {

struct Generic {
  using F = float;
  static constexpr int kWidth = 1;
  static constexpr int kMatmulMr = 4;
  static constexpr int kMatmulNr = 4;
  static constexpr int kAttnHeads = 4;
  static constexpr int kAttnKeys = 2;

  static F zero() { return 0.0f; }
  static F set1(float v) { return v; }
  static F load(const float* p) { return *p; }
  static F load(const uint16_t* p) {
    const uint32_t bits = static_cast<uint32_t>(*p) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  static void store(float* p, F v) { *p = v; }
  static F fma(F a, F b, F c) { return a * b + c; }
  static F mul(F a, F b) { return a * b; }
  static float reduce_add(F v) { return v; }
};

}  // namespace
}  // namespace dsi::cpu
