#pragma once
// Elementwise distance between two tensors of equal shape, e.g. feature maps (reference 2.4).

#include "distill/losses/common.hpp"

namespace distill {

/// Options of distance_loss / DistanceLoss. `mode`: "l1", "l2" (squared error) or
/// "smooth_l1" (Huber with delta 1).
struct DistanceOptions {
  TORCH_ARG(std::string, mode) = "l2";
};

namespace detail {
/// Checks DistanceOptions once, for the functional form and when a module is built.
inline void check_options(const DistanceOptions& options) {
  constexpr const char* kLoss = "distance_loss";
  detail::check_choice(kLoss, "mode", options.mode(), {"l1", "l2", "smooth_l1"});
}
}  // namespace detail

namespace functional {

/// Mean over all elements of |d|, d^2 or Huber(d) with d = student - teacher.
/// Gradient reaches both inputs. Any shape, but both shapes must be equal.
///
///   auto loss = distill::functional::distance_loss(student_map, teacher_map,
///                                                  distill::DistanceOptions().mode("l2"));
inline torch::Tensor distance_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                                   const DistanceOptions& options = {}) {
  constexpr const char* kLoss = "distance_loss";
  detail::check_options(options);
  detail::check_floating(kLoss, "student", student);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  if (student.numel() == 0) detail::fail(kLoss, ": 'student' is empty: ", detail::describe(student));
  auto d = detail::compute(student) - detail::compute(teacher);
  if (options.mode() == "l1") return d.abs().mean();
  if (options.mode() == "l2") return d.square().mean();
  auto a = d.abs();
  return torch::where(a < 1, 0.5 * d.square(), a - 0.5).mean();
}

}  // namespace functional

/// Module form of functional::distance_loss.
///
///   distill::DistanceLoss l2(distill::DistanceOptions().mode("l2"));
///   auto loss = l2(student_map, teacher_map);
class DistanceLossImpl : public detail::LossModule<DistanceLossImpl> {
 public:
  static constexpr const char* kName = "DistanceLoss";
  explicit DistanceLossImpl(DistanceOptions options = {}) : options(std::move(options)) {
    detail::check_options(this->options);
  }
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    return functional::distance_loss(student, teacher, options);
  }
  DistanceOptions options;
};
TORCH_MODULE(DistanceLoss);

}  // namespace distill
