// A generation request and the engine's per-request state (a Sequence). One request is one sequence (n > 1 is
// expanded by the server into several requests).
// Thread use: built on any thread, then moved into the Scheduler, which owns Sequences on the engine thread.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "engine/sampler.h"

namespace dsi {

enum class SequenceStatus {
  kWaiting,    // queued, never admitted (or admitted and then aborted before running: not observable)
  kRunning,    // holds KV blocks and is scheduled every step until finished or preempted
  kPreempted,  // lost its blocks to make room; back at the front of the waiting queue, recomputed later
  kFinished,
};

enum class FinishReason {
  kNone,
  kStop,    // sampled one of stop_token_ids (the stop token is part of the output ids)
  kLength,  // reached max_tokens, or the context length (max_model_len)
  kAbort,   // cancelled by abort() (client disconnect, shutdown)
};

// OpenAI-style name: "stop", "length", "abort" ("" for kNone).
inline const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kNone: break;
  }
  return "";
}

struct Request {
  int64_t id = 0;                     // unique among the requests the Scheduler holds
  std::vector<int64_t> prompt_ids;    // [num_prompt_tokens], not empty
  SamplingParams sampling;            // copied: a request outlives the HTTP handler that built it
  int64_t max_tokens = 16;            // most output tokens, >= 1
  std::vector<int64_t> stop_token_ids;  // e.g. EOS; generation stops after sampling one of these
};

struct Sequence {
  explicit Sequence(Request r) : request(std::move(r)), token_ids(request.prompt_ids) {}

  Request request;
  std::vector<int64_t> token_ids;   // prompt then output: [num_tokens]
  int64_t num_computed_tokens = 0;  // tokens whose KV is in the cache (a prefix of token_ids)
  int64_t num_cached_tokens = 0;    // prefix-cache hit at the latest admission
  SequenceStatus status = SequenceStatus::kWaiting;
  FinishReason finish_reason = FinishReason::kNone;
  int64_t num_preemptions = 0;
  bool awaiting_token = false;      // scheduled this step with a chunk that ends at its last token

  int64_t id() const { return request.id; }
  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
  int64_t num_prompt_tokens() const { return static_cast<int64_t>(request.prompt_ids.size()); }
  int64_t num_output_tokens() const { return num_tokens() - num_prompt_tokens(); }
  std::span<const int64_t> output_ids() const {
    return std::span<const int64_t>(token_ids).subspan(request.prompt_ids.size());
  }
  bool finished() const { return status == SequenceStatus::kFinished; }
};

}  // namespace dsi
