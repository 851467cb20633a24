#pragma once
// Weighted soft labels: KD weighted per sample by how much worse the student is (reference 2.7).

#include "distill/losses/common.hpp"
#include "distill/losses/rows.hpp"

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

/// WSL with both gradients formed in the forward pass (w is constant to autograd). With
/// y = (z - rowmax z) / T, e = exp(y), S = sum e, and X = sum_c e_t y_s / S_t:
///   kd = -sum_c p_t log p_s = log S_s - X,
///   d loss / d z_s = T / N w (p_s - p_t),  d loss / d z_t = -T / N w p_t (y_s - X).
/// Four exponential passes (two at T = 1 for w); one fresh [N, C] tensor per gradient, two
/// warm scratch buffers.
struct WSLFunction : public torch::autograd::Function<WSLFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, const torch::Tensor& index, double t, int64_t wanted) {
    const double n = static_cast<double>(student.size(0));
    auto s0 = scratch(0, student), et = scratch(1, teacher);
    auto hard_ce = [&](const torch::Tensor& z) {  // log-sum-exp minus the target logit, at T = 1
      auto max = shift_into(s0, z, 1.0);
      return max + exp_rows(s0).log_() - z.gather(1, index);
    };
    auto ratio = (hard_ce(student) / (hard_ce(teacher) + 1e-7)).clamp_min_(0);
    auto kw = (1 - torch::exp(-ratio)) * (t / n);  // T / N w, [N, 1]
    shift_into(s0, teacher, 1 / t);
    torch::exp_out(et, s0);
    auto st = et.sum(1, true);
    auto grad_s = torch::empty_like(student, torch::MemoryFormat::Contiguous);
    shift_into(grad_s, student, 1 / t);  // y_s
    torch::Tensor grad_t;
    if (wanted & 2) grad_t = torch::empty_like(teacher, torch::MemoryFormat::Contiguous);
    auto x = rowdot(et, grad_s, grad_t.defined() ? grad_t : s0) / st;
    if (grad_t.defined()) {
      torch::add_out(grad_t, -x, grad_s).mul_(et).mul_(-kw / st);
    }
    auto ss = exp_rows(grad_s);
    auto loss = (kw * (ss.log() - x)).sum() * t;
    if (wanted & 1)
      grad_s.mul_(kw / ss).addcmul_(et, -kw / st);
    else
      grad_s = torch::Tensor();
    keep_gradients(ctx, grad_s, grad_t);
    return loss;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_output) {
    return hand_over(ctx, grad_output[0], 5, "wsl_loss");
  }
};

}  // namespace detail

namespace functional {

/// T^2 * mean_n(w_n * kd_n) where
/// - kd_n = -sum_c softmax(z_t / T)_c log softmax(z_s / T)_c (a cross-entropy, as in the
///   reference: it includes the teacher's entropy),
/// - w_n = 1 - exp(-max(ce_s / (ce_t + 1e-7), 0)) from the hard-label cross-entropies of the
///   detached student and teacher logits at T = 1 (no gradient through w).
/// `target` holds class indices [N] or [N, 1]; undefined means argmax of the teacher.
/// Gradient reaches both inputs through kd_n. Computed by a fused function (detail::WSLFunction).
///
///   auto loss = distill::functional::wsl_loss(student_logits, teacher_logits, labels);
inline torch::Tensor wsl_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                              const torch::Tensor& target, const WSLOptions& options = {}) {
  constexpr const char* kLoss = "wsl_loss";
  detail::check_options(options);
  detail::check_logits(kLoss, "student", student);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  auto zs = detail::compute(student), zt = detail::compute(teacher);
  auto index = detail::target_or_argmax(kLoss, target, zt.detach());
  return detail::WSLFunction::apply(zs, zt, index, options.temperature(), detail::wanted_gradients(zs, zt));
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
