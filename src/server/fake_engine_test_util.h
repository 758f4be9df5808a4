// Test helper: a deterministic Engine for the server tests (no model). Each request "generates" the tokens of a
// fixed reply, one token per delta, finishing with "length" at max_tokens or "stop" at the end of the reply or at a
// stop string. Deltas are produced on the consumer's thread inside next(); abort() and shutdown() flip flags.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "engine/engine.h"
#include "tokenizer/tokenizer.h"

namespace dsi::server::testing {

inline std::unique_ptr<tok::Tokenizer> load_test_tokenizer() {
  auto t = tok::Tokenizer::load_dir(std::string(DSI_SOURCE_DIR) + "/tests/tokenizer/fixtures/deepseek-v3");
  if (!t.ok()) check_failed(__FILE__, __LINE__, "tokenizer fixture loads", t.status().to_string());
  return std::move(t).value();
}

struct FakeOptions {
  std::string reply = "Hello world! This is a fake reply from the fake engine.";
  int64_t max_model_len = 4096;
  std::chrono::milliseconds delay_per_token{0};
  int64_t fail_after_tokens = -1;  // >= 0: finish "error" after this many tokens
  int64_t cached_tokens = 0;
};

class FakeEngine;

class FakeHandle : public RequestHandle {
 public:
  FakeHandle(int64_t id, GenerationRequest req, std::vector<int32_t> reply, const tok::Tokenizer& tok,
             const FakeOptions& opts)
      : id_(id), req_(std::move(req)), reply_(std::move(reply)), tok_(tok), opts_(opts) {}
  int64_t id() const override { return id_; }
  bool next(GenerationDelta* out, std::chrono::milliseconds timeout) override {
    if (done_) return false;
    *out = GenerationDelta();
    out->prompt_tokens = static_cast<int64_t>(req_.prompt_ids.size());
    out->cached_tokens = opts_.cached_tokens;
    if (opts_.delay_per_token.count() > 0) {
      std::this_thread::sleep_for(std::min(opts_.delay_per_token, timeout + std::chrono::milliseconds(1)));
    }
    if (aborted_.load()) return finish(out, "abort");
    if (opts_.fail_after_tokens >= 0 && pos_ >= opts_.fail_after_tokens) {
      out->error = "fake forward failed";
      return finish(out, "error");
    }
    const int32_t id = reply_[pos_ % reply_.size()];
    ++pos_;
    out->token_ids = {id};
    out->completion_tokens = pos_;
    out->text = *tok_.decode(std::vector<int32_t>{id});
    if (req_.top_logprobs >= 0) {
      TokenLogprob lp{.id = id, .logprob = -0.25f, .top = {}};
      for (int k = 0; k < req_.top_logprobs; ++k) lp.top.push_back({id + k, -0.25f - static_cast<float>(k)});
      out->logprobs.push_back(lp);
    }
    text_ += out->text;
    for (const std::string& s : req_.stop) {
      const size_t at = text_.find(s);
      if (at != std::string::npos) {
        // Not emitted: cut this delta's text back to before the stop string.
        const size_t before = text_.size() - out->text.size();
        out->text = at > before ? out->text.substr(0, at - before) : "";
        return finish(out, "stop");
      }
    }
    if (pos_ >= req_.max_tokens) return finish(out, "length");
    if (pos_ >= static_cast<int64_t>(reply_.size()) && !req_.ignore_eos) return finish(out, "stop");
    return true;
  }
  void abort() { aborted_.store(true); }
  bool aborted() const { return aborted_.load(); }
  const GenerationRequest& request() const { return req_; }

 private:
  bool finish(GenerationDelta* out, const char* reason) {
    out->finished = true;
    out->finish_reason = reason;
    done_ = true;
    return true;
  }
  int64_t id_;
  GenerationRequest req_;
  std::vector<int32_t> reply_;
  const tok::Tokenizer& tok_;
  FakeOptions opts_;
  int64_t pos_ = 0;
  std::string text_;
  bool done_ = false;
  std::atomic<bool> aborted_{false};
};

class FakeEngine : public Engine {
 public:
  explicit FakeEngine(FakeOptions opts = {}) : opts_(std::move(opts)), tok_(load_test_tokenizer()) {
    reply_ = tok_->encode(opts_.reply);
  }
  Result<std::shared_ptr<RequestHandle>> submit(GenerationRequest request) override {
    if (shut_down_.load()) return Status::Unsupported("the engine is shutting down");
    if (request.prompt_ids.empty()) return Status::InvalidArgument("the prompt is empty");
    std::lock_guard<std::mutex> lock(mu_);
    auto h = std::make_shared<FakeHandle>(next_id_++, std::move(request), reply_, *tok_, opts_);
    handles_[h->id()] = h;
    submitted_.push_back(h->request());
    return std::shared_ptr<RequestHandle>(h);
  }
  void abort(int64_t id) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = handles_.find(id);
    if (it != handles_.end()) {
      if (auto h = it->second.lock()) h->abort();
    }
    aborted_ids_.push_back(id);
  }
  EngineStats stats() const override {
    EngineStats s;
    s.num_running = 1;
    s.kv_cache_usage = 0.25;
    s.prefix_cache_queries = 10;
    s.prefix_cache_hits = 4;
    s.time_to_first_token_s = {.bounds = {0.01, 0.1, 1}, .counts = {1, 2, 0, 1}, .sum = 3.5, .count = 4};
    return s;
  }
  void shutdown(std::chrono::milliseconds) override {
    shut_down_.store(true);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, w] : handles_) {
      if (auto h = w.lock()) h->abort();
    }
  }
  const ModelConfig& model_config() const override { return config_; }
  const tok::Tokenizer& tokenizer() const override { return *tok_; }
  int64_t max_model_len() const override { return opts_.max_model_len; }

  std::vector<int64_t> aborted_ids() const {
    std::lock_guard<std::mutex> lock(mu_);
    return aborted_ids_;
  }
  std::vector<GenerationRequest> submitted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return submitted_;
  }
  bool is_shut_down() const { return shut_down_.load(); }

 private:
  FakeOptions opts_;
  std::unique_ptr<tok::Tokenizer> tok_;
  std::vector<int32_t> reply_;
  ModelConfig config_;
  mutable std::mutex mu_;
  int64_t next_id_ = 1;
  std::map<int64_t, std::weak_ptr<FakeHandle>> handles_;
  std::vector<int64_t> aborted_ids_;
  std::vector<GenerationRequest> submitted_;
  std::atomic<bool> shut_down_{false};
};

}  // namespace dsi::server::testing
