#pragma once
// MobileNetV3 large and small as the reference builds them (PaddleClas legendary
// mobilenet_v3: an expand conv in every unit, SE with hardsigmoid(0.2x + 0.5)).

#include <string>
#include <vector>

#include "distill/models/layers.hpp"

namespace distill::models {

/// The two MobileNetV3 networks.
enum class MobileNetV3Size { large, small };

/// Options of MobileNetV3.
struct MobileNetV3Options {
  explicit MobileNetV3Options(MobileNetV3Size size) : size_(size) {}
  TORCH_ARG(MobileNetV3Size, size);
  TORCH_ARG(double, scale) = 1.0;
  TORCH_ARG(int64_t, class_num) = 1000;
  TORCH_ARG(int64_t, class_expand) = 1280;
  TORCH_ARG(double, dropout_prob) = 0.2;
};

namespace detail {

/// expand 1x1 -> depthwise kxk -> optional SE -> linear 1x1, plus the identity when the
/// stride is 1 and the widths match.
class ResidualUnitImpl : public Layer {
 public:
  ResidualUnitImpl(int64_t in, int64_t mid, int64_t out, int64_t kernel, int64_t stride, bool use_se,
                   const std::string& act)
      : residual_(stride == 1 && in == out) {
    expand_conv = register_module("expand_conv", ConvBN(in, mid, 1, 1, 1, act));
    bottleneck_conv = register_module("bottleneck_conv", ConvBN(mid, mid, kernel, stride, mid, act));
    if (use_se) mid_se = register_module("mid_se", SE(mid, 4, 0.2));
    linear_conv = register_module("linear_conv", ConvBN(mid, out, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = call(bottleneck_conv, call(expand_conv, x));
    if (mid_se) y = call(mid_se, y);
    y = call(linear_conv, y);
    return residual_ ? x + y : y;
  }
  ConvBN expand_conv{nullptr}, bottleneck_conv{nullptr}, linear_conv{nullptr};
  SE mid_se{nullptr};

 private:
  bool residual_;
};
TORCH_MODULE(ResidualUnit);

struct MobileNetV3Unit {
  int64_t kernel, expand, out;
  bool se;
  const char* act;
  int64_t stride;
};

inline const std::vector<MobileNetV3Unit>& mobilenet_v3_config(MobileNetV3Size size) {
  static const std::vector<MobileNetV3Unit> large{
      {3, 16, 16, false, "relu", 1},       {3, 64, 24, false, "relu", 2},       {3, 72, 24, false, "relu", 1},
      {5, 72, 40, true, "relu", 2},        {5, 120, 40, true, "relu", 1},       {5, 120, 40, true, "relu", 1},
      {3, 240, 80, false, "hardswish", 2}, {3, 200, 80, false, "hardswish", 1}, {3, 184, 80, false, "hardswish", 1},
      {3, 184, 80, false, "hardswish", 1}, {3, 480, 112, true, "hardswish", 1}, {3, 672, 112, true, "hardswish", 1},
      {5, 672, 160, true, "hardswish", 2}, {5, 960, 160, true, "hardswish", 1}, {5, 960, 160, true, "hardswish", 1}};
  static const std::vector<MobileNetV3Unit> small{
      {3, 16, 16, true, "relu", 2},        {3, 72, 24, false, "relu", 2},       {3, 88, 24, false, "relu", 1},
      {5, 96, 40, true, "hardswish", 2},   {5, 240, 40, true, "hardswish", 1},  {5, 240, 40, true, "hardswish", 1},
      {5, 120, 48, true, "hardswish", 1},  {5, 144, 48, true, "hardswish", 1},  {5, 288, 96, true, "hardswish", 2},
      {5, 576, 96, true, "hardswish", 1},  {5, 576, 96, true, "hardswish", 1}};
  return size == MobileNetV3Size::large ? large : small;
}

}  // namespace detail

/// MobileNetV3 with named feature taps; units are "blocks[i]".
///
///   distill::models::MobileNetV3 teacher(distill::models::MobileNetV3Options(distill::models::MobileNetV3Size::large));
class MobileNetV3Impl : public ExpandHeadBackbone {
 public:
  explicit MobileNetV3Impl(MobileNetV3Options options) : options(std::move(options)) {
    namespace nn = torch::nn;
    const auto& o = this->options;
    const auto& config = detail::mobilenet_v3_config(o.size());
    if (!(o.scale() > 0 && o.scale() <= 64)) distill::fail("MobileNetV3: scale must be in (0, 64], got ", o.scale());
    check_head_size(o.scale(), o.class_expand(), o.class_num());
    auto width = [&](int64_t c) { return make_divisible(c * o.scale()); };
    const int64_t squeeze = o.size() == MobileNetV3Size::large ? 960 : 576;
    conv = register_module("conv", ConvBN(3, width(16), 3, 2, 1, "hardswish"));
    blocks = register_module("blocks", nn::Sequential());
    int64_t in = width(16);
    for (const auto& u : config) {
      blocks->push_back(detail::ResidualUnit(in, width(u.expand), width(u.out), u.kernel, u.stride, u.se, u.act));
      in = width(u.out);
    }
    last_second_conv = register_module("last_second_conv", ConvBN(in, width(squeeze), 1, 1, 1, "hardswish"));
    build_head(width(squeeze), o.class_expand(), o.dropout_prob(), o.class_num());
    paddle_default_init(*this);
  }

  std::string name() const override {
    return std::string("MobileNetV3_") + (options.size() == MobileNetV3Size::large ? "large" : "small");
  }
  std::vector<std::string> stage_patterns() const override {
    if (options.size() == MobileNetV3Size::large) return {"blocks[0]", "blocks[2]", "blocks[5]", "blocks[11]", "blocks[14]"};
    return {"blocks[0]", "blocks[2]", "blocks[7]", "blocks[10]"};
  }

  MobileNetV3Options options;
  ConvBN conv{nullptr}, last_second_conv{nullptr};
  torch::nn::Sequential blocks{nullptr};

 protected:
  torch::Tensor forward_logits(const torch::Tensor& input) override {
    return head(call(last_second_conv, run(blocks, call(conv, input))));
  }
};
TORCH_MODULE(MobileNetV3);

/// Recipe keys of MobileNetV3: class_num, class_expand, dropout_prob. Registered as
/// MobileNetV3_large_x0_35 .. _x1_25 and MobileNetV3_small_x0_35 .. _x1_25.
inline void describe(Schema& s, MobileNetV3Options& o) {
  s.field("class_num", o.class_num());
  s.field("class_expand", o.class_expand());
  s.field("dropout_prob", o.dropout_prob());
}
namespace detail {
inline const bool mobilenet_v3_registered = [] {
  const std::pair<const char*, double> scales[] = {{"0_35", 0.35}, {"0_5", 0.5}, {"0_75", 0.75}, {"1_0", 1.0}, {"1_25", 1.25}};
  for (const auto& [name, size] : {std::pair{"large", MobileNetV3Size::large}, std::pair{"small", MobileNetV3Size::small}})
    for (const auto& [suffix, scale] : scales)
      register_backbone<MobileNetV3Impl>(std::string("MobileNetV3_") + name + "_x" + suffix, MobileNetV3Options(size).scale(scale));
  return true;
}();
}  // namespace detail

}  // namespace distill::models
