// The avx512 kernel table: compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma (see src/kernels/CMakeLists.txt). Only this file's
// own (internal) functions are built with those flags; it must not instantiate std templates.
#include "kernels/cpu/isa.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__FMA__)
#include "kernels/cpu/simd_avx512.h"
// (the kernel templates must come after the traits)
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/attention_kernels.h"

namespace dsi::cpu {

const IsaKernels* avx512_kernels() {
  static constexpr IsaKernels kKernels{
      .name = "avx512",
      .matmul = matmul_impl<Avx512>,
      .attention = attention_impl<Avx512>,
  };
  return &kKernels;
}

}  // namespace dsi::cpu
#else
namespace dsi::cpu {
const IsaKernels* avx512_kernels() { return nullptr; }
}  // namespace dsi::cpu
#endif
