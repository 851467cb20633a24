#pragma once
// SKD: KD between layer-normalised, scaled logits plus a CE term (reference 2.8).

#include "distill/losses/common.hpp"

namespace distill {

/// Options of skd_loss / SKDLoss with the reference wrapper's defaults (T = 1, multiplier 2,
/// alpha 0.9).
struct SKDOptions {
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(double, multiplier) = 2.0;
  TORCH_ARG(double, alpha) = 0.9;
};

namespace detail {
/// Checks SKDOptions once, for the functional form and when a module is built.
inline void check_options(const SKDOptions& options) {
  constexpr const char* kLoss = "skd_loss";
  detail::check_positive(kLoss, "temperature", options.temperature());
}
}  // namespace detail

namespace functional {

/// With z' = multiplier * (z - mean) / sqrt(var + 1e-7) per sample over the classes (biased
/// variance, no affine parameters):
///   alpha * T^2 * mean_n(-sum_c softmax(z_t' / T) log softmax(z_s' / T))
///   + (1 - alpha) * mean_n(-log softmax(z_s')[target]).
/// The CE term uses the normalised, scaled student logits (reference quirk 7.12), so SKD
/// already contains the ground-truth term. `target` undefined means argmax of the teacher.
/// Gradient reaches both inputs.
///
///   auto loss = distill::functional::skd_loss(student_logits, teacher_logits, labels);
inline torch::Tensor skd_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                              const torch::Tensor& target, const SKDOptions& options = {}) {
  constexpr const char* kLoss = "skd_loss";
  detail::check_options(options);
  detail::check_logits(kLoss, "student", student);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  const double t = options.temperature();
  auto normalise = [&](const torch::Tensor& z) {
    auto centred = z - z.mean(1, true);
    return centred / (centred.square().mean(1, true) + 1e-7).sqrt() * options.multiplier();
  };
  auto index = detail::target_or_argmax(kLoss, target, teacher.detach());
  auto zs = normalise(detail::compute(student)), zt = normalise(detail::compute(teacher));
  auto kd = -(torch::softmax(zt / t, 1) * torch::log_softmax(zs / t, 1)).sum(1).mean() * (t * t);
  auto ce = -torch::log_softmax(zs, 1).gather(1, index).mean();
  return options.alpha() * kd + (1 - options.alpha()) * ce;
}

}  // namespace functional

/// Module form of functional::skd_loss.
///
///   distill::SKDLoss skd;
///   auto loss = skd(student_logits, teacher_logits, labels);
class SKDLossImpl : public detail::LossModule<SKDLossImpl> {
 public:
  static constexpr const char* kName = "SKDLoss";
  explicit SKDLossImpl(SKDOptions options = {}) : options(std::move(options)) {
    detail::check_options(this->options);
  }
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher,
                        const torch::Tensor& target = {}) {
    return functional::skd_loss(student, teacher, target, options);
  }
  SKDOptions options;
};
TORCH_MODULE(SKDLoss);

}  // namespace distill
