#pragma once
// AFD's linear transforms (docs/reference.md §3): they turn a backbone's tapped feature maps
// into the queries, keys and values AFDLoss compares. They come after the backbone in an
// AttentionModel and are trained even when the backbone is frozen.

#include <cmath>
#include <string>
#include <vector>

#include "distill/compose/model.hpp"
#include "distill/losses/afd.hpp"
#include "distill/models/layers.hpp"

namespace distill::models {

namespace detail {

/// Linear -> BatchNorm1d -> optional ReLU.
class LinearBNImpl : public Layer {
 public:
  LinearBNImpl(int64_t in, int64_t out, bool relu) {
    linear = register_module("linear", torch::nn::Linear(in, out));
    bn = register_module("bn", torch::nn::BatchNorm1d(out));
    if (relu) this->relu = register_module("relu", Activation("relu"));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = call(bn, call(linear, x));
    return relu ? call(relu, y) : y;
  }
  torch::nn::Linear linear{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  Activation relu{nullptr};
};
TORCH_MODULE(LinearBN);

inline void check_shapes(const char* who, const FeatureShapes& shapes, const char* what) {
  if (shapes.empty()) distill::fail(who, ": ", what, " is empty");
  for (const auto& s : shapes) {
    if (s.size() != 3) distill::fail(who, ": every shape in ", what, " must be [C, H, W], got ", torch::IntArrayRef(s));
    for (int64_t size : s) check_size(who, std::string("a size in ") + what, size);
  }
}

inline void check_keys(const char* who, const FeatureShapes& shapes, const std::vector<std::string>& keys,
                       const char* what) {
  check_shapes(who, shapes, what);
  if (shapes.size() != keys.size())
    distill::fail(who, ": ", what, " lists ", shapes.size(), " shapes for ", keys.size(),
                          " keys; they must pair up one to one");
}

/// The tapped map `key` of `features`, checked against its configured [C, H, W].
inline torch::Tensor feature_map(const char* who, const Features& features, const std::string& key,
                                 const std::vector<int64_t>& shape) {
  if (!features.contains(key))
    distill::fail(who, ": the model before it returned no '", key, "'; it returned ",
                          features.describe_keys());
  const auto& map = features.at(key);
  if (map.dim() != 4 || map.size(1) != shape[0] || map.size(2) != shape[1] || map.size(3) != shape[2])
    distill::fail(who, ": '", key, "' is ", map.sizes(), " but the configured shape is [N, ",
                          shape[0], ", ", shape[1], ", ", shape[2], "]");
  return map;
}

inline torch::Tensor normalize_rows(const torch::Tensor& x, int64_t dim) {
  return torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().p(2).dim(dim).eps(1e-12));
}

}  // namespace detail

/// Options of LinearTransformTeacher: the query width and the teacher's tapped maps (their
/// [C, H, W] shapes and output names).
struct LinearTransformTeacherOptions {
  TORCH_ARG(int64_t, qk_dim) = 128;
  TORCH_ARG(FeatureShapes, t_shapes);
  TORCH_ARG(std::vector<std::string>, keys);
};

/// Options of LinearTransformStudent: the query width, the teacher's shapes (for the value
/// groups) and the student's tapped maps.
struct LinearTransformStudentOptions {
  TORCH_ARG(int64_t, qk_dim) = 128;
  TORCH_ARG(FeatureShapes, t_shapes);
  TORCH_ARG(FeatureShapes, s_shapes);
  TORCH_ARG(std::vector<std::string>, keys);
};

/// From the teacher's t tapped maps f_i: query [N, t, qk] with query_i = BN(Linear(mean_hw f_i))
/// (no ReLU), and values "value[i]" = L2-normalised channel means of f_i^2, [N, H_i W_i].
class LinearTransformTeacherImpl : public FeatureModel {
 public:
  explicit LinearTransformTeacherImpl(const LinearTransformTeacherOptions& o)
      : LinearTransformTeacherImpl(o.qk_dim(), o.t_shapes(), o.keys()) {}
  LinearTransformTeacherImpl(int64_t qk_dim, FeatureShapes teacher_shapes, std::vector<std::string> keys)
      : shapes_(std::move(teacher_shapes)), keys_(std::move(keys)) {
    detail::check_keys("LinearTransformTeacher", shapes_, keys_, "t_shapes");
    check_size("LinearTransformTeacher", "qk_dim", qk_dim);
    double estimate = 0;
    for (const auto& s : shapes_) estimate += static_cast<double>(s[0]) * qk_dim;
    check_parameters("LinearTransformTeacher", estimate);
    query_layers = register_module("query_layer", torch::nn::ModuleList());
    for (const auto& s : shapes_) query_layers->push_back(detail::LinearBN(s[0], qk_dim, false));
    paddle_default_init(*this);
  }
  using FeatureModel::forward;
  std::string name() const override { return "LinearTransformTeacher"; }

  Features forward(const Features& features) override {
    std::vector<torch::Tensor> queries;
    Features out;
    for (size_t i = 0; i < keys_.size(); ++i) {
      auto f = detail::feature_map("LinearTransformTeacher", features, keys_[i], shapes_[i]);
      auto layer = query_layers->ptr<detail::LinearBNImpl>(i);
      queries.push_back(call(layer, f.mean({2, 3})));
      out.set("value[" + std::to_string(i) + "]", detail::normalize_rows(f.square().mean(1).flatten(1), 1));
    }
    Features result{{"query", torch::stack(queries, 1)}};
    for (const auto& [k, v] : out) result.set(k, v);
    return result;
  }

  torch::nn::ModuleList query_layers{nullptr};

 private:
  FeatureShapes shapes_;
  std::vector<std::string> keys_;
};
TORCH_MODULE(LinearTransformTeacher);

/// From the student's s tapped maps g_j: "bilinear_key" [N, s, t, qk] = BN(Linear(key)) with
/// key_j = ReLU(BN(Linear(mean_hw g_j))), and per teacher shape group u a value "value[u]"
/// [N, s, H_u W_u]: channel means of g_j^2 adaptively pooled to the group's size, L2-normalised.
class LinearTransformStudentImpl : public FeatureModel {
 public:
  explicit LinearTransformStudentImpl(const LinearTransformStudentOptions& o)
      : LinearTransformStudentImpl(o.qk_dim(), o.t_shapes(), o.s_shapes(), o.keys()) {}
  LinearTransformStudentImpl(int64_t qk_dim, FeatureShapes teacher_shapes, FeatureShapes student_shapes,
                             std::vector<std::string> keys)
      : teacher_groups_(group_shapes(teacher_shapes)), shapes_(std::move(student_shapes)), keys_(std::move(keys)),
        qk_dim_(qk_dim), teachers_(static_cast<int64_t>(teacher_shapes.size())) {
    detail::check_keys("LinearTransformStudent", shapes_, keys_, "s_shapes");
    detail::check_shapes("LinearTransformStudent", teacher_shapes, "t_shapes");
    check_size("LinearTransformStudent", "qk_dim", qk_dim);
    double estimate = static_cast<double>(qk_dim) * qk_dim * teachers_;
    for (const auto& s : shapes_) estimate += static_cast<double>(s[0]) * qk_dim;
    check_parameters("LinearTransformStudent", estimate);
    key_layers = register_module("key_layer", torch::nn::ModuleList());
    for (const auto& s : shapes_) key_layers->push_back(detail::LinearBN(s[0], qk_dim, true));
    bilinear = register_module("bilinear", detail::LinearBN(qk_dim, qk_dim * teachers_, false));
    paddle_default_init(*this);
  }
  using FeatureModel::forward;
  std::string name() const override { return "LinearTransformStudent"; }

  Features forward(const Features& features) override {
    std::vector<torch::Tensor> maps, keys;
    for (size_t j = 0; j < keys_.size(); ++j) {
      auto g = detail::feature_map("LinearTransformStudent", features, keys_[j], shapes_[j]);
      auto layer = key_layers->ptr<detail::LinearBNImpl>(j);
      keys.push_back(call(layer, g.mean({2, 3})));
      maps.push_back(g.square().mean(1, /*keepdim=*/true));
    }
    const int64_t n = keys.front().size(0), s = static_cast<int64_t>(keys_.size());
    auto key = torch::stack(keys, 1).reshape({n * s, qk_dim_});
    Features out{{"bilinear_key", call(bilinear, key).reshape({n, s, teachers_, qk_dim_})}};
    for (size_t u = 0; u < teacher_groups_.unique.size(); ++u) {
      const auto& shape = teacher_groups_.unique[u];
      std::vector<torch::Tensor> pooled;
      for (const auto& m : maps) pooled.push_back(torch::adaptive_avg_pool2d(m, {shape[1], shape[2]}).flatten(1));
      out.set("value[" + std::to_string(u) + "]", detail::normalize_rows(torch::stack(pooled, 1), 2));
    }
    return out;
  }

  torch::nn::ModuleList key_layers{nullptr};
  detail::LinearBN bilinear{nullptr};

 private:
  ShapeGroups teacher_groups_;
  FeatureShapes shapes_;
  std::vector<std::string> keys_;
  int64_t qk_dim_, teachers_;
};
TORCH_MODULE(LinearTransformStudent);

/// Recipe keys of LinearTransformTeacher: qk_dim, t_shapes and keys (required).
inline void describe(Schema& s, LinearTransformTeacherOptions& o) {
  s.field("qk_dim", o.qk_dim());
  s.required("t_shapes", o.t_shapes());
  s.required("keys", o.keys());
}
/// Recipe keys of LinearTransformStudent: qk_dim, t_shapes, s_shapes and keys (required).
inline void describe(Schema& s, LinearTransformStudentOptions& o) {
  s.field("qk_dim", o.qk_dim());
  s.required("t_shapes", o.t_shapes());
  s.required("s_shapes", o.s_shapes());
  s.required("keys", o.keys());
}
namespace detail {
inline const bool afd_transforms_registered =
    register_feature_model<LinearTransformTeacherImpl>("LinearTransformTeacher", LinearTransformTeacherOptions()) &&
    register_feature_model<LinearTransformStudentImpl>("LinearTransformStudent", LinearTransformStudentOptions());
}

}  // namespace distill::models
