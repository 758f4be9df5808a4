#include "tokenizer/tokenizer.h"

#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace dsi::tok {

Tokenizer::Tokenizer() : impl_(std::make_unique<TokenizerImpl>()) {}
Tokenizer::~Tokenizer() = default;

std::optional<int32_t> TokenizerImpl::id_of(const std::optional<std::string>& tok) const {
  if (!tok) return std::nullopt;
  auto it = added_ids.find(*tok);
  if (it != added_ids.end()) return it->second;
  return bpe.token_to_id(*tok);
}

void TokenizerImpl::pretokenize_and_bpe(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::vector<Piece> a{{0, static_cast<uint32_t>(text.size())}}, b;
  for (const auto& step : splits) {
    apply_split(step, text, a, b);
    a.swap(b);
  }
  if (!byte_level_prefix_space && !byte_level_regex) {
    for (const Piece& p : a) bpe.encode_word(text.substr(p.begin, p.end - p.begin), out);
    return;
  }
  // ByteLevel step (last in the sequence): optional prefix space per piece, optional GPT-2 regex split.
  for (const Piece& p : a) {
    std::string piece(text.substr(p.begin, p.end - p.begin));
    if (byte_level_prefix_space && (piece.empty() || piece[0] != ' ')) piece.insert(piece.begin(), ' ');
    if (!byte_level_regex) {
      bpe.encode_word(piece, out);
      continue;
    }
    std::vector<Piece> in{{0, static_cast<uint32_t>(piece.size())}}, res;
    apply_split(SplitStep{byte_level_regex, SplitBehavior::kIsolated, false}, piece, in, res);
    for (const Piece& q : res) bpe.encode_word(std::string_view(piece).substr(q.begin, q.end - q.begin), out);
  }
}

void TokenizerImpl::encode_segment(std::string_view text, std::vector<int32_t>& out) const {
  std::string normalized;
  std::string_view view = text;
  if (!normalizers.empty()) {
    normalized = std::string(text);
    for (NormalizerKind k : normalizers) normalized = normalize_text(k, normalized);
    view = normalized;
  }
  if (normalized_matcher.empty()) {
    pretokenize_and_bpe(view, out);
    return;
  }
  std::vector<AddedTokenMatcher::Split> parts;
  normalized_matcher.split(view, added, parts);
  for (const auto& s : parts) {
    if (s.token >= 0) {
      out.push_back(added[s.token].id);
    } else {
      pretokenize_and_bpe(view.substr(s.begin, s.end - s.begin), out);
    }
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& opts) const {
  const TokenizerImpl& m = *impl_;
  std::string clean;
  if (!utf8_is_valid(text)) {
    clean = utf8_sanitize(text);
    text = clean;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<AddedTokenMatcher::Split> parts;
  m.raw_matcher.split(text, m.added, parts);
  for (const auto& s : parts) {
    if (s.token >= 0) {
      ids.push_back(m.added[s.token].id);
    } else {
      m.encode_segment(text.substr(s.begin, s.end - s.begin), ids);
    }
  }
  if (!opts.add_special_tokens) return ids;
  if (m.post.present) {
    std::vector<int32_t> res;
    for (const auto& item : m.post.items) {
      if (item.empty()) {
        res.insert(res.end(), ids.begin(), ids.end());
      } else {
        res.insert(res.end(), item.begin(), item.end());
      }
    }
    return res;
  }
  std::vector<int32_t> res;
  if (m.add_bos) {
    if (auto b = m.id_of(m.bos)) res.push_back(*b);
  }
  res.insert(res.end(), ids.begin(), ids.end());
  if (m.add_eos) {
    if (auto e = m.id_of(m.eos)) res.push_back(*e);
  }
  return res;
}

Result<std::string> Tokenizer::token_bytes(int32_t id) const {
  std::string out;
  if (const AddedToken* a = impl_->added_for_id(id)) return a->content;
  if (!impl_->bpe.id_to_bytes(id, out)) return Status::OutOfRange(str_cat("unknown token id ", id));
  return out;
}

Result<std::string> Tokenizer::decode(std::span<const int32_t> ids, const DecodeOptions& opts) const {
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (int32_t id : ids) {
    if (const AddedToken* a = impl_->added_for_id(id)) {
      if (opts.skip_special_tokens && a->special) continue;
      bytes += a->content;
      continue;
    }
    if (!impl_->bpe.id_to_bytes(id, bytes)) {
      return Status::OutOfRange(str_cat("unknown token id ", id, " (vocabulary has ", vocab_size(), " ids)"));
    }
  }
  return utf8_sanitize(bytes);
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->added_ids.find(token);
  if (it != impl_->added_ids.end()) return it->second;
  return impl_->bpe.token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* a = impl_->added_for_id(id)) return a->content;
  if (const std::string* t = impl_->bpe.id_to_token(id)) return *t;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  const AddedToken* a = impl_->added_for_id(id);
  return a != nullptr && a->special;
}

size_t Tokenizer::vocab_size() const { return impl_->n_ids; }
const std::optional<std::string>& Tokenizer::bos_token() const { return impl_->bos; }
const std::optional<std::string>& Tokenizer::eos_token() const { return impl_->eos; }
const std::optional<std::string>& Tokenizer::pad_token() const { return impl_->pad; }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->id_of(impl_->bos); }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->id_of(impl_->eos); }
std::optional<int32_t> Tokenizer::pad_id() const { return impl_->id_of(impl_->pad); }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

}  // namespace dsi::tok
