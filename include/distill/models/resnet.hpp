#pragma once
// ResNet 18/34/50/101/152 in the reference's layout (and its "vd" variants) and in
// torchvision's layout (docs/reference.md §4.1).

#include <array>
#include <string>
#include <vector>

#include "distill/models/layers.hpp"

namespace distill::models {

/// Module layout of a ResNet: the reference's, or torchvision's (whose state dicts then load
/// as they are).
enum class ResNetLayout { paddle, torchvision };

/// Options of ResNet. `layout`:
/// - paddle (default): the reference's network. Blocks form one flat Sequential `blocks`
///   (patterns "blocks[i]"), and the first block of EVERY stage has a projection shortcut,
///   including stage 1 of ResNet18/34. `vd` switches to the ResNet-vd stem (three 3x3 convs)
///   and average-pool downsampling shortcuts.
/// - torchvision: torchvision's module names and structure (conv1, bn1, layer1..layer4,
///   avgpool, fc), so its state dicts load as they are. The reference's names still work as
///   patterns: "blocks[i]" is the i-th block over all stages, "avg_pool" is "avgpool".
struct ResNetOptions {
  explicit ResNetOptions(int64_t depth) : depth_(depth) {}
  TORCH_ARG(int64_t, depth);
  TORCH_ARG(ResNetLayout, layout) = ResNetLayout::paddle;
  TORCH_ARG(bool, vd) = false;
  TORCH_ARG(int64_t, class_num) = 1000;
};

namespace detail {

struct ResNetSpec {
  bool bottleneck;
  std::array<int64_t, 4> depths;
};

inline ResNetSpec resnet_spec(int64_t depth) {
  switch (depth) {
    case 18: return {false, {2, 2, 2, 2}};
    case 34: return {false, {3, 4, 6, 3}};
    case 50: return {true, {3, 4, 6, 3}};
    case 101: return {true, {3, 4, 23, 3}};
    case 152: return {true, {3, 8, 36, 3}};
    default: distill::fail("ResNet: depth must be 18, 34, 50, 101 or 152, got ", depth);
  }
}

constexpr std::array<int64_t, 4> kResNetWidths{64, 128, 256, 512};

/// Base of the residual blocks: relu(y + shortcut), in place where the block may (torchvision's
/// `out += identity; relu(out)`, see Layer::in_place()).
class ResidualBlock : public Layer {
 public:
  Activation relu{nullptr};

 protected:
  torch::Tensor residual(torch::Tensor y, const torch::Tensor& shortcut) {
    return in_place() ? call_in_place(relu, y.add_(shortcut)) : call(relu, y + shortcut);
  }
};

/// The reference's BasicBlock (conv0, conv1, short) and BottleneckBlock (conv0, conv1, conv2,
/// short); `short` exists where `projection` is set.
class PaddleBlockImpl : public ResidualBlock {
 public:
  PaddleBlockImpl(bool bottleneck, int64_t in, int64_t width, int64_t stride, bool projection, bool vd_pool) {
    const int64_t out = bottleneck ? 4 * width : width;
    if (bottleneck) {
      conv0 = register_module("conv0", ConvBN(in, width, 1, 1, 1, "relu"));
      conv1 = register_module("conv1", ConvBN(width, width, 3, stride, 1, "relu"));
      conv2 = register_module("conv2", ConvBN(width, out, 1));
    } else {
      conv0 = register_module("conv0", ConvBN(in, width, 3, stride, 1, "relu"));
      conv1 = register_module("conv1", ConvBN(width, width, 3));
    }
    if (projection) shortcut = register_module("short", ConvBN(in, out, 1, stride, 1, "", vd_pool));
    relu = register_module("relu", Activation("relu"));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = call(conv1, call(conv0, x));
    if (conv2) y = call(conv2, y);
    return residual(y, shortcut ? call(shortcut, x) : x);
  }

  ConvBN conv0{nullptr}, conv1{nullptr}, conv2{nullptr}, shortcut{nullptr};
};
TORCH_MODULE(PaddleBlock);

/// torchvision's BasicBlock / Bottleneck, with its module names.
class TorchvisionBlockImpl : public ResidualBlock {
 public:
  TorchvisionBlockImpl(bool bottleneck, int64_t in, int64_t width, int64_t stride) {
    namespace nn = torch::nn;
    auto conv = [](int64_t i, int64_t o, int64_t k, int64_t s) {
      return nn::Conv2d(nn::Conv2dOptions(i, o, k).stride(s).padding((k - 1) / 2).bias(false));
    };
    const int64_t out = bottleneck ? 4 * width : width;
    if (bottleneck) {
      conv1 = register_module("conv1", conv(in, width, 1, 1));
      bn1 = register_module("bn1", nn::BatchNorm2d(width));
      conv2 = register_module("conv2", conv(width, width, 3, stride));
      bn2 = register_module("bn2", nn::BatchNorm2d(width));
      conv3 = register_module("conv3", conv(width, out, 1, 1));
      bn3 = register_module("bn3", nn::BatchNorm2d(out));
    } else {
      conv1 = register_module("conv1", conv(in, width, 3, stride));
      bn1 = register_module("bn1", nn::BatchNorm2d(width));
      conv2 = register_module("conv2", conv(width, width, 3, 1));
      bn2 = register_module("bn2", nn::BatchNorm2d(width));
    }
    relu = register_module("relu", Activation("relu"));
    if (stride != 1 || in != out)
      downsample = register_module("downsample", nn::Sequential(conv(in, out, 1, stride), nn::BatchNorm2d(out)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = call_in_place(relu, call(bn1, call(conv1, x)));
    y = call(bn2, call(conv2, y));
    if (conv3) y = call(bn3, call(conv3, call_in_place(relu, y)));
    return residual(y, downsample ? run(downsample, x) : x);
  }

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(TorchvisionBlock);

}  // namespace detail

/// ResNet with named feature taps.
///
///   distill::models::ResNet resnet(distill::models::ResNetOptions(34).class_num(100));
///   resnet->set_return_patterns({"blocks[2]", "blocks[6]", "blocks[12]", "blocks[15]"});
///   distill::Features out = resnet->forward(images);   // "logits" + the four stage outputs
class ResNetImpl : public Backbone {
 public:
  explicit ResNetImpl(ResNetOptions options) : options(std::move(options)) {
    const auto& o = this->options;
    if (o.vd() && o.layout() != ResNetLayout::paddle)
      distill::fail("ResNet: the vd variant exists only in the 'paddle' layout");
    check_size("ResNet", "class_num", o.class_num());
    check_parameters("ResNet", 6e7 + 2048.0 * o.class_num());  // ResNet152's body has 58M
    spec_ = detail::resnet_spec(o.depth());
    if (o.layout() == ResNetLayout::paddle) build_paddle();
    else build_torchvision();
  }

  std::string name() const override {
    return "ResNet" + std::to_string(options.depth()) + (options.vd() ? "_vd" : "") +
           (options.layout() == ResNetLayout::torchvision ? " (torchvision layout)" : "");
  }

  /// The last block of each stage, as the reference's stages_pattern.
  std::vector<std::string> stage_patterns() const override {
    std::vector<std::string> stages;
    int64_t last = -1;
    for (int64_t d : spec_.depths) stages.push_back("blocks[" + std::to_string(last += d) + "]");
    return stages;
  }

  /// "blocks[i]:pre_relu": the block's sum (residual + shortcut) before its last ReLU; the
  /// batch norm before it is the residual branch's last one (conv1.bn / conv2.bn, bn2 / bn3).
  PreReLU pre_relu(const std::string& path) const override {
    auto module = module_at(path, "pre-ReLU tap");
    if (auto* block = dynamic_cast<detail::PaddleBlockImpl*>(module.get()))
      return {block->relu.get(), (block->conv2 ? block->conv2 : block->conv1)->bn.ptr()};
    if (auto* block = dynamic_cast<detail::TorchvisionBlockImpl*>(module.get()))
      return {block->relu.get(), (block->bn3 ? block->bn3 : block->bn2).ptr()};
    distill::fail(name(), ": '", path, ":pre_relu' must name a residual block, e.g. 'blocks[3]:pre_relu'");
  }

  ResNetOptions options;
  // paddle layout
  torch::nn::Sequential stem{nullptr}, blocks{nullptr};
  // torchvision layout
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  Activation relu{nullptr};
  std::array<torch::nn::Sequential, 4> layers{nullptr, nullptr, nullptr, nullptr};
  // both
  torch::nn::MaxPool2d max_pool{nullptr};
  torch::nn::AdaptiveAvgPool2d avg_pool{nullptr};
  torch::nn::Flatten flatten{nullptr};
  torch::nn::Linear fc{nullptr};

 protected:
  torch::Tensor forward_logits(const torch::Tensor& input) override {
    torch::Tensor x;
    if (blocks) {
      x = run(blocks, call(max_pool, run(stem, input)));
    } else {
      x = call(max_pool, call_in_place(relu, call(bn1, call(conv1, input))));
      for (auto& layer : layers) x = run(layer, x);
    }
    return call(fc, call(flatten, call(avg_pool, x)));
  }

  std::map<std::string, std::string> path_aliases() const override {
    if (blocks) return {};
    std::map<std::string, std::string> aliases{{"avg_pool", "avgpool"}, {"max_pool", "maxpool"}, {"blocks", "layer4"}};
    int64_t index = 0;
    for (size_t s = 0; s < 4; ++s)
      for (int64_t i = 0; i < spec_.depths[s]; ++i)
        aliases["blocks[" + std::to_string(index++) + "]"] = "layer" + std::to_string(s + 1) + "[" + std::to_string(i) + "]";
    return aliases;
  }

 private:
  int64_t out_width(size_t stage) const { return detail::kResNetWidths[stage] * (spec_.bottleneck ? 4 : 1); }

  void build_paddle() {
    namespace nn = torch::nn;
    stem = register_module("stem", nn::Sequential());
    if (options.vd()) {
      stem->push_back(ConvBN(3, 32, 3, 2, 1, "relu"));
      stem->push_back(ConvBN(32, 32, 3, 1, 1, "relu"));
      stem->push_back(ConvBN(32, 64, 3, 1, 1, "relu"));
    } else {
      stem->push_back(ConvBN(3, 64, 7, 2, 1, "relu"));
    }
    max_pool = register_module("max_pool", nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1)));
    blocks = register_module("blocks", nn::Sequential());
    int64_t in = 64;
    for (size_t s = 0; s < 4; ++s)
      for (int64_t i = 0; i < spec_.depths[s]; ++i) {
        const bool first = i == 0;
        // Projection in the first block of every stage (use_first_short_conv); in vd, every
        // projection but the network's very first one downsamples with an average pool.
        blocks->push_back(detail::PaddleBlock(spec_.bottleneck, in, detail::kResNetWidths[s],
                                              first && s > 0 ? 2 : 1, first, options.vd() && s > 0));
        in = out_width(s);
      }
    build_head();
    paddle_default_init(*this);
    // The reference's fc: uniform(+-1/sqrt(C)) weights, zero bias.
    torch::NoGradGuard no_grad;
    const double bound = 1.0 / std::sqrt(static_cast<double>(out_width(3)));
    fc->weight.uniform_(-bound, bound);
  }

  void build_torchvision() {
    namespace nn = torch::nn;
    conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(3, 64, 7).stride(2).padding(3).bias(false)));
    bn1 = register_module("bn1", nn::BatchNorm2d(64));
    relu = register_module("relu", Activation("relu"));
    max_pool = register_module("maxpool", nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2).padding(1)));
    int64_t in = 64;
    for (size_t s = 0; s < 4; ++s) {
      layers[s] = register_module("layer" + std::to_string(s + 1), nn::Sequential());
      for (int64_t i = 0; i < spec_.depths[s]; ++i) {
        layers[s]->push_back(detail::TorchvisionBlock(spec_.bottleneck, in, detail::kResNetWidths[s], i == 0 && s > 0 ? 2 : 1));
        in = out_width(s);
      }
    }
    build_head("avgpool");
    kaiming_fan_out_init(*this);  // torchvision's; BN and Linear keep their defaults
  }

  void build_head(const std::string& pool_name = "avg_pool") {
    namespace nn = torch::nn;
    avg_pool = register_module(pool_name, nn::AdaptiveAvgPool2d(1));
    flatten = register_module("flatten", nn::Flatten());
    fc = register_module("fc", nn::Linear(out_width(3), options.class_num()));
  }

  detail::ResNetSpec spec_;
};
TORCH_MODULE(ResNet);

/// Recipe keys of the ResNets: class_num, layout ("paddle" or "torchvision"). Registered as
/// ResNet18, 34, 50, 101, 152 and their "_vd" variants.
inline void describe(Schema& s, ResNetOptions& o) {
  s.field("class_num", o.class_num());
  s.choice("layout", o.layout(), {{"paddle", ResNetLayout::paddle}, {"torchvision", ResNetLayout::torchvision}});
}
namespace detail {
inline const bool resnet_registered = [] {
  for (int64_t depth : {18, 34, 50, 101, 152})
    for (bool vd : {false, true})
      register_backbone<ResNetImpl>("ResNet" + std::to_string(depth) + (vd ? "_vd" : ""), ResNetOptions(depth).vd(vd));
  return true;
}();
}  // namespace detail

}  // namespace distill::models
