#include "tokenizer/detokenizer.h"

#include "tokenizer/utf8.h"

namespace dsi::tok {

Result<std::string> StreamDecoder::push(int32_t id) {
  if (skip_special_ && tok_.is_special(id)) return std::string();
  DSI_ASSIGN_OR_RETURN(std::string bytes, tok_.token_bytes(id));
  return push_bytes(bytes);
}

std::string StreamDecoder::push_bytes(std::string_view bytes) {
  std::string buf = pending_;
  buf.append(bytes.data(), bytes.size());
  pending_.clear();
  std::string out;
  out.reserve(buf.size());
  size_t i = 0;
  while (i < buf.size()) {
    uint8_t b = static_cast<uint8_t>(buf[i]);
    if (b < 0x80) {
      out += static_cast<char>(b);
      ++i;
      continue;
    }
    int n = utf8_valid_len(buf, i);
    if (n > 0) {
      out.append(buf, i, n);
      i += n;
      continue;
    }
    int k = utf8_incomplete_prefix_len(buf, i);
    if (k > 0) {  // may still complete with the next token's bytes
      pending_ = buf.substr(i);
      break;
    }
    // Invalid: replace the maximal invalid subpart, like the lossy decode of the whole stream.
    size_t consumed = 1;
    // How many bytes the first U+FFFD covers: the longest prefix that sanitizes to a single U+FFFD.
    for (size_t len = 1; len <= 4 && i + len <= buf.size(); ++len) {
      std::string s = utf8_sanitize(std::string_view(buf).substr(i, len));
      if (s == "\xEF\xBF\xBD") consumed = len;
      else break;
    }
    out += "\xEF\xBF\xBD";
    i += consumed;
  }
  return out;
}

std::string StreamDecoder::finish() {
  if (pending_.empty()) return {};
  pending_.clear();
  return "\xEF\xBF\xBD";
}

}  // namespace dsi::tok
