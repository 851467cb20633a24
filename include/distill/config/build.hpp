#pragma once
// Recipes as JSON with the reference's vocabulary: `Arch` -> DistillationModel,
// `Loss.Train` / `Loss.Eval` -> CombinedLoss (reference sections 1, 2.0, 2.1 and 5). A
// reference YAML recipe converts key for key; every error names its JSON path.

#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "distill/compose/combined_loss.hpp"
#include "distill/config/reader.hpp"
#include "distill/io/state_dict.hpp"
#include "distill/models/afd.hpp"
#include "distill/models/registry.hpp"

namespace distill::config {

/// Reads a JSON file; a syntax error names the file and the position.
inline json load_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) distill::detail::fail(path, ": cannot open the file");
  try {
    return json::parse(in);
  } catch (const json::parse_error& e) {
    distill::detail::fail(path, ": not valid JSON: ", e.what());
  }
}

/// Applies one override "Dotted.Path[i].key=value" (the reference's `-o`) to `config`. Every
/// step of the path must exist: a mistyped key is an error listing the keys there, not a new
/// key. The value is read as JSON (numbers, true/false/null, lists, quoted strings) and
/// otherwise taken as a plain string.
///
///   apply_override(recipe, "Arch.models[0].Teacher.pretrained=weights/resnet34.pth");
inline void apply_override(json& config, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    distill::detail::fail("override '", assignment, "': expected Dotted.Key=value");
  const std::string path = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  json* node = &config;
  std::string where;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '[') {
      const auto close = path.find(']', i);
      const std::string index = close == std::string::npos ? "" : path.substr(i + 1, close - i - 1);
      if (index.empty() || index.find_first_not_of("0123456789") != std::string::npos)
        distill::detail::fail("override '", assignment, "': bad index at '", path.substr(i), "'");
      const size_t n = std::stoul(index);
      if (!node->is_array() || n >= node->size())
        distill::detail::fail("override '", assignment, "': ", where.empty() ? "the root" : where, " has no element [",
                              n, "]", node->is_array() ? " (it has " + std::to_string(node->size()) + ")" : " (not a list)");
      node = &(*node)[n];
      where += "[" + index + "]";
      i = close + 1;
      if (i < path.size() && path[i] == '.') ++i;
      continue;
    }
    const auto end = path.find_first_of(".[", i);
    const std::string key = path.substr(i, end == std::string::npos ? std::string::npos : end - i);
    if (!node->is_object() || !node->contains(key)) {
      std::string keys;
      if (node->is_object())
        for (const auto& item : node->items()) keys += (keys.empty() ? "" : ", ") + item.key();
      distill::detail::fail("override '", assignment, "': ", where.empty() ? "the root" : where, " has no key '", key,
                            "'", keys.empty() ? "" : "; its keys are " + keys);
    }
    node = &(*node)[key];
    where += (where.empty() ? "" : ".") + key;
    i = end == std::string::npos ? path.size() : (path[end] == '.' ? end + 1 : end);
  }
  try {
    *node = json::parse(text);
  } catch (const json::parse_error&) {
    *node = text;
  }
}

namespace detail {

/// A single-key object {"Key": {...}} as the reference writes list entries.
inline std::pair<std::string, const json*> single_entry(const json& entry, const std::string& path) {
  if (!entry.is_object() || entry.size() != 1)
    distill::detail::fail(path, ": expected an object with one key (the entry's name), got ", Reader::describe(entry));
  return {entry.begin().key(), &entry.begin().value()};
}

struct Context {
  std::optional<int64_t> class_num;  // Arch.class_num: the default of sub-models without one
};

std::shared_ptr<FeatureModel> build_feature_model(const json& options, const std::string& path, const Context& context);

/// The `models`, `freeze_params_list` and `pretrained_list` of a DistillationModel or an
/// AttentionModel; models are added to `group` in order.
template <class Group>
void build_group(Group& group, const Reader& r, const Context& context) {
  const auto& models = r.raw("models");
  if (!models.is_array() || models.empty())
    distill::detail::fail(r.path_of("models"), ": expected a non-empty list of models, got ", Reader::describe(models));
  auto per_model = [&](const char* key, auto&& valid, const char* what) {
    std::vector<json> values(models.size());
    if (!r.has(key)) return values;
    const auto& list = r.raw(key);
    if (!list.is_array() || list.size() != models.size())
      distill::detail::fail(r.path_of(key), ": expected a list of ", models.size(), " ", what, " (one per model), got ",
                            Reader::describe(list));
    for (size_t i = 0; i < list.size(); ++i) {
      if (!valid(list[i]))
        distill::detail::fail(r.path_of(key), "[", i, "]: expected ", what, ", got ", Reader::describe(list[i]));
      values[i] = list[i];
    }
    return values;
  };
  const auto freeze = per_model("freeze_params_list", [](const json& v) { return v.is_boolean() || v.is_null(); }, "booleans");
  const auto pretrained = per_model("pretrained_list", [](const json& v) { return v.is_string() || v.is_null(); },
                                    "paths or nulls");
  if (r.has("frozen_mode")) {
    const auto mode = r.get<std::string>("frozen_mode");
    if (mode != "train" && mode != "eval")
      distill::detail::fail(r.path_of("frozen_mode"), ": expected \"train\" or \"eval\", got \"", mode, "\"");
    group.set_frozen_mode(mode == "eval" ? FrozenMode::eval : FrozenMode::train);
  }
  for (size_t i = 0; i < models.size(); ++i) {
    const std::string entry_path = r.path_of("models") + "[" + std::to_string(i) + "]";
    auto [name, options] = single_entry(models[i], entry_path);
    auto model = build_feature_model(*options, entry_path + "." + name, context);
    try {
      group.add(name, model, freeze[i].is_boolean() && freeze[i].template get<bool>());
    } catch (const Error& e) {
      distill::detail::fail(entry_path, ": ", e.what());
    }
  }
  // The reference's pretrained_list never worked (quirk 7.3); here it loads, after all models
  // are built, as the reference intended.
  for (size_t i = 0; i < models.size(); ++i)
    if (pretrained[i].is_string()) {
      try {
        io::load_state_dict(*group.members()[i].model, pretrained[i].template get<std::string>());
      } catch (const Error& e) {
        distill::detail::fail(r.path_of("pretrained_list"), "[", i, "]: ", e.what());
      }
    }
}

inline std::shared_ptr<FeatureModel> build_attention_model(const Reader& r, const Context& context) {
  auto model = std::make_shared<AttentionModelImpl>();
  build_group(*model, r, context);
  return model;
}

inline std::shared_ptr<FeatureModel> build_feature_model(const json& options, const std::string& path,
                                                         const Context& context) {
  Reader r(options, path);
  const std::string name = r.get<std::string>("name");
  std::shared_ptr<FeatureModel> model;
  if (name == "AttentionModel") {
    model = build_attention_model(r, context);
  } else if (name == "LinearTransformTeacher") {
    model = std::make_shared<models::LinearTransformTeacherImpl>(
        r.get<int64_t>("qk_dim", 128), r.get<FeatureShapes>("t_shapes"), r.get<std::vector<std::string>>("keys"));
  } else if (name == "LinearTransformStudent") {
    model = std::make_shared<models::LinearTransformStudentImpl>(
        r.get<int64_t>("qk_dim", 128), r.get<FeatureShapes>("t_shapes"), r.get<FeatureShapes>("s_shapes"),
        r.get<std::vector<std::string>>("keys"));
  } else {
    json backbone = options;
    if (context.class_num && !backbone.contains("class_num")) backbone["class_num"] = *context.class_num;
    return models::create(name, backbone, path);
  }
  r.done();
  return model;
}

}  // namespace detail

/// Sets every "pretrained" / "pretrained_list" entry of an Arch section to "none", for runs
/// that take all weights from one file afterwards (evaluation, inference, export).
inline void drop_pretrained(json& node) {
  if (node.is_object()) {
    for (auto& [key, value] : node.items()) {
      if (key == "pretrained") value = false;
      else if (key == "pretrained_list") value = nullptr;
      else drop_pretrained(value);
    }
  } else if (node.is_array()) {
    for (auto& item : node) drop_pretrained(item);
  }
}

/// Builds the reference's `Arch` section: a DistillationModel of the listed models (each a
/// backbone, an AttentionModel or an AFD LinearTransform*), with `freeze_params_list`,
/// `pretrained_list` (paths or nulls; it works here, unlike the reference's), `infer_model_name`
/// (default "Student") and `class_num` (the default of models without their own; the
/// reference ignores it). `frozen_mode` ("train", the reference's, or "eval") is distill's
/// own key (see FrozenMode).
///
///   auto recipe = distill::config::load_file("examples/recipes/dkd.json");
///   auto model = distill::config::build_model(recipe["Arch"]);
///   distill::ModelOutputs out = model->forward(images);   // out["Student"]["logits"]
inline std::shared_ptr<DistillationModelImpl> build_model(const json& arch, const std::string& path = "Arch") {
  Reader r(arch, path);
  const std::string name = r.get<std::string>("name");
  if (name != "DistillationModel")
    distill::detail::fail(r.path_of("name"), ": expected \"DistillationModel\" (the composition of named models), got \"",
                          name, "\"");
  detail::Context context;
  if (r.has("class_num")) context.class_num = r.get<int64_t>("class_num");
  auto model = std::make_shared<DistillationModelImpl>(r.get<std::string>("infer_model_name", "Student"));
  detail::build_group(*model, r, context);
  r.done();
  const auto names = model->model_names();
  if (std::find(names.begin(), names.end(), model->infer_model_name()) == names.end())
    distill::detail::fail(r.path_of("infer_model_name"), ": '", model->infer_model_name(), "' is none of the models ",
                          DistillationModelImpl::describe(names));
  return model;
}

/// Builds one loss entry from its options (the entry's own keys, weight excluded).
using LossFactory = std::function<std::shared_ptr<LossTerm>(const Reader& options)>;

namespace detail {

/// Reads the student/teacher keys of a pair loss: `key` (both sides), or `s_key`/`t_key`
/// (also spelled `s_keys`/`t_keys`, as the MGD recipe does), each a string or a list; null
/// means the whole output, i.e. "logits".
inline std::pair<std::vector<std::string>, std::vector<std::string>> read_keys(const Reader& r,
                                                                               const char* single = "key") {
  auto read = [&](std::initializer_list<const char*> names) -> std::vector<std::string> {
    for (const char* n : names) {
      if (!r.has(n)) continue;
      const auto& v = r.raw(n);
      if (v.is_string()) return {v.get<std::string>()};
      if (v.is_array() && !v.empty() &&
          std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_string() || x.is_null(); })) {
        std::vector<std::string> keys;
        for (const auto& x : v) keys.push_back(x.is_null() ? "logits" : x.get<std::string>());
        return keys;
      }
      distill::detail::fail(r.path_of(n), ": expected an output name or a list of them, got ", Reader::describe(v));
    }
    return {};
  };
  auto both = read({single});
  auto s = read({"s_key", "s_keys", "student_keepkeys"});
  auto t = read({"t_key", "t_keys", "teacher_keepkeys"});
  if (!both.empty() && (!s.empty() || !t.empty()))
    distill::detail::fail(r.path(), ": give '", single, "' or s_key/t_key, not both");
  if (!both.empty()) return {both, both};
  if (s.empty() != t.empty()) distill::detail::fail(r.path(), ": s_key and t_key must be given together");
  if (s.size() != t.size())
    distill::detail::fail(r.path(), ": ", s.size(), " student keys but ", t.size(), " teacher keys");
  if (s.empty()) return {{"logits"}, {"logits"}};
  return {s, t};
}

inline PairOptions read_pair_options(const Reader& r, const std::string& default_name, bool wrapper_act) {
  PairOptions::Pairs pairs;
  const auto& list = r.raw("model_name_pairs");
  const std::string where = r.path_of("model_name_pairs");
  if (!list.is_array() || list.empty()) distill::detail::fail(where, ": expected a list of [student, teacher] pairs");
  for (size_t i = 0; i < list.size(); ++i) {
    if (!list[i].is_array() || list[i].size() != 2 || !list[i][0].is_string() || !list[i][1].is_string())
      distill::detail::fail(where, "[", i, "]: expected a pair of model names, got ", Reader::describe(list[i]));
    pairs.emplace_back(list[i][0].get<std::string>(), list[i][1].get<std::string>());
  }
  auto [s, t] = read_keys(r);
  auto options = PairOptions(pairs).student_keys(s).teacher_keys(t).name(r.get<std::string>("name", default_name));
  if (wrapper_act && r.has("act")) {
    const auto act = r.get<std::string>("act");
    if (act != "softmax" && act != "sigmoid")
      distill::detail::fail(r.path_of("act"), ": expected null, \"softmax\" or \"sigmoid\", got \"", act, "\"");
    options.act(act);
  }
  return options;
}

/// How to build a base loss from the entry's keys, and so a Pair over it.
using PairFactory = std::function<std::shared_ptr<LossTerm>(const Reader&, PairOptions)>;

template <class Base, class Make>
PairFactory pair_of(Make make) {
  return [make](const Reader& r, PairOptions options) -> std::shared_ptr<LossTerm> {
    return std::make_shared<PairImpl<Base>>(make(r), std::move(options));
  };
}

inline double epsilon(const Reader& r) {
  // The reference treats epsilon outside (0, 1) as "none"; distill only accepts null or [0, 1).
  return r.has("epsilon") ? r.get<double>("epsilon") : 0.0;
}

/// Base losses by the reference's class names (DistillationPairLoss's base_loss_name).
inline const std::map<std::string, PairFactory>& base_losses() {
  static const std::map<std::string, PairFactory> bases{
      {"CELoss", pair_of<CELoss>([](const Reader& r) { return CELoss(CEOptions().label_smoothing(epsilon(r))); })},
      {"KLDivLoss", pair_of<KDLoss>([](const Reader& r) {
         return KDLoss(KDOptions().temperature(r.get<double>("temperature", 4.0)));
       })},
      {"DMLLoss", pair_of<DMLLoss>([](const Reader& r) {
         return DMLLoss(DMLOptions()
                            .act(r.is_null("act") ? "none" : r.get<std::string>("act", "softmax"))
                            .eps(r.get<double>("eps", 1e-12))
                            .sum_across_class_dim(r.get<bool>("sum_across_class_dim", false)));
       })},
      {"DistanceLoss", pair_of<DistanceLoss>([](const Reader& r) {
         return DistanceLoss(DistanceOptions().mode(r.get<std::string>("mode", "l2")));
       })},
      {"DKDLoss", pair_of<DKDLoss>([](const Reader& r) {
         return DKDLoss(DKDOptions()
                            .temperature(r.get<double>("temperature", 1.0))
                            .alpha(r.get<double>("alpha", 1.0))
                            .beta(r.get<double>("beta", 1.0))
                            .use_target_as_gt(r.get<bool>("use_target_as_gt", false)));
       })},
      {"DISTLoss", pair_of<DISTLoss>([](const Reader& r) {
         return DISTLoss(DISTOptions().beta(r.get<double>("beta", 1.0)).gamma(r.get<double>("gamma", 1.0)));
       })},
      {"WSLLoss", pair_of<WSLLoss>([](const Reader& r) {
         return WSLLoss(WSLOptions().temperature(r.get<double>("temperature", 2.0)));
       })},
      {"SKDLoss", pair_of<SKDLoss>([](const Reader& r) {
         return SKDLoss(SKDOptions()
                            .temperature(r.get<double>("temperature", 1.0))
                            .multiplier(r.get<double>("multiplier", 2.0))
                            .alpha(r.get<double>("alpha", 0.9)));
       })},
      {"MGDLoss", pair_of<MGDLoss>([](const Reader& r) {
         return MGDLoss(MGDOptions(r.get<int64_t>("student_channels"), r.get<int64_t>("teacher_channels"))
                            .alpha_mgd(r.get<double>("alpha_mgd", 1.756))
                            .lambda_mgd(r.get<double>("lambda_mgd", 0.15)));
       })},
      {"PEFDLoss", pair_of<PEFDLoss>([](const Reader& r) {
         return PEFDLoss(PEFDOptions(r.get<int64_t>("student_channel"), r.get<int64_t>("teacher_channel"))
                             .num_projectors(r.get<int64_t>("num_projectors", 3))
                             .mode(r.get<std::string>("mode", "flatten")));
       })},
      {"RKdAngle", pair_of<RKDAngleLoss>([](const Reader&) { return RKDAngleLoss(); })},
      {"RkdDistance", pair_of<RKDDistanceLoss>([](const Reader&) { return RKDDistanceLoss(); })},
  };
  return bases;
}

/// A reference Distillation*Loss: a Pair over a fixed base with the reference's default name.
inline LossFactory pair_alias(const std::string& base, std::function<std::string(const Reader&)> default_name,
                              bool wrapper_act = false) {
  return [=](const Reader& r) { return base_losses().at(base)(r, read_pair_options(r, default_name(r), wrapper_act)); };
}
inline std::function<std::string(const Reader&)> named(std::string name) {
  return [name](const Reader&) { return name; };
}

inline LossFactory ground_truth_ce(std::vector<std::string> default_models) {
  return [default_models](const Reader& r) -> std::shared_ptr<LossTerm> {
    auto [keys, unused] = read_keys(r);
    if (keys.size() != 1) distill::detail::fail(r.path_of("key"), ": a ground-truth loss takes one output key");
    auto options = GroundTruthOptions(r.get<std::vector<std::string>>("model_names", default_models))
                       .key(keys.front())
                       .name(r.get<std::string>("name", "CELoss"));
    return std::make_shared<GroundTruthImpl<CELoss>>(CELoss(CEOptions().label_smoothing(epsilon(r))), options);
  };
}

inline std::map<std::string, LossFactory> builtin_losses() {
  std::map<std::string, LossFactory> losses;
  losses["CELoss"] = ground_truth_ce({"Student"});
  losses["DistillationGTCELoss"] = ground_truth_ce({"Student"});
  losses["DistillationCELoss"] = pair_alias("CELoss", named("CELoss"));
  losses["DistillationKLDivLoss"] = pair_alias("KLDivLoss", named("loss_kldiv"));
  losses["DistillationDMLLoss"] = pair_alias("DMLLoss", named("DMLLoss"));
  losses["DistillationDistanceLoss"] = pair_alias(
      "DistanceLoss", [](const Reader& r) { return "loss_" + r.get<std::string>("mode", "l2"); }, /*wrapper_act=*/true);
  losses["DistillationDKDLoss"] = pair_alias("DKDLoss", named("loss_dkd"));
  losses["DistillationDISTLoss"] = pair_alias("DISTLoss", named("loss_dist"));
  losses["DistillationWSLLoss"] = pair_alias("WSLLoss", named("wsl_loss"));
  losses["DistillationSKDLoss"] = pair_alias("SKDLoss", named("skd_loss"));
  losses["DistillationPairLoss"] = [](const Reader& r) {
    const auto base = r.get<std::string>("base_loss_name");
    auto it = base_losses().find(base);
    if (it == base_losses().end()) {
      std::string known;
      for (const auto& b : base_losses()) known += (known.empty() ? "" : ", ") + b.first;
      distill::detail::fail(r.path_of("base_loss_name"), ": unknown base loss '", base, "'; known: ", known);
    }
    return it->second(r, read_pair_options(r, "loss", /*wrapper_act=*/false));
  };
  losses["DistillationRKDLoss"] = [](const Reader& r) -> std::shared_ptr<LossTerm> {
    if (r.has("target_size"))
      distill::detail::fail(r.path_of("target_size"), ": pooling to a target size is not supported; use null");
    json pairs = r.has("model_name_pairs") ? r.raw("model_name_pairs") : json{{"Student", "Teacher"}};
    json patched = json::object();
    patched["model_name_pairs"] = pairs;
    for (const char* k : {"student_keepkeys", "teacher_keepkeys"})
      if (r.has(k)) patched[k] = r.raw(k);
    Reader sub(patched, r.path());
    auto group = std::make_shared<TermGroupImpl>();
    group->add(base_losses().at("RKdAngle")(sub, read_pair_options(sub, "loss_angle", false)));
    group->add(base_losses().at("RkdDistance")(sub, read_pair_options(sub, "loss_dist", false)));
    return group;
  };
  losses["AFDLoss"] = [](const Reader& r) -> std::shared_ptr<LossTerm> {
    auto pair = r.get<std::vector<std::string>>("model_name_pair", {"Student", "Teacher"});
    auto s_keys = r.get<std::vector<std::string>>("student_keys", {"bilinear_key", "value"});
    auto t_keys = r.get<std::vector<std::string>>("teacher_keys", {"query", "value"});
    if (pair.size() != 2 || s_keys.size() != 2 || t_keys.size() != 2)
      distill::detail::fail(r.path(), ": model_name_pair, student_keys and teacher_keys each take two names");
    auto term = std::make_shared<AFDTermImpl>(
        AFDLoss(AFDOptions(r.get<FeatureShapes>("s_shapes"), r.get<FeatureShapes>("t_shapes"))
                    .qk_dim(r.get<int64_t>("qk_dim", 128))),
        std::pair{pair[0], pair[1]}, r.get<std::string>("name", "loss_afd"));
    term->set_keys({s_keys[0], s_keys[1]}, {t_keys[0], t_keys[1]});
    return term;
  };
  return losses;
}

inline std::map<std::string, LossFactory>& loss_registry() {
  static std::map<std::string, LossFactory> registry = builtin_losses();
  return registry;
}

}  // namespace detail

/// Makes a loss name available to build_loss (replacing an earlier one of that name).
///
///   distill::config::register_loss("MyLoss", [](const distill::config::Reader& r) {
///     return std::make_shared<distill::PairImpl<MyLoss>>(MyLoss(r.get<double>("scale", 1.0)),
///                                                        distill::PairOptions().name("my_loss"));
///   });
inline void register_loss(const std::string& name, LossFactory factory) {
  detail::loss_registry()[name] = std::move(factory);
}

/// Builds the reference's `Loss.Train` (or `Loss.Eval`) list: one {LossName: {weight: w,
/// ...}} entry per loss, each weighted into one CombinedLoss. Names: CELoss,
/// DistillationGTCELoss, DistillationCELoss, DistillationKLDivLoss, DistillationDMLLoss,
/// DistillationDistanceLoss, DistillationDKDLoss, DistillationDISTLoss, DistillationWSLLoss,
/// DistillationSKDLoss, DistillationRKDLoss, DistillationPairLoss (base_loss_name: CELoss,
/// KLDivLoss, DMLLoss, DistanceLoss, DKDLoss, DISTLoss, WSLLoss, SKDLoss, MGDLoss, PEFDLoss,
/// RKdAngle, RkdDistance), AFDLoss, and any registered with register_loss.
///
///   auto loss = distill::config::build_loss(recipe["Loss"]["Train"]);
///   distill::LossTerms terms = loss->forward(model->forward(images), labels);
///   terms["loss"].backward();
inline std::shared_ptr<CombinedLossImpl> build_loss(const json& losses, const std::string& path = "Loss.Train") {
  if (!losses.is_array() || losses.empty())
    distill::detail::fail(path, ": expected a non-empty list of losses, got ", Reader::describe(losses));
  auto combined = std::make_shared<CombinedLossImpl>();
  for (size_t i = 0; i < losses.size(); ++i) {
    auto [name, options] = detail::single_entry(losses[i], path + "[" + std::to_string(i) + "]");
    const std::string where = path + "[" + std::to_string(i) + "]." + name;
    auto it = detail::loss_registry().find(name);
    if (it == detail::loss_registry().end()) {
      std::string known;
      for (const auto& l : detail::loss_registry()) known += (known.empty() ? "" : ", ") + l.first;
      distill::detail::fail(where, ": unknown loss '", name, "'; known losses are ", known);
    }
    Reader r(*options, where);
    const double weight = r.get<double>("weight");
    std::shared_ptr<LossTerm> term;
    try {
      term = it->second(r);
    } catch (const Error& e) {
      const std::string message = e.what();
      if (message.rfind(where, 0) == 0) throw;
      distill::detail::fail(where, ": ", message);
    }
    r.done();
    term->set_origin(where);
    combined->add(term, weight);
  }
  return combined;
}

}  // namespace distill::config
