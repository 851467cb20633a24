#pragma once
// The `distill` command as a function, so that a program of one's own can be it:
//
//   int main(int argc, char** argv) { return distill::cli::main(argc, argv); }
//
// distill train|eval|infer|export -c RECIPE [-o Key.Path=value ...] [options]; `--help` on each.
// Compiled into distill::engine (src/cli.cpp).

namespace distill::cli {

/// Runs the command line; returns the exit status (errors are printed, never thrown).
int main(int argc, char** argv);

}  // namespace distill::cli
