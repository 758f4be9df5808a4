// cpu backend attention: argument checks; the kernel is in attention_kernels.h (per ISA).
#include "kernels/cpu/cpu_internal.h"

namespace dsi::cpu {

template <CpuIsa I>
void cpu_attention(const AttentionArgs& a) {
  DSI_CHECK(a.num_kv_heads > 0 && a.num_q_heads % a.num_kv_heads == 0, "attention: ", a.num_q_heads,
            " query heads not a multiple of ", a.num_kv_heads, " kv heads");
  DSI_CHECK(a.num_q >= 0 && a.num_q <= a.kv_len, "attention: num_q ", a.num_q, " > kv_len ", a.kv_len);
  DSI_CHECK(a.head_dim >= 0 && a.v_dim >= 0, "attention: negative head_dim ", a.head_dim, " or v_dim ", a.v_dim);
  if (a.num_q == 0 || a.num_q_heads == 0) return;
  isa_kernels(I).attention(a);
}

template void cpu_attention<CpuIsa::kGeneric>(const AttentionArgs&);
template void cpu_attention<CpuIsa::kAvx2>(const AttentionArgs&);
template void cpu_attention<CpuIsa::kAvx512>(const AttentionArgs&);

}  // namespace dsi::cpu
