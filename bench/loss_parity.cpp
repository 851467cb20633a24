// Parity of every loss on one device against the independent reference values and gradients
// of tests/reference/losses.json: float64 to 1e-7 and float32 to 1e-4 relative (with the
// suite's exceptions, distill_test::tolerance), as the Catch2 suite checks on the CPU. bench/gpu.sh runs it with --device cuda, where the Catch2 suite is
// not built; CTest runs it on the CPU so that it cannot rot.
//
//   loss_parity tests/reference/losses.json [--device cuda]
//
// MGD cases drawn with a seed are skipped off the CPU: their random mask comes from the
// device's generator, which the CPU fixture cannot reproduce.

#include <iostream>
#include <string>

#include "loss_cases.hpp"

int main(int argc, char** argv) {
  if (argc != 2 && !(argc == 4 && std::string(argv[2]) == "--device")) {
    std::cerr << "usage: loss_parity <losses.json> [--device cpu|cuda]\n";
    return 2;
  }
  const torch::Device device(argc == 4 ? argv[3] : "cpu");
  if (device.is_cuda() && !torch::cuda::is_available()) {
    std::cerr << "loss_parity: CUDA requested but libtorch sees no GPU\n";
    return 2;
  }
  const auto fixture = distill_test::load_json(argv[1]);
  int failed = 0, checked = 0, skipped = 0;
  for (const auto& [dtype, rtol] : {std::pair{torch::kDouble, 1e-7}, std::pair{torch::kFloat, 1e-4}}) {
    for (const auto& spec : fixture.at("cases")) {
      if (!device.is_cpu() && spec.contains("seed")) {
        ++skipped;
        continue;
      }
      auto c = distill_test::make_case(spec, dtype, device);
      for (const auto& line : distill_test::check_parity(c, distill_test::tolerance(c, dtype, rtol))) {
        std::cerr << "MISMATCH (" << dtype << ") " << line << '\n';
        ++failed;
      }
      ++checked;
    }
  }
  std::cout << "loss parity on " << device << " (libtorch " << TORCH_VERSION << "): " << checked << " case runs (float64 at 1e-7, float32 at 1e-4), "
            << skipped << " skipped, " << failed << " mismatches\n";
  return failed == 0 ? 0 : 1;
}
