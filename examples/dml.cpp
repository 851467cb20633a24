// DML (docs/reference.md §5.1): two PP-LCNet x2.5 trained together from scratch; each learns from the
// labels and from the other (symmetric KL, gradients into both). Cosine lr 0.4, L2 4e-5,
// float16 AMP, 100 epochs, from recipes/dml.json. No teacher weights: both networks learn.
//
//   dml --data /data/ILSVRC2012
//
// The method itself (models, taps, loss terms) is examples::dml() in examples/methods.hpp.

#include "recipe_program.hpp"

int main(int argc, char** argv) {
  return examples::run(argc, argv, "dml", "DML: two PPLCNet_x2_5 learning from each other", /*frozen_teacher=*/false);
}
