// The optimized CPU backend's instruction-set selection. cpu_ops() (kernels/ops.h) runs the best set this CPU
// supports; cpu_ops_for() pins one, so tests can check every compiled variant against kernels/ref.
#pragma once

#include "kernels/ops.h"

namespace dsi {

enum class CpuIsa { kGeneric, kAvx2, kAvx512 };

const char* cpu_isa_name(CpuIsa isa);  // "generic", "avx2", "avx512"
// True when this build has the variant's kernels and this CPU (and OS) can run them.
bool cpu_isa_available(CpuIsa isa);
// kAvx512 (needs avx512f + avx512bw), else kAvx2 (needs avx2 + fma), else kGeneric.
CpuIsa best_cpu_isa();
// The cpu backend with matmul and attention fixed to `isa`, which must be available.
const Ops& cpu_ops_for(CpuIsa isa);

}  // namespace dsi
