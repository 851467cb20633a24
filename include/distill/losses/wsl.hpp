#pragma once
// Weighted soft labels: KD weighted per sample by how much worse the student is (docs/reference.md §2.7).

#include "distill/losses/common.hpp"
#include "distill/losses/kd.hpp"
#include "distill/losses/rows.hpp"
#include "distill/losses/topk.hpp"

namespace distill {

/// Options of wsl_loss / WSLLoss; the reference's default temperature is 2.
struct WSLOptions {
  TORCH_ARG(double, temperature) = 2.0;
  /// Logit standardisation (docs/methods.md): both inputs become per-row z-scores first (the
  /// sample weights then come from the z-scores too).
  TORCH_ARG(bool, standardize) = false;
};

namespace detail {
/// Checks WSLOptions once, for the functional form and when a module is built.
inline void check_options(const WSLOptions& options) {
  constexpr const char* kLoss = "wsl_loss";
  detail::check_scale(kLoss, "temperature", options.temperature());
}

#ifdef DISTILL_SIMD
/// WSL's CPU row kernel (float32), WSLFunction's formulas per row: both maxima; one pass forming
/// e_t, e_s, S_t, S_s, sum e_t y_s and (T = 2) sum e_t^2, sum e_s^2, the log-sum-exps at T = 1
/// (another pass over both rows for T other than 1 and 2); the weight; then a pass for each
/// wanted gradient. `rows` holds 2 C floats.
template <bool GradS, bool GradT>
DISTILL_ALWAYS_INLINE void wsl_rows(const float* student, const float* teacher, const int64_t* index, float* gs,
                                    float* gt, float* rows, double* losses, int64_t begin, int64_t end, int64_t C,
                                    double t, double n) {
  using namespace simd;
  const int64_t body = C - C % kWidth;
  const float inv_t = static_cast<float>(1 / t);
  for (int64_t r = begin; r < end; ++r) {
    const float* zs = student + r * C;
    const float* zt = teacher + r * C;
    float* et = rows;
    float* es = GradS ? gs + r * C : rows + C;
    float mt, ms;
    row_maxima(zt, zs, C, mt, ms);
    f8 vs, vt, sum_t{}, sum_s{}, x{}, sq_t{}, sq_s{}, e_t, e_s;
    for (int64_t c = 0; c < body; c += kWidth) {
      load(vs, zs + c), load(vt, zt + c);
      const f8 ys = (vs - ms) * inv_t;
      exp(e_t, (vt - mt) * inv_t), exp(e_s, ys);
      sum_t += e_t, sum_s += e_s, x += e_t * ys;
      if (t == 2.0) sq_t += e_t * e_t, sq_s += e_s * e_s;
      store(et + c, e_t), store(es + c, e_s);
    }
    double st = sum(sum_t), ss = sum(sum_s), cross = sum(x), qt = sum(sq_t), qs = sum(sq_s);
    for (int64_t c = body; c < C; ++c) {
      const float ys = (zs[c] - ms) * inv_t;
      et[c] = std::exp((zt[c] - mt) * inv_t), es[c] = std::exp(ys);
      st += et[c], ss += es[c], cross += static_cast<double>(et[c]) * ys;
      qt += static_cast<double>(et[c]) * et[c], qs += static_cast<double>(es[c]) * es[c];
    }
    if (t == 1.0) qt = st, qs = ss;
    if (t != 1.0 && t != 2.0) {  // sum exp(z - max) at T = 1
      f8 a{}, b{};
      for (int64_t c = 0; c < body; c += kWidth) {
        load(vs, zs + c), load(vt, zt + c);
        exp(e_t, vt - mt), exp(e_s, vs - ms);
        a += e_t, b += e_s;
      }
      qt = sum(a), qs = sum(b);
      for (int64_t c = body; c < C; ++c) qt += std::exp(zt[c] - mt), qs += std::exp(zs[c] - ms);
    }
    // The hard-label cross-entropies as (max - z_label) + log sum: see WSLFunction.
    const int64_t label = index[r];
    const double ce_t = static_cast<double>(mt - zt[label]) + std::log(qt);
    const double ce_s = static_cast<double>(ms - zs[label]) + std::log(qs);
    const double kw = (1 - std::exp(-std::max(ce_s / (ce_t + 1e-7), 0.0))) * (t / n);
    const double mean_y = cross / st;
    losses[r] = kw * (std::log(ss) - mean_y);
    if (GradT) {
      float* g = gt + r * C;
      const float b = static_cast<float>(-kw / st), shift = static_cast<float>(mean_y);
      for (int64_t c = 0; c < body; c += kWidth) {
        load(vs, zs + c), load(vt, et + c);
        store(g + c, vt * ((vs - ms) * inv_t - shift) * b);
      }
      for (int64_t c = body; c < C; ++c) g[c] = et[c] * ((zs[c] - ms) * inv_t - shift) * b;
    }
    if (GradS) kd_gradient_pass(es, et, static_cast<float>(kw / ss), static_cast<float>(kw / st), C);
  }
}
DISTILL_TARGET_AVX2 inline void wsl_rows_avx2(int64_t wanted, const float* s, const float* t, const int64_t* index,
                                              float* gs, float* gt, float* rows, double* losses, int64_t begin,
                                              int64_t end, int64_t C, double temperature, double n) {
  switch (wanted) {
    case 0: return wsl_rows<false, false>(s, t, index, gs, gt, rows, losses, begin, end, C, temperature, n);
    case 1: return wsl_rows<true, false>(s, t, index, gs, gt, rows, losses, begin, end, C, temperature, n);
    case 2: return wsl_rows<false, true>(s, t, index, gs, gt, rows, losses, begin, end, C, temperature, n);
    default: return wsl_rows<true, true>(s, t, index, gs, gt, rows, losses, begin, end, C, temperature, n);
  }
}
#endif

/// WSL with both gradients formed in the forward pass (w is constant to autograd). With
/// y = (z - rowmax z) / T, e = exp(y), S = sum e, and X = sum_c e_t y_s / S_t:
///   kd = -sum_c p_t log p_s = log S_s - X,
///   d loss / d z_s = T / N w (p_s - p_t),  d loss / d z_t = -T / N w p_t (y_s - X).
/// The weight needs log-sum-exps at T = 1; for T = 1 and T = 2 (the reference's default) they
/// come from the same exponentials (exp(z - max) = e^T), otherwise from two more passes.
/// One fresh [N, C] tensor per gradient, two warm scratch buffers.
struct WSLFunction : public FusedFunction<WSLFunction, 5> {
  static constexpr const char* kLoss = "wsl_loss";
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, const torch::Tensor& index, double t, int64_t wanted) {
    const double n = static_cast<double>(student.size(0));
#ifdef DISTILL_SIMD
    if (row_kernel_applies(student, teacher) && index.is_contiguous()) {
      const int64_t C = student.size(1);
      const double total = run_row_kernel(ctx, student, teacher, wanted & 3, 2 * C, [&](int64_t begin, int64_t end, float* rows,
                                                                                       double* losses, float* gs, float* gt) {
        wsl_rows_avx2(wanted & 3, student.data_ptr<float>(), teacher.data_ptr<float>(), index.data_ptr<int64_t>(), gs, gt,
                      rows, losses, begin, end, C, t, n);
      });
      return torch::scalar_tensor(total * t, student.options().requires_grad(false));
    }
#endif
    const bool shared = t == 1.0 || t == 2.0;
    auto s0 = scratch(0, student), et = scratch(1, teacher);
    // The hard-label cross-entropy at T = 1 as (max - z_target) + log sum exp(z - max): adding
    // the max back before subtracting z_target would round away a confident model's tiny
    // cross-entropy (log sum ~ 1e-10 next to a max of ~100), which the weight divides by.
    struct HardCE {
      torch::Tensor max, log_sum;  // [N, 1] at T = 1
      torch::Tensor of(const torch::Tensor& z, const torch::Tensor& index) const { return (max - z.gather(1, index)) + log_sum; }
    };
    // From e = exp((z - max) / T) and the scaled max: max / T * T, and log sum e^T.
    auto shared_parts = [&](const torch::Tensor& scaled_max, const torch::Tensor& e, const torch::Tensor& sum) {
      return HardCE{scaled_max * t, (t == 1.0 ? sum : e.norm(2, 1, true).square()).log()};
    };
    auto separate_parts = [&](const torch::Tensor& z) {
      auto max = shift_into(s0, z, 1.0);
      return HardCE{max, exp_rows(s0).log_()};
    };
    HardCE ce_t, ce_s;
    if (!shared) ce_t = separate_parts(teacher), ce_s = separate_parts(student);
    auto max_t = shift_into(s0, teacher, 1 / t);
    torch::exp_out(et, s0);
    auto st = et.sum(1, true);
    if (shared) ce_t = shared_parts(max_t, et, st);
    auto grad_s = gradient_buffer(wanted & 1, 2, student);
    auto max_s = shift_into(grad_s, student, 1 / t);  // y_s
    auto x = rowdot(et, grad_s, s0) / st;
    torch::Tensor grad_t;
    if (wanted & 2) {
      grad_t = gradient_buffer(true, 3, teacher);
      torch::add_out(grad_t, -x, grad_s).mul_(et);  // scaled by the weight below
    }
    torch::exp_out(s0, grad_s);  // e_s
    auto ss = s0.sum(1, true);
    if (shared) ce_s = shared_parts(max_s, s0, ss);
    auto ratio = (ce_s.of(student, index) / (ce_t.of(teacher, index) + 1e-7)).clamp_min_(0);
    auto kw = (1 - torch::exp(-ratio)) * (t / n);  // T / N w, [N, 1]
    auto loss = (kw * (ss.log() - x)).sum() * t;
    if (grad_t.defined()) grad_t.mul_(-kw / st);
    if (wanted & 1)
      torch::mul_out(grad_s, s0, kw / ss).addcmul_(et, -kw / st);
    else
      grad_s = torch::Tensor();
    keep_gradients(ctx, grad_s, grad_t);
    return loss;
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
  if (options.standardize()) detail::check_standardize(kLoss, student, teacher);
  if (is_topk_teacher(teacher)) {  // the same formula on the top-k form: no dense teacher
    auto zs = detail::compute(student);
    auto top = detail::with_dtype(detail::unpack_topk(kLoss, student, teacher), zs.scalar_type());
    const double t = options.temperature();
    auto index = target.defined() ? detail::check_target(kLoss, target, student).unsqueeze(1) : detail::topk_argmax(top);
    auto at_one = detail::topk_softmax(top, 1.0);
    auto [mask, kept] = detail::topk_find(top, index);
    auto ce_t = -torch::where(kept, at_one.log_p.masked_fill(~mask, 0).sum(1, true), at_one.log_p_rest);
    auto ce_s = -torch::log_softmax(zs.detach(), 1).gather(1, index);
    auto w = 1 - torch::exp(-(ce_s / (ce_t + 1e-7)).clamp_min(0));
    auto p = detail::topk_softmax(top, t);
    auto kd = -detail::topk_rowdot(torch::log_softmax(zs / t, 1), p.p, p.p_rest, top);
    return (kd * w).mean() * (t * t);
  }
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  auto zs = detail::compute(student), zt = detail::compute(teacher);
  if (options.standardize()) zs = detail::standardize(zs), zt = detail::standardize(zt);
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

/// Recipe keys of WSLLoss (its wrapper's terms: "wsl_loss_<A>_<B>"): temperature, standardize.
inline void describe(Schema& s, WSLOptions& o) {
  s.field("temperature", o.temperature());
  s.field("standardize", o.standardize());
}
namespace detail {
inline const bool wsl_registered =
    register_loss<WSLLoss>("WSLLoss", WSLOptions(), LossTraits{"wsl_loss"}.from_cache(CachedTeacher::topk), nullptr,
                           [](const WSLOptions& o) { return o.temperature(); });
}

}  // namespace distill
