#pragma once
// DIST: inter- and intra-class Pearson correlation between predictions (docs/reference.md §2.9).

#include <algorithm>
#include <vector>

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

#ifdef DISTILL_SIMD
/// Pass 1 of DIST's CPU kernel (float32), rows [begin, end): p = softmax(z_s) and q =
/// softmax(z_t) written to `p` and `q` (an exponential pass, then a normalising pass while the
/// row is in cache), each row's first most probable class, and p and q added into the
/// stripe's column sums.
DISTILL_TARGET_AVX2 inline void dist_softmax_rows(const float* zs, const float* zt, float* p, float* q, float* sum_p,
                                                  float* sum_q, int64_t* top_s, int64_t* top_t, int64_t begin,
                                                  int64_t end, int64_t C) {
  using namespace simd;
  const int64_t body = C - C % kWidth;
  for (int64_t n = begin; n < end; ++n) {
    const float *s = zs + n * C, *t = zt + n * C;
    float *ps = p + n * C, *pt = q + n * C;
    float ms, mt;
    row_maxima(s, t, C, ms, mt);
    f8 vs, vt, es, et, total_s{}, total_t{};
    double ss = 0, st = 0;
    for (int64_t c = 0; c < body; c += kWidth) {
      load(vs, s + c), load(vt, t + c);
      exp(es, vs - ms), exp(et, vt - mt);
      total_s += es, total_t += et;
      store(ps + c, es), store(pt + c, et);
      if ((c + kWidth) % kFlush == 0) ss += sum(total_s), st += sum(total_t), total_s = f8{}, total_t = f8{};
    }
    ss += sum(total_s), st += sum(total_t);
    for (int64_t c = body; c < C; ++c) ps[c] = std::exp(s[c] - ms), pt[c] = std::exp(t[c] - mt), ss += ps[c], st += pt[c];
    // A division, not a multiplication by 1 / S: the column terms' coefficients reach 1e8 on
    // columns of tiny probabilities, which magnifies the reciprocal's extra rounding.
    const float S_s = static_cast<float>(ss), S_t = static_cast<float>(st);
    f8 cs, ct;
    for (int64_t c = 0; c < body; c += kWidth) {
      load(es, ps + c), load(et, pt + c), load(cs, sum_p + c), load(ct, sum_q + c);
      es = es / S_s, et = et / S_t;
      store(ps + c, es), store(pt + c, et), store(sum_p + c, cs + es), store(sum_q + c, ct + et);
    }
    for (int64_t c = body; c < C; ++c) ps[c] /= S_s, pt[c] /= S_t, sum_p[c] += ps[c], sum_q[c] += pt[c];
    int64_t js = 0, jt = 0;  // the first logit equal to the row maximum: the most probable class
    while (js < C && !(s[js] == ms)) ++js;
    while (jt < C && !(t[jt] == mt)) ++jt;
    top_s[n] = js < C ? js : 0, top_t[n] = jt < C ? jt : 0;
  }
}

/// Pass 2: each row's inter-class sums <u, v>, <u, u>, <v, v> of u = p - 1/C, v = q - 1/C
/// (double, per row), and the stripe's column sums of the column-centred cs = p - mean_p and
/// ct = q - mean_q: cs ct, cs^2, ct^2, cs and ct (`acc`: five rows of C floats).
DISTILL_TARGET_AVX2 inline void dist_stats_rows(const float* p, const float* q, const float* mean_p, const float* mean_q,
                                                double* row, float* acc, int64_t begin, int64_t end, int64_t C) {
  using namespace simd;
  const int64_t body = C - C % kWidth;
  const float inv_c = 1.0f / static_cast<float>(C);
  float *uv = acc, *uu = acc + C, *vv = acc + 2 * C, *su = acc + 3 * C, *sv = acc + 4 * C;
  for (int64_t n = begin; n < end; ++n) {
    const float *ps = p + n * C, *pt = q + n * C;
    f8 vp, vq, mp, mq, a, r_uv{}, r_uu{}, r_vv{};
    double ruv = 0, ruu = 0, rvv = 0;
    for (int64_t c = 0; c < body; c += kWidth) {
      load(vp, ps + c), load(vq, pt + c), load(mp, mean_p + c), load(mq, mean_q + c);
      const f8 u = vp - inv_c, v = vq - inv_c, cs = vp - mp, ct = vq - mq;
      r_uv += u * v, r_uu += u * u, r_vv += v * v;
      load(a, uv + c), store(uv + c, a + cs * ct);
      load(a, uu + c), store(uu + c, a + cs * cs);
      load(a, vv + c), store(vv + c, a + ct * ct);
      load(a, su + c), store(su + c, a + cs);
      load(a, sv + c), store(sv + c, a + ct);
      if ((c + kWidth) % kFlush == 0) ruv += sum(r_uv), ruu += sum(r_uu), rvv += sum(r_vv), r_uv = r_uu = r_vv = f8{};
    }
    ruv += sum(r_uv), ruu += sum(r_uu), rvv += sum(r_vv);
    for (int64_t c = body; c < C; ++c) {
      const float u = ps[c] - inv_c, v = pt[c] - inv_c, cs = ps[c] - mean_p[c], ct = pt[c] - mean_q[c];
      ruv += u * v, ruu += u * u, rvv += v * v;
      uv[c] += cs * ct, uu[c] += cs * cs, vv[c] += ct * ct, su[c] += cs, sv[c] += ct;
    }
    row[3 * n] = ruv, row[3 * n + 1] = ruu, row[3 * n + 2] = rvv;
  }
}

/// Coefficients of DIST's gradient pass: per row ra, rbu, rbv (d loss / d p of the row terms is
/// ra q + rbu p, of q: ra p + rbv q), per column ca, cbu, cbv, the column means and the
/// residuals (the column terms are ca ct + cbu cs - res_s for p and ca cs + cbv ct - res_t
/// for q).
struct DISTCoefficients {
  std::vector<float> row;                                  // N x (ra, rbu, rbv)
  std::vector<float> ca, cbu, cbv, mean_p, mean_q, res_s, res_t;  // C each
};

/// Pass 3: both gradients of rows [begin, end), written over p and q (a null `p` or `q`: that
/// gradient is not wanted). Per row: g at the most probable class (the shift that keeps
/// g - <p, g> from cancelling where p is close to 1), g - shift and its dot product with the
/// probabilities into `work` (2 C floats), then softmax's backward p (g - <p, g>).
DISTILL_TARGET_AVX2 inline void dist_gradient_rows(float* p, float* q, bool grad_s, bool grad_t, const DISTCoefficients& k,
                                                   const int64_t* top_s, const int64_t* top_t, float* work,
                                                   int64_t begin, int64_t end, int64_t C) {
  using namespace simd;
  const int64_t body = C - C % kWidth;
  const float *ca = k.ca.data(), *cbu = k.cbu.data(), *cbv = k.cbv.data(), *mp = k.mean_p.data(), *mq = k.mean_q.data(),
              *rs = k.res_s.data(), *rt = k.res_t.data();
  float *gs = work, *gt = work + C;
  for (int64_t n = begin; n < end; ++n) {
    float *ps = p + n * C, *pt = q + n * C;
    const float ra = k.row[3 * n], rbu = k.row[3 * n + 1], rbv = k.row[3 * n + 2];
    // The same order of operations as the ATen-op path.
    auto g_s = [&](int64_t c) { return pt[c] * ra + ps[c] * rbu + (pt[c] - mq[c]) * ca[c] + (ps[c] - mp[c]) * cbu[c] - rs[c]; };
    auto g_t = [&](int64_t c) { return ps[c] * ra + pt[c] * rbv + (ps[c] - mp[c]) * ca[c] + (pt[c] - mq[c]) * cbv[c] - rt[c]; };
    const float shift_s = grad_s ? g_s(top_s[n]) : 0.0f, shift_t = grad_t ? g_t(top_t[n]) : 0.0f;
    f8 vp, vq, vca, vm, vn, g, dot_s{}, dot_t{};
    double ds = 0, dt = 0;
    for (int64_t c = 0; c < body; c += kWidth) {
      load(vp, ps + c), load(vq, pt + c), load(vca, ca + c), load(vm, mp + c), load(vn, mq + c);
      const f8 cs = vp - vm, ct = vq - vn;
      if (grad_s) {
        f8 b, r;
        load(b, cbu + c), load(r, rs + c);
        g = vq * ra + vp * rbu + ct * vca + cs * b - r - shift_s;
        store(gs + c, g), dot_s += vp * g;
      }
      if (grad_t) {
        f8 b, r;
        load(b, cbv + c), load(r, rt + c);
        g = vp * ra + vq * rbv + cs * vca + ct * b - r - shift_t;
        store(gt + c, g), dot_t += vq * g;
      }
      if ((c + kWidth) % kFlush == 0) ds += sum(dot_s), dt += sum(dot_t), dot_s = f8{}, dot_t = f8{};
    }
    ds += sum(dot_s), dt += sum(dot_t);
    for (int64_t c = body; c < C; ++c) {
      if (grad_s) gs[c] = g_s(c) - shift_s, ds += ps[c] * gs[c];
      if (grad_t) gt[c] = g_t(c) - shift_t, dt += pt[c] * gt[c];
    }
    const float fs = static_cast<float>(ds), ft = static_cast<float>(dt);
    for (int64_t c = 0; c < body; c += kWidth) {
      if (grad_s) load(vp, ps + c), load(g, gs + c), store(ps + c, vp * (g - fs));
      if (grad_t) load(vq, pt + c), load(g, gt + c), store(pt + c, vq * (g - ft));
    }
    for (int64_t c = body; c < C; ++c) {
      if (grad_s) ps[c] *= gs[c] - fs;
      if (grad_t) pt[c] *= gt[c] - ft;
    }
  }
}
#endif

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
#ifdef DISTILL_SIMD
    if (row_kernel_applies(student, teacher)) return forward_rows(ctx, student, teacher, beta, gamma, wanted);
#endif
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

#ifdef DISTILL_SIMD
  /// One correlation's rho, a, b_u, b_v (as stats() above), in double.
  static void stats(double uv, double uu, double vv, double& rho, double& a, double& b_u, double& b_v) {
    const double nu = std::sqrt(std::max(uu, 0.0)), nv = std::sqrt(std::max(vv, 0.0)), d = nu * nv + 1e-8;
    rho = uv / d, a = 1 / d;
    const double k = uv / (d * d);
    b_u = nu > 0 ? k * nv / nu : 0.0;
    b_v = nv > 0 ? k * nu / nv : 0.0;
  }

  /// The CPU kernel (float32, AVX2): the column terms need every row's softmax first, so the
  /// rows are visited three times. The rows fall into stripes (one per 32 rows, at most 16)
  /// whose column sums are kept apart and added in stripe order, so that the result does not
  /// depend on the number of threads. (1) softmax of both inputs into the two [N, C] buffers,
  /// and column sums; (2) row sums and centred column sums; (3) both gradients, written over
  /// the probabilities.
  static torch::Tensor forward_rows(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                                    const torch::Tensor& teacher, double beta, double gamma, int64_t wanted) {
    const int64_t N = student.size(0), C = student.size(1);
    // One stripe per 32 rows, 1 to 16: the stripes' column sums are reduced between the passes,
    // and at 64 x 1000 that took 78 us with 16 stripes of 4 rows, 24 us with 2 stripes.
    const int64_t stripes = std::clamp<int64_t>(N / 32, 1, 16), height = (N + stripes - 1) / stripes;
    auto ps_all = gradient_buffer(wanted & 1, 4, student), pt_all = gradient_buffer(wanted & 2, 5, teacher);
    float *p = ps_all.data_ptr<float>(), *q = pt_all.data_ptr<float>();
    // Per stripe: the column sums of p and q, then pass 2's five.
    auto partial_sums = scratch(0, {stripes * 7 * C}, ps_all.options()).zero_();
    float* partial = partial_sums.data_ptr<float>();
    std::vector<int64_t> top(static_cast<size_t>(2 * N));
    std::vector<double> row(static_cast<size_t>(3 * N));
    auto over_stripes = [&](auto body) {
      at::parallel_for(0, stripes, 1, [&](int64_t first, int64_t last) {
        for (int64_t i = first; i < last; ++i) body(i, i * height, std::min(N, (i + 1) * height), partial + i * 7 * C);
      });
    };
    over_stripes([&](int64_t, int64_t begin, int64_t end, float* sums) {
      dist_softmax_rows(student.data_ptr<float>(), teacher.data_ptr<float>(), p, q, sums, sums + C, top.data(), top.data() + N,
                        begin, end, C);
    });
    DISTCoefficients k;
    k.mean_p.resize(C), k.mean_q.resize(C);
    // The stripes' sums, added stripe after stripe (contiguous rows of C, in a fixed order).
    std::vector<double> total(static_cast<size_t>(5 * C));
    for (int64_t i = 0; i < stripes; ++i)
      for (int64_t c = 0; c < 2 * C; ++c) total[c] += partial[i * 7 * C + c];
    for (int64_t c = 0; c < C; ++c)
      k.mean_p[c] = static_cast<float>(total[c] / N), k.mean_q[c] = static_cast<float>(total[C + c] / N);
    over_stripes([&](int64_t, int64_t begin, int64_t end, float* sums) {
      dist_stats_rows(p, q, k.mean_p.data(), k.mean_q.data(), row.data(), sums + 2 * C, begin, end, C);
    });
    // d loss / d p = -beta / N (a v - b u) per row and -gamma / C (a v - b u) per column, as in
    // forward() above.
    const double wr = -beta / static_cast<double>(N), wc = -gamma / static_cast<double>(C);
    double rho_rows = 0, rho_columns = 0, rho, a, bu, bv;
    k.row.resize(3 * N);
    for (int64_t n = 0; n < N; ++n) {
      stats(row[3 * n], row[3 * n + 1], row[3 * n + 2], rho, a, bu, bv);
      rho_rows += rho;
      k.row[3 * n] = static_cast<float>(a * wr), k.row[3 * n + 1] = static_cast<float>(-bu * wr),
      k.row[3 * n + 2] = static_cast<float>(-bv * wr);
    }
    for (auto* v : {&k.ca, &k.cbu, &k.cbv, &k.res_s, &k.res_t}) v->resize(C);
    std::fill(total.begin(), total.end(), 0.0);  // [5, C]: cs ct, cs^2, ct^2, cs, ct
    for (int64_t i = 0; i < stripes; ++i)
      for (int64_t c = 0; c < 5 * C; ++c) total[c] += partial[i * 7 * C + 2 * C + c];
    for (int64_t c = 0; c < C; ++c) {
      stats(total[c], total[C + c], total[2 * C + c], rho, a, bu, bv);
      rho_columns += rho;
      const double ca = a * wc, cbu = -bu * wc, cbv = -bv * wc;
      k.ca[c] = static_cast<float>(ca), k.cbu[c] = static_cast<float>(cbu), k.cbv[c] = static_cast<float>(cbv);
      k.res_s[c] = static_cast<float>((ca * total[4 * C + c] + cbu * total[3 * C + c]) / N);
      k.res_t[c] = static_cast<float>((ca * total[3 * C + c] + cbv * total[4 * C + c]) / N);
    }
    const double loss = beta * (1 - rho_rows / N) + gamma * (1 - rho_columns / C);
    if (wanted != 0) {
      at::parallel_for(0, N, std::max<int64_t>(1, (int64_t{1} << 15) / C), [&](int64_t begin, int64_t end) {
        thread_local std::vector<float> work;
        if (static_cast<int64_t>(work.size()) < 2 * C) work.resize(static_cast<size_t>(2 * C));
        dist_gradient_rows(p, q, wanted & 1, wanted & 2, k, top.data(), top.data() + N, work.data(), begin, end, C);
      });
      keep_gradients(ctx, wanted & 1 ? ps_all : torch::Tensor(), wanted & 2 ? pt_all : torch::Tensor());
    }
    return torch::scalar_tensor(loss, student.options().requires_grad(false));
  }
#endif
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
inline const bool dist_registered =
    register_loss<DISTLoss>("DISTLoss", DISTOptions(), LossTraits{"loss_dist"}.from_cache(CachedTeacher::topk), nullptr,
                            [](const DISTOptions& o) { return o.tau(); });
}

}  // namespace distill
