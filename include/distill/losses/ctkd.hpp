#pragma once
// CTKD: curriculum temperature for knowledge distillation (Li et al., AAAI 2023;
// docs/methods.md). KD whose temperature is a trained parameter reached through a gradient
// reversal layer: the temperature moves to make distillation harder, more so each epoch.

#include <cmath>

#include "distill/losses/common.hpp"

namespace distill {

/// How CTKD's reversal strength lambda moves from lambda_max to lambda_min.
enum class CTKDSchedule { cosine, linear };

/// Options of CTKDLoss, defaults as the official ImageNet script (temperature 1 + 20
/// sigmoid(theta), lambda from 0 to -1 over 5 epochs by a cosine).
struct CTKDOptions {
  /// temperature = t_start + t_end * sigmoid(theta)
  TORCH_ARG(double, t_start) = 1.0;
  TORCH_ARG(double, t_end) = 20.0;
  TORCH_ARG(double, lambda_max) = 0.0;
  TORCH_ARG(double, lambda_min) = -1.0;
  /// Epochs over which lambda moves (the official decay_loops).
  TORCH_ARG(int64_t, lambda_epochs) = 5;
  TORCH_ARG(CTKDSchedule, schedule) = CTKDSchedule::cosine;
  /// Logit standardisation of both inputs first (docs/methods.md).
  TORCH_ARG(bool, standardize) = false;
};

/// The gradient multiplier at (1-based) `epoch`, as the official schedules compute it:
///   cosine: i = clamp(epoch, 0, L), lambda = (cos(i pi / L) + 1) / 2 * (max - min) + min;
///   linear: i = clamp(epoch, 0, L - 1), lambda = -i (max - min) / L (the official linear
///   schedule ignores lambda_max as an offset; kept as it is).
inline double ctkd_lambda(const CTKDOptions& o, int64_t epoch) {
  const auto loops = static_cast<double>(o.lambda_epochs());
  const double i = std::max<double>(0, static_cast<double>(epoch));
  if (o.schedule() == CTKDSchedule::cosine) {
    const double k = std::min(i, loops);
    return (std::cos(k * M_PI / loops) + 1.0) * 0.5 * (o.lambda_max() - o.lambda_min()) + o.lambda_min();
  }
  return -std::min(i, loops - 1) * (o.lambda_max() - o.lambda_min()) / loops;
}

namespace detail {
inline void check_options(const CTKDOptions& o) {
  constexpr const char* kLoss = "CTKDLoss";
  check_scale(kLoss, "t_start", o.t_start());
  if (!(o.t_end() >= 0 && o.t_end() <= 1e6)) fail(kLoss, ": t_end must be in [0, 1e6], got ", o.t_end());
  for (double v : {o.lambda_max(), o.lambda_min()})
    if (!std::isfinite(v) || std::abs(v) > 1e6) fail(kLoss, ": lambda_max and lambda_min must be finite, got ", v);
  if (o.lambda_epochs() < 1) fail(kLoss, ": lambda_epochs must be >= 1, got ", o.lambda_epochs());
}

/// Identity forward; backward multiplies the gradient by lambda (negative: reversed).
struct GradientReversal : public torch::autograd::Function<GradientReversal> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, double lambda) {
    ctx->saved_data["lambda"] = lambda;
    return x.clone();
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                                torch::autograd::tensor_list grads) {
    return {grads[0] * ctx->saved_data["lambda"].toDouble(), torch::Tensor()};
  }
};
}  // namespace detail

namespace functional {

/// x in the forward pass; lambda * (incoming gradient) in the backward pass.
inline torch::Tensor gradient_reversal(const torch::Tensor& x, double lambda) {
  return detail::GradientReversal::apply(x, lambda);
}

/// KD at a temperature that is a tensor (one element) and receives a gradient:
///   T^2 / N * sum_{n,c} p_t (log p_t - log softmax(z_s / T)), p_t = softmax(z_t / T).
/// No gradient reaches the teacher's logits.
///
///   auto loss = distill::functional::kd_loss_at(student_logits, teacher_logits, temperature);
inline torch::Tensor kd_loss_at(const torch::Tensor& student, const torch::Tensor& teacher,
                                const torch::Tensor& temperature) {
  constexpr const char* kLoss = "kd_loss_at";
  detail::check_logits(kLoss, "student", student);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  detail::check_floating(kLoss, "temperature", temperature);
  if (temperature.numel() != 1) fail(kLoss, ": 'temperature' must hold one value, got ", detail::describe(temperature));
  auto zs = detail::compute(student), zt = detail::compute(teacher).detach();
  auto t = temperature.reshape({}).to(zs.scalar_type());
  auto log_pt = torch::log_softmax(zt / t, 1);
  auto log_ps = torch::log_softmax(zs / t, 1);
  // log_softmax of finite logits is finite, so p_t = 0 contributes 0 (no 0 * inf).
  return (log_pt.exp() * (log_pt - log_ps)).sum() / static_cast<double>(zs.size(0)) * t * t;
}

}  // namespace functional

/// CTKD: kd_loss_at with temperature t_start + t_end * sigmoid(GRL(theta, lambda)), theta a
/// parameter (initially 1) that must reach the optimizer. lambda follows the schedule by
/// epoch: the trainer calls set_epoch(e) at the start of every epoch (1-based); before any
/// call it is the value at epoch 1.
///
///   distill::CTKDLoss ctkd(distill::CTKDOptions());
///   optimizer.add_param_group({ctkd->parameters()});
///   ctkd->set_epoch(epoch);
///   auto loss = ctkd(student_logits, teacher_logits);
class CTKDLossImpl : public torch::nn::Cloneable<CTKDLossImpl> {
 public:
  explicit CTKDLossImpl(CTKDOptions options = {}) : options(std::move(options)) { reset(); }

  void reset() override {
    detail::check_options(options);
    theta = register_parameter("global_t", torch::ones({1}));
    lambda = ctkd_lambda(options, 1);
  }

  void set_epoch(int64_t epoch) { lambda = ctkd_lambda(options, epoch); }

  /// The temperature the next forward uses (no gradient).
  double temperature() const {
    return options.t_start() + options.t_end() * torch::sigmoid(theta.detach()).item<double>();
  }

  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    constexpr const char* kLoss = "CTKDLoss";
    detail::check_logits(kLoss, "student", student);
    if (options.standardize()) detail::check_standardize(kLoss, student, teacher);
    detail::check_same(kLoss, "student", student, "teacher", teacher);
    auto zs = detail::compute(student), zt = detail::compute(teacher);
    detail::check_parameters_match(kLoss, *this, zs);
    if (options.standardize()) zs = detail::standardize(zs), zt = detail::standardize(zt);
    auto t = options.t_start() + options.t_end() * torch::sigmoid(functional::gradient_reversal(theta, lambda));
    return functional::kd_loss_at(zs, zt, t);
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "distill::CTKDLoss(temperature=" << temperature() << ", lambda=" << lambda << ")";
  }

  CTKDOptions options;
  torch::Tensor theta;
  double lambda = 0;
};
TORCH_MODULE(CTKDLoss);

/// Recipe keys of CTKDLoss (its wrapper's terms: "loss_ctkd_<A>_<B>"): t_start, t_end,
/// lambda_max, lambda_min, lambda_epochs, schedule ("cosine" or "linear"), standardize.
inline void describe(Schema& s, CTKDOptions& o) {
  s.field("t_start", o.t_start());
  s.field("t_end", o.t_end());
  s.field("lambda_max", o.lambda_max());
  s.field("lambda_min", o.lambda_min());
  s.field("lambda_epochs", o.lambda_epochs());
  s.choice("schedule", o.schedule(), {{"cosine", CTKDSchedule::cosine}, {"linear", CTKDSchedule::linear}});
  s.field("standardize", o.standardize());
}
namespace detail {
inline const bool ctkd_registered =
    register_loss<CTKDLoss>("CTKDLoss", CTKDOptions(), LossTraits{"loss_ctkd"}.from_cache(CachedTeacher::dense));
}

}  // namespace distill
