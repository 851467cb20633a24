#pragma once
// The training engine: a composed model and a combined loss trained, evaluated,
// checkpointed and exported with the reference's engine behaviour (docs/reference.md §1.4,
// §5). Its options are a C++ value (TrainerOptions); train/recipe.hpp reads them from a
// recipe's Global, AMP, Metric, Optimizer and DataLoader sections. Compiled into
// distill::engine (src/train.cpp).

#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "distill/compose/fwd.hpp"
#include "distill/data/loader.hpp"
#include "distill/train/checkpoint.hpp"
#include "distill/train/distributed.hpp"
#include "distill/train/guardrails.hpp"
#include "distill/train/optim.hpp"

namespace distill::train {

/// A frozen model (a teacher) on the evaluation set: its own top-1 and how the student
/// compares: the fraction of images where both predict the same class, and the mean
/// KL(teacher || student) of their softmax outputs (temperature 1, nats).
struct TeacherAgreement {
  std::string model;
  double top1 = 0, agreement = 0, kl = 0;
  int64_t classes = 0;
  bool compared = false;  // false: the two have different class counts, or the student was not run
};

/// Top-1 / top-k accuracy, the evaluation loss terms and each teacher's agreement over a dataset.
struct EvalResult {
  int64_t samples = 0;
  std::vector<std::pair<int64_t, double>> topk;            // (k, accuracy in [0, 1])
  std::vector<std::pair<std::string, double>> loss_terms;  // sample-weighted means
  std::vector<TeacherAgreement> teachers;                  // the built frozen models
  double top1() const {
    for (const auto& [k, acc] : topk)
      if (k == 1) return acc;
    return 0;
  }
};

/// Correct predictions among the top k, for each k.
std::vector<int64_t> topk_correct(const torch::Tensor& logits, const torch::Tensor& labels, const std::vector<int64_t>& ks);

/// Makes the optimiser once the parameters are known.
using OptimizerFactory = std::function<std::unique_ptr<torch::optim::Optimizer>(const ParameterGroups&)>;
/// Makes the schedule once the epochs and optimiser steps per epoch are known.
using ScheduleFactory = std::function<LRSchedule(int64_t epochs, int64_t steps_per_epoch)>;

/// Everything a Trainer needs besides the model and the loss (a recipe's Global, AMP, Metric,
/// Optimizer and DataLoader; train::trainer_options reads them).
struct TrainerOptions {
  TORCH_ARG(int64_t, epochs) = 1;
  TORCH_ARG(std::string, output_dir) = "./output";
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Seeds the loader's order and augmentation; the recipe constructors also seed libtorch's
  /// generator with it before the models are built.
  TORCH_ARG(int64_t, seed) = 0;
  TORCH_ARG(int64_t, save_interval) = 1;
  TORCH_ARG(bool, eval_during_train) = true;
  TORCH_ARG(int64_t, eval_interval) = 1;
  TORCH_ARG(int64_t, print_batch_step) = 10;
  /// Gradient accumulation: one optimiser step every update_freq batches.
  TORCH_ARG(int64_t, update_freq) = 1;
  /// A checkpoint to resume from (Global.checkpoints).
  TORCH_ARG(std::string, checkpoints);
  /// Weights to start from (Global.pretrained_model; see load_model_weights).
  TORCH_ARG(std::string, pretrained_model);
  /// Mixed precision (AMP): autocast to amp_dtype; float16 also scales the loss (Paddle's rules).
  TORCH_ARG(bool, amp) = false;
  TORCH_ARG(torch::Dtype, amp_dtype) = torch::kHalf;
  TORCH_ARG(bool, amp_eval) = false;
  TORCH_ARG(double, loss_scale) = 128.0;
  TORCH_ARG(bool, dynamic_loss_scaling) = true;
  /// Convolution weights and input batches channels-last (NHWC; Global.channels_last): faster
  /// convolutions on the CPU (oneDNN) and on CUDA tensor cores; values agree to rounding.
  TORCH_ARG(bool, channels_last) = false;
  /// Evaluation: top-k of `metric_model` (empty: the model's infer_model_name).
  TORCH_ARG(std::vector<int64_t>, topk) = std::vector<int64_t>({1, 5});
  TORCH_ARG(std::string, metric_model);
  TORCH_ARG(OptimizerFactory, optimizer);
  TORCH_ARG(ScheduleFactory, schedule);
  TORCH_ARG(std::shared_ptr<data::Dataset>, train_data);
  TORCH_ARG(data::LoaderOptions, train_loader);
  /// A teacher cache directory (train/teacher_cache.hpp; Global.teacher_cache): the models it
  /// holds are not part of the model; their stored logits join the model's outputs, for the
  /// views the loader replays. The cache must have been made from train_data.
  TORCH_ARG(std::string, teacher_cache);
  /// K > 0: replay K fixed views per image with the default view seeds (Global.replay_views),
  /// as a teacher cache of K views does, with the teacher run online (data::LoaderOptions::views).
  TORCH_ARG(int64_t, replay_views) = 0;
  /// Optional: without it there is no evaluation.
  TORCH_ARG(std::shared_ptr<data::Dataset>, eval_data);
  TORCH_ARG(data::LoaderOptions, eval_loader);
  /// The teacher check, the non-finite tripwire and the silent-failure alarms.
  TORCH_ARG(GuardrailOptions, guardrails);
};

/// Lets glibc keep freed memory for reuse (trim threshold 1 GiB, mmap threshold 32 MiB)
/// instead of returning it to the kernel. A training step frees and allocates the same
/// activation buffers every time; by default glibc unmaps the large ones and trims the heap,
/// and the next step takes a page fault for every page again. Measured on the Fashion-MNIST
/// student, one thread: 4370 -> 5850 images/s, kernel time 4.0 -> 0.2 s per epoch. Process-wide
/// and not undone; the `distill` command, the demo and the recipe programs call it first thing.
/// Without glibc it does nothing.
void reuse_freed_memory();

/// Trains a composed model.
///
///   auto recipe = distill::config::load_file("examples/recipes/fashion_mnist/dkd.json");
///   distill::train::Trainer trainer(recipe);
///   trainer.train();                        // progress on stdout, checkpoints in Global.output_dir
///   auto result = trainer.evaluate();       // top-1 / top-5 of Arch.infer_model_name
///   trainer.export_student("student.pt");   // a state dict Python's torch.load reads
///
/// Data parallel: when the torchrun environment names several workers (WORLD_SIZE > 1; e.g.
/// `distill train --nproc 2`), each worker runs its own Trainer on a shard of the data (the
/// batch size is per worker, as in the reference): rank 0's initial weights are broadcast,
/// gradients averaged (ProcessGroup), evaluation reduced over all ranks, and only rank 0
/// prints and writes files. Frozen models are never synchronised. BatchNorm statistics are per
/// worker, as in PyTorch DDP without SyncBatchNorm and in the reference; rank 0's running
/// statistics are copied to all before each evaluation and checkpoint.
class Trainer {
 public:
  /// Everything from C++. The caller seeds libtorch's generator (the model is already built).
  Trainer(TrainerOptions options, std::shared_ptr<DistillationModelImpl> model, std::shared_ptr<CombinedLossImpl> loss,
          std::shared_ptr<CombinedLossImpl> eval_loss = nullptr, std::ostream& out = std::cout);
  /// Everything from a recipe (Arch, Loss, and the sections of TrainerOptions).
  explicit Trainer(const nlohmann::json& recipe, std::ostream& out = std::cout);
  /// A model and a training loss built in C++; the recipe supplies the rest (its Arch and
  /// Loss.Train are then not used; Loss.Eval still is).
  Trainer(const nlohmann::json& recipe, std::shared_ptr<DistillationModelImpl> model,
          std::shared_ptr<CombinedLossImpl> loss, std::ostream& out = std::cout);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  DistillationModelImpl& model();
  CombinedLossImpl& loss();
  const std::string& output_dir() const;

  /// Trains from the checkpoint in `checkpoints` (if set) to `epochs`, evaluating every
  /// eval_interval epochs and writing latest.pt every epoch, epoch_<k>.pt every save_interval
  /// epochs, best_model.pt and best_model_student.pt on improvement, metrics.jsonl and, at the
  /// end, training.svg. The guardrails (GuardrailOptions) run along: the teacher check before
  /// the first step, the non-finite tripwire at every step (nan_batch.pt), the alarms.
  TrainState train();

  /// Evaluates the metric's model (default infer_model_name) on the evaluation data: top-k
  /// accuracy and the evaluation loss terms; with `teachers`, also each built frozen model's
  /// top-1 and its agreement with the student (TeacherAgreement). Data parallel: each rank
  /// evaluates its shard (every sample once) and all ranks get the totals.
  EvalResult evaluate(bool teachers = true);

  /// The trainer's part of check_recipe: the models, data, optimiser groups and teacher check
  /// in `report`, then one forward and backward on one training batch (each term's value,
  /// the parameters it reaches, the taps' shapes), without an optimiser step or any file.
  void check(CheckReport& report);

  /// Writes the infer_model_name model alone as a state dict (Python: torch.load).
  void export_student(const std::string& path);

  /// The data-parallel group this trainer works in; null in a single process.
  const std::shared_ptr<ProcessGroup>& group() const;
  /// Whether this process prints and writes files: rank 0, or the only process.
  bool writer() const;

  static std::vector<std::pair<std::string, double>> describe(const EvalResult& result);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace distill::train
