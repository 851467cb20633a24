#pragma once
// AT: attention transfer (Zagoruyko & Komodakis, ICLR 2017; mdistiller's form,
// docs/methods.md). The student matches the teacher's spatial attention maps, one pair of
// feature maps at a time (a recipe pairs several taps).

#include "distill/losses/common.hpp"

namespace distill {

/// Options of at_loss / ATLoss: the power p of the attention map (mdistiller: 2).
struct ATOptions {
  TORCH_ARG(double, p) = 2.0;
};

namespace detail {
inline void check_options(const ATOptions& options) { check_scale("at_loss", "p", options.p()); }

/// mdistiller's attention map: mean over channels of f^p, flattened per sample and divided
/// by its L2 norm (at least 1e-12, as F.normalize).
inline torch::Tensor attention_map(const torch::Tensor& f, double p) {
  auto a = f.pow(p).mean(1).reshape({f.size(0), -1});
  return a / a.norm(2, 1, /*keepdim=*/true).clamp_min(1e-12);
}
}  // namespace detail

namespace functional {

/// mean((a(f_s) - a(f_t))^2) over samples and positions, with a() the normalised attention
/// map (detail::attention_map). When the heights differ, the larger map is first average-pooled
/// to (h, h), h the smaller height (square, as the official code). Maps are [N, C, H, W]; the
/// channel counts may differ. Gradient reaches both inputs.
///
///   auto loss = distill::functional::at_loss(student_map, teacher_map);
inline torch::Tensor at_loss(const torch::Tensor& student, const torch::Tensor& teacher, const ATOptions& options = {}) {
  constexpr const char* kLoss = "at_loss";
  detail::check_options(options);
  detail::check_rank(kLoss, "student", student, 4, "[N, C, H, W]");
  detail::check_rank(kLoss, "teacher", teacher, 4, "[N, C, H, W]");
  detail::check_same_kind(kLoss, "student", student, "teacher", teacher);
  auto fs = detail::compute(student), ft = detail::compute(teacher);
  const int64_t hs = fs.size(2), ht = ft.size(2);
  if (hs > ht) fs = torch::adaptive_avg_pool2d(fs, {ht, ht});
  if (hs < ht) ft = torch::adaptive_avg_pool2d(ft, {hs, hs});
  if (fs.size(0) != ft.size(0) || fs.size(2) != ft.size(2) || fs.size(3) != ft.size(3))
    fail(kLoss, ": the student map ", student.sizes(), " and the teacher map ", teacher.sizes(),
         " do not give attention maps of one size (equal batch, and equal or square-poolable H x W)");
  return (detail::attention_map(fs, options.p()) - detail::attention_map(ft, options.p())).square().mean();
}

}  // namespace functional

/// Module form of functional::at_loss.
///
///   distill::ATLoss at(distill::ATOptions().p(2));
///   auto loss = at(student_map, teacher_map);
class ATLossImpl : public detail::LossModule<ATLossImpl> {
 public:
  static constexpr const char* kName = "ATLoss";
  explicit ATLossImpl(ATOptions options = {}) : options(std::move(options)) { detail::check_options(this->options); }
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    return functional::at_loss(student, teacher, options);
  }
  ATOptions options;
};
TORCH_MODULE(ATLoss);

/// Recipe keys of ATLoss (its wrapper's terms: "loss_at_<A>_<B>_<keys>", one per tap pair): p.
inline void describe(Schema& s, ATOptions& o) { s.field("p", o.p()); }
namespace detail {
inline const bool at_registered = register_loss<ATLoss>("ATLoss", ATOptions(), LossTraits{"loss_at"});
}

}  // namespace distill
