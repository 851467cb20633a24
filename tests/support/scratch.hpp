#pragma once
// Scratch paths of the engine tests and the synthetic dataset they share (written once per
// build tree, safely when CTest runs several test processes at once), and the metrics log.

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "synthetic.hpp"

namespace distill_test {

/// DISTILL_TEST_SCRATCH/engine/`name`, its parent folder made.
inline std::string scratch(const std::string& name) {
  const auto path = std::string(DISTILL_TEST_SCRATCH) + "/engine/" + name;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  return path;
}

/// The synthetic dataset: each process writes its own copy and moves it into place, so nobody
/// reads a half-written one.
inline const std::string& dataset_dir() {
  static const std::string dir = [] {
    const auto final_dir = scratch("synthetic");
    if (!std::filesystem::exists(final_dir + "/train_list.txt")) {
      const auto mine = final_dir + ".tmp" + std::to_string(::getpid());
      write_synthetic_dataset(mine);
      std::error_code error;
      std::filesystem::rename(mine, final_dir, error);
      if (error) std::filesystem::remove_all(mine);  // another process was first; same content
    }
    return final_dir;
  }();
  return dir;
}

/// The records of a metrics.jsonl.
inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> records;
  for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
  return records;
}

}  // namespace distill_test
