#pragma once
// A teacher given as its top-k logits (a teacher cache, docs/teacher-cache.md): the classes the
// teacher ranks highest with their logits, and the rest of the probability mass spread evenly
// over the other classes (FKD's marginal smoothing). Needs only libtorch.
//
// Representation: a sparse COO tensor [N, C] whose k entries per row are the top-k logits minus
// the row's "rest" logit r, the logit that every other class gets. The implicit zeros are then
// the rest classes, and the whole row is the marginal-smoothed logits shifted by -r. Every logit
// loss that accepts it (KD, DKD, DIST, WSL, SKD, CE with soft targets, DML with softmax) depends
// on the teacher's logits only up to a constant per row (softmax, log-softmax, layer norm), so
// the shift changes nothing, and none of them forms a dense teacher from it (docs/teacher-cache.md).
// Losses that read absolute values (distances, features) refuse it.

#include <cmath>
#include <utility>

#include <torch/torch.h>

#include "distill/core/check.hpp"

namespace distill {

/// The teacher of top-k logits `values` [N, k] at class `indices` [N, k] (int64, distinct per
/// row) among `num_classes`, every other class at logit `rest` [N] (undefined, or k equal to
/// num_classes: none). Choose rest so that (C - k) exp(rest) is the exponential mass of the
/// classes left out, i.e. rest = logsumexp(left out) - log(C - k): the softmax at temperature 1
/// is then the teacher's exactly on the kept classes, and the rest mass is exact in total.
///
///   auto [values, indices] = teacher_logits.topk(10);
///   auto teacher = distill::topk_teacher(values, indices, rest, 1000);
///   auto loss = distill::functional::kd_loss(student_logits, teacher);   // no dense [N, C] teacher
inline torch::Tensor topk_teacher(const torch::Tensor& values, const torch::Tensor& indices, const torch::Tensor& rest,
                                  int64_t num_classes) {
  constexpr const char* kWhat = "topk_teacher";
  detail::check_rank(kWhat, "values", values, 2, "[N, k]");
  if (indices.sizes() != values.sizes() || indices.is_floating_point())
    fail(kWhat, ": 'indices' must be integer class indices shaped like 'values' ", values.sizes(), ", got ",
         detail::describe(indices));
  const int64_t n = values.size(0), k = values.size(1);
  if (k > num_classes) fail(kWhat, ": ", k, " values per row but only ", num_classes, " classes");
  auto shifted = values;
  if (k < num_classes) {
    if (!rest.defined() || rest.dim() != 1 || rest.size(0) != n)
      fail(kWhat, ": 'rest' must be [", n, "] (one logit per row for the ", num_classes - k,
           " classes left out), got ", detail::describe(rest));
    shifted = values - rest.to(values.scalar_type()).unsqueeze(1);
  }
  auto columns = indices.to(torch::kLong);
  auto range = torch::stack({columns.min(), columns.max()}).cpu();
  if (range[0].item<int64_t>() < 0 || range[1].item<int64_t>() >= num_classes)
    fail(kWhat, ": 'indices' holds a class outside [0, ", num_classes, ")");
  // Sorted by class within each row, so that the coalesced tensor keeps the rows' layout.
  auto order = columns.argsort(/*dim=*/int64_t{1}, /*descending=*/false);
  columns = columns.gather(1, order);
  if (k > 1 && (columns.narrow(1, 1, k - 1) == columns.narrow(1, 0, k - 1)).any().item<bool>())
    fail(kWhat, ": 'indices' repeats a class within a row");
  auto rows = torch::arange(n, columns.options()).unsqueeze(1).expand({n, k});
  auto coordinates = torch::stack({rows.reshape({-1}), columns.reshape({-1})});
  return torch::sparse_coo_tensor(coordinates, shifted.gather(1, order).reshape({-1}), {n, num_classes},
                                  values.options().layout(torch::kSparse))
      ._coalesced_(true);
}

/// Whether `teacher` is a top-k teacher (see topk_teacher).
inline bool is_topk_teacher(const torch::Tensor& teacher) { return teacher.defined() && teacher.is_sparse(); }

namespace detail {

/// A top-k teacher taken apart: the shifted logits [N, k] and their classes [N, k] (int64),
/// so that every other class has logit 0.
struct TopK {
  torch::Tensor values, indices;
  int64_t classes = 0;
  int64_t rest_count() const { return classes - values.size(1); }
};

/// The parts of a top-k teacher for `student` logits [N, C]: every row k entries, dtype and
/// device as the student's compute dtype; otherwise an error naming the loss.
inline TopK unpack_topk(const char* loss, const torch::Tensor& student, const torch::Tensor& teacher) {
  check_floating(loss, "teacher", teacher);
  if (teacher.sizes() != student.sizes())
    fail(loss, ": the top-k teacher has shape ", teacher.sizes(), " but 'student' has shape ", student.sizes(),
         "; the shapes must be equal");
  if (teacher.device() != student.device())
    fail(loss, ": the top-k teacher is on ", teacher.device(), " but 'student' is on ", student.device());
  if (!teacher.is_coalesced())
    fail(loss, ": the top-k teacher must be coalesced (make it with distill::topk_teacher)");
  const int64_t n = student.size(0), nnz = teacher._nnz();
  if (n == 0 || nnz % n != 0)
    fail(loss, ": the top-k teacher has ", nnz, " entries for ", n, " rows; every row needs the same k");
  const int64_t k = nnz / n;
  auto coordinates = teacher._indices();
  auto expected_rows = torch::arange(n, coordinates.options()).repeat_interleave(k);
  if (k == 0 || !torch::equal(coordinates[0], expected_rows))
    fail(loss, ": the top-k teacher must hold k >= 1 entries in every row (make it with distill::topk_teacher)");
  TopK parts;
  parts.values = teacher._values().view({n, k});
  parts.values = parts.values.scalar_type() == torch::kDouble ? parts.values : parts.values.to(torch::kFloat);
  parts.indices = coordinates[1].view({n, k});
  parts.classes = student.size(1);
  return parts;
}

/// `top` with its values in `dtype`.
inline TopK with_dtype(TopK top, torch::Dtype dtype) {
  top.values = top.values.to(dtype);
  return top;
}

/// Per row, sum_c y_c x_c as [N, 1] for a dense x [N, C] and y in top-k form: y_kept [N, k] at
/// the kept classes, y_rest [N, 1] at each of the others.
inline torch::Tensor topk_rowdot(const torch::Tensor& x, const torch::Tensor& y_kept, const torch::Tensor& y_rest,
                                 const TopK& top) {
  auto x_kept = x.gather(1, top.indices);
  auto out = (y_kept * x_kept).sum(1, true);
  if (top.rest_count() == 0) return out;
  return out + y_rest * (x.sum(1, true) - x_kept.sum(1, true));
}

/// Each row's class of largest logit, [N, 1]: a kept class (the rest logit is below them all).
inline torch::Tensor topk_argmax(const TopK& top) { return top.indices.gather(1, top.values.argmax(1, true)); }

/// Whether class `index` [N, 1] is among each row's kept classes ([N, k] mask, and [N, 1]).
inline std::pair<torch::Tensor, torch::Tensor> topk_find(const TopK& top, const torch::Tensor& index) {
  auto mask = top.indices == index;
  return {mask, mask.any(1, true)};
}

/// The teacher's softmax at temperature t in top-k form: the probabilities of the kept
/// classes [N, k] and their logs, and the probability of each other class [N, 1] and its log.
struct TopKSoftmax {
  torch::Tensor p, log_p, p_rest, log_p_rest;
};
inline TopKSoftmax topk_softmax(const TopK& teacher, double t) {
  TopKSoftmax s;
  auto a = teacher.values / t;
  // Each rest class has logit 0; the row max includes it when there is one.
  auto max = a.amax(1, true);
  if (teacher.rest_count() > 0) max = max.clamp_min(0);
  auto e = (a - max).exp();
  auto e_rest = (-max).exp();
  auto log_z = (e.sum(1, true) + e_rest * static_cast<double>(teacher.rest_count())).log() + max;
  s.log_p = a - log_z;
  s.p = s.log_p.exp();
  if (teacher.rest_count() > 0) {
    s.log_p_rest = -log_z;
    s.p_rest = s.log_p_rest.exp();
  } else {  // k = C: no other class (0 log 0 = 0 below)
    s.log_p_rest = torch::zeros_like(log_z);
    s.p_rest = torch::zeros_like(log_z);
  }
  return s;
}

}  // namespace detail
}  // namespace distill
