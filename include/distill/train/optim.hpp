#pragma once
// The reference's optimisers and learning-rate schedules (docs/reference.md §5) as C++
// values: Momentum (SGD with coupled L2 decay, every recipe's) and AdamW (decoupled decay);
// linear warm-up then Cosine, Piecewise, MultiStepDecay or Constant, stepped per iteration.
// Compiled into distill::engine (src/train.cpp); train/recipe.hpp reads them from a recipe
// by name.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "distill/compose/fwd.hpp"

namespace distill::train {

/// Learning rate as a function of the iteration (0-based, over the whole run). Pure, so a
/// resumed run continues exactly.
using LRSchedule = std::function<double(int64_t iteration)>;

/// The decay after warm-up.
enum class Decay {
  cosine,     // from the base rate to 0 over the remaining iterations
  piecewise,  // `values[k]` from epoch `boundaries[k - 1]` on (values has one entry more)
  multistep,  // the base rate times gamma^(number of milestones passed)
  constant
};

/// Options of make_schedule. Warm-up is linear from 0 (Paddle's LinearWarmup).
struct ScheduleOptions {
  TORCH_ARG(Decay, decay) = Decay::constant;
  TORCH_ARG(double, learning_rate) = 0.1;
  TORCH_ARG(double, warmup_epochs) = 0;
  TORCH_ARG(int64_t, epochs) = 1;
  TORCH_ARG(int64_t, iters_per_epoch) = 1;
  /// Piecewise: epochs where the rate changes; MultiStepDecay: the milestones.
  TORCH_ARG(std::vector<double>, boundaries);
  /// Piecewise: the rates (one more than boundaries).
  TORCH_ARG(std::vector<double>, values);
  /// MultiStepDecay: the factor at each milestone.
  TORCH_ARG(double, gamma) = 0.1;
};

/// The schedule `options` describe; bad options are errors naming `where`.
///
///   auto lr = distill::train::make_schedule(distill::train::ScheduleOptions().decay(Decay::cosine)
///                                               .learning_rate(0.4).warmup_epochs(5).epochs(100).iters_per_epoch(1251));
///   double rate = lr(step);
LRSchedule make_schedule(const ScheduleOptions& options, const std::string& where = "schedule");

/// Momentum SGD as the reference's Momentum optimiser: velocity = mu * velocity +
/// (grad + decay * w); w -= lr * velocity (torch::optim::SGD with dampening 0). The
/// ParameterGroups' no_decay group gets no decay.
struct MomentumOptions {
  TORCH_ARG(double, momentum) = 0.9;
  TORCH_ARG(double, weight_decay) = 0;
};

/// AdamW with decoupled weight decay (Loshchilov and Hutter): w -= lr * decay * w, apart from
/// Adam's step. Paddle's AdamW defaults.
struct AdamWOptions {
  TORCH_ARG(double, beta1) = 0.9;
  TORCH_ARG(double, beta2) = 0.999;
  TORCH_ARG(double, epsilon) = 1e-8;
  TORCH_ARG(double, weight_decay) = 0;
  TORCH_ARG(bool, amsgrad) = false;
  /// Also exempt every parameter with one dimension (biases, normalisation scales) from decay.
  TORCH_ARG(bool, one_dim_param_no_weight_decay) = false;
};

/// The optimisers over `groups` (decay, and no_decay without decay). The learning rate is
/// set per step by set_learning_rate.
std::unique_ptr<torch::optim::Optimizer> make_momentum(const ParameterGroups& groups, const MomentumOptions& options,
                                                       const std::string& where = "Momentum");
std::unique_ptr<torch::optim::Optimizer> make_adamw(const ParameterGroups& groups, const AdamWOptions& options,
                                                    const std::string& where = "AdamW");

/// Sets every group's learning rate.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

}  // namespace distill::train
