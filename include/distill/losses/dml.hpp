#pragma once
// Deep mutual learning: symmetric KL between two networks' distributions (reference 2.3).

#include "distill/losses/common.hpp"

namespace distill {

/// Options of dml_loss / DMLLoss, defaults as in the reference.
/// `act`: "softmax" (over the last axis), "sigmoid" (elementwise) or "none" (the inputs are
/// already probabilities).
struct DMLOptions {
  TORCH_ARG(std::string, act) = "softmax";
  TORCH_ARG(double, eps) = 1e-12;
  TORCH_ARG(bool, sum_across_class_dim) = false;
};

namespace functional {

/// With p = act(student), q = act(teacher), k(a, b) = b log((b + eps) / (a + eps)):
/// sum of (k(p, q) + k(q, p)) / 2 over the class axis, averaged over the other axes
/// (= batch mean of the symmetric KL). With sum_across_class_dim the reference's extra factor
/// C (the class count) is kept: the result is C times larger. Gradient reaches both inputs,
/// so both networks learn from each other. No temperature (reference quirk 7.11).
///
///   auto loss = distill::functional::dml_loss(logits_a, logits_b);
inline torch::Tensor dml_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                              const DMLOptions& options = {}) {
  constexpr const char* kLoss = "dml_loss";
  detail::check_floating(kLoss, "student", student);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  detail::check_choice(kLoss, "act", options.act(), {"softmax", "sigmoid", "none"});
  if (student.dim() == 0 || student.numel() == 0)
    detail::fail(kLoss, ": 'student' must be a non-empty tensor with a class axis, got ",
                 detail::describe(student));
  const double eps = options.eps();
  if (!(eps >= 0) || !std::isfinite(eps)) detail::fail(kLoss, ": eps must be >= 0, got ", eps);
  auto activate = [&](const torch::Tensor& x) {
    auto y = detail::compute(x);
    if (options.act() == "softmax") return torch::softmax(y, -1);
    if (options.act() == "sigmoid") return torch::sigmoid(y);
    return y;
  };
  auto p = activate(student), q = activate(teacher);
  auto log_p = (p + eps).log(), log_q = (q + eps).log();
  auto both = (q * (log_q - log_p) + p * (log_p - log_q)) * 0.5;
  const int64_t classes = student.size(-1);
  const double rows = static_cast<double>(student.numel() / classes);
  const double scale = options.sum_across_class_dim() ? classes / rows : 1.0 / rows;
  return both.sum() * scale;
}

}  // namespace functional

/// Module form of functional::dml_loss.
///
///   distill::DMLLoss dml;
///   auto loss = dml(logits_a, logits_b);
class DMLLossImpl : public detail::LossModule<DMLLossImpl> {
 public:
  static constexpr const char* kName = "DMLLoss";
  explicit DMLLossImpl(DMLOptions options = {}) : options(std::move(options)) {}
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    return functional::dml_loss(student, teacher, options);
  }
  DMLOptions options;
};
TORCH_MODULE(DMLLoss);

}  // namespace distill
