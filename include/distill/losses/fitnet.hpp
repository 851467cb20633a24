#pragma once
// FitNets: a student feature map regressed onto the teacher's "hint" through a trained
// connector (Romero et al., ICLR 2015; mdistiller's form, docs/methods.md).

#include <vector>

#include "distill/losses/common.hpp"

namespace distill {

/// Options of FitNetLoss: the [C, H, W] shapes of the student and teacher maps, and whether
/// the connector ends in a ReLU (mdistiller's default: yes).
struct FitNetOptions {
  FitNetOptions(std::vector<int64_t> student_shape, std::vector<int64_t> teacher_shape)
      : student_shape_(std::move(student_shape)), teacher_shape_(std::move(teacher_shape)) {}
  TORCH_ARG(std::vector<int64_t>, student_shape);
  TORCH_ARG(std::vector<int64_t>, teacher_shape);
  TORCH_ARG(bool, relu) = true;
};

/// mean((connector(f_s) - f_t)^2) over all elements, where the connector (mdistiller's
/// ConvReg, trained with the student) maps [C_s, H_s, W_s] to [C_t, H_t, W_t]:
/// - H_s = 2 H_t: conv 3x3, stride 2, padding 1;
/// - 2 H_s = H_t: transposed conv 4x4, stride 2, padding 1;
/// - H_s >= H_t: conv of kernel (1 + H_s - H_t, 1 + W_s - W_t);
/// then BatchNorm and (with `relu`) ReLU. Its parameters must reach the optimizer.
///
///   distill::FitNetLoss hint(distill::FitNetOptions({128, 28, 28}, {128, 28, 28}));
///   auto loss = hint(student_map, teacher_map);
///   optimizer.add_param_group({hint->parameters()});
class FitNetLossImpl : public torch::nn::Cloneable<FitNetLossImpl> {
 public:
  explicit FitNetLossImpl(FitNetOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    constexpr const char* kLoss = "FitNetLoss";
    namespace nn = torch::nn;
    const auto& s = options.student_shape();
    const auto& t = options.teacher_shape();
    if (s.size() != 3 || t.size() != 3)
      fail(kLoss, ": student_shape and teacher_shape must be [C, H, W], got ", torch::IntArrayRef(s), " and ",
           torch::IntArrayRef(t));
    for (int64_t size : s) check_size(kLoss, "a student_shape size", size);
    for (int64_t size : t) check_size(kLoss, "a teacher_shape size", size);
    check_parameters(kLoss, 16.0 * s[0] * t[0] + 1.0 * s[0] * t[0] * (1 + s[1] - t[1]) * (1 + s[2] - t[2]));
    if (s[1] == 2 * t[1]) {
      conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(s[0], t[0], 3).stride(2).padding(1)));
    } else if (2 * s[1] == t[1]) {
      conv = register_module("conv", nn::ConvTranspose2d(nn::ConvTranspose2dOptions(s[0], t[0], 4).stride(2).padding(1)));
    } else if (s[1] >= t[1] && s[2] >= t[2]) {
      conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(s[0], t[0], {1 + s[1] - t[1], 1 + s[2] - t[2]})));
    } else {
      fail(kLoss, ": no connector from a student map ", torch::IntArrayRef(s), " to a teacher map ", torch::IntArrayRef(t),
           " (the student's map must be as large as the teacher's, twice as large or half as large)");
    }
    bn = register_module("bn", nn::BatchNorm2d(t[0]));
  }

  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    constexpr const char* kLoss = "FitNetLoss";
    detail::check_rank(kLoss, "student", student, 4, "[N, C, H, W]");
    detail::check_rank(kLoss, "teacher", teacher, 4, "[N, C, H, W]");
    detail::check_same_kind(kLoss, "student", student, "teacher", teacher);
    const auto& s = options.student_shape();
    const auto& t = options.teacher_shape();
    if (student.sizes().slice(1) != torch::IntArrayRef(s) || teacher.sizes().slice(1) != torch::IntArrayRef(t) ||
        student.size(0) != teacher.size(0))
      fail(kLoss, ": expected student [N, ", torch::IntArrayRef(s), "] and teacher [N, ", torch::IntArrayRef(t),
           "] (the shapes given to FitNetOptions), got ", student.sizes(), " and ", teacher.sizes());
    auto fs = detail::compute(student), ft = detail::compute(teacher);
    detail::check_parameters_match(kLoss, *this, fs);
    auto x = bn->forward(conv.forward(fs));
    if (options.relu()) x = torch::relu(x);
    return (x - ft).square().mean();
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "distill::FitNetLoss(student=" << torch::IntArrayRef(options.student_shape())
           << ", teacher=" << torch::IntArrayRef(options.teacher_shape()) << ")";
  }

  FitNetOptions options;
  torch::nn::AnyModule conv;
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(FitNetLoss);

/// Recipe keys of FitNetLoss (its wrapper's terms: "loss_fitnet_<A>_<B>_<keys>"):
/// student_shape and teacher_shape ([C, H, W], required), relu.
inline void describe(Schema& s, FitNetOptions& o) {
  s.required("student_shape", o.student_shape());
  s.required("teacher_shape", o.teacher_shape());
  s.field("relu", o.relu());
}
namespace detail {
inline const bool fitnet_registered =
    register_loss<FitNetLoss>("FitNetLoss", FitNetOptions({}, {}), LossTraits{"loss_fitnet"});
}

}  // namespace distill
