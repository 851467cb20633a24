#pragma once
// Argument checks shared by the losses: each failure is a distill::Error that names the loss,
// the argument and the shapes involved.

#include <cmath>
#include <string>
#include <string_view>

#include <torch/torch.h>

#include "distill/core/error.hpp"
#include "distill/core/limits.hpp"

namespace distill::detail {

/// How a tensor appears in messages: "Float [4, 10] on cpu".
inline std::string describe(const torch::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  return concat(t.scalar_type(), " ", t.sizes(), " on ", t.device());
}

inline void check_defined(const char* loss, std::string_view arg, const torch::Tensor& t) {
  if (!t.defined()) fail(loss, ": '", arg, "' is an undefined tensor");
}

inline void check_floating(const char* loss, std::string_view arg, const torch::Tensor& t) {
  check_defined(loss, arg, t);
  if (!t.is_floating_point()) fail(loss, ": '", arg, "' must be a floating-point tensor, got ", describe(t));
}

/// A non-empty floating tensor of exactly `rank` dimensions; `layout` names them ("[N, C]").
inline void check_rank(const char* loss, std::string_view arg, const torch::Tensor& t, int64_t rank,
                       const char* layout) {
  check_floating(loss, arg, t);
  if (t.dim() != rank || t.numel() == 0)
    fail(loss, ": '", arg, "' must be a non-empty ", layout, " tensor, got ", describe(t));
}

/// Logits [N, C] with N >= 1 and C >= min_classes.
inline void check_logits(const char* loss, std::string_view arg, const torch::Tensor& t,
                         int64_t min_classes = 1) {
  check_rank(loss, arg, t, 2, "[N, C] logits");
  if (t.size(1) < min_classes)
    fail(loss, ": '", arg, "' needs at least ", min_classes, " classes, got ", describe(t));
}

/// Same dtype and device; shapes may differ (e.g. RKD compares relations of features of
/// different widths).
inline void check_same_kind(const char* loss, std::string_view a_name, const torch::Tensor& a,
                            std::string_view b_name, const torch::Tensor& b) {
  check_floating(loss, b_name, b);
  // A top-k teacher (losses/topk.hpp) reaches a loss that has no use for one: say so, rather
  // than let a dense operation fail on a sparse tensor.
  if (a.is_sparse() || b.is_sparse())
    fail(loss, ": '", b.is_sparse() ? b_name : a_name, "' is a top-k teacher (a sparse tensor, e.g. from a teacher cache); ",
         "this loss needs dense outputs of the teacher itself. Only the logit losses (KD, DKD, DIST, WSL, SKD, CE with ",
         "soft targets, DML with softmax) take a top-k teacher");
  if (a.scalar_type() != b.scalar_type() || a.device() != b.device())
    fail(loss, ": '", b_name, "' is ", describe(b), " but '", a_name, "' is ", describe(a),
         "; dtype and device must match");
}

/// Same dtype, device and shape: losses never broadcast one argument against the other.
inline void check_same(const char* loss, std::string_view a_name, const torch::Tensor& a,
                       std::string_view b_name, const torch::Tensor& b) {
  check_same_kind(loss, a_name, a, b_name, b);
  if (a.sizes() != b.sizes())
    fail(loss, ": '", b_name, "' has shape ", b.sizes(), " but '", a_name, "' has shape ",
         a.sizes(), "; the shapes must be equal");
}

/// The largest option value accepted: the losses compute in float32, and a scalar beyond its
/// range (a weight of 1e300) cannot enter a float32 tensor operation.
constexpr double max_option_value = 3.4e38;

inline void check_positive(const char* loss, std::string_view arg, double value) {
  if (!(value > 0) || !(value <= max_option_value))
    fail(loss, ": ", arg, " must be a positive number (at most 3.4e38, float32's range), got ", value);
}

/// A temperature or another scale that logits are divided or multiplied by: in [1e-6, 1e6],
/// so that 1/T and T^2 stay well inside float32 (a temperature of 1e-300 would make 1/T
/// unrepresentable).
inline void check_scale(const char* loss, std::string_view arg, double value) {
  if (!(value >= 1e-6 && value <= 1e6)) fail(loss, ": ", arg, " must be in [1e-6, 1e6], got ", value);
}

/// A weight of a loss term: finite and >= 0 (a negative one would ascend).
inline void check_weight(const char* loss, std::string_view arg, double value) {
  if (!(value >= 0) || !(value <= max_option_value))
    fail(loss, ": ", arg, " must be a number >= 0 (at most 3.4e38, float32's range), got ", value);
}

/// Validates integer class indices for [N, C] logits and returns them as int64 [N].
/// Accepts [N] or [N, 1] (the reference reshapes labels to [N, 1]).
inline torch::Tensor check_target(const char* loss, const torch::Tensor& target,
                                  const torch::Tensor& logits) {
  const int64_t n = logits.size(0), c = logits.size(1);
  check_defined(loss, "target", target);
  if (target.is_floating_point() || target.is_complex() || target.scalar_type() == torch::kBool)
    fail(loss, ": 'target' must hold integer class indices, got ", describe(target));
  const bool column = target.dim() == 2 && target.size(1) == 1;
  if (!(target.dim() == 1 || column) || target.size(0) != n)
    fail(loss, ": 'target' must have shape [", n, "] or [", n, ", 1] to match logits ",
         logits.sizes(), ", got ", target.sizes());
  if (target.device() != logits.device())
    fail(loss, ": 'target' is on ", target.device(), " but the logits are on ", logits.device());
  auto flat = target.reshape({n}).to(torch::kLong);
  // One device synchronisation per call on CUDA (the range comes back in one copy).
  auto [min, max] = torch::aminmax(flat);
  const auto range = torch::stack({min, max}).cpu();
  const int64_t lo = range[0].item<int64_t>(), hi = range[1].item<int64_t>();
  if (lo < 0 || hi >= c)
    fail(loss, ": 'target' holds class index ", lo < 0 ? lo : hi, " outside [0, ", c,
         ") for logits ", logits.sizes());
  return flat;
}

}  // namespace distill::detail
