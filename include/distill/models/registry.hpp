#pragma once
// Backbones by name, with the reference's constructor keys, for configs and the command line.

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "distill/config/reader.hpp"
#include "distill/io/state_dict.hpp"
#include "distill/models/convnet.hpp"
#include "distill/models/mobilenet_v3.hpp"
#include "distill/models/pp_lcnet.hpp"
#include "distill/models/resnet.hpp"

namespace distill::models {

/// Builds a backbone from its options object. It reads the keys it understands from `options`
/// (class_num, ...); create() handles the keys common to all backbones.
using Factory = std::function<std::shared_ptr<Backbone>(const config::Reader& options)>;

namespace detail {

inline std::map<std::string, Factory> builtin_factories() {
  std::map<std::string, Factory> factories;
  for (int64_t depth : {18, 34, 50, 101, 152})
    for (bool vd : {false, true})
      factories["ResNet" + std::to_string(depth) + (vd ? "_vd" : "")] = [depth, vd](const config::Reader& r) {
        return std::make_shared<ResNetImpl>(ResNetOptions(depth)
                                                .vd(vd)
                                                .class_num(r.get<int64_t>("class_num", 1000))
                                                .layout(r.get<std::string>("layout", "paddle")));
      };
  const std::vector<std::pair<const char*, double>> lcnet{{"0_25", 0.25}, {"0_35", 0.35}, {"0_5", 0.5}, {"0_75", 0.75},
                                                          {"1_0", 1.0},   {"1_5", 1.5},   {"2_0", 2.0}, {"2_5", 2.5}};
  for (const auto& [suffix, scale] : lcnet)
    factories[std::string("PPLCNet_x") + suffix] = [scale = scale](const config::Reader& r) {
      return std::make_shared<PPLCNetImpl>(PPLCNetOptions(scale)
                                               .class_num(r.get<int64_t>("class_num", 1000))
                                               .class_expand(r.get<int64_t>("class_expand", 1280))
                                               .dropout_prob(r.get<double>("dropout_prob", 0.2)));
    };
  const std::vector<std::pair<const char*, double>> mobilenet{{"0_35", 0.35}, {"0_5", 0.5}, {"0_75", 0.75},
                                                              {"1_0", 1.0},   {"1_25", 1.25}};
  for (const char* size : {"large", "small"})
    for (const auto& [suffix, scale] : mobilenet)
      factories[std::string("MobileNetV3_") + size + "_x" + suffix] = [size, scale = scale](const config::Reader& r) {
        return std::make_shared<MobileNetV3Impl>(MobileNetV3Options(size)
                                                     .scale(scale)
                                                     .class_num(r.get<int64_t>("class_num", 1000))
                                                     .class_expand(r.get<int64_t>("class_expand", 1280))
                                                     .dropout_prob(r.get<double>("dropout_prob", 0.2)));
      };
  factories["ConvNet"] = [](const config::Reader& r) {
    return std::make_shared<ConvNetImpl>(ConvNetOptions(r.get<std::vector<int64_t>>("widths", {16, 32, 64}))
                                             .depth(r.get<int64_t>("depth", 1))
                                             .class_num(r.get<int64_t>("class_num", 10))
                                             .in_channels(r.get<int64_t>("in_channels", 3))
                                             .batch_norm(r.get<bool>("batch_norm", true)));
  };
  return factories;
}

inline std::map<std::string, Factory>& factories() {
  static std::map<std::string, Factory> registry = builtin_factories();
  return registry;
}

/// return_stages as the reference accepts it: true (all), an index, or a list of indices.
inline std::vector<int64_t> read_stages(const config::Reader& r, size_t count) {
  const auto& value = r.raw("return_stages");
  std::vector<int64_t> stages;
  if (value.is_boolean()) {
    for (size_t i = 0; value.get<bool>() && i < count; ++i) stages.push_back(static_cast<int64_t>(i));
  } else if (value.is_number_integer()) {
    stages.push_back(value.get<int64_t>());
  } else if (value.is_array() && std::all_of(value.begin(), value.end(), [](const auto& v) { return v.is_number_integer(); })) {
    stages = value.get<std::vector<int64_t>>();
  } else {
    distill::detail::fail(r.path_of("return_stages"), ": expected true, an index or a list of indices, got ",
                          config::Reader::describe(value));
  }
  return stages;
}

}  // namespace detail

/// Makes `name` available to create() (and so to configs). Replaces an earlier registration.
///
///   distill::models::register_backbone("TinyNet", [](const distill::config::Reader& r) {
///     return std::make_shared<TinyNetImpl>(r.get<int64_t>("class_num", 10));
///   });
inline void register_backbone(const std::string& name, Factory factory) { detail::factories()[name] = std::move(factory); }

/// Every name create() accepts.
inline std::vector<std::string> backbone_names() {
  std::vector<std::string> names;
  for (const auto& item : detail::factories()) names.push_back(item.first);
  return names;
}

/// Creates a backbone by name. `options` holds the reference's constructor keys:
/// class_num, return_patterns, return_stages (true, an index or a list), pretrained (a path
/// to a state dict written by torch.save or distill), plus per family layout ("paddle" or
/// "torchvision", ResNet), class_expand and dropout_prob (PP-LCNet, MobileNetV3), widths,
/// depth and in_channels (ConvNet). A "name"
/// key, if present, must agree. Unknown names and keys are errors naming `path`.
///
///   auto teacher = distill::models::create("ResNet34", {{"class_num", 100},
///       {"return_patterns", {"blocks[2]", "blocks[6]", "blocks[12]", "blocks[15]"}}});
///   distill::Features out = teacher->forward(images);
inline std::shared_ptr<Backbone> create(const std::string& name, const config::json& options = config::json::object(),
                                        const std::string& path = "options") {
  static const config::json no_options = config::json::object();
  config::Reader r(options.is_null() ? no_options : options, path);
  if (r.has("name") && r.get<std::string>("name") != name)
    distill::detail::fail(r.path_of("name"), ": '", r.get<std::string>("name"), "' disagrees with '", name, "'");
  auto it = detail::factories().find(name);
  if (it == detail::factories().end()) {
    std::string known;
    for (const auto& n : backbone_names()) known += (known.empty() ? "" : ", ") + n;
    distill::detail::fail(r.path_of("name"), ": unknown backbone '", name, "'; known backbones are ", known);
  }
  std::shared_ptr<Backbone> model;
  try {
    model = it->second(r);
    if (r.has("return_patterns") && r.has("return_stages"))
      distill::detail::fail(r.path(), ": give return_patterns or return_stages, not both (the reference silently "
                                      "drops return_stages)");
    if (r.has("return_patterns")) {
      const auto& value = r.raw("return_patterns");
      if (!value.is_array() || !std::all_of(value.begin(), value.end(), [](const auto& v) { return v.is_string(); }))
        distill::detail::fail(r.path_of("return_patterns"), ": expected a list of strings, got ",
                              config::Reader::describe(value));
      model->set_return_patterns(value.get<std::vector<std::string>>());
    }
    if (r.has("return_stages")) model->set_return_stages(detail::read_stages(r, model->stage_patterns().size()));
    if (r.has("use_ssld") && r.get<bool>("use_ssld"))
      distill::detail::fail(r.path_of("use_ssld"), ": the reference downloads its SSLD weights here; give the "
                                                   "weights file as 'pretrained' instead");
    const bool pretrained = r.has("pretrained");
    r.done();  // before the (slow) weight loading
    if (pretrained) {
      const auto& value = r.raw("pretrained");
      if (value.is_string()) io::load_state_dict(*model, value.get<std::string>());
      else if (!value.is_boolean() || value.get<bool>())
        distill::detail::fail(r.path_of("pretrained"), ": expected the path of a state dict (the reference's "
                                                       "'true' downloads Paddle weights), got ",
                              config::Reader::describe(value));
    }
  } catch (const distill::Error& e) {
    const std::string message = e.what();
    if (message.rfind(path, 0) == 0) throw;
    distill::detail::fail(path, " (", name, "): ", message);
  }
  return model;
}

}  // namespace distill::models
