#pragma once
// Decoupled knowledge distillation: target-class and non-target-class KD (docs/reference.md §2.6).

#include <limits>

#include "distill/losses/common.hpp"
#include "distill/losses/kd.hpp"
#include "distill/losses/rows.hpp"
#include "distill/losses/topk.hpp"

namespace distill {

/// Options of dkd_loss / DKDLoss, defaults as in the reference (T = 1, alpha = beta = 1).
/// `use_target_as_gt`: ignore the given labels and use the teacher's argmax as the target
/// class (the reference's flag of the same name).
struct DKDOptions {
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(double, alpha) = 1.0;
  TORCH_ARG(double, beta) = 1.0;
  TORCH_ARG(bool, use_target_as_gt) = false;
  /// Logit standardisation (docs/methods.md): both inputs become per-row z-scores first.
  TORCH_ARG(bool, standardize) = false;
  /// mdistiller's warm-up, module form only: in (1-based) epoch e the loss is scaled by
  /// min(e / warmup_epochs, 1). 0 (the reference's): no warm-up. mdistiller uses 20 of 240
  /// CIFAR epochs; without it the large NCKD term at beta = 8 can swamp the CE early on.
  TORCH_ARG(double, warmup_epochs) = 0.0;
};

namespace detail {
/// Checks DKDOptions once, for the functional form and when a module is built.
inline void check_options(const DKDOptions& options) {
  constexpr const char* kLoss = "dkd_loss";
  detail::check_scale(kLoss, "temperature", options.temperature());
  detail::check_weight(kLoss, "alpha", options.alpha());
  detail::check_weight(kLoss, "beta", options.beta());
  detail::check_weight(kLoss, "warmup_epochs", options.warmup_epochs());
}

#ifdef DISTILL_SIMD
/// DKD's CPU row kernel (float32), the formula of DKDFunction below. Per row: y = z / T into a
/// row buffer, the target's y lowered by 1000, both maxima; one pass forming e = exp(y - max),
/// the sums and the KD cross term; the binary (target, rest) terms per row; then, for the
/// gradient, one pass writing k [(beta - alpha d) e_s / S_s - beta e_t / S_t] and
/// alpha k d at the target. `rows` holds 2 C floats.
template <bool Grad>
DISTILL_ALWAYS_INLINE void dkd_rows(const float* student, const float* teacher, const int64_t* target, float* grad,
                                    float* rows, double* losses, int64_t begin, int64_t end, int64_t C, float inv_t,
                                    double k, double alpha, double beta) {
  using namespace simd;
  const int64_t body = C - C % kWidth;
  for (int64_t n = begin; n < end; ++n) {
    const float* zs = student + n * C;
    const float* zt = teacher + n * C;
    float* et = rows;
    float* es = Grad ? grad + n * C : rows + C;
    const int64_t g = target[n];
    f8 vs, vt;
    for (int64_t c = 0; c < body; c += kWidth) load(vs, zs + c), load(vt, zt + c), store(es + c, vs * inv_t), store(et + c, vt * inv_t);
    for (int64_t c = body; c < C; ++c) es[c] = zs[c] * inv_t, et[c] = zt[c] * inv_t;
    const double target_s = es[g], target_t = et[g];
    es[g] -= 1000.0f, et[g] -= 1000.0f;
    float ms, mt;
    row_maxima(es, et, C, ms, mt);
    double st = 0, ss = 0, x = 0;
    kd_exp_pass(et, es, mt, ms, 1.0f, et, es, C, st, ss, x);
    // Binary log-probabilities of target and rest: the rest's log-sum-exp is max + log S.
    auto binary = [](double target_logit, double max_logit, double sum, double& log_target, double& log_rest) {
      const double rest = max_logit + std::log(sum);
      const double hi = std::max(rest, target_logit), lo = std::min(rest, target_logit);
      const double full = hi + std::log1p(std::exp(lo - hi));
      log_target = target_logit - full, log_rest = rest - full;
    };
    double lt_t, lr_t, lt_s, lr_s;
    binary(target_t, mt, st, lt_t, lr_t);
    binary(target_s, ms, ss, lt_s, lr_s);
    const double nckd = x / st - std::log(st) + std::log(ss);
    const double bt = std::exp(lt_t), tckd = bt * (lt_t - lt_s) + std::exp(lr_t) * (lr_t - lr_s);
    losses[n] = alpha * tckd + beta * nckd;
    if (!Grad) continue;
    const double d = std::exp(lt_s) - bt;  // p_g - b
    kd_gradient_pass(es, et, static_cast<float>((beta - alpha * d) * k / ss), static_cast<float>(beta * k / st), C);
    es[g] += static_cast<float>(alpha * k * d);
  }
}
DISTILL_TARGET_AVX2 inline void dkd_rows_avx2(bool grad, const float* s, const float* t, const int64_t* target, float* g,
                                              float* rows, double* losses, int64_t begin, int64_t end, int64_t C,
                                              float inv_t, double k, double alpha, double beta) {
  grad ? dkd_rows<true>(s, t, target, g, rows, losses, begin, end, C, inv_t, k, alpha, beta)
       : dkd_rows<false>(s, t, target, g, rows, losses, begin, end, C, inv_t, k, alpha, beta);
}
#endif

/// DKD with its gradient formed in the forward pass. With q = softmax(z / T - 1000 onehot(g)),
/// p_g the student's target probability at T and b the teacher's:
///   d loss / d z_s = T / N [beta (q_s - q_t) + alpha (p_g - b) (onehot(g) - q_s)]
/// (the TCKD part uses q_s as the non-target distribution, which the -1000 trick makes it).
/// Two exponential passes; one fresh [N, C] tensor (the gradient), two warm scratch buffers.
struct DKDFunction : public FusedFunction<DKDFunction, 7> {
  static constexpr const char* kLoss = "dkd_loss";
  /// y = z / T with the target logit lowered by 1000, minus its row max, written into `y`;
  /// per row the target logit z_g / T and that max. Then, from the row sum S of exp(y), the
  /// binary log-probabilities of target and rest at T (the rest's log-sum-exp is max + log S,
  /// which the -1000 trick leaves exact).
  struct Rows {
    torch::Tensor target, max, log_target, log_rest;  // [N, 1]
    void shift(torch::Tensor& y, const torch::Tensor& z, const torch::Tensor& index, double t) {
      scale_into(y, z, 1 / t);
      target = y.gather(1, index);
      y.scatter_(1, index, target - 1000.0);
      max = y.amax(1, true);
      y.sub_(max);
    }
    void binary(const torch::Tensor& sum) {
      auto rest = max + sum.log();
      auto full = torch::logaddexp(rest, target);
      log_target = target - full;
      log_rest = rest - full;
    }
  };

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, const torch::Tensor& index, double t, double alpha,
                               double beta, int64_t wanted) {
    const double k = t / static_cast<double>(student.size(0));
#ifdef DISTILL_SIMD
    if (row_kernel_applies(student, teacher)) {
      const int64_t C = student.size(1);
      auto target = index.contiguous();
      const double total = run_row_kernel(ctx, student, teacher, wanted & 1, 2 * C, [&](int64_t begin, int64_t end, float* rows,
                                                                                       double* losses, float* grad, float*) {
        dkd_rows_avx2(grad != nullptr, student.data_ptr<float>(), teacher.data_ptr<float>(), target.data_ptr<int64_t>(), grad,
                      rows, losses, begin, end, C, static_cast<float>(1 / t), k, alpha, beta);
      });
      return torch::scalar_tensor(total * t * k, student.options().requires_grad(false));
    }
#endif
    auto yt = scratch(0, teacher), et = scratch(1, teacher);
    Rows rt, rs;
    rt.shift(yt, teacher, index, t);
    auto st = torch::exp_out(et, yt).sum(1, true);
    rt.binary(st);
    auto grad = gradient_buffer(wanted & 1, 2, student);
    rs.shift(grad, student, index, t);  // y_s, becomes the gradient
    auto cross = rowdot(yt.sub_(grad), et, yt);
    auto ss = exp_rows(grad);
    rs.binary(ss);
    auto nckd = cross / st - st.log() + ss.log();
    auto bt = rt.log_target.exp(), bt_rest = rt.log_rest.exp();
    auto tckd = bt * (rt.log_target - rs.log_target) + bt_rest * (rt.log_rest - rs.log_rest);
    auto loss = (alpha * tckd.sum() + beta * nckd.sum()) * (t * k);
    if (!(wanted & 1)) return loss;
    auto d = rs.log_target.exp() - bt;  // p_g - b, [N, 1]
    grad.mul_((beta - alpha * d) * k / ss).addcmul_(et, -beta * k / st).scatter_add_(1, index, alpha * k * d);
    keep_gradients(ctx, grad);
    return loss;
  }
};

/// DKD against a top-k teacher (losses/topk.hpp) without a dense teacher, composed of ATen ops
/// (autograd forms the student's gradient). The teacher's non-target distribution keeps the
/// top-k form: its kept classes but the target, and R' = C - k rest classes (one fewer when
/// the target is one of them) at logit 0; the -1000 of the dense form is exp(-1000) = 0 here.
inline torch::Tensor dkd_topk(const torch::Tensor& zs, const TopK& top, const torch::Tensor& index, const DKDOptions& o) {
  const double t = o.temperature();
  const auto inf = std::numeric_limits<double>::infinity();
  // Student: binary log-probabilities and the non-target log-softmax, dense.
  auto ys = zs / t;
  auto lse_s = ys.logsumexp(1, true), ys_g = ys.gather(1, index);
  auto nt_s = ys.scatter(1, index, -inf).logsumexp(1, true);
  auto log_bs = ys_g - lse_s, log_rs = nt_s - lse_s;
  auto lqs = ys - nt_s;
  // Teacher, in top-k form.
  auto a = top.values / t;
  auto [mask, kept] = detail::topk_find(top, index);
  auto a_g = torch::where(kept, a.masked_fill(~mask, 0).sum(1, true), torch::zeros_like(kept, a.options()));
  auto a_nt = a.masked_fill(mask, -inf);
  auto rest_nt = static_cast<double>(top.rest_count()) - (~kept).to(a.scalar_type());  // R', [N, 1]
  auto max = a_nt.amax(1, true);
  max = torch::where(rest_nt > 0, max.clamp_min(0), max);
  auto lse_nt = ((a_nt - max).exp().sum(1, true) + rest_nt * (-max).exp()).log() + max;
  auto lse_t = torch::logaddexp(lse_nt, a_g);
  auto log_bt = a_g - lse_t, log_rt = lse_nt - lse_t;
  auto tckd = log_bt.exp() * (log_bt - log_bs) + log_rt.exp() * (log_rt - log_rs);
  auto lq_kept = (a_nt - lse_nt).masked_fill(mask, 0);
  auto q_kept = (a_nt - lse_nt).exp();  // 0 at the target
  auto lq0 = -lse_nt;
  auto q0 = torch::where(rest_nt > 0, lq0.exp(), torch::zeros_like(lq0));
  auto lqs_kept = lqs.gather(1, top.indices).masked_fill(mask, 0);
  auto lqs_rest = lqs.sum(1, true) - lqs.gather(1, index) - lqs_kept.sum(1, true);  // over the R' rest classes
  auto nckd = (q_kept * (lq_kept - lqs_kept)).sum(1, true) + q0 * (lq0 * rest_nt - lqs_rest);
  return (o.alpha() * tckd.sum() + o.beta() * nckd.sum()) * (t * t / static_cast<double>(zs.size(0)));
}

}  // namespace detail

namespace functional {

/// alpha * TCKD + beta * NCKD, each scaled by T^2 / N:
/// - TCKD: KL between the binary (target, rest) distributions of teacher and student;
/// - NCKD: KL between softmax(z / T - 1000 * onehot(target)) of teacher and student, i.e. the
///   distributions over the non-target classes.
/// `target` holds class indices [N] or [N, 1]; undefined means argmax of the teacher.
/// No gradient reaches the teacher. No warm-up factor (as in the reference; DKDLoss adds
/// mdistiller's with warmup_epochs).
/// The binary log-probabilities come from log-sum-exps: the reference takes the log of summed
/// probabilities, which is -inf (then NaN) once the target probability underflows (docs/reference.md §7.8);
/// this equals it wherever that is finite. Computed by a fused function (detail::DKDFunction).
///
///   auto loss = distill::functional::dkd_loss(student_logits, teacher_logits, labels,
///                                             distill::DKDOptions().beta(8).temperature(4));
inline torch::Tensor dkd_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                              const torch::Tensor& target, const DKDOptions& options = {}) {
  constexpr const char* kLoss = "dkd_loss";
  detail::check_options(options);
  detail::check_logits(kLoss, "student", student, /*min_classes=*/2);
  if (options.standardize()) detail::check_standardize(kLoss, student, teacher);
  if (is_topk_teacher(teacher)) {
    auto zs = detail::compute(student);
    auto top = detail::with_dtype(detail::unpack_topk(kLoss, student, teacher), zs.scalar_type());
    auto index = target.defined() && !options.use_target_as_gt() ? detail::check_target(kLoss, target, student).unsqueeze(1)
                                                                  : detail::topk_argmax(top);
    return detail::dkd_topk(zs, top, index, options);
  }
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  auto zt = detail::compute(teacher).detach();
  auto index = detail::target_or_argmax(kLoss, options.use_target_as_gt() ? torch::Tensor() : target, zt);
  auto zs = detail::compute(student);
  if (options.standardize()) zs = detail::standardize(zs), zt = detail::standardize(zt);
  return detail::DKDFunction::apply(zs, zt, index, options.temperature(), options.alpha(), options.beta(),
                                    detail::wanted_gradients(zs, zt));
}

}  // namespace functional

/// Module form of functional::dkd_loss.
///
///   distill::DKDLoss dkd(distill::DKDOptions().alpha(1).beta(8));
///   auto loss = dkd(student_logits, teacher_logits, labels);
class DKDLossImpl : public detail::LossModule<DKDLossImpl> {
 public:
  static constexpr const char* kName = "DKDLoss";
  explicit DKDLossImpl(DKDOptions options = {}) : options(std::move(options)) {
    detail::check_options(this->options);
  }
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher,
                        const torch::Tensor& target = {}) {
    auto loss = functional::dkd_loss(student, teacher, target, options);
    return scale == 1.0 ? loss : loss * scale;
  }
  /// The warm-up factor for `epoch` (1-based); the trainer calls it every epoch.
  void set_epoch(int64_t epoch) {
    scale = options.warmup_epochs() > 0 ? std::min(static_cast<double>(epoch) / options.warmup_epochs(), 1.0) : 1.0;
  }
  DKDOptions options;
  double scale = 1.0;
};
TORCH_MODULE(DKDLoss);

/// Recipe keys of DKDLoss (its wrapper's terms: "loss_dkd_<A>_<B>"): temperature, alpha, beta,
/// use_target_as_gt, standardize, warmup_epochs.
inline void describe(Schema& s, DKDOptions& o) {
  s.field("temperature", o.temperature());
  s.field("alpha", o.alpha());
  s.field("beta", o.beta());
  s.field("use_target_as_gt", o.use_target_as_gt());
  s.field("standardize", o.standardize());
  s.field("warmup_epochs", o.warmup_epochs());
}
namespace detail {
inline const bool dkd_registered =
    register_loss<DKDLoss>("DKDLoss", DKDOptions(), LossTraits{"loss_dkd"}.from_cache(CachedTeacher::topk), nullptr,
                           [](const DKDOptions& o) { return o.temperature(); });
}

}  // namespace distill
