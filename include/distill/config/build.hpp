#pragma once
// Recipes as JSON with the reference's vocabulary: `Arch` -> DistillationModel, `Loss.Train` /
// `Loss.Eval` -> CombinedLoss (docs/reference.md §1, §2.0, §2.1, §5). Pure dispatch: every
// loss and backbone reads its own keys (its describe()) and registers its own names; this
// file only looks names up and handles the keys that belong to the composition itself. Every
// error names its JSON path.

#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "distill/compose/combined_loss.hpp"
#include "distill/compose/feature_terms.hpp"
#include "distill/config/file.hpp"
#include "distill/core/reader.hpp"
#include "distill/io/state_dict.hpp"
#include "distill/models.hpp"

namespace distill::config {

namespace detail {
/// return_stages as the reference accepts it: true (all), an index, or a list of indices.
inline std::vector<int64_t> read_stages(const json& value, const std::string& path, size_t count) {
  std::vector<int64_t> stages;
  if (value.is_boolean()) {
    for (size_t i = 0; value.get<bool>() && i < count; ++i) stages.push_back(static_cast<int64_t>(i));
  } else if (value.is_number_integer()) {
    stages.push_back(value.get<int64_t>());
  } else if (value.is_array() && std::all_of(value.begin(), value.end(), [](const json& v) { return v.is_number_integer(); })) {
    stages = value.get<std::vector<int64_t>>();
  } else {
    fail_at(path, "expected true, an index or a list of indices, got ", Reader::describe(value));
  }
  return stages;
}
}  // namespace detail

namespace detail {
/// Loads a weights file into `model` (strictly) and records where they came from.
inline void load_weights(FeatureModel& model, const std::string& path) {
  io::load_state_dict(model, path);
  model.set_weights_origin(io::weights_path(path), static_cast<int64_t>(io::state_dict(model).size()));
}
}  // namespace detail

/// A backbone from a recipe entry: its family's keys (class_num, layout, widths, ...; see
/// each family's describe()) and the keys every backbone has: return_patterns, return_stages
/// (true, an index or a list), pretrained (the path of a state dict written by torch.save or
/// distill), use_ssld (refused: the reference downloads weights), and name (must agree).
/// Unknown names and keys are errors naming `path`.
///
///   auto teacher = distill::config::create_backbone("ResNet34", {{"class_num", 100},
///       {"return_patterns", {"blocks[2]", "blocks[6]", "blocks[12]", "blocks[15]"}}});
///   distill::Features out = teacher->forward(images);
inline std::shared_ptr<Backbone> create_backbone(const std::string& name, const json& options = json::object(),
                                                 const std::string& path = "options") {
  JsonSchema s(options.is_null() ? json::object() : options, path);
  const Reader& r = s.reader();
  if (const auto given = r.get<std::string>("name", name); given != name)
    fail_at(r.path_of("name"), "'", given, "' disagrees with '", name, "'");
  const auto& factory = models::backbone_registry().at(name, r.path_of("name"));
  auto model = with_context(path + " (" + name + ")", [&] { return factory(s); });
  if (r.has("return_patterns") && r.has("return_stages"))
    fail_at(path, "give return_patterns or return_stages, not both (the reference silently drops return_stages)");
  with_context(path + " (" + name + ")", [&] {
    if (r.has("return_patterns")) model->set_return_patterns(r.get<std::vector<std::string>>("return_patterns"));
    if (r.has("return_stages"))
      model->set_return_stages(detail::read_stages(r.raw("return_stages"), r.path_of("return_stages"), model->stage_patterns().size()));
  });
  r.use("return_patterns"), r.use("return_stages");  // null: none
  const json* pretrained = r.use("pretrained");
  r.ignore("use_ssld", "with pretrained: true, the reference downloads the SSLD weights instead of the plain ones");
  s.done();  // before the (slow) weight loading
  if (pretrained && pretrained->is_string()) {
    with_context(path + " (" + name + ")", [&] { detail::load_weights(*model, pretrained->get<std::string>()); });
  } else if (pretrained && !pretrained->is_null() && !(pretrained->is_boolean() && !pretrained->get<bool>())) {
    fail_at(r.path_of("pretrained"), "expected the path of a weights file (.pdparams or a torch.save state dict; the "
            "reference's 'true' downloads Paddle's weights, its SSLD ones with use_ssld), got ", Reader::describe(*pretrained));
  }
  return model;
}

namespace detail {

/// A single-key object {"Key": {...}} as the reference writes list entries.
inline std::pair<std::string, const json*> single_entry(const json& entry, const std::string& path) {
  if (!entry.is_object() || entry.size() != 1)
    fail_at(path, "expected an object with one key (the entry's name), got ", Reader::describe(entry));
  return {entry.begin().key(), &entry.begin().value()};
}

struct Context {
  std::optional<int64_t> class_num;  // Arch.class_num: the default of sub-models without one
  /// Set for a DistillationModel's own members: each is initialised from libtorch's seed and
  /// its name (see build_model).
  std::optional<uint64_t> member_seed;
};

/// The seed a member named `name` is initialised from, given the generator's seed.
inline uint64_t member_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ULL;
  return (seed ^ h) & ((uint64_t{1} << 63) - 1);
}

std::shared_ptr<FeatureModel> build_feature_model(const json& options, const std::string& path, const Context& context);

/// The `models`, `freeze_params_list`, `pretrained_list` and `frozen_mode` of a
/// DistillationModel or an AttentionModel; models are added to `group` in order.
template <class Group>
void build_group(Group& group, const Reader& r, const Context& context) {
  const auto& models = r.raw("models");
  if (!models.is_array() || models.empty())
    fail_at(r.path_of("models"), "expected a non-empty list of models, got ", Reader::describe(models));
  auto per_model = [&](const char* key, auto&& valid, const char* what) {
    std::vector<json> values(models.size());
    const json* list = r.use(key);
    if (!list || list->is_null()) return values;
    if (!list->is_array() || list->size() != models.size())
      fail_at(r.path_of(key), "expected a list of ", models.size(), " ", what, " (one per model), got ", Reader::describe(*list));
    for (size_t i = 0; i < list->size(); ++i) {
      if (!valid((*list)[i])) fail_at(r.path_of(key) + "[" + std::to_string(i) + "]", "expected ", what, ", got ", Reader::describe((*list)[i]));
      values[i] = (*list)[i];
    }
    return values;
  };
  const auto freeze = per_model("freeze_params_list", [](const json& v) { return v.is_boolean() || v.is_null(); }, "booleans");
  const auto pretrained = per_model("pretrained_list", [](const json& v) { return v.is_string() || v.is_null(); }, "paths or nulls");
  const auto mode = r.get<std::string>("frozen_mode", "train");
  if (mode != "train" && mode != "eval") fail_at(r.path_of("frozen_mode"), "expected \"train\" or \"eval\", got \"", mode, "\"");
  group.set_frozen_mode(mode == "eval" ? FrozenMode::eval : FrozenMode::train);
  for (size_t i = 0; i < models.size(); ++i) {
    const std::string entry_path = r.path_of("models") + "[" + std::to_string(i) + "]";
    // Not a structured binding: clang before 16 cannot capture one in the lambda below.
    const auto entry = single_entry(models[i], entry_path);
    const std::string& name = entry.first;
    if (context.member_seed) torch::manual_seed(member_seed(*context.member_seed, name));
    Context inner = context;
    inner.member_seed.reset();
    auto model = build_feature_model(*entry.second, entry_path + "." + name, inner);
    with_context(entry_path, [&] { group.add(name, model, freeze[i].is_boolean() && freeze[i].template get<bool>()); });
  }
  // The reference's pretrained_list never worked (docs/reference.md §7.3); here it loads, after all models
  // are built, as the reference intended.
  for (size_t i = 0; i < models.size(); ++i)
    if (pretrained[i].is_string())
      with_context(r.path_of("pretrained_list") + "[" + std::to_string(i) + "]",
                   [&] { load_weights(*group.members()[i].model, pretrained[i].template get<std::string>()); });
}

inline std::shared_ptr<FeatureModel> build_feature_model(const json& options, const std::string& path,
                                                         const Context& context) {
  Reader r(options, path);
  const std::string name = r.get<std::string>("name");
  if (name == "AttentionModel") {
    auto model = std::make_shared<AttentionModelImpl>();
    build_group(*model, r, context);
    r.done();
    return model;
  }
  if (const auto* factory = models::feature_model_registry().find(name)) {
    JsonSchema s(options, path);
    s.reader().use("name");
    auto model = with_context(path, [&] { return (*factory)(s); });
    s.done();
    return model;
  }
  json backbone = options;
  if (context.class_num && !backbone.contains("class_num")) backbone["class_num"] = *context.class_num;
  return create_backbone(name, backbone, path);
}

}  // namespace detail

/// Builds the reference's `Arch` section: a DistillationModel of the listed models (each a
/// backbone, an AttentionModel or a registered feature model such as AFD's
/// LinearTransform*), with `freeze_params_list`, `pretrained_list` (paths or nulls; it works
/// here, unlike the reference's), `infer_model_name` (default "Student") and `class_num` (the
/// default of models without their own; the reference ignores it). `frozen_mode` ("train",
/// the reference's, or "eval") is distill's own key (see FrozenMode). Each model is initialised
/// from libtorch's current seed (torch::manual_seed) and its name, so a model's initial weights
/// do not depend on the models listed before it.
///
///   auto recipe = distill::config::load_file("examples/recipes/dkd.json");
///   auto model = distill::config::build_model(recipe["Arch"]);
///   distill::ModelOutputs out = model->forward(images);   // out["Student"]["logits"]
inline std::shared_ptr<DistillationModelImpl> build_model(const json& arch, const std::string& path = "Arch") {
  Reader r(arch, path);
  const std::string name = r.get<std::string>("name");
  if (name != "DistillationModel")
    fail_at(r.path_of("name"), "expected \"DistillationModel\" (the composition of named models), got \"", name, "\"");
  detail::Context context;
  if (r.has("class_num")) context.class_num = r.get<int64_t>("class_num");
  r.use("class_num");
  auto model = std::make_shared<DistillationModelImpl>(r.get<std::string>("infer_model_name", "Student"));
  // Each model starts from (seed, its name), not from where the models before it left the
  // generator: a student's initial weights are then the same whatever teacher the recipe has,
  // with no teacher (a baseline) and with a teacher cache (which does not build the teacher).
  const uint64_t seed = at::detail::getDefaultCPUGenerator().current_seed();
  context.member_seed = seed;
  detail::build_group(*model, r, context);
  torch::manual_seed(seed);  // what follows (dropout, MGD's masks) starts from the seed too
  r.done();
  const auto names = model->model_names();
  if (std::find(names.begin(), names.end(), model->infer_model_name()) == names.end())
    fail_at(r.path_of("infer_model_name"), "'", model->infer_model_name(), "' is none of the models ",
            DistillationModelImpl::describe(names));
  return model;
}

namespace detail {
/// Adds one `Loss.Train` entry ({Name: {weight: w, ...}} at `at`, e.g. "Loss.Train[1]") to `combined`.
inline void add_loss_entry(CombinedLossImpl& combined, const json& entry_json, const std::string& at) {
  const auto entry = single_entry(entry_json, at);
  const std::string& name = entry.first;  // not a structured binding: captured below (clang < 16)
  const json* options = entry.second;
  const std::string where = at + "." + name;
  JsonSchema s(options->is_null() ? json::object() : *options, where);
  double weight = 0;
  s.required("weight", weight);
  EpochRange epochs;
  if (s.has("epochs")) {
    std::vector<int64_t> range;
    s.field("epochs", range);
    if (range.size() != 2) fail_at(s.path_of("epochs"), "expected [first, last] (1-based, both included), got ", range.size(), " numbers");
    epochs = {range[0], range[1]};
  }
  auto term = with_context(where, [&] { return make_term(name, s); });
  s.done();
  term->set_origin(where);
  with_context(where, [&] { combined.add(term, weight, epochs); });
}
}  // namespace detail

/// Builds the reference's `Loss.Train` (or `Loss.Eval`) list: one {Name: {weight: w, ...}}
/// entry per loss, each weighted into one CombinedLoss. For every registered loss X (CELoss,
/// KLDivLoss, DMLLoss, DistanceLoss, DKDLoss, DISTLoss, WSLLoss, SKDLoss, MGDLoss, PEFDLoss,
/// RKdAngle, RkdDistance, and any registered with distill::register_loss) the names
/// "DistillationX", "DistillationGTX" (CELoss) and "X" work (see make_term); besides them
/// AFDLoss, DistillationRKDLoss and DistillationPairLoss (base_loss_name: any X). Any entry
/// may give `epochs: [first, last]`, the epochs in which it counts (stage-wise training).
///
///   auto loss = distill::config::build_loss(recipe["Loss"]["Train"]);
///   distill::LossTerms terms = loss->forward(model->forward(images), labels);
///   terms["loss"].backward();
inline std::shared_ptr<CombinedLossImpl> build_loss(const json& losses, const std::string& path = "Loss.Train") {
  if (!losses.is_array() || losses.empty()) fail_at(path, "expected a non-empty list of losses, got ", Reader::describe(losses));
  auto combined = std::make_shared<CombinedLossImpl>();
  for (size_t i = 0; i < losses.size(); ++i) detail::add_loss_entry(*combined, losses[i], path + "[" + std::to_string(i) + "]");
  return combined;
}

}  // namespace distill::config
