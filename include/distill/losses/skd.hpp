#pragma once
// SKD: KD between layer-normalised, scaled logits plus a CE term (reference 2.8).

#include "distill/losses/common.hpp"
#include "distill/losses/rows.hpp"

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

/// SKD with both gradients formed in the forward pass. With y = (z - mean) / sigma (layer
/// normalisation), the KD logits L = m y / T (shifted by their row max) and the CE logits T L:
///   d loss / d y_s = alpha T m / N (p_s - p_t) + (1 - alpha) m / N (p1_s - onehot),
///   d loss / d y_t = -alpha T m / N p_t (L_s - X),  X = sum_c p_t L_s,
/// and layer normalisation's backward g_z = (g - mean(g) - y mean(g y)) / sigma.
/// Two exponential passes (three when T != 1); one fresh [N, C] tensor per gradient, two warm
/// scratch buffers.
struct SKDFunction : public FusedFunction<SKDFunction, 7> {
  static constexpr const char* kLoss = "skd_loss";
  struct Norm {
    torch::Tensor mean, sigma;  // [N, 1]
    Norm(const torch::Tensor& z, torch::Tensor& buffer) : mean(z.mean(1, true)) {
      torch::sub_out(buffer, z, mean);
      sigma = (rowdot(buffer, buffer, buffer) / static_cast<double>(z.size(1)) + 1e-7).sqrt_();
    }
    /// out = scale * y minus its row max, in one pass after the max (the mean cancels).
    void logits_into(torch::Tensor& out, const torch::Tensor& z, double scale) const {
      auto a = scale / sigma;
      auto top = scale > 0 ? z.amax(1, true) : z.amin(1, true);
      torch::addcmul_out(out, -a * top, z, a);
    }
    /// g (a gradient with respect to y) becomes the gradient with respect to z:
    /// (g - mean(g) - y mean(g y)) / sigma = (g - k z + k mean - mean(g)) / sigma.
    void backward(torch::Tensor& g, const torch::Tensor& z, torch::Tensor buffer) const {
      const double c = static_cast<double>(z.size(1));
      auto sum_g = g.sum(1, true);
      auto k = (rowdot(g, z, buffer) - mean * sum_g) / (c * sigma * sigma);
      g.addcmul_(z, -k).add_(k * mean - sum_g / c).div_(sigma);
    }
  };

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, const torch::Tensor& index, double t, double m,
                               double alpha, int64_t wanted) {
    const double n = static_cast<double>(student.size(0)), kd_k = alpha * t * m / n, ce_k = (1 - alpha) * m / n;
    auto s0 = scratch(0, student), et = scratch(1, teacher);
    const Norm norm_t(teacher, s0), norm_s(student, s0);
    norm_t.logits_into(et, teacher, m / t);
    auto st = exp_rows(et);
    auto grad_s = gradient_buffer(wanted & 1, 2, student);
    norm_s.logits_into(grad_s, student, m / t);  // L_s
    torch::Tensor grad_t;
    if (wanted & 2) grad_t = gradient_buffer(true, 3, teacher);
    auto x = rowdot(et, grad_s, grad_t.defined() ? grad_t : s0) / st;
    if (grad_t.defined()) {
      torch::add_out(grad_t, -x, grad_s).mul_(et).mul_(-kd_k / st);
      norm_t.backward(grad_t, teacher, s0);
    }
    // The CE term is at temperature 1 on the same normalised, scaled logits: T L_s.
    auto target = grad_s.gather(1, index) * t;
    torch::Tensor e1, s1;
    if (t != 1.0) {
      e1 = s0;
      scale_into(e1, grad_s, t);
      s1 = exp_rows(e1);
    }
    auto ss = exp_rows(grad_s);
    if (!e1.defined()) s1 = ss;
    auto kd = ss.log() - x, ce = s1.log() - target;
    auto loss = (alpha * t * t * kd.sum() + (1 - alpha) * ce.sum()) / n;
    if (wanted & 1) {
      grad_s.mul_((e1.defined() ? kd_k : kd_k + ce_k) / ss).addcmul_(et, -kd_k / st);
      if (e1.defined()) grad_s.addcmul_(e1, ce_k / s1);
      grad_s.scatter_add_(1, index, torch::full_like(ss, -ce_k));
      norm_s.backward(grad_s, student, s0);
    } else {
      grad_s = torch::Tensor();
    }
    keep_gradients(ctx, grad_s, grad_t);
    return loss;
  }
};

}  // namespace detail

namespace functional {

/// With z' = multiplier * (z - mean) / sqrt(var + 1e-7) per sample over the classes (biased
/// variance, no affine parameters):
///   alpha * T^2 * mean_n(-sum_c softmax(z_t' / T) log softmax(z_s' / T))
///   + (1 - alpha) * mean_n(-log softmax(z_s')[target]).
/// The CE term uses the normalised, scaled student logits (reference quirk 7.12), so SKD
/// already contains the ground-truth term. `target` undefined means argmax of the teacher.
/// Gradient reaches both inputs. Computed by a fused function (detail::SKDFunction).
///
///   auto loss = distill::functional::skd_loss(student_logits, teacher_logits, labels);
inline torch::Tensor skd_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                              const torch::Tensor& target, const SKDOptions& options = {}) {
  constexpr const char* kLoss = "skd_loss";
  detail::check_options(options);
  detail::check_logits(kLoss, "student", student);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  auto index = detail::target_or_argmax(kLoss, target, teacher.detach());
  auto zs = detail::compute(student), zt = detail::compute(teacher);
  return detail::SKDFunction::apply(zs, zt, index, options.temperature(), options.multiplier(), options.alpha(),
                                    detail::wanted_gradients(zs, zt));
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
