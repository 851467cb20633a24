// The `distill` command built from distill::engine in a consumer's project (FetchContent
// mode): the engine compiles from the fetched sources and links with what it exports.
#include "distill/train/cli.hpp"

int main(int argc, char** argv) { return distill::cli::main(argc, argv); }
