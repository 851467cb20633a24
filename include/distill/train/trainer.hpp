#pragma once
// The training engine: a recipe (Global, AMP, Arch, Loss, Optimizer, DataLoader, Metric in the
// reference's vocabulary) trained, evaluated, checkpointed and exported (reference sections
// 1.4 and 5).

#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "distill/config/build.hpp"
#include "distill/data/loader.hpp"
#include "distill/train/amp.hpp"
#include "distill/train/checkpoint.hpp"
#include "distill/train/distributed.hpp"
#include "distill/train/optim.hpp"
#include "distill/train/progress.hpp"

namespace distill::train {

/// Top-1 / top-k accuracy and the evaluation loss terms over a dataset.
struct EvalResult {
  int64_t samples = 0;
  std::vector<std::pair<int64_t, double>> topk;              // (k, accuracy in [0, 1])
  std::vector<std::pair<std::string, double>> loss_terms;    // sample-weighted means
  double top1() const {
    for (const auto& [k, acc] : topk)
      if (k == 1) return acc;
    return 0;
  }
};

/// Correct predictions among the top k, for each k.
inline std::vector<int64_t> topk_correct(const torch::Tensor& logits, const torch::Tensor& labels,
                                         const std::vector<int64_t>& ks) {
  const int64_t kmax = std::min<int64_t>(*std::max_element(ks.begin(), ks.end()), logits.size(1));
  auto top = std::get<1>(logits.topk(kmax, 1));
  auto hit = top.eq(labels.reshape({-1, 1}));
  std::vector<int64_t> correct;
  for (int64_t k : ks) correct.push_back(hit.slice(1, 0, std::min(k, kmax)).any(1).sum().item<int64_t>());
  return correct;
}

/// Trains a recipe.
///
///   auto recipe = distill::config::load_file("examples/recipes/fashion_mnist/dkd.json");
///   distill::train::Trainer trainer(recipe);
///   trainer.train();                        // progress on stdout, checkpoints in Global.output_dir
///   auto result = trainer.evaluate();       // top-1 / top-5 of Arch.infer_model_name
///   trainer.export_student("student.pt");   // a state dict Python's torch.load reads
///
/// Data parallel: when the torchrun environment names several workers (WORLD_SIZE > 1; e.g.
/// `distill train --nproc 2`), each worker runs its own Trainer on a shard of the data (the
/// recipe's batch_size is per worker, as in the reference): rank 0's initial weights are
/// broadcast, gradients averaged (ProcessGroup), evaluation reduced over all ranks, and only
/// rank 0 prints and writes files. Frozen models are never synchronised. BatchNorm statistics
/// are per worker, as in PyTorch DDP without SyncBatchNorm and in the reference; rank 0's
/// running statistics are copied to all before each evaluation and checkpoint.
class Trainer {
 public:
  explicit Trainer(const config::json& recipe, std::ostream& out = std::cout) : Trainer(recipe, nullptr, nullptr, out) {}

  /// A model and a training loss built in C++; the recipe supplies the rest (its Arch and
  /// Loss.Train are then not used; Loss.Eval still is).
  Trainer(const config::json& recipe, std::shared_ptr<DistillationModelImpl> model,
          std::shared_ptr<CombinedLossImpl> loss, std::ostream& out = std::cout)
      : recipe_(recipe), out_(out), model_(std::move(model)), loss_(std::move(loss)) {
    config::Reader root(recipe_, "recipe");
    read_global(config::Reader(root.raw("Global"), "Global"));
    group_ = ProcessGroup::world();
    if (group_ && device_.is_cuda()) device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(group_->local_rank()));
    if (!model_) model_ = config::build_model(root.raw("Arch"));
    root.has("Arch");
    if (!loss_ || root.has("Loss")) {
      const auto& losses = config::Reader(root.raw("Loss"), "Loss");
      if (!loss_) loss_ = config::build_loss(losses.raw("Train"), "Loss.Train");
      losses.has("Train");
      if (losses.has("Eval")) eval_loss_ = config::build_loss(losses.raw("Eval"), "Loss.Eval");
      losses.done();
    }
    read_metric(root);
    read_amp(root);
    model_->to(device_);
    loss_->to(device_);
    if (eval_loss_) (*eval_loss_)->to(device_);
    if (!pretrained_.empty()) load_model_weights(*model_, pretrained_);
    groups_ = optimizer_parameters(*model_, *loss_);
    optimizer_ = make_optimizer(root.raw("Optimizer"), "Optimizer", groups_);
    const auto& loaders = config::Reader(root.raw("DataLoader"), "DataLoader");
    train_loader_ = make_loader(loaders, "Train", /*training=*/true);
    if (loaders.has("Eval")) eval_loader_ = make_loader(loaders, "Eval", /*training=*/false);
    loaders.done();
    const int64_t steps_per_epoch = (static_cast<int64_t>(train_loader_->batches_per_epoch()) + update_freq_ - 1) / update_freq_;
    schedule_ = LRSchedule::from_config(config::Reader(root.raw("Optimizer"), "Optimizer").raw("lr"), "Optimizer.lr",
                                        epochs_, steps_per_epoch);
    for (const char* ignored : {"Infer", "PostProcess"}) root.has(ignored);  // read by `distill infer`
    root.done();
    if (group_) {
      group_->broadcast(synchronised(), "broadcasting rank 0's initial weights");
      // Each worker its own random stream (dropout, MGD's masks); rank 0 keeps the seed's.
      if (group_->rank() > 0) torch::manual_seed(data::detail::mix(static_cast<uint64_t>(seed_) ^ data::detail::mix(group_->rank())));
    }
  }

  DistillationModelImpl& model() { return *model_; }
  CombinedLossImpl& loss() { return *loss_; }
  const std::string& output_dir() const { return output_dir_; }

  /// Trains from the checkpoint in Global.checkpoints (if set) to Global.epochs, evaluating
  /// every eval_interval epochs and writing latest.pt every epoch, epoch_<k>.pt every
  /// save_interval epochs, best_model.pt and best_model_student.pt on improvement,
  /// metrics.jsonl and, at the end, training.svg.
  TrainState train() {
    if (writer()) std::filesystem::create_directories(output_dir_);
    Progress progress(log(), writer() && &out_ == &std::cout && Progress::stdout_is_terminal(),
                      writer() ? output_dir_ + "/metrics.jsonl" : "");
    TrainState state;
    if (!resume_.empty()) {
      state = resume(progress);
    }
    progress.message(fmt::format("training {} on {}: {} epochs x {} batches of {} on {}{}", model_->infer_model_name(),
                                 train_loader_->dataset().describe(), epochs_, train_loader_->batches_per_epoch(),
                                 train_loader_->options().batch_size(), device_.str(),
                                 group_ ? fmt::format(" x {} workers", group_->world_size()) : ""));
    const auto run_start = std::chrono::steady_clock::now();
    const int64_t start_epoch = state.epoch;
    for (int64_t epoch = state.epoch + 1; epoch <= epochs_; ++epoch) {
      run_epoch(epoch, state, progress, run_start, start_epoch);
      state.epoch = epoch;
      if (eval_loader_ && eval_during_train_ && epoch % eval_interval_ == 0) {
        const auto result = evaluate();
        const bool best = result.top1() > state.best_top1;
        if (best) {
          state.best_top1 = result.top1();
          state.best_epoch = epoch;
        }
        progress.evaluation(epoch, describe(result), best);
        if (best) {
          checkpoint({output_dir_ + "/best_model.pt"}, state);
          if (writer()) export_student(output_dir_ + "/best_model_student.pt");
        }
      }
      std::vector<std::string> paths{output_dir_ + "/latest.pt"};
      if (epoch % save_interval_ == 0) paths.push_back(output_dir_ + "/epoch_" + std::to_string(epoch) + ".pt");
      checkpoint(paths, state);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
    progress.message(fmt::format("done: {} epochs in {}; best top-1 {:.4f} at epoch {}; checkpoints in {}", epochs_,
                                 format_duration(seconds), state.best_top1, state.best_epoch, output_dir_));
    if (train_loader_->dataset().skipped() > 0)
      progress.message(fmt::format("skipped {} bad training samples", train_loader_->dataset().skipped()));
    if (writer()) progress.write_svg(output_dir_ + "/training.svg", model_->infer_model_name() + " (" + output_dir_ + ")");
    return state;
  }

  /// Evaluates the metric's model (Metric.Eval model_key, default infer_model_name) on
  /// DataLoader.Eval: top-k accuracy and the Loss.Eval terms. Only that model runs (the
  /// reference also runs the teacher and discards it). Data parallel: each rank evaluates its
  /// shard (every sample once) and all ranks get the totals.
  EvalResult evaluate() {
    if (!eval_loader_) distill::detail::fail("Trainer: the recipe has no DataLoader.Eval");
    if (group_) group_->broadcast(buffers(), "copying rank 0's running statistics before evaluation");
    torch::NoGradGuard no_grad;
    const bool was_training = model_->is_training();
    model_->eval();
    auto evaluated = model_->model(metric_model_);
    EvalResult result;
    std::vector<int64_t> correct(topk_.size(), 0);
    std::vector<std::pair<std::string, double>> sums;
    eval_loader_->start(0);
    while (auto batch = eval_loader_->next()) {
      auto images = batch->images.to(device_), labels = batch->labels.to(device_);
      Features features;
      {
        AutocastScope autocast(amp_ && fp16_test_, device_, amp_dtype_);
        features = evaluated->forward(images);
      }
      const int64_t n = labels.size(0);
      auto hits = topk_correct(features["logits"].to(torch::kFloat), labels, topk_);
      for (size_t i = 0; i < hits.size(); ++i) correct[i] += hits[i];
      if (eval_loss_) {
        auto terms = (*eval_loss_)->forward(ModelOutputs{{metric_model_, features}}, labels.reshape({-1, 1}));
        size_t i = 0;
        for (const auto& [name, value] : terms) {
          if (sums.size() <= i) sums.emplace_back(name, 0.0);
          sums[i++].second += value.item<double>() * static_cast<double>(n);
        }
      }
      result.samples += n;
    }
    if (was_training) model_->train();
    if (group_) reduce(result.samples, correct, sums);
    for (size_t i = 0; i < topk_.size(); ++i)
      result.topk.emplace_back(topk_[i], result.samples ? static_cast<double>(correct[i]) / result.samples : 0.0);
    for (auto& [name, sum] : sums) result.loss_terms.emplace_back(name, result.samples ? sum / result.samples : 0.0);
    return result;
  }

  /// Writes the infer_model_name model alone as a state dict (Python: torch.load).
  void export_student(const std::string& path) { io::save_state_dict(*model_->infer_model(), path); }

  /// The data-parallel group this trainer works in; null in a single process.
  const std::shared_ptr<ProcessGroup>& group() const { return group_; }
  /// Whether this process prints and writes files: rank 0, or the only process.
  bool writer() const { return !group_ || group_->rank() == 0; }

  static std::vector<std::pair<std::string, double>> describe(const EvalResult& result) {
    std::vector<std::pair<std::string, double>> metrics;
    for (const auto& [k, acc] : result.topk) metrics.emplace_back("top" + std::to_string(k), acc);
    for (const auto& term : result.loss_terms) metrics.push_back(term);
    return metrics;
  }

 private:
  void read_global(const config::Reader& g) {
    epochs_ = g.get<int64_t>("epochs");
    if (epochs_ < 1) distill::detail::fail(g.path_of("epochs"), ": must be >= 1");
    output_dir_ = g.get<std::string>("output_dir", "./output");
    const auto device = g.get<std::string>("device", "cpu");
    if (device == "gpu" || device == "cuda") {
      if (!torch::cuda::is_available())
        distill::detail::fail(g.path_of("device"), ": \"", device, "\" asked for, but libtorch sees no CUDA device; use \"cpu\"");
      device_ = torch::Device(torch::kCUDA, 0);
    } else if (device != "cpu") {
      distill::detail::fail(g.path_of("device"), ": expected \"cpu\" or \"gpu\", got \"", device, "\"");
    }
    seed_ = g.get<int64_t>("seed", 0);
    torch::manual_seed(static_cast<uint64_t>(seed_));
    save_interval_ = std::max<int64_t>(1, g.get<int64_t>("save_interval", 1));
    eval_during_train_ = g.get<bool>("eval_during_train", true);
    eval_interval_ = std::max<int64_t>(1, g.get<int64_t>("eval_interval", 1));
    print_batch_step_ = std::max<int64_t>(1, g.get<int64_t>("print_batch_step", 10));
    update_freq_ = std::max<int64_t>(1, g.get<int64_t>("update_freq", 1));
    if (g.has("checkpoints")) resume_ = g.get<std::string>("checkpoints");
    if (g.has("pretrained_model")) pretrained_ = g.get<std::string>("pretrained_model");
    if (g.get<bool>("use_visualdl", false)) distill::detail::fail(g.path_of("use_visualdl"), ": VisualDL is not available; progress goes to metrics.jsonl and training.svg");
    // Accepted for compatibility with the reference's recipes; without effect here.
    for (const char* key : {"image_shape", "save_inference_dir", "to_static"}) g.has(key);
    g.done();
  }

  void read_metric(const config::Reader& root) {
    metric_model_ = model_->infer_model_name();
    if (!root.has("Metric")) return;
    config::Reader m(root.raw("Metric"), "Metric");
    for (const char* phase : {"Train", "Eval"}) {
      if (!m.has(phase)) continue;
      const auto& list = m.raw(phase);
      if (!list.is_array()) distill::detail::fail(m.path_of(phase), ": expected a list of metrics");
      for (size_t i = 0; i < list.size(); ++i) {
        const std::string at = m.path_of(phase) + "[" + std::to_string(i) + "]";
        auto [name, options] = config::detail::single_entry(list[i], at);
        if (name != "DistillationTopkAcc" && name != "TopkAcc")
          distill::detail::fail(at, ": unknown metric '", name, "'; known: DistillationTopkAcc, TopkAcc");
        config::Reader r(*options, at + "." + name);
        auto ks = r.get<std::vector<int64_t>>("topk", {1, 5});
        auto key = r.get<std::string>("model_key", model_->infer_model_name());
        r.get<std::string>("feature_key", "logits");
        r.done();
        if (ks.empty() || *std::min_element(ks.begin(), ks.end()) < 1)
          distill::detail::fail(r.path_of("topk"), ": expected positive values");
        model_->model(key);  // must exist
        if (std::string(phase) == "Eval") {
          topk_ = ks;
          metric_model_ = key;
        }
      }
    }
    m.done();
  }

  void read_amp(const config::Reader& root) {
    if (!root.has("AMP")) return;
    config::Reader a(root.raw("AMP"), "AMP");
    amp_ = a.get<bool>("use_amp", true);
    const auto dtype = a.get<std::string>("dtype", "float16");
    if (dtype != "float16" && dtype != "bfloat16")
      distill::detail::fail(a.path_of("dtype"), ": expected \"float16\" or \"bfloat16\", got \"", dtype, "\"");
    amp_dtype_ = dtype == "bfloat16" ? torch::kBFloat16 : torch::kHalf;
    if (a.get<std::string>("level", "O1") != "O1") distill::detail::fail(a.path_of("level"), ": only O1 (autocast) is supported");
    fp16_test_ = a.get<bool>("use_fp16_test", false);
    const double scale = a.get<double>("scale_loss", 128.0);
    const bool dynamic = a.get<bool>("use_dynamic_loss_scaling", true);
    a.has("use_promote");
    a.done();
    if (!amp_) return;
    if (!device_.is_cuda() && amp_dtype_ == torch::kHalf)
      distill::detail::fail(a.path(), ": float16 mixed precision needs a CUDA device; on the CPU set AMP.dtype=bfloat16 "
                                      "or AMP.use_amp=false");
    if (amp_dtype_ == torch::kHalf) scaler_.emplace(scale, dynamic);  // bfloat16 needs no loss scaling
  }

  std::unique_ptr<data::DataLoader> make_loader(const config::Reader& loaders, const char* phase, bool training) {
    config::Reader section(loaders.raw(phase), loaders.path_of(phase));
    auto dataset = data::dataset_from_config(section.raw("dataset"), section.path_of("dataset"));
    config::Reader sampler(section.raw("sampler"), section.path_of("sampler"));
    const auto name = sampler.get<std::string>("name", "DistributedBatchSampler");
    if (name != "DistributedBatchSampler" && name != "BatchSampler")
      distill::detail::fail(sampler.path_of("name"), ": expected DistributedBatchSampler or BatchSampler");
    auto options = data::LoaderOptions()
                       .batch_size(sampler.get<int64_t>("batch_size"))
                       .drop_last(sampler.get<bool>("drop_last", false))
                       .shuffle(sampler.get<bool>("shuffle", training))
                       .seed(static_cast<uint64_t>(seed_) + (training ? 0 : 1));
    sampler.done();
    if (section.has("loader")) {
      config::Reader loader(section.raw("loader"), section.path_of("loader"));
      options.num_workers(loader.get<int64_t>("num_workers", 2));
      loader.has("use_shared_memory");  // threads share memory anyway
      loader.done();
    }
    section.done();
    if (group_) {
      options.rank(group_->rank()).world_size(group_->world_size()).pad(training).drop_empty_batches(!training);
      if (!training && dataset->size() < static_cast<size_t>(group_->world_size()))
        distill::detail::fail(loaders.path_of(phase), ": ", dataset->size(), " samples cannot be shared by ",
                              group_->world_size(), " workers");
    }
    return std::make_unique<data::DataLoader>(dataset, options);
  }

  // What this process prints to: the given stream on rank 0, nothing elsewhere.
  std::ostream& log() { return writer() ? out_ : silent_; }

  // What rank 0 broadcasts at the start: the trainable parameters (model and loss) and the
  // buffers of the models that are not frozen.
  std::vector<torch::Tensor> synchronised() const {
    auto tensors = trainable();
    for (auto& b : buffers()) tensors.push_back(b);
    return tensors;
  }
  std::vector<torch::Tensor> buffers() const {
    std::vector<torch::Tensor> tensors;
    for (const auto& member : model_->members())
      if (!member.frozen)
        for (auto& b : member.model->buffers()) tensors.push_back(b);
    for (auto& b : loss_->buffers()) tensors.push_back(b);
    return tensors;
  }

  // Sums the evaluation counts and loss sums of all ranks (one all-reduce).
  void reduce(int64_t& samples, std::vector<int64_t>& correct, std::vector<std::pair<std::string, double>>& sums) {
    std::vector<double> values{static_cast<double>(samples)};
    for (int64_t c : correct) values.push_back(static_cast<double>(c));
    for (const auto& term : sums) values.push_back(term.second);
    auto totals = torch::tensor(values, torch::kDouble);
    group_->all_reduce_sum(totals, "reducing the evaluation over the ranks");
    samples = static_cast<int64_t>(totals[0].item<double>());
    for (size_t i = 0; i < correct.size(); ++i) correct[i] = static_cast<int64_t>(totals[static_cast<int64_t>(1 + i)].item<double>());
    for (size_t i = 0; i < sums.size(); ++i) sums[i].second = totals[static_cast<int64_t>(1 + correct.size() + i)].item<double>();
  }

  static std::vector<torch::Tensor> values_of(const std::vector<std::pair<std::string, torch::Tensor>>& named) {
    std::vector<torch::Tensor> values;
    for (const auto& item : named) values.push_back(item.second);
    return values;
  }

  // Writes the checkpoint files (rank 0). Data parallel: rank 0's running statistics first,
  // and every rank's RNG state in the file, so that a resume with as many workers continues
  // each rank's random stream.
  void checkpoint(const std::vector<std::string>& paths, const TrainState& state) {
    io::StateDict extra;
    if (group_) {
      group_->broadcast(buffers(), "copying rank 0's running statistics before a checkpoint");
      const auto states = group_->all_gather(detail::rng_state(detail::cpu_generator()), "collecting the RNG states for a checkpoint");
      for (size_t r = 1; r < states.size(); ++r) extra.insert("rng.cpu.rank" + std::to_string(r), states[r]);
      extra.insert("meta.world_size", torch::tensor(static_cast<double>(group_->world_size()), torch::kDouble));
    }
    if (!writer()) return;
    for (const auto& path : paths) save_checkpoint(path, *model_, *loss_, *optimizer_, state, scaler_ ? &*scaler_ : nullptr, extra);
  }

  TrainState resume(Progress& progress) {
    io::StateDict entries;
    auto state = load_checkpoint(resume_, *model_, *loss_, *optimizer_, scaler_ ? &*scaler_ : nullptr, &entries);
    const int64_t written_by = entries.contains("meta.world_size") ? static_cast<int64_t>(entries["meta.world_size"].item<double>()) : 1;
    const int64_t workers = group_ ? group_->world_size() : 1;
    if (written_by != workers)
      distill::detail::fail(resume_, ": this checkpoint was written by ", written_by, " worker(s); resume it with as many (",
                            "this run has ", workers, "), since the batches, the schedule and the random streams depend on it");
    if (group_ && group_->rank() > 0) {
      const std::string key = "rng.cpu.rank" + std::to_string(group_->rank());
      if (!entries.contains(key)) distill::detail::fail(resume_, ": no '", key, "' entry");
      detail::set_rng_state(detail::cpu_generator(), entries[key]);
    }
    progress.message(fmt::format("resumed from {} after epoch {} (step {})", resume_, state.epoch, state.step));
    return state;
  }


  void run_epoch(int64_t epoch, TrainState& state, Progress& progress,
                 std::chrono::steady_clock::time_point run_start, int64_t start_epoch) {
    model_->train();
    train_loader_->start(epoch);
    const auto batches = static_cast<int64_t>(train_loader_->batches_per_epoch());
    const auto params = trainable();
    std::vector<std::pair<std::string, torch::Tensor>> sums;
    int64_t seen = 0, logged = 0, batch_index = 0, images = 0;
    auto window_start = std::chrono::steady_clock::now();
    optimizer_->zero_grad();
    while (auto batch = train_loader_->next()) {
      ++batch_index;
      auto x = batch->images.to(device_), y = batch->labels.to(device_).reshape({-1, 1});
      LossTerms terms;
      {
        AutocastScope autocast(amp_, device_, amp_dtype_);
        terms = loss_->forward(model_->forward(x), y);
      }
      const double lr = schedule_(state.step);
      set_learning_rate(*optimizer_, lr);
      auto total = terms["loss"] / static_cast<double>(update_freq_);
      (scaler_ ? scaler_->scale(total) : total).backward();
      if (batch_index % update_freq_ == 0 || batch_index == batches) {
        if (group_) group_->average_gradients(params);
        if (!scaler_ || scaler_->unscale_and_check(params)) optimizer_->step();
        optimizer_->zero_grad();
        ++state.step;
      }
      size_t i = 0;
      for (const auto& [name, value] : terms) {
        if (sums.size() <= i) sums.emplace_back(name, torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device_)));
        sums[i++].second += value.detach().to(torch::kDouble);
      }
      ++seen;
      images += x.size(0);
      if (batch_index % print_batch_step_ == 0 || batch_index == batches) {
        std::vector<std::pair<std::string, double>> means;
        auto totals = torch::stack(values_of(sums)).cpu();
        if (group_) {
          group_->all_reduce_sum(totals, fmt::format("averaging the logged losses at epoch {}, step {}", epoch, batch_index));
          totals /= static_cast<double>(group_->world_size());
        }
        for (size_t t = 0; t < sums.size(); ++t) {
          means.emplace_back(sums[t].first, totals[static_cast<int64_t>(t)].item<double>() / static_cast<double>(seen - logged));
          sums[t].second.zero_();
        }
        for (const auto& [name, value] : means)
          if (!std::isfinite(value))
            distill::detail::fail("training diverged: ", name, " is ", value, " at epoch ", epoch, ", step ", batch_index,
                                  "; the last good checkpoint is ", output_dir_, "/latest.pt");
        const auto now = std::chrono::steady_clock::now();
        const double window = std::chrono::duration<double>(now - window_start).count();
        const double elapsed = std::chrono::duration<double>(now - run_start).count();
        const double done = static_cast<double>((epoch - 1 - start_epoch) * batches + batch_index);
        const double remaining = static_cast<double>((epochs_ - start_epoch) * batches) - done;
        const double all_images = static_cast<double>(images * (group_ ? group_->world_size() : 1));
        progress.train_step(epoch, epochs_, batch_index, batches, state.step, means, lr,
                            window > 0 ? all_images / window : 0.0, done > 0 ? elapsed / done * remaining : -1);
        logged = seen;
        images = 0;
        window_start = now;
      }
    }
  }

  std::vector<torch::Tensor> trainable() const {
    std::vector<torch::Tensor> params = groups_.decay;
    params.insert(params.end(), groups_.no_decay.begin(), groups_.no_decay.end());
    return params;
  }

  config::json recipe_;
  std::ostream& out_;
  std::ostream silent_{nullptr};
  std::shared_ptr<ProcessGroup> group_;
  std::shared_ptr<DistillationModelImpl> model_;
  std::shared_ptr<CombinedLossImpl> loss_;
  std::optional<std::shared_ptr<CombinedLossImpl>> eval_loss_;
  ParameterGroups groups_;
  std::unique_ptr<torch::optim::SGD> optimizer_;
  LRSchedule schedule_;
  std::unique_ptr<data::DataLoader> train_loader_, eval_loader_;
  std::optional<GradScaler> scaler_;
  torch::Device device_ = torch::kCPU;
  torch::Dtype amp_dtype_ = torch::kHalf;
  bool amp_ = false, fp16_test_ = false, eval_during_train_ = true;
  int64_t epochs_ = 1, seed_ = 0, save_interval_ = 1, eval_interval_ = 1, print_batch_step_ = 10, update_freq_ = 1;
  std::string output_dir_, resume_, pretrained_, metric_model_;
  std::vector<int64_t> topk_{1, 5};
};

}  // namespace distill::train
