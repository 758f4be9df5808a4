// Status and Result<T>: errors as values (LevelDB style). Expected failures return these; invariants use DSI_CHECK.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <variant>

namespace dsi {

enum class StatusCode {
  kOk,
  kInvalidArgument,
  kNotFound,
  kCorrupt,
  kUnsupported,
  kIoError,
  kOutOfRange,
  kInternal,
  kUnavailable,  // temporarily cannot serve (shutting down, loading)
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status Corrupt(std::string m) { return {StatusCode::kCorrupt, std::move(m)}; }
  static Status Unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
  static Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  static Status OutOfRange(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "corrupt: model.safetensors: tensor 'x': ..." (for printing).
  std::string to_string() const;
  // Returns a copy with "context: " prepended to the message.
  Status with_context(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).ok()) v_ = Status::Internal("Result constructed from an OK status without a value");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

// Concatenates streamable values into a string: str_cat("tensor '", name, "' has ", n, " bytes").
template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

[[noreturn]] void check_failed(const char* file, int line, const char* cond, const std::string& msg);

}  // namespace dsi

#define DSI_CONCAT_INNER(a, b) a##b
#define DSI_CONCAT(a, b) DSI_CONCAT_INNER(a, b)

#define DSI_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::dsi::Status dsi_status_ = (expr);        \
    if (!dsi_status_.ok()) return dsi_status_; \
  } while (0)

#define DSI_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

#define DSI_ASSIGN_OR_RETURN(lhs, expr) DSI_ASSIGN_OR_RETURN_IMPL(DSI_CONCAT(dsi_result_, __LINE__), lhs, expr)

// Invariant checks: a failure is a bug in dsinfer, not bad input. Aborts with the location.
#define DSI_CHECK(cond, ...)                                                                   \
  do {                                                                                         \
    if (!(cond)) ::dsi::check_failed(__FILE__, __LINE__, #cond, ::dsi::str_cat("" __VA_ARGS__)); \
  } while (0)
