// Gradient checks by finite differences, identities of the losses, extreme and
// reduced-precision inputs, and the module forms.

#include <catch2/catch.hpp>

#include "distill/losses.hpp"
#include "loss_cases.hpp"

namespace F = distill::functional;
using distill_test::Tensors;

namespace {

torch::Tensor doubles(torch::IntArrayRef shape, double scale = 1.0) {
  return torch::randn(shape, torch::kDouble) * scale;
}

/// Fourth-order central differences of the case's loss with respect to input `name`.
torch::Tensor numeric_gradient(const distill_test::LossCase& c, const std::string& name) {
  torch::NoGradGuard no_grad;
  Tensors in;
  for (const auto& [k, v] : c.inputs) in[k] = v.detach().clone();
  auto x = in.at(name);
  auto grad = torch::zeros_like(x);
  double* px = x.data_ptr<double>();
  double* pg = grad.data_ptr<double>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double keep = px[i];
    // A step relative to the value (inputs range from logits of size 5 to probabilities of
    // 1e-4) and small enough that ReLU and Huber kinks are almost never crossed.
    const double h = 1e-6 * std::max(std::abs(keep), 0.1);
    auto at = [&](double offset) {
      px[i] = keep + offset;
      return c.evaluate(in).item<double>();
    };
    pg[i] = (at(-2 * h) - 8 * at(-h) + 8 * at(h) - at(2 * h)) / (12 * h);
    px[i] = keep;
  }
  return grad;
}

/// Autograd gradients of the case's loss with respect to every input.
Tensors autograd_gradients(const distill_test::LossCase& c) {
  Tensors leaves;
  for (const auto& [k, v] : c.inputs) leaves[k] = v.detach().clone().requires_grad_(true);
  c.evaluate(leaves).backward();
  Tensors grads;
  for (const auto& [k, v] : leaves)
    grads[k] = v.grad().defined() ? v.grad() : torch::zeros_like(v);
  return grads;
}

/// Inputs that, by the reference's semantics, get no gradient: the teacher of KL-type losses
/// (KD, DKD, CE, and NKD and CTKD, whose official teachers run without gradient) and the
/// teachers of an ensemble.
bool gradient_blocked(const distill_test::LossCase& c, const std::string& input) {
  const bool kl_type = c.loss == "kd" || c.loss == "dkd" || c.loss == "ce" || c.loss == "nkd" || c.loss == "ctkd";
  return (kl_type && input == "teacher") || input.rfind("teachers.", 0) == 0;
}

template <class Fn>
void for_each_logit_loss(Fn&& fn) {
  fn("kd", [](auto& s, auto& t, auto&) { return F::kd_loss(s, t); });
  fn("dml", [](auto& s, auto& t, auto&) { return F::dml_loss(s, t); });
  fn("dkd", [](auto& s, auto& t, auto& y) { return F::dkd_loss(s, t, y); });
  fn("dist", [](auto& s, auto& t, auto&) { return F::dist_loss(s, t); });
  fn("wsl", [](auto& s, auto& t, auto& y) { return F::wsl_loss(s, t, y); });
  fn("skd", [](auto& s, auto& t, auto& y) { return F::skd_loss(s, t, y); });
  fn("ce hard", [](auto& s, auto&, auto& y) { return F::ce_loss(s, y); });
  fn("ce smoothed", [](auto& s, auto&, auto& y) {
    return F::ce_loss(s, y, distill::CEOptions().label_smoothing(0.1));
  });
  fn("ce soft", [](auto& s, auto& t, auto&) { return F::ce_loss(s, t); });
  fn("distance", [](auto& s, auto& t, auto&) { return F::distance_loss(s, t); });
  fn("rkd angle", [](auto& s, auto& t, auto&) { return F::rkd_angle_loss(s, t); });
  fn("rkd distance", [](auto& s, auto& t, auto&) { return F::rkd_distance_loss(s, t); });
}

}  // namespace

TEST_CASE("autograd gradients equal central differences in float64", "[losses][gradcheck]") {
  for (const auto& spec : distill_test::fixture_cases()) {
    // WSL's sample weight is deliberately constant to autograd; it has its own check below.
    if (spec.at("loss") == "wsl") continue;
    // CRD's first call fixes its normalisers from the inputs' scores as constants (the official
    // .item()), so its value is not a smooth function of them there; the case with them set is.
    if (spec.at("id") == "crd/z-first-call") continue;
    auto c = distill_test::make_case(spec, torch::kDouble);
    const auto analytic = autograd_gradients(c);
    for (const auto& [name, g] : analytic) {
      INFO(c.id << " d/d" << name);
      if (gradient_blocked(c, name)) {
        CHECK(g.abs().max().item<double>() == 0);
        continue;
      }
      // ReviewKD's value (~1) is large against its gradient through three batch norms, so
      // rounding in the differences shows: python3-torch's own float64 run of the same formula
      // differs from its autograd by 2.3e-6 on these inputs.
      CHECK(distill_test::relative_error(g, numeric_gradient(c, name)) < (c.loss == "reviewkd" ? 1e-5 : 1e-6));
    }
  }
}

TEST_CASE("WSL gradients equal central differences where the sample weight is saturated",
          "[losses][gradcheck]") {
  // A teacher that is right by a margin of 6 (ce_t ~ 0.01) and a student that is wrong by 3
  // (ce_s > 3) make ratio > 300, so the weight 1 - exp(-ratio) is exactly 1 in float64 and
  // stays 1 under perturbation: then the stop-gradient does not matter. At T = 2 the teacher's
  // softened distribution is far from one-hot, so its gradient is not negligible.
  torch::manual_seed(3);
  const auto target = torch::tensor({0, 3, 1, 4}, torch::kLong);
  const auto one_hot = torch::one_hot(target, 5).to(torch::kDouble);
  distill_test::LossCase c;
  c.inputs = {{"student", doubles({4, 5}, 0.3) - 3 * one_hot}, {"teacher", doubles({4, 5}, 0.3) + 6 * one_hot}};
  c.evaluate = [target](const Tensors& in) {
    return F::wsl_loss(in.at("student"), in.at("teacher"), target, distill::WSLOptions().temperature(2));
  };
  for (const auto& [name, g] : autograd_gradients(c)) {
    INFO("d/d" << name);
    CHECK(distill_test::relative_error(g, numeric_gradient(c, name)) < 1e-6);
  }
}

TEST_CASE("identical student and teacher give zero", "[losses][properties]") {
  torch::manual_seed(1);
  auto z = doubles({8, 10}, 3);
  auto y = torch::randint(0, 10, {8});
  CHECK(std::abs(F::kd_loss(z, z).item<double>()) < 1e-12);
  CHECK(std::abs(F::kd_loss(z, z, distill::KDOptions().temperature(0.5)).item<double>()) < 1e-12);
  CHECK(std::abs(F::dml_loss(z, z).item<double>()) < 1e-12);
  CHECK(std::abs(F::dml_loss(z, z, distill::DMLOptions().act(distill::Act::sigmoid)).item<double>()) < 1e-12);
  CHECK(std::abs(F::dkd_loss(z, z, y).item<double>()) < 1e-12);
  CHECK(std::abs(F::dkd_loss(z, z, {}, distill::DKDOptions().temperature(4).beta(8)).item<double>()) < 1e-12);
  for (auto mode : {distill::DistanceMode::l1, distill::DistanceMode::l2, distill::DistanceMode::smooth_l1})
    CHECK(F::distance_loss(z, z, distill::DistanceOptions().mode(mode)).item<double>() == 0);
}

TEST_CASE("KD = TCKD + (1 - p_t[target]) * NCKD per sample (the DKD paper's identity)",
          "[losses][properties]") {
  torch::manual_seed(2);
  for (double t : {0.5, 1.0, 2.0, 4.0, 8.0}) {
    for (int sample = 0; sample < 4; ++sample) {
      auto zs = doubles({1, 12}, 2), zt = doubles({1, 12}, 2);
      auto y = torch::randint(0, 12, {1});
      const double kd = F::kd_loss(zs, zt, distill::KDOptions().temperature(t)).item<double>();
      auto opt = distill::DKDOptions().temperature(t);
      const double tckd = F::dkd_loss(zs, zt, y, opt.alpha(1).beta(0)).item<double>();
      const double nckd = F::dkd_loss(zs, zt, y, opt.alpha(0).beta(1)).item<double>();
      const double pt = torch::softmax(zt / t, 1)[0][y.item<int64_t>()].item<double>();
      INFO("T = " << t << ", sample " << sample);
      CHECK(kd == Approx(tckd + (1 - pt) * nckd).epsilon(1e-10));
    }
  }
}

TEST_CASE("logits of +-1e4 give finite values and gradients", "[losses][stability]") {
  torch::manual_seed(4);
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    for_each_logit_loss([&](const char* name, auto loss) {
      // Random signs at 1e4: every softmax is one-hot and the reference's DKD and PEFD-style
      // logs of sums would be -inf.
      auto s = (torch::randint(0, 2, {6, 10}).to(dtype) * 2 - 1).mul(1e4).requires_grad_(true);
      auto t = (torch::randint(0, 2, {6, 10}).to(dtype) * 2 - 1).mul(1e4).requires_grad_(true);
      auto y = torch::randint(0, 10, {6});
      torch::Tensor value = loss(s, t, y);
      value.backward();
      INFO(name << " " << dtype);
      CHECK(std::isfinite(value.item<double>()));
      CHECK(s.grad().isfinite().all().item<bool>());
      if (t.grad().defined()) CHECK(t.grad().isfinite().all().item<bool>());
    });
  }
}

TEST_CASE("a constant column in DIST and an all-zero projection in PEFD stay finite",
          "[losses][stability]") {
  // Identical rows make every class column constant across the batch (norm 0 in the
  // intra-class correlation); the reference's gradient is NaN there.
  auto s = doubles({1, 6}).repeat({4, 1}).requires_grad_(true);
  auto t = doubles({4, 6}).requires_grad_(true);
  auto dist = F::dist_loss(s, t);
  dist.backward();
  CHECK(std::isfinite(dist.item<double>()));
  CHECK(s.grad().isfinite().all().item<bool>());

  distill::PEFDLoss pefd(distill::PEFDOptions(4, 3).num_projectors(2));
  pefd->to(torch::kDouble);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : pefd->named_parameters())
      if (p.key().find("bias") != std::string::npos) p.value().fill_(-1e3);  // ReLU kills all
  }
  auto fs = doubles({3, 4}).requires_grad_(true);
  auto value = pefd(fs, doubles({3, 3}));
  value.backward();
  CHECK(value.item<double>() == Approx(1.0));
  CHECK(fs.grad().isfinite().all().item<bool>());
}

TEST_CASE("half and bfloat16 inputs are computed in float32", "[losses][precision]") {
  torch::manual_seed(5);
  for (auto low : {torch::kHalf, torch::kBFloat16}) {
    for_each_logit_loss([&](const char* name, auto loss) {
      // 60 overflows exp() in half precision; in float32 it is harmless.
      auto s = (torch::randn({6, 10}) * 60).to(low).requires_grad_(true);
      auto t = (torch::randn({6, 10}) * 60).to(low).requires_grad_(true);
      auto y = torch::randint(0, 10, {6});
      torch::Tensor value = loss(s, t, y);
      value.backward();
      auto s32 = s.detach().to(torch::kFloat), t32 = t.detach().to(torch::kFloat);
      INFO(name << " " << low);
      CHECK(value.scalar_type() == torch::kFloat);
      CHECK(value.item<float>() == torch::Tensor(loss(s32, t32, y)).item<float>());
      CHECK(s.grad().scalar_type() == low);
      CHECK(s.grad().isfinite().all().item<bool>());
    });
  }
}

TEST_CASE("module forms equal the functional forms", "[losses][modules]") {
  torch::manual_seed(6);
  auto s = doubles({5, 8}, 2), t = doubles({5, 8}, 2);
  auto y = torch::randint(0, 8, {5});
  auto same = [](const torch::Tensor& a, const torch::Tensor& b) { return a.item<double>() == b.item<double>(); };
  CHECK(same(distill::KDLoss(distill::KDOptions().temperature(3))(s, t),
             F::kd_loss(s, t, distill::KDOptions().temperature(3))));
  CHECK(same(distill::CELoss()(s, y), F::ce_loss(s, y)));
  CHECK(same(distill::DMLLoss(distill::DMLOptions().act(distill::Act::sigmoid))(s, t),
             F::dml_loss(s, t, distill::DMLOptions().act(distill::Act::sigmoid))));
  CHECK(same(distill::DistanceLoss(distill::DistanceOptions().mode(distill::DistanceMode::l1))(s, t),
             F::distance_loss(s, t, distill::DistanceOptions().mode(distill::DistanceMode::l1))));
  CHECK(same(distill::DKDLoss(distill::DKDOptions().beta(8))(s, t, y),
             F::dkd_loss(s, t, y, distill::DKDOptions().beta(8))));
  CHECK(same(distill::DKDLoss()(s, t), F::dkd_loss(s, t, {})));
  CHECK(same(distill::DISTLoss()(s, t), F::dist_loss(s, t)));
  CHECK(same(distill::WSLLoss()(s, t, y), F::wsl_loss(s, t, y)));
  CHECK(same(distill::SKDLoss()(s, t, y), F::skd_loss(s, t, y)));
  CHECK(same(distill::RKDAngleLoss()(s, t), F::rkd_angle_loss(s, t)));
  CHECK(same(distill::RKDDistanceLoss()(s, t), F::rkd_distance_loss(s, t)));

  // Modules sit in a ModuleList, and losses with parameters expose them to the optimizer.
  torch::nn::ModuleList list(distill::KDLoss(), distill::MGDLoss(distill::MGDOptions(4, 6)),
                             distill::PEFDLoss(distill::PEFDOptions(8, 8)),
                             distill::AFDLoss(distill::AFDOptions({{4, 2, 2}}, {{4, 2, 2}, {8, 1, 1}})));
  // MGD: align (1x1) + two 3x3 convs, with biases; PEFD: 3 projectors; AFD: p_t and p_s.
  CHECK(list->parameters().size() == 6 + 6 + 2);
}

TEST_CASE("MGD masks whole channels with probability lambda, redrawn every call", "[losses][mgd]") {
  torch::manual_seed(7);
  auto fs = doubles({4, 6, 3, 3}), ft = doubles({4, 6, 3, 3});
  auto run = [&](double lambda, uint64_t seed, torch::Tensor student) {
    torch::manual_seed(seed);  // the same weights and the same mask for the same seed
    distill::MGDLoss mgd(distill::MGDOptions(6, 6).lambda_mgd(lambda));
    mgd->to(torch::kDouble);
    return mgd(student, ft).item<double>();
  };
  // lambda = 1 drops everything: the student no longer matters.
  CHECK(run(1.0, 1, fs) == Approx(run(1.0, 1, doubles({4, 6, 3, 3}))).epsilon(1e-12));
  // Same seed, same mask; another seed, another mask (and so another value).
  CHECK(run(0.5, 11, fs) == run(0.5, 11, fs));
  distill::MGDLoss mgd(distill::MGDOptions(6, 6).lambda_mgd(0.5));
  mgd->to(torch::kDouble);
  std::set<double> values;
  for (int i = 0; i < 8; ++i) values.insert(mgd(fs, ft).item<double>());
  CHECK(values.size() > 1);
  // Gradients reach the generator and the student.
  auto leaf = fs.clone().requires_grad_(true);
  mgd(leaf, ft).backward();
  CHECK(leaf.grad().abs().sum().item<double>() > 0);
  for (const auto& p : mgd->parameters()) CHECK(p.grad().defined());
}

TEST_CASE("AFD groups teacher features by shape as the reference does", "[losses][afd]") {
  // ResNet34's 16 blocks at 224x224 (docs/reference.md §3).
  distill::FeatureShapes shapes;
  for (int i = 0; i < 3; ++i) shapes.push_back({64, 56, 56});
  for (int i = 0; i < 4; ++i) shapes.push_back({128, 28, 28});
  for (int i = 0; i < 6; ++i) shapes.push_back({256, 14, 14});
  for (int i = 0; i < 3; ++i) shapes.push_back({512, 7, 7});
  const auto groups = distill::group_shapes(shapes);
  CHECK(groups.unique.size() == 4);
  CHECK(groups.group == std::vector<int64_t>{0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3});
}

namespace {

/// The fused losses of issue 7 over [N, C] logits (distance over any shape), as the recipes
/// call them. Which of them may send a gradient into the teacher is their own decision.
std::vector<std::pair<std::string, std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&,
                                                               const torch::Tensor&)>>>
fused_losses() {
  using T = const torch::Tensor&;
  return {{"kd", [](T s, T t, T) { return F::kd_loss(s, t, distill::KDOptions().temperature(4)); }},
          {"ce_hard_smoothed", [](T s, T, T y) { return F::ce_loss(s, y, distill::CEOptions().label_smoothing(0.1)); }},
          {"ce_soft_smoothed", [](T s, T t, T) { return F::ce_loss(s, t, distill::CEOptions().label_smoothing(0.1)); }},
          {"dkd", [](T s, T t, T y) { return F::dkd_loss(s, t, y, distill::DKDOptions().temperature(4).beta(8)); }},
          {"dml", [](T s, T t, T) { return F::dml_loss(s, t); }},
          {"dist", [](T s, T t, T) { return F::dist_loss(s, t, distill::DISTOptions().beta(2).gamma(2)); }},
          {"wsl", [](T s, T t, T y) { return F::wsl_loss(s, t, y); }},
          {"skd", [](T s, T t, T y) { return F::skd_loss(s, t, y, distill::SKDOptions().temperature(2)); }},
          {"distance_l1", [](T s, T t, T) { return F::distance_loss(s, t, distill::DistanceOptions().mode(distill::DistanceMode::l1)); }},
          {"distance_l2", [](T s, T t, T) { return F::distance_loss(s, t, distill::DistanceOptions().mode(distill::DistanceMode::l2)); }},
          {"distance_smooth_l1",
           [](T s, T t, T) { return F::distance_loss(s, t, distill::DistanceOptions().mode(distill::DistanceMode::smooth_l1)); }}};
}

struct Grads {
  torch::Tensor value, student, teacher;
};

/// Value and gradients of `loss` with the chosen inputs requiring grad, scaled by `weight`.
Grads run_fused(const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&)>& loss,
                const torch::Tensor& zs, const torch::Tensor& zt, const torch::Tensor& y, bool student_grad,
                bool teacher_grad, double weight = 1.0) {
  auto s = zs.detach().clone().requires_grad_(student_grad), t = zt.detach().clone().requires_grad_(teacher_grad);
  auto value = loss(s, t, y);
  if (value.requires_grad()) (value * weight).backward();
  return {value.detach(), s.grad(), t.grad()};
}

}  // namespace

TEST_CASE("fused losses: gradients do not depend on which inputs require grad", "[losses][fused]") {
  torch::manual_seed(5);
  const auto zs = torch::randn({6, 9}, torch::kDouble) * 3, zt = torch::randn({6, 9}, torch::kDouble) * 3;
  const auto y = torch::randint(0, 9, {6});
  for (const auto& [name, loss] : fused_losses()) {
    INFO(name);
    const auto both = run_fused(loss, zs, zt, y, true, true);
    const auto student_only = run_fused(loss, zs, zt, y, true, false);
    const auto teacher_only = run_fused(loss, zs, zt, y, false, true);
    CHECK(torch::allclose(both.value, student_only.value, 1e-12, 0));
    CHECK(torch::allclose(both.student, student_only.student, 1e-12, 0));
    CHECK(!student_only.teacher.defined());
    CHECK(!teacher_only.student.defined());
    CHECK(both.teacher.defined() == teacher_only.teacher.defined());
    if (both.teacher.defined()) CHECK(torch::allclose(both.teacher, teacher_only.teacher, 1e-12, 0));
    torch::NoGradGuard no_grad;
    CHECK(torch::allclose(loss(zs, zt, y), both.value, 1e-12, 0));
  }
}

TEST_CASE("fused losses: backward scales by the incoming gradient and runs once", "[losses][fused]") {
  torch::manual_seed(6);
  const auto zs = torch::randn({5, 7}), zt = torch::randn({5, 7});
  const auto y = torch::randint(0, 7, {5});
  for (const auto& [name, loss] : fused_losses()) {
    INFO(name);
    const auto once = run_fused(loss, zs, zt, y, true, true);
    const auto scaled = run_fused(loss, zs, zt, y, true, true, -2.5);
    CHECK(torch::allclose(scaled.student, once.student * -2.5, 1e-5, 1e-7));
    if (once.teacher.defined()) CHECK(torch::allclose(scaled.teacher, once.teacher * -2.5, 1e-5, 1e-7));
    // Gradients accumulate into .grad like any other loss's.
    auto s = zs.clone().requires_grad_(), t = zt.clone().requires_grad_();
    loss(s, t, y).backward();
    loss(s, t, y).backward();
    CHECK(torch::allclose(s.grad(), once.student * 2, 1e-5, 1e-7));
    // The gradients are handed over at the first backward: a second one through the same
    // graph is an error that says so.
    auto value = loss(s, t, y);
    value.backward({}, /*retain_graph=*/true);
    CHECK_THROWS_WITH(value.backward(), Catch::Contains("retain_graph"));
    auto again = loss(s, t, y);
    again.backward({}, /*retain_graph=*/true);
    CHECK_THROWS_AS(again.backward(), distill::Error);
  }
}

TEST_CASE("fused losses: warm scratch buffers give the same results at any shape order", "[losses][fused]") {
  torch::manual_seed(7);
  const std::vector<std::pair<int64_t, int64_t>> shapes{{3, 40}, {17, 300}, {2, 5}, {17, 300}};
  for (const auto& [name, loss] : fused_losses()) {
    INFO(name);
    std::vector<Grads> first;
    for (const auto& [n, c] : shapes) {
      const auto zs = torch::randn({n, c}), zt = torch::randn({n, c});
      const auto y = torch::randint(0, c, {n});
      const auto warm = run_fused(loss, zs, zt, y, true, true);
      distill::release_loss_workspace();
      const auto cold = run_fused(loss, zs, zt, y, true, true);
      CHECK(torch::equal(warm.value, cold.value));
      CHECK(torch::equal(warm.student, cold.student));
    }
  }
}

TEST_CASE("fused WSL equals the composite formula at any temperature", "[losses][fused]") {
  // T = 1 and 2 share exponentials between the weight and the KD term; other T do not.
  torch::manual_seed(8);
  const auto zs = torch::randn({7, 11}, torch::kDouble) * 3, zt = torch::randn({7, 11}, torch::kDouble) * 3;
  const auto y = torch::randint(0, 11, {7});
  for (double t : {1.0, 2.0, 3.0, 0.5}) {
    INFO("T = " << t);
    auto s = zs.clone().requires_grad_(), te = zt.clone().requires_grad_();
    auto fused = F::wsl_loss(s, te, y, distill::WSLOptions().temperature(t));
    fused.backward();
    auto s2 = zs.clone().requires_grad_(), t2 = zt.clone().requires_grad_();
    auto ce = [&](const torch::Tensor& z) { return -torch::log_softmax(z.detach(), 1).gather(1, y.unsqueeze(1)); };
    auto w = 1 - torch::exp(-(ce(s2) / (ce(t2) + 1e-7)).clamp_min(0));
    auto kd = -(torch::softmax(t2 / t, 1) * torch::log_softmax(s2 / t, 1)).sum(1, true);
    auto composite = (kd * w).mean() * (t * t);
    composite.backward();
    CHECK(fused.item<double>() == Approx(composite.item<double>()).epsilon(1e-12));
    CHECK(torch::allclose(s.grad(), s2.grad(), 1e-10, 1e-14));
    CHECK(torch::allclose(te.grad(), t2.grad(), 1e-10, 1e-14));
  }
}
