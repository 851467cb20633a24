#pragma once
// PEFD: an ensemble of projectors maps student features onto teacher features, compared by
// cosine similarity (docs/reference.md §2.11).

#include "distill/losses/common.hpp"

namespace distill {

/// How PEFD makes one vector per sample: `flatten` the features (so C*H*W must equal the
/// channel counts) or `gap`, global average pooling of [N, C, H, W] maps.
enum class PEFDMode { flatten, gap };

/// Options of PEFDLoss.
struct PEFDOptions {
  PEFDOptions(int64_t student_channels, int64_t teacher_channels)
      : student_channels_(student_channels), teacher_channels_(teacher_channels) {}
  TORCH_ARG(int64_t, student_channels);
  TORCH_ARG(int64_t, teacher_channels);
  TORCH_ARG(int64_t, num_projectors) = 3;
  TORCH_ARG(PEFDMode, mode) = PEFDMode::flatten;
};

/// mean_n(1 - cos(f_s, f_t)) with f_s = mean_i ReLU(W_i x_s + b_i) over num_projectors
/// Linear(student_channels -> teacher_channels) projectors (Xavier-uniform weights, zero
/// biases). The reference normalises without epsilon (docs/reference.md §7.9, NaN for an all-zero
/// projection); here an all-zero row has cosine 0 and a finite gradient, otherwise values are
/// identical. Gradient reaches both inputs; the projectors must reach the optimizer.
///
///   distill::PEFDLoss pefd(distill::PEFDOptions(512, 512));
///   auto loss = pefd(student_pooled, teacher_pooled);   // e.g. [N, 512, 1, 1] "avg_pool"
class PEFDLossImpl : public torch::nn::Cloneable<PEFDLossImpl> {
 public:
  explicit PEFDLossImpl(PEFDOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    constexpr const char* kLoss = "PEFDLoss";
    if (options.student_channels() < 1 || options.teacher_channels() < 1 || options.num_projectors() < 1)
      fail(kLoss, ": student_channels, teacher_channels and num_projectors must be "
                          "positive, got ", options.student_channels(), ", ",
                   options.teacher_channels(), " and ", options.num_projectors());
    namespace nn = torch::nn;
    projectors = register_module("projectors", nn::ModuleList());
    torch::NoGradGuard no_grad;
    for (int64_t i = 0; i < options.num_projectors(); ++i) {
      nn::Linear linear(options.student_channels(), options.teacher_channels());
      nn::init::xavier_uniform_(linear->weight);
      linear->bias.zero_();
      projectors->push_back(linear);
    }
  }

  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    constexpr const char* kLoss = "PEFDLoss";
    detail::check_floating(kLoss, "student", student);
    detail::check_same_kind(kLoss, "student", student, "teacher", teacher);
    const bool gap = options.mode() == PEFDMode::gap;
    const char* mode = gap ? "gap" : "flatten";
    auto flatten = [&](const char* arg, const torch::Tensor& x, int64_t channels) {
      if (gap ? x.dim() != 4 : x.dim() < 2)
        fail(kLoss, ": '", arg, "' must be ", gap ? "[N, C, H, W]" : "[N, ...]",
                     " in mode '", mode, "', got ", detail::describe(x));
      auto y = detail::compute(x);
      y = (gap ? y.mean({2, 3}) : y.flatten(1));
      if (y.size(1) != channels)
        fail(kLoss, ": '", arg, "' ", x.sizes(), " gives ", y.size(1),
                     " features per sample in mode '", mode, "', expected ", channels);
      return y;
    };
    auto fs = flatten("student", student, options.student_channels());
    auto ft = flatten("teacher", teacher, options.teacher_channels());
    if (fs.size(0) != ft.size(0))
      fail(kLoss, ": batch sizes differ: student ", student.sizes(), ", teacher ", teacher.sizes());
    detail::check_parameters_match(kLoss, *this, fs);
    torch::Tensor projected;
    for (const auto& p : *projectors) {
      auto y = torch::relu(p->as<torch::nn::Linear>()->forward(fs));
      projected = projected.defined() ? projected + y : y;
    }
    projected = projected / static_cast<double>(options.num_projectors());
    auto cosine = (detail::safe_normalize(projected, 1) * detail::safe_normalize(ft, 1)).sum(1);
    return (1 - cosine).mean();
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "distill::PEFDLoss(student_channels=" << options.student_channels()
           << ", teacher_channels=" << options.teacher_channels()
           << ", num_projectors=" << options.num_projectors()
           << ", mode=" << (options.mode() == PEFDMode::gap ? "gap" : "flatten") << ")";
  }

  PEFDOptions options;
  torch::nn::ModuleList projectors{nullptr};
};
TORCH_MODULE(PEFDLoss);

/// Recipe keys of PEFDLoss, as the reference spells them (its wrapper's terms:
/// "loss_pefd_<A>_<B>_<keys>"): student_channel and teacher_channel (required),
/// num_projectors, mode ("flatten" or "gap").
inline void describe(Schema& s, PEFDOptions& o) {
  s.required("student_channel", o.student_channels());
  s.required("teacher_channel", o.teacher_channels());
  s.field("num_projectors", o.num_projectors());
  s.choice("mode", o.mode(), {{"flatten", PEFDMode::flatten}, {"gap", PEFDMode::gap}});
}
namespace detail {
inline const bool pefd_registered = register_loss<PEFDLoss>("PEFDLoss", PEFDOptions(0, 0), LossTraits{"loss_pefd"});
}

}  // namespace distill
