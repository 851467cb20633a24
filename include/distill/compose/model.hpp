#pragma once
// distill::FeatureModel: what DistillationModel and AttentionModel compose.

#include <string>
#include <vector>

#include "distill/compose/layer.hpp"
#include "distill/core/features.hpp"

namespace distill {

/// A model in a composition: it maps images, or the Features of the model before it in an
/// AttentionModel chain, to Features. Backbones take images; transforms such as the AFD
/// LinearTransformTeacher take features. Overriding classes add `using FeatureModel::forward;`
/// so that the other overload stays visible.
class FeatureModel : public Layer {
 public:
  virtual std::string name() const = 0;

  virtual Features forward(const torch::Tensor& images) {
    (void)images;
    fail(name(), ": takes the features of the model before it, not images; put it after a "
                         "backbone in an AttentionModel");
  }
  virtual Features forward(const Features& features) {
    (void)features;
    fail(name(), ": takes images, not features; it must come first in an AttentionModel");
  }

  /// Parameters the reference trains without weight decay (e.g. the BatchNorm scales and
  /// shifts of PP-LCNet and MobileNetV3, whose ParamAttr sets L2Decay(0)).
  virtual std::vector<torch::Tensor> no_weight_decay_parameters() const { return {}; }

  /// The weights file last loaded into this model and how many tensors it gave (empty: none;
  /// the model keeps its initialisation), for reports: `distill check`, the teacher check.
  void set_weights_origin(std::string file, int64_t tensors) {
    weights_file_ = std::move(file);
    weights_tensors_ = tensors;
  }
  const std::string& weights_file() const { return weights_file_; }
  int64_t weights_tensors() const { return weights_tensors_; }

 private:
  std::string weights_file_;
  int64_t weights_tensors_ = 0;
};

}  // namespace distill
