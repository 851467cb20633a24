#pragma once
// Reading one JSON object of a recipe with errors that name the JSON path.

#include <algorithm>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "distill/core/error.hpp"

namespace distill::config {

using json = nlohmann::json;

namespace detail {
template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {};

template <class T>
std::string expected_type() {
  if constexpr (std::is_same_v<T, bool>) return "a boolean";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else if constexpr (is_vector<T>::value) return "a list of " + expected_type<typename T::value_type>() + " items";
  else return "a JSON value";
}

template <class T>
bool holds(const json& value) {
  if constexpr (std::is_same_v<T, bool>) return value.is_boolean();
  else if constexpr (std::is_integral_v<T>) return value.is_number_integer();
  else if constexpr (std::is_floating_point_v<T>) return value.is_number();
  else if constexpr (std::is_same_v<T, std::string>) return value.is_string();
  else if constexpr (is_vector<T>::value)
    return value.is_array() &&
           std::all_of(value.begin(), value.end(), [](const json& v) { return holds<typename T::value_type>(v); });
  else return true;
}
}  // namespace detail

/// Reads the keys of one JSON object; every error names the path ("Arch.models[1].Student.name")
/// and what was expected, and done() rejects keys nobody asked for.
///
///   Reader r(options, "Arch.models[0].Teacher");
///   auto classes = r.get<int64_t>("class_num", 1000);
///   r.done();   // "Arch.models[0].Teacher.clas_num: unknown key; known keys are ..."
class Reader {
 public:
  Reader(const json& object, std::string path) : object_(object), path_(std::move(path)) {
    if (!object_.is_object()) distill::detail::fail(path_, ": expected an object, got ", describe(object_));
  }

  const std::string& path() const { return path_; }
  std::string path_of(const std::string& key) const { return path_ + "." + key; }
  bool has(const std::string& key) const {
    known_.insert(key);
    return object_.contains(key) && !object_.at(key).is_null();
  }
  /// Whether `key` is present and null (the reference's way to say "none").
  bool is_null(const std::string& key) const {
    known_.insert(key);
    return object_.contains(key) && object_.at(key).is_null();
  }
  /// The raw value of a present key (see has()).
  const json& raw(const std::string& key) const {
    if (!has(key)) distill::detail::fail(path_of(key), ": missing");
    return object_.at(key);
  }

  template <class T>
  T get(const std::string& key) const {
    const json& value = raw(key);
    if (!detail::holds<T>(value))
      distill::detail::fail(path_of(key), ": expected ", detail::expected_type<T>(), ", got ", describe(value));
    try {
      return value.get<T>();
    } catch (const json::exception&) {
      distill::detail::fail(path_of(key), ": expected ", detail::expected_type<T>(), ", got ", describe(value));
    }
  }
  template <class T>
  T get(const std::string& key, T fallback) const {
    return has(key) ? get<T>(key) : fallback;
  }

  /// Fails on the first key that was never asked for (a typo would otherwise be ignored).
  void done() const {
    for (const auto& item : object_.items())
      if (!known_.count(item.key())) {
        std::string listed;
        for (const auto& k : known_) listed += (listed.empty() ? "" : ", ") + k;
        distill::detail::fail(path_of(item.key()), ": unknown key; known keys here are ", listed);
      }
  }

  static std::string describe(const json& value) {
    std::string text = value.dump();
    if (text.size() > 60) text = text.substr(0, 57) + "...";
    return std::string(value.type_name()) + " " + text;
  }

 private:
  json object_;  // a copy: a Reader may outlive the expression that produced its object
  std::string path_;
  mutable std::set<std::string> known_;
};

}  // namespace distill::config
