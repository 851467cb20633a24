// Consumer program: every distill loss on float64 inputs against the independent reference
// values and gradients of tests/reference/losses.json, to 1e-7 relative.
//   consumer <losses.json>

#include <iostream>
#include <set>

#include "distill/losses.hpp"
#include "loss_cases.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: consumer <losses.json>\n";
    return 2;
  }
  auto fixture = distill_test::load_json(argv[1]);
  std::set<std::string> losses;
  int failed = 0, cases = 0;
  for (const auto& spec : fixture.at("cases")) {
    auto c = distill_test::make_case(spec, torch::kDouble);
    for (const auto& line : distill_test::check_parity(c, 1e-7)) {
      std::cerr << "MISMATCH " << line << '\n';
      ++failed;
    }
    losses.insert(c.loss);
    ++cases;
  }
  std::cout << cases << " cases over " << losses.size() << " losses:";
  for (const auto& l : losses) std::cout << ' ' << l;
  std::cout << '\n' << (failed ? "FAILED" : "all values and gradients within 1e-7 relative") << '\n';
  return failed ? 1 : 0;
}
