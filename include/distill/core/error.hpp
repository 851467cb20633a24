#pragma once
// distill::Error, the single exception type of the library.

#include <sstream>
#include <stdexcept>
#include <string>

namespace distill {

/// Thrown for every kind of bad input. The message names the place (loss and argument,
/// JSON path, or file and line) and what was expected there.
///
///   try {
///     auto loss = distill::functional::kd_loss(student_logits, teacher_logits);
///   } catch (const distill::Error& e) {
///     std::cerr << e.what() << '\n';  // "kd_loss: 'teacher' has shape [8, 100] but ..."
///   }
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

/// Streams every part into one string; used to build error messages without fmt so that the
/// loss headers need nothing beyond libtorch.
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(concat(parts...));
}

}  // namespace detail
}  // namespace distill
