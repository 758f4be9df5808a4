// libFuzzer target: arbitrary bytes through the DeepSeek-V3 tokenizer (encode, decode, streaming decode) and
// arbitrary ids through decode. Invariants: decode(encode(s)) == s with invalid UTF-8 replaced; the streaming
// decoder agrees with decode and only emits valid UTF-8.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

const dsi::tok::Tokenizer& tokenizer() {
  static std::unique_ptr<dsi::tok::Tokenizer> t = [] {
    auto r = dsi::tok::Tokenizer::load_dir(DSI_TOKENIZER_DIR);
    if (!r.ok()) {
      std::fprintf(stderr, "fuzz_tokenizer: %s\n", r.status().to_string().c_str());
      std::abort();
    }
    return std::move(r).value();
  }();
  return *t;
}

void check(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "fuzz_tokenizer: invariant failed: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& tok = tokenizer();
  std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<int32_t> with_bos = tok.encode(text, {.add_special_tokens = true});
  std::vector<int32_t> ids = tok.encode(text);
  check(with_bos.size() == ids.size() + 1 && std::equal(ids.begin(), ids.end(), with_bos.begin() + 1), "BOS + ids");
  auto decoded = tok.decode(ids);
  check(decoded.ok(), "decode of encode ids");
  check(*decoded == dsi::tok::utf8_sanitize(text), "decode(encode(s)) == sanitize(s)");

  dsi::tok::StreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) {
    auto piece = stream.push(id);
    check(piece.ok(), "stream push");
    check(dsi::tok::utf8_is_valid(*piece), "stream emits valid UTF-8");
    streamed += *piece;
  }
  streamed += stream.finish();
  auto full = tok.decode(ids);
  check(full.ok() && streamed == *full, "stream == decode");

  // The bytes as little-endian ids: decode either succeeds with valid UTF-8 or names an unknown id.
  std::vector<int32_t> raw_ids;
  for (size_t i = 0; i + 3 < size && raw_ids.size() < 4096; i += 4) {
    int32_t v = static_cast<int32_t>(data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (uint32_t(data[i + 3] & 0x01) << 24));
    raw_ids.push_back(v);
  }
  auto d2 = tok.decode(raw_ids);
  if (d2.ok()) check(dsi::tok::utf8_is_valid(*d2), "decode emits valid UTF-8");
  return 0;
}
