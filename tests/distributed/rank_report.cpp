// Test worker for data-parallel runs: trains a recipe (with --train) and evaluates it, then
// prints, on EVERY rank (the trainer itself prints on rank 0 only), what the tests compare
// across ranks: the evaluation numbers and a checksum of each model's weights.
//
//   rank_report [--train] [--nproc N] RECIPE.json [KEY=VALUE ...]

#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "distill/compose/models.hpp"
#include "distill/config/file.hpp"
#include "distill/train/launch.hpp"
#include "distill/train/trainer.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() >= 2 && args[0] == "--nproc")
      return distill::train::launch_workers(distill::train::LaunchOptions().nproc(std::stoi(args[1])),
                                            std::vector<std::string>(args.begin() + 2, args.end()));
    const bool train = !args.empty() && args[0] == "--train";
    if (train) args.erase(args.begin());
    if (args.empty()) {
      std::cerr << "usage: rank_report [--train] [--nproc N] RECIPE.json [KEY=VALUE ...]\n";
      return 2;
    }
    auto recipe = distill::config::load_file(args[0]);
    for (size_t i = 1; i < args.size(); ++i) distill::config::apply_override(recipe, args[i]);
    std::ostringstream quiet;
    distill::train::Trainer trainer(recipe, quiet);
    if (train) trainer.train();
    const auto result = trainer.evaluate();
    const auto& group = trainer.group();
    std::string line = "report rank " + std::to_string(group ? group->rank() : 0) + " samples " + std::to_string(result.samples);
    for (const auto& [name, value] : distill::train::Trainer::describe(result)) line += fmt::format(" {} {:.17g}", name, value);
    for (const auto& member : trainer.model().members()) {
      double checksum = 0;
      for (const auto& p : member.model->parameters()) checksum += p.to(torch::kDouble).abs().sum().item<double>();
      line += fmt::format(" {}{} {:.17g}", member.name, member.frozen ? "(frozen)" : "", checksum);
    }
    line += "\n";
    std::cout << line << std::flush;
    if (group) group->finish();
    return 0;
  } catch (const std::exception& e) {
    if (auto group = distill::train::ProcessGroup::world_if_joined()) group->report_failure(e.what());
    std::cerr << "rank_report: " << e.what() << '\n';
    return 1;
  }
}
