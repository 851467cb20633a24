// AFD (docs/reference.md §5.3): ResNet18 learns from a frozen ResNet34 through attention over all
// their blocks. Each network is an AttentionModel: the backbone (16 or 8 taps) followed by a
// linear transform that makes queries / keys / values; the teacher's transform is trained
// although its backbone is frozen. Loss: GT-CE + 0.9 KD (T = 4) + 50 AFD. Multi-step lr 0.1,
// batch 64, bicubic resizing, from recipes/afd.json.
//
//   afd --data /data/ILSVRC2012 --teacher resnet34-b627a593.pth
//
// The method itself (models, taps, loss terms) is examples::afd() in examples/methods.hpp.

#include "recipe_program.hpp"

int main(int argc, char** argv) {
  return examples::run(argc, argv, "afd", "AFD: ResNet34 -> ResNet18 (attention-based feature distillation)");
}
