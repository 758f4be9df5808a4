#include "model/weights.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <random>

namespace dsi {
namespace {

TEST(Weights, Fp8BlockDequantWithPartialBlocks) {
  // 130 x 200 matrix: blocks of 128 leave partial blocks of 2 rows and 72 columns.
  const int64_t out = 130, in = 200;
  std::vector<uint8_t> q(out * in);
  std::mt19937 rng(7);
  for (auto& b : q) b = static_cast<uint8_t>(rng() % 0x7e);
  const float scales[2 * 2] = {0.5f, 2.0f, 4.0f, 0.25f};
  std::vector<float> dst(out * in);
  dequantize_fp8_blocks(q.data(), scales, out, in, 128, 128, dst.data());
  for (int64_t r : {0L, 127L, 128L, 129L}) {
    for (int64_t c : {0L, 127L, 128L, 199L}) {
      float s = scales[(r / 128) * 2 + c / 128];
      EXPECT_EQ(dst[r * in + c], fp8e4m3_to_f32(q[r * in + c]) * s) << r << "," << c;
    }
  }
}

TEST(Weights, ShardRange) {
  auto r = shard_range(12, 2, 4, "w");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->begin, 6);
  EXPECT_EQ(r->size, 3);
  auto bad = shard_range(10, 0, 4, "model.layers.0.mlp.gate_proj.weight");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("gate_proj"), std::string::npos);
}

TEST(Weights, LoadMatrixSlicesAndDequantizes) {
  // A 4x6 bf16 matrix: column shard rank 1 of 2 keeps rows 2..3; row shard keeps columns 3..5.
  Tensor w(DType::kBF16, {4, 6});
  for (int i = 0; i < 24; ++i) w.data<uint16_t>()[i] = f32_to_bf16(static_cast<float>(i));
  Tensor q(DType::kF8E4M3, {4, 6});
  for (int i = 0; i < 24; ++i) q.data<uint8_t>()[i] = f32_to_fp8e4m3(static_cast<float>(i % 8));
  Tensor s(DType::kF32, {1, 1});
  s.data<float>()[0] = 3.0f;
  const std::string path = std::filesystem::temp_directory_path() / "dsi_weights_test.safetensors";
  ASSERT_TRUE(write_safetensors(path, {{"w.weight", w.view()}, {"q.weight", q.view()},
                                       {"q.weight_scale_inv", s.view()}}).ok());
  auto store = TensorStore::open(path);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  QuantConfig quant{.fp8 = true};
  auto col = load_matrix(*store, "w.weight", 4, 6, {ShardKind::kColumn, 1, 2}, quant);
  ASSERT_TRUE(col.ok()) << col.status().to_string();
  EXPECT_EQ(col->dtype(), DType::kBF16);
  EXPECT_EQ(bf16_to_f32(col->data<uint16_t>()[0]), 12.0f);
  auto row = load_matrix(*store, "w.weight", 4, 6, {ShardKind::kRow, 1, 2}, quant);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->dim(1), 3);
  EXPECT_EQ(bf16_to_f32(row->data<uint16_t>()[3]), 9.0f);  // row 1, column 3
  auto deq = load_matrix(*store, "q.weight", 4, 6, {}, quant);
  ASSERT_TRUE(deq.ok()) << deq.status().to_string();
  EXPECT_EQ(deq->dtype(), DType::kF32);
  EXPECT_EQ(deq->data<float>()[13], 15.0f);  // (13 % 8) * 3
  auto wrong = load_matrix(*store, "w.weight", 6, 4, {}, quant);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("w.weight"), std::string::npos);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace dsi
