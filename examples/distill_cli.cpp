// The `distill` command: train, eval, infer and export a recipe (src/cli.cpp).

#include "distill/train/cli.hpp"

int main(int argc, char** argv) { return distill::cli::main(argc, argv); }
