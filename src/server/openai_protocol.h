// OpenAI-compatible protocol: parse + validate /v1/chat/completions and /v1/completions bodies into engine
// requests, and build the responses (non-streaming JSON and SSE chunks) in OpenAI's exact shapes, with
// DeepSeek's `reasoning_content` for <think>...</think> output.
//
// Pure functions and one per-request builder; no networking, so the fuzzer and the unit tests drive them
// directly. nlohmann stays inside the .cc files.
// Thread use: ResponseBuilder belongs to the one HTTP handler thread that serves its request.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.h"
#include "tokenizer/reasoning.h"

namespace dsi::tok {
class Tokenizer;
}

namespace dsi::server {

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty -> null
  std::string code;   // empty -> null
};

std::string error_body(const ApiError& error);
ApiError bad_request(std::string message, std::string param = "");

enum class Endpoint { kChatCompletions, kCompletions };

// What the parser needs to know about the served model.
struct ProtocolContext {
  const tok::Tokenizer* tokenizer = nullptr;  // required
  std::string served_model_name;
  int64_t max_model_len = 0;  // prompt + completion limit in tokens
  // Split <think>...</think> into reasoning_content (DeepSeek-R1 style). The output starts inside the reasoning
  // when the rendered prompt ends with "<think>" (plus whitespace).
  bool reasoning = false;
};

// A validated request: one GenerationRequest per choice (n), plus what the response builder needs.
struct ParsedRequest {
  Endpoint endpoint = Endpoint::kChatCompletions;
  std::string model;
  bool stream = false;
  bool include_usage = false;      // stream_options.include_usage
  bool logprobs = false;           // chat: logprobs=true; completions: logprobs=<int>
  int top_logprobs = 0;
  bool echo = false;               // completions only
  bool starts_in_reasoning = false;
  bool split_reasoning = false;
  std::string prompt_text;         // rendered chat prompt or completion prompt (for echo)
  int64_t prompt_tokens = 0;
  std::vector<GenerationRequest> choices;  // size n
};

// Parses and validates a request body. On failure returns the error to send (400, or 404 for an unknown model).
std::optional<ApiError> parse_request(Endpoint endpoint, std::string_view body, const ProtocolContext& ctx,
                                      ParsedRequest* out);

// Builds the response of one request from the deltas of its choices, as one JSON body or as SSE events.
class ResponseBuilder {
 public:
  // id: "chatcmpl-..." / "cmpl-..."; created: unix seconds.
  ResponseBuilder(const ParsedRequest& request, const tok::Tokenizer& tokenizer, std::string id, int64_t created);
  ~ResponseBuilder();

  // Streaming: the SSE text ("data: {...}\n\n", possibly several events, possibly empty) for one delta of
  // choice `index`. The first call per choice also emits the role chunk (chat).
  std::string stream_delta(int index, const GenerationDelta& delta);
  // Streaming end: the usage chunk when requested, then "data: [DONE]\n\n".
  std::string stream_end();

  // Non-streaming: remember a delta; final_body() builds the chat.completion / text_completion object.
  void add_delta(int index, const GenerationDelta& delta);
  std::string final_body() const;

  // Set once a choice finished with "error" or "abort" (engine failure, shutdown): the request failed. A stream
  // has then already received the error event; a non-streaming handler sends this instead of final_body().
  const std::optional<ApiError>& error() const { return error_; }
  bool all_finished() const;
  const std::string& id() const { return id_; }

 private:
  struct Choice;
  void record(Choice& choice, const GenerationDelta& delta);

  const ParsedRequest& request_;
  const tok::Tokenizer& tokenizer_;
  std::string id_;
  int64_t created_;
  std::vector<std::unique_ptr<Choice>> choices_;
  std::optional<ApiError> error_;
  int64_t cached_tokens_ = 0;
};

// "data: <json>\n\n"
std::string sse_event(std::string_view json);
// A streaming error event (the OpenAI client raises it as an APIError): data: {"error": {...}}
std::string sse_error(const ApiError& error);

// GET /v1/models body. note: empty, or e.g. "random weights (demo)".
std::string models_body(const std::string& served_model_name, int64_t max_model_len, const std::string& note,
                        int64_t created);

}  // namespace dsi::server
