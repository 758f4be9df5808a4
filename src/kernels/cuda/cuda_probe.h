// The device's measured limits, for roofline ratios in benchmarks: device-to-device copy bandwidth (bytes read +
// written per second, the HBM ceiling for decode) and the cuBLASLt bf16 GEMM rate at 8192^3 (the prefill ceiling).
#pragma once

#include <string>

#include "core/status.h"

namespace dsi::cuda {

struct DeviceLimits {
  std::string name;
  int sms = 0;
  double copy_gbps = 0;
  double bf16_tflops = 0;
};
// Creates and destroys its own context (about 1.5 GB of device memory while it runs).
Result<DeviceLimits> measure_device_limits(int device = 0);

// cudaProfilerStart / cudaProfilerStop (after a device synchronization): brackets what an external profiler run
// with --profile-from-start off (Nsight Compute, Nsight Systems) records.
void profiler_range(bool on);

}  // namespace dsi::cuda
