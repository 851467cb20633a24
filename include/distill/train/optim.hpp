#pragma once
// The reference's optimiser and learning-rate schedules (section 5): momentum SGD with
// coupled L2 decay; linear warm-up then cosine, piecewise or multi-step decay, all stepped per
// iteration.

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "distill/compose/combined_loss.hpp"
#include "distill/config/reader.hpp"

namespace distill::train {

/// Learning rate as a function of the iteration (0-based, over the whole run). Pure, so a
/// resumed run continues exactly.
///
///   auto lr = LRSchedule::from_config(recipe["Optimizer"]["lr"], "Optimizer.lr", epochs, iters_per_epoch);
///   double rate = lr(step);
class LRSchedule {
 public:
  double operator()(int64_t iteration) const {
    const double i = static_cast<double>(iteration);
    if (i < warmup_) return base_ * i / warmup_;  // linear from 0 (Paddle's LinearWarmup)
    const double epoch = i / iters_per_epoch_;
    if (kind_ == "Cosine") {
      const double t = i - warmup_, total = total_ - warmup_;
      return total <= 0 ? base_ : 0.5 * base_ * (1 + std::cos(M_PI * std::min(t, total) / total));
    }
    if (kind_ == "Piecewise") {
      size_t k = 0;
      while (k < boundaries_.size() && epoch >= boundaries_[k]) ++k;
      return values_[k];
    }
    if (kind_ == "MultiStepDecay") {
      double rate = base_;
      for (double m : boundaries_)
        if (epoch >= m) rate *= gamma_;
      return rate;
    }
    return base_;  // Constant
  }

  /// The reference's `Optimizer.lr` section: Cosine {learning_rate, warmup_epoch},
  /// Piecewise {learning_rate, decay_epochs, values, warmup_epoch}, MultiStepDecay
  /// {learning_rate, milestones, gamma, warmup_epoch}, Constant {learning_rate}. The
  /// reference's `step_each_epoch` is accepted and, as there, replaced by the real number of
  /// iterations per epoch (quirk 7.17); Piecewise uses its decay_epochs and values as written.
  static LRSchedule from_config(const config::json& section, const std::string& path, int64_t epochs,
                                int64_t iters_per_epoch) {
    config::Reader r(section, path);
    LRSchedule s;
    s.kind_ = r.get<std::string>("name");
    s.iters_per_epoch_ = static_cast<double>(std::max<int64_t>(iters_per_epoch, 1));
    s.total_ = static_cast<double>(epochs) * s.iters_per_epoch_;
    s.base_ = r.get<double>("learning_rate");
    s.warmup_ = r.get<double>("warmup_epoch", 0.0) * s.iters_per_epoch_;
    r.get<int64_t>("step_each_epoch", 0);
    if (!(s.base_ >= 0)) distill::detail::fail(r.path_of("learning_rate"), ": must be >= 0");
    if (s.warmup_ < 0) distill::detail::fail(r.path_of("warmup_epoch"), ": must be >= 0");
    if (s.kind_ == "Piecewise") {
      s.boundaries_ = r.get<std::vector<double>>("decay_epochs");
      s.values_ = r.get<std::vector<double>>("values");
      if (s.values_.size() != s.boundaries_.size() + 1)
        distill::detail::fail(r.path_of("values"), ": needs one value more than decay_epochs (", s.boundaries_.size() + 1,
                              "), got ", s.values_.size());
    } else if (s.kind_ == "MultiStepDecay") {
      s.boundaries_ = r.get<std::vector<double>>("milestones");
      s.gamma_ = r.get<double>("gamma", 0.1);
    } else if (s.kind_ != "Cosine" && s.kind_ != "Constant") {
      distill::detail::fail(r.path_of("name"), ": unknown schedule '", s.kind_,
                            "'; known: Cosine, Piecewise, MultiStepDecay, Constant");
    }
    r.done();
    return s;
  }

 private:
  std::string kind_ = "Constant";
  double base_ = 0.1, warmup_ = 0, iters_per_epoch_ = 1, total_ = 1, gamma_ = 0.1;
  std::vector<double> boundaries_, values_;
};

/// Momentum SGD as the reference's Momentum optimiser (no Nesterov): velocity = mu * velocity +
/// (grad + decay * w); w -= lr * velocity. torch::optim::SGD with dampening 0 is exactly this.
/// Weight decay comes from `weight_decay: <float>` or `regularizer: {name: L2, coeff}`; the
/// no_decay group (e.g. PP-LCNet's BatchNorm, L2Decay(0) in the reference) gets none.
inline std::unique_ptr<torch::optim::SGD> make_optimizer(const config::json& section, const std::string& path,
                                                         const ParameterGroups& groups) {
  config::Reader r(section, path);
  const auto name = r.get<std::string>("name");
  if (name != "Momentum")
    distill::detail::fail(r.path_of("name"), ": only \"Momentum\" (the optimiser of every recipe) is supported, got \"",
                          name, "\"");
  const double momentum = r.get<double>("momentum", 0.9);
  if (r.get<bool>("use_nesterov", false)) distill::detail::fail(r.path_of("use_nesterov"), ": not supported");
  double decay = 0;
  if (r.has("weight_decay") && r.has("regularizer"))
    distill::detail::fail(r.path(), ": give weight_decay or regularizer, not both");
  if (r.has("weight_decay")) decay = r.get<double>("weight_decay");
  if (r.has("regularizer")) {
    config::Reader reg(r.raw("regularizer"), r.path_of("regularizer"));
    if (reg.get<std::string>("name") != "L2")
      distill::detail::fail(reg.path_of("name"), ": only L2 (coupled decay) is supported");
    decay = reg.get<double>("coeff");
    reg.done();
  }
  r.has("lr");  // read by LRSchedule
  r.done();
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::SGDOptions>(
        torch::optim::SGDOptions(0.0).momentum(momentum).weight_decay(wd).dampening(0).nesterov(false));
  };
  param_groups.emplace_back(groups.decay, options(decay));
  if (!groups.no_decay.empty()) param_groups.emplace_back(groups.no_decay, options(0.0));
  return std::make_unique<torch::optim::SGD>(param_groups, torch::optim::SGDOptions(0.0).momentum(momentum));
}

/// Sets every group's learning rate.
inline void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
}

}  // namespace distill::train
