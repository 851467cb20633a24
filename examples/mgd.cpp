// MGD (docs/reference.md §5.3): ResNet18 learns from a frozen ResNet34 with ground-truth CE plus masked
// generative distillation on the last stage: a generator (trained with the student) must
// rebuild the teacher's blocks[15] map from the randomly channel-masked student blocks[7].
//
//   mgd --data /data/ILSVRC2012 --teacher resnet34-b627a593.pth
//
// The method itself (models, taps, loss terms) is examples::mgd() in examples/methods.hpp.

#include "recipe_program.hpp"

int main(int argc, char** argv) {
  return examples::run(argc, argv, "mgd", "MGD: ResNet34 -> ResNet18 (masked generative distillation)");
}
