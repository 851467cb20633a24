#pragma once
// Res2Net-vd (26w_4s) as the reference builds it (PaddleClas model_zoo res2net_vd: the
// SSLD teacher Res2Net200_vd_26w_4s). Module names are the reference's, so its .pdparams load
// (io::from_paddle) and its block names are the feature taps.

#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "distill/models/layers.hpp"

namespace distill::models {

/// Options of Res2Net_vd: depth 50, 101 or 200; `width` channels per scale in the first
/// stage, `scales` groups per block (26w_4s: 26 and 4).
struct Res2NetOptions {
  explicit Res2NetOptions(int64_t depth) : depth_(depth) {}
  TORCH_ARG(int64_t, depth);
  TORCH_ARG(int64_t, width) = 26;
  TORCH_ARG(int64_t, scales) = 4;
  TORCH_ARG(int64_t, class_num) = 1000;
};

namespace detail {

/// The reference's ConvBNLayer of this network: an optional 2x2 average pool (vd
/// shortcuts), conv (no bias), BatchNorm with its activation. Paddle's names: _pool2d_avg,
/// _conv, _batch_norm.
class Res2NetConvBNImpl : public Layer {
 public:
  Res2NetConvBNImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, bool relu, bool vd_pool = false)
      : relu_(relu) {
    namespace nn = torch::nn;
    if (vd_pool)
      pool = register_module("_pool2d_avg", nn::AvgPool2d(nn::AvgPool2dOptions(2).stride(2).ceil_mode(true).count_include_pad(false)));
    conv = register_module("_conv", nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding((kernel - 1) / 2).bias(false)));
    bn = register_module("_batch_norm", nn::BatchNorm2d(out));
  }
  torch::Tensor forward(torch::Tensor x) {
    if (pool) x = call(pool, x);
    x = call(bn, call(conv, x));
    return relu_ ? torch::relu(x) : x;
  }
  torch::nn::AvgPool2d pool{nullptr};
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};

 private:
  bool relu_;
};
TORCH_MODULE(Res2NetConvBN);

/// The bottleneck: 1x1 conv0, the channels split into `scales` groups, a 3x3 conv on each
/// group but the last (after adding the previous group's output, except in downsampling
/// blocks), the last group passed on (average-pooled in downsampling blocks), 1x1 conv2, and
/// the shortcut.
class Res2NetBlockImpl : public Layer {
 public:
  Res2NetBlockImpl(const std::string& name, int64_t in, int64_t out, int64_t width, int64_t stride, int64_t scales,
                   bool projection, bool first)
      : stride_(stride), scales_(scales) {
    namespace nn = torch::nn;
    conv0 = register_module("conv0", Res2NetConvBN(in, width, 1, 1, true));
    for (int64_t s = 1; s < scales; ++s)
      branches.push_back(register_module(name + "_branch2b_" + std::to_string(s),
                                         Res2NetConvBN(width / scales, width / scales, 3, stride, true)));
    pool = register_module("pool2d_avg", nn::AvgPool2d(nn::AvgPool2dOptions(3).stride(stride).padding(1).count_include_pad(false)));
    conv2 = register_module("conv2", Res2NetConvBN(width, out, 1, 1, false));
    if (projection) shortcut = register_module("short", Res2NetConvBN(in, out, 1, 1, false, /*vd_pool=*/!first));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto groups = call(conv0, x).chunk(scales_, 1);
    std::vector<torch::Tensor> ys;
    for (size_t s = 0; s < branches.size(); ++s)
      ys.push_back(call(branches[s], s == 0 || stride_ == 2 ? groups[s] : groups[s] + ys.back()));
    ys.push_back(stride_ == 1 ? groups.back() : call(pool, groups.back()));
    const auto y = call(conv2, torch::cat(ys, 1));
    return torch::relu(y + (shortcut ? call(shortcut, x) : x));
  }
  Res2NetConvBN conv0{nullptr}, conv2{nullptr}, shortcut{nullptr};
  std::vector<Res2NetConvBN> branches;
  torch::nn::AvgPool2d pool{nullptr};

 private:
  int64_t stride_, scales_;
};
TORCH_MODULE(Res2NetBlock);

inline std::array<int64_t, 4> res2net_depths(int64_t depth) {
  switch (depth) {
    case 50: return {3, 4, 6, 3};
    case 101: return {3, 4, 23, 3};
    case 200: return {3, 12, 48, 3};
    default: distill::fail("Res2Net_vd: depth must be 50, 101 or 200, got ", depth);
  }
}

}  // namespace detail

/// Res2Net-vd with named feature taps: the stem "conv1_1" .. "conv1_3", blocks "bb_<stage>_<i>"
/// (stages 0..3), head "pool2d_avg" and "out" (the reference's names).
///
///   distill::models::Res2Net teacher(distill::models::Res2NetOptions(200));
///   distill::io::load_state_dict(*teacher, "Res2Net200_vd_26w_4s_ssld_pretrained.pdparams");
class Res2NetImpl : public Backbone {
 public:
  explicit Res2NetImpl(Res2NetOptions options) : options(std::move(options)) {
    namespace nn = torch::nn;
    const auto& o = this->options;
    check_size("Res2Net_vd", "class_num", o.class_num());
    check_size("Res2Net_vd", "width", o.width());
    check_size("Res2Net_vd", "scales", o.scales(), 2);
    if (o.width() > 4096 || o.scales() > 64) distill::fail("Res2Net_vd: width ", o.width(), " x scales ", o.scales(), " is too large");
    check_parameters("Res2Net_vd", 8e7 * (o.width() * o.scales() / 104.0) * (o.width() * o.scales() / 104.0) + 2048.0 * o.class_num());
    depths_ = detail::res2net_depths(o.depth());
    conv1_1 = register_module("conv1_1", detail::Res2NetConvBN(3, 32, 3, 2, true));
    conv1_2 = register_module("conv1_2", detail::Res2NetConvBN(32, 32, 3, 1, true));
    conv1_3 = register_module("conv1_3", detail::Res2NetConvBN(32, 64, 3, 1, true));
    max_pool = register_module("pool2d_max", nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1)));
    int64_t in = 64;
    for (int64_t stage = 0; stage < 4; ++stage)
      for (int64_t i = 0; i < depths_[stage]; ++i) {
        // The reference's conv names: "res4a", "res4b1".. in the long third stage of the deep
        // variants, "res2a", "res2b".. elsewhere.
        const std::string prefix = "res" + std::to_string(stage + 2);
        const std::string name = o.depth() > 50 && stage == 2 ? prefix + (i == 0 ? "a" : "b" + std::to_string(i))
                                                              : prefix + static_cast<char>('a' + i);
        const int64_t out = int64_t{256} << stage;
        blocks.push_back(register_module("bb_" + std::to_string(stage) + "_" + std::to_string(i),
                                         detail::Res2NetBlock(name, in, out, o.width() * o.scales() << stage,
                                                              i == 0 && stage > 0 ? 2 : 1, o.scales(), i == 0,
                                                              stage == 0 && i == 0)));
        in = out;
      }
    avg_pool = register_module("pool2d_avg", nn::AdaptiveAvgPool2d(1));
    fc = register_module("out", nn::Linear(in, o.class_num()));
    paddle_default_init(*this);
    // The reference's fc: uniform(+-1/sqrt(C)) weights.
    torch::NoGradGuard no_grad;
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    fc->weight.uniform_(-bound, bound);
  }

  std::string name() const override { return "Res2Net" + std::to_string(options.depth()) + "_vd"; }
  /// The last block of each stage.
  std::vector<std::string> stage_patterns() const override {
    std::vector<std::string> stages;
    for (size_t s = 0; s < 4; ++s) stages.push_back("bb_" + std::to_string(s) + "_" + std::to_string(depths_[s] - 1));
    return stages;
  }

  Res2NetOptions options;
  detail::Res2NetConvBN conv1_1{nullptr}, conv1_2{nullptr}, conv1_3{nullptr};
  torch::nn::MaxPool2d max_pool{nullptr};
  std::vector<detail::Res2NetBlock> blocks;
  torch::nn::AdaptiveAvgPool2d avg_pool{nullptr};
  torch::nn::Linear fc{nullptr};

 protected:
  torch::Tensor forward_logits(const torch::Tensor& input) override {
    auto x = call(max_pool, call(conv1_3, call(conv1_2, call(conv1_1, input))));
    for (auto& block : blocks) x = call(block, x);
    return call(fc, call(avg_pool, x).flatten(1));
  }

 private:
  std::array<int64_t, 4> depths_{};
};
TORCH_MODULE(Res2Net);

/// Recipe keys of Res2Net_vd: class_num. Registered as Res2Net50_vd_26w_4s,
/// Res2Net101_vd_26w_4s and Res2Net200_vd_26w_4s.
inline void describe(Schema& s, Res2NetOptions& o) { s.field("class_num", o.class_num()); }
namespace detail {
inline const bool res2net_registered = [] {
  for (int64_t depth : {50, 101, 200})
    register_backbone<Res2NetImpl>("Res2Net" + std::to_string(depth) + "_vd_26w_4s", Res2NetOptions(depth));
  return true;
}();
}  // namespace detail

}  // namespace distill::models
