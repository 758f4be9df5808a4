// Streaming 16-byte weight loads and bf16 unpacking shared by the weight-streaming kernels (GEMV, MoE experts).
#pragma once

#include <cstdint>

namespace dsi::cuda {

// 16 bytes through the non-coherent path without allocating in L1: weights are read once per kernel.
__device__ __forceinline__ uint4 load_stream(const uint16_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// The low and high bf16 of a 32-bit word as f32.
__device__ __forceinline__ float lo_bf16(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float hi_bf16(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }

}  // namespace dsi::cuda
