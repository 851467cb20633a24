#pragma once
// Data-parallel training on libtorch's c10d: a TCPStore rendezvous, a Gloo process group (NCCL
// for CUDA tensors where libtorch was built with it), bucketed collectives, and a heartbeat
// monitor so that a dead or hung worker stops the others within a bounded time, with an error
// that names the rank and the reason. Compiled into distill::engine (src/distributed.cpp):
// this header does not include c10d.
//
// The workers find each other through the torchrun environment: RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT (rank 0 hosts the TCPStore there, unless torchrun's agent already
// does: TORCHELASTIC_USE_AGENT_STORE=True). GLOO_SOCKET_IFNAME picks the network interface
// across machines, as in PyTorch. Data parallelism needs Gloo's headers when distill::engine is
// compiled (Debian: libgloo-dev); without them everything else works and a run with
// WORLD_SIZE > 1 stops with an error saying so.

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "distill/core/error.hpp"

namespace distill::train {

/// Where this worker sits in a data-parallel run, and how long it waits for the others.
struct DistributedOptions {
  TORCH_ARG(int64_t, rank) = 0;
  TORCH_ARG(int64_t, world_size) = 1;
  TORCH_ARG(int64_t, local_rank) = 0;
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  TORCH_ARG(int64_t, master_port) = 29500;
  /// Seconds without a heartbeat (or without reaching the store) after which a peer counts as
  /// lost and this worker stops. Env DISTILL_TIMEOUT.
  TORCH_ARG(double, timeout) = 60;
  /// Seconds all workers have to join. Env DISTILL_JOIN_TIMEOUT.
  TORCH_ARG(double, join_timeout) = 300;
  /// Seconds one collective may wait for slower peers (they may be evaluating or saving).
  TORCH_ARG(double, collective_timeout) = 1800;
  /// Gradients travel in flat buckets of at most this many bytes (PyTorch DDP's default).
  /// Env DISTILL_BUCKET_MB.
  TORCH_ARG(int64_t, bucket_bytes) = 25 << 20;
  /// The first bucket (the last layers' gradients, ready first) is smaller, so that the
  /// all-reduce starts early in backward (PyTorch DDP's default too).
  TORCH_ARG(int64_t, first_bucket_bytes) = 1 << 20;
  /// Buckets leave while backward still runs (GradientReducer::arm); false: all after backward.
  /// Env DISTILL_GRADIENT_OVERLAP=0 turns it off.
  TORCH_ARG(bool, overlap) = true;
  /// The store is torchrun's agent's (TORCHELASTIC_USE_AGENT_STORE=True): rank 0 does not host one.
  TORCH_ARG(bool, agent_store) = false;

 public:
  /// The options the torchrun environment describes, or nothing when WORLD_SIZE is unset or 1.
  static std::optional<DistributedOptions> from_environment() {
    const char* world = std::getenv("WORLD_SIZE");
    if (!world || number(world, "WORLD_SIZE") <= 1) return std::nullopt;
    DistributedOptions o;
    o.world_size(number(world, "WORLD_SIZE"));
    o.rank(number(required("RANK"), "RANK"));
    if (const char* local = std::getenv("LOCAL_RANK")) o.local_rank(number(local, "LOCAL_RANK"));
    o.master_addr(required("MASTER_ADDR"));
    o.master_port(number(required("MASTER_PORT"), "MASTER_PORT"));
    if (const char* t = std::getenv("DISTILL_TIMEOUT")) o.timeout(positive(t, "DISTILL_TIMEOUT", "seconds"));
    if (const char* t = std::getenv("DISTILL_JOIN_TIMEOUT")) o.join_timeout(positive(t, "DISTILL_JOIN_TIMEOUT", "seconds"));
    if (const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE")) o.agent_store(std::string(agent) == "True");
    if (const char* mb = std::getenv("DISTILL_BUCKET_MB"))
      o.bucket_bytes(std::max<int64_t>(1, static_cast<int64_t>(positive(mb, "DISTILL_BUCKET_MB", "megabytes") * (1 << 20))));
    if (const char* overlap = std::getenv("DISTILL_GRADIENT_OVERLAP")) o.overlap(std::string(overlap) != "0");
    if (o.rank() < 0 || o.rank() >= o.world_size())
      distill::fail("data parallel: RANK=", o.rank(), " is outside 0..", o.world_size() - 1, " (WORLD_SIZE=", o.world_size(), ")");
    if (o.master_port() < 1 || o.master_port() > 65535)
      distill::fail("data parallel: MASTER_PORT=", o.master_port(), " is not a TCP port");
    return o;
  }

 private:
  static const char* required(const char* name) {
    const char* value = std::getenv(name);
    if (!value || !*value)
      distill::fail("data parallel: WORLD_SIZE is set but ", name,
                            " is not (the torchrun environment needs RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)");
    return value;
  }
  static int64_t number(const char* text, const char* name) {
    try {
      size_t used = 0;
      const auto value = std::stoll(text, &used);
      if (used == std::string(text).size()) return value;
    } catch (const std::exception&) {
    }
    distill::fail("data parallel: ", name, "=\"", text, "\" is not an integer");
  }
  static double positive(const char* text, const char* name, const char* unit) {
    try {
      size_t used = 0;
      const auto value = std::stod(text, &used);
      if (used == std::string(text).size() && value > 0) return value;
    } catch (const std::exception&) {
    }
    distill::fail("data parallel: ", name, "=\"", text, "\" is not a positive number of ", unit);
  }
};

/// The workers of a data-parallel run. Every collective is called by all ranks in the same
/// order; a failure (a peer died, hung, or reported an error) becomes a distill::Error that
/// says which rank and why.
///
///   auto group = distill::train::ProcessGroup::world();   // null when WORLD_SIZE is unset or 1
///   if (group) group->broadcast(model->parameters(), "initial weights");
///   loss.backward();
///   if (group) group->average_gradients(model->parameters());
///   optimizer.step();
///   if (group) group->finish();                            // before the process exits
class ProcessGroup {
 public:
  /// Joins the run `options` describes (blocks until every worker joined or join_timeout).
  explicit ProcessGroup(DistributedOptions options);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  /// The process-wide group described by the torchrun environment, made on first use; null
  /// when WORLD_SIZE is unset or 1 (a single process needs no group).
  static std::shared_ptr<ProcessGroup> world();
  /// world() if it was made; null otherwise (never joins).
  static std::shared_ptr<ProcessGroup> world_if_joined();

  int64_t rank() const { return options_.rank(); }
  int64_t world_size() const { return options_.world_size(); }
  int64_t local_rank() const { return options_.local_rank(); }
  const DistributedOptions& options() const { return options_; }
  /// "rank R of W", the prefix of every message of this worker.
  std::string where() const { return "rank " + std::to_string(rank()) + " of " + std::to_string(world_size()); }

  /// Overwrites `tensors` (in place, on every rank) with rank 0's values.
  void broadcast(const std::vector<torch::Tensor>& tensors, const std::string& what);
  /// Replaces each parameter's gradient by its mean over the ranks, in buckets of
  /// bucket_bytes. A gradient missing on a rank counts as zeros there; one missing on every
  /// rank stays missing (so the optimizer skips that parameter, as in a single process).
  void average_gradients(const std::vector<torch::Tensor>& parameters);
  /// Sums `tensor` over the ranks, in place.
  void all_reduce_sum(torch::Tensor& tensor, const std::string& what);
  /// Every rank's `tensor` (same shape on all), indexed by rank.
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor, const std::string& what);
  void barrier(const std::string& what);
  /// Leaves the run cleanly: marks this rank done (so the others do not take its silence
  /// for a failure), stops the heartbeat and waits until every rank got here, so that rank 0's
  /// store outlives everyone's use of it.
  void finish();
  /// Tells the other ranks why this rank stops (they name it in their own error).
  void report_failure(const std::string& why) noexcept;

 private:
  friend class GradientReducer;
  struct Impl;
  DistributedOptions options_;
  std::unique_ptr<Impl> impl_;
};

/// Averages the gradients of `parameters` over the ranks while backward still runs, as
/// PyTorch's DistributedDataParallel does: the gradients are grouped into buckets in reverse
/// order (the last layers' gradients are ready first), and a hook on each parameter's gradient
/// accumulator launches a bucket's all-reduce as soon as all its gradients are in, so the
/// communication of the late layers overlaps the backward of the early ones. Buckets leave in
/// the same order on every rank; what backward did not complete (a parameter unused on this
/// rank in this step, or gradients accumulated in earlier micro-batches only) leaves in
/// finish(). The result equals ProcessGroup::average_gradients: a gradient missing on a rank
/// counts as zeros there; one missing on every rank stays missing.
///
///   distill::train::GradientReducer reducer(group, model->parameters());
///   reducer.arm();          // this backward ends an optimiser step (not a micro-batch that only accumulates)
///   loss.backward();        // full buckets leave as their gradients are ready
///   reducer.finish();       // the rest leave; waits; each .grad holds the mean over the ranks
///   optimizer.step();
class GradientReducer {
 public:
  GradientReducer(std::shared_ptr<ProcessGroup> group, std::vector<torch::Tensor> parameters);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// The next backward ends a step: its buckets leave as soon as they are complete. Without
  /// arm() (or with DistributedOptions::overlap off) everything leaves in finish().
  void arm();
  /// Launches the buckets backward did not, waits for all, and writes the means into each
  /// parameter's .grad. `summed`, if given, is summed over the ranks along (in place).
  void finish(torch::Tensor* summed = nullptr);
  /// How many buckets the last finish() found already sent during backward, and how many there are.
  std::pair<int64_t, int64_t> sent_early() const;

  struct State;  // src/distributed.cpp

 private:
  std::shared_ptr<State> state_;
};

}  // namespace distill::train
