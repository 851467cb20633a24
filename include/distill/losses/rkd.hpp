#pragma once
// Relational KD: match angles and distances between the samples of a batch (docs/reference.md §2.12).

#include "distill/losses/distance.hpp"

namespace distill {

/// Options of the RKD losses. The reference's optional pooling to a target size is not carried
/// over (its wrapper does not use it).
struct RKDOptions {
  /// Distance loss only. false (PaddleClas): the [N, N] distance matrix keeps its diagonal
  /// (sqrt(1e-12)) and is divided by the mean of all N^2 entries. true (the RKD paper's code):
  /// the diagonal is zero and the divisor is the mean of the positive entries.
  TORCH_ARG(bool, exclude_diagonal) = false;
};

namespace functional {

namespace detail_rkd {
/// [N, ...] -> [N, D]; student and teacher may have different D, only N must agree.
inline std::pair<torch::Tensor, torch::Tensor> flat_pair(const char* loss, const torch::Tensor& s,
                                                         const torch::Tensor& t) {
  detail::check_floating(loss, "student", s);
  detail::check_same_kind(loss, "student", s, "teacher", t);
  if (s.dim() < 2 || t.dim() < 2 || s.size(0) != t.size(0) || s.numel() == 0 || t.numel() == 0)
    fail(loss, ": 'student' and 'teacher' must be non-empty [N, ...] features with the "
                       "same N, got ", detail::describe(s), " and ", detail::describe(t));
  return {detail::compute(s).flatten(1), detail::compute(t).flatten(1)};
}

/// A[i, j, k] = e_ij . e_ik with e_ij = normalize(x_j - x_i) (eps 1e-12), flattened.
inline torch::Tensor angles(const torch::Tensor& x) {
  auto e = torch::nn::functional::normalize(
      x.unsqueeze(0) - x.unsqueeze(1),
      torch::nn::functional::NormalizeFuncOptions().p(2).dim(2).eps(1e-12));
  return torch::bmm(e, e.transpose(1, 2)).flatten();
}

/// Pairwise distances divided by their mean. The diagonal is sqrt(1e-12) and stays in the mean
/// (docs/reference.md §7.10; the RKD paper zeroes it).
inline torch::Tensor distances(const torch::Tensor& x, bool exclude_diagonal) {
  auto sq = x.square().sum(1);
  auto d = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * x.matmul(x.t())).clamp_min(1e-12).sqrt();
  if (!exclude_diagonal) return d / (d.mean() + 1e-12);
  d = d * (1 - torch::eye(d.size(0), d.options()));
  const auto positive = (d > 0).sum().clamp_min(1).to(d.scalar_type());  // the mean of d[d > 0], without a sync
  return d / (d.sum() / positive);
}

inline torch::Tensor huber(const torch::Tensor& a, const torch::Tensor& b) {
  return distance_loss(a, b, DistanceOptions().mode(DistanceMode::smooth_l1));
}
}  // namespace detail_rkd

/// Huber (delta 1, mean) between the [N, N, N] angle tensors of student and teacher features
/// ([N, ...], flattened per sample). Gradient reaches both inputs.
///
///   auto loss = distill::functional::rkd_angle_loss(student_embedding, teacher_embedding);
inline torch::Tensor rkd_angle_loss(const torch::Tensor& student, const torch::Tensor& teacher) {
  auto [s, t] = detail_rkd::flat_pair("rkd_angle_loss", student, teacher);
  return detail_rkd::huber(detail_rkd::angles(s), detail_rkd::angles(t));
}

/// Huber (delta 1, mean) between the mean-normalised [N, N] distance matrices of student and
/// teacher features ([N, ...], flattened per sample). Gradient reaches both inputs.
///
///   auto loss = distill::functional::rkd_distance_loss(student_embedding, teacher_embedding);
inline torch::Tensor rkd_distance_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                                       const RKDOptions& options = {}) {
  auto [s, t] = detail_rkd::flat_pair("rkd_distance_loss", student, teacher);
  return detail_rkd::huber(detail_rkd::distances(s, options.exclude_diagonal()),
                           detail_rkd::distances(t, options.exclude_diagonal()));
}

}  // namespace functional

/// Module form of functional::rkd_angle_loss.
class RKDAngleLossImpl : public detail::LossModule<RKDAngleLossImpl> {
 public:
  static constexpr const char* kName = "RKDAngleLoss";
  explicit RKDAngleLossImpl(RKDOptions options = {}) : options(options) {}
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    return functional::rkd_angle_loss(student, teacher);
  }
  RKDOptions options;
};
TORCH_MODULE(RKDAngleLoss);

/// Module form of functional::rkd_distance_loss.
///
///   distill::RKDDistanceLoss rkd;
///   auto loss = rkd(student_embedding, teacher_embedding);
class RKDDistanceLossImpl : public detail::LossModule<RKDDistanceLossImpl> {
 public:
  static constexpr const char* kName = "RKDDistanceLoss";
  explicit RKDDistanceLossImpl(RKDOptions options = {}) : options(options) {}
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher) {
    return functional::rkd_distance_loss(student, teacher, options);
  }
  RKDOptions options;
};
TORCH_MODULE(RKDDistanceLoss);

/// Recipe keys of RKD: exclude_diagonal (the distance loss's). Registered under the reference's
/// spellings "RKdAngle" and "RkdDistance" (terms "loss_angle_..." and "loss_dist_...").
inline void describe(Schema& s, RKDOptions& o) { s.field("exclude_diagonal", o.exclude_diagonal()); }
namespace detail {
inline const bool rkd_registered = register_loss<RKDAngleLoss>("RKdAngle", RKDOptions(), LossTraits{"loss_angle"}) &&
                                   register_loss<RKDDistanceLoss>("RkdDistance", RKDOptions(), LossTraits{"loss_dist"});
}

}  // namespace distill
