#pragma once
// distill::Schema: how a component's options are read from a recipe, written once, next to
// the options. A component describes its keys with a function
//
//   void describe(distill::Schema& s, KDOptions& o) { s.field("temperature", o.temperature()); }
//
// whose every call names a key and the option that holds its default and receives the value.
// The recipe readers (JSON, PaddleClas YAML) implement Schema; so does the lister that prints
// the keys and their defaults. Nothing here needs JSON: a user of the losses alone needs only
// libtorch.

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "distill/core/error.hpp"

namespace distill {

/// The reading side of a component's options (see the file comment). Every field() leaves
/// `value` as it is when the entry does not give the key, so defaults are the options' own.
class Schema {
 public:
  virtual ~Schema() = default;

  /// Where the entry sits, e.g. "Loss.Train[1].DistillationDKDLoss" (for messages).
  virtual std::string path() const = 0;
  std::string path_of(const std::string& key) const { return path() + "." + key; }
  /// Whether the entry gives `key` with a value other than null.
  virtual bool has(const std::string& key) const = 0;
  /// Whether the entry gives `key` as null (the reference's "none").
  virtual bool is_null(const std::string& key) const = 0;

  virtual void field(const std::string& key, bool& value) = 0;
  virtual void field(const std::string& key, int64_t& value) = 0;
  virtual void field(const std::string& key, double& value) = 0;
  virtual void field(const std::string& key, std::string& value) = 0;
  virtual void field(const std::string& key, std::vector<int64_t>& value) = 0;
  virtual void field(const std::string& key, std::vector<double>& value) = 0;
  virtual void field(const std::string& key, std::vector<std::string>& value) = 0;
  /// Lists of lists: feature shapes [[C, H, W], ...], model pairs [["Student", "Teacher"], ...].
  virtual void field(const std::string& key, std::vector<std::vector<int64_t>>& value) = 0;
  virtual void field(const std::string& key, std::vector<std::vector<std::string>>& value) = 0;
  /// Output names: a string, or a list of strings where null stands for `null_as` (the
  /// reference's key lists, e.g. "s_keys": ["blocks[7]", null]).
  virtual void names(const std::string& key, std::vector<std::string>& value, const std::string& null_as) = 0;
  /// A key this reader accepts but does not act on; `why` says what it means in the
  /// reference and why it has no effect here.
  virtual void ignore(const std::string& key, const char* why) = 0;

  /// A key the entry must give.
  template <class T>
  void required(const std::string& key, T& value) {
    if (!has(key)) fail_at(path_of(key), "missing (this key has no default)");
    field(key, value);
  }

  /// A string key that is an enumeration in C++: `names` spells each value.
  ///
  ///   s.choice("mode", o.mode(), {{"l1", DistanceMode::l1}, {"l2", DistanceMode::l2}});
  template <class Enum>
  void choice(const std::string& key, Enum& value, std::initializer_list<std::pair<const char*, Enum>> names) {
    std::string text, listed;
    for (const auto& [name, e] : names) {
      if (e == value) text = name;
      listed += (listed.empty() ? "'" : ", '") + std::string(name) + "'";
    }
    field(key, text);
    for (const auto& [name, e] : names)
      if (text == name) {
        value = e;
        return;
      }
    fail_at(path_of(key), "unknown value '", text, "'; expected one of ", listed);
  }
};

}  // namespace distill
