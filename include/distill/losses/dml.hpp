#pragma once
// Deep mutual learning: symmetric KL between two networks' distributions (reference 2.3).

#include "distill/losses/common.hpp"
#include "distill/losses/rows.hpp"

namespace distill {

/// Options of dml_loss / DMLLoss, defaults as in the reference.
/// `act`: "softmax" (over the last axis), "sigmoid" (elementwise) or "none" (the inputs are
/// already probabilities).
struct DMLOptions {
  TORCH_ARG(std::string, act) = "softmax";
  TORCH_ARG(double, eps) = 1e-12;
  TORCH_ARG(bool, sum_across_class_dim) = false;
};

namespace detail {

/// DML with softmax activations, both gradients formed in the forward pass. With
/// r = (q + eps) / (p + eps) and D = log r, the loss is 1/2 sum (q - p) D and
///   d/dp = (1 - r - D) / 2,  d/dq = (1 - 1/r + D) / 2,
/// each followed by softmax's backward p (g - <p, g>). Two exponential passes and one log;
/// one fresh [N, C] tensor per gradient; the rest runs in row blocks (chunk_rows) through four
/// warm scratch buffers of one block each.
struct DMLSoftmaxFunction : public FusedFunction<DMLSoftmaxFunction, 5> {
  static constexpr const char* kLoss = "dml_loss";
  /// Softmax of z in the buffer that becomes z's gradient.
  static torch::Tensor softmax_into(const torch::Tensor& z, bool wanted, size_t slot) {
    auto out = gradient_buffer(wanted, slot, z);
    shift_into(out, z, 1.0);
    return out.div_(exp_rows(out));
  }
  /// g <- p (g - <p, g>), then p <- that (p's buffer becomes the gradient).
  static torch::Tensor softmax_backward(torch::Tensor& p, torch::Tensor& g, torch::Tensor buffer) {
    return p.mul_(g.sub_(rowdot(p, g, buffer)));
  }

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, double eps, double scale, int64_t wanted) {
    auto p_all = softmax_into(student, wanted & 1, 4), q_all = softmax_into(teacher, wanted & 2, 5);
    const int64_t rows = p_all.size(0), block = chunk_rows(p_all);
    torch::Tensor loss;
    for (int64_t start = 0; start < rows; start += block) {
      // Views of contiguous row blocks: the in-place updates below land in p_all and q_all.
      auto p = p_all.narrow(0, start, std::min(block, rows - start)), q = q_all.narrow(0, start, p.size(0));
      auto r = scratch(0, p), d = scratch(1, p), g = scratch(2, p), buffer = scratch(3, p);
      torch::add_out(r, q, torch::full({}, eps, q.options())).div_(p.add_(eps));
      p.sub_(eps);
      torch::log_out(d, r);
      auto part = rowdot(q, d, buffer).sum() - rowdot(p, d, buffer).sum();
      loss = loss.defined() ? loss.add_(part) : part;
      if (wanted & 2) {
        torch::reciprocal_out(g, r).neg_().add_(1).add_(d).mul_(0.5 * scale);  // (1 - 1/r + D) / 2
        softmax_backward(q, g, buffer);
      }
      if (wanted & 1) {
        r.neg_().add_(1).sub_(d).mul_(0.5 * scale);  // (1 - r - D) / 2
        softmax_backward(p, r, buffer);
      }
    }
    keep_gradients(ctx, wanted & 1 ? p_all : torch::Tensor(), wanted & 2 ? q_all : torch::Tensor());
    return loss.mul_(0.5 * scale);
  }
};

}  // namespace detail

namespace functional {

/// With p = act(student), q = act(teacher), k(a, b) = b log((b + eps) / (a + eps)):
/// sum of (k(p, q) + k(q, p)) / 2 over the class axis, averaged over the other axes
/// (= batch mean of the symmetric KL). With sum_across_class_dim the reference's extra factor
/// C (the class count) is kept: the result is C times larger. Gradient reaches both inputs,
/// so both networks learn from each other. No temperature (reference quirk 7.11). With softmax
/// (the recipes' activation) a fused function computes it (detail::DMLSoftmaxFunction).
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
  const int64_t classes = student.size(-1);
  const double rows = static_cast<double>(student.numel() / classes);
  const double scale = options.sum_across_class_dim() ? classes / rows : 1.0 / rows;
  if (options.act() == "softmax")
    return detail::DMLSoftmaxFunction::apply(detail::compute(student).reshape({-1, classes}),
                                             detail::compute(teacher).reshape({-1, classes}), eps, scale,
                                             detail::wanted_gradients(student, teacher));
  auto activate = [&](const torch::Tensor& x) {
    auto y = detail::compute(x);
    if (options.act() == "sigmoid") return torch::sigmoid(y);
    return y;
  };
  auto p = activate(student), q = activate(teacher);
  auto log_p = (p + eps).log(), log_q = (q + eps).log();
  return ((q - p) * (log_q - log_p)).sum() * (0.5 * scale);
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
