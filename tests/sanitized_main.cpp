// The sanitized test program: the loss, io and config suites (Catch), or with "fuzz" first,
// the seeded mutation loop over one fuzz target (fuzz/loop.cpp). One program, so that the
// instrumented library is compiled once for both.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <string>

#include "fuzz/targets.hpp"

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "fuzz") return distill_fuzz::loop(argc - 1, argv + 1);
  return Catch::Session().run(argc, argv);
}
