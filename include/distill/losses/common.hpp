#pragma once
// Pieces every loss header uses: the compute dtype, target resolution, a zero-safe norm and
// the base of the module forms.

#include <ostream>
#include <string>

#include <torch/torch.h>

#include "distill/core/check.hpp"
#include "distill/losses/registry.hpp"

namespace distill {

/// An activation applied to both inputs of a loss first: DML's `act`, and the `act` of the
/// reference's DistillationDistanceLoss wrapper. `none`: the inputs are used as they are.
enum class Act { none, softmax, sigmoid };

/// Reads an Act from a recipe key: "softmax", "sigmoid", or null / "none" for none.
inline void describe_act(Schema& s, const std::string& key, Act& value) {
  const bool none = s.is_null(key);
  s.choice(key, value, {{"none", Act::none}, {"softmax", Act::softmax}, {"sigmoid", Act::sigmoid}});
  if (none) value = Act::none;
}

/// Applies `act` (softmax over the last axis, or elementwise sigmoid).
inline torch::Tensor activate(const torch::Tensor& x, Act act) {
  if (act == Act::softmax) return torch::softmax(x, -1);
  if (act == Act::sigmoid) return torch::sigmoid(x);
  return x;
}

}  // namespace distill

namespace distill::detail {

/// float64 stays float64; float32, float16 and bfloat16 are computed in float32 so that
/// reduced-precision logits cannot overflow in exp/log (autograd casts gradients back).
inline torch::Tensor compute(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? t : t.to(torch::kFloat);
}

/// Class indices [N, 1]: the given target if there is one (validated), otherwise the argmax
/// of the teacher, as the reference does when labels are absent.
inline torch::Tensor target_or_argmax(const char* loss, const torch::Tensor& target,
                                      const torch::Tensor& teacher) {
  if (!target.defined()) return teacher.argmax(1, /*keepdim=*/true);
  return check_target(loss, target, teacher).unsqueeze(1);
}

/// L2 norm over `dim` whose gradient at an all-zero slice is 0 instead of NaN. Where the
/// norm is positive it is the plain norm, so results equal the reference's wherever the
/// reference is finite.
inline torch::Tensor safe_norm(const torch::Tensor& x, int64_t dim, bool keepdim = false) {
  auto squares = x.square().sum(dim, keepdim);
  auto positive = squares > 0;
  return torch::where(positive, torch::where(positive, squares, torch::ones_like(squares)).sqrt(),
                      torch::zeros_like(squares));
}

/// Divides by the norm over `dim`, leaving all-zero slices at zero (see safe_norm).
inline torch::Tensor safe_normalize(const torch::Tensor& x, int64_t dim) {
  auto norm = safe_norm(x, dim, /*keepdim=*/true);
  return x / torch::where(norm > 0, norm, torch::ones_like(norm));
}

/// Logit standardisation (Sun et al., CVPR 2024; docs/methods.md): each row's z-score
/// (z - mean) / (1e-7 + std) with the unbiased standard deviation, as the official code's
/// `normalize`. Applied to both inputs of a loss whose `standardize` option is set.
inline torch::Tensor standardize(const torch::Tensor& z) {
  auto mean = z.mean(1, /*keepdim=*/true);
  auto std = z.std(1, /*unbiased=*/true, /*keepdim=*/true);
  return (z - mean) / (std + 1e-7);
}

/// A loss with `standardize` set needs a dense teacher (the z-score reads every logit) and at
/// least two classes (the unbiased std of one value is undefined).
inline void check_standardize(const char* loss, const torch::Tensor& student, const torch::Tensor& teacher) {
  if (teacher.is_sparse())
    fail(loss, ": standardize needs the teacher's dense logits (a top-k teacher keeps only k of them); ",
         "make the teacher cache with --topk equal to the number of classes, or drop standardize");
  if (student.size(1) < 2) fail(loss, ": standardize needs at least 2 classes, got ", describe(student));
}

/// A loss with parameters computes in their dtype and on their device: features computed as
/// `x` (see compute()) must match, otherwise the user is told to move the loss.
inline void check_parameters_match(const char* loss, const torch::nn::Module& module,
                                   const torch::Tensor& x) {
  for (const auto& p : module.parameters()) {
    if (p.scalar_type() != x.scalar_type() || p.device() != x.device())
      fail(loss, ": the inputs are computed as ", x.scalar_type(), " on ", x.device(),
           " but the loss parameters are ", p.scalar_type(), " on ", p.device(),
           "; move the loss with ->to(...)");
    return;
  }
}

/// Base of every loss module: a loss has no buffers to reset unless it owns parameters, and
/// prints as its functional name.
template <class Derived>
class LossModule : public torch::nn::Cloneable<Derived> {
 public:
  void reset() override {}
  void pretty_print(std::ostream& stream) const override { stream << "distill::" << Derived::kName; }
};

}  // namespace distill::detail
