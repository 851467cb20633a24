#pragma once
// Training checkpoints: model, loss modules, optimiser, loss scale, RNG state, epoch and best
// metric in one state-dict file (so Python's torch.load reads it too), written atomically.

#include <sstream>
#include <string>

#include "distill/compose/combined_loss.hpp"
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

namespace detail {

inline void add_prefixed(io::StateDict& dict, const std::string& prefix, const io::StateDict& part) {
  for (const auto& item : part) dict.insert(prefix + item.key(), item.value());
}

inline io::StateDict strip_prefix(const io::StateDict& dict, const std::string& prefix) {
  io::StateDict out;
  for (const auto& item : dict)
    if (item.key().rfind(prefix, 0) == 0) out.insert(item.key().substr(prefix.size()), item.value());
  return out;
}

inline torch::Tensor bytes_tensor(const std::string& bytes) {
  auto t = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

inline std::string tensor_bytes(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::string(reinterpret_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()));
}

// The state of a generator (the CPU's default, or a CUDA device's), read and written under its lock.
inline torch::Tensor rng_state(torch::Generator generator) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}
inline void set_rng_state(torch::Generator generator, const torch::Tensor& state) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}
inline torch::Generator cpu_generator() { return at::detail::getDefaultCPUGenerator(); }
inline torch::Generator cuda_generator() { return at::globalContext().defaultGenerator(torch::Device(torch::kCUDA, 0)); }

}  // namespace detail

/// Writes a checkpoint: "model.*" and "loss.*" (parameters and buffers), "optimizer" (its
/// serialized state), "rng.cpu" / "rng.cuda", "meta.*" (epoch, step, best metric, loss scale),
/// and the `extra` entries (a data-parallel run's other ranks' RNG states).
inline void save_checkpoint(const std::string& path, const DistillationModelImpl& model, const CombinedLossImpl& loss,
                            torch::optim::Optimizer& optimizer, const TrainState& state,
                            const GradScaler* scaler = nullptr, const io::StateDict& extra = io::StateDict()) {
  io::StateDict dict;
  for (const auto& item : extra) dict.insert(item.key(), item.value());
  detail::add_prefixed(dict, "model.", io::state_dict(model));
  detail::add_prefixed(dict, "loss.", io::state_dict(loss));
  std::ostringstream buffer;
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  archive.save_to(buffer);
  dict.insert("optimizer", detail::bytes_tensor(buffer.str()));
  dict.insert("rng.cpu", detail::rng_state(detail::cpu_generator()));
  if (torch::cuda::is_available()) dict.insert("rng.cuda", detail::rng_state(detail::cuda_generator()));
  auto scalar = [](double v) { return torch::tensor(v, torch::kDouble); };
  dict.insert("meta.epoch", scalar(static_cast<double>(state.epoch)));
  dict.insert("meta.step", scalar(static_cast<double>(state.step)));
  dict.insert("meta.best_top1", scalar(state.best_top1));
  dict.insert("meta.best_epoch", scalar(static_cast<double>(state.best_epoch)));
  if (scaler) {
    dict.insert("meta.loss_scale", scalar(scaler->current_scale()));
    dict.insert("meta.scale_good_steps", scalar(static_cast<double>(scaler->good_steps())));
    dict.insert("meta.scale_bad_steps", scalar(static_cast<double>(scaler->bad_steps())));
  }
  io::write_state_dict(dict, path);
}

/// Restores everything save_checkpoint wrote; returns the state to continue from. `entries`,
/// when given, receives the whole file (for entries the caller added).
inline TrainState load_checkpoint(const std::string& path, DistillationModelImpl& model, CombinedLossImpl& loss,
                                  torch::optim::Optimizer& optimizer, GradScaler* scaler = nullptr,
                                  io::StateDict* entries = nullptr) {
  const auto dict = io::read_state_dict(path);
  if (entries) *entries = dict;
  for (const char* key : {"optimizer", "rng.cpu", "meta.epoch", "meta.step"})
    if (!dict.contains(key)) distill::detail::fail(path, ": not a distill training checkpoint (no '", key, "')");
  io::load_state_dict(model, detail::strip_prefix(dict, "model."), {}, path + " (model)");
  io::load_state_dict(loss, detail::strip_prefix(dict, "loss."), {}, path + " (loss modules)");
  std::istringstream buffer(detail::tensor_bytes(dict["optimizer"]));
  torch::serialize::InputArchive archive;
  archive.load_from(buffer);
  optimizer.load(archive);
  detail::set_rng_state(detail::cpu_generator(), dict["rng.cpu"]);
  if (dict.contains("rng.cuda") && torch::cuda::is_available()) detail::set_rng_state(detail::cuda_generator(), dict["rng.cuda"]);
  auto number = [&](const char* key) { return dict[key].item<double>(); };
  if (scaler && dict.contains("meta.loss_scale"))
    scaler->restore(number("meta.loss_scale"), static_cast<int64_t>(number("meta.scale_good_steps")),
                    static_cast<int64_t>(number("meta.scale_bad_steps")));
  TrainState state;
  state.epoch = static_cast<int64_t>(number("meta.epoch"));
  state.step = static_cast<int64_t>(number("meta.step"));
  state.best_top1 = number("meta.best_top1");
  state.best_epoch = static_cast<int64_t>(number("meta.best_epoch"));
  return state;
}

/// Loads weights into a model for evaluation, inference or export, from a training
/// checkpoint, a state dict of the whole DistillationModel, or a state dict of its
/// infer_model_name model alone (e.g. an exported student).
inline void load_model_weights(DistillationModelImpl& model, const std::string& path) {
  const auto dict = io::read_state_dict(path);
  if (dict.contains("meta.epoch")) {
    io::load_state_dict(model, detail::strip_prefix(dict, "model."), {}, path + " (model)");
    return;
  }
  const std::string prefix = model.infer_model_name() + ".";
  bool whole = false;
  for (const auto& item : dict) whole = whole || item.key().rfind(prefix, 0) == 0;
  if (whole) io::load_state_dict(model, dict, {}, path);
  else io::load_state_dict(*model.infer_model(), dict, {}, path);
}

}  // namespace distill::train
