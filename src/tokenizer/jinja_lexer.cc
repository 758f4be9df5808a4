#include "tokenizer/jinja_lexer.h"

#include <cctype>

#include "tokenizer/utf8.h"

namespace dsi::tok::jinja {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

class Lexer {
 public:
  Lexer(std::string src, const LexOptions& o) : src_(std::move(src)), opts_(o) {}

  Result<std::vector<Token>> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t open = find_open(pos_);
      std::string text = src_.substr(pos_, open - pos_);
      if (open == src_.size()) {
        emit_text(text);
        break;
      }
      char kind = src_[open + 1];  // '{', '%' or '#'
      char sign = open + 2 < src_.size() ? src_[open + 2] : '\0';
      if (sign == '-') {
        size_t e = text.size();
        while (e > 0 && is_space(text[e - 1])) --e;
        text.resize(e);
      } else if (sign != '+' && opts_.lstrip_blocks && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = (l_pos == std::string::npos) ? 0 : l_pos + 1;
        if (l_pos > 0 || line_starting) {
          bool all_ws = l_pos < text.size();
          for (size_t k = l_pos; k < text.size(); ++k) all_ws = all_ws && is_space(text[k]);
          if (all_ws) text.resize(l_pos);
        }
      }
      emit_text(text);
      line_ += count_lines(pos_, open);
      pos_ = open + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      Status st = kind == '#' ? comment() : (kind == '{' ? tag(false) : tag(true));
      if (!st.ok()) return st;
      line_starting = pos_ > 0 && src_[pos_ - 1] == '\n';
    }
    toks_.push_back({Tok::kEof, "", line_});
    return std::move(toks_);
  }

 private:
  size_t find_open(size_t from) const {
    for (size_t k = from; k + 1 < src_.size(); ++k) {
      if (src_[k] == '{' && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#')) return k;
    }
    return src_.size();
  }
  int count_lines(size_t a, size_t b) const {
    int n = 0;
    for (size_t k = a; k < b && k < src_.size(); ++k) n += src_[k] == '\n';
    return n;
  }
  void emit_text(const std::string& t) {
    if (!t.empty()) toks_.push_back({Tok::kText, t, line_});
  }
  Status error(const std::string& what) const { return Status::InvalidArgument(str_cat("template line ", line_, ": ", what)); }

  // After "}}", "%}" or "#}": apply "-" (strip following whitespace) or trim_blocks (one newline).
  void after_end(bool minus, bool plus, bool block_like) {
    if (minus) {
      size_t k = pos_;
      while (k < src_.size() && is_space(src_[k])) ++k;
      line_ += count_lines(pos_, k);
      pos_ = k;
    } else if (!plus && block_like && opts_.trim_blocks && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
      ++line_;
    }
  }

  Status comment() {
    size_t e = src_.find("#}", pos_);
    if (e == std::string::npos) return error("unclosed comment '{#'");
    bool minus = e > pos_ && src_[e - 1] == '-';
    bool plus = e > pos_ && src_[e - 1] == '+';
    line_ += count_lines(pos_, e);
    pos_ = e + 2;
    after_end(minus, plus, true);
    return Status::Ok();
  }

  Status tag(bool block) {
    int start_line = line_;
    toks_.push_back({block ? Tok::kBlockBegin : Tok::kVarBegin, "", line_});
    size_t first_tok = toks_.size();
    while (true) {
      while (pos_ < src_.size() && is_space(src_[pos_])) {
        if (src_[pos_] == '\n') ++line_;
        ++pos_;
      }
      if (pos_ >= src_.size()) return Status::InvalidArgument(str_cat("template line ", start_line, ": unclosed '", block ? "{%" : "{{", "'"));
      char c = src_[pos_];
      // End of tag, possibly with "-" / "+".
      size_t k = pos_;
      bool minus = false, plus = false;
      if ((c == '-' || c == '+') && k + 1 < src_.size()) {
        minus = c == '-';
        plus = c == '+';
        ++k;
      }
      if (k + 1 < src_.size() && src_[k] == (block ? '%' : '}') && src_[k + 1] == '}') {
        pos_ = k + 2;
        toks_.push_back({block ? Tok::kBlockEnd : Tok::kVarEnd, "", line_});
        if (block && toks_.size() == first_tok + 2 && toks_[first_tok].type == Tok::kName && toks_[first_tok].text == "raw") {
          return raw_block();
        }
        after_end(minus, plus, block);
        return Status::Ok();
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = pos_;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        toks_.push_back({Tok::kName, src_.substr(pos_, e - pos_), line_});
        pos_ = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        number();
      } else if (c == '\'' || c == '"') {
        DSI_RETURN_IF_ERROR(string_literal(c));
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                     "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"};
        bool found = false;
        for (const char* op : kOps) {
          size_t n = std::char_traits<char>::length(op);
          if (src_.compare(pos_, n, op) == 0) {
            toks_.push_back({Tok::kOp, op, line_});
            pos_ += n;
            found = true;
            break;
          }
        }
        if (!found) return error(str_cat("unexpected character '", std::string(1, c), "' in a tag"));
      }
    }
  }

  Status raw_block() {
    // {% raw %}...{% endraw %}: the tokens "raw" were pushed; replace them with the raw text.
    toks_.resize(toks_.size() - 3);
    size_t k = pos_;
    while (true) {
      size_t open = src_.find("{%", k);
      if (open == std::string::npos) return error("unclosed '{% raw %}'");
      size_t q = open + 2;
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) ++q;
      while (q < src_.size() && is_space(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") == 0) {
        std::string text = src_.substr(pos_, open - pos_);
        if (src_[open + 2] == '-') {
          while (!text.empty() && is_space(text.back())) text.pop_back();
        }
        emit_text(text);
        size_t e = src_.find("%}", q);
        if (e == std::string::npos) return error("unclosed '{% endraw'");
        bool minus = src_[e - 1] == '-';
        line_ += count_lines(pos_, e);
        pos_ = e + 2;
        after_end(minus, src_[e - 1] == '+', true);
        return Status::Ok();
      }
      k = open + 2;
    }
  }

  void number() {
    size_t e = pos_;
    bool is_float = false;
    while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
    if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      is_float = true;
      ++e;
      while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t q = e + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
        is_float = true;
        e = q;
        while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
      }
    }
    std::string t;
    for (size_t k = pos_; k < e; ++k) {
      if (src_[k] != '_') t += src_[k];
    }
    toks_.push_back({is_float ? Tok::kFloat : Tok::kInt, t, line_});
    pos_ = e;
  }

  Status string_literal(char q) {
    int start_line = line_;
    std::string out;
    size_t k = pos_ + 1;
    while (k < src_.size() && src_[k] != q) {
      char c = src_[k];
      if (c == '\n') ++line_;
      if (c != '\\' || k + 1 >= src_.size()) {
        out += c;
        ++k;
        continue;
      }
      char n = src_[k + 1];
      k += 2;
      switch (n) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '0': out += '\0'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case '\n': ++line_; break;
        case 'x':
        case 'u':
        case 'U': {
          size_t len = n == 'x' ? 2 : (n == 'u' ? 4 : 8);
          if (k + len > src_.size()) return error("truncated escape in a string literal");
          uint32_t cp = 0;
          for (size_t j = 0; j < len; ++j) {
            char h = src_[k + j];
            if (!std::isxdigit(static_cast<unsigned char>(h))) return error("bad escape in a string literal");
            cp = cp * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
          }
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
          utf8_append(out, cp);
          k += len;
          break;
        }
        default:
          out += '\\';
          out += n;
      }
    }
    if (k >= src_.size()) return Status::InvalidArgument(str_cat("template line ", start_line, ": unterminated string literal"));
    toks_.push_back({Tok::kString, out, start_line});
    pos_ = k + 1;
    return Status::Ok();
  }

  std::string src_;
  LexOptions opts_;
  size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> toks_;
};

}  // namespace

Result<std::vector<Token>> lex(std::string_view source, const LexOptions& opts) {
  std::string src;
  src.reserve(source.size());
  for (size_t k = 0; k < source.size(); ++k) {
    if (source[k] == '\r') {
      src += '\n';
      if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
    } else {
      src += source[k];
    }
  }
  if (!opts.keep_trailing_newline && !src.empty() && src.back() == '\n') src.pop_back();
  return Lexer(std::move(src), opts).run();
}

}  // namespace dsi::tok::jinja
