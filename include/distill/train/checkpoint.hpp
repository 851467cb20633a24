#pragma once
// Training checkpoints: model, loss modules, optimiser state, loss scale, RNG state, epoch and
// best metric in one state-dict file (so Python's torch.load reads it too), written
// atomically. Everything in it is a tensor: reading a checkpoint never runs code. Compiled
// into distill::engine (src/train.cpp).

#include <string>
#include <vector>

#include "distill/compose/fwd.hpp"
#include "distill/core/error.hpp"
#include "distill/io/state_dict.hpp"
#include "distill/train/amp.hpp"

namespace distill::train {

/// Where a run stands: completed epochs, optimiser steps, and the best evaluation so far.
struct TrainState {
  int64_t epoch = 0;
  int64_t step = 0;
  double best_top1 = -1;
  int64_t best_epoch = -1;
};

/// The optimiser's per-parameter state as plain tensors, "<group>.<index>.<field>" (e.g.
/// "0.3.momentum_buffer"; SGD's momentum buffers, AdamW's moments and step count): data only,
/// so a checkpoint is read by the same unpickler as weights. libtorch's own
/// optimizer.save() writes a TorchScript archive instead, whose loading can execute what the
/// file holds.
io::StateDict optimizer_state(torch::optim::Optimizer& optimizer);

/// Restores what optimizer_state() wrote into an optimiser with the same groups and
/// parameters. Every entry must name an existing parameter and have its shape; `origin` names
/// the file in errors.
void load_optimizer_state(torch::optim::Optimizer& optimizer, const io::StateDict& dict, const std::string& origin);

/// Writes a checkpoint: "model.*" and "loss.*" (parameters and buffers), "optimizer.*" (see
/// optimizer_state()), "rng.cpu" / "rng.cuda", "meta.*" (epoch, step, best metric, loss
/// scale), and the `extra` entries (a data-parallel run's other ranks' RNG states).
void save_checkpoint(const std::string& path, const DistillationModelImpl& model, const CombinedLossImpl& loss,
                     torch::optim::Optimizer& optimizer, const TrainState& state, const GradScaler* scaler = nullptr,
                     const io::StateDict& extra = io::StateDict());

/// Restores everything save_checkpoint wrote; returns the state to continue from. `entries`,
/// when given, receives the whole file (for entries the caller added).
TrainState load_checkpoint(const std::string& path, DistillationModelImpl& model, CombinedLossImpl& loss,
                           torch::optim::Optimizer& optimizer, GradScaler* scaler = nullptr,
                           io::StateDict* entries = nullptr);

/// Loads weights into a model for evaluation, inference or export, from a training
/// checkpoint, a state dict of the whole DistillationModel, or a state dict of its
/// infer_model_name model alone (e.g. an exported student). Entries of the models named in
/// `not_built` (a teacher cache's, which a cached run does not build) are left out of a
/// whole-model file.
void load_model_weights(DistillationModelImpl& model, const std::string& path, const std::vector<std::string>& not_built = {});

/// The state of the CPU's default generator, and setting it back.
torch::Tensor cpu_rng_state();
void set_cpu_rng_state(const torch::Tensor& state);

}  // namespace distill::train
