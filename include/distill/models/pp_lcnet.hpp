#pragma once
// PP-LCNet at scales 0.25 .. 2.5 (docs/reference.md §4.2).

#include <string>
#include <vector>

#include "distill/models/layers.hpp"

namespace distill::models {

/// Options of PPLCNet; the reference's defaults. `dropout_prob` is Paddle-style (see
/// DownscaleDropout).
struct PPLCNetOptions {
  explicit PPLCNetOptions(double scale) : scale_(scale) {}
  TORCH_ARG(double, scale);
  TORCH_ARG(int64_t, class_num) = 1000;
  TORCH_ARG(int64_t, class_expand) = 1280;
  TORCH_ARG(double, dropout_prob) = 0.2;
};

namespace detail {

/// Depthwise kxk ConvBN -> optional SE -> pointwise 1x1 ConvBN, hardswish throughout.
class DepthwiseSeparableImpl : public Layer {
 public:
  DepthwiseSeparableImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, bool use_se) {
    dw_conv = register_module("dw_conv", ConvBN(in, in, kernel, stride, in, "hardswish"));
    if (use_se) se = register_module("se", SE(in, 4, 1.0 / 6.0));
    pw_conv = register_module("pw_conv", ConvBN(in, out, 1, 1, 1, "hardswish"));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = call(dw_conv, x);
    if (se) y = call(se, y);
    return call(pw_conv, y);
  }
  ConvBN dw_conv{nullptr}, pw_conv{nullptr};
  SE se{nullptr};
};
TORCH_MODULE(DepthwiseSeparable);

struct LCNetBlock {
  int64_t kernel, in, out, stride;
  bool se;
};

/// The reference's NET_CONFIG: stages blocks2..blocks6 at scale 1.
inline const std::vector<std::vector<LCNetBlock>>& lcnet_config() {
  static const std::vector<std::vector<LCNetBlock>> config{
      {{3, 16, 32, 1, false}},
      {{3, 32, 64, 2, false}, {3, 64, 64, 1, false}},
      {{3, 64, 128, 2, false}, {3, 128, 128, 1, false}},
      {{3, 128, 256, 2, false}, {5, 256, 256, 1, false}, {5, 256, 256, 1, false}, {5, 256, 256, 1, false},
       {5, 256, 256, 1, false}, {5, 256, 256, 1, false}},
      {{5, 256, 512, 2, true}, {5, 512, 512, 1, true}}};
  return config;
}

}  // namespace detail

/// PP-LCNet with named feature taps; stages "blocks2" .. "blocks6".
///
///   distill::models::PPLCNet lcnet(distill::models::PPLCNetOptions(2.5));
///   lcnet->set_return_patterns({"blocks5"});
class PPLCNetImpl : public ExpandHeadBackbone {
 public:
  explicit PPLCNetImpl(PPLCNetOptions options) : options(std::move(options)) {
    namespace nn = torch::nn;
    const auto& o = this->options;
    if (!(o.scale() > 0 && o.scale() <= 64)) distill::fail("PPLCNet: scale must be in (0, 64], got ", o.scale());
    check_head_size(o.scale(), o.class_expand(), o.class_num());
    auto width = [&](int64_t c) { return make_divisible(c * o.scale()); };
    conv1 = register_module("conv1", ConvBN(3, width(16), 3, 2, 1, "hardswish"));
    const auto& config = detail::lcnet_config();
    for (size_t s = 0; s < config.size(); ++s) {
      stages[s] = register_module("blocks" + std::to_string(s + 2), nn::Sequential());
      for (const auto& b : config[s])
        stages[s]->push_back(detail::DepthwiseSeparable(width(b.in), width(b.out), b.kernel, b.stride, b.se));
    }
    build_head(width(512), o.class_expand(), o.dropout_prob(), o.class_num());
    paddle_default_init(*this);
    // The reference initialises the ConvBN convolutions Kaiming-normal (fan_in).
    torch::NoGradGuard no_grad;
    for (auto& m : modules(/*include_self=*/false))
      if (auto* unit = dynamic_cast<ConvBNImpl*>(m.get())) torch::nn::init::kaiming_normal_(unit->conv->weight);
  }

  std::string name() const override { return "PPLCNet(scale=" + std::to_string(options.scale()) + ")"; }
  std::vector<std::string> stage_patterns() const override {
    return {"blocks2", "blocks3", "blocks4", "blocks5", "blocks6"};
  }

  PPLCNetOptions options;
  ConvBN conv1{nullptr};
  std::array<torch::nn::Sequential, 5> stages{nullptr, nullptr, nullptr, nullptr, nullptr};

 protected:
  torch::Tensor forward_logits(const torch::Tensor& input) override {
    auto x = call(conv1, input);
    for (auto& stage : stages) x = run(stage, x);
    return head(x);
  }
};
TORCH_MODULE(PPLCNet);

/// Recipe keys of PP-LCNet: class_num, class_expand, dropout_prob. Registered as
/// PPLCNet_x0_25 .. PPLCNet_x2_5.
inline void describe(Schema& s, PPLCNetOptions& o) {
  s.field("class_num", o.class_num());
  s.field("class_expand", o.class_expand());
  s.field("dropout_prob", o.dropout_prob());
}
namespace detail {
inline const bool lcnet_registered = [] {
  const std::pair<const char*, double> scales[] = {{"0_25", 0.25}, {"0_35", 0.35}, {"0_5", 0.5}, {"0_75", 0.75},
                                                   {"1_0", 1.0},   {"1_5", 1.5},   {"2_0", 2.0}, {"2_5", 2.5}};
  for (const auto& [suffix, scale] : scales) register_backbone<PPLCNetImpl>(std::string("PPLCNet_x") + suffix, PPLCNetOptions(scale));
  return true;
}();
}  // namespace detail

}  // namespace distill::models
