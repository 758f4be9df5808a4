// Incremental (streaming) detokenizer: feed token ids one at a time, get text as soon as it is complete UTF-8.
// Never emits a broken UTF-8 sequence; emits each complete character as soon as its last byte arrives. The
// concatenation of all outputs (plus finish()) equals Tokenizer::decode of all ids. One instance per stream;
// not thread-safe.
#pragma once

#include <string>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

namespace dsi::tok {

class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, const DecodeOptions& opts = {})
      : tok_(tok), skip_special_(opts.skip_special_tokens) {}
  StreamDecoder(const Tokenizer& tok, bool skip_special_tokens)  // kept for existing callers
      : tok_(tok), skip_special_(skip_special_tokens) {}
  // Text completed by this token (may be empty). Unknown ids are an error naming the id.
  Result<std::string> push(int32_t id);
  // Raw-bytes variant (used by push; exposed for tests).
  std::string push_bytes(std::string_view bytes);
  // End of stream: a dangling incomplete sequence becomes U+FFFD.
  std::string finish();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::string pending_;  // at most 3 bytes of an incomplete but still valid UTF-8 prefix
};

}  // namespace dsi::tok
