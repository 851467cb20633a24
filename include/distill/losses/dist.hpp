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
    return softmax_into(y, z).sub_(1.0 / static_cast<double>(z.size(1)));
  }

  /// Two fresh [N, C] tensors (they become the gradients) and four warm scratch buffers of one
  /// row block each (chunk_rows): a first pass over the blocks gathers the row and column
  /// statistics, a second forms the gradients (recomputing the column-centred copies when there
  /// is more than one block).
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, double beta, double gamma, int64_t wanted) {
    const int64_t n = student.size(0), c = student.size(1), block = chunk_rows(student);
    auto ys_all = centred_softmax(student, wanted & 1, 4), yt_all = centred_softmax(teacher, wanted & 2, 5);
    auto mean_s = ys_all.mean(0, true), mean_t = yt_all.mean(0, true);
    auto row_uv = torch::empty({n, 1}, ys_all.options()), row_uu = torch::empty_like(row_uv), row_vv = torch::empty_like(row_uv);
    auto col_uv = torch::zeros({1, c}, ys_all.options()), col_uu = torch::zeros_like(col_uv), col_vv = torch::zeros_like(col_uv);
    auto for_blocks = [&](auto body) {
      for (int64_t start = 0; start < n; start += block) {
        const int64_t rows = std::min(block, n - start);
        auto ys = ys_all.narrow(0, start, rows), yt = yt_all.narrow(0, start, rows);
        body(start, rows, ys, yt, scratch(0, ys), scratch(1, ys), scratch(2, ys), scratch(3, ys));
      }
    };
    auto centre = [&](torch::Tensor& cs, torch::Tensor& ct, const torch::Tensor& ys, const torch::Tensor& yt) {
      torch::sub_out(cs, ys, mean_s);
      torch::sub_out(ct, yt, mean_t);
    };
    // Inter-class (rows) on the row-centred probabilities; intra-class (columns) on
    // column-centred copies.
    for_blocks([&](int64_t start, int64_t rows, torch::Tensor& ys, torch::Tensor& yt, torch::Tensor s0, torch::Tensor cs,
                   torch::Tensor ct, torch::Tensor) {
      row_uv.narrow(0, start, rows).copy_(rowdot(ys, yt, s0));
      row_uu.narrow(0, start, rows).copy_(rowdot(ys, ys, s0));
      row_vv.narrow(0, start, rows).copy_(rowdot(yt, yt, s0));
      centre(cs, ct, ys, yt);
      col_uv.add_(torch::mul_out(s0, cs, ct).sum(0, true));
      col_uu.add_(torch::mul_out(s0, cs, cs).sum(0, true));
      col_vv.add_(torch::mul_out(s0, ct, ct).sum(0, true));
    });
    auto row = stats(row_uv, row_uu, row_vv), col = stats(col_uv, col_uu, col_vv);
    auto loss = beta * (1 - row.rho.mean()) + gamma * (1 - col.rho.mean());
    if (wanted == 0) return loss;
    // d loss / d y = -beta / N (a v - b u) per row - gamma / C (a v - b u) per column, then
    // softmax's backward y (g - <y, g>) on the probabilities.
    const double wr = -beta / static_cast<double>(n), wc = -gamma / static_cast<double>(c);
    auto ra = row.a * wr, rbu = row.b_u * -wr, rbv = row.b_v * -wr;
    auto ca = col.a * wc, cbu = col.b_u * -wc, cbv = col.b_v * -wc;
    const auto inverse_c = torch::full({}, 1.0 / static_cast<double>(c), ys_all.options());
    for_blocks([&](int64_t start, int64_t rows, torch::Tensor& ys, torch::Tensor& yt, torch::Tensor s0, torch::Tensor cs,
                   torch::Tensor ct, torch::Tensor s3) {
      if (block < n) centre(cs, ct, ys, yt);  // one block: still there from the first pass
      auto a = ra.narrow(0, start, rows);
      if (wanted & 1)
        torch::mul_out(s0, yt, a).addcmul_(ys, rbu.narrow(0, start, rows)).addcmul_(ct, ca).addcmul_(cs, cbu);
      if (wanted & 2)
        torch::mul_out(s3, ys, a).addcmul_(yt, rbv.narrow(0, start, rows)).addcmul_(cs, ca).addcmul_(ct, cbv);
      // The probabilities back in cs and ct (no longer needed), and softmax's fused backward
      // into the rows they came from.
      if (wanted & 1) softmax_backward_into(ys, s0, torch::add_out(cs, ys, inverse_c));
      if (wanted & 2) softmax_backward_into(yt, s3, torch::add_out(ct, yt, inverse_c));
    });
    keep_gradients(ctx, wanted & 1 ? ys_all : torch::Tensor(), wanted & 2 ? yt_all : torch::Tensor());
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
