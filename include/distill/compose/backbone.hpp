#pragma once
// distill::Backbone: a network with named feature taps (the reference's TheseusLayer:
// return_patterns, return_stages, stop_after, freeze_before; docs/reference.md §1.3).

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "distill/compose/model.hpp"
#include "distill/core/error.hpp"

namespace distill {

/// A network with named feature taps (the reference's TheseusLayer). forward() returns
/// Features: "logits" (the network's output) and one entry per return pattern, in pattern
/// order. A pattern "<block>:pre_relu" taps the block's output before its last ReLU (OFD's
/// pre-ReLU features), where the backbone supports it (ResNet blocks, ConvNet stages). A subclass builds its layers, names its stages and implements forward_logits()
/// with call()/run():
///
///   struct TinyNetImpl : distill::Backbone {
///     TinyNetImpl() {
///       body = register_module("body", torch::nn::Sequential(torch::nn::Conv2d(3, 8, 3), torch::nn::ReLU()));
///       fc = register_module("fc", torch::nn::Linear(8, 10));
///     }
///     std::string name() const override { return "TinyNet"; }
///     torch::Tensor forward_logits(const torch::Tensor& x) override {
///       return call(fc, run(body, x).mean({2, 3}));
///     }
///     torch::nn::Sequential body{nullptr};
///     torch::nn::Linear fc{nullptr};
///   };
///   TinyNetImpl net;
///   net.set_return_patterns({"body[0]", "body"});
///   distill::Features out = net.forward(images);   // "logits", "body[0]", "body"
class Backbone : public FeatureModel {
 public:
  using FeatureModel::forward;

  /// Where a pre-ReLU tap reads: the ReLU module whose input is the pre-activation, and the
  /// batch norm whose output (plus the shortcut, in a residual block) that input is.
  struct PreReLU {
    const torch::nn::Module* relu = nullptr;
    std::shared_ptr<torch::nn::BatchNorm2dImpl> norm;
  };
  /// The pre-ReLU point of the block at `path` ("blocks[15]"); backbones that have them
  /// override this. The default refuses.
  virtual PreReLU pre_relu(const std::string& path) const {
    fail(name(), ": has no pre-ReLU taps ('", path, ":pre_relu'); ResNet blocks and ConvNet stages have them");
  }
  /// The batch norm before the ReLU of the pre-ReLU pattern `pattern` ("blocks[15]:pre_relu"):
  /// OFD reads the teacher's margin from its scale and shift.
  std::shared_ptr<torch::nn::BatchNorm2dImpl> norm_before_relu(const std::string& pattern) const {
    return pre_relu(pre_relu_base(pattern)).norm;
  }
  /// "blocks[15]" of "blocks[15]:pre_relu"; an error for other patterns.
  static std::string pre_relu_base(const std::string& pattern) {
    const std::string suffix = ":pre_relu";
    if (pattern.size() <= suffix.size() || pattern.compare(pattern.size() - suffix.size(), suffix.size(), suffix) != 0)
      fail("'", pattern, "' is not a pre-ReLU tap (expected '<block>:pre_relu')");
    return pattern.substr(0, pattern.size() - suffix.size());
  }
  /// The paths `return_stages` indexes (the reference's stages_pattern).
  virtual std::vector<std::string> stage_patterns() const { return {}; }

  Features forward(const torch::Tensor& x) override {
    if (!plan_) return Features{{"logits", forward_logits(x)}};
    plan_->outputs.clear();
    plan_->stopped = false;
    Features out{{"logits", forward_logits(x)}};
    for (const auto& pattern : patterns_) {
      auto it = plan_->outputs.find(pattern);
      if (it == plan_->outputs.end())
        fail(name(), ": return pattern '", pattern,
                              "' names a layer this network's forward does not pass through call()");
      out.set(pattern, it->second);
    }
    plan_->outputs.clear();  // do not keep the maps alive between calls
    return out;
  }

  /// Names the outputs forward() returns besides "logits". Every pattern must name a layer
  /// (see layer_paths()); an unknown one is an error listing what exists (the reference
  /// only warns).
  void set_return_patterns(std::vector<std::string> patterns) { update(patterns_, std::move(patterns)); }
  /// Selects entries of stage_patterns() by index, as the reference's return_stages.
  void set_return_stages(const std::vector<int64_t>& stages) {
    const auto all = stage_patterns();
    std::vector<std::string> patterns;
    for (int64_t s : stages) {
      if (s < 0 || s >= static_cast<int64_t>(all.size()))
        fail(name(), ": return stage ", s, " out of range; the network has ",
                              all.size(), " stages");
      patterns.push_back(all[s]);
    }
    set_return_patterns(std::move(patterns));
  }
  /// Every child called after `path` (recursively along the path) acts as identity, so the
  /// network ends there; "logits" then holds that layer's output. An empty path undoes it.
  void stop_after(std::string path) { update(stop_, std::move(path)); }
  /// Cuts the output of `path` from the autograd graph: no gradient reaches it or anything
  /// before it. An empty path undoes it.
  void freeze_before(std::string path) { update(freeze_, std::move(path)); }
  const std::vector<std::string>& return_patterns() const { return patterns_; }
  /// In-place ReLU and residual additions where nothing observes the overwritten tensor (see
  /// Layer::in_place(); on by default). Off, every layer allocates its results, which only
  /// costs memory and time: a switch for comparisons and debugging.
  void set_in_place(bool on) { update(in_place_on_, on); }

  /// Every path a pattern may name, in module order: "stem", "stem[0]", "stem[0].conv", ...
  std::vector<std::string> layer_paths() const {
    std::vector<std::string> paths;
    for (const auto& item : named_modules("", /*include_self=*/false)) paths.push_back(detail::reference_path(item.key()));
    return paths;
  }

 protected:
  /// The network body; children go through call()/run() so that taps see them.
  virtual torch::Tensor forward_logits(const torch::Tensor& x) = 0;
  /// Other names for paths, e.g. the torchvision-layout ResNet answers to the reference's
  /// "blocks[i]" and "avg_pool".
  virtual std::map<std::string, std::string> path_aliases() const { return {}; }

  /// The layer a pattern names (aliases included), or an error listing the layers.
  std::shared_ptr<torch::nn::Module> module_at(const std::string& pattern, const char* what = "pattern") const {
    std::map<std::string, std::shared_ptr<torch::nn::Module>> modules;
    for (const auto& item : named_modules("", /*include_self=*/false))
      modules[detail::reference_path(item.key())] = item.value();
    auto aliases = path_aliases();
    const std::string normalised = detail::reference_path(pattern);
    const std::string& path = aliases.count(normalised) ? aliases.at(normalised) : normalised;
    if (auto it = modules.find(path); it != modules.end()) return it->second;
    fail(name(), ": ", what, " '", pattern, "' names no layer; the layers are ", describe_layers(),
                          aliases.empty() ? "" : " (plus the reference's names, e.g. 'blocks[0]')",
                          " and their children, e.g. '", example_child(), "'");
  }

 private:
  const torch::nn::Module* resolve(const std::string& pattern, const char* what) const {
    return module_at(pattern, what).get();
  }

  std::string example_child() const {
    for (const auto& path : layer_paths())
      if (path.find('.') != std::string::npos) return path;
    return layer_paths().back();
  }

  /// "stem[0..0], max_pool, blocks[0..15], avg_pool, flatten, fc" for messages.
  std::string describe_layers() const {
    std::string text;
    for (const auto& child : named_children()) {
      text += (text.empty() ? "" : ", ") + child.key();
      const auto size = child.value()->children().size();
      if (dynamic_cast<const torch::nn::SequentialImpl*>(child.value().get()) && size > 0)
        text += "[0.." + std::to_string(size - 1) + "]";
    }
    return text;
  }

  /// Sets one tap setting; a setting that names no layer is rejected and the old one kept.
  template <class T>
  void update(T& setting, T value) {
    std::swap(setting, value);
    try {
      rebuild();
    } catch (...) {
      std::swap(setting, value);
      throw;
    }
  }

  void rebuild() {
    std::shared_ptr<detail::TapPlan> plan;
    if (!patterns_.empty() || !stop_.empty() || !freeze_.empty()) {
      plan = std::make_shared<detail::TapPlan>();
      for (const auto& pattern : patterns_) {
        if (pattern.find(':') != std::string::npos) {
          const auto* relu = pre_relu(pre_relu_base(pattern)).relu;
          plan->record_input[relu].push_back(pattern);
        } else {
          plan->record[resolve(pattern, "return pattern")].push_back(pattern);
        }
      }
      if (!stop_.empty()) plan->stop = resolve(stop_, "stop_after");
      if (!freeze_.empty()) plan->freeze = resolve(freeze_, "freeze_before");
    }
    plan_ = plan;
    Layer::in_place_ = in_place_enabled(*this, plan.get());
    for (const auto& module : modules(/*include_self=*/false))
      if (auto* layer = dynamic_cast<Layer*>(module.get())) {
        layer->plan_ = plan;
        layer->in_place_ = in_place_enabled(*layer, plan.get());
      }
  }

  /// Layer::in_place() of `layer`: on, and no module below it is tapped, frozen or stopped.
  bool in_place_enabled(const torch::nn::Module& layer, const detail::TapPlan* plan) const {
    if (!in_place_on_) return false;
    if (!plan) return true;
    for (const auto& child : layer.modules(/*include_self=*/false)) {
      const auto* m = child.get();
      if (plan->record.count(m) || plan->record_input.count(m) || m == plan->stop || m == plan->freeze) return false;
    }
    return true;
  }

  std::vector<std::string> patterns_;
  std::string stop_, freeze_;
  bool in_place_on_ = true;
};

}  // namespace distill
