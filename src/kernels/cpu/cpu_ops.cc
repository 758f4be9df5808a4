// The cpu backend's Ops tables (one per instruction set) and the run-time choice among them.
#include "kernels/cpu/cpu_ops.h"

#include "kernels/cpu/cpu_internal.h"

namespace dsi {
namespace cpu {
namespace {

const IsaKernels* compiled_kernels(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return avx512_kernels();
    case CpuIsa::kAvx2: return avx2_kernels();
    case CpuIsa::kGeneric: return generic_kernels();
  }
  return nullptr;
}

bool cpu_supports(CpuIsa isa) {
#if defined(__x86_64__) || defined(__i386__)
  switch (isa) {
    case CpuIsa::kAvx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    case CpuIsa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuIsa::kGeneric: return true;
  }
  return false;
#else
  return isa == CpuIsa::kGeneric;
#endif
}

template <CpuIsa I>
Ops make_ops() {
  return Ops{
      .name = "cpu",
      .matmul = cpu_matmul<I>,
      .rmsnorm = cpu_rmsnorm,
      .rope = cpu_rope,
      .attention = cpu_attention<I>,
      .silu_mul = cpu_silu_mul,
      .moe_route = cpu_moe_route,
      .embedding = cpu_embedding,
  };
}

}  // namespace

const IsaKernels& isa_kernels(CpuIsa isa) {
  DSI_CHECK(cpu_isa_available(isa), "cpu backend: instruction set ", cpu_isa_name(isa), " not available");
  return *compiled_kernels(isa);
}

}  // namespace cpu

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return "avx512";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kGeneric: return "generic";
  }
  return "?";
}

bool cpu_isa_available(CpuIsa isa) { return cpu::compiled_kernels(isa) != nullptr && cpu::cpu_supports(isa); }

CpuIsa best_cpu_isa() {
  static const CpuIsa best = cpu_isa_available(CpuIsa::kAvx512) ? CpuIsa::kAvx512
                             : cpu_isa_available(CpuIsa::kAvx2) ? CpuIsa::kAvx2
                                                                : CpuIsa::kGeneric;
  return best;
}

const Ops& cpu_ops_for(CpuIsa isa) {
  DSI_CHECK(cpu_isa_available(isa), "cpu backend: instruction set ", cpu_isa_name(isa), " not available");
  static const Ops generic = cpu::make_ops<CpuIsa::kGeneric>();
  static const Ops avx2 = cpu::make_ops<CpuIsa::kAvx2>();
  static const Ops avx512 = cpu::make_ops<CpuIsa::kAvx512>();
  switch (isa) {
    case CpuIsa::kAvx512: return avx512;
    case CpuIsa::kAvx2: return avx2;
    case CpuIsa::kGeneric: break;
  }
  return generic;
}

const Ops& cpu_ops() { return cpu_ops_for(best_cpu_isa()); }

}  // namespace dsi
