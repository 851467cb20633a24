// Bad input to every loss is a distill::Error whose message names the loss, the argument and
// the shapes; nothing is broadcast silently.

#include <catch2/catch.hpp>

#include "distill/losses.hpp"
#include "expect_error.hpp"

namespace F = distill::functional;

using distill_test::expect_error;

namespace {

const auto s = torch::randn({4, 10});
const auto t = torch::randn({4, 10});
const auto y = torch::tensor({1, 2, 3, 4}, torch::kLong);

}  // namespace

TEST_CASE("mismatched shapes are errors, never broadcast", "[losses][errors]") {
  const auto wider = torch::randn({4, 11});
  const auto row = torch::randn({1, 10});  // would broadcast against [4, 10]
  expect_error([&] { F::kd_loss(s, wider); }, {"kd_loss", "'teacher'", "[4, 11]", "[4, 10]"});
  expect_error([&] { F::dml_loss(s, row); }, {"dml_loss", "'teacher'", "[1, 10]"});
  expect_error([&] { F::distance_loss(s, row); }, {"distance_loss", "'teacher'", "[1, 10]"});
  expect_error([&] { F::dkd_loss(s, wider, y); }, {"dkd_loss", "[4, 11]"});
  expect_error([&] { F::dist_loss(s, row); }, {"dist_loss", "[1, 10]"});
  expect_error([&] { F::wsl_loss(s, wider, y); }, {"wsl_loss", "[4, 11]"});
  expect_error([&] { F::skd_loss(s, wider, y); }, {"skd_loss", "[4, 11]"});
  expect_error([&] { F::ce_loss(s, wider); }, {"ce_loss", "'target'", "[4, 11]"});
  expect_error([&] { F::rkd_angle_loss(s, torch::randn({5, 10})); }, {"rkd_angle_loss", "[5, 10]"});
  expect_error([&] { F::rkd_distance_loss(s, torch::randn({3, 2})); }, {"rkd_distance_loss", "[3, 2]"});
  expect_error([&] { F::kd_loss(torch::randn({10}), torch::randn({10})); }, {"kd_loss", "[N, C]", "[10]"});
  expect_error([&] { F::kd_loss(torch::randn({0, 10}), torch::randn({0, 10})); }, {"kd_loss", "[0, 10]"});
  expect_error([&] { F::dkd_loss(torch::randn({4, 1}), torch::randn({4, 1}), {}); },
               {"dkd_loss", "at least 2 classes"});
}

TEST_CASE("mismatched dtypes and devices are errors", "[losses][errors]") {
  expect_error([&] { F::kd_loss(s, t.to(torch::kDouble)); }, {"kd_loss", "'teacher'", "Double", "Float"});
  expect_error([&] { F::dist_loss(s, t.to(torch::kHalf)); }, {"dist_loss", "Half"});
  // The meta device stands in for a GPU: the check must fire before any computation.
  const auto meta = torch::empty({4, 10}, torch::TensorOptions().device(torch::kMeta));
  expect_error([&] { F::dml_loss(s, meta); }, {"dml_loss", "meta", "cpu"});
  expect_error([&] { F::kd_loss(s, torch::randint(0, 3, {4, 10})); }, {"kd_loss", "floating-point", "Long"});
  expect_error([&] { F::kd_loss(s, torch::Tensor()); }, {"kd_loss", "'teacher'", "undefined"});
  expect_error([&] { F::ce_loss(s, y.to(torch::kMeta)); }, {"ce_loss", "'target'", "meta"});
}

TEST_CASE("targets out of range or of the wrong shape or type are errors", "[losses][errors]") {
  const auto too_big = torch::tensor({1, 2, 10, 4}, torch::kLong);
  const auto negative = torch::tensor({1, -1, 3, 4}, torch::kLong);
  expect_error([&] { F::ce_loss(s, too_big); }, {"ce_loss", "class index 10", "[0, 10)"});
  expect_error([&] { F::ce_loss(s, negative); }, {"ce_loss", "class index -1"});
  expect_error([&] { F::dkd_loss(s, t, too_big); }, {"dkd_loss", "class index 10"});
  expect_error([&] { F::wsl_loss(s, t, negative); }, {"wsl_loss", "class index -1"});
  expect_error([&] { F::skd_loss(s, t, too_big); }, {"skd_loss", "class index 10"});
  expect_error([&] { F::ce_loss(s, torch::tensor({1, 2, 3}, torch::kLong)); }, {"ce_loss", "[4] or [4, 1]", "[3]"});
  expect_error([&] { F::dkd_loss(s, t, torch::zeros({4, 2}, torch::kLong)); }, {"dkd_loss", "[4, 2]"});
  expect_error([&] { F::dkd_loss(s, t, torch::zeros({4}, torch::kFloat)); }, {"dkd_loss", "integer class indices"});
  expect_error([&] { F::ce_loss(s, torch::zeros({4}, torch::kBool)); }, {"ce_loss", "integer class indices"});
  // An int32 target is fine.
  CHECK(std::isfinite(F::ce_loss(s, y.to(torch::kInt)).item<float>()));
}

TEST_CASE("bad options are errors", "[losses][errors]") {
  for (double temperature : {0.0, -1.0, std::nan("")}) {
    expect_error([&] { F::kd_loss(s, t, distill::KDOptions().temperature(temperature)); }, {"kd_loss", "temperature"});
    expect_error([&] { F::dkd_loss(s, t, y, distill::DKDOptions().temperature(temperature)); }, {"dkd_loss", "temperature"});
    expect_error([&] { F::wsl_loss(s, t, y, distill::WSLOptions().temperature(temperature)); }, {"wsl_loss", "temperature"});
    expect_error([&] { F::skd_loss(s, t, y, distill::SKDOptions().temperature(temperature)); }, {"skd_loss", "temperature"});
  }
  expect_error([&] { F::dml_loss(s, t, distill::DMLOptions().eps(-1)); }, {"dml_loss", "eps"});
  expect_error([&] { distill::DMLLoss(distill::DMLOptions().eps(std::nan(""))); }, {"dml_loss", "eps"});
  expect_error([&] { F::dist_loss(s, t, distill::DISTOptions().beta(-1)); }, {"dist_loss", "beta", ">= 0"});
  expect_error([&] { distill::DISTLoss(distill::DISTOptions().gamma(INFINITY)); }, {"dist_loss", "gamma"});
  expect_error([&] { distill::DKDLoss(distill::DKDOptions().alpha(-2)); }, {"dkd_loss", "alpha"});
  expect_error([&] { distill::SKDLoss(distill::SKDOptions().alpha(1.5)); }, {"skd_loss", "alpha"});
  expect_error([&] { distill::CELoss(distill::CEOptions().label_smoothing(2)); }, {"ce_loss", "label_smoothing"});
  expect_error([&] { F::ce_loss(s, y, distill::CEOptions().label_smoothing(1.0)); }, {"ce_loss", "label_smoothing"});
  expect_error([&] { F::ce_loss(s, y, distill::CEOptions().label_smoothing(-0.1)); }, {"ce_loss", "label_smoothing"});
}

TEST_CASE("losses with parameters check channels, shapes and their own dtype", "[losses][errors]") {
  distill::MGDLoss mgd(distill::MGDOptions(4, 6));
  expect_error([&] { mgd(torch::randn({2, 5, 3, 3}), torch::randn({2, 6, 3, 3})); },
               {"MGDLoss", "[N, 4, H, W]", "[2, 5, 3, 3]"});
  expect_error([&] { mgd(torch::randn({2, 4, 3, 3}), torch::randn({2, 6, 4, 3})); }, {"MGDLoss", "[2, 6, 4, 3]"});
  expect_error([&] { mgd(torch::randn({2, 4, 9}), torch::randn({2, 6, 3, 3})); }, {"MGDLoss", "'student'", "[N, C, H, W]"});
  expect_error([&] { mgd(torch::randn({2, 4, 3, 3}, torch::kDouble), torch::randn({2, 6, 3, 3}, torch::kDouble)); },
               {"MGDLoss", "Double", "Float", "->to"});
  expect_error([] { distill::MGDLoss(distill::MGDOptions(4, 6).lambda_mgd(1.5)); }, {"MGDLoss", "lambda_mgd"});
  expect_error([] { distill::MGDLoss(distill::MGDOptions(0, 6)); }, {"MGDLoss", "channel"});

  distill::PEFDLoss pefd(distill::PEFDOptions(8, 6));
  expect_error([&] { pefd(torch::randn({3, 8, 2, 2}), torch::randn({3, 6})); },
               {"PEFDLoss", "'student'", "32 features", "expected 8"});
  expect_error([&] { pefd(torch::randn({3, 8}), torch::randn({2, 6})); }, {"PEFDLoss", "batch"});
  distill::PEFDLoss gap(distill::PEFDOptions(8, 6).mode(distill::PEFDMode::gap));
  expect_error([&] { gap(torch::randn({3, 8}), torch::randn({3, 6, 2, 2})); }, {"PEFDLoss", "[N, C, H, W]", "[3, 8]"});

  distill::AFDLoss afd(distill::AFDOptions({{4, 2, 2}, {8, 1, 1}}, {{4, 2, 2}, {4, 2, 2}, {8, 1, 1}}).qk_dim(5));
  const int64_t n = 3;
  auto key = torch::randn({n, 2, 3, 5});
  auto query = torch::randn({n, 3, 5});
  std::vector<torch::Tensor> sv{torch::randn({n, 2, 4}), torch::randn({n, 2, 1})};
  std::vector<torch::Tensor> tv{torch::randn({n, 4}), torch::randn({n, 4}), torch::randn({n, 1})};
  CHECK(std::isfinite(afd->forward(key, sv, query, tv).item<float>()));
  expect_error([&] { afd->forward(torch::randn({n, 2, 3, 4}), sv, query, tv); }, {"AFDLoss", "'bilinear_key'", "[3, 2, 3, 5]"});
  expect_error([&] { afd->forward(key, sv, torch::randn({n, 2, 5}), tv); }, {"AFDLoss", "'query'", "[3, 2, 5]"});
  expect_error([&] { afd->forward(key, {sv[0]}, query, tv); }, {"AFDLoss", "'student_values'", "2 tensors"});
  expect_error([&] { afd->forward(key, sv, query, {tv[0], tv[2], tv[2]}); }, {"AFDLoss", "'teacher_values[1]'", "[3, 4]"});
  expect_error([] { distill::AFDLoss(distill::AFDOptions({{4, 2}}, {{4, 2, 2}})); }, {"AFDLoss", "[C, H, W]"});
}

TEST_CASE("temperatures and weights beyond float32's range are errors, not libtorch overflows", "[losses][errors]") {
  // Found by the recipe fuzz target: a temperature of 1e-300 made 1/T unrepresentable in float.
  auto s = torch::randn({4, 5}), t = torch::randn({4, 5});
  auto y = torch::randint(0, 5, {4});
  namespace F = distill::functional;
  for (double temperature : {1e-300, 1e-7, 1e7, 1e300}) {
    INFO(temperature);
    distill_test::expect_error([&] { F::kd_loss(s, t, distill::KDOptions().temperature(temperature)); }, {"temperature", "[1e-6, 1e6]"});
    distill_test::expect_error([&] { F::dkd_loss(s, t, y, distill::DKDOptions().temperature(temperature)); }, {"temperature"});
    distill_test::expect_error([&] { F::wsl_loss(s, t, y, distill::WSLOptions().temperature(temperature)); }, {"temperature"});
    distill_test::expect_error([&] { F::skd_loss(s, t, y, distill::SKDOptions().temperature(temperature)); }, {"temperature"});
    distill_test::expect_error([&] { F::dist_loss(s, t, distill::DISTOptions().tau(temperature)); }, {"tau"});
  }
  distill_test::expect_error([&] { F::dkd_loss(s, t, y, distill::DKDOptions().beta(1e300)); }, {"beta", "float32"});
  CHECK(std::isfinite(F::kd_loss(s, t, distill::KDOptions().temperature(1e-6)).item<double>()));
}

TEST_CASE("the methods of docs/methods.md name what is wrong", "[losses][errors][methods]") {
  const auto wider = torch::randn({4, 11});
  expect_error([&] { F::nkd_loss(s, wider, y); }, {"nkd_loss", "[4, 11]"});
  expect_error([&] { F::nkd_loss(torch::randn({4, 1}), torch::randn({4, 1}), {}); }, {"nkd_loss", "at least 2 classes"});
  expect_error([&] { F::nkd_loss(s, t, torch::tensor({0, 1, 10, 2}, torch::kLong)); }, {"nkd_loss", "class index 10"});
  expect_error([] { distill::NKDLoss(distill::NKDOptions().temperature(0)); }, {"nkd_loss", "temperature"});
  // Standardisation reads every logit: a top-k teacher and a single class are refused.
  auto [values, indices] = t.topk(3);
  auto rest = torch::zeros({4});
  auto topk = distill::topk_teacher(values, indices, rest, 10);
  expect_error([&] { F::kd_loss(s, topk, distill::KDOptions().standardize(true)); }, {"kd_loss", "standardize", "top-k"});
  expect_error([&] { F::dist_loss(s, topk, distill::DISTOptions().standardize(true)); }, {"dist_loss", "standardize"});
  expect_error([&] { F::kd_loss(torch::randn({4, 1}), torch::randn({4, 1}), distill::KDOptions().standardize(true)); },
               {"kd_loss", "standardize needs at least 2 classes"});
  // CTKD: a temperature of one value; options in range.
  expect_error([&] { F::kd_loss_at(s, t, torch::ones({2})); }, {"kd_loss_at", "'temperature'", "one value"});
  expect_error([] { distill::CTKDLoss(distill::CTKDOptions().t_start(0)); }, {"CTKDLoss", "t_start"});
  // FitNet: shapes the connector cannot map, and inputs that differ from the declared shapes.
  expect_error([] { distill::FitNetLoss(distill::FitNetOptions({8, 4, 4}, {8, 7, 7})); },
               {"FitNetLoss", "no connector", "[8, 4, 4]", "[8, 7, 7]"});
  expect_error([] { distill::FitNetLoss(distill::FitNetOptions({8, 4}, {8, 4, 4})); }, {"FitNetLoss", "[C, H, W]"});
  distill::FitNetLoss fitnet(distill::FitNetOptions({3, 4, 4}, {5, 4, 4}));
  expect_error([&] { fitnet(torch::randn({2, 3, 4, 4}), torch::randn({2, 6, 4, 4})); },
               {"FitNetLoss", "expected student [N, [3, 4, 4]]", "[2, 6, 4, 4]"});
  // AT: maps that give attention maps of different sizes.
  expect_error([&] { F::at_loss(torch::randn({2, 3, 4, 4}), torch::randn({2, 3, 4, 5})); }, {"at_loss", "[2, 3, 4, 5]"});
  expect_error([&] { F::at_loss(torch::randn({2, 3, 4}), torch::randn({2, 3, 4, 4})); }, {"at_loss", "[N, C, H, W]"});
}
