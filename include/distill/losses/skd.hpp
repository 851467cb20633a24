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

#ifdef DISTILL_SIMD
/// Two rows' maxima, means and 1 / sqrt(variance + 1e-7) (biased variance, as layer
/// normalisation keeps it), in two passes over both rows.
DISTILL_ALWAYS_INLINE void row_stats(const float* a, const float* b, int64_t C, float& max_a, float& max_b,
                                     double& mean_a, double& rstd_a, double& mean_b, double& rstd_b) {
  using namespace simd;
  const int64_t body = C - C % kWidth;
  f8 va, vb, ma = a[0] + f8{}, mb = b[0] + f8{}, sa{}, sb{};
  for (int64_t c = 0; c < body; c += kWidth) {
    load(va, a + c), load(vb, b + c);
    ma = va > ma ? va : ma, mb = vb > mb ? vb : mb;
    sa += va, sb += vb;
  }
  max_a = max(ma, a[0]), max_b = max(mb, b[0]);
  double total_a = sum(sa), total_b = sum(sb);
  for (int64_t c = body; c < C; ++c) {
    max_a = a[c] > max_a ? a[c] : max_a, max_b = b[c] > max_b ? b[c] : max_b;
    total_a += a[c], total_b += b[c];
  }
  mean_a = total_a / static_cast<double>(C), mean_b = total_b / static_cast<double>(C);
  const float mu_a = static_cast<float>(mean_a), mu_b = static_cast<float>(mean_b);
  sa = f8{}, sb = f8{};
  for (int64_t c = 0; c < body; c += kWidth) {
    load(va, a + c), load(vb, b + c);
    va -= mu_a, vb -= mu_b;
    sa += va * va, sb += vb * vb;
  }
  double squares_a = sum(sa), squares_b = sum(sb);
  for (int64_t c = body; c < C; ++c)
    squares_a += static_cast<double>(a[c] - mu_a) * (a[c] - mu_a), squares_b += static_cast<double>(b[c] - mu_b) * (b[c] - mu_b);
  rstd_a = 1 / std::sqrt(squares_a / static_cast<double>(C) + 1e-7);
  rstd_b = 1 / std::sqrt(squares_b / static_cast<double>(C) + 1e-7);
}

/// g becomes layer normalisation's backward of it: rstd (g - mean(g) - y mean(g y)), with
/// y = (z - mean) rstd and the row sums of g and g y given.
DISTILL_ALWAYS_INLINE void norm_backward(float* g, const float* z, int64_t C, double mean, double rstd, double sum_g,
                                         double sum_gy) {
  using namespace simd;
  const int64_t body = C - C % kWidth;
  const float r = static_cast<float>(rstd), mu = static_cast<float>(mean);
  const float mg = static_cast<float>(sum_g / static_cast<double>(C)), mgy = static_cast<float>(sum_gy / static_cast<double>(C));
  f8 v, w;
  for (int64_t c = 0; c < body; c += kWidth) load(v, g + c), load(w, z + c), store(g + c, (v - mg - (w - mu) * r * mgy) * r);
  for (int64_t c = body; c < C; ++c) g[c] = (g[c] - mg - (z[c] - mu) * r * mgy) * r;
}

/// SKD's CPU row kernel (float32), SKDFunction's formulas per row: both rows' maxima, means and
/// variances (two passes); one pass forming e_t = exp(L_t), e_s = exp(L_s) and their sums, sum e_t L_s and
/// (T != 1) the CE term's sum exp(T L_s); then per wanted gradient a pass forming the gradient
/// with respect to the normalised logits and its two row sums, and a pass for layer
/// normalisation's backward. `rows` holds 2 C floats.
template <bool GradS, bool GradT>
DISTILL_ALWAYS_INLINE void skd_rows(const float* student, const float* teacher, const int64_t* index, float* gs,
                                    float* gt, float* rows, double* losses, int64_t begin, int64_t end, int64_t C,
                                    double t, double m, double alpha, double n) {
  using namespace simd;
  const int64_t body = C - C % kWidth;
  const double kd_k = alpha * t * m / n, ce_k = (1 - alpha) * m / n;
  const float tf = static_cast<float>(t);
  for (int64_t r = begin; r < end; ++r) {
    const float* zs = student + r * C;
    const float* zt = teacher + r * C;
    float* et = rows;
    float* es = GradS ? gs + r * C : rows + C;
    float max_t, max_s;
    double mean_t, rstd_t, mean_s, rstd_s;
    row_stats(zt, zs, C, max_t, max_s, mean_t, rstd_t, mean_s, rstd_s);
    const float at = static_cast<float>(rstd_t * m / t), as = static_cast<float>(rstd_s * m / t);
    f8 vs, vt, sum_t{}, sum_s{}, sum_1{}, x{}, e_t, e_s, e_1;
    for (int64_t c = 0; c < body; c += kWidth) {
      load(vs, zs + c), load(vt, zt + c);
      const f8 ls = (vs - max_s) * as;
      exp(e_t, (vt - max_t) * at), exp(e_s, ls);
      sum_t += e_t, sum_s += e_s, x += e_t * ls;
      if (t != 1.0) exp(e_1, ls * tf), sum_1 += e_1;
      store(et + c, e_t), store(es + c, e_s);
    }
    double st = sum(sum_t), ss = sum(sum_s), s1 = sum(sum_1), cross = sum(x);
    for (int64_t c = body; c < C; ++c) {
      const float ls = (zs[c] - max_s) * as;
      et[c] = std::exp((zt[c] - max_t) * at), es[c] = std::exp(ls);
      st += et[c], ss += es[c], cross += static_cast<double>(et[c]) * ls;
      if (t != 1.0) s1 += std::exp(ls * tf);
    }
    if (t == 1.0) s1 = ss;
    const int64_t label = index[r];
    const double mean_l = cross / st, target = static_cast<double>((zs[label] - max_s) * as) * t;
    losses[r] = alpha * t * t * (std::log(ss) - mean_l) + (1 - alpha) * (std::log(s1) - target);
    if (GradT) {  // -alpha T m / N p_t (L_s - X), then the teacher's normalisation
      float* g = gt + r * C;
      const float b = static_cast<float>(-kd_k / st), shift = static_cast<float>(mean_l);
      const float r_t = static_cast<float>(rstd_t), mu_t = static_cast<float>(mean_t);
      f8 acc_g{}, acc_gy{};
      for (int64_t c = 0; c < body; c += kWidth) {
        load(vs, zs + c), load(vt, et + c), load(e_t, zt + c);
        const f8 gc = vt * ((vs - max_s) * as - shift) * b;
        acc_g += gc, acc_gy += gc * (e_t - mu_t) * r_t;
        store(g + c, gc);
      }
      double sg = sum(acc_g), sgy = sum(acc_gy);
      for (int64_t c = body; c < C; ++c) {
        g[c] = et[c] * ((zs[c] - max_s) * as - shift) * b;
        sg += g[c], sgy += static_cast<double>(g[c]) * (zt[c] - mu_t) * r_t;
      }
      norm_backward(g, zt, C, mean_t, rstd_t, sg, sgy);
    }
    if (GradS) {  // alpha T m / N (p_s - p_t) + (1 - alpha) m / N (p1_s - onehot), then the normalisation
      const float a_s = static_cast<float>(kd_k / ss), a_t = static_cast<float>(kd_k / st);
      const float a_1 = static_cast<float>(ce_k / s1);
      const float r_s = static_cast<float>(rstd_s), mu_s = static_cast<float>(mean_s);
      f8 acc_g{}, acc_gy{};
      for (int64_t c = 0; c < body; c += kWidth) {
        load(vs, es + c), load(vt, et + c), load(e_1, zs + c);
        f8 gc = vs * a_s - vt * a_t;
        if (t != 1.0) {
          f8 p1;
          exp(p1, (e_1 - max_s) * as * tf);
          gc += p1 * a_1;
        } else {
          gc += vs * a_1;
        }
        acc_g += gc, acc_gy += gc * (e_1 - mu_s) * r_s;
        store(es + c, gc);
      }
      double sg = sum(acc_g), sgy = sum(acc_gy);
      for (int64_t c = body; c < C; ++c) {
        const float p1 = t != 1.0 ? std::exp((zs[c] - max_s) * as * tf) : es[c];
        es[c] = es[c] * a_s - et[c] * a_t + p1 * a_1;
        sg += es[c], sgy += static_cast<double>(es[c]) * (zs[c] - mu_s) * r_s;
      }
      es[label] -= static_cast<float>(ce_k);
      sg -= ce_k, sgy -= ce_k * static_cast<double>((zs[label] - mu_s) * r_s);
      norm_backward(es, zs, C, mean_s, rstd_s, sg, sgy);
    }
  }
}
DISTILL_TARGET_AVX2 inline void skd_rows_avx2(int64_t wanted, const float* s, const float* t, const int64_t* index,
                                              float* gs, float* gt, float* rows, double* losses, int64_t begin,
                                              int64_t end, int64_t C, double temperature, double m, double alpha,
                                              double n) {
  switch (wanted) {
    case 0: return skd_rows<false, false>(s, t, index, gs, gt, rows, losses, begin, end, C, temperature, m, alpha, n);
    case 1: return skd_rows<true, false>(s, t, index, gs, gt, rows, losses, begin, end, C, temperature, m, alpha, n);
    case 2: return skd_rows<false, true>(s, t, index, gs, gt, rows, losses, begin, end, C, temperature, m, alpha, n);
    default: return skd_rows<true, true>(s, t, index, gs, gt, rows, losses, begin, end, C, temperature, m, alpha, n);
  }
}
#endif

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
#ifdef DISTILL_SIMD
    if (row_kernel_applies(student, teacher) && index.is_contiguous()) {
      const int64_t C = student.size(1);
      const double total = run_row_kernel(ctx, student, teacher, wanted & 3, 2 * C, [&](int64_t begin, int64_t end, float* work,
                                                                                       double* losses, float* gs, float* gt) {
        skd_rows_avx2(wanted & 3, student.data_ptr<float>(), teacher.data_ptr<float>(), index.data_ptr<int64_t>(), gs, gt,
                      work, losses, begin, end, C, t, m, alpha, n);
      });
      return torch::scalar_tensor(total / n, student.options().requires_grad(false));
    }
#endif
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
inline const bool skd_registered =
    register_loss<SKDLoss>("SKDLoss", SKDOptions(), LossTraits{"skd_loss"}.from_cache(CachedTeacher::topk));
}

}  // namespace distill
