#pragma once
// Starts the workers of a data-parallel run on this machine (`distill train --nproc N`): runs
// this program N times with the torchrun environment, waits for them, and reports how each
// one ended. Linux (re-executes /proc/self/exe). Compiled into distill::engine (src/launch.cpp).

#include <iostream>
#include <string>
#include <vector>

#include <torch/arg.h>

#include "distill/core/error.hpp"

namespace distill::train {

/// How many workers to start here and how they meet the others.
struct LaunchOptions {
  TORCH_ARG(int64_t, nproc) = 1;          // workers on this machine
  TORCH_ARG(int64_t, nnodes) = 1;         // machines
  TORCH_ARG(int64_t, node_rank) = 0;      // this machine's index; its workers are ranks node_rank * nproc + i
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  TORCH_ARG(int64_t, master_port) = 0;    // 0: a free port (one machine only)
  TORCH_ARG(double, timeout) = 0;         // DISTILL_TIMEOUT for the workers; 0: theirs (60 s)
};

/// Runs `arguments` (this program's arguments without the launch options) as nproc workers
/// and returns 0 when all succeed, else the first failure's exit status (128 + signal for a
/// signal). When one fails, the others get timeout + 15 seconds to notice and stop on their own
/// (they name the failed rank), then are terminated.
///
///   // distill train --nproc 2 -c recipe.json
///   return distill::train::launch_workers(distill::train::LaunchOptions().nproc(2), {"train", "-c", "recipe.json"});
int launch_workers(LaunchOptions o, const std::vector<std::string>& arguments, std::ostream& err = std::cerr);

}  // namespace distill::train
