#pragma once
// distill::Named: an ordered map by name; Features (name -> tensor, what a model returns) and
// ModelOutputs (name -> Features, what a composed model returns) are its two uses.

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "distill/core/error.hpp"

namespace distill {

/// An ordered map from name to value with the merge rule of Python's dict.update and lookups
/// that fail with a distill::Error listing the names that exist.
template <class Value>
class Named {
 public:
  using Item = std::pair<std::string, Value>;

  Named() = default;
  Named(std::initializer_list<Item> items) {
    for (const auto& [name, value] : items) set(name, value);
  }

  /// Adds `name`, or replaces its value in place (the merge rule of dict.update).
  void set(const std::string& name, Value value) {
    for (auto& item : items_)
      if (item.first == name) {
        item.second = std::move(value);
        return;
      }
    items_.emplace_back(name, std::move(value));
  }

  bool contains(const std::string& name) const { return find(name) != nullptr; }

  const Value& at(const std::string& name) const {
    if (const auto* value = find(name)) return *value;
    fail("no entry '", name, "'; the entries are ", describe_keys());
  }
  const Value& operator[](const std::string& name) const { return at(name); }

  std::vector<std::string> keys() const {
    std::vector<std::string> names;
    for (const auto& item : items_) names.push_back(item.first);
    return names;
  }
  /// "'logits', 'blocks[2]'" for messages.
  std::string describe_keys() const {
    std::string text;
    for (const auto& item : items_) text += (text.empty() ? "'" : ", '") + item.first + "'";
    return text.empty() ? "(none)" : text;
  }

  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  const Value* find(const std::string& name) const {
    for (const auto& item : items_)
      if (item.first == name) return &item.second;
    return nullptr;
  }
  std::vector<Item> items_;
};

/// What a model returns: "logits" first, then named intermediate outputs in the order they
/// were asked for (a backbone's return patterns, an AFD transform's "query", ...).
///
///   distill::Features out = resnet->forward(images);
///   auto logits = out["logits"];
///   auto stage3 = out["blocks[12]"];
using Features = Named<torch::Tensor>;

/// What a composed model (DistillationModel) returns: each sub-model's Features by its name.
///
///   distill::ModelOutputs out = model->forward(images);
///   auto student_logits = out["Student"]["logits"];
using ModelOutputs = Named<Features>;

}  // namespace distill
