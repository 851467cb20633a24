#pragma once
// PP-HGNet tiny, small and base as the reference builds them (PaddleClas legendary
// pp_hgnet: VoVNet-style HG blocks with effective squeeze-excitation). Module names are the
// reference's, so its .pdparams load (io::from_paddle) and its names are the feature taps.

#include <array>
#include <string>
#include <vector>

#include "distill/models/layers.hpp"

namespace distill::models {

/// The three PP-HGNet networks.
enum class PPHGNetSize { tiny, small, base };

/// Options of PPHGNet; the reference's defaults (base: dropout 0.2, the others 0).
struct PPHGNetOptions {
  explicit PPHGNetOptions(PPHGNetSize size) : size_(size), dropout_prob_(size == PPHGNetSize::base ? 0.2 : 0.0) {}
  TORCH_ARG(PPHGNetSize, size);
  TORCH_ARG(int64_t, class_num) = 1000;
  TORCH_ARG(int64_t, class_expand) = 2048;
  TORCH_ARG(bool, use_last_conv) = true;
  TORCH_ARG(double, dropout_prob);
};

namespace detail {

/// conv (no bias) -> BatchNorm -> optional ReLU; names conv, bn.
class HGConvBNImpl : public Layer {
 public:
  HGConvBNImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups = 1, bool act = true) : act_(act) {
    namespace nn = torch::nn;
    conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding((kernel - 1) / 2)
                                                   .groups(groups).bias(false)));
    bn = register_module("bn", nn::BatchNorm2d(out));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = call(bn, call(conv, x));
    return act_ ? torch::relu(y) : y;
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};

 private:
  bool act_;
};
TORCH_MODULE(HGConvBN);

/// Effective squeeze-excitation: x * sigmoid(conv(avgpool(x))), one 1x1 conv with bias.
class ESEImpl : public Layer {
 public:
  explicit ESEImpl(int64_t channels) {
    namespace nn = torch::nn;
    avg_pool = register_module("avg_pool", nn::AdaptiveAvgPool2d(1));
    conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(channels, channels, 1)));
  }
  torch::Tensor forward(const torch::Tensor& x) { return x * torch::sigmoid(call(conv, call(avg_pool, x))); }
  torch::nn::AdaptiveAvgPool2d avg_pool{nullptr};
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(ESE);

/// `layer_num` 3x3 ConvBNs in a chain; the input and every output concatenated, a 1x1
/// aggregation ConvBN, effective SE (x * sigmoid(conv(avgpool(x))), "att"), and the identity
/// in all but a stage's first block.
class HGBlockImpl : public Layer {
 public:
  HGBlockImpl(int64_t in, int64_t mid, int64_t out, int64_t layer_num, bool identity) : identity_(identity) {
    namespace nn = torch::nn;
    layers = register_module("layers", nn::ModuleList());
    for (int64_t i = 0; i < layer_num; ++i) {
      convs.push_back(HGConvBN(i == 0 ? in : mid, mid, 3, 1));
      layers->push_back(convs.back());
    }
    aggregation_conv = register_module("aggregation_conv", HGConvBN(in + layer_num * mid, out, 1, 1));
    att = register_module("att", ESE(out));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    std::vector<torch::Tensor> outputs{x};
    for (auto& conv : convs) outputs.push_back(call(conv, outputs.back()));
    auto y = call(aggregation_conv, torch::cat(outputs, 1));
    y = call(att, y);
    return identity_ ? y + x : y;
  }
  torch::nn::ModuleList layers{nullptr};  // the reference's names: layers.<i>
  std::vector<HGConvBN> convs;            // the same modules, for call()
  HGConvBN aggregation_conv{nullptr};
  ESE att{nullptr};

 private:
  bool identity_;
};
TORCH_MODULE(HGBlock);

/// An optional depthwise 3x3 stride-2 ConvBN ("downsample"), then the HG blocks ("blocks").
class HGStageImpl : public Layer {
 public:
  HGStageImpl(int64_t in, int64_t mid, int64_t out, int64_t block_num, int64_t layer_num, bool downsample_first) {
    if (downsample_first) downsample = register_module("downsample", HGConvBN(in, in, 3, 2, in, /*act=*/false));
    blocks = register_module("blocks", torch::nn::Sequential());
    for (int64_t b = 0; b < block_num; ++b) blocks->push_back(HGBlock(b == 0 ? in : out, mid, out, layer_num, b > 0));
  }
  torch::Tensor forward(const torch::Tensor& x) { return run(blocks, downsample ? call(downsample, x) : x); }
  HGConvBN downsample{nullptr};
  torch::nn::Sequential blocks{nullptr};
};
TORCH_MODULE(HGStage);

struct HGStageSpec {
  int64_t in, mid, out, blocks;
  bool downsample;
};
struct HGNetSpec {
  std::array<int64_t, 3> stem;
  int64_t layer_num;
  std::array<HGStageSpec, 4> stages;
};

inline HGNetSpec hgnet_spec(PPHGNetSize size) {
  switch (size) {
    case PPHGNetSize::tiny:
      return {{48, 48, 96}, 5, {{{96, 96, 224, 1, false}, {224, 128, 448, 1, true}, {448, 160, 512, 2, true}, {512, 192, 768, 1, true}}}};
    case PPHGNetSize::small:
      return {{64, 64, 128}, 6, {{{128, 128, 256, 1, false}, {256, 160, 512, 1, true}, {512, 192, 768, 2, true}, {768, 224, 1024, 1, true}}}};
    default:
      return {{96, 96, 160}, 7, {{{160, 192, 320, 1, false}, {320, 224, 640, 2, true}, {640, 256, 960, 3, true}, {960, 288, 1280, 2, true}}}};
  }
}

}  // namespace detail

/// PP-HGNet with named feature taps: "stem", "pool", stages "stages[0]" .. "stages[3]" (each
/// with "downsample" and "blocks[i]"), head "avg_pool", "last_conv", "fc".
///
///   distill::models::PPHGNet student(distill::models::PPHGNetOptions(distill::models::PPHGNetSize::base));
class PPHGNetImpl : public Backbone {
 public:
  explicit PPHGNetImpl(PPHGNetOptions options) : options(std::move(options)) {
    namespace nn = torch::nn;
    const auto& o = this->options;
    check_size("PPHGNet", "class_num", o.class_num());
    check_size("PPHGNet", "class_expand", o.class_expand());
    check_parameters("PPHGNet", 7e7 + static_cast<double>(o.class_expand()) * (1280.0 + o.class_num()));
    const auto spec = detail::hgnet_spec(o.size());
    stem = register_module("stem", nn::Sequential());
    int64_t in = 3;
    for (size_t i = 0; i < spec.stem.size(); ++i) {
      stem->push_back(detail::HGConvBN(in, spec.stem[i], 3, i == 0 ? 2 : 1));
      in = spec.stem[i];
    }
    pool = register_module("pool", nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1)));
    stage_list = register_module("stages", nn::ModuleList());
    for (const auto& s : spec.stages) {
      stages.push_back(detail::HGStage(s.in, s.mid, s.out, s.blocks, spec.layer_num, s.downsample));
      stage_list->push_back(stages.back());
      in = s.out;
    }
    avg_pool = register_module("avg_pool", nn::AdaptiveAvgPool2d(1));
    if (o.use_last_conv()) {
      last_conv = register_module("last_conv", nn::Conv2d(nn::Conv2dOptions(in, o.class_expand(), 1).bias(false)));
      dropout = register_module("dropout", DownscaleDropout(o.dropout_prob()));
      in = o.class_expand();
    }
    fc = register_module("fc", nn::Linear(in, o.class_num()));
    // The reference: Kaiming-normal convolutions, BatchNorm 1 / 0, zero Linear bias.
    torch::NoGradGuard no_grad;
    for (auto& m : modules(/*include_self=*/false))
      if (auto* conv = dynamic_cast<nn::Conv2dImpl*>(m.get())) nn::init::kaiming_normal_(conv->weight);
    fc->bias.zero_();
  }

  std::string name() const override {
    const char* sizes[] = {"tiny", "small", "base"};
    return std::string("PPHGNet_") + sizes[static_cast<int>(options.size())];
  }
  std::vector<std::string> stage_patterns() const override { return {"stages[0]", "stages[1]", "stages[2]", "stages[3]"}; }

  /// The reference gives every BatchNorm L2Decay(0).
  std::vector<torch::Tensor> no_weight_decay_parameters() const override { return batchnorm_affine_parameters(*this); }

  PPHGNetOptions options;
  torch::nn::Sequential stem{nullptr};
  torch::nn::ModuleList stage_list{nullptr};  // the reference's names: stages.<i>
  std::vector<detail::HGStage> stages;        // the same modules, for call()
  torch::nn::MaxPool2d pool{nullptr};
  torch::nn::AdaptiveAvgPool2d avg_pool{nullptr};
  torch::nn::Conv2d last_conv{nullptr};
  DownscaleDropout dropout{nullptr};
  torch::nn::Linear fc{nullptr};

 protected:
  torch::Tensor forward_logits(const torch::Tensor& input) override {
    auto x = call(pool, run(stem, input));
    for (auto& stage : stages) x = call(stage, x);
    x = call(avg_pool, x);
    if (last_conv) x = call(dropout, torch::relu(call(last_conv, x)));
    return call(fc, x.flatten(1));
  }
};
TORCH_MODULE(PPHGNet);

/// Recipe keys of PP-HGNet: class_num, class_expand, use_last_conv, dropout_prob. Registered
/// as PPHGNet_tiny, PPHGNet_small, PPHGNet_base.
inline void describe(Schema& s, PPHGNetOptions& o) {
  s.field("class_num", o.class_num());
  s.field("class_expand", o.class_expand());
  s.field("use_last_conv", o.use_last_conv());
  s.field("dropout_prob", o.dropout_prob());
}
namespace detail {
inline const bool pphgnet_registered = [] {
  register_backbone<PPHGNetImpl>("PPHGNet_tiny", PPHGNetOptions(PPHGNetSize::tiny));
  register_backbone<PPHGNetImpl>("PPHGNet_small", PPHGNetOptions(PPHGNetSize::small));
  register_backbone<PPHGNetImpl>("PPHGNet_base", PPHGNetOptions(PPHGNetSize::base));
  return true;
}();
}  // namespace detail

}  // namespace distill::models
