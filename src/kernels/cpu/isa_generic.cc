// The generic kernel table: baseline flags, one-lane traits (the compiler may still auto-vectorize). The fallback
// for x86-64 CPUs without AVX2 and for non-x86 builds.
#include "kernels/cpu/isa.h"
#include "kernels/cpu/simd_generic.h"
// (the kernel templates must come after the traits)
#include "kernels/cpu/matmul_kernels.h"
#include "kernels/cpu/attention_kernels.h"

namespace dsi::cpu {

const IsaKernels* generic_kernels() {
  static constexpr IsaKernels kKernels{
      .name = "generic",
      .matmul = matmul_impl<Generic>,
      .attention = attention_impl<Generic>,
  };
  return &kKernels;
}

}  // namespace dsi::cpu
