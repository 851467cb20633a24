// Consumer program, built against distill as a user gets it:
// - every distill loss on float64 inputs against the independent reference values and
//   gradients of tests/reference/losses.json, to 1e-7 relative;
// - a ResNet34 with the reference's MGD teacher taps blocks[2], [6], [12], [15], whose four
//   feature maps must have the reference's shapes at 224x224;
// - each of the seven recipes (JSON) built into a model and a combined loss, which give the
//   total loss and its named terms for a small batch.
//   consumer <losses.json> <recipes folder>

#include <iostream>
#include <set>

#include "distill/config.hpp"
#include "distill/losses.hpp"
#include "distill/models.hpp"
#include "loss_cases.hpp"
#include "recipes.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: consumer <losses.json> <recipes folder>\n";
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

  auto teacher = distill::config::create_backbone(
      "ResNet34", {{"return_patterns", {"blocks[2]", "blocks[6]", "blocks[12]", "blocks[15]"}}});
  teacher->eval();
  torch::NoGradGuard no_grad;
  const distill::Features out = teacher->forward(torch::randn({1, 3, 224, 224}));
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected{
      {"blocks[2]", {1, 64, 56, 56}}, {"blocks[6]", {1, 128, 28, 28}},
      {"blocks[12]", {1, 256, 14, 14}}, {"blocks[15]", {1, 512, 7, 7}}};
  for (const auto& [name, shape] : expected) {
    const bool ok = out[name].sizes() == torch::IntArrayRef(shape);
    std::cout << "ResNet34 " << name << ' ' << out[name].sizes() << (ok ? "" : " WRONG") << '\n';
    failed += ok ? 0 : 1;
  }

  torch::manual_seed(0);
  for (const char* name : {"ssld", "dml", "udml", "afd", "dkd", "dist", "mgd"}) {
    auto recipe = distill::config::load_file(std::string(argv[2]) + "/" + name + ".json");
    distill_test::shrink_recipe(recipe, 10, 64);  // no teacher weights here; small images
    auto model = distill::config::build_model(recipe["Arch"]);
    auto loss = distill::config::build_loss(recipe["Loss"]["Train"]);
    auto terms = loss->forward(model->forward(torch::randn({2, 3, 64, 64})), torch::randint(0, 10, {2, 1}));
    std::cout << name << ':';
    for (const auto& [term, value] : terms) std::cout << ' ' << term << '=' << value.item<double>();
    std::cout << '\n';
    failed += std::isfinite(terms["loss"].item<double>()) ? 0 : 1;
  }
  return failed ? 1 : 0;
}
