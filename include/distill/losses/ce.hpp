#pragma once
// Cross-entropy with hard, label-smoothed or soft (teacher-logit) targets (reference 2.2).

#include "distill/losses/common.hpp"

namespace distill {

/// Options of ce_loss / CELoss. `label_smoothing` is the reference's `epsilon`; 0 disables it.
struct CEOptions {
  TORCH_ARG(double, label_smoothing) = 0.0;
};

namespace functional {

/// Mean over the batch of -sum_c y_c log softmax(logits)_c, where y is
/// - one-hot(target) for integer class indices [N] or [N, 1], smoothed to
///   (1 - eps) one-hot + eps / C when label_smoothing = eps > 0;
/// - softmax(target) for a floating [N, C] target: the target is a teacher's LOGITS (the
///   reference's SSLD-style DistillationCELoss). No gradient reaches it.
///
/// Deviations from the reference, both to avoid silent surprises:
/// - label_smoothing outside [0, 1) is an error (the reference silently ignores it);
/// - with soft targets and label_smoothing, softmax(target) is smoothed; the reference smooths
///   the raw teacher logits (its quirk 7.7), which is not a distribution.
///
///   auto hard = distill::functional::ce_loss(logits, labels);
///   auto soft = distill::functional::ce_loss(student_logits, teacher_logits);
inline torch::Tensor ce_loss(const torch::Tensor& logits, const torch::Tensor& target,
                             const CEOptions& options = {}) {
  constexpr const char* kLoss = "ce_loss";
  detail::check_logits(kLoss, "logits", logits);
  const double eps = options.label_smoothing();
  if (!(eps >= 0 && eps < 1)) detail::fail(kLoss, ": label_smoothing must be in [0, 1), got ", eps);
  auto log_p = torch::log_softmax(detail::compute(logits), 1);
  const double classes = static_cast<double>(logits.size(1));
  if (target.defined() && target.is_floating_point()) {
    detail::check_same(kLoss, "logits", logits, "target", target);
    auto y = torch::softmax(detail::compute(target).detach(), 1);
    if (eps > 0) y = y * (1 - eps) + eps / classes;
    return -(y * log_p).sum(1).mean();
  }
  auto index = detail::check_target(kLoss, target, logits).unsqueeze(1);
  auto nll = -log_p.gather(1, index).squeeze(1);
  if (eps == 0) return nll.mean();
  // (1 - eps) * nll + eps / C * sum_c(-log p_c): the smoothed label without a one-hot tensor.
  return ((1 - eps) * nll - (eps / classes) * log_p.sum(1)).mean();
}

}  // namespace functional

/// Module form of functional::ce_loss.
///
///   distill::CELoss ce(distill::CEOptions().label_smoothing(0.1));
///   auto loss = ce(logits, labels);
class CELossImpl : public detail::LossModule<CELossImpl> {
 public:
  static constexpr const char* kName = "CELoss";
  explicit CELossImpl(CEOptions options = {}) : options(std::move(options)) {}
  torch::Tensor forward(const torch::Tensor& logits, const torch::Tensor& target) {
    return functional::ce_loss(logits, target, options);
  }
  CEOptions options;
};
TORCH_MODULE(CELoss);

}  // namespace distill
