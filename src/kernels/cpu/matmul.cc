// cpu backend matmul: argument checks and default strides; the kernels are in matmul_kernels.h (per ISA).
#include "kernels/cpu/cpu_internal.h"

namespace dsi::cpu {

template <CpuIsa I>
void cpu_matmul(const MatmulArgs& args) {
  DSI_CHECK(args.w_dtype == DType::kF32 || args.w_dtype == DType::kBF16, "matmul: unsupported weight dtype ",
            dtype_name(args.w_dtype));
  DSI_CHECK(args.m >= 0 && args.n >= 0 && args.k >= 0, "matmul: negative shape m=", args.m, " n=", args.n,
            " k=", args.k);
  MatmulArgs a = args;
  if (a.x_stride == 0) a.x_stride = a.k;
  if (a.y_stride == 0) a.y_stride = a.n;
  DSI_CHECK(a.x_stride >= a.k && a.y_stride >= a.n, "matmul: strides x=", a.x_stride, " y=", a.y_stride,
            " smaller than k=", a.k, " n=", a.n);
  if (a.m == 0 || a.n == 0) return;
  isa_kernels(I).matmul(a);
}

template void cpu_matmul<CpuIsa::kGeneric>(const MatmulArgs&);
template void cpu_matmul<CpuIsa::kAvx2>(const MatmulArgs&);
template void cpu_matmul<CpuIsa::kAvx512>(const MatmulArgs&);

}  // namespace dsi::cpu
