#include "io/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace dsi {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A fresh temporary directory per test, removed afterwards.
class SafeTensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "dsi_io_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  // Writes 8-byte little-endian length + header + data, as a safetensors file.
  std::string write_raw(const std::string& name, const std::string& header, const std::string& data) const {
    std::string p = path(name);
    std::ofstream out(p, std::ios::binary);
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
    out << header << data;
    return p;
  }
  void write_text(const std::string& name, const std::string& text) const {
    std::ofstream(path(name), std::ios::binary) << text;
  }

  std::string dir_;
};

// Error text of a failed result, with a failure if it unexpectedly succeeded.
template <class T>
std::string error_of(const Result<T>& r) {
  EXPECT_FALSE(r.ok());
  return r.ok() ? std::string() : r.status().message();
}

Tensor arange_f32(Shape shape) {
  Tensor t(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i) * 0.5f;
  return t;
}

TEST_F(SafeTensorsTest, RoundTripSingleFile) {
  Tensor a = arange_f32({2, 3});
  Tensor b(DType::kBF16, {4});
  for (int i = 0; i < 4; ++i) b.data<uint16_t>()[i] = f32_to_bf16(static_cast<float>(i) - 1.5f);
  Tensor c(DType::kI64, {3});
  for (int i = 0; i < 3; ++i) c.data<int64_t>()[i] = int64_t{1} << (20 * i);
  Tensor empty(DType::kF8E4M3, {0, 5});
  std::string file = path("model.safetensors");
  ASSERT_TRUE(write_safetensors(file, {{"w.a", a.view()}, {"w.b", b.view()}, {"w.empty", empty.view()},
                                       {"w.c", c.view()}},
                                {{"format", "pt"}})
                  .ok());

  // The header is padded so that the data section starts 8-byte aligned.
  std::ifstream in(file, std::ios::binary);
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len[i];
  EXPECT_EQ(header_len % 8, 0u);

  auto f = SafeTensorsFile::open(file);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  ASSERT_EQ((*f)->tensors().size(), 4u);
  // tensors() is in file order.
  EXPECT_EQ((*f)->tensors()[0].name, "w.a");
  EXPECT_EQ((*f)->tensors().back().name, "w.c");
  const TensorInfo* info = (*f)->find("w.b");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->dtype, DType::kBF16);
  EXPECT_EQ(info->shape, (Shape{4}));
  EXPECT_EQ(info->end - info->begin, 8u);
  EXPECT_EQ(info->file, file);
  EXPECT_EQ((*f)->find("nope"), nullptr);

  // The directory and the file itself open the same way.
  for (const std::string& p : {dir_, file}) {
    auto store = TensorStore::open(p);
    ASSERT_TRUE(store.ok()) << store.status().to_string();
    EXPECT_EQ(store->size(), 4u);
    EXPECT_EQ(store->names(), (std::vector<std::string>{"w.a", "w.b", "w.c", "w.empty"}));
    auto va = store->get("w.a", {2, 3}, {DType::kF32});
    ASSERT_TRUE(va.ok()) << va.status().to_string();
    EXPECT_EQ(std::memcmp(va->data, a.raw(), a.nbytes()), 0);
    auto vb = store->get("w.b");
    ASSERT_TRUE(vb.ok());
    EXPECT_EQ(bf16_to_f32(vb->as<uint16_t>()[3]), 1.5f);
    auto vc = store->get("w.c", {3}, {DType::kI32, DType::kI64});
    ASSERT_TRUE(vc.ok());
    EXPECT_EQ(vc->as<int64_t>()[2], int64_t{1} << 40);
    EXPECT_EQ(store->unused(), (std::vector<std::string>{"w.empty"}));
    auto ie = store->info("w.empty");
    ASSERT_TRUE(ie.ok());
    EXPECT_EQ((*ie)->shape, (Shape{0, 5}));
    EXPECT_TRUE(store->unused().empty());
    EXPECT_TRUE(store->contains("w.a"));
    EXPECT_FALSE(store->contains("w.z"));
  }
}

TEST_F(SafeTensorsTest, WriteRejectsDuplicateNames) {
  Tensor a = arange_f32({2});
  Status s = write_safetensors(path("x.safetensors"), {{"t", a.view()}, {"t", a.view()}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'t'"));
}

TEST_F(SafeTensorsTest, ShardedIndex) {
  Tensor a = arange_f32({2, 2}), b = arange_f32({3}), c = arange_f32({1, 4});
  ASSERT_TRUE(write_safetensors(path("model-00001-of-00002.safetensors"), {{"a", a.view()}, {"b", b.view()}}).ok());
  ASSERT_TRUE(write_safetensors(path("model-00002-of-00002.safetensors"), {{"c", c.view()}}).ok());
  write_text("model.safetensors.index.json", R"({"metadata": {"total_size": 36}, "weight_map": {
      "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors"}})");
  auto store = TensorStore::open(dir_);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  EXPECT_EQ(store->size(), 3u);
  auto vc = store->get("c", {1, 4}, {DType::kF32});
  ASSERT_TRUE(vc.ok()) << vc.status().to_string();
  EXPECT_EQ(vc->as<float>()[3], 1.5f);
  EXPECT_THAT(store->find("c")->file, HasSubstr("model-00002-of-00002.safetensors"));
  EXPECT_EQ(store->unused(), (std::vector<std::string>{"a", "b"}));
}

TEST_F(SafeTensorsTest, IndexNamingMissingShard) {
  Tensor a = arange_f32({2});
  ASSERT_TRUE(write_safetensors(path("s1.safetensors"), {{"a", a.view()}}).ok());
  write_text("model.safetensors.index.json", R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  auto store = TensorStore::open(dir_);
  std::string msg = error_of(store);
  EXPECT_EQ(store.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(msg, HasSubstr("s2.safetensors"));
  EXPECT_THAT(msg, HasSubstr("'b'"));
  EXPECT_THAT(msg, HasSubstr("model.safetensors.index.json"));
}

TEST_F(SafeTensorsTest, IndexTensorAbsentFromShard) {
  Tensor a = arange_f32({2});
  ASSERT_TRUE(write_safetensors(path("s1.safetensors"), {{"a", a.view()}}).ok());
  write_text("model.safetensors.index.json", R"({"weight_map": {"a": "s1.safetensors", "ghost": "s1.safetensors"}})");
  std::string msg = error_of(TensorStore::open(dir_));
  EXPECT_THAT(msg, HasSubstr("'ghost'"));
  EXPECT_THAT(msg, HasSubstr("s1.safetensors"));
  EXPECT_THAT(msg, HasSubstr("does not contain"));
}

TEST_F(SafeTensorsTest, ShardTensorNotInIndexOrMappedElsewhere) {
  Tensor a = arange_f32({2});
  ASSERT_TRUE(write_safetensors(path("s1.safetensors"), {{"a", a.view()}, {"extra", a.view()}}).ok());
  write_text("model.safetensors.index.json", R"({"weight_map": {"a": "s1.safetensors"}})");
  std::string msg = error_of(TensorStore::open(dir_));
  EXPECT_THAT(msg, HasSubstr("'extra'"));
  EXPECT_THAT(msg, HasSubstr("not listed"));

  ASSERT_TRUE(write_safetensors(path("s2.safetensors"), {{"extra", a.view()}}).ok());
  write_text("model.safetensors.index.json", R"({"weight_map": {"a": "s1.safetensors", "extra": "s2.safetensors"}})");
  msg = error_of(TensorStore::open(dir_));
  EXPECT_THAT(msg, HasSubstr("'extra'"));
  EXPECT_THAT(msg, HasSubstr("s1.safetensors"));
  EXPECT_THAT(msg, HasSubstr("s2.safetensors"));
}

TEST_F(SafeTensorsTest, CorruptIndexJson) {
  write_text("model.safetensors.index.json", "{\"weight_map\": ");
  std::string msg = error_of(TensorStore::open(dir_));
  EXPECT_THAT(msg, HasSubstr("model.safetensors.index.json"));
}

TEST_F(SafeTensorsTest, DirectoryWithoutWeights) {
  std::string msg = error_of(TensorStore::open(dir_));
  EXPECT_THAT(msg, HasSubstr(dir_));
  EXPECT_THAT(msg, HasSubstr("model.safetensors"));
  msg = error_of(TensorStore::open(path("missing")));
  EXPECT_THAT(msg, HasSubstr("missing"));
}

TEST_F(SafeTensorsTest, SeveralFilesWithoutIndex) {
  Tensor a = arange_f32({2});
  ASSERT_TRUE(write_safetensors(path("x.safetensors"), {{"a", a.view()}}).ok());
  auto one = TensorStore::open(dir_);  // a single file of any name is accepted
  ASSERT_TRUE(one.ok()) << one.status().to_string();
  EXPECT_TRUE(one->contains("a"));
  ASSERT_TRUE(write_safetensors(path("y.safetensors"), {{"b", a.view()}}).ok());
  std::string msg = error_of(TensorStore::open(dir_));
  EXPECT_THAT(msg, HasSubstr("x.safetensors"));
  EXPECT_THAT(msg, HasSubstr("y.safetensors"));
  EXPECT_THAT(msg, HasSubstr("index"));
}

TEST_F(SafeTensorsTest, TruncatedFile) {
  write_text("short.safetensors", "abc");
  auto f = SafeTensorsFile::open(path("short.safetensors"));
  std::string msg = error_of(f);
  EXPECT_EQ(f.status().code(), StatusCode::kCorrupt);
  EXPECT_THAT(msg, HasSubstr("short.safetensors"));
  EXPECT_THAT(msg, HasSubstr("truncated"));
  EXPECT_THAT(msg, HasSubstr("re-download"));
}

TEST_F(SafeTensorsTest, TruncatedData) {
  Tensor a = arange_f32({16});
  std::string file = path("cut.safetensors");
  ASSERT_TRUE(write_safetensors(file, {{"big", a.view()}}).ok());
  fs::resize_file(file, fs::file_size(file) - 10);
  std::string msg = error_of(SafeTensorsFile::open(file));
  EXPECT_THAT(msg, HasSubstr("cut.safetensors"));
  EXPECT_THAT(msg, HasSubstr("'big'"));
  EXPECT_THAT(msg, HasSubstr("truncated"));
}

TEST_F(SafeTensorsTest, HeaderLengthBeyondFile) {
  std::string p = path("long.safetensors");
  {
    std::ofstream out(p, std::ios::binary);
    uint64_t n = 1000;
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
    out << "{}";
  }
  std::string msg = error_of(SafeTensorsFile::open(p));
  EXPECT_THAT(msg, HasSubstr("long.safetensors"));
  EXPECT_THAT(msg, HasSubstr("header length 1000"));
  EXPECT_THAT(msg, HasSubstr("10 bytes"));
}

TEST_F(SafeTensorsTest, CorruptHeaderJson) {
  std::string p = write_raw("bad.safetensors", "{\"a\": {\"dtype\": ", "");
  auto f = SafeTensorsFile::open(p);
  std::string msg = error_of(f);
  EXPECT_EQ(f.status().code(), StatusCode::kCorrupt);
  EXPECT_THAT(msg, HasSubstr("bad.safetensors"));
  EXPECT_THAT(msg, HasSubstr("not valid JSON"));
}

TEST_F(SafeTensorsTest, HeaderNotAnObject) {
  std::string msg = error_of(parse_safetensors_header("[1, 2]", 0, "f.safetensors", nullptr));
  EXPECT_THAT(msg, HasSubstr("f.safetensors"));
  EXPECT_THAT(msg, HasSubstr("array"));
}

TEST_F(SafeTensorsTest, MetadataMustBeStrings) {
  std::string msg = error_of(parse_safetensors_header(R"({"__metadata__": {"n": 3}})", 0, "f.safetensors", nullptr));
  EXPECT_THAT(msg, HasSubstr("__metadata__"));
  EXPECT_THAT(msg, HasSubstr("'n'"));
}

TEST_F(SafeTensorsTest, OverlappingOffsets) {
  std::string header = R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                           "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})";
  std::string p = write_raw("ov.safetensors", header, std::string(12, '\0'));
  std::string msg = error_of(SafeTensorsFile::open(p));
  EXPECT_THAT(msg, HasSubstr("ov.safetensors"));
  EXPECT_THAT(msg, HasSubstr("'x'"));
  EXPECT_THAT(msg, HasSubstr("'y'"));
  EXPECT_THAT(msg, HasSubstr("overlaps"));
}

TEST_F(SafeTensorsTest, EmptyTensorsDoNotOverlap) {
  std::string header = R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                           "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})";
  auto r = parse_safetensors_header(header, 8, "f", nullptr);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->size(), 2u);
}

TEST_F(SafeTensorsTest, OutOfRangeOffsets) {
  std::string header = R"({"x": {"dtype": "BF16", "shape": [4], "data_offsets": [8, 16]}})";
  std::string msg = error_of(parse_safetensors_header(header, 12, "oor.safetensors", nullptr));
  EXPECT_THAT(msg, HasSubstr("oor.safetensors"));
  EXPECT_THAT(msg, HasSubstr("'x'"));
  EXPECT_THAT(msg, HasSubstr("[8, 16]"));
  EXPECT_THAT(msg, HasSubstr("12 bytes"));

  header = R"({"x": {"dtype": "BF16", "shape": [0], "data_offsets": [8, 4]}})";
  msg = error_of(parse_safetensors_header(header, 12, "oor.safetensors", nullptr));
  EXPECT_THAT(msg, HasSubstr("'x'"));
  header = R"({"x": {"dtype": "BF16", "shape": [2], "data_offsets": [-4, 0]}})";
  msg = error_of(parse_safetensors_header(header, 12, "oor.safetensors", nullptr));
  EXPECT_THAT(msg, HasSubstr("data_offsets"));
}

TEST_F(SafeTensorsTest, ByteSizeMismatch) {
  std::string header = R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 12]}})";
  std::string msg = error_of(parse_safetensors_header(header, 64, "m.safetensors", nullptr));
  EXPECT_THAT(msg, HasSubstr("m.safetensors"));
  EXPECT_THAT(msg, HasSubstr("'w'"));
  EXPECT_THAT(msg, HasSubstr("12 bytes"));
  EXPECT_THAT(msg, HasSubstr("needs 24 bytes"));
}

TEST_F(SafeTensorsTest, ShapeOverflowAndBadDims) {
  std::string header =
      R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})";
  std::string msg = error_of(parse_safetensors_header(header, 64, "m.safetensors", nullptr));
  EXPECT_THAT(msg, HasSubstr("'w'"));
  EXPECT_THAT(msg, HasSubstr("64 bits"));
  header = R"({"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}})";
  msg = error_of(parse_safetensors_header(header, 64, "m.safetensors", nullptr));
  EXPECT_THAT(msg, HasSubstr("'w'"));
  EXPECT_THAT(msg, HasSubstr("non-negative"));
  header = R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})";
  EXPECT_FALSE(parse_safetensors_header(header, 64, "m.safetensors", nullptr).ok());
  header = R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})";
  msg = error_of(parse_safetensors_header(header, 64, "m.safetensors", nullptr));
  EXPECT_THAT(msg, HasSubstr("'shape'"));
}

// Regression (found by fuzzing): describing a deeply nested value in the error message overflowed the stack.
TEST_F(SafeTensorsTest, DeeplyNestedShape) {
  const int depth = 100000;
  std::string header = R"({"w": {"dtype": "F32", "shape": )" + std::string(depth, '[') + std::string(depth, ']') +
                       R"(, "data_offsets": [0, 0]}})";
  std::string msg = error_of(parse_safetensors_header(header, 0, "deep.safetensors", nullptr));
  EXPECT_THAT(msg, HasSubstr("'w'"));
  EXPECT_LT(msg.size(), 400u);
}

TEST_F(SafeTensorsTest, UnknownDtype) {
  std::string header = R"({"q": {"dtype": "Q4_K", "shape": [2], "data_offsets": [0, 2]}})";
  auto r = parse_safetensors_header(header, 64, "u.safetensors", nullptr);
  std::string msg = error_of(r);
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(msg, HasSubstr("u.safetensors"));
  EXPECT_THAT(msg, HasSubstr("'q'"));
  EXPECT_THAT(msg, HasSubstr("Q4_K"));
}

TEST_F(SafeTensorsTest, GetChecksPresenceDtypeAndShape) {
  Tensor a = arange_f32({2, 3});
  std::string file = path("model.safetensors");
  ASSERT_TRUE(write_safetensors(file, {{"layers.0.w", a.view()}}).ok());
  auto store = TensorStore::open(dir_);
  ASSERT_TRUE(store.ok());

  auto missing = store->get("layers.0.v");
  std::string msg = error_of(missing);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(msg, HasSubstr("'layers.0.v'"));
  EXPECT_THAT(msg, HasSubstr(dir_));

  msg = error_of(store->get("layers.0.w", {}, {DType::kBF16, DType::kF8E4M3}));
  EXPECT_THAT(msg, HasSubstr(file));
  EXPECT_THAT(msg, HasSubstr("'layers.0.w'"));
  EXPECT_THAT(msg, HasSubstr("dtype F32"));
  EXPECT_THAT(msg, HasSubstr("BF16, F8_E4M3"));

  msg = error_of(store->get("layers.0.w", {3, 2}));
  EXPECT_THAT(msg, HasSubstr(file));
  EXPECT_THAT(msg, HasSubstr("'layers.0.w'"));
  EXPECT_THAT(msg, HasSubstr("shape [2, 3]"));
  EXPECT_THAT(msg, HasSubstr("expected [3, 2]"));
}

}  // namespace
}  // namespace dsi
