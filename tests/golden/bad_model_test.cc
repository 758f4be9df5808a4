// Model directories that are wrong in one way each: load_model must fail with a message naming the problem.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <fstream>

#include "model/model.h"
#include "model/random_weights.h"

namespace dsi {
namespace {

namespace fs = std::filesystem;

class BadModel : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dsi_bad_model_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                                        "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    fs::copy_file(fs::path(DSI_SOURCE_DIR) / "tests/golden/models/llama-tiny/config.json", dir_ / "config.json",
                  fs::copy_options::overwrite_existing);
    auto c = load_model_config(dir_.string());
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    config_ = *c;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes model.safetensors with the expected tensors, after `edit` changes the list.
  void write(const std::function<void(std::vector<NamedTensor>&, std::vector<Tensor>&)>& edit) {
    std::vector<Tensor> storage;
    std::vector<NamedTensor> named;
    for (const TensorSpec& s : expected_tensors(config_)) {
      storage.emplace_back(s.dtype, s.shape);
    }
    auto specs = expected_tensors(config_);
    for (size_t i = 0; i < specs.size(); ++i) named.push_back({specs[i].name, storage[i].view()});
    edit(named, storage);
    ASSERT_TRUE(write_safetensors((dir_ / "model.safetensors").string(), named).ok());
  }

  std::string load_error() {
    auto m = load_model(dir_.string());
    EXPECT_FALSE(m.ok());
    return m.ok() ? "" : m.status().to_string();
  }

  fs::path dir_;
  ModelConfig config_;
};

TEST_F(BadModel, GoodDirectoryLoads) {
  write([](auto&, auto&) {});
  auto m = load_model(dir_.string());
  EXPECT_TRUE(m.ok()) << m.status().to_string();
}

TEST_F(BadModel, MissingTensorIsNamed) {
  write([](std::vector<NamedTensor>& named, auto&) {
    std::erase_if(named, [](const NamedTensor& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; });
  });
  EXPECT_NE(load_error().find("model.layers.1.mlp.up_proj.weight"), std::string::npos);
}

TEST_F(BadModel, WrongDtypeIsNamed) {
  write([](std::vector<NamedTensor>& named, std::vector<Tensor>& storage) {
    for (auto& t : named) {
      if (t.name == "model.norm.weight") {
        storage.emplace_back(DType::kI32, t.view.shape);
        t.view = storage.back().view();
      }
    }
  });
  const std::string e = load_error();
  EXPECT_NE(e.find("model.norm.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("I32"), std::string::npos) << e;
}

TEST_F(BadModel, WrongShapeIsNamed) {
  write([](std::vector<NamedTensor>& named, std::vector<Tensor>& storage) {
    for (auto& t : named) {
      if (t.name == "model.layers.0.self_attn.k_proj.weight") {
        storage.emplace_back(DType::kBF16, Shape{32, 128});
        t.view = storage.back().view();
      }
    }
  });
  const std::string e = load_error();
  EXPECT_NE(e.find("model.layers.0.self_attn.k_proj.weight"), std::string::npos) << e;
}

TEST_F(BadModel, UnexpectedTensorIsNamed) {
  write([](std::vector<NamedTensor>& named, std::vector<Tensor>& storage) {
    storage.emplace_back(DType::kBF16, Shape{4});
    named.push_back({"model.layers.0.mlp.extra.weight", storage.back().view()});
  });
  EXPECT_NE(load_error().find("model.layers.0.mlp.extra.weight"), std::string::npos);
}

TEST_F(BadModel, UnknownArchitectureIsNamed) {
  write([](auto&, auto&) {});
  std::ofstream(dir_ / "config.json") << R"({"architectures": ["MambaForCausalLM"], "vocab_size": 10})";
  EXPECT_NE(load_error().find("MambaForCausalLM"), std::string::npos);
}

TEST_F(BadModel, MissingWeightsFile) {
  const std::string e = load_error();
  EXPECT_NE(e.find("safetensors"), std::string::npos) << e;
}

TEST_F(BadModel, TruncatedWeightsFile) {
  write([](auto&, auto&) {});
  fs::resize_file(dir_ / "model.safetensors", fs::file_size(dir_ / "model.safetensors") - 100);
  const std::string e = load_error();
  EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
}

}  // namespace
}  // namespace dsi
