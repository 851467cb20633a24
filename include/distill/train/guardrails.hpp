#pragma once
// Guardrails against the silent failures of distillation (docs/guardrails.md): a teacher
// that looks untrained, a non-finite loss or gradient, a term that never changes, a loss
// stuck at ln C, a frozen model that changes, a student blind to its input; and
// `distill check`, which builds a recipe's whole run and tries one batch. Compiled into
// distill::engine (src/guardrails.cpp; the trainer's side is in src/train.cpp).

#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "distill/compose/fwd.hpp"

namespace distill::train {

/// What a non-finite loss term or gradient does (Global.on_nonfinite).
enum class OnNonFinite {
  stop,       ///< the run stops with an error and writes nan_batch.pt (default)
  skip_step,  ///< the optimiser step is skipped; skipped steps are counted and reported
};

/// The guardrails' settings (Global.teacher_check, teacher_check_batches,
/// teacher_check_min_top1, on_nonfinite, strict_alarms, alarm_steps).
struct GuardrailOptions {
  /// Evaluate each frozen model before the first step and stop when it looks untrained.
  TORCH_ARG(bool, teacher_check) = true;
  /// At most this many evaluation batches for that check (0: the whole evaluation set).
  TORCH_ARG(int64_t, teacher_check_batches) = 50;
  /// The top-1 below which a frozen model counts as untrained; 0: twice chance (2 / classes).
  TORCH_ARG(double, teacher_check_min_top1) = 0;
  TORCH_ARG(OnNonFinite, on_nonfinite) = OnNonFinite::stop;
  /// Alarms stop the run with an error instead of a warning.
  TORCH_ARG(bool, strict_alarms) = false;
  /// Steps a term must stay exactly constant (or the student's logits stay the same for every
  /// image) before the alarm.
  TORCH_ARG(int64_t, alarm_steps) = 50;
};

/// A silent-failure alarm: its kind ("constant_term", "loss_at_chance", "frozen_changed",
/// "input_independent"), what it is about (a term or model name) and the message.
struct Alarm {
  std::string kind, subject, message;
};

/// Watches a run for the silent failures (each alarm fires once per kind and subject):
/// - a loss term exactly constant (zero included) for alarm_steps steps in a row;
/// - the total loss within 1% of ln C, averaged over an epoch;
/// - a frozen model whose parameters differ from when watch() saw them;
/// - a student whose logits are the same for every image of a batch for alarm_steps steps.
///
///   distill::train::Monitor monitor(options);
///   monitor.watch(model);
///   for (...) for (auto& alarm : monitor.step(terms, spread)) log(alarm.message);
class Monitor {
 public:
  explicit Monitor(GuardrailOptions options = {}) : o_(std::move(options)) {}

  /// One training step: the (weighted) terms as numbers, "loss" included, and the spread of
  /// the student's logits over the batch relative to their size (negative: not measured).
  std::vector<Alarm> step(const std::vector<std::pair<std::string, double>>& terms, double student_spread);
  /// The end of an epoch: the mean total loss over it and the number of classes.
  std::vector<Alarm> epoch_end(int64_t epoch, double mean_loss, int64_t classes);
  /// Remembers a fingerprint of each frozen model's parameters.
  void watch(const DistillationModelImpl& model);
  /// The frozen models whose parameters changed since watch(), with the first that did.
  std::vector<Alarm> frozen_changed(const DistillationModelImpl& model);

 private:
  bool first_time(const std::string& kind, const std::string& subject) { return fired_.insert(kind + "\n" + subject).second; }

  GuardrailOptions o_;
  std::map<std::string, std::pair<double, int64_t>> runs_;  // term -> (last value, steps unchanged)
  int64_t blind_steps_ = 0;
  std::map<std::string, torch::Tensor> fingerprints_;  // frozen model -> [parameters, 2] (sum, sum of squares)
  std::set<std::string> fired_;
};

/// The spread of logits [N, C] over the batch relative to their size: max |z_i - z_0| /
/// (max |z| + tiny), a 0-d tensor on their device (one reduction, no synchronisation); -1
/// for a batch of one.
torch::Tensor logit_spread(const torch::Tensor& logits);

/// What `distill check` found: the summary (models, taps, loss terms, optimiser groups, data)
/// as JSON, the problems (the check fails when there is any) and warnings.
struct CheckReport {
  nlohmann::ordered_json summary = nlohmann::ordered_json::object();
  std::vector<std::string> problems, warnings;
  bool ok() const { return problems.empty(); }
  /// The summary, warnings and problems for a person.
  std::string text() const;
  /// {"ok": ..., "problems": [...], "warnings": [...], ...summary}.
  nlohmann::ordered_json to_json() const;
};

/// Builds everything a training run of `recipe` would (models, weights, taps, losses,
/// optimiser groups, data loaders), checks each frozen model as training would
/// (Global.teacher_check), and runs one forward and backward on one training batch, without
/// an optimiser step and without writing anything. Every problem is listed, not only the
/// first: each section is read on its own, and each loss entry.
///
///   auto report = distill::train::check_recipe(distill::config::load_file("recipe.json"));
///   std::cout << report.text();
///   return report.ok() ? 0 : 1;
CheckReport check_recipe(const nlohmann::json& recipe, std::ostream& progress);

}  // namespace distill::train
