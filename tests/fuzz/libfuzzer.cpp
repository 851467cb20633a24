// One fuzz target for libFuzzer (clang -fsanitize=fuzzer,address,undefined), chosen at
// compile time with -DDISTILL_FUZZ_TARGET=\"recipe\" (see docs/fuzzing.md).

#include <cstring>
#include <random>

#include "targets.hpp"

namespace {
const distill_fuzz::Target& chosen() { return distill_fuzz::target(DISTILL_FUZZ_TARGET); }
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  chosen().run(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  std::mt19937_64 rng(seed);
  std::string input(reinterpret_cast<const char*>(data), size);
  if (chosen().mutate && rng() % 2 == 0 && chosen().mutate(input, rng) && input.size() <= max_size) {
    std::memcpy(data, input.data(), input.size());
    return input.size();
  }
  return LLVMFuzzerMutate(data, size, max_size);
}
