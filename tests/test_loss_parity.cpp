// Every loss against independent reference values and gradients (losses.json, computed by
// make_loss_fixtures.py with python3-torch from the published formulas).

#include <set>

#include <catch2/catch.hpp>

#include "loss_cases.hpp"

namespace {

const distill_test::json& fixture() {
  static const auto data = distill_test::load_json(DISTILL_TEST_DATA "/losses.json");
  return data.at("cases");
}

void check_all(torch::Dtype dtype, double rtol) {
  for (const auto& spec : fixture()) {
    auto c = distill_test::make_case(spec, dtype);
    INFO(c.id);
    for (const auto& failure : distill_test::check_parity(c, rtol)) FAIL_CHECK(failure);
  }
}

}  // namespace

TEST_CASE("the fixture covers every loss", "[losses][parity]") {
  std::set<std::string> seen;
  for (const auto& spec : fixture()) seen.insert(spec.at("loss").get<std::string>());
  const std::set<std::string> all{"afd", "ce",  "dist", "distance", "dkd", "dml", "kd",
                                  "mgd", "pefd", "rkd_angle", "rkd_distance", "skd", "wsl"};
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
    for (const auto& spec : fixture()) {
      const auto loss = spec.at("loss").get<std::string>();
      if (loss != "dml" && loss != "dist" && loss != "skd") continue;
      auto c = distill_test::make_case(spec, torch::kDouble);
      INFO(c.id);
      for (const auto& failure : distill_test::check_parity(c, 1e-7)) FAIL_CHECK(failure);
    }
  }
}
