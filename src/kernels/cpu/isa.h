// Per-instruction-set kernel tables of the CPU backend. isa_avx512.cc and isa_avx2.cc are compiled with their
// -m flags; isa_generic.cc with the baseline flags. Callers pick a table at run time (see cpu_ops.h), so the binary
// runs on any x86-64 (and any other target, where only the generic table exists).
#pragma once

#include "kernels/ops.h"

namespace dsi::cpu {

// Kernels take validated arguments with every stride filled in (no zero "default" strides).
struct IsaKernels {
  const char* name = "";
  void (*matmul)(const MatmulArgs&) = nullptr;
  void (*attention)(const AttentionArgs&) = nullptr;
};

// Null when this build has no such table (not an x86-64 build, or a compiler without the flags).
const IsaKernels* avx512_kernels();
const IsaKernels* avx2_kernels();
const IsaKernels* generic_kernels();

}  // namespace dsi::cpu
