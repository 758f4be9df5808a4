// Entry points of the cpu backend's ops (the functions in its Ops tables). Internal to src/kernels/cpu.
#pragma once

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/isa.h"

namespace dsi::cpu {

// The kernel table of an available instruction set (DSI_CHECK otherwise).
const IsaKernels& isa_kernels(CpuIsa isa);

// Validate the arguments, fill in default strides, run the ISA's kernel. Instantiated for every CpuIsa.
template <CpuIsa I>
void cpu_matmul(const MatmulArgs& args);
template <CpuIsa I>
void cpu_attention(const AttentionArgs& args);

void cpu_rmsnorm(const RmsNormArgs& args);
void cpu_rope(const RopeArgs& args);
void cpu_silu_mul(const SiluMulArgs& args);
void cpu_embedding(const EmbeddingArgs& args);
void cpu_moe_route(const MoeRouteArgs& args);

}  // namespace dsi::cpu
