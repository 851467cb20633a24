#pragma once
// distill::Error, the single exception type of the library, and the way to raise it.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace distill {

/// Thrown for every kind of bad input. It says where (`context()`: a loss and argument, a
/// recipe path such as "Loss.Train[1].DistillationKLDivLoss", or a file and line) and what was
/// expected there (`message()`); what() is "<context>: <message>".
///
///   try {
///     auto loss = distill::functional::kd_loss(student_logits, teacher_logits);
///   } catch (const distill::Error& e) {
///     std::cerr << e.what() << '\n';  // "kd_loss: 'teacher' has shape [8, 100] but ..."
///   }
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : Error(std::string(), message) {}
  Error(std::string context, std::string message)
      : std::runtime_error(context.empty() ? message : context + ": " + message),
        context_(std::move(context)),
        message_(std::move(message)) {}

  const std::string& context() const noexcept { return context_; }
  const std::string& message() const noexcept { return message_; }

  /// The same error seen from an enclosing place: `outer` goes in front of the context
  /// ("Loss.Train[0].DistillationDKDLoss" + "dkd_loss: ..."). An error raised there already
  /// (its context starts with `outer`) is returned unchanged.
  Error within(const std::string& outer) const {
    if (outer.empty() || context_.compare(0, outer.size(), outer) == 0) return *this;
    return Error(context_.empty() ? outer : outer + ": " + context_, message_);
  }

 private:
  std::string context_, message_;
};

/// Streams every part into one string (no fmt, so that the loss headers need only libtorch).
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

/// Throws a distill::Error whose message is the parts streamed together.
///
///   if (temperature <= 0) distill::fail("kd_loss: temperature must be positive, got ", temperature);
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(concat(parts...));
}

/// Throws a distill::Error about the place `context` (a recipe path, a file, a loss).
///
///   distill::fail_at("Optimizer.momentum", "must be in [0, 1), got ", momentum);
template <class... Parts>
[[noreturn]] void fail_at(const std::string& context, const Parts&... parts) {
  throw Error(context, concat(parts...));
}

/// Runs `body`; a distill::Error it throws is rethrown as seen from `context` (Error::within).
///
///   auto model = distill::with_context("Arch.models[1]", [&] { return build(entry); });
template <class Body>
decltype(auto) with_context(const std::string& context, Body&& body) {
  try {
    return body();
  } catch (const Error& e) {
    throw e.within(context);
  }
}

}  // namespace distill

/// Checks a condition of the input; when it does not hold, throws a distill::Error made of the
/// remaining arguments.
///
///   DISTILL_CHECK(x.dim() == 4, "MyLoss: 'x' must be [N, C, H, W], got ", x.sizes());
#define DISTILL_CHECK(condition, ...) \
  do {                                \
    if (!(condition)) ::distill::fail(__VA_ARGS__); \
  } while (false)
