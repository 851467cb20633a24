#pragma once
// Masked generative distillation: regenerate the teacher's feature map from a randomly
// channel-masked student map (docs/reference.md §2.10).

#include "distill/losses/common.hpp"

namespace distill {

/// Options of MGDLoss: channel counts of the student and teacher maps, the loss weight
/// alpha_mgd and the channel drop probability lambda_mgd (reference defaults).
struct MGDOptions {
  MGDOptions(int64_t student_channels, int64_t teacher_channels)
      : student_channels_(student_channels), teacher_channels_(teacher_channels) {}
  TORCH_ARG(int64_t, student_channels);
  TORCH_ARG(int64_t, teacher_channels);
  TORCH_ARG(double, alpha_mgd) = 1.756;
  TORCH_ARG(double, lambda_mgd) = 0.15;
};

/// alpha_mgd * mean((generation(align(f_s) * M) - f_t)^2) over all elements, where M drops
/// whole channels per sample with probability lambda_mgd (M = 0 where u < lambda_mgd for
/// u ~ U[0, 1) drawn in float32 from the global generator at every call; kept channels are
/// not rescaled), `align` is a 1x1 conv present only when the
/// channel counts differ and `generation` is conv3x3 -> ReLU -> conv3x3. Its parameters must
/// reach the optimizer. Feature maps are [N, C, H, W] with equal N, H, W.
///
///   distill::MGDLoss mgd(distill::MGDOptions(512, 512));
///   auto loss = mgd(student_map, teacher_map);
///   optimizer.add_param_group({mgd->parameters()});
class MGDLossImpl : public torch::nn::Cloneable<MGDLossImpl> {
 public:
  explicit MGDLossImpl(MGDOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    constexpr const char* kLoss = "MGDLoss";
    check_size(kLoss, "student_channels", options.student_channels());
    check_size(kLoss, "teacher_channels", options.teacher_channels());
    // the generation block: two 3x3 convolutions of teacher_channels, and the 1x1 alignment
    check_parameters(kLoss, 18.0 * options.teacher_channels() * options.teacher_channels() +
                                1.0 * options.student_channels() * options.teacher_channels());
    if (!(options.lambda_mgd() >= 0 && options.lambda_mgd() <= 1))
      fail(kLoss, ": lambda_mgd must be in [0, 1], got ", options.lambda_mgd());
    detail::check_weight(kLoss, "alpha_mgd", options.alpha_mgd());
    namespace nn = torch::nn;
    const int64_t c = options.teacher_channels();
    align = nullptr;
    if (options.student_channels() != c)
      align = register_module("align", nn::Conv2d(nn::Conv2dOptions(options.student_channels(), c, 1)));
    generation = register_module(
        "generation", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(c, c, 3).padding(1)), nn::ReLU(),
                                     nn::Conv2d(nn::Conv2dOptions(c, c, 3).padding(1))));
    // Reference init: Kaiming-normal (fan_out, ReLU gain) weights, zero biases.
    torch::NoGradGuard no_grad;
    for (auto& p : named_parameters()) {
      if (p.key().find("weight") != std::string::npos)
        nn::init::kaiming_normal_(p.value(), 0, torch::kFanOut, torch::kReLU);
      else
        p.value().zero_();
    }
  }

  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    constexpr const char* kLoss = "MGDLoss";
    detail::check_rank(kLoss, "student", student, 4, "[N, C, H, W]");
    detail::check_rank(kLoss, "teacher", teacher, 4, "[N, C, H, W]");
    detail::check_same_kind(kLoss, "student", student, "teacher", teacher);
    const auto& s = student.sizes();
    const auto& t = teacher.sizes();
    if (s[1] != options.student_channels() || t[1] != options.teacher_channels() || s[0] != t[0] ||
        s[2] != t[2] || s[3] != t[3])
      fail(kLoss, ": expected student [N, ", options.student_channels(),
                   ", H, W] and teacher [N, ", options.teacher_channels(), ", H, W], got ", s,
                   " and ", t);
    auto fs = detail::compute(student), ft = detail::compute(teacher);
    detail::check_parameters_match(kLoss, *this, fs);
    if (align) fs = align->forward(fs);
    // Drawn in float32 whatever the compute dtype, so a seed gives the same mask in float32,
    // float64 and mixed-precision runs.
    auto draw = torch::rand({s[0], t[1], 1, 1}, fs.options().dtype(torch::kFloat));
    auto mask = (draw >= options.lambda_mgd()).to(fs.scalar_type());
    return options.alpha_mgd() * (generation->forward(fs * mask) - ft).square().mean();
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "distill::MGDLoss(student_channels=" << options.student_channels()
           << ", teacher_channels=" << options.teacher_channels() << ")";
  }

  MGDOptions options;
  torch::nn::Conv2d align{nullptr};
  torch::nn::Sequential generation{nullptr};
};
TORCH_MODULE(MGDLoss);

/// Recipe keys of MGDLoss (its wrapper's terms: "loss_mgd_<A>_<B>_<keys>"): student_channels
/// and teacher_channels (required), alpha_mgd, lambda_mgd.
inline void describe(Schema& s, MGDOptions& o) {
  s.required("student_channels", o.student_channels());
  s.required("teacher_channels", o.teacher_channels());
  s.field("alpha_mgd", o.alpha_mgd());
  s.field("lambda_mgd", o.lambda_mgd());
}
namespace detail {
inline const bool mgd_registered = register_loss<MGDLoss>("MGDLoss", MGDOptions(0, 0), LossTraits{"loss_mgd"});
}

}  // namespace distill
