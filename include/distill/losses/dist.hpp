#pragma once
// DIST: inter- and intra-class Pearson correlation between predictions (reference 2.9).

#include "distill/losses/common.hpp"
#include "distill/losses/rows.hpp"

namespace distill {

/// Options of dist_loss / DISTLoss: weights of the inter-class (per sample) and intra-class
/// (per class) terms. DIST has no temperature (reference quirk 7.13).
struct DISTOptions {
  TORCH_ARG(double, beta) = 1.0;
  TORCH_ARG(double, gamma) = 1.0;
};

namespace detail {

/// DIST with both gradients formed in the forward pass. For one Pearson correlation
/// rho = <u, v> / (|u| |v| + 1e-8) of centred vectors, d rho / d u = a v - b u with
/// a = 1 / D, b = <u, v> |v| / (|u| D^2), D = |u| |v| + 1e-8 (b = 0 where |u| = 0, where the
/// reference's gradient is NaN); centring's backward leaves such zero-mean directions as they
/// are. Row terms (inter) and column terms (intra) add up, then softmax's backward.
struct DISTFunction : public FusedFunction<DISTFunction, 5> {
  static constexpr const char* kLoss = "dist_loss";
  struct Stats {
    torch::Tensor rho, a, b_u, b_v;  // correlation, and the coefficients of v, u (for d/du) and u (for d/dv)
  };
  static Stats stats(const torch::Tensor& uv, const torch::Tensor& uu, const torch::Tensor& vv) {
    auto nu = uu.clamp_min(0).sqrt(), nv = vv.clamp_min(0).sqrt();
    auto d = nu * nv + 1e-8;
    Stats s;
    s.rho = uv / d;
    s.a = d.reciprocal();
    auto k = uv / (d * d);
    s.b_u = torch::where(nu > 0, k * nv / torch::where(nu > 0, nu, torch::ones_like(nu)), torch::zeros_like(nu));
    s.b_v = torch::where(nv > 0, k * nu / torch::where(nv > 0, nv, torch::ones_like(nv)), torch::zeros_like(nv));
    return s;
  }

  /// softmax(z) - 1 / C (its rows' mean is 1 / C) in the buffer that becomes z's gradient.
  static torch::Tensor centred_softmax(const torch::Tensor& z, bool wanted, size_t slot) {
    auto y = gradient_buffer(wanted, slot, z);
    shift_into(y, z, 1.0);
    return y.div_(exp_rows(y)).sub_(1.0 / static_cast<double>(z.size(1)));
  }

  /// Two fresh [N, C] tensors (they become the gradients) and four warm scratch buffers.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, double beta, double gamma, int64_t wanted) {
    const int64_t n = student.size(0), c = student.size(1);
    auto ys = centred_softmax(student, wanted & 1, 4), yt = centred_softmax(teacher, wanted & 2, 5);
    auto s0 = scratch(0, ys), cs = scratch(1, ys), ct = scratch(2, ys), s3 = scratch(3, ys);
    // Inter-class (rows), on the row-centred probabilities.
    auto row = stats(rowdot(ys, yt, s0), rowdot(ys, ys, s0), rowdot(yt, yt, s0));
    // Intra-class (columns): column-centred copies.
    torch::sub_out(cs, ys, ys.mean(0, true));
    torch::sub_out(ct, yt, yt.mean(0, true));
    auto col_sum = [&](const torch::Tensor& a, const torch::Tensor& b) { return torch::mul_out(s0, a, b).sum(0, true); };
    auto col = stats(col_sum(cs, ct), col_sum(cs, cs), col_sum(ct, ct));
    auto loss = beta * (1 - row.rho.mean()) + gamma * (1 - col.rho.mean());
    // d loss / d y = -beta / N (a v - b u) per row - gamma / C (a v - b u) per column, then
    // softmax's backward y (g - <y, g>) on the probabilities.
    const double wr = -beta / static_cast<double>(n), wc = -gamma / static_cast<double>(c);
    if (wanted & 1)
      torch::mul_out(s0, yt, row.a * wr).addcmul_(ys, row.b_u * -wr).addcmul_(ct, col.a * wc).addcmul_(cs, col.b_u * -wc);
    if (wanted & 2)
      torch::mul_out(s3, ys, row.a * wr).addcmul_(yt, row.b_v * -wr).addcmul_(cs, col.a * wc).addcmul_(ct, col.b_v * -wc);
    torch::Tensor grad_s, grad_t;
    if (wanted & 1) {
      ys.add_(1.0 / static_cast<double>(c));
      grad_s = ys.mul_(s0.sub_(rowdot(ys, s0, cs)));
    }
    if (wanted & 2) {
      yt.add_(1.0 / static_cast<double>(c));
      grad_t = yt.mul_(s3.sub_(rowdot(yt, s3, ct)));
    }
    keep_gradients(ctx, grad_s, grad_t);
    return loss;
  }
};

}  // namespace detail

namespace functional {

/// beta * (1 - mean_n rho(y_s[n, :], y_t[n, :])) + gamma * (1 - mean_c rho(y_s[:, c], y_t[:, c]))
/// with y = softmax(logits). Gradient reaches both inputs. The Pearson correlations use
/// zero-safe norms: a constant slice has correlation 0 and a finite gradient (the reference's
/// is NaN there). Computed by a fused function (detail::DISTFunction).
///
///   auto loss = distill::functional::dist_loss(student_logits, teacher_logits);
inline torch::Tensor dist_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                               const DISTOptions& options = {}) {
  constexpr const char* kLoss = "dist_loss";
  detail::check_logits(kLoss, "student", student);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  auto zs = detail::compute(student), zt = detail::compute(teacher);
  return detail::DISTFunction::apply(zs, zt, options.beta(), options.gamma(), detail::wanted_gradients(zs, zt));
}

}  // namespace functional

/// Module form of functional::dist_loss.
///
///   distill::DISTLoss dist(distill::DISTOptions().beta(1).gamma(1));
///   auto loss = dist(student_logits, teacher_logits);
class DISTLossImpl : public detail::LossModule<DISTLossImpl> {
 public:
  static constexpr const char* kName = "DISTLoss";
  explicit DISTLossImpl(DISTOptions options = {}) : options(std::move(options)) {}
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    return functional::dist_loss(student, teacher, options);
  }
  DISTOptions options;
};
TORCH_MODULE(DISTLoss);

}  // namespace distill
