// The training layer of distill::engine: checkpoints, progress, optimisers and schedules,
// the Trainer, and how a recipe's engine sections become TrainerOptions (see
// include/distill/train/*.hpp).

#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <type_traits>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "distill/config/build.hpp"
#include "distill/io/torchscript.hpp"
#include "distill/train/amp.hpp"
#include "distill/train/checkpoint.hpp"
#include "distill/train/optim.hpp"
#include "distill/train/progress.hpp"
#include "distill/train/recipe.hpp"
#include "distill/train/teacher_cache.hpp"
#include "distill/train/trainer.hpp"

namespace distill::train {

// ---------------------------------------------------------------- checkpoints

namespace detail {

void add_prefixed(io::StateDict& dict, const std::string& prefix, const io::StateDict& part) {
  for (const auto& item : part) dict.insert(prefix + item.key(), item.value());
}

io::StateDict strip_prefix(const io::StateDict& dict, const std::string& prefix) {
  io::StateDict out;
  for (const auto& item : dict)
    if (item.key().rfind(prefix, 0) == 0) out.insert(item.key().substr(prefix.size()), item.value());
  return out;
}

// The state of a generator (the CPU's default, or a CUDA device's), read and written under its lock.
torch::Tensor rng_state(torch::Generator generator) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}
void set_rng_state(torch::Generator generator, const torch::Tensor& state) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}
std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
torch::Generator cpu_generator() { return at::detail::getDefaultCPUGenerator(); }
torch::Generator cuda_generator() { return at::globalContext().defaultGenerator(torch::Device(torch::kCUDA, 0)); }

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
std::vector<std::pair<std::string, torch::Tensor>> state_fields(const torch::optim::OptimizerParamState& state) {
  if (const auto* sgd = dynamic_cast<const torch::optim::SGDParamState*>(&state))
    return {{"momentum_buffer", sgd->momentum_buffer()}};
  if (const auto* adamw = dynamic_cast<const torch::optim::AdamWParamState*>(&state))
    return {{"step", torch::tensor(static_cast<double>(adamw->step()), torch::kDouble)},
            {"exp_avg", adamw->exp_avg()},
            {"exp_avg_sq", adamw->exp_avg_sq()},
            {"max_exp_avg_sq", adamw->max_exp_avg_sq()}};
  distill::fail("checkpoint: cannot store the state of this optimiser (distill stores SGD's and AdamW's)");
}

}  // namespace detail

/// The optimiser's per-parameter state as plain tensors, "<group>.<index>.<field>" (e.g.
/// "0.3.momentum_buffer"): data only, so a checkpoint is read by the same unpickler as weights
/// and never runs code. libtorch's own optimizer.save() writes a TorchScript archive instead,
/// whose loading can execute what the file holds.
io::StateDict optimizer_state(torch::optim::Optimizer& optimizer) {
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
void load_optimizer_state(torch::optim::Optimizer& optimizer, const io::StateDict& dict, const std::string& origin) {
  auto& groups = optimizer.param_groups();
  std::map<std::pair<size_t, size_t>, std::map<std::string, torch::Tensor>> per_parameter;
  for (const auto& item : dict) {
    size_t g = 0, i = 0;
    char field[64] = {0};
    int used = 0;
    if (std::sscanf(item.key().c_str(), "%zu.%zu.%63[a-z_]%n", &g, &i, field, &used) != 3 ||
        static_cast<size_t>(used) != item.key().size())
      distill::fail(origin, ": unknown optimiser entry 'optimizer.", item.key(), "'");
    if (g >= groups.size() || i >= groups[g].params().size())
      distill::fail(origin, ": optimiser entry 'optimizer.", item.key(), "' names parameter ", i, " of group ", g,
                            ", which this run's optimiser does not have (", groups.size(), " groups)");
    per_parameter[{g, i}][field] = item.value();
  }
  const bool adamw = dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr;
  const bool sgd = dynamic_cast<torch::optim::SGD*>(&optimizer) != nullptr;
  if (!adamw && !sgd) distill::fail(origin, ": cannot restore the state of this optimiser (distill restores SGD's and AdamW's)");
  auto& states = optimizer.state();
  states.clear();
  for (auto& item : per_parameter) {  // not a structured binding: the lambdas below capture it (clang < 16)
    const auto& where = item.first;
    auto& fields = item.second;
    const auto& parameter = groups[where.first].params()[where.second];
    auto tensor = [&](const std::string& field, bool required) -> torch::Tensor {
      auto it = fields.find(field);
      if (it == fields.end()) {
        if (required)
          distill::fail(origin, ": optimiser entry 'optimizer.", where.first, ".", where.second, ".", field, "' is missing");
        return {};
      }
      auto value = it->second;
      fields.erase(it);
      if (field == "step") {
        if (value.numel() != 1) distill::fail(origin, ": optimiser step count is not a number");
        return value;
      }
      if (value.sizes() != parameter.sizes() || !value.is_floating_point())
        distill::fail(origin, ": optimiser entry 'optimizer.", where.first, ".", where.second, ".", field, "' is ",
                              value.scalar_type(), " ", value.sizes(), " but its parameter is ", parameter.sizes());
      return value.to(parameter.options()).contiguous(parameter.suggest_memory_format()).clone();  // channels-last runs
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
        distill::fail(origin, ": optimiser step count ", step, " is not a count");
      s->step(static_cast<int64_t>(step));
      s->exp_avg(tensor("exp_avg", true));
      s->exp_avg_sq(tensor("exp_avg_sq", true));
      s->max_exp_avg_sq(tensor("max_exp_avg_sq", false));
      state = std::move(s);
    }
    if (!fields.empty())
      distill::fail(origin, ": optimiser entry 'optimizer.", where.first, ".", where.second, ".", fields.begin()->first,
                            "' is not part of this optimiser's state");
    states[detail::state_key<decltype(states)>(parameter)] = std::move(state);
  }
}

// Checked reads of the "meta.*" numbers: one finite number in [min, max], or a whole count in
// [0, 2^53]; a damaged file (an epoch of NaN, 1e300 or -3) is an error, not a run that never ends.
double checkpoint_number(const io::StateDict& dict, const std::string& path, const std::string& key, double min, double max);
int64_t checkpoint_count(const io::StateDict& dict, const std::string& path, const std::string& key);

/// Writes a checkpoint: "model.*" and "loss.*" (parameters and buffers), "optimizer.*" (its
/// per-parameter state as tensors, see optimizer_state()), "rng.cpu" / "rng.cuda", "meta.*" (epoch, step, best metric, loss scale),
/// and the `extra` entries (a data-parallel run's other ranks' RNG states).
void save_checkpoint(const std::string& path, const DistillationModelImpl& model, const CombinedLossImpl& loss,
                            torch::optim::Optimizer& optimizer, const TrainState& state,
                            const GradScaler* scaler, const io::StateDict& extra) {
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

namespace {
/// Gives the complete file `from` a second name `to`, atomically as write_state_dict does: a
/// hard link made as `to`.tmp and renamed over `to`. False where the file system has no hard
/// links (the caller writes the file instead).
bool link_into_place(const std::string& from, const std::string& to) {
  const std::string temporary = to + ".tmp";
  ::unlink(temporary.c_str());
  if (::link(from.c_str(), temporary.c_str()) != 0) return false;
  if (std::rename(temporary.c_str(), to.c_str()) != 0) {
    const int error = errno;
    ::unlink(temporary.c_str());
    distill::fail(to, ": cannot move the checkpoint into place (via ", temporary, "): ", std::strerror(error));
  }
  // rename() of two names of one file does nothing: `to` already was this file.
  ::unlink(temporary.c_str());
  return true;
}
}  // namespace

/// Restores everything save_checkpoint wrote; returns the state to continue from. `entries`,
/// when given, receives the whole file (for entries the caller added).
TrainState load_checkpoint(const std::string& path, DistillationModelImpl& model, CombinedLossImpl& loss,
                                  torch::optim::Optimizer& optimizer, GradScaler* scaler, io::StateDict* entries) {
  const auto dict = io::read_state_dict(path);
  if (entries) *entries = dict;
  if (dict.contains("optimizer"))
    distill::fail(path, ": holds its optimiser state as a serialized TorchScript archive, which can run code "
                                "when it is read; distill no longer reads such checkpoints (they come from distill "
                                "before 0.2): resume from its weights instead with -o Global.pretrained_model=", path);
  for (const char* key : {"rng.cpu", "meta.epoch", "meta.step"})
    if (!dict.contains(key)) distill::fail(path, ": not a distill training checkpoint (no '", key, "')");
  io::load_state_dict(model, detail::strip_prefix(dict, "model."), {}, path + " (model)");
  io::load_state_dict(loss, detail::strip_prefix(dict, "loss."), {}, path + " (loss modules)");
  load_optimizer_state(optimizer, detail::strip_prefix(dict, "optimizer."), path);
  auto restore_rng = [&](torch::Generator generator, const char* key) {
    try {
      detail::set_rng_state(generator, dict[key]);
    } catch (const c10::Error& e) {
      fail_at(path, "entry '", key, "' is not a generator state: ", detail::first_line(e.what()));
    }
  };
  restore_rng(detail::cpu_generator(), "rng.cpu");
  if (dict.contains("rng.cuda") && torch::cuda::is_available()) restore_rng(detail::cuda_generator(), "rng.cuda");
  if (scaler && dict.contains("meta.loss_scale"))
    scaler->restore(checkpoint_number(dict, path, "meta.loss_scale", 0, 1e300), checkpoint_count(dict, path, "meta.scale_good_steps"),
                    checkpoint_count(dict, path, "meta.scale_bad_steps"));
  TrainState state;
  state.epoch = checkpoint_count(dict, path, "meta.epoch");
  state.step = checkpoint_count(dict, path, "meta.step");
  state.best_top1 = checkpoint_number(dict, path, "meta.best_top1", -1, 1);
  state.best_epoch = checkpoint_count(dict, path, "meta.best_epoch");
  return state;
}

double checkpoint_number(const io::StateDict& dict, const std::string& path, const std::string& key, double min, double max) {
  const auto* entry = dict.find(key);
  if (entry == nullptr) fail_at(path, "no '", key, "' entry");
  if (entry->numel() != 1 || !entry->is_floating_point())
    fail_at(path, "entry '", key, "' must be one floating-point number, found a ", entry->scalar_type(), " tensor of shape ",
            entry->sizes());
  const double value = entry->item<double>();
  if (!(value >= min && value <= max)) fail_at(path, "entry '", key, "' is ", value, ", outside [", min, ", ", max, "]: the file is damaged");
  return value;
}

int64_t checkpoint_count(const io::StateDict& dict, const std::string& path, const std::string& key) {
  const double value = checkpoint_number(dict, path, key, 0, 9007199254740992.0);  // 2^53: exact in a double
  if (value != std::floor(value)) fail_at(path, "entry '", key, "' is ", value, ", not a whole number: the file is damaged");
  return static_cast<int64_t>(value);
}

/// Loads weights into a model for evaluation, inference or export, from a training
/// checkpoint, a state dict of the whole DistillationModel, or a state dict of its
/// infer_model_name model alone (e.g. an exported student).
void load_model_weights(DistillationModelImpl& model, const std::string& given, const std::vector<std::string>& not_built) {
  const std::string path = io::weights_path(given);
  // Entries of the models that are not built (a teacher cache's) are left out of a whole-model file.
  auto without_absent = [&](io::StateDict dict) {
    if (not_built.empty()) return dict;
    io::StateDict kept;
    for (const auto& item : dict) {
      bool absent = false;
      for (const auto& name : not_built) absent = absent || item.key().rfind(name + ".", 0) == 0;
      if (!absent) kept.insert(item.key(), item.value());
    }
    return kept;
  };
  // Which models the file gave weights to, for reports (distill check, the teacher check).
  auto record = [&](bool whole) {
    for (const auto& member : model.members())
      if (whole || member.name == model.infer_model_name())
        member.model->set_weights_origin(path, static_cast<int64_t>(io::state_dict(*member.model).size()));
  };
  if (io::is_torchscript(path)) {  // distill export: its parameters and buffers are the infer model's, by name
    io::load_state_dict(*model.infer_model(), io::torchscript_state_dict(io::load_torchscript(path)), {}, path);
    return record(false);
  }
  const auto dict = io::read_state_dict(path);
  if (dict.contains("meta.epoch")) {
    io::load_state_dict(model, without_absent(detail::strip_prefix(dict, "model.")), {}, path + " (model)");
    return record(true);
  }
  // PaddleClas's DistillationModel names its members as distill's does ("Student.fc.weight").
  const std::string prefix = model.infer_model_name() + ".";
  bool whole = false;
  for (const auto& item : dict) whole = whole || item.key().rfind(prefix, 0) == 0;
  torch::nn::Module& target = whole ? static_cast<torch::nn::Module&>(model) : *model.infer_model();
  const auto entries = whole ? without_absent(dict) : dict;
  io::load_state_dict(target, io::is_pdparams(path) ? io::from_paddle(target, entries, path) : entries, {}, path);
  record(whole);
}

torch::Tensor cpu_rng_state() { return detail::rng_state(detail::cpu_generator()); }
void set_cpu_rng_state(const torch::Tensor& state) { detail::set_rng_state(detail::cpu_generator(), state); }

// ---------------------------------------------------------------- optimisers and schedules

LRSchedule make_schedule(const ScheduleOptions& o, const std::string& where) {
  const double iters = static_cast<double>(std::max<int64_t>(o.iters_per_epoch(), 1));
  const double total = static_cast<double>(std::max<int64_t>(o.epochs(), 1)) * iters;
  const double base = o.learning_rate(), warmup = o.warmup_epochs() * iters;
  if (!(base >= 0) || !(base <= distill::detail::max_option_value))
    fail_at(where, "learning_rate must be a number >= 0 (at most 3.4e38, float32's range), got ", base);
  if (!(warmup >= 0) || !std::isfinite(warmup)) fail_at(where, "warmup_epoch must be a finite number >= 0, got ", o.warmup_epochs());
  if (o.decay() == Decay::piecewise && o.values().size() != o.boundaries().size() + 1)
    fail_at(where, "Piecewise needs one value more than decay_epochs (", o.boundaries().size() + 1, "), got ", o.values().size());
  if (o.decay() == Decay::multistep && !(o.gamma() >= 0 && o.gamma() <= 1))
    fail_at(where, "gamma must be in [0, 1] (a larger factor would grow the rate), got ", o.gamma());
  for (double v : o.values())
    if (!(v >= 0) || !(v <= distill::detail::max_option_value))
      fail_at(where, "learning rates must be numbers >= 0 (at most 3.4e38, float32's range), got ", v);
  return [o, iters, total, base, warmup](int64_t iteration) {
    const double i = static_cast<double>(iteration);
    if (i < warmup) return base * i / warmup;  // linear from 0 (Paddle's LinearWarmup)
    const double epoch = i / iters;
    switch (o.decay()) {
      case Decay::cosine: {
        const double t = i - warmup, span = total - warmup;
        return span <= 0 ? base : 0.5 * base * (1 + std::cos(M_PI * std::min(t, span) / span));
      }
      case Decay::piecewise: {
        size_t k = 0;
        while (k < o.boundaries().size() && epoch >= o.boundaries()[k]) ++k;
        return o.values()[k];
      }
      case Decay::multistep: {
        double rate = base;
        for (double m : o.boundaries())
          if (epoch >= m) rate *= o.gamma();
        return rate;
      }
      case Decay::constant: break;
    }
    return base;
  };
}

namespace {
void check_decay(const std::string& where, double decay) {
  if (!(decay >= 0) || !(decay <= distill::detail::max_option_value))
    fail_at(where, "weight decay must be a number >= 0 (at most 3.4e38, float32's range), got ", decay);
}
}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_momentum(const ParameterGroups& groups, const MomentumOptions& o,
                                                       const std::string& where) {
  if (!(o.momentum() >= 0 && o.momentum() < 1)) fail_at(where, "momentum must be in [0, 1), got ", o.momentum());
  check_decay(where, o.weight_decay());
  auto options = [&](double decay) {
    return std::make_unique<torch::optim::SGDOptions>(
        torch::optim::SGDOptions(0.0).momentum(o.momentum()).weight_decay(decay).dampening(0).nesterov(false));
  };
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  param_groups.emplace_back(groups.decay, options(o.weight_decay()));
  if (!groups.no_decay.empty()) param_groups.emplace_back(groups.no_decay, options(0.0));
  return std::make_unique<torch::optim::SGD>(param_groups, torch::optim::SGDOptions(0.0).momentum(o.momentum()));
}

std::unique_ptr<torch::optim::Optimizer> make_adamw(const ParameterGroups& groups, const AdamWOptions& o,
                                                    const std::string& where) {
  for (double beta : {o.beta1(), o.beta2()})
    if (!(beta >= 0 && beta < 1)) fail_at(where, "beta1 and beta2 must be in [0, 1), got ", beta);
  if (!(o.epsilon() > 0) || !(o.epsilon() <= distill::detail::max_option_value)) fail_at(where, "epsilon must be a positive number, got ", o.epsilon());
  check_decay(where, o.weight_decay());
  std::vector<torch::Tensor> decay, no_decay = groups.no_decay;
  for (const auto& p : groups.decay) (o.one_dim_param_no_weight_decay() && p.dim() <= 1 ? no_decay : decay).push_back(p);
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(0.0)
                                                            .betas(std::make_tuple(o.beta1(), o.beta2()))
                                                            .eps(o.epsilon())
                                                            .weight_decay(wd)
                                                            .amsgrad(o.amsgrad()));
  };
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  if (!decay.empty()) param_groups.emplace_back(decay, options(o.weight_decay()));
  if (!no_decay.empty()) param_groups.emplace_back(no_decay, options(0.0));
  if (param_groups.empty()) fail_at(where, "there are no parameters to train");
  return std::make_unique<torch::optim::AdamW>(param_groups, *options(o.weight_decay()));
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

std::vector<int64_t> topk_correct(const torch::Tensor& logits, const torch::Tensor& labels, const std::vector<int64_t>& ks) {
  const int64_t kmax = std::min<int64_t>(*std::max_element(ks.begin(), ks.end()), logits.size(1));
  auto top = std::get<1>(logits.topk(kmax, 1));
  auto hit = top.eq(labels.reshape({-1, 1}));
  std::vector<int64_t> correct;
  for (int64_t k : ks) correct.push_back(hit.slice(1, 0, std::min(k, kmax)).any(1).sum().item<int64_t>());
  return correct;
}

// ---------------------------------------------------------------- recipe: optimisers and schedules

Registry<OptimizerReader>& optimizer_registry() {
  static Registry<OptimizerReader> registry = [] {
    Registry<OptimizerReader> r("optimizer");
    // Momentum: weight decay from `weight_decay: <float>` or `regularizer: {name: L2, coeff}`.
    r.add("Momentum", [](const Reader& s) -> OptimizerFactory {
      MomentumOptions o;
      o.momentum(s.get<double>("momentum", o.momentum()));
      if (s.get<bool>("use_nesterov", false)) fail_at(s.path_of("use_nesterov"), "not supported");
      if (s.has("weight_decay") && s.has("regularizer")) fail_at(s.path(), "give weight_decay or regularizer, not both");
      o.weight_decay(s.get<double>("weight_decay", 0.0));
      if (s.has("regularizer")) {
        Reader reg = s.section("regularizer");
        if (reg.get<std::string>("name") != "L2") fail_at(reg.path_of("name"), "only L2 (coupled decay) is supported");
        o.weight_decay(reg.get<double>("coeff"));
        reg.done();
      }
      s.use("regularizer");
      const std::string where = s.path();
      return [o, where](const ParameterGroups& groups) { return make_momentum(groups, o, where); };
    });
    // AdamW (decoupled decay); PaddleClas's keys.
    r.add("AdamW", [](const Reader& s) -> OptimizerFactory {
      AdamWOptions o;
      o.beta1(s.get<double>("beta1", o.beta1())).beta2(s.get<double>("beta2", o.beta2()));
      o.epsilon(s.get<double>("epsilon", o.epsilon())).weight_decay(s.get<double>("weight_decay", o.weight_decay()));
      o.amsgrad(s.get<bool>("amsgrad", false));
      o.one_dim_param_no_weight_decay(s.get<bool>("one_dim_param_no_weight_decay", false));
      if (s.has("no_weight_decay_name"))
        fail_at(s.path_of("no_weight_decay_name"),
                "not supported (parameters are grouped by model, not by name); use one_dim_param_no_weight_decay");
      s.use("no_weight_decay_name");
      const std::string where = s.path();
      return [o, where](const ParameterGroups& groups) { return make_adamw(groups, o, where); };
    });
    return r;
  }();
  return registry;
}

Registry<ScheduleReader>& schedule_registry() {
  static Registry<ScheduleReader> registry = [] {
    Registry<ScheduleReader> r("schedule");
    // Every schedule: learning_rate, warmup_epoch; the reference's `step_each_epoch` is
    // replaced, as there, by the real number of steps per epoch (docs/reference.md §7.17).
    auto frame = [](const Reader& s, Decay decay, std::optional<double> default_rate = std::nullopt) {
      s.ignore("step_each_epoch", "replaced by the real number of steps per epoch, as in the reference");
      s.ignore("last_epoch", "resuming restores the step from the checkpoint");
      const double rate = default_rate ? s.get<double>("learning_rate", *default_rate) : s.get<double>("learning_rate");
      return ScheduleOptions().decay(decay).learning_rate(rate).warmup_epochs(s.get<double>("warmup_epoch", 0.0));
    };
    auto make = [](ScheduleOptions o, std::string where) -> ScheduleFactory {
      return [o, where](int64_t epochs, int64_t steps) {
        return make_schedule(ScheduleOptions(o).epochs(epochs).iters_per_epoch(steps), where);
      };
    };
    r.add("Cosine", [=](const Reader& s) { return make(frame(s, Decay::cosine), s.path()); });
    r.add("Constant", [=](const Reader& s) { return make(frame(s, Decay::constant), s.path()); });
    r.add("Piecewise", [=](const Reader& s) {
      // As in the reference, learning_rate is optional here: the warm-up then ends at values[0].
      const auto values = s.get<std::vector<double>>("values");
      auto o = frame(s, Decay::piecewise, values.empty() ? 0.0 : values.front());
      o.boundaries(s.get<std::vector<double>>("decay_epochs")).values(values);
      if (o.values().size() != o.boundaries().size() + 1)
        fail_at(s.path_of("values"), "needs one value more than decay_epochs (", o.boundaries().size() + 1, "), got ",
                o.values().size());
      return make(o, s.path());
    });
    r.add("MultiStepDecay", [=](const Reader& s) {
      auto o = frame(s, Decay::multistep);
      o.boundaries(s.get<std::vector<double>>("milestones")).gamma(s.get<double>("gamma", 0.1));
      return make(o, s.path());
    });
    return r;
  }();
  return registry;
}

namespace {
OptimizerFactory read_optimizer(const Reader& section) {
  const auto name = section.get<std::string>("name");
  auto factory = optimizer_registry().at(name, section.path_of("name"))(section);
  section.use("lr");  // the schedule's
  section.done();
  return factory;
}
ScheduleFactory read_schedule(const Reader& section) {
  const auto name = section.get<std::string>("name");
  auto factory = schedule_registry().at(name, section.path_of("name"))(section);
  section.done();
  return factory;
}
}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const json& section, const std::string& path,
                                                        const ParameterGroups& groups) {
  return read_optimizer(Reader(section, path))(groups);
}

LRSchedule make_schedule(const json& section, const std::string& path, int64_t epochs, int64_t steps_per_epoch) {
  return read_schedule(Reader(section, path))(epochs, steps_per_epoch);
}

// ---------------------------------------------------------------- recipe: TrainerOptions

const std::map<std::string, std::string>& ignored_keys() {
  static const std::map<std::string, std::string> keys{
      {"Global.save_inference_dir", "where the reference's export writes; distill export writes <Global.output_dir>/inference.pt, or --out"},
      {"Global.to_static", "Paddle's dynamic-to-static compilation; libtorch runs eagerly"},
      {"Global.use_visualdl", "logs to VisualDL; distill writes metrics.jsonl and training.svg in output_dir"},
      {"Global.use_dali", "decodes and augments with NVIDIA DALI; distill's loader decodes with libjpeg-turbo"},
      {"AMP.use_promote", "Paddle's O2 promotion switch; distill supports O1 (autocast) only"},
      {"DataLoader.*.loader.use_shared_memory", "Paddle's worker processes share memory; distill's loader uses threads"},
      {"Optimizer.lr.step_each_epoch", "replaced by the real number of steps per epoch, as in the reference"},
      {"Optimizer.lr.last_epoch", "resuming restores the step from the checkpoint"},
      {"Metric.*.feature_key", "the metric reads the evaluated model's logits"},
  };
  return keys;
}

namespace {
const char* why_ignored(const std::string& key) {
  const auto& keys = ignored_keys();
  auto it = keys.find(key);
  return it == keys.end() ? "" : it->second.c_str();
}

void read_global(const Reader& g, TrainerOptions& o) {
  o.epochs(g.get<int64_t>("epochs"));
  if (o.epochs() < 1) fail_at(g.path_of("epochs"), "must be >= 1");
  o.output_dir(g.get<std::string>("output_dir", "./output"));
  if (o.output_dir().empty()) fail_at(g.path_of("output_dir"), "must not be empty");
  const auto device = g.get<std::string>("device", "cpu");
  if (device == "gpu" || device == "cuda") {
    if (!torch::cuda::is_available())
      fail_at(g.path_of("device"), "\"", device, "\" asked for, but libtorch sees no CUDA device; use \"cpu\"");
    o.device(torch::Device(torch::kCUDA, 0));
  } else if (device != "cpu") {
    fail_at(g.path_of("device"), "expected \"cpu\" or \"gpu\", got \"", device, "\"");
  }
  o.seed(g.get<int64_t>("seed", 0));
  auto positive = [&](const char* key, int64_t fallback) {
    const auto value = g.get<int64_t>(key, fallback);
    if (value < 1) fail_at(g.path_of(key), "must be >= 1, got ", value);
    return value;
  };
  o.save_interval(positive("save_interval", 1));
  o.eval_during_train(g.get<bool>("eval_during_train", true));
  o.eval_interval(positive("eval_interval", 1));
  o.print_batch_step(positive("print_batch_step", 10));
  o.update_freq(positive("update_freq", 1));
  o.checkpoints(g.get<std::string>("checkpoints", ""));
  o.pretrained_model(g.get<std::string>("pretrained_model", ""));
  o.teacher_cache(g.get<std::string>("teacher_cache", ""));
  o.channels_last(g.get<bool>("channels_last", o.channels_last()));
  o.replay_views(g.get<int64_t>("replay_views", 0));
  if (o.replay_views() < 0 || o.replay_views() > 100000) fail_at(g.path_of("replay_views"), "must be in [0, 100000]");
  if (o.replay_views() > 0 && !o.teacher_cache().empty())
    fail_at(g.path_of("replay_views"), "give replay_views or teacher_cache, not both (a cache replays its own views)");
  GuardrailOptions guard;
  guard.teacher_check(g.get<bool>("teacher_check", guard.teacher_check()));
  guard.teacher_check_batches(g.get<int64_t>("teacher_check_batches", guard.teacher_check_batches()));
  if (guard.teacher_check_batches() < 0) fail_at(g.path_of("teacher_check_batches"), "must be >= 0 (0: the whole evaluation set)");
  guard.teacher_check_min_top1(g.get<double>("teacher_check_min_top1", guard.teacher_check_min_top1()));
  if (!(guard.teacher_check_min_top1() >= 0 && guard.teacher_check_min_top1() <= 1))
    fail_at(g.path_of("teacher_check_min_top1"), "must be in [0, 1] (0: twice chance)");
  const auto on_nonfinite = g.get<std::string>("on_nonfinite", guard.on_nonfinite() == OnNonFinite::stop ? "stop" : "skip_step");
  if (on_nonfinite != "stop" && on_nonfinite != "skip_step")
    fail_at(g.path_of("on_nonfinite"), "expected \"stop\" or \"skip_step\", got \"", on_nonfinite, "\"");
  guard.on_nonfinite(on_nonfinite == "stop" ? OnNonFinite::stop : OnNonFinite::skip_step);
  guard.strict_alarms(g.get<bool>("strict_alarms", guard.strict_alarms()));
  guard.alarm_steps(positive("alarm_steps", guard.alarm_steps()));
  o.guardrails(guard);
  g.use("image_shape");  // distill export traces the model at it
  for (const char* key : {"save_inference_dir", "to_static", "use_visualdl", "use_dali"})
    g.ignore(key, why_ignored(std::string("Global.") + key));
  g.done();
}

void read_amp(const Reader& a, TrainerOptions& o) {
  o.amp(a.get<bool>("use_amp", true));
  const auto dtype = a.get<std::string>("dtype", "float16");
  if (dtype != "float16" && dtype != "bfloat16") fail_at(a.path_of("dtype"), "expected \"float16\" or \"bfloat16\", got \"", dtype, "\"");
  o.amp_dtype(dtype == "bfloat16" ? torch::kBFloat16 : torch::kHalf);
  if (a.get<std::string>("level", "O1") != "O1") fail_at(a.path_of("level"), "only O1 (autocast) is supported");
  o.amp_eval(a.get<bool>("use_fp16_test", false));
  o.loss_scale(a.get<double>("scale_loss", 128.0));
  if (!(o.loss_scale() > 0) || !std::isfinite(o.loss_scale())) fail_at(a.path_of("scale_loss"), "must be a positive number");
  o.dynamic_loss_scaling(a.get<bool>("use_dynamic_loss_scaling", true));
  a.ignore("use_promote", why_ignored("AMP.use_promote"));
  a.done();
  if (o.amp() && !o.device().is_cuda() && o.amp_dtype() == torch::kHalf)
    fail_at(a.path(), "float16 mixed precision needs a CUDA device; on the CPU set AMP.dtype=bfloat16 or AMP.use_amp=false");
}

void read_metric(const Reader& m, TrainerOptions& o) {
  for (const char* phase : {"Train", "Eval"}) {
    const json* list = m.use(phase);
    if (!list || list->is_null()) continue;
    if (!list->is_array()) fail_at(m.path_of(phase), "expected a list of metrics");
    for (size_t i = 0; i < list->size(); ++i) {
      const std::string at = m.path_of(phase) + "[" + std::to_string(i) + "]";
      auto [name, options] = config::detail::single_entry((*list)[i], at);
      if (name != "DistillationTopkAcc" && name != "TopkAcc")
        fail_at(at, "unknown metric '", name, "'; known: DistillationTopkAcc, TopkAcc");
      Reader r(options->is_null() ? json::object() : *options, at + "." + name);
      auto ks = r.get<std::vector<int64_t>>("topk", {1, 5});
      auto key = r.get<std::string>("model_key", "");
      r.ignore("feature_key", why_ignored("Metric.*.feature_key"));
      r.done();
      if (ks.empty() || *std::min_element(ks.begin(), ks.end()) < 1) fail_at(r.path_of("topk"), "expected positive values");
      if (std::string(phase) == "Eval") o.topk(ks).metric_model(key);
    }
  }
  m.done();
}

void read_loader(const Reader& loaders, const char* phase, bool training, TrainerOptions& o) {
  Reader section = loaders.section(phase);
  auto dataset = data::make_dataset(section.raw("dataset"), section.path_of("dataset"));
  Reader sampler = section.section("sampler");
  const auto name = sampler.get<std::string>("name", "DistributedBatchSampler");
  if (name != "DistributedBatchSampler" && name != "BatchSampler")
    fail_at(sampler.path_of("name"), "expected DistributedBatchSampler or BatchSampler");
  auto options = data::LoaderOptions()
                     .batch_size(sampler.get<int64_t>("batch_size"))
                     .drop_last(sampler.get<bool>("drop_last", false))
                     .shuffle(sampler.get<bool>("shuffle", training));
  with_context(sampler.path_of("batch_size"), [&] { check_size("DataLoader", "batch_size", options.batch_size()); });
  sampler.done();
  if (section.has("loader")) {
    Reader loader = section.section("loader");
    options.num_workers(loader.get<int64_t>("num_workers", 2));
    if (options.num_workers() < 0 || options.num_workers() > 1024) fail_at(loader.path_of("num_workers"), "must be in [0, 1024]");
    loader.ignore("use_shared_memory", why_ignored("DataLoader.*.loader.use_shared_memory"));
    loader.done();
  }
  section.use("loader");
  section.done();
  if (training) o.train_data(dataset).train_loader(options);
  else o.eval_data(dataset).eval_loader(options);
}
}  // namespace

TrainerOptions trainer_options(const json& recipe, std::vector<std::string>* problems) {
  // Each part on its own: with `problems`, a bad part is listed there and the next is read.
  auto part = [&](auto&& read) {
    if (!problems) return read();
    try {
      read();
    } catch (const Error& e) {
      problems->push_back(e.what());
    }
  };
  Reader root(recipe, "recipe");
  // Sections are named from the top ("Global.epochs"), as recipes are written.
  auto section = [&](const char* key) { return Reader(root.raw(key), key); };
  TrainerOptions o;
  part([&] { read_global(section("Global"), o); });
  if (root.has("AMP")) part([&] { read_amp(section("AMP"), o); });
  root.use("AMP");
  if (root.has("Metric")) part([&] { read_metric(section("Metric"), o); });
  root.use("Metric");
  part([&] {
    Reader optimizer = section("Optimizer");
    o.optimizer(read_optimizer(optimizer));
    o.schedule(read_schedule(optimizer.section("lr")));
  });
  part([&] {
    Reader loaders = section("DataLoader");
    part([&] { read_loader(loaders, "Train", /*training=*/true, o); });
    if (loaders.has("Eval")) part([&] { read_loader(loaders, "Eval", /*training=*/false, o); });
    loaders.use("Train"), loaders.use("Eval");
    loaders.done();
  });
  root.use("Arch"), root.use("Loss");  // config::build_model and config::build_loss read them
  root.use("Infer"), root.use("PostProcess");  // distill infer and export read them
  part([&] { root.done(); });
  return o;
}

void reuse_freed_memory() {
#ifdef __GLIBC__
  // Fixing both also ends glibc's dynamic mmap threshold, which a trim threshold alone would
  // leave at 128 KiB (measured: slower than the default).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

// ---------------------------------------------------------------- the Trainer

struct Trainer::Impl {
  Impl(TrainerOptions options, std::shared_ptr<DistillationModelImpl> model, std::shared_ptr<CombinedLossImpl> loss,
       std::shared_ptr<CombinedLossImpl> eval_loss, std::ostream& out, std::shared_ptr<TeacherCache> opened = nullptr)
      : o(std::move(options)), out(out), model(std::move(model)), loss(std::move(loss)), eval_loss(std::move(eval_loss)),
        cache(std::move(opened)) {
    if (!this->model) fail("Trainer: no model");
    if (!this->loss) fail("Trainer: no training loss");
    if (!o.optimizer() || !o.schedule()) fail("Trainer: TrainerOptions needs an optimizer and a schedule");
    if (!o.train_data()) fail("Trainer: TrainerOptions needs training data");
    if (o.epochs() < 1) fail("Trainer: epochs must be >= 1, got ", o.epochs());
    if (o.amp() && !o.device().is_cuda() && o.amp_dtype() == torch::kHalf)
      fail("AMP: float16 mixed precision needs a CUDA device; on the CPU set AMP.dtype=bfloat16 or AMP.use_amp=false");
    group = ProcessGroup::world();
    device = o.device();
    if (group && device.is_cuda()) device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(group->local_rank()));
    metric_model = o.metric_model().empty() ? this->model->infer_model_name() : o.metric_model();
    with_context("Metric.Eval", [&] { this->model->model(metric_model); });  // must exist
    this->model->to(device);
    this->loss->to(device);
    if (this->eval_loss) this->eval_loss->to(device);
    if (o.channels_last()) {  // the loss too: its connectors (FitNets, MGD, ReviewKD) are convolutions
      models::to_channels_last(*this->model);
      models::to_channels_last(*this->loss);
      if (this->eval_loss) models::to_channels_last(*this->eval_loss);
    }
    this->loss->bind(*this->model);  // terms that read the models (OFD's margins)
    if (!o.teacher_cache().empty()) {
      if (!cache) {  // given opened by the recipe constructor, which compared the whole recipe (dataset included)
        cache = TeacherCache::open(o.teacher_cache());
        with_context("Global.teacher_cache", [&] { cache->check_dataset(*o.train_data()); });
      }
      for (const auto& name : cache->teachers())
        for (const auto& member : this->model->model_names())
          if (member == name)
            fail_at("Global.teacher_cache", "the model has a member '", name, "', which the cache ", cache->dir(),
                    " stands in for; build the model without it");
    }
    // A whole-model file of the recipe may hold the cached teachers too: they are not built here.
    if (!o.pretrained_model().empty())
      load_model_weights(*this->model, o.pretrained_model(), cache ? cache->teachers() : std::vector<std::string>{});
    groups = optimizer_parameters(*this->model, *this->loss);
    optimizer = o.optimizer()(groups);
    auto train_options = o.train_loader();
    if (cache) {
      auto seeds = cache;  // the loader replays exactly the views the cache recorded
      train_options.views(cache->views()).view_seeds([seeds](size_t index, int64_t view) { return seeds->seed(index, view); });
    } else if (o.replay_views() > 0) {
      train_options.views(o.replay_views());
    }
    train_loader = make_loader(o.train_data(), train_options, /*training=*/true);
    if (o.eval_data()) eval_loader = make_loader(o.eval_data(), o.eval_loader(), /*training=*/false);
    if (train_loader->batches_per_epoch() == 0)
      fail("DataLoader.Train: ", train_loader->dataset().size(), " samples make no batch of ", o.train_loader().batch_size(),
           " with drop_last; lower batch_size or set drop_last: false");
    const int64_t steps_per_epoch =
        (static_cast<int64_t>(train_loader->batches_per_epoch()) + o.update_freq() - 1) / o.update_freq();
    schedule = o.schedule()(o.epochs(), steps_per_epoch);
    if (o.amp() && o.amp_dtype() == torch::kHalf) scaler.emplace(o.loss_scale(), o.dynamic_loss_scaling());
    if (group) {
      group->broadcast(synchronised(), "broadcasting rank 0's initial weights");
      // Each worker its own random stream (dropout, MGD's masks); rank 0 keeps the seed's.
      if (group->rank() > 0)
        torch::manual_seed(data::detail::mix(static_cast<uint64_t>(o.seed()) ^ data::detail::mix(group->rank())));
    }
  }

  std::unique_ptr<data::DataLoader> make_loader(std::shared_ptr<data::Dataset> dataset, data::LoaderOptions options,
                                                bool training) {
    options.seed(static_cast<uint64_t>(o.seed()) + (training ? 0 : 1));
    if (group) {
      options.rank(group->rank()).world_size(group->world_size()).pad(training).drop_empty_batches(!training);
      if (!training && dataset->size() < static_cast<size_t>(group->world_size()))
        fail("DataLoader.Eval: ", dataset->size(), " samples cannot be shared by ", group->world_size(), " workers");
    }
    if (training && dataset->size() == 0) fail("DataLoader.Train: ", dataset->describe(), " has no samples");
    return std::make_unique<data::DataLoader>(std::move(dataset), options);
  }

  bool writer() const { return !group || group->rank() == 0; }
  // What this process prints to: the given stream on rank 0, nothing elsewhere.
  std::ostream& log() { return writer() ? out : silent; }

  std::vector<torch::Tensor> trainable() const {
    std::vector<torch::Tensor> params = groups.decay;
    params.insert(params.end(), groups.no_decay.begin(), groups.no_decay.end());
    return params;
  }
  // What rank 0 broadcasts at the start: the trainable parameters (model and loss) and the
  // buffers of the models that are not frozen.
  std::vector<torch::Tensor> synchronised() const {
    auto tensors = trainable();
    for (auto& b : buffers()) tensors.push_back(b);
    return tensors;
  }
  std::vector<torch::Tensor> buffers() const {
    std::vector<torch::Tensor> tensors;
    for (const auto& member : model->members())
      if (!member.frozen)
        for (auto& b : member.model->buffers()) tensors.push_back(b);
    for (auto& b : loss->buffers()) tensors.push_back(b);
    return tensors;
  }

  // Whether progress is drawn as a live bar: rank 0 printing to a terminal.
  bool on_terminal() const { return writer() && &out == &std::cout && stdout_is_terminal(); }

  TrainState train() {
    if (writer()) {
      std::filesystem::create_directories(o.output_dir());
      remove_partial_writes();
    }
    Progress progress(log(), on_terminal(), writer() ? o.output_dir() + "/metrics.jsonl" : "");
    TrainState state;
    if (!o.checkpoints().empty()) state = resume(progress);
    // The log holds this run's epochs only: a fresh run starts it anew (as it overwrites the
    // checkpoints), a resumed one drops the epoch that was interrupted.
    if (writer()) progress.forget_after(state.epoch);
    progress.message(fmt::format("training {} on {}: {} epochs x {} batches of {} on {}{}", model->infer_model_name(),
                                 train_loader->dataset().describe(), o.epochs(), train_loader->batches_per_epoch(),
                                 train_loader->options().batch_size(), device.str(),
                                 group ? fmt::format(" x {} workers", group->world_size()) : ""));
    for (const auto* loader : {train_loader.get(), eval_loader.get()})
      if (loader && !loader->dataset().build_report().empty()) progress.message(loader->dataset().build_report());
    if (cache)
      progress.message(fmt::format("teacher{} {} from the cache {}: {} views per image, top-{} of {} logits (not built, not run)",
                                   cache->teachers().size() > 1 ? "s" : "", fmt::join(cache->teachers(), ", "), cache->dir(),
                                   cache->views(), cache->topk(), cache->classes()));
    else if (o.replay_views() > 0)
      progress.message(fmt::format("replaying {} fixed views per image (Global.replay_views)", o.replay_views()));
    check_teachers(progress, nullptr, state.epoch + 1);
    monitor = Monitor(o.guardrails());
    monitor.watch(*model);
    const auto run_start = std::chrono::steady_clock::now();
    const int64_t start_epoch = state.epoch;
    const std::string best_path = o.output_dir() + "/best_model.pt";
    std::optional<EvalResult> last;
    for (int64_t epoch = state.epoch + 1; epoch <= o.epochs(); ++epoch) {
      run_epoch(epoch, state, progress, run_start, start_epoch);
      state.epoch = epoch;
      raise(monitor.frozen_changed(*model), progress, epoch, state.step);
      if (eval_loader && o.eval_during_train() && epoch % o.eval_interval() == 0) {
        last = run_evaluation(0, /*with_student=*/true, /*with_teachers=*/true);
        const bool best = last->top1() > state.best_top1;
        if (best) {
          state.best_top1 = last->top1();
          state.best_epoch = epoch;
        }
        progress.evaluation(epoch, Trainer::describe(*last), best);
        if (best) {
          checkpoint({best_path}, state);
          if (writer()) export_student(o.output_dir() + "/best_model_student.pt");
        }
      }
      // latest.pt last: if the run is killed in between, the resume repeats this epoch and
      // writes epoch_<k>.pt again, instead of skipping it for good. Both are the same state
      // as a best_model.pt of this epoch: links to that one file.
      std::vector<std::string> paths;
      if (epoch % o.save_interval() == 0) paths.push_back(o.output_dir() + "/epoch_" + std::to_string(epoch) + ".pt");
      paths.push_back(o.output_dir() + "/latest.pt");
      checkpoint(paths, state, state.best_epoch == epoch ? best_path : "");
    }
    summarise(progress, state, last, std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count(),
              state.best_epoch > 0 ? best_path : "");
    if (train_loader->dataset().skipped() > 0)
      progress.message(fmt::format("skipped {} bad training samples (skip_bad); the first: {}", train_loader->dataset().skipped(),
                                   train_loader->dataset().first_skip()));
    if (writer()) progress.write_svg(o.output_dir() + "/training.svg", model->infer_model_name() + " (" + o.output_dir() + ")");
    return state;
  }

  // The end of a run: best and last top-1, time, speed, where the best checkpoint is, and the
  // student against each teacher (the last evaluation's, else the teacher check's numbers).
  void summarise(Progress& progress, const TrainState& state, const std::optional<EvalResult>& last, double seconds,
                 const std::string& best_path) {
    const double speed = seconds > 0 ? static_cast<double>(trained_images) / seconds : 0.0;
    json record{{"type", "summary"}, {"epoch", o.epochs()}, {"seconds", seconds}, {"images_per_second", speed},
                {"best_top1", state.best_top1}, {"best_epoch", state.best_epoch}, {"skipped_steps", skipped_steps},
                {"best_checkpoint", best_path}};
    std::string line = fmt::format("done: {} epochs in {} ({:.1f} img/s)", o.epochs(), format_duration(seconds), speed);
    if (last) {
      record["last_top1"] = last->top1();
      line += fmt::format("; top-1 best {:.4f} (epoch {}), last {:.4f}; best checkpoint {}", state.best_top1, state.best_epoch,
                          last->top1(), best_path.empty() ? "none" : best_path);
    }
    line += "; checkpoints in " + o.output_dir();
    progress.message(line);
    const auto& teachers = last && !last->teachers.empty() ? last->teachers : checked_teachers;
    json compared = json::array();
    for (const auto& t : teachers) {
      json entry{{"model", t.model}, {"top1", t.top1}};
      std::string text = fmt::format("teacher {}: top-1 {:.4f}", t.model, t.top1);
      if (last && t.compared) {
        entry["agreement"] = t.agreement, entry["kl"] = t.kl;
        text += fmt::format("; the student reaches {:.1f}% of it, agrees with it on {:.1f}% of the images, KL(teacher || "
                            "student) {:.4f}", t.top1 > 0 ? 100.0 * last->top1() / t.top1 : 0.0, 100.0 * t.agreement, t.kl);
      }
      compared.push_back(entry);
      progress.message(text);
    }
    record["teachers"] = compared;
    if (skipped_steps > 0)
      progress.message(fmt::format("skipped {} optimiser steps with a non-finite loss term or gradient (Global.on_nonfinite: "
                                   "skip_step)", skipped_steps));
    progress.record(record);
  }

  // Alarms become warnings (log and metrics log), or errors with Global.strict_alarms.
  void raise(const std::vector<Alarm>& alarms, Progress& progress, int64_t epoch, int64_t step) {
    for (const auto& alarm : alarms) {
      progress.alarm(alarm.kind, alarm.subject, epoch, step, alarm.message);
      if (o.guardrails().strict_alarms())
        fail(alarm.message, " (epoch ", epoch, ", step ", step, "; an alarm stops the run because Global.strict_alarms is true)");
    }
  }

  // The built frozen models besides the evaluated one: the teachers.
  std::vector<std::string> frozen_teachers() const {
    std::vector<std::string> names;
    for (const auto& member : model->members())
      if (member.frozen && member.name != metric_model) names.push_back(member.name);
    return names;
  }

  std::string weights_of(const std::string& name) const {
    const auto& m = *model->model(name);
    if (m.weights_file().empty()) return "none were loaded (it has its random initialisation)";
    return fmt::format("{} ({} tensors)", m.weights_file(), m.weights_tensors());
  }

  // The teacher check: each frozen model's top-1 on (part of) the evaluation set; below the
  // threshold (default twice chance) the run stops. `report`: distill check lists the
  // failure as a problem instead.
  void check_teachers(Progress& progress, CheckReport* report, int64_t first_epoch = 1) {
    const auto teachers = frozen_teachers();
    const auto& g = o.guardrails();
    if (teachers.empty()) return;
    if (!g.teacher_check()) {
      progress.message("teacher check skipped (Global.teacher_check is false)");
      if (report) report->warnings.push_back("teacher check skipped (Global.teacher_check is false)");
      return;
    }
    if (!eval_loader) {
      progress.message("teacher check skipped: there is no evaluation data (DataLoader.Eval)");
      if (report) report->warnings.push_back("teacher check skipped: there is no evaluation data (DataLoader.Eval)");
      return;
    }
    const auto result = run_evaluation(g.teacher_check_batches(), /*with_student=*/false, /*with_teachers=*/true);
    checked_teachers = result.teachers;
    json list = json::array();
    for (const auto& t : result.teachers) {
      const double threshold = g.teacher_check_min_top1() > 0 ? g.teacher_check_min_top1() : 2.0 / static_cast<double>(t.classes);
      const bool passed = t.top1 >= threshold;
      progress.record({{"type", "teacher_check"}, {"epoch", first_epoch}, {"model", t.model}, {"top1", t.top1}, {"samples", result.samples},
                       {"threshold", threshold}, {"passed", passed}, {"weights", model->model(t.model)->weights_file()}});
      progress.message(fmt::format("teacher check: {} top-1 {:.4f} on {} evaluation images (untrained below {:.4f}); weights: {}",
                                   t.model, t.top1, result.samples, threshold, weights_of(t.model)));
      list.push_back({{"model", t.model}, {"top1", t.top1}, {"samples", result.samples}, {"threshold", threshold}});
      if (passed) continue;
      const auto why = fmt::format(
          "teacher check: the frozen model '{}' reaches top-1 {:.4f} on {} evaluation images, below {:.4f}{}: it looks "
          "untrained. Its weights: {}. Check the file and its layout (a torchvision file needs \"layout\": \"torchvision\"), "
          "or skip this check with -o Global.teacher_check=false",
          t.model, t.top1, result.samples, threshold, g.teacher_check_min_top1() > 0 ? "" : fmt::format(" (twice chance for {} classes)", t.classes),
          weights_of(t.model));
      if (!report) fail(why);
      report->problems.push_back(why);
    }
    if (report) report->summary["teacher_check"] = list;
  }

  // A run killed while it wrote a file leaves <name>.tmp beside the intact older <name>
  // (io::write_state_dict renames only complete files): remove those leftovers.
  void remove_partial_writes() {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(o.output_dir(), ec)) {
      const auto name = entry.path().filename().string();
      auto ends_with = [&name](const std::string& tail) {
        return name.size() > tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
      };
      if (entry.is_regular_file(ec) && (ends_with(".pt.tmp") || ends_with(".jsonl.tmp"))) {
        std::filesystem::remove(entry.path(), ec);
        log() << "removed " << entry.path().string() << ", a partial write of an interrupted run\n";
      }
    }
  }

  // Evaluation over at most `max_batches` batches (0: all) of the evaluated model and/or the
  // built frozen models (top-1 each; with both, their agreement).
  EvalResult run_evaluation(int64_t max_batches, bool with_student, bool with_teachers) {
    if (!eval_loader) fail("Trainer: there is no evaluation data (DataLoader.Eval)");
    if (group) group->broadcast(buffers(), "copying rank 0's running statistics before evaluation");
    torch::NoGradGuard no_grad;
    const bool was_training = model->is_training();
    model->eval();
    auto evaluated = model->model(metric_model);
    EvalResult result;
    for (const auto& name : with_teachers ? frozen_teachers() : std::vector<std::string>{}) result.teachers.push_back({name});
    std::vector<int64_t> correct(with_student ? o.topk().size() : 0, 0);
    std::vector<std::pair<std::string, double>> sums;
    std::vector<double> teacher_sums(3 * result.teachers.size(), 0.0);  // correct, agreeing, KL sum per teacher
    int64_t batches = static_cast<int64_t>(eval_loader->batches_per_epoch());
    if (max_batches > 0) batches = std::min(batches, max_batches);
    ProgressBar bar(log(), on_terminal(), with_student ? "eval" : "teacher check", batches);
    eval_loader->start(0);
    int64_t done = 0;
    std::optional<data::Batch> batch;
    while (done < batches && (batch = eval_loader->next())) {
      auto images = input(batch->images), labels = batch->labels.to(device);
      AutocastScope autocast(o.amp() && o.amp_eval(), device, o.amp_dtype());
      Features features;
      torch::Tensor student;
      if (with_student) {
        features = evaluated->forward(images);
        student = features["logits"].to(torch::kFloat);
      }
      const int64_t n = labels.size(0);
      for (size_t t = 0; t < result.teachers.size(); ++t) {
        auto& teacher = result.teachers[t];
        auto logits = model->model(teacher.model)->forward(images).at("logits").to(torch::kFloat);
        distill::detail::check_target("teacher check (DataLoader.Eval labels)", labels, logits);
        teacher.classes = logits.size(1);
        teacher.compared = with_student && student.size(1) == logits.size(1);
        teacher_sums[3 * t] += static_cast<double>(topk_correct(logits, labels, {1})[0]);
        if (!teacher.compared) continue;
        teacher_sums[3 * t + 1] += logits.argmax(1).eq(student.argmax(1)).sum().item<double>();
        auto log_t = torch::log_softmax(logits, 1), log_s = torch::log_softmax(student, 1);
        teacher_sums[3 * t + 2] += (log_t.exp() * (log_t - log_s)).sum().item<double>();
      }
      if (with_student) {
        // Out-of-range labels are an error here too, not silent misses (the loss checks them
        // only when Loss.Eval is given).
        labels = distill::detail::check_target("evaluation (DataLoader.Eval labels)", labels, features["logits"]);
        auto hits = topk_correct(student, labels, o.topk());
        for (size_t i = 0; i < hits.size(); ++i) correct[i] += hits[i];
        if (eval_loss) {
          auto terms = eval_loss->forward(ModelOutputs{{metric_model, features}}, labels.reshape({-1, 1}));
          size_t i = 0;
          for (const auto& [name, value] : terms) {
            if (sums.size() <= i) sums.emplace_back(name, 0.0);
            sums[i++].second += value.item<double>() * static_cast<double>(n);
          }
        }
      }
      result.samples += n;
      bar.update(++done);
    }
    bar.finish();
    if (was_training) model->train();
    // One reduction for everything (data parallel): samples, top-k counts, loss sums, teachers' sums.
    std::vector<double> totals{static_cast<double>(result.samples)};
    for (int64_t c : correct) totals.push_back(static_cast<double>(c));
    for (const auto& term : sums) totals.push_back(term.second);
    totals.insert(totals.end(), teacher_sums.begin(), teacher_sums.end());
    if (group) {
      auto reduced = torch::tensor(totals, torch::kDouble);
      group->all_reduce_sum(reduced, "reducing the evaluation over the ranks");
      totals.assign(reduced.data_ptr<double>(), reduced.data_ptr<double>() + reduced.numel());
    }
    const double samples = totals[0];
    result.samples = static_cast<int64_t>(samples);
    auto mean = [&](size_t i) { return samples > 0 ? totals[i] / samples : 0.0; };
    size_t i = 1;
    for (size_t k = 0; k < correct.size(); ++k) result.topk.emplace_back(o.topk()[k], mean(i++));
    for (auto& term : sums) result.loss_terms.emplace_back(term.first, mean(i++));
    for (auto& teacher : result.teachers) {
      teacher.top1 = mean(i), teacher.agreement = mean(i + 1), teacher.kl = mean(i + 2);
      i += 3;
    }
    return result;
  }

  void export_student(const std::string& path) { io::save_state_dict(*model->infer_model(), path); }

  // Writes the checkpoint files (rank 0). Data parallel: rank 0's running statistics first,
  // and every rank's RNG state in the file, so that a resume with as many workers continues
  // each rank's random stream. The state is written once (to `same_as` when that already holds
  // it, else to the first path); the other paths become hard links to that file, so an epoch
  // costs one write of the model, not three (best_model.pt, epoch_<k>.pt, latest.pt).
  void checkpoint(const std::vector<std::string>& paths, const TrainState& state, std::string same_as = "") {
    io::StateDict extra;
    if (group) {
      group->broadcast(buffers(), "copying rank 0's running statistics before a checkpoint");
      const auto states = group->all_gather(cpu_rng_state(), "collecting the RNG states for a checkpoint");
      for (size_t r = 1; r < states.size(); ++r) extra.insert("rng.cpu.rank" + std::to_string(r), states[r]);
      extra.insert("meta.world_size", torch::tensor(static_cast<double>(group->world_size()), torch::kDouble));
    }
    if (!writer()) return;
    for (const auto& path : paths) {
      if (!same_as.empty() && link_into_place(same_as, path)) continue;
      save_checkpoint(path, *model, *loss, *optimizer, state, scaler ? &*scaler : nullptr, extra);
      same_as = path;
    }
  }

  TrainState resume(Progress& progress) {
    io::StateDict entries;
    const auto& path = o.checkpoints();
    auto state = load_checkpoint(path, *model, *loss, *optimizer, scaler ? &*scaler : nullptr, &entries);
    const int64_t written_by = entries.contains("meta.world_size") ? checkpoint_count(entries, path, "meta.world_size") : 1;
    const int64_t workers = group ? group->world_size() : 1;
    if (written_by != workers)
      fail_at(path, "this checkpoint was written by ", written_by, " worker(s); resume it with as many (this run has ", workers,
              "), since the batches, the schedule and the random streams depend on it");
    if (group && group->rank() > 0) {
      const std::string key = "rng.cpu.rank" + std::to_string(group->rank());
      if (!entries.contains(key)) fail_at(path, "no '", key, "' entry");
      set_cpu_rng_state(entries[key]);
    }
    progress.message(fmt::format("resumed from {} after epoch {} (step {})", path, state.epoch, state.step));
    return state;
  }

  // distill check's part: what was built, the teacher check, one batch forward and backward.
  void check(CheckReport& report) {
    auto& summary = report.summary;
    auto count = [](const std::vector<torch::Tensor>& tensors, bool trainable_only) {
      int64_t n = 0;
      for (const auto& t : tensors)
        if (!trainable_only || t.requires_grad()) n += t.numel();
      return n;
    };
    summary["models"] = nlohmann::ordered_json::array();
    for (const auto& member : model->members()) {
      const auto parameters = member.model->parameters();
      summary["models"].push_back({{"name", member.name}, {"architecture", member.model->name()},
                                   {"parameters", count(parameters, false)}, {"trainable", count(parameters, true)},
                                   {"frozen", member.frozen}, {"weights", member.model->weights_file()},
                                   {"tensors_loaded", member.model->weights_tensors()}});
    }
    if (cache)
      for (const auto& name : cache->teachers())
        summary["models"].push_back({{"name", name}, {"architecture", "(teacher cache)"}, {"frozen", true}, {"weights", cache->dir()}});
    auto loader_summary = [](const data::DataLoader& loader) {
      return nlohmann::ordered_json{{"dataset", loader.dataset().describe()}, {"samples", loader.dataset().size()},
                                    {"batch_size", loader.options().batch_size()}, {"batches_per_epoch", loader.batches_per_epoch()}};
    };
    summary["data"] = {{"train", loader_summary(*train_loader)}};
    if (eval_loader) summary["data"]["eval"] = loader_summary(*eval_loader);
    summary["optimizer"] = nlohmann::ordered_json::array();
    for (auto& param_group : optimizer->param_groups()) {
      double decay = 0;
      if (auto* sgd = dynamic_cast<torch::optim::SGDOptions*>(&param_group.options())) decay = sgd->weight_decay();
      if (auto* adamw = dynamic_cast<torch::optim::AdamWOptions*>(&param_group.options())) decay = adamw->weight_decay();
      summary["optimizer"].push_back({{"weight_decay", decay}, {"tensors", param_group.params().size()},
                                      {"parameters", count(param_group.params(), false)}});
    }
    summary["losses"] = nlohmann::ordered_json::array();
    for (const auto& entry : loss->entries()) {
      nlohmann::ordered_json e{{"entry", entry.origin}, {"weight", entry.weight}};
      if (entry.epochs.first != 1 || entry.epochs.last != EpochRange().last) e["epochs"] = {entry.epochs.first, entry.epochs.last};
      summary["losses"].push_back(e);
    }
    Progress quiet(silent, false);
    check_teachers(quiet, &report);

    // One training batch, forward and backward, without a step.
    model->train();
    loss->set_epoch(1);
    train_loader->start(1);
    auto batch = train_loader->next();
    if (!batch) {
      report.problems.push_back("DataLoader.Train: no batch");
      return;
    }
    ModelOutputs outputs;
    LossTerms terms;
    try {
      terms = forward_batch(*batch, outputs);
    } catch (const Error& e) {
      report.problems.push_back(std::string("one training batch: ") + e.what());
      return;
    }
    summary["batch"] = {{"images", batch->images.sizes().vec()}, {"labels", batch->labels.sizes().vec()}};
    summary["taps"] = nlohmann::ordered_json::array();
    for (const auto& [name, features] : outputs)
      for (const auto& [key, value] : features)
        summary["taps"].push_back({{"tap", name + "." + key}, {"shape", value.defined() ? value.sizes().vec() : std::vector<int64_t>{}}});
    const auto params = trainable();
    // Which trainable tensors each term reaches: a fresh forward per term and a backward of
    // that term alone (fused losses keep their gradient for one backward of one forward).
    auto reached_by = [&](const std::string& name) {
      optimizer->zero_grad();
      ModelOutputs again;
      auto fresh = forward_batch(*batch, again);
      if (!fresh[name].requires_grad()) return int64_t{0};
      fresh[name].backward();
      int64_t reached = 0;
      for (const auto& p : params) reached += p.grad().defined() && p.grad().ne(0).any().item<bool>() ? 1 : 0;
      return reached;
    };
    summary["terms"] = nlohmann::ordered_json::array();
    for (const auto& [name, value] : terms) {
      const double number = value.detach().to(torch::kDouble).item<double>();
      nlohmann::ordered_json entry{{"term", name}, {"value", number}};
      if (name != "loss") {
        const int64_t reached = reached_by(name);
        entry["reaches"] = reached;
        if (!std::isfinite(number)) report.problems.push_back(fmt::format("loss term {} is {} on the first batch", name, number));
        else if (number == 0)
          report.problems.push_back(fmt::format("loss term {} is exactly 0 on the first batch: it teaches nothing (a pair of a "
                                                "model with itself, taps that match nothing, or a weight of 0?)", name));
        if (reached == 0)
          report.problems.push_back(fmt::format("loss term {} reaches no trainable parameter: its gradient is zero everywhere "
                                                "(a pair of frozen models, or a detached tensor?)", name));
      }
      summary["terms"].push_back(entry);
    }
    optimizer->zero_grad();
    terms["loss"].backward();
    if (!gradients_finite(params)) report.problems.push_back("one training batch: " + nonfinite_gradient());
    optimizer->zero_grad();
    const double spread = student_spread(outputs).item<double>();
    if (spread == 0)
      report.problems.push_back("the student's logits are the same for every image of the first batch: its output does not "
                                "depend on the input");
  }

  // A batch of images on the device, in the memory order the models' weights use.
  torch::Tensor input(const torch::Tensor& images) const {
    auto x = images.to(device);
    return o.channels_last() ? models::to_channels_last(x) : x;
  }

  // One batch through the models (and the teacher cache) and the loss.
  LossTerms forward_batch(const data::Batch& batch, ModelOutputs& outputs) {
    auto x = input(batch.images), y = batch.labels.to(device).reshape({-1, 1});
    AutocastScope autocast(o.amp(), device, o.amp_dtype());
    outputs = model->forward(x);
    if (cache) {
      // Stored logits in the dtype the student's come out in (autocast: the teacher's would too).
      const auto& student = outputs.at(model->infer_model_name());
      const auto dtype = student.contains("logits") ? student.at("logits").scalar_type() : torch::kFloat;
      for (const auto& [name, logits] : cache->lookup(batch.indices, batch.views))
        outputs.set(name, Features{{"logits", logits.to(device, dtype)}});
    }
    loss->set_batch(batch.indices.to(device));  // CRD's memory rows
    return loss->forward(outputs, y);
  }

  torch::Tensor student_spread(const ModelOutputs& outputs) const {
    const auto& student = outputs.at(model->infer_model_name());
    if (!student.contains("logits")) return torch::full({}, -1.0, torch::kDouble);
    return logit_spread(student.at("logits").detach()).to(torch::kDouble);
  }

  // The first batch of an optimiser step that had a non-finite term, kept for nan_batch.pt.
  struct Suspect {
    std::string what;
    data::Batch batch;
    ModelOutputs outputs;
    LossTerms terms;
    int64_t step = 0;
  };

  // The first parameter (model or loss module) whose gradient is not finite, or "".
  std::string nonfinite_gradient() const {
    for (const auto* module : {static_cast<const torch::nn::Module*>(model.get()), static_cast<const torch::nn::Module*>(loss.get())})
      for (const auto& item : module->named_parameters())
        if (item.value().grad().defined() && !item.value().grad().isfinite().all().item<bool>())
          return fmt::format("the gradient of {}{} is not finite", module == model.get() ? "" : "loss.", item.key());
    return "";
  }

  // Whether every gradient is finite: one sum per tensor and one transfer.
  static bool gradients_finite(const std::vector<torch::Tensor>& params) {
    std::vector<torch::Tensor> sums;
    for (const auto& p : params)
      if (p.grad().defined()) sums.push_back(p.grad().sum().to(torch::kFloat));
    return sums.empty() || torch::stack(sums).isfinite().all().item<bool>();
  }

  // Stops the run: the suspect batch, its labels, every model's outputs and the terms go to
  // nan_batch.pt (each worker its own), with the path of the last good checkpoint.
  [[noreturn]] void stop_nonfinite(const Suspect& s, int64_t epoch) {
    const std::string latest = o.output_dir() + "/latest.pt";
    const std::string last_good = std::filesystem::exists(latest) ? latest : "";
    std::filesystem::create_directories(o.output_dir());
    const std::string path = o.output_dir() + (group && group->rank() > 0 ? fmt::format("/nan_batch.rank{}.pt", group->rank()) : "/nan_batch.pt");
    io::StateDict dict;
    dict.insert("images", s.batch.images);
    dict.insert("labels", s.batch.labels);
    dict.insert("indices", s.batch.indices);
    for (const auto& [name, features] : s.outputs)
      for (const auto& [key, value] : features)
        if (value.defined()) dict.insert("outputs." + name + "." + key, value.detach().cpu());
    for (const auto& [name, value] : s.terms) dict.insert("terms." + name, value.detach().cpu());
    dict.insert("meta.epoch", torch::tensor(static_cast<double>(epoch), torch::kDouble));
    dict.insert("meta.step", torch::tensor(static_cast<double>(s.step), torch::kDouble));
    // The path as UTF-8 bytes: bytes(d['last_checkpoint'].tolist()).decode() in Python.
    dict.insert("last_checkpoint", torch::tensor(std::vector<int64_t>(last_good.begin(), last_good.end()), torch::kLong).to(torch::kUInt8));
    io::write_state_dict(dict, path);
    fail("training stopped: ", s.what, " at epoch ", epoch, ", step ", s.step, ". The batch, its labels and every model's outputs "
         "are in ", path, "; the last good checkpoint is ", last_good.empty() ? "none yet (no epoch has finished)" : last_good,
         ". Global.on_nonfinite: skip_step skips such steps instead");
  }

  void run_epoch(int64_t epoch, TrainState& state, Progress& progress, std::chrono::steady_clock::time_point run_start,
                 int64_t start_epoch) {
    model->train();
    loss->set_epoch(epoch);  // stage-wise terms and scheduled losses (CTKD) follow the epoch
    train_loader->start(epoch);
    const auto batches = static_cast<int64_t>(train_loader->batches_per_epoch());
    const auto params = trainable();
    // Gradients are averaged while backward runs; a worker's non-finite term reaches the others
    // in the same collectives (the number of workers that met one).
    std::optional<GradientReducer> reducer;
    if (group) reducer.emplace(group, params);
    std::vector<std::pair<std::string, double>> sums;  // since the last report
    int64_t counted = 0, batch_index = 0, images = 0;
    double epoch_loss = 0;
    int64_t epoch_counted = 0, classes = 0;
    auto window_start = std::chrono::steady_clock::now();
    optimizer->zero_grad();
    std::optional<Suspect> suspect;
    // skip_step also undoes what the skipped forwards did to the running statistics (a NaN
    // there would spoil every later evaluation): the buffers as of the last good step.
    const bool skipping = o.guardrails().on_nonfinite() == OnNonFinite::skip_step;
    const auto live_buffers = skipping ? buffers() : std::vector<torch::Tensor>{};
    std::vector<torch::Tensor> good_buffers;
    for (const auto& b : live_buffers) good_buffers.push_back(b.detach().clone());
    while (auto batch = train_loader->next()) {
      ++batch_index;
      ModelOutputs outputs;
      LossTerms terms = forward_batch(*batch, outputs);
      const double lr = schedule(state.step);
      set_learning_rate(*optimizer, lr);
      auto total = terms["loss"] / static_cast<double>(o.update_freq());
      const bool ends_step = batch_index % o.update_freq() == 0 || batch_index == batches;
      if (reducer && ends_step) reducer->arm();
      (scaler ? scaler->scale(total) : total).backward();
      // The step's numbers in one transfer: every term and the student's spread.
      std::vector<torch::Tensor> row;
      for (const auto& [name, value] : terms) row.push_back(value.detach().to(torch::kDouble).reshape({}));
      row.push_back(student_spread(outputs));
      const auto host = torch::stack(row).cpu();
      const double* v = host.data_ptr<double>();
      std::vector<std::pair<std::string, double>> values;
      bool finite = true;
      for (const auto& [name, value] : terms) {
        values.emplace_back(name, v[values.size()]);
        finite = finite && std::isfinite(values.back().second);
      }
      if (!finite && !suspect) {
        std::string names;
        for (const auto& [name, value] : values)
          if (!std::isfinite(value)) names += fmt::format("{}{} is {}", names.empty() ? "" : ", ", name, value);
        suspect = Suspect{"a loss term is not finite (" + names + ")", *batch, outputs, terms, state.step};
      }
      if (ends_step) {
        bool elsewhere = false;
        if (reducer) {
          auto alarms = torch::full({1}, suspect ? 1.0 : 0.0);
          reducer->finish(&alarms);
          elsewhere = !suspect && alarms.item<float>() > 0;
          if (!overlap_reported) {  // once per run: whether communication overlapped backward
            const auto [early, total] = reducer->sent_early();
            progress.message(fmt::format("gradient all-reduce: {} bucket(s), {} sent during backward{}", total, early,
                                         group->options().overlap() ? "" : " (DISTILL_GRADIENT_OVERLAP=0)"));
            overlap_reported = true;
          }
        }
        // Under a loss scaler, non-finite gradients are its overflows: skipped and counted as before.
        const bool scaled_ok = !scaler || scaler->unscale_and_check(params);
        if (!suspect && !elsewhere && !scaler && !gradients_finite(params))
          suspect = Suspect{nonfinite_gradient(), *batch, outputs, terms, state.step};
        if (suspect || elsewhere) {
          if (o.guardrails().on_nonfinite() == OnNonFinite::stop) {
            if (suspect) stop_nonfinite(*suspect, epoch);
            fail("training stopped at epoch ", epoch, ", step ", state.step, ": another worker met a non-finite loss term (its "
                 "nan_batch.rank<r>.pt in ", o.output_dir(), " says which)");
          }
          ++skipped_steps;
          progress.record({{"type", "skipped_step"}, {"epoch", epoch}, {"step", state.step},
                           {"why", suspect ? suspect->what : "a non-finite loss term on another worker"}});
          torch::NoGradGuard no_grad;
          for (size_t i = 0; i < live_buffers.size(); ++i) live_buffers[i].copy_(good_buffers[i]);
        } else {
          if (scaled_ok) optimizer->step();
          torch::NoGradGuard no_grad;
          for (size_t i = 0; i < live_buffers.size(); ++i) good_buffers[i].copy_(live_buffers[i]);
        }
        optimizer->zero_grad();
        suspect.reset();
        ++state.step;
      }
      images += batch->images.size(0);
      if (finite) {
        for (size_t t = 0; t < values.size(); ++t) {
          if (sums.size() <= t) sums.emplace_back(values[t].first, 0.0);
          sums[t].second += values[t].second;
        }
        ++counted;
        raise(monitor.step(values, v[values.size()]), progress, epoch, state.step);
        if (classes == 0) {
          const auto& student = outputs.at(model->infer_model_name());
          if (student.contains("logits")) classes = student.at("logits").size(-1);
        }
      }
      const bool report = batch_index % o.print_batch_step() == 0 || batch_index == batches;
      if (!report) progress.tick(epoch, o.epochs(), batch_index, batches);  // a report draws the bar itself
      if (report) {
        // Means over the steps since the last report (all workers'; non-finite steps left out).
        std::vector<double> packed;
        for (const auto& term : sums) packed.push_back(term.second);
        packed.push_back(static_cast<double>(counted));
        auto totals = torch::tensor(packed, torch::kDouble);
        if (group) group->all_reduce_sum(totals, fmt::format("averaging the logged losses at epoch {}, step {}", epoch, batch_index));
        const double n = totals[static_cast<int64_t>(sums.size())].item<double>();
        if (n > 0) {  // the epoch's mean loss over all workers, for the ln C alarm ("loss" comes last)
          epoch_loss += totals[static_cast<int64_t>(sums.size()) - 1].item<double>();
          epoch_counted += static_cast<int64_t>(n);
        }
        std::vector<std::pair<std::string, double>> means;
        for (size_t t = 0; t < sums.size(); ++t) means.emplace_back(sums[t].first, totals[static_cast<int64_t>(t)].item<double>() / n);
        raise(monitor.frozen_changed(*model), progress, epoch, state.step);
        const auto now = std::chrono::steady_clock::now();
        const double window = std::chrono::duration<double>(now - window_start).count();
        const double elapsed = std::chrono::duration<double>(now - run_start).count();
        const double done = static_cast<double>((epoch - 1 - start_epoch) * batches + batch_index);
        const double remaining = static_cast<double>((o.epochs() - start_epoch) * batches) - done;
        const double all_images = static_cast<double>(images * (group ? group->world_size() : 1));
        if (n > 0)
          progress.train_step(epoch, o.epochs(), batch_index, batches, state.step, means, lr,
                              window > 0 ? all_images / window : 0.0, done > 0 ? elapsed / done * remaining : -1);
        else
          progress.tick(epoch, o.epochs(), batch_index, batches);
        trained_images += images * (group ? group->world_size() : 1);
        for (auto& term : sums) term.second = 0;
        counted = 0;
        images = 0;
        window_start = now;
      }
    }
    if (epoch_counted > 0 && classes > 1)
      raise(monitor.epoch_end(epoch, epoch_loss / static_cast<double>(epoch_counted), classes), progress, epoch, state.step);
  }

  TrainerOptions o;
  std::ostream& out;
  std::ostream silent{nullptr};
  std::shared_ptr<ProcessGroup> group;
  std::shared_ptr<DistillationModelImpl> model;
  std::shared_ptr<CombinedLossImpl> loss, eval_loss;
  ParameterGroups groups;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  LRSchedule schedule;
  std::unique_ptr<data::DataLoader> train_loader, eval_loader;
  std::optional<GradScaler> scaler;
  torch::Device device = torch::kCPU;
  std::string metric_model;
  std::shared_ptr<TeacherCache> cache;
  Monitor monitor;
  std::vector<TeacherAgreement> checked_teachers;  // the teacher check's numbers
  int64_t skipped_steps = 0, trained_images = 0;
  bool overlap_reported = false;
};

namespace {
// The evaluation loss of a recipe (Loss.Eval), if it has one.
std::shared_ptr<CombinedLossImpl> eval_loss_of(const json& recipe) {
  if (!recipe.contains("Loss") || !recipe["Loss"].is_object() || !recipe["Loss"].contains("Eval")) return nullptr;
  return config::build_loss(recipe["Loss"]["Eval"], "Loss.Eval");
}
// The recipe's Loss section may hold only Train and Eval.
void check_loss_section(const json& recipe) {
  if (!recipe.contains("Loss")) return;
  Reader losses(recipe["Loss"], "Loss");
  losses.use("Train"), losses.use("Eval");
  losses.done();
}
// The recipe's seed, set before its models are built (their initial weights depend on it).
TrainerOptions seeded(TrainerOptions options) {
  torch::manual_seed(static_cast<uint64_t>(options.seed()));
  return options;
}
}  // namespace

Trainer::Trainer(TrainerOptions options, std::shared_ptr<DistillationModelImpl> model, std::shared_ptr<CombinedLossImpl> loss,
                 std::shared_ptr<CombinedLossImpl> eval_loss, std::ostream& out)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(model), std::move(loss), std::move(eval_loss), out)) {}

namespace {
// Once per run (rank 0): the recipe keys that were accepted without effect.
void report_ignored(const IgnoredKeys& ignored, const Trainer& trainer, std::ostream& out) {
  if (ignored.keys().empty() || !trainer.writer()) return;
  out << "recipe keys accepted but not acted on (what they do in the reference):\n";
  for (const auto& [path, why] : ignored.keys()) out << "  " << path << ": " << why << "\n";
}
}  // namespace

Trainer::Trainer(const json& recipe, std::ostream& out) {
  IgnoredKeys ignored;
  auto options = seeded(trainer_options(recipe));
  check_loss_section(recipe);
  // With a teacher cache the cached teachers are neither built nor loaded.
  std::shared_ptr<TeacherCache> cache;
  json trained = recipe;
  if (!options.teacher_cache().empty()) {
    cache = TeacherCache::open(options.teacher_cache());
    cache->check_recipe(recipe, *options.train_data());
    trained = without_cached_teachers(recipe, *cache);
  }
  const Reader root(trained, "recipe");
  auto model = config::build_model(root.raw("Arch"));
  auto loss = config::build_loss(Reader(root.raw("Loss"), "Loss").raw("Train"), "Loss.Train");
  impl_ = std::make_unique<Impl>(std::move(options), std::move(model), std::move(loss), eval_loss_of(recipe), out, cache);
  report_ignored(ignored, *this, out);
}

Trainer::Trainer(const json& recipe, std::shared_ptr<DistillationModelImpl> model, std::shared_ptr<CombinedLossImpl> loss,
                 std::ostream& out) {
  IgnoredKeys ignored;
  auto options = seeded(trainer_options(recipe));
  check_loss_section(recipe);
  impl_ = std::make_unique<Impl>(std::move(options), std::move(model), std::move(loss), eval_loss_of(recipe), out);
  report_ignored(ignored, *this, out);
}

Trainer::~Trainer() = default;
DistillationModelImpl& Trainer::model() { return *impl_->model; }
CombinedLossImpl& Trainer::loss() { return *impl_->loss; }
const std::string& Trainer::output_dir() const { return impl_->o.output_dir(); }
TrainState Trainer::train() { return impl_->train(); }
EvalResult Trainer::evaluate(bool teachers) { return impl_->run_evaluation(0, /*with_student=*/true, teachers); }
void Trainer::check(CheckReport& report) { impl_->check(report); }
void Trainer::export_student(const std::string& path) { impl_->export_student(path); }
const std::shared_ptr<ProcessGroup>& Trainer::group() const { return impl_->group; }
bool Trainer::writer() const { return impl_->writer(); }

std::vector<std::pair<std::string, double>> Trainer::describe(const EvalResult& result) {
  std::vector<std::pair<std::string, double>> metrics;
  for (const auto& [k, acc] : result.topk) metrics.emplace_back("top" + std::to_string(k), acc);
  for (const auto& term : result.loss_terms) metrics.push_back(term);
  for (const auto& t : result.teachers) {
    metrics.emplace_back("top1_" + t.model, t.top1);
    if (!t.compared) continue;
    metrics.emplace_back("agree_" + t.model, t.agreement);
    metrics.emplace_back("kl_" + t.model, t.kl);
  }
  return metrics;
}

}  // namespace distill::train
