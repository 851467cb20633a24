// A seeded mutation loop over one fuzz target, for builds without libFuzzer (g++ with
// AddressSanitizer and UndefinedBehaviorSanitizer in the test suite), run by the sanitized
// test program:
//
//   distill_sanitized fuzz <target> [--runs N] [--seed S] [--dump K FILE] [--corpus DIR] [FILE...]
//
// Every input is a seed (or a FILE) mutated 1 to 4 times; run K is reproducible from the seed
// alone (--dump K FILE writes it). --corpus DIR writes the seeds as files (a libFuzzer corpus).

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "targets.hpp"

namespace {

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

int usage() {
  std::cerr << "usage: distill_sanitized fuzz <target> [--runs N] [--seed S] [--dump K FILE] [--corpus DIR] [FILE...]\ntargets:";
  for (const auto& t : distill_fuzz::targets()) std::cerr << "\n  " << t.name << "  " << t.what;
  std::cerr << '\n';
  return 2;
}

}  // namespace

int distill_fuzz::loop(int argc, char** argv) {
  if (argc < 2) return usage();
  const auto& target = distill_fuzz::target(argv[1]);
  long long runs = 2000, dump_run = -1;
  unsigned long long seed = 1;
  std::string dump_file, corpus_dir;
  std::vector<std::string> corpus = target.seeds();
  const size_t own_seeds = corpus.size();
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--runs" && i + 1 < argc) runs = std::atoll(argv[++i]);
    else if (arg == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (arg == "--dump" && i + 2 < argc) dump_run = std::atoll(argv[++i]), dump_file = argv[++i];
    else if (arg == "--corpus" && i + 1 < argc) corpus_dir = argv[++i];
    else if (!arg.empty() && arg[0] == '-') return usage();
    else corpus.push_back(read(arg));
  }
  if (!corpus_dir.empty()) {
    std::filesystem::create_directories(corpus_dir);
    for (size_t i = 0; i < corpus.size(); ++i)
      std::ofstream(corpus_dir + "/seed" + std::to_string(i), std::ios::binary) << corpus[i];
    std::cout << "wrote " << corpus.size() << " seeds to " << corpus_dir << '\n';
    return 0;
  }
  for (size_t i = 0; i < corpus.size(); ++i)  // files given run first; a seed of our own must be accepted
    if (!target.run(corpus[i]) && i < own_seeds) {
      std::cerr << target.name << ": seed " << i << " is not accepted (run with DISTILL_FUZZ_VERBOSE=1 to see why)\n";
      return 1;
    }
  std::mt19937_64 rng(seed);
  long long accepted = 0;
  for (long long run = 0; run < runs; ++run) {
    std::string input = corpus[rng() % corpus.size()];
    const int steps = 1 + static_cast<int>(rng() % 4);
    for (int s = 0; s < steps; ++s)
      if (!(target.mutate && rng() % 10 != 0 && target.mutate(input, rng))) distill_fuzz::mutate_bytes(input, corpus, rng);
    if (run == dump_run) {
      std::ofstream(dump_file, std::ios::binary) << input;
      std::cout << "wrote run " << run << " (" << input.size() << " bytes) to " << dump_file << '\n';
      return 0;
    }
    distill_fuzz::current_run() = run;
    if (run % 500 == 0) std::fprintf(stderr, "%s: run %lld\n", target.name.c_str(), run);
    accepted += target.run(input);  // aborts, naming the run, on a finding
  }
  std::cout << "PASS: " << target.name << ": " << runs << " mutated inputs (seed " << seed << ", " << corpus.size()
            << " seeds), each a success (" << accepted << ") or a distill::Error (" << runs - accepted << ")\n";
  return 0;
}
