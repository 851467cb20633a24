#pragma once
// Hinton knowledge distillation: temperature-softened KL divergence (reference 2.5).

#include "distill/losses/common.hpp"

namespace distill {

/// Options of kd_loss / KDLoss. The reference's KLDivLoss and its wrapper both default to T = 4.
struct KDOptions {
  TORCH_ARG(double, temperature) = 4.0;
};

namespace detail {
/// Checks KDOptions once, for the functional form and when a module is built.
inline void check_options(const KDOptions& options) {
  constexpr const char* kLoss = "kd_loss";
  detail::check_positive(kLoss, "temperature", options.temperature());
}
}  // namespace detail

namespace functional {

/// T^2 / N * sum_{n,c} p_t (log p_t - log softmax(z_s / T)) with p_t = softmax(z_t / T).
/// Logits are [N, C]. Like the reference's KL op, no gradient reaches the teacher.
///
///   auto loss = distill::functional::kd_loss(student_logits, teacher_logits,
///                                            distill::KDOptions().temperature(4));
inline torch::Tensor kd_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                             const KDOptions& options = {}) {
  constexpr const char* kLoss = "kd_loss";
  detail::check_options(options);
  detail::check_logits(kLoss, "student", student);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  const double t = options.temperature();
  auto log_ps = torch::log_softmax(detail::compute(student) / t, 1);
  auto log_pt = torch::log_softmax(detail::compute(teacher).detach() / t, 1);
  // p_t * (log p_t - log p_s) from log-probabilities: an underflowed p_t gives 0, exactly as
  // the reference skips p_t <= 0, and nothing becomes inf for logits of any size.
  return (log_pt.exp() * (log_pt - log_ps)).sum() * (t * t / student.size(0));
}

}  // namespace functional

/// Module form of functional::kd_loss.
///
///   distill::KDLoss kd(distill::KDOptions().temperature(4));
///   auto loss = kd(student_logits, teacher_logits);
class KDLossImpl : public detail::LossModule<KDLossImpl> {
 public:
  static constexpr const char* kName = "KDLoss";
  explicit KDLossImpl(KDOptions options = {}) : options(std::move(options)) {
    detail::check_options(this->options);
  }
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    return functional::kd_loss(student, teacher, options);
  }
  KDOptions options;
};
TORCH_MODULE(KDLoss);

}  // namespace distill
