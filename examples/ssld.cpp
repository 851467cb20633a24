// SSLD (docs/reference.md §5.1, PPLCNet_x2_5_ssld): PP-LCNet x2.5 learns only from a frozen ResNet50_vd
// through the symmetric KL of DML (no labels are used). Cosine lr 0.2 with 5 warm-up epochs,
// L2 4e-5, float16 AMP, 100 epochs, from recipes/ssld.json (which evaluates on val_list.txt:
// the reference's config evaluates on train_list.txt by mistake).
//
//   ssld --data /data/ILSVRC2012 --teacher resnet50_vd_ssld.pth
//
// The method itself (models, taps, loss terms) is examples::ssld() in examples/methods.hpp.

#include "recipe_program.hpp"

int main(int argc, char** argv) {
  return examples::run(argc, argv, "ssld", "SSLD: ResNet50_vd -> PPLCNet_x2_5 (label-free distillation)");
}
