#pragma once
// ReviewKD: "Distilling Knowledge via Knowledge Review" (Chen et al., CVPR 2021; mdistiller's
// form of the official code, docs/methods.md). The student's features from deep to shallow
// are fused by attention-based fusion (ABF) modules, each level guided by the deeper ones,
// and every fused level is matched to the teacher's level by the hierarchical context loss.

#include <algorithm>
#include <vector>

#include "distill/losses/common.hpp"

namespace distill {

namespace functional {

/// The hierarchical context loss over levels (each [N, C, H, W], student and teacher of one
/// shape per level): per level, mse(f_s, f_t) plus, for l in 4, 2, 1 with l < H, the mse of
/// both average-pooled to l x l with weights 1/2, 1/4, 1/8, divided by the sum of the weights
/// used; summed over levels. No gradient reaches the teacher.
///
///   auto loss = distill::functional::hcl_loss(fused_student_levels, teacher_levels);
inline torch::Tensor hcl_loss(const std::vector<torch::Tensor>& students, const std::vector<torch::Tensor>& teachers) {
  constexpr const char* kLoss = "hcl_loss";
  if (students.empty() || students.size() != teachers.size())
    fail(kLoss, ": ", students.size(), " student levels and ", teachers.size(), " teacher levels; they pair up one to one");
  torch::Tensor total;
  for (size_t i = 0; i < students.size(); ++i) {
    const auto s_name = concat("students[", i, "]"), t_name = concat("teachers[", i, "]");
    detail::check_rank(kLoss, s_name, students[i], 4, "[N, C, H, W]");
    detail::check_same(kLoss, s_name, students[i], t_name, teachers[i]);
    auto fs = detail::compute(students[i]), ft = detail::compute(teachers[i]).detach();
    auto loss = (fs - ft).square().mean();
    double weight = 1.0, sum = 1.0;
    for (int64_t l : {4, 2, 1}) {
      if (l >= fs.size(2)) continue;
      weight /= 2.0;
      loss = loss + (torch::adaptive_avg_pool2d(fs, {l, l}) - torch::adaptive_avg_pool2d(ft, {l, l})).square().mean() * weight;
      sum += weight;
    }
    loss = loss / sum;
    total = total.defined() ? total + loss : loss;
  }
  return total;
}

}  // namespace functional

/// Options of ReviewKDLoss: the channels of the student's levels (shallow to deep, the last
/// usually the pooled feature [N, C, 1, 1]) and of the teacher's, and the warm-up: the loss is
/// scaled by min(epoch / warmup_epochs, 1) (mdistiller: 1 epoch, i.e. no scaling from epoch 1).
struct ReviewKDOptions {
  ReviewKDOptions(std::vector<int64_t> student_channels, std::vector<int64_t> teacher_channels)
      : student_channels_(std::move(student_channels)), teacher_channels_(std::move(teacher_channels)) {}
  TORCH_ARG(std::vector<int64_t>, student_channels);
  TORCH_ARG(std::vector<int64_t>, teacher_channels);
  TORCH_ARG(double, warmup_epochs) = 1.0;
};

/// ReviewKD's loss: hcl_loss(ABF-fused student levels, teacher levels). ABF i (one per level,
/// mid = min(512, deepest student channels)): conv1 = conv 1x1 + BN to mid; for every level but
/// the deepest, the deeper level's mid features y are resized (nearest) to this level's size and
/// fused, x * a_0 + y * a_1 with [a_0, a_1] = sigmoid(conv 1x1 of [x, y]); the result is
/// resized (nearest) to the teacher level's size when they differ, passed down to the next
/// shallower level, and conv2 = conv 3x3 + BN to the teacher's channels gives the level's
/// output. Its parameters must reach the optimizer.
///
///   distill::ReviewKDLoss review(distill::ReviewKDOptions({64, 128, 256, 512, 512}, {64, 128, 256, 512, 512}));
///   auto loss = review(student_levels, teacher_levels);
class ReviewKDLossImpl : public torch::nn::Cloneable<ReviewKDLossImpl> {
 public:
  explicit ReviewKDLossImpl(ReviewKDOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    constexpr const char* kLoss = "ReviewKDLoss";
    namespace nn = torch::nn;
    const auto& s = options.student_channels();
    const auto& t = options.teacher_channels();
    if (s.empty() || s.size() != t.size())
      fail(kLoss, ": student_channels and teacher_channels must list the same number (>= 1) of levels, got ", s.size(),
           " and ", t.size());
    for (int64_t c : s) check_size(kLoss, "a student channel count", c);
    for (int64_t c : t) check_size(kLoss, "a teacher channel count", c);
    if (!(options.warmup_epochs() > 0)) fail(kLoss, ": warmup_epochs must be > 0, got ", options.warmup_epochs());
    const int64_t mid = std::min<int64_t>(512, s.back());
    double count = 0;
    for (size_t i = 0; i < s.size(); ++i) count += 1.0 * s[i] * mid + 9.0 * mid * t[i] + 2.0 * mid;
    check_parameters(kLoss, count);
    abfs = register_module("abfs", nn::ModuleList());
    for (size_t i = 0; i < s.size(); ++i) {
      auto abf = std::make_shared<nn::Module>();
      nn::Conv2d c1(nn::Conv2dOptions(s[i], mid, 1).bias(false)), c2(nn::Conv2dOptions(mid, t[i], 3).padding(1).bias(false));
      {
        torch::NoGradGuard no_grad;
        nn::init::kaiming_uniform_(c1->weight, 1);
        nn::init::kaiming_uniform_(c2->weight, 1);
      }
      abf->register_module("conv1", nn::Sequential(c1, nn::BatchNorm2d(mid)));
      abf->register_module("conv2", nn::Sequential(c2, nn::BatchNorm2d(t[i])));
      if (i + 1 < s.size()) abf->register_module("att_conv", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(2 * mid, 2, 1)), nn::Sigmoid()));
      abfs->push_back(abf);
    }
    scale = 1.0;
  }

  /// The warm-up factor for `epoch` (1-based); the trainer calls it every epoch.
  void set_epoch(int64_t epoch) { scale = std::min(static_cast<double>(epoch) / options.warmup_epochs(), 1.0); }

  torch::Tensor forward(const std::vector<torch::Tensor>& students, const std::vector<torch::Tensor>& teachers) {
    constexpr const char* kLoss = "ReviewKDLoss";
    const size_t n = abfs->size();
    if (students.size() != n || teachers.size() != n)
      fail(kLoss, ": expected ", n, " student and teacher levels, got ", students.size(), " and ", teachers.size());
    for (size_t i = 0; i < n; ++i) {
      detail::check_rank(kLoss, concat("students[", i, "]"), students[i], 4, "[N, C, H, W]");
      detail::check_rank(kLoss, concat("teachers[", i, "]"), teachers[i], 4, "[N, C, H, W]");
      if (students[i].size(1) != options.student_channels()[i] || teachers[i].size(1) != options.teacher_channels()[i])
        fail(kLoss, ": level ", i, " has student ", students[i].sizes(), " and teacher ", teachers[i].sizes(), "; expected ",
             options.student_channels()[i], " and ", options.teacher_channels()[i], " channels");
    }
    auto sequential = [](const std::shared_ptr<torch::nn::Module>& abf, const char* name) {
      return abf->named_children()[name]->as<torch::nn::SequentialImpl>();
    };
    std::vector<torch::Tensor> fused(n);
    torch::Tensor residual;
    for (size_t k = n; k-- > 0;) {  // deepest first
      auto abf = abfs[k];
      auto x = detail::compute(students[k]);
      detail::check_parameters_match(kLoss, *this, x);
      x = sequential(abf, "conv1")->forward(x);
      if (residual.defined()) {
        const int64_t h = x.size(2), w = x.size(3);
        auto y = torch::upsample_nearest2d(residual, {h, w});
        auto a = sequential(abf, "att_conv")->forward(torch::cat({x, y}, 1));
        x = x * a.narrow(1, 0, 1) + y * a.narrow(1, 1, 1);
      }
      const auto& t = teachers[k];
      if (x.size(2) != t.size(2) || x.size(3) != t.size(3)) x = torch::upsample_nearest2d(x, {t.size(2), t.size(3)});
      fused[k] = sequential(abf, "conv2")->forward(x);
      residual = x;
    }
    auto loss = with_context(kLoss, [&] { return functional::hcl_loss(fused, teachers); });
    return scale == 1.0 ? loss : loss * scale;
  }

  void pretty_print(std::ostream& stream) const override { stream << "distill::ReviewKDLoss(levels=" << abfs->size() << ")"; }

  ReviewKDOptions options;
  torch::nn::ModuleList abfs{nullptr};
  double scale = 1.0;
};
TORCH_MODULE(ReviewKDLoss);

}  // namespace distill
