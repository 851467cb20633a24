// DKD (docs/reference.md §5.3): ResNet18 learns from a frozen ResNet34 with ground-truth CE plus
// decoupled KD (TCKD + NCKD, T = 1, alpha = beta = 1). Data, optimiser (Momentum, multi-step
// 0.2 at epochs 30/60/90, weight decay 1e-4) and 100 epochs come from recipes/dkd.json.
//
//   dkd --data /data/ILSVRC2012 --teacher resnet34-b627a593.pth
//
// The method itself (models, taps, loss terms) is examples::dkd() in examples/methods.hpp.

#include "recipe_program.hpp"

int main(int argc, char** argv) {
  return examples::run(argc, argv, "dkd", "DKD: ResNet34 -> ResNet18 (decoupled knowledge distillation)");
}
