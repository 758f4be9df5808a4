#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/tensor.h"

namespace dsi {
namespace {

TEST(DType, Bf16RoundTripAndRounding) {
  for (float f : {0.0f, 1.0f, -2.5f, 3.140625f, 0x1p-100f, -65536.0f}) EXPECT_EQ(bf16_to_f32(f32_to_bf16(f)), f);
  // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even -> 1.
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(DType, Fp8E4M3Table) {
  EXPECT_EQ(fp8e4m3_to_f32(0x00), 0.0f);
  EXPECT_EQ(fp8e4m3_to_f32(0x38), 1.0f);             // exp 7, mant 0
  EXPECT_EQ(fp8e4m3_to_f32(0x7e), 448.0f);           // max finite
  EXPECT_EQ(fp8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // min subnormal
  EXPECT_EQ(fp8e4m3_to_f32(0xb8), -1.0f);
  EXPECT_TRUE(std::isnan(fp8e4m3_to_f32(0x7f)));
  for (int c = 0; c < 0x7f; ++c) EXPECT_EQ(f32_to_fp8e4m3(fp8e4m3_to_f32(static_cast<uint8_t>(c))), c);
  EXPECT_EQ(f32_to_fp8e4m3(1000.0f), 0x7e);  // saturates
}

TEST(DType, F16) {
  for (float f : {0.0f, 1.0f, -2.0f, 0.5f, 65504.0f, std::ldexp(1.0f, -24)}) EXPECT_EQ(f16_to_f32(f32_to_f16(f)), f);
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
}

TEST(DType, ParseNames) {
  EXPECT_EQ(parse_safetensors_dtype("BF16").value(), DType::kBF16);
  EXPECT_EQ(parse_safetensors_dtype("F8_E4M3").value(), DType::kF8E4M3);
  auto bad = parse_safetensors_dtype("F4");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("F4"), std::string::npos);
}

TEST(Tensor, ShapeAndConvert) {
  Tensor t(DType::kBF16, {2, 3});
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 12u);
  t.data<uint16_t>()[4] = f32_to_bf16(2.0f);
  Tensor f = to_f32(t.view());
  EXPECT_EQ(f.data<float>()[4], 2.0f);
  EXPECT_EQ(f.data<float>()[0], 0.0f);
  EXPECT_EQ(shape_str(f.shape()), "[2, 3]");
}

}  // namespace
}  // namespace dsi
