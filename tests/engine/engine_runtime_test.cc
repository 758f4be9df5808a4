// The engine loop with a real model (the demo model: DeepSeek-V3 structure, random weights, the real DeepSeek-V3
// tokenizer): continuous batching gives the same greedy tokens as a request alone, prefix-cache hits give the
// same tokens as misses, preemption loses nothing, aborts free every block, validation errors are clear.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <thread>

#include "engine/engine.h"
#include "model/demo_model.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace dsi {
namespace {

namespace fs = std::filesystem;

const std::string& demo_dir() {
  static const std::string dir = [] {
    std::string d = (fs::temp_directory_path() / ("dsi_engine_demo_" + std::to_string(getpid()))).string();
    Status s = write_demo_model(d, std::string(DSI_SOURCE_DIR) + "/tests/tokenizer/fixtures/deepseek-v3");
    EXPECT_TRUE(s.ok()) << s.to_string();
    return d;
  }();
  return dir;
}

std::unique_ptr<Model> demo_model() {
  auto model = load_model(demo_dir());
  EXPECT_TRUE(model.ok()) << model.status().to_string();
  return std::move(model).value();
}

std::unique_ptr<Engine> make_engine(EngineConfig config, std::unique_ptr<Model> model = demo_model()) {
  auto tok = tok::Tokenizer::load_dir(demo_dir());
  EXPECT_TRUE(tok.ok()) << tok.status().to_string();
  auto engine = Engine::create(config, std::move(model), std::move(tok).value());
  EXPECT_TRUE(engine.ok()) << engine.status().to_string();
  return std::move(engine).value();
}

// The demo model posing as a runner that samples on the device, through Model's default forward_sampled (host
// sampling of forward's logits): the engine's device-sampling path without a GPU.
class DeviceSamplingModel final : public Model {
 public:
  struct Counts {
    std::atomic<int> forward{0}, sampled{0};  // sampled: forward_sampled calls (each also runs forward once)
  };
  DeviceSamplingModel(std::unique_ptr<Model> inner, std::shared_ptr<Counts> counts)
      : inner_(std::move(inner)), counts_(std::move(counts)) {}
  const ModelConfig& config() const override { return inner_->config(); }
  KvLayout kv_layout() const override { return inner_->kv_layout(); }
  Result<Tensor> forward(const ForwardBatch& batch, KvCache& cache) override {
    ++counts_->forward;
    return inner_->forward(batch, cache);
  }
  Result<std::vector<int64_t>> forward_sampled(const ForwardBatch& batch, KvCache& cache,
                                               std::span<const RowSampling> rows) override {
    ++counts_->sampled;
    return Model::forward_sampled(batch, cache, rows);
  }
  bool samples_on_device() const override { return true; }
  void set_mla_mode(MlaMode mode) override { inner_->set_mla_mode(mode); }

 private:
  std::unique_ptr<Model> inner_;
  std::shared_ptr<Counts> counts_;
};

struct Output {
  std::vector<int32_t> ids;
  std::string text;
  std::string finish_reason;
  int64_t cached_tokens = 0;
};

Output collect(RequestHandle& h) {
  Output out;
  GenerationDelta d;
  while (h.next(&d, std::chrono::seconds(60))) {
    out.ids.insert(out.ids.end(), d.token_ids.begin(), d.token_ids.end());
    out.text += d.text;
    out.cached_tokens = std::max(out.cached_tokens, d.cached_tokens);
    if (d.finished) {
      out.finish_reason = d.finish_reason;
      break;
    }
  }
  return out;
}

GenerationRequest greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
  GenerationRequest r;
  r.prompt_ids = std::move(prompt);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

std::vector<int32_t> random_prompt(std::mt19937& rng, int n) {
  std::uniform_int_distribution<int32_t> d(100, 120000);
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (auto& x : p) x = d(rng);
  return p;
}

TEST(EngineRuntime, BatchedGreedyEqualsAlone) {
  auto engine = make_engine({.kv_cache_gb = 0.05, .max_num_batched_tokens = 256});
  std::mt19937 rng(1);
  const std::vector<int32_t> prompt = random_prompt(rng, 40);
  Output alone = collect(**engine->submit(greedy(prompt, 24)));
  ASSERT_EQ(alone.ids.size(), 24u);
  EXPECT_EQ(alone.finish_reason, "length");

  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (int i = 0; i < 32; ++i) {
    if (i == 13) {
      handles.push_back(*engine->submit(greedy(prompt, 24)));
      continue;
    }
    GenerationRequest r = greedy(random_prompt(rng, 5 + i * 7), 8 + i % 20);
    if (i % 3 == 0) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_p = 0.9f;
      r.seed = i;
    }
    handles.push_back(*engine->submit(r));
  }
  for (int i = 0; i < 32; ++i) {
    Output o = collect(*handles[i]);
    if (i == 13) {
      EXPECT_EQ(o.ids, alone.ids);
      EXPECT_EQ(o.text, alone.text);
    } else {
      EXPECT_EQ(static_cast<int>(o.ids.size()), 8 + i % 20) << i;
    }
  }
  EXPECT_EQ(engine->stats().kv_cache_usage, 0.0);
}

TEST(EngineRuntime, PrefixCacheHitEqualsMiss) {
  auto engine = make_engine({.kv_cache_gb = 0.05});
  std::mt19937 rng(2);
  const std::vector<int32_t> prompt = random_prompt(rng, 100);
  Output miss = collect(**engine->submit(greedy(prompt, 12)));
  Output hit = collect(**engine->submit(greedy(prompt, 12)));
  EXPECT_EQ(miss.cached_tokens, 0);
  EXPECT_GE(hit.cached_tokens, 80);
  EXPECT_EQ(hit.ids, miss.ids);
  EngineStats s = engine->stats();
  EXPECT_GE(s.prefix_cache_hits, 80u);
  EXPECT_EQ(s.kv_cache_usage, 0.0);
}

TEST(EngineRuntime, SeededSamplingReproducible) {
  auto engine = make_engine({.kv_cache_gb = 0.05});
  std::mt19937 rng(3);
  GenerationRequest r = greedy(random_prompt(rng, 10), 16);
  r.sampling.temperature = 1.0f;
  r.seed = 1234;
  Output a = collect(**engine->submit(r));
  Output b = collect(**engine->submit(r));
  EXPECT_EQ(a.ids, b.ids);
  r.seed = 99;
  Output c = collect(**engine->submit(r));
  EXPECT_NE(a.ids, c.ids);
}

// Seeded sampling gives the same tokens whether the runner samples (the device path) or the engine does; requests
// with penalties or logprobs take the host path in either engine.
TEST(EngineRuntime, DeviceSamplingPathEqualsHostPath) {
  auto counts = std::make_shared<DeviceSamplingModel::Counts>();
  auto host = make_engine({.kv_cache_gb = 0.05});
  auto device = make_engine({.kv_cache_gb = 0.05}, std::make_unique<DeviceSamplingModel>(demo_model(), counts));
  std::mt19937 rng(6);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 6; ++i) {
    GenerationRequest r = greedy(random_prompt(rng, 8 + 5 * i), 12);
    r.seed = 100 + i;
    if (i >= 1) r.sampling.temperature = 0.6f + 0.2f * static_cast<float>(i);
    if (i == 2) r.sampling.top_p = 0.9f, r.sampling.top_k = 40;
    if (i == 3) r.sampling.min_p = 0.05f;
    requests.push_back(r);
  }
  for (const GenerationRequest& r : requests) {
    EXPECT_EQ(collect(**device->submit(r)).ids, collect(**host->submit(r)).ids);
  }
  EXPECT_GT(counts->sampled.load(), 0);
  EXPECT_EQ(counts->forward.load(), counts->sampled.load());  // every step sampled on the "device"
  // Batched together (one forward_sampled for several sequences), the tokens are still those of each alone.
  std::vector<std::shared_ptr<RequestHandle>> hs;
  for (const GenerationRequest& r : requests) hs.push_back(*device->submit(r));
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(collect(*hs[i]).ids, collect(**host->submit(requests[i])).ids) << i;
  }
  GenerationRequest penalized = requests[1];
  penalized.sampling.presence_penalty = 0.5f;
  GenerationRequest logprobs = requests[1];
  logprobs.top_logprobs = 2;
  const int before = counts->forward.load() - counts->sampled.load();
  EXPECT_EQ(collect(**device->submit(penalized)).ids, collect(**host->submit(penalized)).ids);
  EXPECT_EQ(collect(**device->submit(logprobs)).ids, collect(**host->submit(logprobs)).ids);
  EXPECT_GT(counts->forward.load() - counts->sampled.load(), before);  // host path: forward alone
}

TEST(EngineRuntime, ForwardSampledChecksRowCount) {
  std::unique_ptr<Model> model = demo_model();
  SimpleKvCache kv(model->kv_layout());
  ForwardBatch batch;
  kv.add_chunk(batch, kv.add_sequence(), 0, {5, 6, 7});
  kv.add_chunk(batch, kv.add_sequence(), 0, {8});
  const RowSampling one[1] = {};
  auto bad = model->forward_sampled(batch, kv.cache(), one);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  // Greedy rows give forward's argmax.
  auto logits = model->forward(batch, kv.cache());
  ASSERT_TRUE(logits.ok()) << logits.status().to_string();
  const RowSampling two[2] = {};
  auto ids = model->forward_sampled(batch, kv.cache(), two);
  ASSERT_TRUE(ids.ok()) << ids.status().to_string();
  const int64_t vocab = logits->dim(1);
  ASSERT_EQ(ids->size(), 2u);
  for (int64_t i = 0; i < 2; ++i) EXPECT_EQ((*ids)[i], ref_argmax(logits->data<float>() + i * vocab, vocab));
}

TEST(EngineRuntime, PreemptionUnderMemoryPressureLosesNothing) {
  // 34 blocks of 16 tokens (6 KiB each): 12 requests of ~75 tokens (5 blocks) each cannot all run at once.
  auto engine = make_engine({.kv_cache_gb = 0.0002, .max_num_batched_tokens = 128});
  std::mt19937 rng(4);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<Output> solo;
  for (int i = 0; i < 12; ++i) prompts.push_back(random_prompt(rng, 30 + i));
  for (int i = 0; i < 3; ++i) solo.push_back(collect(**engine->submit(greedy(prompts[i], 40))));
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (auto& p : prompts) handles.push_back(*engine->submit(greedy(p, 40)));
  for (int i = 0; i < 12; ++i) {
    Output o = collect(*handles[i]);
    EXPECT_EQ(o.ids.size(), 40u) << i;
    if (i < 3) {
      EXPECT_EQ(o.ids, solo[i].ids) << i;
    }
  }
  EngineStats s = engine->stats();
  EXPECT_GT(s.preemptions_total, 0u);
  EXPECT_EQ(s.kv_cache_usage, 0.0);
}

TEST(EngineRuntime, AbortFreesBlocks) {
  auto engine = make_engine({.kv_cache_gb = 0.05});
  std::mt19937 rng(5);
  auto h = *engine->submit(greedy(random_prompt(rng, 50), 2000));
  GenerationDelta d;
  ASSERT_TRUE(h->next(&d, std::chrono::seconds(30)));
  EXPECT_GT(engine->stats().kv_cache_usage, 0.0);
  engine->abort(h->id());
  Output rest = collect(*h);
  EXPECT_EQ(rest.finish_reason, "abort");
  for (int i = 0; i < 100 && engine->stats().kv_cache_usage > 0.0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(engine->stats().kv_cache_usage, 0.0);
  EXPECT_EQ(engine->stats().num_running, 0);
}

TEST(EngineRuntime, ValidationErrors) {
  auto engine = make_engine({.kv_cache_gb = 0.05, .max_model_len = 256});
  auto empty = engine->submit(greedy({}, 4));
  EXPECT_FALSE(empty.ok());
  auto too_long = engine->submit(greedy(std::vector<int32_t>(250, 5), 10));
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.status().message().find("256"), std::string::npos) << too_long.status().message();
  auto bad_id = engine->submit(greedy({5, 200000}, 4));
  ASSERT_FALSE(bad_id.ok());
  EXPECT_NE(bad_id.status().message().find("200000"), std::string::npos);
  engine->shutdown(std::chrono::milliseconds(100));
  auto after = engine->submit(greedy({5}, 4));
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace dsi
