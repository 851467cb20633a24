// DIST (docs/reference.md §5.3): ResNet18 learns from a frozen ResNet34 with ground-truth CE plus twice
// the DIST loss (inter- and intra-class Pearson correlation of the predictions). Piecewise lr
// 0.1 / 0.01 / 0.001 / 0.0001 at epochs 30/60/90, batch 64, from recipes/dist.json.
//
//   dist --data /data/ILSVRC2012 --teacher resnet34-b627a593.pth
//
// The method itself (models, taps, loss terms) is examples::dist() in examples/methods.hpp.

#include "recipe_program.hpp"

int main(int argc, char** argv) {
  return examples::run(argc, argv, "dist", "DIST: ResNet34 -> ResNet18 (correlation-based distillation)");
}
