// float32 accuracy of the fused losses. Each loss is written again here as plain libtorch ops
// with autograd (the formula, independent of the fused code); that formula in float64 is the
// truth, and the same formula in float32 ("eager") is the yardstick. A fused float32 value or
// gradient must be within 1e-5 of the float64 scale (the value's magnitude, the largest
// gradient entry), or no worse than 10x the eager float32 error, whichever is looser.
// Inputs: logits of std 1, 3, 10 and 30, and confident teachers (std 2 with +25 on one class),
// at C in {3, 10, 1000, 32000} and N from 2 to 1024 (32000 classes: two row blocks at N = 64).

#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "distill/losses.hpp"

namespace F = distill::functional;
namespace nnf = torch::nn::functional;

namespace {

/// A loss as a function of (student, teacher, target); `fused` calls distill, `formula` is the
/// independent transcription.
struct Loss {
  std::string name;
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&)> fused, formula;
  bool teacher_gradient;  // whether the reference sends a gradient into the teacher
};

torch::Tensor log_softmax(const torch::Tensor& z) { return torch::log_softmax(z, 1); }
torch::Tensor one_hot(const torch::Tensor& target, int64_t c, torch::Dtype dtype) {
  return nnf::one_hot(target, c).to(dtype);
}

torch::Tensor kd_formula(const torch::Tensor& s, const torch::Tensor& t, double temperature) {
  auto log_pt = log_softmax(t.detach() / temperature);
  return (log_pt.exp() * (log_pt - log_softmax(s / temperature))).sum() * (temperature * temperature / s.size(0));
}

torch::Tensor ce_formula(const torch::Tensor& s, const torch::Tensor& y) {
  return -(y * log_softmax(s)).sum(1).mean();
}

/// DKD with the binary log-probabilities as log-sum-exps (the form distill documents, equal
/// to the reference's wherever that is finite).
torch::Tensor dkd_formula(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& target, double temperature,
                          double alpha, double beta) {
  auto tt = t.detach();
  auto g = one_hot(target, s.size(1), s.scalar_type());
  auto binary = [&](const torch::Tensor& z) {
    auto lp = log_softmax(z / temperature);
    auto target_lp = (lp * g).sum(1, true);
    auto rest_lp = (lp - 1e4 * g).logsumexp(1, true);
    return torch::cat({target_lp, rest_lp}, 1);
  };
  auto bt = binary(tt), bs = binary(s);
  auto tckd = (bt.exp() * (bt - bs)).sum();
  auto lpt2 = log_softmax(tt / temperature - 1000.0 * g);
  auto nckd = (lpt2.exp() * (lpt2 - log_softmax(s / temperature - 1000.0 * g))).sum();
  return (alpha * tckd + beta * nckd) * (temperature * temperature / s.size(0));
}

torch::Tensor dml_formula(const torch::Tensor& s, const torch::Tensor& t) {
  auto p = torch::softmax(s, 1), q = torch::softmax(t, 1);
  const double eps = 1e-12;
  auto k = [&](const torch::Tensor& a, const torch::Tensor& b) { return b * ((b + eps) / (a + eps)).log(); };
  return ((k(p, q) + k(q, p)) / 2).sum() / s.size(0);
}

torch::Tensor dist_formula(const torch::Tensor& s, const torch::Tensor& t) {
  auto ys = torch::softmax(s, 1), yt = torch::softmax(t, 1);
  auto rho = [](const torch::Tensor& a, const torch::Tensor& b, int64_t dim) {
    auto u = a - a.mean(dim, true), v = b - b.mean(dim, true);
    return (u * v).sum(dim) / ((u * u).sum(dim).sqrt() * (v * v).sum(dim).sqrt() + 1e-8);
  };
  return (1 - rho(ys, yt, 1).mean()) + (1 - rho(ys, yt, 0).mean());
}

torch::Tensor wsl_formula(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& target, double temperature) {
  auto y = one_hot(target, s.size(1), s.scalar_type());
  auto ce_s = -(y * log_softmax(s.detach())).sum(1), ce_t = -(y * log_softmax(t.detach())).sum(1);
  auto w = 1 - torch::exp(-(ce_s / (ce_t + 1e-7)).clamp_min(0));
  auto kd = -(torch::softmax(t / temperature, 1) * log_softmax(s / temperature)).sum(1);
  return (kd * w).mean() * (temperature * temperature);
}

torch::Tensor skd_formula(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& target) {
  const double temperature = 1.0, m = 2.0, alpha = 0.9;
  auto ln = [&](const torch::Tensor& z) {
    auto centred = z - z.mean(1, true);
    return m * centred / ((centred * centred).mean(1, true) + 1e-7).sqrt();
  };
  auto s2 = ln(s), t2 = ln(t);
  auto kd = -(torch::softmax(t2 / temperature, 1) * log_softmax(s2 / temperature)).sum(1).mean();
  auto ce = -(one_hot(target, s.size(1), s.scalar_type()) * log_softmax(s2)).sum(1).mean();
  return alpha * temperature * temperature * kd + (1 - alpha) * ce;
}

torch::Tensor huber_formula(const torch::Tensor& s, const torch::Tensor& t) {
  auto d = s - t, a = d.abs();
  return torch::where(a < 1, 0.5 * d * d, a - 0.5).mean();
}

std::vector<Loss> losses() {
  auto soft = [](const torch::Tensor& t) { return torch::softmax(t.detach(), 1); };
  return {
      {"kd T=4", [](auto& s, auto& t, auto&) { return F::kd_loss(s, t); },
       [](auto& s, auto& t, auto&) { return kd_formula(s, t, 4.0); }, false},
      {"kd T=1", [](auto& s, auto& t, auto&) { return F::kd_loss(s, t, distill::KDOptions().temperature(1)); },
       [](auto& s, auto& t, auto&) { return kd_formula(s, t, 1.0); }, false},
      {"ce hard", [](auto& s, auto&, auto& y) { return F::ce_loss(s, y); },
       [](auto& s, auto&, auto& y) { return ce_formula(s, one_hot(y, s.size(1), s.scalar_type())); }, false},
      {"ce smoothed", [](auto& s, auto&, auto& y) { return F::ce_loss(s, y, distill::CEOptions().label_smoothing(0.1)); },
       [](auto& s, auto&, auto& y) {
         return ce_formula(s, 0.9 * one_hot(y, s.size(1), s.scalar_type()) + 0.1 / static_cast<double>(s.size(1)));
       },
       false},
      {"ce soft", [](auto& s, auto& t, auto&) { return F::ce_loss(s, t); },
       [soft](auto& s, auto& t, auto&) { return ce_formula(s, soft(t)); }, false},
      {"dkd T=4 beta=8",
       [](auto& s, auto& t, auto& y) { return F::dkd_loss(s, t, y, distill::DKDOptions().temperature(4).beta(8)); },
       [](auto& s, auto& t, auto& y) { return dkd_formula(s, t, y, 4.0, 1.0, 8.0); }, false},
      {"dkd T=1", [](auto& s, auto& t, auto& y) { return F::dkd_loss(s, t, y); },
       [](auto& s, auto& t, auto& y) { return dkd_formula(s, t, y, 1.0, 1.0, 1.0); }, false},
      {"dml", [](auto& s, auto& t, auto&) { return F::dml_loss(s, t); },
       [](auto& s, auto& t, auto&) { return dml_formula(s, t); }, true},
      {"dist", [](auto& s, auto& t, auto&) { return F::dist_loss(s, t); },
       [](auto& s, auto& t, auto&) { return dist_formula(s, t); }, true},
      {"wsl T=2", [](auto& s, auto& t, auto& y) { return F::wsl_loss(s, t, y); },
       [](auto& s, auto& t, auto& y) { return wsl_formula(s, t, y, 2.0); }, true},
      {"wsl T=3", [](auto& s, auto& t, auto& y) { return F::wsl_loss(s, t, y, distill::WSLOptions().temperature(3)); },
       [](auto& s, auto& t, auto& y) { return wsl_formula(s, t, y, 3.0); }, true},
      {"skd", [](auto& s, auto& t, auto& y) { return F::skd_loss(s, t, y); },
       [](auto& s, auto& t, auto& y) { return skd_formula(s, t, y); }, true},
      {"smooth_l1", [](auto& s, auto& t, auto&) { return F::distance_loss(s, t, distill::DistanceOptions().mode(distill::DistanceMode::smooth_l1)); },
       [](auto& s, auto& t, auto&) { return huber_formula(s, t); }, true},
      {"l2", [](auto& s, auto& t, auto&) { return F::distance_loss(s, t); },
       [](auto& s, auto& t, auto&) { return (s - t).square().mean(); }, true},
  };
}

struct Result {
  torch::Tensor value, grad_s, grad_t;  // float64
};

Result run(const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&)>& fn,
           const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& target, torch::Dtype dtype) {
  auto s = student.to(dtype).clone().requires_grad_(), t = teacher.to(dtype).clone().requires_grad_();
  auto value = fn(s, t, target);
  value.backward();
  auto grad = [](const torch::Tensor& x) {
    return x.grad().defined() ? x.grad().to(torch::kDouble) : torch::zeros_like(x, torch::kDouble);
  };
  return {value.detach().to(torch::kDouble), grad(s), grad(t)};
}

double max_abs(const torch::Tensor& x) { return x.abs().max().item<double>(); }

/// Checks one loss on one input: fused float32 against the float64 formula, with the eager
/// float32 formula's error as the yardstick. Returns whether it held (details in the log).
bool accurate(const Loss& loss, const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& target,
              const std::string& where) {
  const auto truth = run(loss.formula, student, teacher, target, torch::kDouble);
  const auto eager = run(loss.formula, student, teacher, target, torch::kFloat);
  const auto fused = run(loss.fused, student, teacher, target, torch::kFloat);
  bool ok = true;
  auto compare = [&](const char* what, const torch::Tensor& want, const torch::Tensor& eager32, const torch::Tensor& got,
                     double scale) {
    const double error = max_abs(got - want), eager_error = max_abs(eager32 - want);
    // Where eager float32 overflows or divides by zero (NaN), any finite answer is better.
    const double bound = std::isfinite(eager_error) ? std::max(1e-5 * scale, 10 * eager_error) : INFINITY;
    if (!(error <= bound)) {
      ok = false;
      UNSCOPED_INFO(loss.name << " " << where << " " << what << ": error " << error << " > bound " << bound << " (scale "
                              << scale << ", eager float32 error " << eager_error << ")");
    }
  };
  compare("value", truth.value, eager.value, fused.value, std::max(1.0, std::abs(truth.value.item<double>())));
  const double scale_s = max_abs(truth.grad_s), scale_t = max_abs(truth.grad_t);
  compare("student gradient", truth.grad_s, eager.grad_s, fused.grad_s, scale_s);
  if (loss.teacher_gradient) compare("teacher gradient", truth.grad_t, eager.grad_t, fused.grad_t, scale_t);
  else if (max_abs(fused.grad_t) != 0) {
    ok = false;
    UNSCOPED_INFO(loss.name << " " << where << ": a gradient reached the teacher");
  }
  return ok;
}

}  // namespace

TEST_CASE("float32: the DIST case whose small probabilities were lost", "[losses][accuracy]") {
  // Confident integer logits: in float32 the fused DIST once got the teacher gradient wrong by
  // 4.1x its largest entry and the student gradient by 11%.
  auto student = torch::tensor({{23.0, 0.0, 10.0}, {2.0, -4.0, 13.0}}, torch::kDouble);
  auto teacher = torch::tensor({{2.0, -7.0, -4.0}, {-17.0, -13.0, -12.0}}, torch::kDouble);
  const auto truth = run([](auto& s, auto& t, auto&) { return dist_formula(s, t); }, student, teacher, {}, torch::kDouble);
  const auto fused = run([](auto& s, auto& t, auto&) { return F::dist_loss(s, t); }, student, teacher, {}, torch::kFloat);
  INFO("student " << fused.grad_s << " vs " << truth.grad_s << "\nteacher " << fused.grad_t << " vs " << truth.grad_t);
  CHECK(max_abs(fused.grad_s - truth.grad_s) <= 1e-5 * max_abs(truth.grad_s));
  CHECK(max_abs(fused.grad_t - truth.grad_t) <= 1e-5 * max_abs(truth.grad_t));
  CHECK(std::abs(fused.value.item<double>() - truth.value.item<double>()) <= 1e-6);
}

TEST_CASE("float32: DIST gives the same bits whatever the number of threads", "[losses][accuracy]") {
  // Its row kernel keeps the column sums per stripe of rows, a stripe count that depends on the
  // batch alone, and adds the stripes in order; a thread count that changed the result would make
  // runs irreproducible across machines. (The ATen-op path, without AVX2, promises nothing of
  // the kind: ATen's reductions may split by thread.)
  bool row_kernel = false;
#ifdef DISTILL_SIMD
  row_kernel = distill::detail::simd::has_avx2();
#endif
  if (!row_kernel) {
    WARN("no AVX2 here: DIST runs as ATen ops; nothing to check");
    return;
  }
  const int before = at::get_num_threads();
  torch::manual_seed(7);
  for (int64_t rows : {5, 64, 100, 256, 1030}) {
    auto student = torch::randn({rows, 333}) * 3, teacher = torch::randn({rows, 333}) * 3;
    std::vector<std::vector<torch::Tensor>> results;
    for (int threads : {1, 2, 3}) {
      at::set_num_threads(threads);
      auto s = student.clone().requires_grad_(), t = teacher.clone().requires_grad_();
      auto value = F::dist_loss(s, t);
      value.backward();
      results.push_back({value.detach(), s.grad(), t.grad()});
    }
    for (size_t i = 1; i < results.size(); ++i)
      for (size_t j = 0; j < 3; ++j) {
        INFO(rows << " rows, " << i + 1 << " threads, output " << j);
        CHECK(torch::equal(results[i][j], results[0][j]));
      }
  }
  at::set_num_threads(before);
}

TEST_CASE("float32: every fused loss is as accurate as float32 allows", "[losses][accuracy]") {
  torch::manual_seed(20261130);
  struct Regime {
    std::string name;
    double student_std, teacher_std, peak;
  };
  const std::vector<Regime> regimes{
      {"std 1", 1, 1, 0}, {"std 3", 3, 3, 0}, {"std 10", 10, 10, 0}, {"std 30", 30, 30, 0}, {"confident teacher", 3, 2, 25}};
  std::vector<std::pair<int64_t, int64_t>> shapes;
  // The sanitizer run (DISTILL_TEST_SMALL_SHAPES set) keeps one shape of each kind (several
  // row blocks, wide rows): AddressSanitizer maps every large buffer afresh, which makes the
  // full grid 5x slower there, and what it looks for does not depend on the size.
  const bool small = std::getenv("DISTILL_TEST_SMALL_SHAPES") != nullptr;
  for (int64_t n : {2, 7, 64, 1024})
    for (int64_t c : {3, 10, 1000})
      if (!small || n * c <= 64 * 1000 || c == 10) shapes.emplace_back(n, c);
  shapes.emplace_back(2, 32000);
  if (!small) shapes.emplace_back(64, 32000);
  int64_t checked = 0, failed = 0;
  for (const auto& [n, c] : shapes)
    for (const auto& regime : regimes) {
      auto student = torch::randn({n, c}, torch::kDouble) * regime.student_std;
      auto teacher = torch::randn({n, c}, torch::kDouble) * regime.teacher_std;
      auto target = torch::randint(0, c, {n}, torch::kLong);
      if (regime.peak > 0) teacher.scatter_add_(1, torch::randint(0, c, {n, 1}, torch::kLong), torch::full({n, 1}, regime.peak, torch::kDouble));
      const std::string where = regime.name + " at " + std::to_string(n) + "x" + std::to_string(c);
      for (const auto& loss : losses()) {
        ++checked;
        if (!accurate(loss, student, teacher, target, where)) ++failed;
      }
    }
  INFO(failed << " of " << checked << " checks failed");
  CHECK(failed == 0);
}

TEST_CASE("float32: the vectorised row kernels are as close to the float64 path as the ATen-op path", "[losses][accuracy][row_kernels]") {
  // Rows of 1 to 32000 classes, widths that are not a multiple of the vector width (the
  // scalar tail), logits of +-1e30; value and gradient, with and without a gradient wanted,
  // with the row kernels (float32 on an AVX2 CPU) and without, against the float64 path.
  struct Case {
    std::string name;
    std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)> loss;
    bool teacher_gradient = false;  // the loss sends the teacher a gradient (DML, WSL, DIST)
    int64_t min_classes = 1;
    // WSL's teacher gradient p_t (y_s - <p_t, y_s>) cancels: at logits of scale 30 over 32000
    // classes its entries are ~1e-6 and both float32 paths are off by ~5e-6 (float32's rounding
    // of y_s ~ -250, measured), so its absolute tolerance is larger.
    double teacher_atol = 1e-6;
    // Rows with logits of +-1e30 (SKD: no; a variance of 1e60 is beyond float32 in either path).
    bool huge_logits = true;
  };
  const std::vector<Case> cases{
      {"kd T=4", [](const torch::Tensor& s, const torch::Tensor& t) { return F::kd_loss(s, t, distill::KDOptions().temperature(4)); }},
      {"kd T=1", [](const torch::Tensor& s, const torch::Tensor& t) { return F::kd_loss(s, t, distill::KDOptions().temperature(1)); }},
      // 1/3 is not a power of two: 1e30 / 3 - (1e30 / 3 rounded) is not 0 (it was, once, inf after exp).
      {"kd T=3", [](const torch::Tensor& s, const torch::Tensor& t) { return F::kd_loss(s, t, distill::KDOptions().temperature(3)); }},
      {"dml", [](const torch::Tensor& s, const torch::Tensor& t) { return F::dml_loss(s, t); }, true},
      {"dml eps 1e-6", [](const torch::Tensor& s, const torch::Tensor& t) { return F::dml_loss(s, t, distill::DMLOptions().eps(1e-6)); }, true},
      {"dml, student gradient only", [](const torch::Tensor& s, const torch::Tensor& t) { return F::dml_loss(s, t); }},
      {"dkd T=4 beta 8", [](const torch::Tensor& s, const torch::Tensor& t) {
         auto target = torch::arange(s.size(0)) % s.size(1);  // the same labels for every path
         return F::dkd_loss(s, t, target, distill::DKDOptions().temperature(4).beta(8));
       }, false, 2},
      {"dkd T=1, the teacher's argmax as target", [](const torch::Tensor& s, const torch::Tensor& t) {
         return F::dkd_loss(s, t, torch::Tensor(), distill::DKDOptions().temperature(1).use_target_as_gt(true));
       }, false, 2},
      {"ce, labels", [](const torch::Tensor& s, const torch::Tensor&) { return F::ce_loss(s, torch::arange(s.size(0)) % s.size(1)); }},
      {"ce, labels smoothed 0.1", [](const torch::Tensor& s, const torch::Tensor&) {
         return F::ce_loss(s, torch::arange(s.size(0)) % s.size(1), distill::CEOptions().label_smoothing(0.1));
       }},
      {"ce, soft target", [](const torch::Tensor& s, const torch::Tensor& t) { return F::ce_loss(s, t.detach()); }},
      {"ce, soft target smoothed 0.2", [](const torch::Tensor& s, const torch::Tensor& t) {
         return F::ce_loss(s, t.detach(), distill::CEOptions().label_smoothing(0.2));
       }},
      {"wsl T=2, labels", [](const torch::Tensor& s, const torch::Tensor& t) {
         return F::wsl_loss(s, t, torch::arange(s.size(0)) % s.size(1));
       }, true, 1, 3e-5},
      {"wsl T=1, the teacher's argmax", [](const torch::Tensor& s, const torch::Tensor& t) {
         return F::wsl_loss(s, t, torch::Tensor(), distill::WSLOptions().temperature(1));
       }, true, 1, 3e-5},
      {"skd", [](const torch::Tensor& s, const torch::Tensor& t) {
         return F::skd_loss(s, t, torch::arange(s.size(0)) % s.size(1));
       }, true, 2, 1e-6, false},
      {"skd T=2 multiplier 3 alpha 0.5, the teacher's argmax", [](const torch::Tensor& s, const torch::Tensor& t) {
         return F::skd_loss(s, t, torch::Tensor(), distill::SKDOptions().temperature(2).multiplier(3).alpha(0.5));
       }, true, 2, 1e-6, false},
      // DIST's kernel keeps column sums per stripe of rows (up to 16): 7 and 64 rows are several.
      {"dist", [](const torch::Tensor& s, const torch::Tensor& t) { return F::dist_loss(s, t); }, true},
      {"dist beta 2 gamma 0.5, student gradient only", [](const torch::Tensor& s, const torch::Tensor& t) {
         return F::dist_loss(s, t, distill::DISTOptions().beta(2).gamma(0.5));
       }},
      {"wsl T=3, student gradient only", [](const torch::Tensor& s, const torch::Tensor& t) {
         return F::wsl_loss(s, t, torch::arange(s.size(0)) % s.size(1), distill::WSLOptions().temperature(3));
       }},
  };
  torch::manual_seed(11);
  for (const auto& [n, c] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 5}, {7, 13}, {64, 1000}, {5, 1003}, {2, 32000}})
    for (double scale : {1.0, 30.0}) {
      const auto plain_student = torch::randn({n, c}) * scale, plain_teacher = torch::randn({n, c}) * scale;
      auto huge_student = plain_student.clone(), huge_teacher = plain_teacher.clone();
      if (c > 2) huge_student[0][1] = -1e30f, huge_teacher[0][2] = 1e30f;
      for (const auto& test : cases) {
        if (c < test.min_classes) continue;
        const auto& student = test.huge_logits ? huge_student : plain_student;
        const auto& teacher = test.huge_logits ? huge_teacher : plain_teacher;
        INFO(test.name << " at " << n << "x" << c << ", scale " << scale);
        // The float64 path (ATen ops) is the truth; both float32 paths must be as close to it.
        auto s64 = student.to(torch::kDouble).requires_grad_();
        auto t64 = teacher.to(torch::kDouble).requires_grad_(test.teacher_gradient);
        auto truth = test.loss(s64, t64);
        truth.backward();
        REQUIRE(std::isfinite(truth.item<double>()));
        const double tolerance = 1e-5 * (1 + std::abs(truth.item<double>()));
        const double grad_tolerance = 1e-6 * (1 + s64.grad().abs().max().item<double>());
        for (bool kernels : {true, false}) {
          INFO((kernels ? "row kernels" : "ATen ops"));
          distill::set_row_kernels(kernels);
          auto s = student.clone().requires_grad_(), t = teacher.clone().requires_grad_(test.teacher_gradient);
          auto value = test.loss(s, t);
          value.backward();
          CHECK(std::abs(value.item<double>() - truth.item<double>()) <= tolerance);
          CHECK(torch::allclose(s.grad().to(torch::kDouble), s64.grad(), 1e-4, grad_tolerance));
          if (test.teacher_gradient) {
            INFO("teacher gradient: largest error " << (t.grad().to(torch::kDouble) - t64.grad()).abs().max().item<double>()
                 << ", largest entry " << t64.grad().abs().max().item<double>());
            CHECK(torch::allclose(t.grad().to(torch::kDouble), t64.grad(), 1e-4, test.teacher_atol * (1 + t64.grad().abs().max().item<double>())));
          }
          torch::NoGradGuard no_grad;
          CHECK(std::abs(test.loss(student, teacher).item<double>() - truth.item<double>()) <= tolerance);
        }
        distill::set_row_kernels(true);
      }
    }
}
