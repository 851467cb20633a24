#pragma once
// Fuzz targets: each takes arbitrary bytes and must end in success or a distill::Error, never
// in another exception, a crash or a sanitizer report. loop.cpp runs them as a seeded
// mutation loop (g++, AddressSanitizer + UndefinedBehaviorSanitizer, in the test suite);
// libfuzzer.cpp gives each to libFuzzer (clang). No libtorch here: loop.cpp stays light.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace distill_fuzz {

struct Target {
  std::string name, what;
  /// Runs one input: true on success, false on a distill::Error; aborts on anything else.
  std::function<bool(const std::string& input)> run;
  /// Valid inputs to start from.
  std::function<std::vector<std::string>()> seeds;
  /// Optional structure-aware mutation (returns false to fall back to byte mutations).
  std::function<bool(std::string& input, std::mt19937_64& rng)> mutate;
};

/// The run of the loop in progress (named in a finding's report).
inline long long& current_run() {
  static long long run = -1;
  return run;
}

/// All targets: pickle, weights, recipe, jpeg, idx.
const std::vector<Target>& targets();
const Target& target(const std::string& name);

/// Byte-level mutations (flips, interesting values, inserts, deletions, copies, splices).
void mutate_bytes(std::string& input, const std::vector<std::string>& corpus, std::mt19937_64& rng);

/// The seeded mutation loop (loop.cpp): argv[0] is "fuzz", argv[1] the target's name.
int loop(int argc, char** argv);

}  // namespace distill_fuzz
