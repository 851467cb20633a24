#pragma once
// Feature taps for libtorch modules. libtorch has no forward hooks, so a network cooperates:
// its forward passes every child through call() (or run() for a Sequential). With no taps
// set that is one null check per child; with taps, call() records the child's output when
// the child was asked for, cuts the graph at a freeze point, and turns later children into
// identity after a stop point (the reference's TheseusLayer, docs/reference.md §1.3).

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/torch.h>

namespace distill {

namespace detail {

/// libtorch's "blocks.3.conv0" as the reference writes it: "blocks[3].conv0".
inline std::string reference_path(const std::string& dotted) {
  std::string out, part;
  auto flush = [&] {
    const bool index = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
    if (index && !out.empty()) out += "[" + part + "]";
    else out += (out.empty() ? "" : ".") + part;
    part.clear();
  };
  for (char c : dotted) {
    if (c == '.') flush();
    else part += c;
  }
  flush();
  return out;
}

/// What one forward pass does at the tapped children; shared by every Layer of a network.
struct TapPlan {
  std::unordered_map<const torch::nn::Module*, std::vector<std::string>> record;
  /// Children whose input is recorded (pre-ReLU taps: the input of a block's last ReLU); a
  /// child called more than once keeps its last input.
  std::unordered_map<const torch::nn::Module*, std::vector<std::string>> record_input;
  const torch::nn::Module* stop = nullptr;    // stop_after: later children become identity
  const torch::nn::Module* freeze = nullptr;  // freeze_before: output cut from the graph
  std::unordered_map<std::string, torch::Tensor> outputs;
  bool stopped = false;
};

}  // namespace detail

/// Base of a module whose forward routes its children through taps. Blocks of a network
/// (residual units, SE modules, ...) derive from it; the network itself derives from Backbone.
///
///   struct MyBlockImpl : distill::Layer {
///     torch::Tensor forward(torch::Tensor x) { return call(conv, call(bn, x)); }
///     ...
///   };
class Layer : public torch::nn::Module {
 protected:
  /// child->forward(x), recorded if requested; identity once a stop_after point has run.
  template <class Child>
  torch::Tensor call(Child& child, const torch::Tensor& x) {
    if (plan_ && plan_->stopped) return x;
    if (plan_ && !plan_->record_input.empty()) tap_input(*child, x);
    return tap(*child, child->forward(x));
  }
  torch::Tensor call(torch::nn::AnyModule& child, const torch::Tensor& x) {
    if (plan_ && plan_->stopped) return x;
    return tap(*child.ptr(), child.forward(x));
  }
  /// child->forward_(x), the child's in-place form (e.g. relu_), where in_place(); else
  /// call(child, x). In place, `x` is the result: the caller must own it (a tensor this layer
  /// made, not its input).
  template <class Child>
  torch::Tensor call_in_place(Child& child, torch::Tensor x) {
    if (!in_place_) return call(child, x);
    if (plan_ && plan_->stopped) return x;
    return tap(*child, child->forward_(x));
  }
  /// Whether this layer may overwrite tensors it made (its children's outputs) instead of
  /// allocating new ones, as torchvision's ReLU(inplace=True) and `out += identity` do: true
  /// unless a tap, a freeze_before or a stop_after point lies inside the layer, where it
  /// could see such a tensor change, or Backbone::set_in_place(false) turned it off. Autograd
  /// stays exact: ReLU's backward reads its output and an addition's reads nothing.
  bool in_place() const { return in_place_; }
  /// Runs a Sequential child by child, so that each entry ("blocks[3]") can be tapped too.
  torch::Tensor run(torch::nn::Sequential& sequence, torch::Tensor x) {
    for (auto& child : *sequence) x = call(child, x);
    return tap(*sequence, x);
  }
  /// Records `y` as the output of `module` (when asked for), applies freeze_before and
  /// stop_after. For outputs a layer computes itself rather than through call().
  torch::Tensor tap(const torch::nn::Module& module, torch::Tensor y) {
    if (!plan_) return y;
    if (&module == plan_->freeze) y = y.detach();
    if (auto it = plan_->record.find(&module); it != plan_->record.end())
      for (const auto& name : it->second) plan_->outputs[name] = y;
    if (&module == plan_->stop) plan_->stopped = true;
    return y;
  }
  void tap_input(const torch::nn::Module& module, const torch::Tensor& x) {
    if (auto it = plan_->record_input.find(&module); it != plan_->record_input.end())
      for (const auto& name : it->second) plan_->outputs[name] = x;
  }

 private:
  friend class Backbone;
  std::shared_ptr<detail::TapPlan> plan_;
  bool in_place_ = true;
};

}  // namespace distill
