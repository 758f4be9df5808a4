// SIMD traits for AVX-512 (16 f32 lanes). Include only from a file compiled with -mavx512f -mavx512bw -mfma
// (cpu/isa_avx512.cc); everything here is internal to that translation unit.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace dsi::cpu {
namespace {

struct Avx512 {
  using F = __m512;
  static constexpr int kWidth = 16;
  static constexpr int kMatmulMr = 4;   // activation rows per register tile
  static constexpr int kMatmulNr = 4;   // weight rows per register tile
  static constexpr int kAttnHeads = 8;  // query heads sharing one pass over K
  static constexpr int kAttnKeys = 2;   // keys per register tile

  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  // bf16 -> f32 is a 16-bit left shift of the widened bits.
  static F load(const uint16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static float reduce_add(F v) { return _mm512_reduce_add_ps(v); }
};

}  // namespace
}  // namespace dsi::cpu
