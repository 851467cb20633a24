#pragma once
// AFD: attention-based feature distillation. Every teacher feature attends over the student
// features; the loss is the attention-weighted distance between their spatial maps
// (docs/reference.md §2.14). The linear transforms that make its inputs belong to the composition layer.

#include <cmath>
#include <vector>

#include "distill/losses/common.hpp"

namespace distill {

/// Feature shapes as [C, H, W], one per tapped feature map.
using FeatureShapes = std::vector<std::vector<int64_t>>;

/// Teacher features grouped by shape: `unique` lists the distinct shapes in order of first
/// appearance, `group[i]` is the index in `unique` of teacher feature i.
struct ShapeGroups {
  FeatureShapes unique;
  std::vector<int64_t> group;
};

/// Groups `shapes` as the reference's AFD does (e.g. the 16 ResNet34 blocks form 4 groups).
inline ShapeGroups group_shapes(const FeatureShapes& shapes) {
  ShapeGroups groups;
  for (const auto& shape : shapes) {
    auto found = std::find(groups.unique.begin(), groups.unique.end(), shape);
    groups.group.push_back(found - groups.unique.begin());
    if (found == groups.unique.end()) groups.unique.push_back(shape);
  }
  return groups;
}

/// Options of AFDLoss: the [C, H, W] shapes of the student and teacher features and the
/// query/key width (reference default 128). Only the counts and the teacher grouping matter
/// to the loss itself.
struct AFDOptions {
  AFDOptions(FeatureShapes student_shapes, FeatureShapes teacher_shapes)
      : student_shapes_(std::move(student_shapes)), teacher_shapes_(std::move(teacher_shapes)) {}
  TORCH_ARG(FeatureShapes, student_shapes);
  TORCH_ARG(FeatureShapes, teacher_shapes);
  TORCH_ARG(int64_t, qk_dim) = 128;
};

/// With s student and t teacher features, parameters p_t [t, qk] and p_s [s, qk]
/// (Xavier-normal), and u(i) the shape group of teacher feature i:
///   att[n, i, :] = softmax_j((bilinear_key[n, j, i, :] . query[n, i, :] + (p_t p_s^T)[i, j]) / sqrt(qk))
///   loss = sum_i mean_n sum_j att[n, i, j] * mean_hw(student_values[u(i)][n, j, :] - teacher_values[i][n, :])^2
/// Inputs: bilinear_key [N, s, t, qk]; student_values, one [N, s, H_u W_u] per shape group;
/// query [N, t, qk]; teacher_values, t tensors [N, H_i W_i]. Gradient reaches all inputs.
///
///   distill::AFDLoss afd(distill::AFDOptions(student_shapes, teacher_shapes).qk_dim(128));
///   auto loss = afd(bilinear_key, student_values, query, teacher_values);
class AFDLossImpl : public torch::nn::Cloneable<AFDLossImpl> {
 public:
  explicit AFDLossImpl(AFDOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    constexpr const char* kLoss = "AFDLoss";
    const auto s = static_cast<int64_t>(options.student_shapes().size());
    const auto t = static_cast<int64_t>(options.teacher_shapes().size());
    if (s < 1 || t < 1) fail(kLoss, ": needs at least one student and one teacher shape, got ", s, " and ", t);
    check_size(kLoss, "qk_dim", options.qk_dim());
    for (const auto* shapes : {&options.student_shapes(), &options.teacher_shapes()})
      for (const auto& shape : *shapes) {
        if (shape.size() != 3) fail(kLoss, ": every shape must be [C, H, W], got ", torch::IntArrayRef(shape));
        for (int64_t size : shape) check_size(kLoss, "a shape's size", size);
      }
    check_parameters(kLoss, 1.0 * (s + t) * options.qk_dim());
    groups = group_shapes(options.teacher_shapes());
    p_t = register_parameter("p_t", torch::empty({t, options.qk_dim()}));
    p_s = register_parameter("p_s", torch::empty({s, options.qk_dim()}));
    torch::NoGradGuard no_grad;
    torch::nn::init::xavier_normal_(p_t);
    torch::nn::init::xavier_normal_(p_s);
  }

  torch::Tensor forward(const torch::Tensor& bilinear_key,
                        const std::vector<torch::Tensor>& student_values,
                        const torch::Tensor& query,
                        const std::vector<torch::Tensor>& teacher_values) {
    constexpr const char* kLoss = "AFDLoss";
    const int64_t s = p_s.size(0), t = p_t.size(0), qk = options.qk_dim();
    detail::check_rank(kLoss, "bilinear_key", bilinear_key, 4, "[N, s, t, qk]");
    const int64_t n = bilinear_key.size(0);
    auto expect = [&](std::string_view arg, const torch::Tensor& x, std::vector<int64_t> shape) {
      detail::check_same_kind(kLoss, "bilinear_key", bilinear_key, arg, x);
      if (x.sizes() != torch::IntArrayRef(shape))
        fail(kLoss, ": '", arg, "' must have shape ", torch::IntArrayRef(shape),
                     " (s = ", s, " student and t = ", t, " teacher features, qk_dim ", qk,
                     "), got ", x.sizes());
    };
    expect("bilinear_key", bilinear_key, {n, s, t, qk});
    expect("query", query, {n, t, qk});
    auto count = [&](std::string_view arg, size_t got, size_t want) {
      if (got != want) fail(kLoss, ": '", arg, "' must hold ", want, " tensors, got ", got);
    };
    count("student_values", student_values.size(), groups.unique.size());
    count("teacher_values", teacher_values.size(), static_cast<size_t>(t));
    for (size_t u = 0; u < groups.unique.size(); ++u)
      expect(concat("student_values[", u, "]"), student_values[u],
             {n, s, groups.unique[u][1] * groups.unique[u][2]});
    const auto& shapes = options.teacher_shapes();
    for (int64_t i = 0; i < t; ++i)
      expect(concat("teacher_values[", i, "]"), teacher_values[i],
             {n, shapes[i][1] * shapes[i][2]});

    auto key = detail::compute(bilinear_key), q = detail::compute(query);
    detail::check_parameters_match(kLoss, *this, key);
    // logit[n, i, j] = key[n, j, i, :] . q[n, i, :], then the learned prior p_t p_s^T.
    auto logit = torch::matmul(key.permute({0, 2, 1, 3}), q.unsqueeze(-1)).squeeze(-1);
    auto att = torch::softmax((logit + p_t.matmul(p_s.t())) / std::sqrt(static_cast<double>(qk)), 2);
    torch::Tensor loss;
    for (int64_t i = 0; i < t; ++i) {
      auto vs = detail::compute(student_values[groups.group[i]]);
      auto vt = detail::compute(teacher_values[i]).unsqueeze(1);
      auto term = (att.select(1, i) * (vs - vt).square().mean(2)).sum(1).mean();
      loss = loss.defined() ? loss + term : term;
    }
    return loss;
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "distill::AFDLoss(student_features=" << p_s.size(0)
           << ", teacher_features=" << p_t.size(0) << ", qk_dim=" << options.qk_dim() << ")";
  }

  AFDOptions options;
  ShapeGroups groups;
  torch::Tensor p_t, p_s;
};
TORCH_MODULE(AFDLoss);

}  // namespace distill
