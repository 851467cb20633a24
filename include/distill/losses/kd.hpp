#pragma once
// Hinton knowledge distillation: temperature-softened KL divergence (docs/reference.md §2.5).

#include "distill/losses/common.hpp"
#include "distill/losses/rows.hpp"
#include "distill/losses/topk.hpp"

namespace distill {

/// Options of kd_loss / KDLoss. The reference's KLDivLoss and its wrapper both default to T = 4.
struct KDOptions {
  TORCH_ARG(double, temperature) = 4.0;
  /// Logit standardisation (docs/methods.md): both inputs become per-row z-scores first.
  TORCH_ARG(bool, standardize) = false;
};

namespace detail {
/// Checks KDOptions once, for the functional form and when a module is built.
inline void check_options(const KDOptions& options) {
  constexpr const char* kLoss = "kd_loss";
  detail::check_scale(kLoss, "temperature", options.temperature());
}

#ifdef DISTILL_SIMD
/// KD's row sums (KD's and DKD's row kernels): with y = (z - max) * scale of teacher and
/// student, writes e_t = exp(y_t) and e_s = exp(y_s) (they may overwrite zt and zs) and adds
/// S_t, S_s and sum e_t (y_t - y_s) to the three sums.
DISTILL_ALWAYS_INLINE void kd_exp_pass(const float* zt, const float* zs, float mt, float ms, float scale, float* et,
                                       float* es, int64_t C, double& st, double& ss, double& cross) {
  using namespace simd;
  const int64_t body = C - C % kWidth;
  f8 vs, vt, sum_t{}, sum_s{}, x{}, e_t, e_s;
  for (int64_t c = 0; c < body; c += kWidth) {
    load(vs, zs + c), load(vt, zt + c);
    const f8 yt = (vt - mt) * scale, ys = (vs - ms) * scale;
    exp(e_t, yt), exp(e_s, ys);
    sum_t += e_t, sum_s += e_s, x += e_t * (yt - ys);
    store(et + c, e_t), store(es + c, e_s);
  }
  st += sum(sum_t), ss += sum(sum_s), cross += sum(x);
  for (int64_t c = body; c < C; ++c) {
    const float yt = (zt[c] - mt) * scale, ys = (zs[c] - ms) * scale;
    et[c] = std::exp(yt), es[c] = std::exp(ys);
    st += et[c], ss += es[c], cross += static_cast<double>(et[c]) * (yt - ys);
  }
}

/// es = a es - b et over a row (KD's and DKD's gradient pass).
DISTILL_ALWAYS_INLINE void kd_gradient_pass(float* es, const float* et, float a, float b, int64_t C) {
  using namespace simd;
  const int64_t body = C - C % kWidth;
  f8 vs, vt;
  for (int64_t c = 0; c < body; c += kWidth) load(vs, es + c), load(vt, et + c), store(es + c, vs * a - vt * b);
  for (int64_t c = body; c < C; ++c) es[c] = es[c] * a - et[c] * b;
}

/// KD's CPU row kernel (float32). Per row: both maxima; one pass forming e_t = exp(y_t),
/// e_s = exp(y_s), their sums and sum e_t (y_t - y_s) (the formula of KDFunction); then, for
/// the gradient, one pass writing k (e_s / S_s - e_t / S_t). `rows` holds 2 C floats.
template <bool Grad>
DISTILL_ALWAYS_INLINE void kd_rows(const float* student, const float* teacher, float* grad, float* rows,
                                   double* losses, int64_t begin, int64_t end, int64_t C, float inv_t, double k) {
  for (int64_t n = begin; n < end; ++n) {
    const float* zs = student + n * C;
    const float* zt = teacher + n * C;
    float* et = rows;
    float* es = Grad ? grad + n * C : rows + C;
    float mt, ms;
    simd::row_maxima(zt, zs, C, mt, ms);
    double st = 0, ss = 0, cross = 0;
    kd_exp_pass(zt, zs, mt, ms, inv_t, et, es, C, st, ss, cross);
    losses[n] = cross / st - std::log(st) + std::log(ss);
    if (Grad) kd_gradient_pass(es, et, static_cast<float>(k / ss), static_cast<float>(k / st), C);
  }
}
DISTILL_TARGET_AVX2 inline void kd_rows_avx2(bool grad, const float* s, const float* t, float* g, float* rows,
                                             double* losses, int64_t begin, int64_t end, int64_t C, float inv_t, double k) {
  grad ? kd_rows<true>(s, t, g, rows, losses, begin, end, C, inv_t, k)
       : kd_rows<false>(s, t, g, rows, losses, begin, end, C, inv_t, k);
}
#endif

/// KD with its gradient formed in the forward pass: d loss / d z_s = T / N (p_s - p_t).
/// With y = (z - rowmax z) / T, e = exp(y) and S its row sum (p = e / S):
///   loss = T^2 / N sum_n [ sum_c e_t (y_t - y_s) / S_t - log S_t + log S_s ].
/// Two exponential passes; one fresh [N, C] tensor (the gradient), two warm scratch buffers.
struct KDFunction : public FusedFunction<KDFunction, 4> {
  static constexpr const char* kLoss = "kd_loss";
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, double t, int64_t wanted) {
    const double k = t / static_cast<double>(student.size(0));
#ifdef DISTILL_SIMD
    if (row_kernel_applies(student, teacher)) {
      const int64_t C = student.size(1);
      const double total = run_row_kernel(ctx, student, teacher, wanted & 1, 2 * C, [&](int64_t begin, int64_t end, float* rows,
                                                                                       double* losses, float* grad, float*) {
        kd_rows_avx2(grad != nullptr, student.data_ptr<float>(), teacher.data_ptr<float>(), grad, rows, losses, begin, end, C,
                     static_cast<float>(1 / t), k);
      });
      return torch::scalar_tensor(total * t * k, student.options().requires_grad(false));
    }
#endif
    auto yt = scratch(0, teacher), et = scratch(1, teacher);
    shift_into(yt, teacher, 1 / t);
    auto st = torch::exp_out(et, yt).sum(1, true);
    auto grad = gradient_buffer(wanted & 1, 2, student);
    shift_into(grad, student, 1 / t);  // y_s, becomes the gradient
    auto cross = rowdot(yt.sub_(grad), et, yt);
    auto ss = exp_rows(grad);
    auto loss = ((cross / st).sum() - st.log().sum() + ss.log().sum()) * (t * k);
    if (wanted & 1) keep_gradients(ctx, grad.mul_(k / ss).addcmul_(et, -k / st));
    return loss;
  }
};

/// KD against a top-k teacher (losses/topk.hpp) without a dense teacher: the teacher's
/// softmax is p on its k classes and p_0 on each of the other R = C - k, so per row
///   sum_c p_t (log p_t - log q) = sum_k p (log p - log q_k) + R p_0 log p_0 - p_0 (sum_c log q - sum_k log q_k)
/// and d loss / d z_s = T / N (q - p_0 - scatter(p - p_0)). One exponential pass over [N, C].
struct KDTopKFunction : public FusedFunction<KDTopKFunction, 6> {
  static constexpr const char* kLoss = "kd_loss";
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& values, const torch::Tensor& indices, double t,
                               int64_t classes, int64_t wanted) {
    const double k = t / static_cast<double>(student.size(0));
    auto teacher = topk_softmax(TopK{values, indices, classes}, t);
    const double rest = static_cast<double>(classes - values.size(1));
    auto grad = gradient_buffer(wanted & 1, 2, student);
    shift_into(grad, student, 1 / t);  // y_s; log q = y_s - log S
    auto y_sum = grad.sum(1, true), y_kept = grad.gather(1, indices);
    auto log_s = exp_rows(grad).log();
    auto log_q_kept = y_kept - log_s, log_q_sum = y_sum - log_s * static_cast<double>(classes);
    auto entropy = (teacher.p * teacher.log_p).sum(1, true) + teacher.p_rest * teacher.log_p_rest * rest;
    auto cross = (teacher.p * log_q_kept).sum(1, true) + teacher.p_rest * (log_q_sum - log_q_kept.sum(1, true));
    auto loss = (entropy - cross).sum() * (t * k);
    if (wanted & 1)
      keep_gradients(ctx, grad.mul_(k / log_s.exp()).sub_(teacher.p_rest * k).scatter_add_(1, indices, (teacher.p_rest - teacher.p) * k));
    return loss;
  }
};

}  // namespace detail

namespace functional {

/// T^2 / N * sum_{n,c} p_t (log p_t - log softmax(z_s / T)) with p_t = softmax(z_t / T)
/// (z-scores of the logits instead with `standardize`).
/// Logits are [N, C]. Like the reference's KL op, no gradient reaches the teacher.
/// Computed by a fused function (detail::KDFunction): an underflowed p_t contributes 0, as the
/// reference skips p_t <= 0, and nothing becomes inf for logits of any size. The teacher may be
/// a top-k teacher (distill::topk_teacher): then no dense teacher is formed (KDTopKFunction).
///
///   auto loss = distill::functional::kd_loss(student_logits, teacher_logits,
///                                            distill::KDOptions().temperature(4));
inline torch::Tensor kd_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                             const KDOptions& options = {}) {
  constexpr const char* kLoss = "kd_loss";
  detail::check_options(options);
  detail::check_logits(kLoss, "student", student);
  if (options.standardize()) detail::check_standardize(kLoss, student, teacher);
  if (is_topk_teacher(teacher)) {
    auto top = detail::unpack_topk(kLoss, student, teacher);
    auto zs = detail::compute(student);
    return detail::KDTopKFunction::apply(zs, top.values.to(zs.scalar_type()), top.indices, options.temperature(),
                                         top.classes, detail::wanted_gradients(zs, top.values));
  }
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  auto zs = detail::compute(student), zt = detail::compute(teacher).detach();
  if (options.standardize()) zs = detail::standardize(zs), zt = detail::standardize(zt);
  return detail::KDFunction::apply(zs, zt, options.temperature(), detail::wanted_gradients(zs, zt));
}

}  // namespace functional

/// Module form of functional::kd_loss.
///
///   distill::KDLoss kd(distill::KDOptions().temperature(4));
///   auto loss = kd(student_logits, teacher_logits);
class KDLossImpl : public detail::LossModule<KDLossImpl> {
 public:
  static constexpr const char* kName = "KDLoss";
  explicit KDLossImpl(KDOptions options = {}) : options(std::move(options)) {
    detail::check_options(this->options);
  }
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    return functional::kd_loss(student, teacher, options);
  }
  KDOptions options;
};
TORCH_MODULE(KDLoss);

/// Recipe keys of KDLoss, registered as the reference's "KLDivLoss" (its wrapper
/// "DistillationKLDivLoss" names terms "loss_kldiv_<A>_<B>"): temperature, standardize.
inline void describe(Schema& s, KDOptions& o) {
  s.field("temperature", o.temperature());
  s.field("standardize", o.standardize());
}
namespace detail {
inline const bool kd_registered =
    register_loss<KDLoss>("KLDivLoss", KDOptions(), LossTraits{"loss_kldiv"}.from_cache(CachedTeacher::topk), nullptr,
                          [](const KDOptions& o) { return o.temperature(); });
}

}  // namespace distill
