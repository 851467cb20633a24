#pragma once
// Weighted soft labels: KD weighted per sample by how much worse the student is (reference 2.7).

#include "distill/losses/common.hpp"

namespace distill {

/// Options of wsl_loss / WSLLoss; the reference's default temperature is 2.
struct WSLOptions {
  TORCH_ARG(double, temperature) = 2.0;
};

namespace detail {
/// Checks WSLOptions once, for the functional form and when a module is built.
inline void check_options(const WSLOptions& options) {
  constexpr const char* kLoss = "wsl_loss";
  detail::check_positive(kLoss, "temperature", options.temperature());
}
}  // namespace detail

namespace functional {

/// T^2 * mean_n(w_n * kd_n) where
/// - kd_n = -sum_c softmax(z_t / T)_c log softmax(z_s / T)_c (a cross-entropy, as in the
///   reference: it includes the teacher's entropy),
/// - w_n = 1 - exp(-max(ce_s / (ce_t + 1e-7), 0)) from the hard-label cross-entropies of the
///   detached student and teacher logits at T = 1 (no gradient through w).
/// `target` holds class indices [N] or [N, 1]; undefined means argmax of the teacher.
/// Gradient reaches both inputs through kd_n.
///
///   auto loss = distill::functional::wsl_loss(student_logits, teacher_logits, labels);
inline torch::Tensor wsl_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                              const torch::Tensor& target, const WSLOptions& options = {}) {
  constexpr const char* kLoss = "wsl_loss";
  detail::check_options(options);
  detail::check_logits(kLoss, "student", student);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  const double t = options.temperature();
  auto zs = detail::compute(student), zt = detail::compute(teacher);
  auto index = detail::target_or_argmax(kLoss, target, zt.detach());
  auto hard_ce = [&](const torch::Tensor& z) {
    return -torch::log_softmax(z.detach(), 1).gather(1, index).squeeze(1);
  };
  auto ratio = (hard_ce(zs) / (hard_ce(zt) + 1e-7)).clamp_min(0);
  auto weight = 1 - torch::exp(-ratio);
  auto kd = -(torch::softmax(zt / t, 1) * torch::log_softmax(zs / t, 1)).sum(1);
  return (kd * weight).mean() * (t * t);
}

}  // namespace functional

/// Module form of functional::wsl_loss.
///
///   distill::WSLLoss wsl(distill::WSLOptions().temperature(2));
///   auto loss = wsl(student_logits, teacher_logits, labels);
class WSLLossImpl : public detail::LossModule<WSLLossImpl> {
 public:
  static constexpr const char* kName = "WSLLoss";
  explicit WSLLossImpl(WSLOptions options = {}) : options(std::move(options)) {
    detail::check_options(this->options);
  }
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher,
                        const torch::Tensor& target = {}) {
    return functional::wsl_loss(student, teacher, target, options);
  }
  WSLOptions options;
};
TORCH_MODULE(WSLLoss);

}  // namespace distill
