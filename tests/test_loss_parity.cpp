// Every loss against independent reference values and gradients (losses.json, computed by
// make_loss_fixtures.py with python3-torch from the published formulas).

#include <set>

#include <catch2/catch.hpp>

#include "loss_cases.hpp"

namespace {

void check_all(torch::Dtype dtype, double rtol) {
  for (const auto& spec : distill_test::fixture_cases()) {
    auto c = distill_test::make_case(spec, dtype);
    INFO(c.id);
    for (const auto& failure : distill_test::check_parity(c, distill_test::tolerance(c, dtype, rtol))) FAIL_CHECK(failure);
  }
}

}  // namespace

TEST_CASE("the fixture covers every loss", "[losses][parity]") {
  std::set<std::string> seen;
  for (const auto& spec : distill_test::fixture_cases()) seen.insert(spec.at("loss").get<std::string>());
  const std::set<std::string> all{"afd",         "at",  "ce",     "crd",  "ctkd",      "dist",         "distance",
                                  "dkd",         "dml", "fitnet", "kd",        "mgd",          "nkd",
                                  "ensemble_kd", "ofd", "pefd", "reviewkd", "rkd_angle", "rkd_distance", "skd", "wsl"};
  CHECK(seen == all);
}

TEST_CASE("float64 values and gradients equal the reference to 1e-7", "[losses][parity]") {
  check_all(torch::kDouble, 1e-7);
}

TEST_CASE("float32 values and gradients equal the reference to 1e-4", "[losses][parity]") {
  // Inputs are the float64 fixture rounded to float32, so only rounding separates the two;
  // RKD's distance formula (|a|^2 + |b|^2 - 2 a.b) loses most digits to cancellation.
  check_all(torch::kFloat, 1e-4);
}

TEST_CASE("float64 parity holds when DML, DIST and SKD work in row blocks of 1 and 4 rows", "[losses][parity][fused]") {
  // On the CPU their blocks are ~2^20 elements, so the fixture's small cases (6 rows) fit in
  // one; these forced heights run the multi-block paths (4 + 2 rows: an uneven last block)
  // against the same reference values.
  struct Restore {
    ~Restore() { distill::detail::chunk_rows_override() = 0; }
  } restore;
  for (int64_t rows : {1, 4}) {
    INFO("block of " << rows << " rows");
    distill::detail::chunk_rows_override() = rows;
    for (const auto& spec : distill_test::fixture_cases()) {
      const auto loss = spec.at("loss").get<std::string>();
      if (loss != "dml" && loss != "dist" && loss != "skd") continue;
      auto c = distill_test::make_case(spec, torch::kDouble);
      INFO(c.id);
      for (const auto& failure : distill_test::check_parity(c, 1e-7)) FAIL_CHECK(failure);
    }
  }
}

// ---------------------------------------------------------------- top-k teachers

namespace {

// A top-k case's loss through distill, with the teacher given as distill::topk_teacher.
torch::Tensor topk_case_loss(const distill_test::json& spec, const torch::Tensor& student, const torch::Tensor& teacher) {
  namespace F = distill::functional;
  const auto& o = spec.at("options");
  const auto loss = spec.at("loss").get<std::string>();
  const torch::Tensor target = spec.contains("target") ? distill_test::decode(spec.at("target")) : torch::Tensor();
  if (loss == "kd") return F::kd_loss(student, teacher, distill::KDOptions().temperature(o.at("temperature")));
  if (loss == "dkd")
    return F::dkd_loss(student, teacher, target,
                       distill::DKDOptions().temperature(o.at("temperature")).alpha(o.at("alpha")).beta(o.at("beta")));
  if (loss == "dist")
    return F::dist_loss(student, teacher, distill::DISTOptions().beta(o.at("beta")).gamma(o.at("gamma")).tau(o.at("tau")));
  if (loss == "wsl") return F::wsl_loss(student, teacher, target, distill::WSLOptions().temperature(o.at("temperature")));
  if (loss == "skd")
    return F::skd_loss(student, teacher, target,
                       distill::SKDOptions().temperature(o.at("temperature")).multiplier(o.at("multiplier")).alpha(o.at("alpha")));
  if (loss == "ce") return F::ce_loss(student, teacher);
  if (loss == "dml") return F::dml_loss(student, teacher, distill::DMLOptions().act(distill::Act::softmax).eps(o.at("eps")));
  throw std::runtime_error("no top-k case runner for " + loss);
}

void check_topk(torch::Dtype dtype, double rtol) {
  const auto fixture = distill_test::load_json(DISTILL_TEST_DATA "/losses.json");
  const auto& cases = fixture.at("topk_cases");
  REQUIRE(cases.size() >= 24);
  for (const auto& spec : cases) {
    const std::string id = spec.at("id");
    INFO(id);
    auto student = distill_test::decode(spec.at("student"), dtype).requires_grad_();
    auto values = distill_test::decode(spec.at("values"), dtype), indices = distill_test::decode(spec.at("indices"));
    auto rest = spec.contains("rest") ? distill_test::decode(spec.at("rest"), dtype) : torch::Tensor();
    auto teacher = distill::topk_teacher(values, indices, rest, student.size(1));
    CHECK(distill::is_topk_teacher(teacher));
    auto value = topk_case_loss(spec, student, teacher);
    value.backward();
    const double v = value.item<double>(), expected = spec.at("value");
    CHECK(std::abs(v - expected) <= rtol * std::abs(expected));
    CHECK(distill_test::relative_error(student.grad(), distill_test::decode(spec.at("grad"))) <= rtol);
  }
}

}  // namespace

TEST_CASE("top-k teachers: values and student gradients equal the marginal-smoothed dense formula in float64",
          "[losses][parity][topk]") {
  check_topk(torch::kDouble, 1e-7);
}

TEST_CASE("top-k teachers in float32 equal the float64 reference to 1e-4", "[losses][parity][topk]") {
  check_topk(torch::kFloat, 1e-4);
}

TEST_CASE("topk_teacher and the losses name what is wrong with a top-k teacher", "[losses][topk]") {
  auto values = torch::randn({4, 3}), rest = torch::randn({4});
  auto indices = torch::tensor({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1}, torch::kLong).reshape({4, 3});
  auto teacher = distill::topk_teacher(values, indices, rest, 10);
  auto student = torch::randn({4, 10}, torch::requires_grad());
  // Losses that read absolute outputs refuse it by name.
  REQUIRE_THROWS_WITH(distill::functional::distance_loss(student, teacher), Catch::Contains("top-k teacher"));
  REQUIRE_THROWS_WITH(distill::functional::dml_loss(student, teacher, distill::DMLOptions().act(distill::Act::none)),
                      Catch::Contains("act softmax"));
  // Shape, classes and construction errors.
  REQUIRE_THROWS_WITH(distill::functional::kd_loss(torch::randn({4, 9}), teacher), Catch::Contains("shape"));
  REQUIRE_THROWS_WITH(distill::topk_teacher(values, indices, torch::Tensor(), 10), Catch::Contains("'rest'"));
  REQUIRE_THROWS_WITH(distill::topk_teacher(values, indices + 8, rest, 10), Catch::Contains("outside [0, 10)"));
  REQUIRE_THROWS_WITH(distill::topk_teacher(values, torch::zeros({4, 3}, torch::kLong), rest, 10), Catch::Contains("repeats"));
  REQUIRE_THROWS_WITH(distill::topk_teacher(torch::randn({4, 11}), torch::arange(11).repeat({4, 1}), rest, 10),
                      Catch::Contains("only 10 classes"));
}

TEST_CASE("KD against a top-k teacher forms no dense teacher: equal to the dense KD at k = C", "[losses][topk]") {
  torch::manual_seed(3);
  auto s = torch::randn({32, 50}, torch::requires_grad()), t = torch::randn({32, 50}) * 4;
  auto [values, indices] = t.topk(50);
  auto sparse = distill::functional::kd_loss(s, distill::topk_teacher(values, indices, {}, 50));
  auto dense = distill::functional::kd_loss(s, t);
  auto g_sparse = torch::autograd::grad({sparse}, {s})[0], g_dense = torch::autograd::grad({dense}, {s})[0];
  CHECK(std::abs(sparse.item<double>() - dense.item<double>()) <= 1e-5 * std::abs(dense.item<double>()));
  CHECK(distill_test::relative_error(g_sparse, g_dense) <= 1e-5);
}

TEST_CASE("OFD's margins equal the official formula, including the -3 sigma branch", "[losses][parity][methods]") {
  const auto fixture = distill_test::load_json(DISTILL_TEST_DATA "/losses.json");
  for (const auto& spec : fixture.at("ofd_margin_cases")) {
    auto margin = distill::functional::ofd_margin(distill_test::decode(spec.at("weight")), distill_test::decode(spec.at("bias")));
    CHECK(distill_test::relative_error(margin, distill_test::decode(spec.at("margin"))) <= 1e-12);
  }
  // A channel with scale 0 is a point mass at its shift: its negative part, or 0.
  auto zero = distill::functional::ofd_margin(torch::zeros({2}, torch::kDouble), torch::tensor({-1.5, 2.0}, torch::kDouble));
  CHECK(torch::equal(zero, torch::tensor({-1.5, 0.0}, torch::kDouble)));
}

TEST_CASE("CRD updates its memories and fixes its normalisers as the official code does", "[losses][parity][methods]") {
  const auto fixture = distill_test::load_json(DISTILL_TEST_DATA "/losses.json");
  int checked = 0;
  for (const auto& spec : fixture.at("cases")) {
    if (spec.at("loss") != "crd") continue;
    auto c = distill_test::make_case(spec, torch::kDouble);
    INFO(c.id);
    distill_test::Tensors in;
    for (const auto& [name, t] : c.inputs) in[name] = t;
    c.evaluate(in);
    auto* crd = dynamic_cast<distill::CRDLossImpl*>(c.module.get());
    REQUIRE(crd != nullptr);
    const auto& after = spec.at("buffers_after");
    CHECK(distill_test::relative_error(crd->memory_s, distill_test::decode(after.at("memory_s"))) <= 1e-12);
    CHECK(distill_test::relative_error(crd->memory_t, distill_test::decode(after.at("memory_t"))) <= 1e-12);
    CHECK(distill_test::relative_error(crd->z, distill_test::decode(after.at("z"))) <= 1e-12);
    ++checked;
  }
  CHECK(checked == 2);
}
