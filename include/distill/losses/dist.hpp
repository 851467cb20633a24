#pragma once
// DIST: inter- and intra-class Pearson correlation between predictions (docs/reference.md §2.9).

#include "distill/losses/common.hpp"
#include "distill/losses/rows.hpp"
#include "distill/losses/topk.hpp"

namespace distill {

/// Options of dist_loss / DISTLoss: weights of the inter-class (per sample) and intra-class
/// (per class) terms, and a temperature. PaddleClas's DIST has none (tau = 1, the default,
/// docs/reference.md §7.13); the official DIST computes tau^2 * DIST(z_s / tau, z_t / tau),
/// which tau gives (at tau = 1 the two are the same).
struct DISTOptions {
  TORCH_ARG(double, beta) = 1.0;
  TORCH_ARG(double, gamma) = 1.0;
  TORCH_ARG(double, tau) = 1.0;
  /// Logit standardisation (docs/methods.md): both inputs become per-row z-scores first.
  TORCH_ARG(bool, standardize) = false;
};

namespace detail {
/// Checks DISTOptions once, for the functional form and when a module is built.
inline void check_options(const DISTOptions& options) {
  check_weight("dist_loss", "beta", options.beta());
  check_weight("dist_loss", "gamma", options.gamma());
  check_scale("dist_loss", "tau", options.tau());
}

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

  /// Two [N, C] tensors that hold the probabilities and then become the gradients (fresh when
  /// a gradient is wanted), and four warm scratch buffers of one row block each (chunk_rows):
  /// a first pass over the blocks gathers the row and column statistics, a second forms the
  /// gradients (recomputing the column-centred copies when there is more than one block).
  ///
  /// float32 accuracy (docs/reference.md, "DIST in float32"):
  /// - the probabilities are kept as they are, never as p - 1/C: column statistics are centred
  ///   from p and softmax's backward reads p itself (in p - 1/C every probability below the
  ///   rounding step of 1/C is lost, and on a column of such probabilities 1 / (|u| |v| + 1e-8)
  ///   is close to 1e8);
  /// - the column-centred copies do not sum to exactly zero per column in float32; what their
  ///   residual adds to the column term is taken out again (centring's backward would);
  /// - before softmax's backward p (g - <p, g>), each row of g is shifted (which leaves the
  ///   result unchanged) so that it is zero at the row's most probable class: there p is close
  ///   to 1 and g - <p, g> would otherwise cancel to rounding noise.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, double beta, double gamma, int64_t wanted) {
    const int64_t n = student.size(0), c = student.size(1), block = chunk_rows(student);
    auto ps_all = gradient_buffer(wanted & 1, 4, student), pt_all = gradient_buffer(wanted & 2, 5, teacher);
    softmax_into(ps_all, student);
    softmax_into(pt_all, teacher);
    auto mean_s = ps_all.mean(0, true), mean_t = pt_all.mean(0, true);
    const auto inverse_c = torch::full({}, 1.0 / static_cast<double>(c), ps_all.options());
    auto row_uv = torch::empty({n, 1}, ps_all.options()), row_uu = torch::empty_like(row_uv), row_vv = torch::empty_like(row_uv);
    auto col_uv = torch::zeros({1, c}, ps_all.options()), col_uu = torch::zeros_like(col_uv), col_vv = torch::zeros_like(col_uv);
    auto col_s = torch::zeros({1, c}, ps_all.options()), col_t = torch::zeros_like(col_s);  // residual sums of the centred columns
    auto for_blocks = [&](auto body) {
      for (int64_t start = 0; start < n; start += block) {
        const int64_t rows = std::min(block, n - start);
        auto ps = ps_all.narrow(0, start, rows), pt = pt_all.narrow(0, start, rows);
        body(start, rows, ps, pt, scratch(0, ps), scratch(1, ps), scratch(2, ps), scratch(3, ps));
      }
    };
    auto centre_columns = [&](torch::Tensor& cs, torch::Tensor& ct, const torch::Tensor& ps, const torch::Tensor& pt) {
      torch::sub_out(cs, ps, mean_s);
      torch::sub_out(ct, pt, mean_t);
    };
    auto sum_columns = [](const torch::Tensor& a, const torch::Tensor& b, torch::Tensor& buffer) {
      return torch::mul_out(buffer, a, b).sum(0, true);
    };
    // Inter-class (rows: centred by their mean 1/C) and intra-class (columns: centred by the
    // column means of p).
    for_blocks([&](int64_t start, int64_t rows, torch::Tensor& ps, torch::Tensor& pt, torch::Tensor s0, torch::Tensor cs,
                   torch::Tensor ct, torch::Tensor) {
      torch::sub_out(cs, ps, inverse_c);
      torch::sub_out(ct, pt, inverse_c);
      row_uv.narrow(0, start, rows).copy_(rowdot(cs, ct, s0));
      row_uu.narrow(0, start, rows).copy_(rowdot(cs, cs, s0));
      row_vv.narrow(0, start, rows).copy_(rowdot(ct, ct, s0));
      centre_columns(cs, ct, ps, pt);
      col_uv.add_(sum_columns(cs, ct, s0));
      col_uu.add_(sum_columns(cs, cs, s0));
      col_vv.add_(sum_columns(ct, ct, s0));
      col_s.add_(cs.sum(0, true));
      col_t.add_(ct.sum(0, true));
    });
    auto row = stats(row_uv, row_uu, row_vv), col = stats(col_uv, col_uu, col_vv);
    auto loss = beta * (1 - row.rho.mean()) + gamma * (1 - col.rho.mean());
    if (wanted == 0) return loss;
    // d loss / d p = -beta / N (a v - b u) per row - gamma / C (a v - b u) per column, then
    // softmax's backward. Row terms use p and q as they are: centring by 1/C only adds a
    // constant to each row, and the shift below removes any.
    const double wr = -beta / static_cast<double>(n), wc = -gamma / static_cast<double>(c);
    auto ra = row.a * wr, rbu = row.b_u * -wr, rbv = row.b_v * -wr;
    auto ca = col.a * wc, cbu = col.b_u * -wc, cbv = col.b_v * -wc;
    auto residual_s = (ca * col_t + cbu * col_s) / static_cast<double>(n);
    auto residual_t = (ca * col_s + cbv * col_t) / static_cast<double>(n);
    auto backward = [](torch::Tensor& p, torch::Tensor& g, torch::Tensor& copy) {
      g.sub_(g.gather(1, row_argmax(p)));
      softmax_backward_into(p, g, copy.copy_(p));  // it may not write over its input
    };
    for_blocks([&](int64_t start, int64_t rows, torch::Tensor& ps, torch::Tensor& pt, torch::Tensor s0, torch::Tensor cs,
                   torch::Tensor ct, torch::Tensor s3) {
      if (block < n) centre_columns(cs, ct, ps, pt);  // one block: still there from the first pass
      auto a = ra.narrow(0, start, rows);
      if (wanted & 1)
        torch::mul_out(s0, pt, a).addcmul_(ps, rbu.narrow(0, start, rows)).addcmul_(ct, ca).addcmul_(cs, cbu).sub_(residual_s);
      if (wanted & 2)
        torch::mul_out(s3, ps, a).addcmul_(pt, rbv.narrow(0, start, rows)).addcmul_(cs, ca).addcmul_(ct, cbv).sub_(residual_t);
      // The probabilities move to cs and ct (no longer needed); the gradients replace them.
      if (wanted & 1) backward(ps, s0, cs);
      if (wanted & 2) backward(pt, s3, ct);
    });
    keep_gradients(ctx, wanted & 1 ? ps_all : torch::Tensor(), wanted & 2 ? pt_all : torch::Tensor());
    return loss;
  }
};

/// DIST against a top-k teacher (losses/topk.hpp) without a dense teacher, composed of ATen ops
/// (autograd forms the student's gradient). The teacher's probabilities are p on the kept
/// classes and p0 (per row) on the others, so every sum over a row or a column splits into a
/// sum as if all were p0 and corrections at the kept entries; the column sums land in [C]
/// vectors. Squares of deviations are summed as such (never as sum x^2 - N mean^2).
inline torch::Tensor dist_topk(const torch::Tensor& zs, const TopK& top, double tau, double beta, double gamma) {
  const int64_t n = zs.size(0), c = zs.size(1);
  const double rest = static_cast<double>(top.rest_count());
  auto root = [](const torch::Tensor& x) {  // sqrt with a zero gradient at 0 (a constant slice)
    auto positive = x > 0;
    return torch::where(positive, torch::where(positive, x, torch::ones_like(x)).sqrt(), torch::zeros_like(x));
  };
  auto t = topk_softmax(top, tau);
  auto ps = torch::softmax(zs, 1);
  auto kept = [&](const torch::Tensor& x) { return x.gather(1, top.indices); };
  auto scatter_columns = [&](const torch::Tensor& x) {  // [N, k] values summed into their classes, [1, C]
    return torch::zeros({1, c}, x.options()).scatter_add_(1, top.indices.reshape({1, -1}), x.reshape({1, -1}));
  };
  // Rows (inter-class): centred by their means.
  auto us = ps - ps.mean(1, true);
  auto mt = (t.p.sum(1, true) + t.p_rest * rest) / static_cast<double>(c);
  auto us_kept = kept(us);
  auto row_uv = (us_kept * (t.p - mt)).sum(1, true) + (t.p_rest - mt) * (us.sum(1, true) - us_kept.sum(1, true));
  auto row_uu = us.square().sum(1, true);
  auto row_vv = (t.p - mt).square().sum(1, true) + (t.p_rest - mt).square() * rest;
  auto row_rho = row_uv / (root(row_uu) * root(row_vv) + 1e-8);
  // Columns (intra-class): per class over the batch.
  auto uc = ps - ps.mean(0, true);
  auto p0_mean = t.p_rest.mean();
  auto col_mt = (t.p_rest.sum() + scatter_columns(t.p - t.p_rest)) / static_cast<double>(n);
  auto col_uv = torch::matmul(t.p_rest.t(), uc) - col_mt * uc.sum(0, true) + scatter_columns(kept(uc) * (t.p - t.p_rest));
  auto col_uu = uc.square().sum(0, true);
  auto mt_kept = col_mt.expand({n, c}).gather(1, top.indices);
  auto col_vv = (t.p_rest - p0_mean).square().sum() + (p0_mean - col_mt).square() * static_cast<double>(n) +
                scatter_columns((t.p - t.p_rest) * (t.p + t.p_rest - 2 * mt_kept));
  auto col_rho = col_uv / (root(col_uu) * root(col_vv) + 1e-8);
  return beta * (1 - row_rho.mean()) + gamma * (1 - col_rho.mean());
}

}  // namespace detail

namespace functional {

/// beta * (1 - mean_n rho(y_s[n, :], y_t[n, :])) + gamma * (1 - mean_c rho(y_s[:, c], y_t[:, c]))
/// with y = softmax(logits / tau), times tau^2 (tau = 1 unless set). Gradient reaches both inputs. The Pearson correlations use
/// zero-safe norms: a constant slice has correlation 0 and a finite gradient (the reference's
/// is NaN there). Computed by a fused function (detail::DISTFunction).
///
///   auto loss = distill::functional::dist_loss(student_logits, teacher_logits);
inline torch::Tensor dist_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                               const DISTOptions& options = {}) {
  constexpr const char* kLoss = "dist_loss";
  detail::check_options(options);
  detail::check_logits(kLoss, "student", student);
  if (options.standardize()) detail::check_standardize(kLoss, student, teacher);
  if (is_topk_teacher(teacher)) {
    auto zs = detail::compute(student);
    auto top = detail::with_dtype(detail::unpack_topk(kLoss, student, teacher), zs.scalar_type());
    const double tau = options.tau();
    auto loss = detail::dist_topk(tau != 1.0 ? zs / tau : zs, top, tau, options.beta(), options.gamma());
    return tau != 1.0 ? loss * (tau * tau) : loss;
  }
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  auto zs = detail::compute(student), zt = detail::compute(teacher);
  if (options.standardize()) zs = detail::standardize(zs), zt = detail::standardize(zt);
  const double tau = options.tau();
  if (tau != 1.0) zs = zs / tau, zt = zt / tau;
  auto loss = detail::DISTFunction::apply(zs, zt, options.beta(), options.gamma(), detail::wanted_gradients(zs, zt));
  return tau != 1.0 ? loss * (tau * tau) : loss;
}

}  // namespace functional

/// Module form of functional::dist_loss.
///
///   distill::DISTLoss dist(distill::DISTOptions().beta(1).gamma(1));
///   auto loss = dist(student_logits, teacher_logits);
class DISTLossImpl : public detail::LossModule<DISTLossImpl> {
 public:
  static constexpr const char* kName = "DISTLoss";
  explicit DISTLossImpl(DISTOptions options = {}) : options(std::move(options)) {
    detail::check_options(this->options);
  }
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    return functional::dist_loss(student, teacher, options);
  }
  DISTOptions options;
};
TORCH_MODULE(DISTLoss);

/// Recipe keys of DISTLoss (its wrapper's terms: "loss_dist_<A>_<B>"): beta, gamma, tau,
/// standardize.
inline void describe(Schema& s, DISTOptions& o) {
  s.field("beta", o.beta());
  s.field("gamma", o.gamma());
  s.field("tau", o.tau());
  s.field("standardize", o.standardize());
}
namespace detail {
inline const bool dist_registered = register_loss<DISTLoss>("DISTLoss", DISTOptions(), LossTraits{"loss_dist"}, nullptr,
                                                    [](const DISTOptions& o) { return o.tau(); });
}

}  // namespace distill
