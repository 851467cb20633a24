#pragma once
// The engine's side of a recipe: Global, AMP, Metric, Optimizer (with its lr) and DataLoader
// (datasets and transform_ops) in the reference's vocabulary, read into TrainerOptions. Each
// optimiser, schedule, dataset and transform is registered by name with the keys it reads;
// config/build.hpp does the same for Arch and Loss, data/recipe.hpp for datasets and
// transforms. Compiled into distill::engine (src/train.cpp).

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "distill/core/reader.hpp"
#include "distill/core/registry.hpp"
#include "distill/data/recipe.hpp"
#include "distill/train/trainer.hpp"

namespace distill::train {

/// The TrainerOptions a recipe describes (every section but Arch and Loss, which
/// config::build_model and config::build_loss read). Keys the engine accepts but does not act
/// on are listed in ignored_keys().
///
///   auto options = distill::train::trainer_options(recipe);
///   distill::train::Trainer trainer(options, model, loss);
/// With `problems`, every section is read even when one before it is wrong, and each
/// error is appended there (distill check lists them all); without, the first is thrown.
TrainerOptions trainer_options(const json& recipe, std::vector<std::string>* problems = nullptr);

/// The recipe keys the engine accepts without acting on them, by recipe path, with what they
/// mean in the reference and why they have no effect here.
const std::map<std::string, std::string>& ignored_keys();

/// The optimiser an `Optimizer` section describes (its `lr` is the schedule's).
using OptimizerReader = std::function<OptimizerFactory(const Reader& section)>;
/// The schedule an `Optimizer.lr` section describes.
using ScheduleReader = std::function<ScheduleFactory(const Reader& section)>;

/// Optimisers by name: Momentum, AdamW.
Registry<OptimizerReader>& optimizer_registry();
/// Schedules by name: Cosine, Piecewise, MultiStepDecay, Constant.
Registry<ScheduleReader>& schedule_registry();

/// The optimiser of an `Optimizer` section, over `groups`.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const json& section, const std::string& path,
                                                        const ParameterGroups& groups);
/// The schedule of an `Optimizer.lr` section for `epochs` of `steps_per_epoch` optimiser steps.
LRSchedule make_schedule(const json& section, const std::string& path, int64_t epochs, int64_t steps_per_epoch);

}  // namespace distill::train
