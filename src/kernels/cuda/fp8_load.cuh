// Streaming loads of FP8 e4m3 weights (OCP "fn") and their exact conversion to f32, shared by the kernels that
// read DeepSeek's block-scaled FP8 weights directly (GEMV, MoE experts).
//
// The conversion is a bit trick on the integer pipes (no cvt): code b = s eeee mmm becomes the f16 with bits
// s 0eeee mmm0000000, whose value is exactly b's value / 256 (normal: 2^(e-15) (1 + m/8) = 2^(e-7) (1 + m/8) / 2^8;
// subnormal e = 0: m/8 2^-14 = m/8 2^-6 / 2^8), and every f16 converts to f32 exactly. The factor 256 goes into
// the block scale (kFp8Unscale), which is exact: a power of two. The NaN codes 0x7f / 0xff decode to +-480, not NaN.
#pragma once

#include <cstdint>

namespace dsi::cuda {

// Decoded codes are value / kFp8Unscale: multiply the block scale by it.
constexpr float kFp8Unscale = 256.0f;

// 16 codes through the non-coherent path without allocating in L1 (weights are read once per kernel).
__device__ __forceinline__ uint4 load_stream(const uint8_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// 8 codes, the same way (8-byte aligned p).
__device__ __forceinline__ uint2 load_stream8(const uint8_t* p) {
  uint2 v;
  asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

// Codes in bytes 0 and 2 of q as the bits of two f16 (low half: byte 0), each the code's value / 256.
__host__ __device__ constexpr uint32_t fp8_even_to_f16x2_bits(uint32_t q) {
  return ((q << 8) & 0x80008000u) | ((q << 7) & 0x3f803f80u);
}
// Codes in bytes 1 and 3 of q, the same way (low half: byte 1).
__host__ __device__ constexpr uint32_t fp8_odd_to_f16x2_bits(uint32_t q) {
  return (q & 0x80008000u) | ((q >> 1) & 0x3f803f80u);
}

__device__ __forceinline__ float2 f16x2_bits_to_float2(uint32_t h) {
  float2 f;
  asm("{\n\t.reg .f16 lo, hi;\n\tmov.b32 {lo, hi}, %2;\n\tcvt.f32.f16 %0, lo;\n\tcvt.f32.f16 %1, hi;\n\t}"
      : "=f"(f.x), "=f"(f.y)
      : "r"(h));
  return f;
}

// The four codes of q (byte 0 first) as f32 values / 256.
__device__ __forceinline__ float4 fp8x4_to_float4_div256(uint32_t q) {
  const float2 even = f16x2_bits_to_float2(fp8_even_to_f16x2_bits(q));  // codes 0, 2
  const float2 odd = f16x2_bits_to_float2(fp8_odd_to_f16x2_bits(q));    // codes 1, 3
  return make_float4(even.x, odd.x, even.y, odd.y);
}

// s + dot(w, x).
__device__ __forceinline__ float dot4(float4 w, float4 x, float s) {
  s = fmaf(w.x, x.x, s);
  s = fmaf(w.y, x.y, s);
  s = fmaf(w.z, x.z, s);
  s = fmaf(w.w, x.w, s);
  return s;
}

// Word j (0..3, a compile-time constant after unrolling) of a 16-byte vector.
__device__ __forceinline__ uint32_t word(const uint4& v, int j) {
  return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}
__device__ __forceinline__ uint32_t word(const uint2& v, int j) { return j == 0 ? v.x : v.y; }

}  // namespace dsi::cuda
