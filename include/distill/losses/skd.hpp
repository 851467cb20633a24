#pragma once
// SKD: KD between layer-normalised, scaled logits plus a CE term (docs/reference.md §2.8).

#include "distill/losses/common.hpp"
#include "distill/losses/rows.hpp"
#include "distill/losses/topk.hpp"

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
  detail::check_scale(kLoss, "temperature", options.temperature());
  detail::check_scale(kLoss, "multiplier", options.multiplier());
  if (!(options.alpha() >= 0 && options.alpha() <= 1)) fail(kLoss, ": alpha must be in [0, 1], got ", options.alpha());
}

/// SKD with both gradients formed in the forward pass. With y = (z - mean) / sigma (layer
/// normalisation), the KD logits L = m y / T (shifted by their row max) and the CE logits T L:
///   d loss / d y_s = alpha T m / N (p_s - p_t) + (1 - alpha) m / N (p1_s - onehot),
///   d loss / d y_t = -alpha T m / N p_t (L_s - X),  X = sum_c p_t L_s,
/// then layer normalisation's backward (ATen's fused kernel). Per row block (chunk_rows): two
/// exponential passes (three when T != 1), five warm scratch buffers of one block each; the
/// only [N, C] tensors are the gradients.
struct SKDFunction : public FusedFunction<SKDFunction, 7> {
  static constexpr const char* kLoss = "skd_loss";
  struct Norm {
    torch::Tensor mean, rstd;  // [rows, 1]; rstd = 1 / sqrt(var + 1e-7), as layer norm keeps it
    Norm(const torch::Tensor& z, torch::Tensor& buffer) : mean(z.mean(1, true)) {
      torch::sub_out(buffer, z, mean);
      rstd = (rowdot(buffer, buffer, buffer) / static_cast<double>(z.size(1)) + 1e-7).rsqrt_();
    }
    /// out = scale * y minus its row max, in one pass after the max (the mean cancels).
    void logits_into(torch::Tensor& out, const torch::Tensor& z, double scale) const {
      auto a = rstd * scale;
      auto top = scale > 0 ? z.amax(1, true) : z.amin(1, true);
      torch::addcmul_out(out, -a * top, z, a);
    }
    /// The gradient with respect to z of a gradient g with respect to y (a fresh tensor).
    torch::Tensor backward(const torch::Tensor& g, const torch::Tensor& z) const {
      return std::get<0>(at::native_layer_norm_backward(g, z, {z.size(1)}, mean, rstd, {}, {},
                                                        {true, false, false}));
    }
  };

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, const torch::Tensor& index, double t, double m,
                               double alpha, int64_t wanted) {
    const int64_t rows = student.size(0), block = chunk_rows(student);
    const double n = static_cast<double>(rows), kd_k = alpha * t * m / n, ce_k = (1 - alpha) * m / n;
    torch::Tensor grad_s, grad_t, loss;
    // One block: its gradient is the whole one; several: copied into place.
    auto place = [&](torch::Tensor& whole, const torch::Tensor& part, int64_t start) {
      if (part.size(0) == rows) return void(whole = part);
      if (!whole.defined()) whole = torch::empty(student.sizes(), part.options());
      whole.narrow(0, start, part.size(0)).copy_(part);
    };
    for (int64_t start = 0; start < rows; start += block) {
      const int64_t height = std::min(block, rows - start);
      auto zs = student.narrow(0, start, height), zt = teacher.narrow(0, start, height);
      auto idx = index.narrow(0, start, height);
      auto s0 = scratch(0, zs), et = scratch(1, zs), ls = scratch(2, zs);
      const Norm norm_t(zt, s0), norm_s(zs, s0);
      norm_t.logits_into(et, zt, m / t);
      auto st = exp_rows(et);
      norm_s.logits_into(ls, zs, m / t);  // L_s
      auto x = rowdot(et, ls, s0) / st;
      et.mul_(-kd_k / st);  // -alpha T m / N p_t, in both gradients
      if (wanted & 2) {
        auto g = scratch(3, zs);
        torch::add_out(g, -x, ls).mul_(et);
        place(grad_t, norm_t.backward(g, zt), start);
      }
      // The CE term is at temperature 1 on the same normalised, scaled logits: T L_s.
      auto target = ls.gather(1, idx) * t;
      torch::Tensor e1, s1;
      if (t != 1.0) {
        e1 = scratch(4, zs);
        scale_into(e1, ls, t);
        s1 = exp_rows(e1);
      }
      auto ss = exp_rows(ls);
      if (!e1.defined()) s1 = ss;
      auto kd = ss.log() - x, ce = s1.log() - target;
      auto part = (alpha * t * t * kd.sum() + (1 - alpha) * ce.sum()) / n;
      loss = loss.defined() ? loss.add_(part) : part;
      if (wanted & 1) {
        ls.mul_((e1.defined() ? kd_k : kd_k + ce_k) / ss).add_(et);
        if (e1.defined()) ls.addcmul_(e1, ce_k / s1);
        ls.scatter_add_(1, idx, torch::full_like(ss, -ce_k));
        place(grad_s, norm_s.backward(ls, zs), start);
      }
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
/// The CE term uses the normalised, scaled student logits (docs/reference.md §7.12), so SKD
/// already contains the ground-truth term. `target` undefined means argmax of the teacher.
/// Gradient reaches both inputs. Computed by a fused function (detail::SKDFunction).
///
///   auto loss = distill::functional::skd_loss(student_logits, teacher_logits, labels);
inline torch::Tensor skd_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                              const torch::Tensor& target, const SKDOptions& options = {}) {
  constexpr const char* kLoss = "skd_loss";
  detail::check_options(options);
  detail::check_logits(kLoss, "student", student);
  if (is_topk_teacher(teacher)) {
    // Layer-normalising the smoothed logits (rest classes at 0) keeps the top-k form: each row
    // shifted and scaled by m / sigma, so the teacher's side is KD on values * m / sigma.
    auto zs = detail::compute(student);
    auto top = detail::with_dtype(detail::unpack_topk(kLoss, student, teacher), zs.scalar_type());
    const double t = options.temperature(), m = options.multiplier(), classes = static_cast<double>(top.classes);
    auto index = target.defined() ? detail::check_target(kLoss, target, student).unsqueeze(1) : detail::topk_argmax(top);
    auto mean = top.values.sum(1, true) / classes;
    auto var = ((top.values - mean).square().sum(1, true) + mean.square() * static_cast<double>(top.rest_count())) / classes;
    auto scaled = detail::TopK{top.values * (m / (var + 1e-7).sqrt()), top.indices, top.classes};
    auto s_mean = zs.mean(1, true);
    auto s2 = (zs - s_mean) * m / ((zs - s_mean).square().mean(1, true) + 1e-7).sqrt();
    auto p = detail::topk_softmax(scaled, t);
    auto kd = -detail::topk_rowdot(torch::log_softmax(s2 / t, 1), p.p, p.p_rest, scaled).mean() * (t * t);
    auto ce = -torch::log_softmax(s2, 1).gather(1, index).mean();
    return options.alpha() * kd + (1 - options.alpha()) * ce;
  }
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

/// Recipe keys of SKDLoss (its wrapper's terms: "skd_loss_<A>_<B>"): temperature,
/// multiplier, alpha.
inline void describe(Schema& s, SKDOptions& o) {
  s.field("temperature", o.temperature());
  s.field("multiplier", o.multiplier());
  s.field("alpha", o.alpha());
}
namespace detail {
inline const bool skd_registered = register_loss<SKDLoss>("SKDLoss", SKDOptions(), LossTraits{"skd_loss"});
}

}  // namespace distill
