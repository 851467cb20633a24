#pragma once
// Building blocks shared by the reference backbones (docs/reference.md §4): conv + BN +
// activation units, squeeze-and-excitation, Paddle-style dropout, and Paddle's default init.

#include <cmath>
#include <string>

#include "distill/compose/backbone.hpp"
#include "distill/models/registry.hpp"

namespace distill::models {

/// Elementwise activation by name: "relu", "hardswish" (x * relu6(x + 3) / 6) or
/// "hardsigmoid" (clip(slope * x + offset, 0, 1); Paddle's default slope is 1/6, its
/// MobileNetV3 uses 0.2).
class ActivationImpl : public torch::nn::Module {
 public:
  explicit ActivationImpl(std::string kind, double slope = 1.0 / 6.0, double offset = 0.5)
      : kind_(std::move(kind)), slope_(slope), offset_(offset) {
    if (kind_ != "relu" && kind_ != "hardswish" && kind_ != "hardsigmoid")
      distill::fail("Activation: unknown kind '", kind_, "'; expected relu, hardswish or hardsigmoid");
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (kind_ == "relu") return torch::relu(x);
    if (kind_ == "hardswish") return torch::hardswish(x);
    return (x * slope_ + offset_).clamp(0, 1);
  }
  /// ReLU in place (Layer::call_in_place); the other kinds allocate, as forward() does.
  torch::Tensor forward_(torch::Tensor x) { return kind_ == "relu" ? x.relu_() : forward(x); }
  void pretty_print(std::ostream& stream) const override { stream << "distill::models::Activation(" << kind_ << ")"; }

 private:
  std::string kind_;
  double slope_, offset_;
};
TORCH_MODULE(Activation);

/// Paddle's Dropout(mode="downscale_in_infer") as the reference's PP-LCNet and MobileNetV3
/// use it: in training, zero with probability p and do NOT rescale; in evaluation, multiply by
/// 1 - p. (PyTorch's dropout rescales in training instead; docs/reference.md §7.19.)
class DownscaleDropoutImpl : public torch::nn::Module {
 public:
  explicit DownscaleDropoutImpl(double p) : p_(p) {
    if (!(p >= 0 && p < 1)) distill::fail("DownscaleDropout: p must be in [0, 1), got ", p);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (p_ == 0) return x;
    if (!is_training()) return x * (1 - p_);
    return x * torch::empty_like(x).bernoulli_(1 - p_);
  }
  void pretty_print(std::ostream& stream) const override { stream << "distill::models::DownscaleDropout(p=" << p_ << ")"; }

 private:
  double p_;
};
TORCH_MODULE(DownscaleDropout);

/// conv (no bias, padding (k-1)/2) -> BatchNorm -> optional activation: the reference's
/// ConvBNLayer. `vd_pool` puts the ResNet-vd 2x2 average pool (stride `stride`, ceil mode,
/// padding excluded from the mean) before a stride-1 conv.
class ConvBNImpl : public Layer {
 public:
  ConvBNImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t groups = 1,
             const std::string& act = "", bool vd_pool = false) {
    namespace nn = torch::nn;
    if (vd_pool)
      avg_pool = register_module("avg_pool", nn::AvgPool2d(nn::AvgPool2dOptions(2).stride(stride).ceil_mode(true)
                                                              .count_include_pad(false)));
    conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(in, out, kernel)
                                                  .stride(vd_pool ? 1 : stride)
                                                  .padding((kernel - 1) / 2)
                                                  .groups(groups)
                                                  .bias(false)));
    bn = register_module("bn", nn::BatchNorm2d(out));
    if (!act.empty()) this->act = register_module("act", Activation(act));
  }
  torch::Tensor forward(torch::Tensor x) {
    if (avg_pool) x = call(avg_pool, x);
    x = call(bn, call(conv, x));
    return act ? call_in_place(act, x) : x;
  }

  torch::nn::AvgPool2d avg_pool{nullptr};
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  Activation act{nullptr};
};
TORCH_MODULE(ConvBN);

/// Squeeze-and-excitation: x * hardsigmoid(conv2(relu(conv1(avgpool(x))))), with
/// channels / reduction hidden channels (integer division, as the reference).
class SEImpl : public Layer {
 public:
  SEImpl(int64_t channels, int64_t reduction, double slope) {
    namespace nn = torch::nn;
    const int64_t hidden = channels / reduction;
    avg_pool = register_module("avg_pool", nn::AdaptiveAvgPool2d(1));
    conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(channels, hidden, 1)));
    relu = register_module("relu", Activation("relu"));
    conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(hidden, channels, 1)));
    hardsigmoid = register_module("hardsigmoid", Activation("hardsigmoid", slope, 0.5));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto w = call(hardsigmoid, call(conv2, call(relu, call(conv1, call(avg_pool, x)))));
    return x * w;
  }

  torch::nn::AdaptiveAvgPool2d avg_pool{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  Activation relu{nullptr}, hardsigmoid{nullptr};
};
TORCH_MODULE(SE);

/// The weight and bias of every BatchNorm in `module` (those the reference's PP-* networks
/// exempt from weight decay).
inline std::vector<torch::Tensor> batchnorm_affine_parameters(const torch::nn::Module& module) {
  std::vector<torch::Tensor> params;
  for (const auto& m : module.modules(/*include_self=*/false))
    if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) {
      params.push_back(bn->weight);
      params.push_back(bn->bias);
    }
  return params;
}

/// A backbone ending in the head PP-LCNet and MobileNetV3 share: global average pool -> 1x1
/// conv to class_expand channels (no bias) -> hardswish -> Paddle-style dropout -> flatten ->
/// Linear. The head's modules are registered on the network itself, so their paths are the
/// reference's ("last_conv", "fc", ...).
class ExpandHeadBackbone : public Backbone {
 public:
  torch::nn::AdaptiveAvgPool2d avg_pool{nullptr};
  torch::nn::Conv2d last_conv{nullptr};
  Activation hardswish{nullptr};
  DownscaleDropout dropout{nullptr};
  torch::nn::Flatten flatten{nullptr};
  torch::nn::Linear fc{nullptr};

  /// The reference gives every BatchNorm of these networks L2Decay(0).
  std::vector<torch::Tensor> no_weight_decay_parameters() const override { return batchnorm_affine_parameters(*this); }

 protected:
  // The sizes of a body of width `scale` (about 5M parameters at scale 1, growing with its
  // square) and of the head, checked before anything is built.
  void check_head_size(double scale, int64_t class_expand, int64_t class_num) {
    check_size(name(), "class_num", class_num);
    check_size(name(), "class_expand", class_expand);
    check_parameters(name(), 5e6 * scale * scale + static_cast<double>(class_expand) * (1280.0 * scale + class_num));
  }
  void build_head(int64_t in, int64_t class_expand, double dropout_prob, int64_t class_num) {
    namespace nn = torch::nn;
    if (class_num < 1 || class_expand < 1)
      distill::fail(name(), ": class_num and class_expand must be positive, got ", class_num, " and ",
                            class_expand);
    avg_pool = register_module("avg_pool", nn::AdaptiveAvgPool2d(1));
    last_conv = register_module("last_conv", nn::Conv2d(nn::Conv2dOptions(in, class_expand, 1).bias(false)));
    hardswish = register_module("hardswish", Activation("hardswish"));
    dropout = register_module("dropout", DownscaleDropout(dropout_prob));
    flatten = register_module("flatten", nn::Flatten());
    fc = register_module("fc", nn::Linear(class_expand, class_num));
  }
  torch::Tensor head(const torch::Tensor& features) {
    auto x = call(hardswish, call(last_conv, call(avg_pool, features)));
    return call(fc, call(flatten, call(dropout, x)));
  }
};

/// Paddle's default initialisation (docs/reference.md §4): conv weights normal(0,
/// sqrt(2 / (k*k*C_in))) with C_in the full input width, conv biases zero, Linear weights
/// Xavier-uniform with zero biases. BatchNorm keeps weight 1, bias 0.
inline void paddle_default_init(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& m : module.modules(/*include_self=*/false)) {
    if (auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(m.get())) {
      const auto& k = conv->options.kernel_size();
      const double fan = static_cast<double>((*k)[0] * (*k)[1] * conv->options.in_channels());
      conv->weight.normal_(0, std::sqrt(2.0 / fan));
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(m.get())) {
      torch::nn::init::xavier_uniform_(linear->weight);
      if (linear->bias.defined()) linear->bias.zero_();
    }
  }
}

/// torchvision's conv initialisation: Kaiming-normal weights (fan_out, ReLU gain).
inline void kaiming_fan_out_init(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& m : module.modules(/*include_self=*/false))
    if (auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(m.get()))
      torch::nn::init::kaiming_normal_(conv->weight, 0, torch::kFanOut, torch::kReLU);
}

/// Stores every 4-d parameter and buffer of `module` (its convolution weights) channels-last
/// (NHWC): the C++ counterpart of Python's `module.to(memory_format=torch.channels_last)`. With
/// its inputs channels-last too (to_channels_last(images)), oneDNN's convolutions skip their
/// layout conversions; values are unchanged. Global.channels_last does this for a training run.
///
///   distill::models::to_channels_last(*student);
///   auto logits = student->forward(distill::models::to_channels_last(images));
inline void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& t : module.parameters())
    if (t.dim() == 4) t.set_data(t.contiguous(torch::MemoryFormat::ChannelsLast));
  for (auto& t : module.buffers())
    if (t.dim() == 4) t.set_data(t.contiguous(torch::MemoryFormat::ChannelsLast));
}

/// A batch of images [N, C, H, W] in channels-last order (other ranks unchanged).
inline torch::Tensor to_channels_last(const torch::Tensor& images) {
  return images.dim() == 4 ? images.contiguous(torch::MemoryFormat::ChannelsLast) : images;
}

/// make_divisible(v, 8) of the reference's PP-LCNet and MobileNetV3: round to a multiple of
/// 8 (at least 8), adding 8 if rounding lost more than 10%.
inline int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t rounded = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (rounded < 0.9 * v) rounded += divisor;
  return rounded;
}

}  // namespace distill::models
