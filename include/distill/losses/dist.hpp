#pragma once
// DIST: inter- and intra-class Pearson correlation between predictions (reference 2.9).

#include "distill/losses/common.hpp"

namespace distill {

/// Options of dist_loss / DISTLoss: weights of the inter-class (per sample) and intra-class
/// (per class) terms. DIST has no temperature (reference quirk 7.13).
struct DISTOptions {
  TORCH_ARG(double, beta) = 1.0;
  TORCH_ARG(double, gamma) = 1.0;
};

namespace functional {

namespace detail_dist {
/// Pearson correlation of a and b along `dim`: cos of the centred vectors, with 1e-8 added to
/// the product of the norms as in the reference. A constant slice (norm 0) has correlation 0
/// and a finite gradient (the reference's would be NaN there).
inline torch::Tensor pearson(const torch::Tensor& a, const torch::Tensor& b, int64_t dim) {
  auto u = a - a.mean(dim, true);
  auto v = b - b.mean(dim, true);
  return (u * v).sum(dim) / (detail::safe_norm(u, dim) * detail::safe_norm(v, dim) + 1e-8);
}
}  // namespace detail_dist

/// beta * (1 - mean_n rho(y_s[n, :], y_t[n, :])) + gamma * (1 - mean_c rho(y_s[:, c], y_t[:, c]))
/// with y = softmax(logits). Gradient reaches both inputs.
///
///   auto loss = distill::functional::dist_loss(student_logits, teacher_logits);
inline torch::Tensor dist_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                               const DISTOptions& options = {}) {
  constexpr const char* kLoss = "dist_loss";
  detail::check_logits(kLoss, "student", student);
  detail::check_same(kLoss, "student", student, "teacher", teacher);
  auto ys = torch::softmax(detail::compute(student), 1);
  auto yt = torch::softmax(detail::compute(teacher), 1);
  auto inter = 1 - detail_dist::pearson(ys, yt, 1).mean();
  auto intra = 1 - detail_dist::pearson(ys, yt, 0).mean();
  return options.beta() * inter + options.gamma() * intra;
}

}  // namespace functional

/// Module form of functional::dist_loss.
///
///   distill::DISTLoss dist(distill::DISTOptions().beta(1).gamma(1));
///   auto loss = dist(student_logits, teacher_logits);
class DISTLossImpl : public detail::LossModule<DISTLossImpl> {
 public:
  static constexpr const char* kName = "DISTLoss";
  explicit DISTLossImpl(DISTOptions options = {}) : options(std::move(options)) {}
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    return functional::dist_loss(student, teacher, options);
  }
  DISTOptions options;
};
TORCH_MODULE(DISTLoss);

}  // namespace distill
