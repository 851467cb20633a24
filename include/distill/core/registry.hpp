#pragma once
// distill::Registry: components by name (losses, backbones, optimisers, schedules, ...). A
// component registers itself where it is defined; a recipe reader only looks names up.

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "distill/core/error.hpp"

namespace distill {

/// Names to entries of one kind. `kind` ("loss", "backbone") appears in messages.
///
///   Registry<Factory>& backbones = ...;
///   backbones.add("TinyNet", make_tiny_net);
///   auto make = backbones.at("TinyNet", "Arch.models[1].Student.name");
template <class Entry>
class Registry {
 public:
  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  /// Adds `name`, replacing an earlier entry of that name. Returns true (so that a header can
  /// register at static initialisation: `inline const bool registered = registry().add(...)`).
  bool add(const std::string& name, Entry entry) {
    entries_[name] = std::move(entry);
    return true;
  }
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  /// The entry, or nullptr.
  const Entry* find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  /// The entry, or an error at `context` listing every known name.
  const Entry& at(const std::string& name, const std::string& context) const {
    if (const auto* entry = find(name)) return *entry;
    fail_at(context, "unknown ", kind_, " '", name, "'; known ", kind_, kind_.back() == 's' ? "es" : "s", " are ", describe());
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& item : entries_) out.push_back(item.first);
    return out;
  }
  /// "A, B, C" for messages.
  std::string describe() const {
    std::string text;
    for (const auto& item : entries_) text += (text.empty() ? "" : ", ") + item.first;
    return text.empty() ? "(none)" : text;
  }

 private:
  std::string kind_;
  std::map<std::string, Entry> entries_;
};

}  // namespace distill
