#pragma once
// Backbones (and the AFD transforms) by name. Each family registers its names next to its
// options and the describe() that reads them; see config::create_backbone for recipes. No JSON
// here: a user builds backbones in C++ from their options, or by name with defaults.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "distill/compose/backbone.hpp"
#include "distill/core/registry.hpp"
#include "distill/core/schema.hpp"

namespace distill {

/// A Schema that gives no keys: every option keeps its default (a required one is an error).
/// What create(name) reads when there is no recipe.
class DefaultSchema : public Schema {
 public:
  explicit DefaultSchema(std::string path = "defaults") : path_(std::move(path)) {}
  std::string path() const override { return path_; }
  bool has(const std::string&) const override { return false; }
  bool is_null(const std::string&) const override { return false; }
  void field(const std::string&, bool&) override {}
  void field(const std::string&, int64_t&) override {}
  void field(const std::string&, double&) override {}
  void field(const std::string&, std::string&) override {}
  void field(const std::string&, std::vector<int64_t>&) override {}
  void field(const std::string&, std::vector<double>&) override {}
  void field(const std::string&, std::vector<std::string>&) override {}
  void field(const std::string&, std::vector<std::vector<int64_t>>&) override {}
  void field(const std::string&, std::vector<std::vector<std::string>>&) override {}
  void names(const std::string&, std::vector<std::string>&, const std::string&) override {}
  void ignore(const std::string&, const char*) override {}

 private:
  std::string path_;
};

namespace models {

/// Builds a backbone from its recipe keys (the family's own; the keys every backbone has,
/// such as return_patterns and pretrained, are config::create_backbone's).
using Factory = std::function<std::shared_ptr<Backbone>(Schema&)>;
/// Builds a model that is not a backbone (it takes the features of the model before it in an
/// AttentionModel, e.g. AFD's linear transforms).
using FeatureModelFactory = std::function<std::shared_ptr<FeatureModel>(Schema&)>;

inline Registry<Factory>& backbone_registry() {
  static Registry<Factory> registry("backbone");
  return registry;
}
inline Registry<FeatureModelFactory>& feature_model_registry() {
  static Registry<FeatureModelFactory> registry("model");
  return registry;
}

namespace detail {
/// A factory of `Impl` from `Options`: `defaults`, then what `describe(Schema&, Options&)` reads.
template <class Base, class Impl, class Options>
std::function<std::shared_ptr<Base>(Schema&)> factory(Options defaults) {
  return [defaults](Schema& s) -> std::shared_ptr<Base> {
    Options options = defaults;
    describe(s, options);
    return std::make_shared<Impl>(options);
  };
}
}  // namespace detail

/// Makes `name` a backbone: `Impl` built from `Options` (starting from `defaults`, read by
/// the `describe(Schema&, Options&)` next to them). Replaces an earlier registration.
///
///   distill::models::register_backbone<TinyNetImpl>("TinyNet", TinyNetOptions());
template <class Impl, class Options>
bool register_backbone(const std::string& name, Options defaults) {
  return backbone_registry().add(name, detail::factory<Backbone, Impl>(std::move(defaults)));
}
/// Makes `name` a backbone built by `factory`.
inline bool register_backbone(const std::string& name, Factory factory) {
  return backbone_registry().add(name, std::move(factory));
}

/// Makes `name` a model that follows another in an AttentionModel (see FeatureModelFactory).
template <class Impl, class Options>
bool register_feature_model(const std::string& name, Options defaults) {
  return feature_model_registry().add(name, detail::factory<FeatureModel, Impl>(std::move(defaults)));
}

/// Every backbone name.
inline std::vector<std::string> backbone_names() { return backbone_registry().names(); }

/// The backbone `name` with its family's default options (no recipe). For other options build
/// the family directly (models::ResNet(ResNetOptions(34).class_num(100))) or from a recipe
/// entry (config::create_backbone).
///
///   auto resnet = distill::models::create("ResNet18");
inline std::shared_ptr<Backbone> create(const std::string& name) {
  DefaultSchema defaults(name);
  return backbone_registry().at(name, "models::create")(defaults);
}

}  // namespace models
}  // namespace distill
