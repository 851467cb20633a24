#pragma once
// What the seven recipe programs share (examples/recipe_program.cpp): the command line
//
//   <program> --data DIR --teacher FILE [--epochs N] [--batch-size N] [--image-size N]
//             [--classes N] [--device cpu|gpu] [--workers N] [--threads N] [--no-amp]
//             [--output DIR] [--nproc N] [-o Dotted.Key=value ...]
//
// the recipe examples/recipes/<name>.json with it applied (data, optimiser, schedule), the
// method of examples/methods.hpp, and training with the engine.

namespace examples {

/// Runs recipe program `name`; returns its exit status. `frozen_teacher`: the method has a
/// pretrained teacher (not DML's peers), so a missing --teacher is warned about.
int run(int argc, char** argv, const char* name, const char* summary, bool frozen_teacher = true);

}  // namespace examples
