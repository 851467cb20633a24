#pragma once
// OFD: "A Comprehensive Overhaul of Feature Distillation" (Heo et al., ICCV 2019;
// docs/methods.md). The student's pre-ReLU features, through a 1x1 conv + BN connector, match
// the teacher's pre-ReLU features where it matters: a partial L2 that ignores positions where
// both are below the teacher's margin. The pre-ReLU taps and the margins' batch norms come
// from the backbones (compose layer: "<block>:pre_relu" patterns).

#include <cmath>
#include <vector>

#include "distill/losses/common.hpp"

namespace distill {

namespace functional {

/// OFD's margin per channel from the batch norm before the teacher's ReLU (scale gamma,
/// shift beta): the mean of N(beta, gamma^2) below zero,
///   m = beta - |gamma| phi(beta / |gamma|) / Phi(-beta / |gamma|)   where Phi(-beta/|gamma|) > 0.001,
///   m = -3 |gamma|                                                   otherwise,
/// as the official get_margin_from_BN (a channel with gamma = 0 gets min(beta, 0)). Computed in
/// float64; returned as [C] in `weight`'s dtype, without gradient.
///
///   auto margin = distill::functional::ofd_margin(bn->weight, bn->bias);
inline torch::Tensor ofd_margin(const torch::Tensor& weight, const torch::Tensor& bias) {
  constexpr const char* kWhat = "ofd_margin";
  detail::check_rank(kWhat, "weight", weight, 1, "[C]");
  detail::check_rank(kWhat, "bias", bias, 1, "[C]");
  if (weight.sizes() != bias.sizes()) fail(kWhat, ": 'bias' ", bias.sizes(), " and 'weight' ", weight.sizes(), " differ");
  auto s = weight.detach().to(torch::kCPU, torch::kDouble).contiguous();
  auto m = bias.detach().to(torch::kCPU, torch::kDouble).contiguous();
  auto out = torch::empty_like(s);
  const double* ps = s.data_ptr<double>();
  const double* pm = m.data_ptr<double>();
  double* po = out.data_ptr<double>();
  for (int64_t c = 0; c < s.numel(); ++c) {
    const double sd = std::abs(ps[c]), mean = pm[c];
    if (sd == 0) {
      po[c] = std::min(mean, 0.0);
      continue;
    }
    const double below = 0.5 * std::erfc(mean / sd / std::sqrt(2.0));  // Phi(-mean / sd)
    po[c] = below > 0.001 ? mean - sd * std::exp(-(mean / sd) * (mean / sd) / 2) / std::sqrt(2 * M_PI) / below : -3 * sd;
  }
  return out.to(weight.device(), weight.scalar_type());
}

/// OFD's partial L2 between the student's transformed pre-ReLU map and the teacher's:
///   t' = max(t, margin[c]),  loss = sum over {student > t' or t' > 0} of (student - t')^2 / N
/// (the official sum, divided by the batch size as its training loop does). Maps are
/// [N, C, H, W] of one shape, margin is [C] (a constant). No gradient reaches the teacher.
///
///   auto loss = distill::functional::ofd_loss(connector(student_map), teacher_map, margin);
inline torch::Tensor ofd_loss(const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& margin) {
  constexpr const char* kLoss = "ofd_loss";
  detail::check_rank(kLoss, "student", student, 4, "[N, C, H, W]");
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  detail::check_rank(kLoss, "margin", margin, 1, "[C]");
  if (margin.size(0) != student.size(1))
    fail(kLoss, ": 'margin' has ", margin.size(0), " channels but the maps have ", student.size(1), " (", student.sizes(), ")");
  auto fs = detail::compute(student);
  auto target = torch::max(detail::compute(teacher).detach(), margin.detach().to(fs.options()).view({1, -1, 1, 1}));
  auto keep = (fs > target) | (target > 0);
  return torch::where(keep, (fs - target).square(), torch::zeros_like(fs)).sum() / static_cast<double>(fs.size(0));
}

}  // namespace functional

/// Options of OFDLoss: the channels of each tapped student and teacher map (one connector per
/// pair).
struct OFDOptions {
  OFDOptions(std::vector<int64_t> student_channels, std::vector<int64_t> teacher_channels)
      : student_channels_(std::move(student_channels)), teacher_channels_(std::move(teacher_channels)) {}
  TORCH_ARG(std::vector<int64_t>, student_channels);
  TORCH_ARG(std::vector<int64_t>, teacher_channels);
};

/// OFD over F tap pairs: sum_i ofd_loss(connector_i(s_i), t_i, margin_i) / 2^(F - 1 - i), the
/// official weighting (the deepest pair counts fully, each earlier one half as much). Connector
/// i: conv 1x1 (no bias, weights N(0, 2 / C_t)) then BatchNorm (1, 0), trained with the
/// student. The official loop divides the total by 10000: a recipe weight of 1e-4.
///
///   distill::OFDLoss ofd(distill::OFDOptions({64, 128, 256, 512}, {64, 128, 256, 512}));
///   auto loss = ofd(student_maps, teacher_maps, margins);
class OFDLossImpl : public torch::nn::Cloneable<OFDLossImpl> {
 public:
  explicit OFDLossImpl(OFDOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    constexpr const char* kLoss = "OFDLoss";
    namespace nn = torch::nn;
    const auto& s = options.student_channels();
    const auto& t = options.teacher_channels();
    if (s.empty() || s.size() != t.size())
      fail(kLoss, ": student_channels and teacher_channels must list the same number (>= 1) of maps, got ", s.size(),
           " and ", t.size());
    double count = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      check_size(kLoss, "a student channel count", s[i]);
      check_size(kLoss, "a teacher channel count", t[i]);
      count += 1.0 * s[i] * t[i];
    }
    check_parameters(kLoss, count);
    connectors = register_module("connectors", nn::ModuleList());
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < s.size(); ++i) {
      nn::Conv2d conv(nn::Conv2dOptions(s[i], t[i], 1).bias(false));
      conv->weight.normal_(0, std::sqrt(2.0 / static_cast<double>(t[i])));
      connectors->push_back(nn::Sequential(conv, nn::BatchNorm2d(t[i])));
    }
  }

  torch::Tensor forward(const std::vector<torch::Tensor>& students, const std::vector<torch::Tensor>& teachers,
                        const std::vector<torch::Tensor>& margins) {
    constexpr const char* kLoss = "OFDLoss";
    const size_t n = connectors->size();
    if (students.size() != n || teachers.size() != n || margins.size() != n)
      fail(kLoss, ": expected ", n, " student maps, teacher maps and margins, got ", students.size(), ", ", teachers.size(),
           " and ", margins.size());
    torch::Tensor total;
    for (size_t i = 0; i < n; ++i) {
      const auto& s = students[i];
      detail::check_rank(kLoss, concat("students[", i, "]"), s, 4, "[N, C, H, W]");
      if (s.size(1) != options.student_channels()[i])
        fail(kLoss, ": students[", i, "] has ", s.size(1), " channels, expected ", options.student_channels()[i], " (",
             s.sizes(), ")");
      auto fs = detail::compute(s);
      detail::check_parameters_match(kLoss, *this, fs);
      auto term = with_context(concat(kLoss, " map ", i), [&] {
        return functional::ofd_loss(connectors[i]->as<torch::nn::SequentialImpl>()->forward(fs), teachers[i], margins[i]);
      });
      term = term / std::pow(2.0, static_cast<double>(n - 1 - i));
      total = total.defined() ? total + term : term;
    }
    return total;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "distill::OFDLoss(maps=" << connectors->size() << ")";
  }

  OFDOptions options;
  torch::nn::ModuleList connectors{nullptr};
};
TORCH_MODULE(OFDLoss);

}  // namespace distill
