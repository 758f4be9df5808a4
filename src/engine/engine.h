// Engine: owns the model, the paged KV cache, the scheduler and the loop thread. The server submits requests
// and reads their deltas; the engine thread runs schedule -> forward -> sample -> update.
//
// Thread use: submit / abort / stats / shutdown may be called from any thread (they go through a locked queue).
// Each RequestHandle is read by one consumer thread (the HTTP handler) and written by the engine thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "engine/sampler.h"
#include "io/model_config.h"

namespace dsi {

namespace tok {
class Tokenizer;
}
class Model;

struct GenerationRequest {
  std::vector<int32_t> prompt_ids;
  SamplingParams sampling;               // temperature, top_p, top_k, min_p, penalties
  std::optional<uint64_t> seed;          // same seed + same request -> same tokens
  int64_t max_tokens = 16;
  std::vector<std::string> stop;         // stop strings: not emitted, matched across token boundaries
  std::vector<int32_t> stop_token_ids;   // in addition to the model's EOS (unless ignore_eos)
  bool ignore_eos = false;
  int top_logprobs = -1;                 // -1: no logprobs; 0..20: the chosen token's logprob + this many
};

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // (id, logprob), best first
};

// What one engine step produced for one request. `text` is complete UTF-8 (the incremental detokenizer holds
// back partial characters and text that may still turn out to be a stop string).
struct GenerationDelta {
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprob> logprobs;  // one per token id, when requested
  bool finished = false;
  std::string finish_reason;  // "stop" | "length" | "abort" | "error" when finished
  std::string error;          // message when finish_reason == "error"
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // total so far
  int64_t cached_tokens = 0;      // prompt tokens served from the prefix cache
};

class RequestHandle {
 public:
  virtual ~RequestHandle() = default;
  virtual int64_t id() const = 0;
  // Waits up to `timeout` for the next delta. Returns false on timeout. After a delta with finished == true,
  // returns false immediately forever.
  virtual bool next(GenerationDelta* out, std::chrono::milliseconds timeout) = 0;
};

struct HistogramSnapshot {
  std::vector<double> bounds;   // upper bounds, ascending (the +Inf bucket is implied)
  std::vector<uint64_t> counts;  // per bucket (not cumulative), bounds.size() + 1 entries
  double sum = 0;
  uint64_t count = 0;
};

struct EngineStats {
  int64_t num_running = 0;
  int64_t num_waiting = 0;
  double kv_cache_usage = 0;  // 0..1
  int64_t kv_cache_tokens = 0;  // capacity in tokens
  uint64_t prefix_cache_queries = 0;  // prompt tokens looked up
  uint64_t prefix_cache_hits = 0;     // prompt tokens found
  uint64_t prompt_tokens_total = 0;
  uint64_t generation_tokens_total = 0;
  uint64_t requests_finished_total = 0;
  uint64_t preemptions_total = 0;
  HistogramSnapshot time_to_first_token_s;
  HistogramSnapshot time_per_output_token_s;
  HistogramSnapshot e2e_request_latency_s;
};

struct EngineConfig {
  int64_t block_size = 16;
  double kv_cache_gb = 0.5;           // host memory for the KV cache
  int64_t max_num_seqs = 256;
  int64_t max_num_batched_tokens = 2048;  // per step (chunked prefill budget)
  int64_t max_model_len = 0;          // 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
};

class Engine {
 public:
  // Starts the loop thread. The tokenizer is used for stop strings and detokenization.
  static Result<std::unique_ptr<Engine>> create(const EngineConfig& config, std::unique_ptr<Model> model,
                                                std::unique_ptr<tok::Tokenizer> tokenizer);
  virtual ~Engine() = default;

  // Validates (empty prompt, prompt + max_tokens beyond max_model_len, ids outside the vocabulary, a prompt that
  // can never fit the cache) and queues. Errors are InvalidArgument / OutOfRange with a user-facing message.
  virtual Result<std::shared_ptr<RequestHandle>> submit(GenerationRequest request) = 0;
  // Cancels a request (client gone); its blocks are freed at the next step; its handle gets finish "abort".
  virtual void abort(int64_t request_id) = 0;
  virtual EngineStats stats() const = 0;
  // Stops admitting; waits up to `grace` for running requests, then aborts the rest; joins the loop thread.
  virtual void shutdown(std::chrono::milliseconds grace) = 0;

  virtual const ModelConfig& model_config() const = 0;
  virtual const tok::Tokenizer& tokenizer() const = 0;
  virtual int64_t max_model_len() const = 0;
};

}  // namespace dsi
