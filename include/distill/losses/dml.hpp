#pragma once
// Deep mutual learning: symmetric KL between two networks' distributions (docs/reference.md §2.3).

#include "distill/losses/common.hpp"
#include "distill/losses/rows.hpp"
#include "distill/losses/topk.hpp"

namespace distill {

/// Options of dml_loss / DMLLoss, defaults as in the reference.
/// `act`: softmax (over the last axis), sigmoid (elementwise) or none (the inputs are already
/// probabilities).
struct DMLOptions {
  TORCH_ARG(Act, act) = Act::softmax;
  TORCH_ARG(double, eps) = 1e-12;
  TORCH_ARG(bool, sum_across_class_dim) = false;
};

namespace detail {
/// Checks DMLOptions once, for the functional form and when a module is built.
inline void check_options(const DMLOptions& options) {
  const double eps = options.eps();
  if (!(eps >= 0) || !std::isfinite(eps)) fail("dml_loss: eps must be a finite number >= 0, got ", eps);
}

#ifdef DISTILL_SIMD
/// DML's CPU row kernel (float32), the formula of DMLSoftmaxFunction below. Per row: both
/// maxima; one pass forming the exponentials and their sums; one pass forming p and q, D, the
/// loss, g_p = -(D + r) and g_q = 1/r - D with their dot products with p and q; one pass
/// writing h p (g_p - <p, g_p>) and -h q (g_q - <q, g_q>). `rows` holds 4 C floats.
template <bool GradS, bool GradT>
DISTILL_ALWAYS_INLINE void dml_rows(const float* student, const float* teacher, float* grad_s, float* grad_t,
                                    float* rows, double* losses, int64_t begin, int64_t end, int64_t C, float eps,
                                    float h) {
  using namespace simd;
  const int64_t body = C - C % kWidth;
  for (int64_t n = begin; n < end; ++n) {
    const float* zs = student + n * C;
    const float* zt = teacher + n * C;
    float* p = rows;
    float* q = rows + C;
    float* gp = GradS ? grad_s + n * C : rows + 2 * C;
    float* gq = GradT ? grad_t + n * C : rows + 3 * C;
    float ms, mt;
    row_maxima(zs, zt, C, ms, mt);
    f8 vs, vt, sum_s{}, sum_t{}, e;
    for (int64_t c = 0; c < body; c += kWidth) {
      load(vs, zs + c), load(vt, zt + c);
      exp(e, vs - ms), sum_s += e, store(p + c, e);
      exp(e, vt - mt), sum_t += e, store(q + c, e);
    }
    double ss = sum(sum_s), st = sum(sum_t);
    for (int64_t c = body; c < C; ++c) p[c] = std::exp(zs[c] - ms), q[c] = std::exp(zt[c] - mt), ss += p[c], st += q[c];
    const float inv_s = static_cast<float>(1 / ss), inv_t = static_cast<float>(1 / st);
    f8 loss{}, dot_p{}, dot_q{}, d;
    for (int64_t c = 0; c < body; c += kWidth) {
      load(vs, p + c), load(vt, q + c);
      vs *= inv_s, vt *= inv_t;
      store(p + c, vs), store(q + c, vt);
      const f8 r = (vt + eps) / (vs + eps);
      log(d, r);
      loss += (vt - vs) * d;
      const f8 g_p = -(d + r), g_q = 1.0f / r - d;
      dot_p += vs * g_p, dot_q += vt * g_q;
      store(gp + c, g_p), store(gq + c, g_q);
    }
    double l = sum(loss), dp = sum(dot_p), dq = sum(dot_q);
    for (int64_t c = body; c < C; ++c) {
      p[c] *= inv_s, q[c] *= inv_t;
      const float r = (q[c] + eps) / (p[c] + eps), dc = std::log(r);
      l += static_cast<double>(q[c] - p[c]) * dc;
      gp[c] = -(dc + r), gq[c] = 1.0f / r - dc;
      dp += static_cast<double>(p[c]) * gp[c], dq += static_cast<double>(q[c]) * gq[c];
    }
    losses[n] = l;
    const float fp = static_cast<float>(dp), fq = static_cast<float>(dq);
    if (GradS) {
      for (int64_t c = 0; c < body; c += kWidth) load(vs, p + c), load(d, gp + c), store(gp + c, vs * (d - fp) * h);
      for (int64_t c = body; c < C; ++c) gp[c] = p[c] * (gp[c] - fp) * h;
    }
    if (GradT) {
      for (int64_t c = 0; c < body; c += kWidth) load(vt, q + c), load(d, gq + c), store(gq + c, vt * (d - fq) * -h);
      for (int64_t c = body; c < C; ++c) gq[c] = q[c] * (gq[c] - fq) * -h;
    }
  }
}
DISTILL_TARGET_AVX2 inline void dml_rows_avx2(int64_t wanted, const float* s, const float* t, float* gs, float* gt,
                                              float* rows, double* losses, int64_t begin, int64_t end, int64_t C,
                                              float eps, float h) {
  switch (wanted) {
    case 0: return dml_rows<false, false>(s, t, gs, gt, rows, losses, begin, end, C, eps, h);
    case 1: return dml_rows<true, false>(s, t, gs, gt, rows, losses, begin, end, C, eps, h);
    case 2: return dml_rows<false, true>(s, t, gs, gt, rows, losses, begin, end, C, eps, h);
    default: return dml_rows<true, true>(s, t, gs, gt, rows, losses, begin, end, C, eps, h);
  }
}
#endif

/// DML with softmax activations, both gradients formed in the forward pass. With
/// r = (q + eps) / (p + eps) and D = log r, the loss is 1/2 sum (q - p) D and
///   d/dp = (1 - r - D) / 2,  d/dq = (1 - 1/r + D) / 2,
/// each followed by softmax's backward p (g - <p, g>), which ignores the constant 1 (so it is
/// left out) and runs as ATen's fused kernel. Per row block (chunk_rows): two exponential
/// passes, one log, six warm scratch buffers of one block each; the only [N, C] tensors are
/// the two fresh gradients.
struct DMLSoftmaxFunction : public FusedFunction<DMLSoftmaxFunction, 5> {
  static constexpr const char* kLoss = "dml_loss";
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, double eps, double scale, int64_t wanted) {
    const int64_t rows = student.size(0), block = chunk_rows(student);
    const auto options = student.options().requires_grad(false);
#ifdef DISTILL_SIMD
    if (row_kernel_applies(student, teacher)) {
      const int64_t C = student.size(1);
      const double total = run_row_kernel(ctx, student, teacher, wanted & 3, 4 * C, [&](int64_t begin, int64_t end, float* work,
                                                                                       double* losses, float* gs, float* gt) {
        dml_rows_avx2(wanted & 3, student.data_ptr<float>(), teacher.data_ptr<float>(), gs, gt, work, losses, begin, end, C,
                      static_cast<float>(eps), static_cast<float>(0.5 * scale));
      });
      return torch::scalar_tensor(total * 0.5 * scale, options);
    }
#endif
    auto eps_t = torch::full({}, eps, options);
    torch::Tensor grad_p, grad_q, loss;
    if (wanted & 1) grad_p = torch::empty(student.sizes(), options);
    if (wanted & 2) grad_q = torch::empty(teacher.sizes(), options);
    const double h = 0.5 * scale;
    for (int64_t start = 0; start < rows; start += block) {
      const int64_t height = std::min(block, rows - start);
      auto zs = student.narrow(0, start, height), zt = teacher.narrow(0, start, height);
      auto p = scratch(0, zs), q = scratch(1, zs), a = scratch(2, zs), b = scratch(3, zs);
      auto d = scratch(4, zs), g = scratch(5, zs);
      softmax_into(p, zs);
      softmax_into(q, zt);
      torch::add_out(a, q, eps_t);
      torch::add_out(b, p, eps_t);
      torch::div_out(d, a, b).log_().mul_(-h);  // d = -h D
      auto part = torch::sub_out(g, p, q).mul_(d).sum();  // h sum (q - p) D
      loss = loss.defined() ? loss.add_(part) : part;
      if (wanted & 1) {
        torch::addcdiv_out(g, d, a, b, -h);  // -h (D + r)
        softmax_backward_into(grad_p.narrow(0, start, height), g, p);
      }
      if (wanted & 2) {
        torch::addcdiv_out(g, d, b, a, h);  // -h (D - 1/r): the teacher's gradient, negated
        softmax_backward_into(grad_q.narrow(0, start, height), g, q).neg_();
      }
    }
    keep_gradients(ctx, grad_p, grad_q);
    return loss;
  }
};

}  // namespace detail

namespace functional {

/// With p = act(student), q = act(teacher), k(a, b) = b log((b + eps) / (a + eps)):
/// sum of (k(p, q) + k(q, p)) / 2 over the class axis, averaged over the other axes
/// (= batch mean of the symmetric KL). With sum_across_class_dim the reference's extra factor
/// C (the class count) is kept: the result is C times larger. Gradient reaches both inputs,
/// so both networks learn from each other. No temperature (docs/reference.md §7.11). With softmax
/// (the recipes' activation) a fused function computes it (detail::DMLSoftmaxFunction).
///
///   auto loss = distill::functional::dml_loss(logits_a, logits_b);
inline torch::Tensor dml_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                              const DMLOptions& options = {}) {
  constexpr const char* kLoss = "dml_loss";
  detail::check_options(options);
  detail::check_floating(kLoss, "student", student);
  if (is_topk_teacher(teacher)) {
    // Only softmax leaves a top-k teacher's shift (losses/topk.hpp) without effect.
    if (options.act() != Act::softmax)
      fail(kLoss, ": a top-k teacher (from a teacher cache) needs act softmax; with act none or sigmoid the loss reads ",
           "absolute logits, which top-k logits do not keep");
    detail::check_logits(kLoss, "student", student);
    // (q - p)(log(q + eps) - log(p + eps)) summed with q, the teacher's, in top-k form: each
    // rest class contributes q0 l0 - q0 lp - p l0 + p lp, summed as (all - kept).
    auto zs = detail::compute(student);
    auto top = detail::with_dtype(detail::unpack_topk(kLoss, student, teacher), zs.scalar_type());
    const double eps = options.eps(), classes = static_cast<double>(top.classes);
    const double scale = options.sum_across_class_dim() ? classes / static_cast<double>(zs.size(0))
                                                        : 1.0 / static_cast<double>(zs.size(0));
    auto q = detail::topk_softmax(top, 1.0);
    auto p = torch::softmax(zs, 1);
    auto lp = (p + eps).log();
    auto lq_kept = (q.p + eps).log(), lq_rest = (q.p_rest + eps).log();
    auto p_kept = p.gather(1, top.indices), lp_kept = lp.gather(1, top.indices);
    auto sum = ((q.p - p_kept) * (lq_kept - lp_kept)).sum(1, true);
    if (top.rest_count() > 0) {
      auto rest = [&](const torch::Tensor& x, const torch::Tensor& kept) { return x.sum(1, true) - kept.sum(1, true); };
      sum = sum + q.p_rest * lq_rest * static_cast<double>(top.rest_count()) - q.p_rest * rest(lp, lp_kept) -
            lq_rest * rest(p, p_kept) + rest(p * lp, p_kept * lp_kept);
    }
    return sum.sum() * (0.5 * scale);
  }
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  if (student.dim() == 0 || student.numel() == 0)
    fail(kLoss, ": 'student' must be a non-empty tensor with a class axis, got ", detail::describe(student));
  const double eps = options.eps();
  const int64_t classes = student.size(-1);
  const double rows = static_cast<double>(student.numel() / classes);
  const double scale = options.sum_across_class_dim() ? classes / rows : 1.0 / rows;
  if (options.act() == Act::softmax)
    return detail::DMLSoftmaxFunction::apply(detail::compute(student).reshape({-1, classes}),
                                             detail::compute(teacher).reshape({-1, classes}), eps, scale,
                                             detail::wanted_gradients(student, teacher));
  auto p = activate(detail::compute(student), options.act()), q = activate(detail::compute(teacher), options.act());
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
  explicit DMLLossImpl(DMLOptions options = {}) : options(std::move(options)) {
    detail::check_options(this->options);
  }
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    return functional::dml_loss(student, teacher, options);
  }
  DMLOptions options;
};
TORCH_MODULE(DMLLoss);

/// Recipe keys of DMLLoss: act ("softmax", "sigmoid", or null for none), eps,
/// sum_across_class_dim. Not carried over: the reference's multi-label weighting by positive
/// ratios (its PULC attribute configs only).
inline void describe(Schema& s, DMLOptions& o) {
  describe_act(s, "act", o.act());
  s.field("eps", o.eps());
  s.field("sum_across_class_dim", o.sum_across_class_dim());
}
namespace detail {
inline const bool dml_registered =
    register_loss<DMLLoss>("DMLLoss", DMLOptions(), LossTraits{}.from_cache(CachedTeacher::topk));
}

}  // namespace distill
