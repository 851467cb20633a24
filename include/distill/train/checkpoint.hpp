#pragma once
// Training checkpoints: model, loss modules, optimiser, loss scale, RNG state, epoch and best
// metric in one state-dict file (so Python's torch.load reads it too), written atomically.

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

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

namespace detail {

/// Optimiser states are stored under the parameter's address (libtorch 1.x: as a string,
/// 2.x: as a pointer); this is the key for either.
template <class State>
auto state_key(const torch::Tensor& parameter) {
  using Key = typename std::decay_t<State>::key_type;
  if constexpr (std::is_same_v<Key, std::string>) return c10::guts::to_string(parameter.unsafeGetTensorImpl());
  else return static_cast<Key>(parameter.unsafeGetTensorImpl());
}

/// The per-parameter tensors of the optimisers distill makes (SGD's momentum buffer; AdamW's
/// moments and step count), by field name.
inline std::vector<std::pair<std::string, torch::Tensor>> state_fields(const torch::optim::OptimizerParamState& state) {
  if (const auto* sgd = dynamic_cast<const torch::optim::SGDParamState*>(&state))
    return {{"momentum_buffer", sgd->momentum_buffer()}};
  if (const auto* adamw = dynamic_cast<const torch::optim::AdamWParamState*>(&state))
    return {{"step", torch::tensor(static_cast<double>(adamw->step()), torch::kDouble)},
            {"exp_avg", adamw->exp_avg()},
            {"exp_avg_sq", adamw->exp_avg_sq()},
            {"max_exp_avg_sq", adamw->max_exp_avg_sq()}};
  distill::detail::fail("checkpoint: cannot store the state of this optimiser (distill stores SGD's and AdamW's)");
}

}  // namespace detail

/// The optimiser's per-parameter state as plain tensors, "<group>.<index>.<field>" (e.g.
/// "0.3.momentum_buffer"): data only, so a checkpoint is read by the same unpickler as weights
/// and never runs code. libtorch's own optimizer.save() writes a TorchScript archive instead,
/// whose loading can execute what the file holds.
inline io::StateDict optimizer_state(torch::optim::Optimizer& optimizer) {
  io::StateDict dict;
  const auto& groups = optimizer.param_groups();
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t i = 0; i < groups[g].params().size(); ++i) {
      auto it = optimizer.state().find(detail::state_key<decltype(optimizer.state())>(groups[g].params()[i]));
      if (it == optimizer.state().end()) continue;  // no step yet
      for (const auto& [field, value] : detail::state_fields(*it->second))
        if (value.defined()) dict.insert(std::to_string(g) + "." + std::to_string(i) + "." + field, value.detach().cpu());
    }
  return dict;
}

/// Restores what optimizer_state() wrote into an optimiser with the same groups and
/// parameters. Every entry must name an existing parameter and have its shape; `origin` names
/// the file in errors.
inline void load_optimizer_state(torch::optim::Optimizer& optimizer, const io::StateDict& dict, const std::string& origin) {
  auto& groups = optimizer.param_groups();
  std::map<std::pair<size_t, size_t>, std::map<std::string, torch::Tensor>> per_parameter;
  for (const auto& item : dict) {
    size_t g = 0, i = 0;
    char field[64] = {0};
    int used = 0;
    if (std::sscanf(item.key().c_str(), "%zu.%zu.%63[a-z_]%n", &g, &i, field, &used) != 3 ||
        static_cast<size_t>(used) != item.key().size())
      distill::detail::fail(origin, ": unknown optimiser entry 'optimizer.", item.key(), "'");
    if (g >= groups.size() || i >= groups[g].params().size())
      distill::detail::fail(origin, ": optimiser entry 'optimizer.", item.key(), "' names parameter ", i, " of group ", g,
                            ", which this run's optimiser does not have (", groups.size(), " groups)");
    per_parameter[{g, i}][field] = item.value();
  }
  const bool adamw = dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr;
  const bool sgd = dynamic_cast<torch::optim::SGD*>(&optimizer) != nullptr;
  if (!adamw && !sgd) distill::detail::fail(origin, ": cannot restore the state of this optimiser (distill restores SGD's and AdamW's)");
  auto& states = optimizer.state();
  states.clear();
  for (auto& [where, fields] : per_parameter) {
    const auto& parameter = groups[where.first].params()[where.second];
    auto tensor = [&](const std::string& field, bool required) -> torch::Tensor {
      auto it = fields.find(field);
      if (it == fields.end()) {
        if (required)
          distill::detail::fail(origin, ": optimiser entry 'optimizer.", where.first, ".", where.second, ".", field, "' is missing");
        return {};
      }
      auto value = it->second;
      fields.erase(it);
      if (field == "step") {
        if (value.numel() != 1) distill::detail::fail(origin, ": optimiser step count is not a number");
        return value;
      }
      if (value.sizes() != parameter.sizes() || !value.is_floating_point())
        distill::detail::fail(origin, ": optimiser entry 'optimizer.", where.first, ".", where.second, ".", field, "' is ",
                              value.scalar_type(), " ", value.sizes(), " but its parameter is ", parameter.sizes());
      return value.to(parameter.options()).clone();
    };
    std::unique_ptr<torch::optim::OptimizerParamState> state;
    if (sgd) {
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(tensor("momentum_buffer", true));
      state = std::move(s);
    } else {
      auto s = std::make_unique<torch::optim::AdamWParamState>();
      const double step = tensor("step", true).item<double>();
      if (!(step >= 0 && step < 9e15) || step != std::floor(step))
        distill::detail::fail(origin, ": optimiser step count ", step, " is not a count");
      s->step(static_cast<int64_t>(step));
      s->exp_avg(tensor("exp_avg", true));
      s->exp_avg_sq(tensor("exp_avg_sq", true));
      s->max_exp_avg_sq(tensor("max_exp_avg_sq", false));
      state = std::move(s);
    }
    if (!fields.empty())
      distill::detail::fail(origin, ": optimiser entry 'optimizer.", where.first, ".", where.second, ".", fields.begin()->first,
                            "' is not part of this optimiser's state");
    states[detail::state_key<decltype(states)>(parameter)] = std::move(state);
  }
}

/// Writes a checkpoint: "model.*" and "loss.*" (parameters and buffers), "optimizer.*" (its
/// per-parameter state as tensors, see optimizer_state()), "rng.cpu" / "rng.cuda", "meta.*" (epoch, step, best metric, loss scale),
/// and the `extra` entries (a data-parallel run's other ranks' RNG states).
inline void save_checkpoint(const std::string& path, const DistillationModelImpl& model, const CombinedLossImpl& loss,
                            torch::optim::Optimizer& optimizer, const TrainState& state,
                            const GradScaler* scaler = nullptr, const io::StateDict& extra = io::StateDict()) {
  io::StateDict dict;
  for (const auto& item : extra) dict.insert(item.key(), item.value());
  detail::add_prefixed(dict, "model.", io::state_dict(model));
  detail::add_prefixed(dict, "loss.", io::state_dict(loss));
  detail::add_prefixed(dict, "optimizer.", optimizer_state(optimizer));
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
  if (dict.contains("optimizer"))
    distill::detail::fail(path, ": holds its optimiser state as a serialized TorchScript archive, which can run code "
                                "when it is read; distill no longer reads such checkpoints (they come from distill "
                                "before 0.2): resume from its weights instead with -o Global.pretrained_model=", path);
  for (const char* key : {"rng.cpu", "meta.epoch", "meta.step"})
    if (!dict.contains(key)) distill::detail::fail(path, ": not a distill training checkpoint (no '", key, "')");
  io::load_state_dict(model, detail::strip_prefix(dict, "model."), {}, path + " (model)");
  io::load_state_dict(loss, detail::strip_prefix(dict, "loss."), {}, path + " (loss modules)");
  load_optimizer_state(optimizer, detail::strip_prefix(dict, "optimizer."), path);
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
