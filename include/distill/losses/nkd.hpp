#pragma once
// NKD: normalized knowledge distillation (Yang et al., ICCV 2023; docs/methods.md). The
// target class is learned from the teacher's target probability, the other classes from the
// teacher's distribution renormalised over them.

#include <limits>

#include "distill/losses/common.hpp"

namespace distill {

/// Options of nkd_loss / NKDLoss, defaults as in the official code (T = 1, gamma = 1.5).
struct NKDOptions {
  TORCH_ARG(double, temperature) = 1.0;
  /// Weight of the non-target term.
  TORCH_ARG(double, gamma) = 1.5;
};

namespace detail {
inline void check_options(const NKDOptions& options) {
  constexpr const char* kLoss = "nkd_loss";
  check_scale(kLoss, "temperature", options.temperature());
  check_weight(kLoss, "gamma", options.gamma());
}
}  // namespace detail

namespace functional {

/// With y the target, p_t = softmax(z_t), and over the non-target classes only
/// (softmax of the C - 1 remaining logits) q_s = softmax(z_s \ y / T), q_t = softmax(z_t \ y / T):
///   loss = -mean_n p_t[y] log softmax(z_s)[y] - gamma T^2 mean_n sum_{c != y} q_t[c] log q_s[c]
/// (the second part is a cross-entropy, as in the official code: it includes the teacher's
/// entropy). `target` holds class indices [N] or [N, 1]; undefined means argmax of the teacher.
/// No gradient reaches the teacher. Logits are [N, C] with C >= 2.
///
///   auto loss = distill::functional::nkd_loss(student_logits, teacher_logits, labels,
///                                             distill::NKDOptions().temperature(1).gamma(1.5));
inline torch::Tensor nkd_loss(const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& target,
                              const NKDOptions& options = {}) {
  constexpr const char* kLoss = "nkd_loss";
  detail::check_options(options);
  detail::check_logits(kLoss, "student", student, /*min_classes=*/2);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  auto zs = detail::compute(student), zt = detail::compute(teacher).detach();
  auto index = detail::target_or_argmax(kLoss, target, zt);
  const double t = options.temperature();
  auto target_term = -(torch::softmax(zt, 1).gather(1, index) * torch::log_softmax(zs, 1).gather(1, index)).mean();
  // The target column leaves the softmax as -inf; its product is masked to 0 (not -inf * 0).
  auto is_target = torch::zeros_like(zs, torch::kBool).scatter_(1, index, true);
  const double inf = std::numeric_limits<double>::infinity();
  auto log_qs = torch::log_softmax((zs / t).masked_fill(is_target, -inf), 1).masked_fill(is_target, 0);
  auto qt = torch::softmax((zt / t).masked_fill(is_target, -inf), 1);
  auto non_target = -(qt * log_qs).sum(1).mean() * (options.gamma() * t * t);
  return target_term + non_target;
}

}  // namespace functional

/// Module form of functional::nkd_loss.
///
///   distill::NKDLoss nkd(distill::NKDOptions().gamma(1.5));
///   auto loss = nkd(student_logits, teacher_logits, labels);
class NKDLossImpl : public detail::LossModule<NKDLossImpl> {
 public:
  static constexpr const char* kName = "NKDLoss";
  explicit NKDLossImpl(NKDOptions options = {}) : options(std::move(options)) { detail::check_options(this->options); }
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& target = {}) {
    return functional::nkd_loss(student, teacher, target, options);
  }
  NKDOptions options;
};
TORCH_MODULE(NKDLoss);

/// Recipe keys of NKDLoss (its wrapper's terms: "loss_nkd_<A>_<B>"): temperature, gamma.
inline void describe(Schema& s, NKDOptions& o) {
  s.field("temperature", o.temperature());
  s.field("gamma", o.gamma());
}
namespace detail {
inline const bool nkd_registered =
    register_loss<NKDLoss>("NKDLoss", NKDOptions(), LossTraits{"loss_nkd"}.from_cache(CachedTeacher::dense), nullptr,
                           [](const NKDOptions& o) { return o.temperature(); });
}

}  // namespace distill
