#pragma once
// Cross-entropy with hard, label-smoothed or soft (teacher-logit) targets (docs/reference.md §2.2).

#include "distill/losses/common.hpp"
#include "distill/losses/rows.hpp"
#include "distill/losses/topk.hpp"

namespace distill {

/// Options of ce_loss / CELoss. `label_smoothing` is the reference's `epsilon`; 0 disables it.
struct CEOptions {
  TORCH_ARG(double, label_smoothing) = 0.0;
};

namespace detail {
/// Checks CEOptions once, for the functional form and when a module is built.
inline void check_options(const CEOptions& options) {
  const double eps = options.label_smoothing();
  if (!(eps >= 0 && eps < 1)) fail("ce_loss: label_smoothing must be in [0, 1), got ", eps);
}

#ifdef DISTILL_SIMD
/// CE's CPU row kernel (float32). Per row, with l = z - max z, e = exp(l), S = sum e: one pass
/// forming e (into the gradient), S and, with smoothing, sum l; for a soft target u likewise
/// e_u, S_u and sum e_u l in the same pass. Then loss = log S - cross (CEFunction's formula) and
/// one pass writing the gradient e / (N S) - (1 - eps) e_u / (N S_u) - eps / (C N) (hard labels:
/// minus (1 - eps) / N at the label). `rows` holds C floats (e_u).
template <bool Grad, bool Soft>
DISTILL_ALWAYS_INLINE void ce_rows(const float* logits, const float* soft, const int64_t* label, float* grad,
                                   float* rows, double* losses, int64_t begin, int64_t end, int64_t C, double eps, double n) {
  using namespace simd;
  const int64_t body = C - C % kWidth;
  const double uniform = eps / static_cast<double>(C);
  for (int64_t r = begin; r < end; ++r) {
    const float* z = logits + r * C;
    const float* u = Soft ? soft + r * C : nullptr;
    float* e = grad ? grad + r * C : rows + (Soft ? C : 0);
    float* eu = rows;
    float mz, mu = 0;
    if (Soft) row_maxima(z, u, C, mz, mu);
    else mz = row_max(z, C);
    f8 vz, vu, l, sum_e{}, sum_l{}, sum_u{}, cross{}, ev, euv;
    for (int64_t c = 0; c < body; c += kWidth) {
      load(vz, z + c);
      l = vz - mz;
      exp(ev, l);
      sum_e += ev, sum_l += l;
      store(e + c, ev);
      if (Soft) {
        load(vu, u + c);
        exp(euv, vu - mu);
        sum_u += euv, cross += euv * l;
        store(eu + c, euv);
      }
    }
    double se = sum(sum_e), sl = sum(sum_l), su = sum(sum_u), x = sum(cross);
    for (int64_t c = body; c < C; ++c) {
      const float lc = z[c] - mz;
      e[c] = std::exp(lc), se += e[c], sl += lc;
      if (Soft) eu[c] = std::exp(u[c] - mu), su += eu[c], x += static_cast<double>(eu[c]) * lc;
    }
    const double picked = Soft ? x / su : static_cast<double>(z[label[r]] - mz);
    losses[r] = std::log(se) - (1 - eps) * picked - uniform * sl;
    if (!Grad) continue;
    const float a = static_cast<float>(1 / (n * se)), b = Soft ? static_cast<float>((1 - eps) / (n * su)) : 0.0f,
                shift = static_cast<float>(uniform / n);
    for (int64_t c = 0; c < body; c += kWidth) {
      load(ev, e + c);
      if (Soft) load(euv, eu + c), store(e + c, ev * a - euv * b - shift);
      else store(e + c, ev * a - shift);
    }
    for (int64_t c = body; c < C; ++c) e[c] = e[c] * a - (Soft ? eu[c] * b : 0.0f) - shift;
    if (!Soft) e[label[r]] -= static_cast<float>((1 - eps) / n);
  }
}
DISTILL_TARGET_AVX2 inline void ce_rows_avx2(bool grad, const float* z, const float* soft, const int64_t* label, float* g,
                                             float* rows, double* losses, int64_t begin, int64_t end, int64_t C,
                                             double eps, double n) {
  if (soft) grad ? ce_rows<true, true>(z, soft, label, g, rows, losses, begin, end, C, eps, n)
               : ce_rows<false, true>(z, soft, label, g, rows, losses, begin, end, C, eps, n);
  else grad ? ce_rows<true, false>(z, soft, label, g, rows, losses, begin, end, C, eps, n)
            : ce_rows<false, false>(z, soft, label, g, rows, losses, begin, end, C, eps, n);
}
#endif

/// Cross-entropy with its gradient formed in the forward pass, (p - y) / N, where y is the
/// (smoothed) one-hot label or the (smoothed) softmax of a soft target. With l = z - rowmax z
/// and S = sum exp(l): -sum_c y_c log p_c = log S - sum_c y_c l_c (each row of y sums to 1).
/// One exponential pass for hard labels (PyTorch's cross_entropy makes two: log_softmax, then
/// exp in backward); one fresh [N, C] tensor (the gradient).
struct CEFunction : public FusedFunction<CEFunction, 4> {
  static constexpr const char* kLoss = "ce_loss";
  /// `target` is the class index [N, 1] (int64) or the soft-target logits [N, C] (floating):
  /// one argument for both, as libtorch 1.13's Function::apply rejects undefined tensors.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& target, double eps, int64_t wanted) {
    const double n = static_cast<double>(logits.size(0)), uniform = eps / static_cast<double>(logits.size(1));
#ifdef DISTILL_SIMD
    const bool soft = target.is_floating_point();
    if (row_kernel_applies(logits, soft ? target : logits) && (soft || target.is_contiguous())) {
      const int64_t C = logits.size(1);
      const double total = run_row_kernel(ctx, logits, logits, wanted & 1, 2 * C, [&](int64_t begin, int64_t end, float* rows,
                                                                                    double* losses, float* grad, float*) {
        ce_rows_avx2(grad != nullptr, logits.data_ptr<float>(), soft ? target.data_ptr<float>() : nullptr,
                     soft ? nullptr : target.data_ptr<int64_t>(), grad, rows, losses, begin, end, C, eps, n);
      });
      return torch::scalar_tensor(total / n, logits.options().requires_grad(false));
    }
#endif
    auto grad = gradient_buffer(wanted & 1, 2, logits);
    shift_into(grad, logits, 1.0);  // l, becomes the gradient
    torch::Tensor cross, eq, sq;    // sum_c y_c l_c per row; the soft target's exp and sums
    if (target.is_floating_point()) {
      eq = scratch(0, target);
      shift_into(eq, target, 1.0);
      sq = exp_rows(eq);
      cross = rowdot(eq, grad, scratch(1, grad)) * ((1 - eps) / sq);
    } else {
      cross = grad.gather(1, target) * (1 - eps);
    }
    if (eps > 0) cross = cross + grad.sum(1, true) * uniform;
    auto s = exp_rows(grad);
    auto loss = (s.log() - cross).sum() / n;
    if (!(wanted & 1)) return loss;
    grad.mul_(1 / (n * s));
    if (eps > 0) grad.sub_(uniform / n);
    if (eq.defined())
      grad.addcmul_(eq, -(1 - eps) / (n * sq));
    else
      grad.scatter_add_(1, target, torch::full_like(s, -(1 - eps) / n));
    keep_gradients(ctx, grad);
    return loss;
  }
};

}  // namespace detail

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
///   the raw teacher logits (docs/reference.md §7.7), which is not a distribution.
/// Computed by a fused function (detail::CEFunction).
///
///   auto hard = distill::functional::ce_loss(logits, labels);
///   auto soft = distill::functional::ce_loss(student_logits, teacher_logits);
inline torch::Tensor ce_loss(const torch::Tensor& logits, const torch::Tensor& target,
                             const CEOptions& options = {}) {
  constexpr const char* kLoss = "ce_loss";
  detail::check_options(options);
  detail::check_logits(kLoss, "logits", logits);
  const double eps = options.label_smoothing();
  if (is_topk_teacher(target)) {  // -sum_c y_c log q_c with y in top-k form: no dense teacher
    auto z = detail::compute(logits);
    auto top = detail::with_dtype(detail::unpack_topk(kLoss, logits, target), z.scalar_type());
    auto y = detail::topk_softmax(top, 1.0);
    const double uniform = eps / static_cast<double>(top.classes);
    return -detail::topk_rowdot(torch::log_softmax(z, 1), y.p * (1 - eps) + uniform, y.p_rest * (1 - eps) + uniform, top)
                .mean();
  }
  if (target.defined() && target.is_floating_point()) {
    detail::check_same(kLoss, "logits", logits, "target", target);
    return detail::CEFunction::apply(detail::compute(logits), detail::compute(target).detach(), eps,
                                     detail::wanted_gradients(logits, target));
  }
  auto index = detail::check_target(kLoss, target, logits).unsqueeze(1);
  return detail::CEFunction::apply(detail::compute(logits), index, eps, detail::wanted_gradients(logits, index));
}

}  // namespace functional

/// Module form of functional::ce_loss.
///
///   distill::CELoss ce(distill::CEOptions().label_smoothing(0.1));
///   auto loss = ce(logits, labels);
class CELossImpl : public detail::LossModule<CELossImpl> {
 public:
  static constexpr const char* kName = "CELoss";
  explicit CELossImpl(CEOptions options = {}) : options(std::move(options)) {
    detail::check_options(this->options);
  }
  torch::Tensor forward(const torch::Tensor& logits, const torch::Tensor& target) {
    return functional::ce_loss(logits, target, options);
  }
  CEOptions options;
};
TORCH_MODULE(CELoss);

/// Recipe keys of CELoss: epsilon (the label smoothing; null or absent: none). The reference
/// treats an epsilon outside (0, 1) as none; here it is an error. Registered as "CELoss": on
/// its own (and as "DistillationGTCELoss") it trains models against the labels, as
/// "DistillationCELoss" it takes a teacher's logits as soft targets.
inline void describe(Schema& s, CEOptions& o) { s.field("epsilon", o.label_smoothing()); }
namespace detail {
inline const bool ce_registered = register_loss<CELoss>(
    "CELoss", CEOptions(), LossTraits{"CELoss", /*ground_truth=*/true}.from_cache(CachedTeacher::topk));
}

}  // namespace distill
