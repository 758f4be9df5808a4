// The avx2 kernel table: compiled with -mavx2 -mfma (see src/kernels/CMakeLists.txt). Only this file's
// own (internal) functions are built with those flags; it must not instantiate std templates.
#include "kernels/cpu/isa.h"

#if defined(__AVX2__) && defined(__FMA__)
#include "kernels/cpu/simd_avx2.h"
// (the kernel templates must come after the traits)
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/attention_kernels.h"

namespace dsi::cpu {

const IsaKernels* avx2_kernels() {
  static constexpr IsaKernels kKernels{
      .name = "avx2",
      .matmul = matmul_impl<Avx2>,
      .attention = attention_impl<Avx2>,
  };
  return &kKernels;
}

}  // namespace dsi::cpu
#else
namespace dsi::cpu {
const IsaKernels* avx2_kernels() { return nullptr; }
}  // namespace dsi::cpu
#endif
