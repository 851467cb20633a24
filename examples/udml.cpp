// UDML (docs/reference.md §5.1): DML plus an L2 distance between the two networks' "blocks5" feature
// maps ([N, 640, 14, 14] at 224x224), tapped by name. Two PP-LCNet x2.5 from scratch; cosine lr
// 0.4, L2 4e-5, float16 AMP, 100 epochs, from recipes/udml.json.
//
//   udml --data /data/ILSVRC2012
//
// The method itself (models, taps, loss terms) is examples::udml() in examples/methods.hpp.

#include "recipe_program.hpp"

int main(int argc, char** argv) {
  return examples::run(argc, argv, "udml", "UDML: DML plus feature distance between two PPLCNet_x2_5", /*frozen_teacher=*/false);
}
