#pragma once
// Elementwise distance between two tensors of equal shape, e.g. feature maps (docs/reference.md §2.4).

#include "distill/losses/common.hpp"
#include "distill/losses/rows.hpp"

namespace distill {

/// The distance of distance_loss: absolute error, squared error, or Huber with delta 1.
enum class DistanceMode { l1, l2, smooth_l1 };

/// "l1", "l2" or "smooth_l1", as recipes write it.
inline const char* to_string(DistanceMode mode) {
  return mode == DistanceMode::l1 ? "l1" : mode == DistanceMode::l2 ? "l2" : "smooth_l1";
}

/// Options of distance_loss / DistanceLoss.
struct DistanceOptions {
  TORCH_ARG(DistanceMode, mode) = DistanceMode::l2;
};

namespace detail {

/// Distances with the gradient formed in the forward pass: one difference buffer d = s - t
/// (plus a warm scratch buffer for smooth_l1), the loss from norms of it, and
/// d loss / d s = -d loss / d t = g(d) / M with g = 2 d (l2), sign(d) (l1), clamp(d, -1, 1)
/// (smooth_l1).
struct DistanceFunction : public FusedFunction<DistanceFunction, 4> {
  static constexpr const char* kLoss = "distance_loss";
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, int64_t mode, int64_t wanted) {
    // `mode` travels as an integer (Function::apply takes only tensors and scalars): 2 l2, 1 l1, 0 smooth_l1.
    const double m = static_cast<double>(student.numel());
    auto d = student - teacher;
    torch::Tensor loss;
    // Sums, not norms: ATen's float32 norm accumulates less exactly than its sum.
    if (mode == 2) {  // l2
      auto squares = scratch(0, d);
      loss = torch::mul_out(squares, d, d).sum() / m;
      d.mul_(2.0 / m);
    } else if (mode == 1) {  // l1
      auto magnitudes = scratch(0, d);
      loss = torch::abs_out(magnitudes, d).sum() / m;
      d.sign_().div_(m);
    } else {  // smooth_l1: huber(d) = c (d - c / 2) with c = clamp(d, -1, 1)
      auto c = scratch(0, d);
      torch::clamp_out(c, d, -1, 1);
      loss = d.sub_(c, 0.5).mul_(c).sum() / m;
      d.copy_(c).div_(m);
    }
    // The teacher's gradient is -d: a new tensor when the student keeps d, else d itself negated.
    torch::Tensor grad_s = wanted & 1 ? d : torch::Tensor(), grad_t;
    if (wanted & 2) grad_t = grad_s.defined() ? -d : d.neg_();
    keep_gradients(ctx, grad_s, grad_t);
    return loss;
  }
};

}  // namespace detail

namespace functional {

/// Mean over all elements of |d|, d^2 or Huber(d) with d = student - teacher.
/// Gradient reaches both inputs. Any shape, but both shapes must be equal. Computed by a
/// fused function (detail::DistanceFunction).
///
///   auto loss = distill::functional::distance_loss(student_map, teacher_map,
///                                                  distill::DistanceOptions().mode(distill::DistanceMode::l2));
inline torch::Tensor distance_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                                   const DistanceOptions& options = {}) {
  constexpr const char* kLoss = "distance_loss";
  detail::check_floating(kLoss, "student", student);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  if (student.numel() == 0) fail(kLoss, ": 'student' is empty: ", detail::describe(student));
  const int64_t mode = options.mode() == DistanceMode::l2 ? 2 : options.mode() == DistanceMode::l1 ? 1 : 0;
  auto zs = detail::compute(student), zt = detail::compute(teacher);
  return detail::DistanceFunction::apply(zs, zt, mode, detail::wanted_gradients(zs, zt));
}

}  // namespace functional

/// Module form of functional::distance_loss.
///
///   distill::DistanceLoss l2(distill::DistanceOptions().mode(distill::DistanceMode::l2));
///   auto loss = l2(student_map, teacher_map);
class DistanceLossImpl : public detail::LossModule<DistanceLossImpl> {
 public:
  static constexpr const char* kName = "DistanceLoss";
  explicit DistanceLossImpl(DistanceOptions options = {}) : options(std::move(options)) {}
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    return functional::distance_loss(student, teacher, options);
  }
  DistanceOptions options;
};
TORCH_MODULE(DistanceLoss);

/// Recipe keys of DistanceLoss: mode ("l1", "l2", "smooth_l1"). Its wrapper
/// "DistillationDistanceLoss" names terms "loss_<mode>_<A>_<B>" and accepts `act`.
inline void describe(Schema& s, DistanceOptions& o) {
  s.choice("mode", o.mode(), {{"l1", DistanceMode::l1}, {"l2", DistanceMode::l2}, {"smooth_l1", DistanceMode::smooth_l1}});
}
namespace detail {
inline const bool distance_registered = register_loss<DistanceLoss>(
    "DistanceLoss", DistanceOptions(), LossTraits{"", false, /*wrapper_act=*/true},
    std::function<std::string(const DistanceOptions&)>([](const DistanceOptions& o) { return std::string("loss_") + to_string(o.mode()); }));
}

}  // namespace distill
