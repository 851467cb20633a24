#pragma once
// Decoupled knowledge distillation: target-class and non-target-class KD (reference 2.6).

#include <limits>

#include "distill/losses/common.hpp"

namespace distill {

/// Options of dkd_loss / DKDLoss, defaults as in the reference (T = 1, alpha = beta = 1).
/// `use_target_as_gt`: ignore the given labels and use the teacher's argmax as the target
/// class (the reference's flag of the same name).
struct DKDOptions {
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(double, alpha) = 1.0;
  TORCH_ARG(double, beta) = 1.0;
  TORCH_ARG(bool, use_target_as_gt) = false;
};

namespace detail {
/// Checks DKDOptions once, for the functional form and when a module is built.
inline void check_options(const DKDOptions& options) {
  constexpr const char* kLoss = "dkd_loss";
  detail::check_positive(kLoss, "temperature", options.temperature());
}
}  // namespace detail

namespace functional {

/// alpha * TCKD + beta * NCKD, each scaled by T^2 / N:
/// - TCKD: KL between the binary (target, rest) distributions of teacher and student;
/// - NCKD: KL between softmax(z / T - 1000 * onehot(target)) of teacher and student, i.e. the
///   distributions over the non-target classes.
/// `target` holds class indices [N] or [N, 1]; undefined means argmax of the teacher.
/// No gradient reaches the teacher. There is no warm-up factor (as in the reference).
///
///   auto loss = distill::functional::dkd_loss(student_logits, teacher_logits, labels,
///                                             distill::DKDOptions().beta(8).temperature(4));
inline torch::Tensor dkd_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                              const torch::Tensor& target, const DKDOptions& options = {}) {
  constexpr const char* kLoss = "dkd_loss";
  detail::check_options(options);
  detail::check_logits(kLoss, "student", student, /*min_classes=*/2);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  const double t = options.temperature();
  auto zs = detail::compute(student) / t;
  auto zt = detail::compute(teacher).detach() / t;
  auto index = detail::target_or_argmax(
      kLoss, options.use_target_as_gt() ? torch::Tensor() : target, zt);

  // Binary log-probabilities [log b_target, log b_rest]. The reference takes log of summed
  // probabilities, which is -inf (then NaN) once the target probability underflows (quirk
  // 7.8); logsumexp over the log-softmax gives the same value wherever that one is finite.
  auto binary = [&](const torch::Tensor& z) {
    auto log_p = torch::log_softmax(z, 1);
    auto rest = log_p.scatter(1, index, -std::numeric_limits<double>::infinity()).logsumexp(1, true);
    return torch::cat({log_p.gather(1, index), rest}, 1);
  };
  auto log_bs = binary(zs), log_bt = binary(zt);
  auto tckd = (log_bt.exp() * (log_bt - log_bs)).sum();

  // The reference's -1000 trick on the target logit, kept literally so values match it.
  auto suppress = [&](const torch::Tensor& z) {
    return torch::log_softmax(z.scatter(1, index, z.gather(1, index) - 1000.0), 1);
  };
  auto log_ns = suppress(zs), log_nt = suppress(zt);
  auto nckd = (log_nt.exp() * (log_nt - log_ns)).sum();

  return (options.alpha() * tckd + options.beta() * nckd) * (t * t / student.size(0));
}

}  // namespace functional

/// Module form of functional::dkd_loss.
///
///   distill::DKDLoss dkd(distill::DKDOptions().alpha(1).beta(8));
///   auto loss = dkd(student_logits, teacher_logits, labels);
class DKDLossImpl : public detail::LossModule<DKDLossImpl> {
 public:
  static constexpr const char* kName = "DKDLoss";
  explicit DKDLossImpl(DKDOptions options = {}) : options(std::move(options)) {
    detail::check_options(this->options);
  }
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher,
                        const torch::Tensor& target = {}) {
    return functional::dkd_loss(student, teacher, target, options);
  }
  DKDOptions options;
};
TORCH_MODULE(DKDLoss);

}  // namespace distill
