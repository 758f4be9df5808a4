// The GPU runner where there is no GPU: loading a model with it must fail with a clear message (Unavailable, with
// what to check and the CPU alternative), not crash. With a GPU the golden checks run from scripts/gpu-run.sh
// (the GPU machine has no gtest); this test then says so and skips.
#include <gtest/gtest.h>

#include "model/cuda/cuda_model.h"

namespace dsi {
namespace {

TEST(CudaModel, WithoutADeviceLoadingSaysWhatToDo) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present: the GPU golden checks run in scripts/gpu-run.sh";
  auto model = load_cuda_model(std::string(DSI_SOURCE_DIR) + "/tests/golden/models/llama-tiny", CudaModelOptions{});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kUnavailable) << model.status().to_string();
  EXPECT_NE(model.status().message().find("no CUDA device"), std::string::npos) << model.status().to_string();
  EXPECT_NE(model.status().message().find("--device cpu"), std::string::npos) << model.status().to_string();
}

}  // namespace
}  // namespace dsi
