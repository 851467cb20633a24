#pragma once
// Reading one JSON object of a recipe with errors that name the JSON path, and the Schema
// that reads a component's options from it. Needs nlohmann_json; the losses and backbones do
// not include this file (they describe their keys through distill::Schema).

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "distill/core/error.hpp"
#include "distill/core/schema.hpp"

namespace distill {

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

/// Collects, while it lives, the keys that Readers on this thread knowingly ignore (present in
/// a recipe, accepted, not acted on), so that a program reports them once.
///
///   distill::IgnoredKeys ignored;
///   auto trainer = ...;   // reads the recipe
///   for (const auto& [path, why] : ignored.keys()) std::cout << path << ": " << why << "\n";
class IgnoredKeys {
 public:
  IgnoredKeys() : previous_(current()) { current() = this; }
  ~IgnoredKeys() { current() = previous_; }
  IgnoredKeys(const IgnoredKeys&) = delete;
  IgnoredKeys& operator=(const IgnoredKeys&) = delete;

  /// Path ("Global.to_static") -> what the key means in the reference.
  const std::map<std::string, std::string>& keys() const { return keys_; }
  static void note(const std::string& path, const std::string& why) {
    if (current()) current()->keys_.emplace(path, why);
  }

 private:
  static IgnoredKeys*& current() {
    thread_local IgnoredKeys* collector = nullptr;
    return collector;
  }
  IgnoredKeys* previous_;
  std::map<std::string, std::string> keys_;
};

/// Reads the keys of one JSON object. Every read says which key it uses; done() then rejects
/// the keys nobody used or knowingly ignored (a typo would otherwise be ignored silently).
/// Queries (has, is_null) use nothing. Every error names the path
/// ("Arch.models[1].Student.name") and what was expected.
///
///   Reader r(options, "Arch.models[0].Teacher");
///   auto classes = r.get<int64_t>("class_num", 1000);
///   r.ignore("use_ssld", "downloads weights in the reference");
///   r.done();   // "Arch.models[0].Teacher.clas_num: unknown key; known keys here are ..."
class Reader {
 public:
  Reader(const json& object, std::string path) : object_(object), path_(std::move(path)) {
    if (!object_.is_object()) fail_at(path_, "expected an object, got ", describe(object_));
  }

  const std::string& path() const { return path_; }
  std::string path_of(const std::string& key) const { return path_ + "." + key; }
  /// Whether `key` is present with a value other than null. Uses nothing.
  bool has(const std::string& key) const { return object_.contains(key) && !object_.at(key).is_null(); }
  /// Whether `key` is present and null (the reference's "none"). Uses nothing.
  bool is_null(const std::string& key) const { return object_.contains(key) && object_.at(key).is_null(); }

  /// Uses `key` and returns its value, or nullptr when it is absent (a null is returned).
  const json* use(const std::string& key) const {
    used_.insert(key);
    return object_.contains(key) ? &object_.at(key) : nullptr;
  }
  /// Uses `key`, which must be present and not null.
  const json& raw(const std::string& key) const {
    const json* value = use(key);
    if (!value || value->is_null()) fail_at(path_of(key), "missing");
    return *value;
  }

  template <class T>
  T get(const std::string& key) const {
    return convert<T>(key, raw(key));
  }
  /// `key`'s value, or `fallback` when it is absent or null.
  template <class T>
  T get(const std::string& key, T fallback) const {
    const json* value = use(key);
    return value && !value->is_null() ? convert<T>(key, *value) : fallback;
  }
  /// The object at `key` as a Reader of its own.
  Reader section(const std::string& key) const { return Reader(raw(key), path_of(key)); }

  /// Accepts `key` without acting on it; `why` says what it means in the reference.
  /// A present key is noted in the IgnoredKeys collecting on this thread.
  void ignore(const std::string& key, const char* why) const {
    used_.insert(key);
    if (object_.contains(key)) IgnoredKeys::note(path_of(key), why);
  }

  /// Fails on the first key that was neither used nor ignored.
  void done() const {
    for (const auto& item : object_.items())
      if (!used_.count(item.key())) {
        std::string listed;
        for (const auto& k : used_) listed += (listed.empty() ? "" : ", ") + k;
        fail_at(path_of(item.key()), "unknown key; known keys here are ", listed.empty() ? "(none)" : listed);
      }
  }

  static std::string describe(const json& value) {
    std::string text = value.dump();
    if (text.size() > 60) text = text.substr(0, 57) + "...";
    return std::string(value.type_name()) + " " + text;
  }

 private:
  template <class T>
  T convert(const std::string& key, const json& value) const {
    if (!detail::holds<T>(value))
      fail_at(path_of(key), "expected ", detail::expected_type<T>(), ", got ", describe(value));
    try {
      return value.get<T>();
    } catch (const json::exception&) {
      fail_at(path_of(key), "expected ", detail::expected_type<T>(), ", got ", describe(value));
    }
  }

  json object_;  // a copy: a Reader may outlive the expression that produced its object
  std::string path_;
  mutable std::set<std::string> used_;
};

/// A Schema over one JSON object: the reader every component's describe() is run against when
/// a recipe is built. Call done() after describe() to refuse keys the component does not know.
///
///   JsonSchema s(entry, "Loss.Train[1].DistillationKLDivLoss");
///   KDOptions o;
///   describe(s, o);
///   s.done();
class JsonSchema : public Schema {
 public:
  JsonSchema(const json& object, std::string path) : reader_(object, std::move(path)) {}
  explicit JsonSchema(Reader reader) : reader_(std::move(reader)) {}

  std::string path() const override { return reader_.path(); }
  bool has(const std::string& key) const override { return reader_.has(key); }
  bool is_null(const std::string& key) const override { return reader_.is_null(key); }
  void field(const std::string& key, bool& value) override { read(key, value); }
  void field(const std::string& key, int64_t& value) override { read(key, value); }
  void field(const std::string& key, double& value) override { read(key, value); }
  void field(const std::string& key, std::string& value) override { read(key, value); }
  void field(const std::string& key, std::vector<int64_t>& value) override { read(key, value); }
  void field(const std::string& key, std::vector<double>& value) override { read(key, value); }
  void field(const std::string& key, std::vector<std::string>& value) override { read(key, value); }
  void field(const std::string& key, std::vector<std::vector<int64_t>>& value) override { read(key, value); }
  void field(const std::string& key, std::vector<std::vector<std::string>>& value) override { read(key, value); }
  void names(const std::string& key, std::vector<std::string>& value, const std::string& null_as) override {
    const json* given = reader_.use(key);
    if (!given || given->is_null()) return;
    if (given->is_string()) {
      value = {given->get<std::string>()};
      return;
    }
    if (given->is_array() && !given->empty() &&
        std::all_of(given->begin(), given->end(), [](const json& x) { return x.is_string() || x.is_null(); })) {
      value.clear();
      for (const auto& x : *given) value.push_back(x.is_null() ? null_as : x.get<std::string>());
      return;
    }
    fail_at(reader_.path_of(key), "expected an output name or a list of them, got ", Reader::describe(*given));
  }
  void ignore(const std::string& key, const char* why) override { reader_.ignore(key, why); }

  const Reader& reader() const { return reader_; }
  void done() const { reader_.done(); }

 private:
  template <class T>
  void read(const std::string& key, T& value) {
    value = reader_.get<T>(key, value);
  }
  Reader reader_;
};

}  // namespace distill
