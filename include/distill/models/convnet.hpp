#pragma once
// ConvNet: a small plain CNN for quick runs (Fashion-MNIST, tests) where the reference's
// ImageNet backbones are too slow on a CPU. Not part of the reference.

#include <string>
#include <vector>

#include "distill/models/layers.hpp"

namespace distill::models {

/// Options of ConvNet: one stage per width, each `depth` 3x3 ConvBN-ReLU units followed by a
/// 2x2 max-pool (except the last stage), then global average pooling and a Linear head.
/// batch_norm(false) makes the units conv(+bias)-ReLU: a network whose training output does not
/// depend on the rest of its batch (so data-parallel training with B/N per rank equals one
/// process with B exactly, which the tests check).
struct ConvNetOptions {
  explicit ConvNetOptions(std::vector<int64_t> widths = {16, 32, 64}) : widths_(std::move(widths)) {}
  TORCH_ARG(std::vector<int64_t>, widths);
  TORCH_ARG(int64_t, depth) = 1;
  TORCH_ARG(int64_t, class_num) = 10;
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(bool, batch_norm) = true;
};

/// A plain CNN with named stages "stages[i]" (and "avg_pool", "fc").
///
///   distill::models::ConvNet teacher(distill::models::ConvNetOptions({32, 64, 128}).depth(2).class_num(10));
class ConvNetImpl : public Backbone {
 public:
  explicit ConvNetImpl(ConvNetOptions options) : options(std::move(options)) {
    namespace nn = torch::nn;
    const auto& o = this->options;
    if (o.widths().empty()) distill::fail("ConvNet: widths must be non-empty");
    check_size("ConvNet", "depth", o.depth());
    check_size("ConvNet", "class_num", o.class_num());
    check_size("ConvNet", "in_channels", o.in_channels());
    double estimate = 0, previous = static_cast<double>(o.in_channels());
    for (int64_t w : o.widths()) {
      check_size("ConvNet", "widths", w);
      estimate += 9.0 * w * (previous + (o.depth() - 1.0) * w);
      previous = static_cast<double>(w);
    }
    check_parameters("ConvNet", estimate + previous * o.class_num());
    stages = register_module("stages", nn::ModuleList());
    int64_t in = o.in_channels();
    for (size_t s = 0; s < o.widths().size(); ++s) {
      nn::Sequential stage;
      for (int64_t d = 0; d < o.depth(); ++d) {
        if (o.batch_norm()) {
          stage->push_back(ConvBN(in, o.widths()[s], 3, 1, 1, "relu"));
        } else {
          stage->push_back(nn::Conv2d(nn::Conv2dOptions(in, o.widths()[s], 3).padding(1)));
          stage->push_back(nn::ReLU());
        }
        in = o.widths()[s];
      }
      if (s + 1 < o.widths().size()) stage->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2)));
      stages->push_back(stage);
    }
    avg_pool = register_module("avg_pool", nn::AdaptiveAvgPool2d(1));
    flatten = register_module("flatten", nn::Flatten());
    fc = register_module("fc", nn::Linear(in, o.class_num()));
    kaiming_fan_out_init(*this);
  }

  std::string name() const override { return "ConvNet"; }
  std::vector<std::string> stage_patterns() const override {
    std::vector<std::string> stages_list;
    for (size_t s = 0; s < options.widths().size(); ++s) stages_list.push_back("stages[" + std::to_string(s) + "]");
    return stages_list;
  }

  /// "stages[k]:pre_relu": the stage's last unit before its ReLU (and so before the stage's
  /// max-pool, at twice the stage's output size, except in the last stage).
  PreReLU pre_relu(const std::string& path) const override {
    auto* stage = dynamic_cast<torch::nn::SequentialImpl*>(module_at(path, "pre-ReLU tap").get());
    if (stage && options.batch_norm())
      for (size_t i = stage->size(); i-- > 0;)
        if (auto unit = stage->ptr(i)->as<ConvBNImpl>()) return {unit->act.get(), unit->bn.ptr()};
    distill::fail(name(), ": '", path, ":pre_relu' must name a stage (e.g. 'stages[2]:pre_relu') of a ConvNet with batch_norm");
  }

  ConvNetOptions options;
  torch::nn::ModuleList stages{nullptr};
  torch::nn::AdaptiveAvgPool2d avg_pool{nullptr};
  torch::nn::Flatten flatten{nullptr};
  torch::nn::Linear fc{nullptr};

 protected:
  torch::Tensor forward_logits(const torch::Tensor& input) override {
    auto x = input;
    for (size_t s = 0; s < stages->size(); ++s) {
      torch::nn::Sequential stage(stages->ptr<torch::nn::SequentialImpl>(s));
      x = run(stage, x);
    }
    return call(fc, call(flatten, call(avg_pool, tap(*stages, x))));
  }
};
TORCH_MODULE(ConvNet);

/// Recipe keys of ConvNet: widths, depth, class_num, in_channels, batch_norm.
inline void describe(Schema& s, ConvNetOptions& o) {
  s.field("widths", o.widths());
  s.field("depth", o.depth());
  s.field("class_num", o.class_num());
  s.field("in_channels", o.in_channels());
  s.field("batch_norm", o.batch_norm());
}
namespace detail {
inline const bool convnet_registered = register_backbone<ConvNetImpl>("ConvNet", ConvNetOptions());
}

}  // namespace distill::models
