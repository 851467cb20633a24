#pragma once
// DistillationModel (N named models on the same input) and AttentionModel (models chained,
// their outputs merged): the reference's composition (docs/reference.md §1.1, §1.2).

#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "distill/compose/model.hpp"

namespace distill {

/// How a frozen model runs when its composition is put in train mode. "train" (the
/// reference's behaviour): BatchNorm uses batch statistics and updates its running
/// statistics, dropout is active; the SSLD docs report this as slightly better (76.00% vs
/// 75.84%). "eval": frozen models always run in eval mode (fixed statistics, deterministic).
/// Frozen parameters never receive gradients either way.
enum class FrozenMode { train, eval };

namespace detail {

/// Named sub-models, each registered under its name and optionally frozen: the part
/// DistillationModel and AttentionModel share.
template <class Base>
class ModelGroup : public Base {
 public:
  struct Member {
    std::string name;
    std::shared_ptr<FeatureModel> model;
    bool frozen;
  };

  /// Adds `model` under `name`; a frozen model's parameters stop requiring gradients.
  void add(const std::string& name, std::shared_ptr<FeatureModel> model, bool frozen = false) {
    if (!model) fail(group_name(), ": model '", name, "' is null");
    if (name.empty() || name.find('.') != std::string::npos)
      fail(group_name(), ": model name '", name, "' must be non-empty and without '.'");
    for (const auto& m : members_)
      if (m.name == name) fail(group_name(), ": two models are named '", name, "'");
    this->register_module(name, model);
    if (frozen)
      for (auto& p : model->parameters()) p.requires_grad_(false);
    members_.push_back({name, std::move(model), frozen});
    apply_frozen_mode();
  }

  const std::vector<Member>& members() const { return members_; }
  std::vector<std::string> model_names() const {
    std::vector<std::string> names;
    for (const auto& m : members_) names.push_back(m.name);
    return names;
  }
  std::shared_ptr<FeatureModel> model(const std::string& name) const {
    for (const auto& m : members_)
      if (m.name == name) return m.model;
    fail(group_name(), ": no model named '", name, "'; the models are ", describe(model_names()));
  }

  void set_frozen_mode(FrozenMode mode) {
    frozen_mode_ = mode;
    apply_frozen_mode();
  }
  FrozenMode frozen_mode() const { return frozen_mode_; }

  void train(bool on = true) override {
    Base::train(on);
    apply_frozen_mode();
  }

  /// Parameters that get gradients: frozen models' parameters excluded, shared ones once.
  std::vector<torch::Tensor> trainable_parameters() const {
    std::vector<torch::Tensor> params;
    std::unordered_set<const void*> seen;
    for (const auto& p : this->parameters())
      if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) params.push_back(p);
    return params;
  }

  static std::string describe(const std::vector<std::string>& names) {
    std::string text;
    for (const auto& n : names) text += (text.empty() ? "'" : ", '") + n + "'";
    return text.empty() ? "(none)" : text;
  }

 protected:
  virtual std::string group_name() const = 0;

 private:
  void apply_frozen_mode() {
    if (frozen_mode_ != FrozenMode::eval || !this->is_training()) return;
    for (auto& m : members_)
      if (m.frozen) m.model->eval();
  }

  std::vector<Member> members_;
  FrozenMode frozen_mode_ = FrozenMode::train;
};

}  // namespace detail

/// Runs every model on the same images and returns each one's Features by name (the
/// reference's DistillationModel). `infer_model_name` names the model that evaluation and
/// export use.
///
///   distill::DistillationModel model("Student");
///   model->add("Teacher", distill::models::create("ResNet34", {{"pretrained", "r34.pth"}}), /*frozen=*/true);
///   model->add("Student", distill::models::create("ResNet18"));
///   distill::ModelOutputs out = model->forward(images);   // out["Student"]["logits"]
class DistillationModelImpl : public detail::ModelGroup<torch::nn::Module> {
 public:
  explicit DistillationModelImpl(std::string infer_model_name = "Student")
      : infer_model_name_(std::move(infer_model_name)) {}

  ModelOutputs forward(const torch::Tensor& images) {
    if (members().empty()) fail("DistillationModel: no models were added");
    ModelOutputs out;
    for (const auto& m : members()) out.set(m.name, m.model->forward(images));
    return out;
  }

  const std::string& infer_model_name() const { return infer_model_name_; }
  /// The model evaluation and export use (the reference hard-codes "Student" in evaluation,
  /// docs/reference.md §7.4; here both use infer_model_name).
  std::shared_ptr<FeatureModel> infer_model() const { return model(infer_model_name_); }

  /// Parameters for the optimizer in two groups: `decay` and `no_decay` (those a model
  /// lists in no_weight_decay_parameters(), e.g. PP-LCNet's BatchNorm). Frozen excluded.
  std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> decay_groups() const {
    std::unordered_set<const void*> exempt;
    for (const auto& m : members())
      for (const auto& p : m.model->no_weight_decay_parameters()) exempt.insert(p.unsafeGetTensorImpl());
    std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> groups;
    for (const auto& p : trainable_parameters())
      (exempt.count(p.unsafeGetTensorImpl()) ? groups.second : groups.first).push_back(p);
    return groups;
  }

 protected:
  std::string group_name() const override { return "DistillationModel"; }

 private:
  std::string infer_model_name_;
};
TORCH_MODULE(DistillationModel);

/// Chains models: the first takes the images, each next one the Features of the one before;
/// all outputs are merged into one Features (a later name replaces an earlier equal one).
/// The reference's AttentionModel, used by AFD to put linear transforms after a backbone.
///
///   distill::AttentionModel teacher;
///   teacher->add("ResNet34", resnet34, /*frozen=*/true);
///   teacher->add("LinearTransformTeacher", transform);
///   distill::Features out = teacher->forward(images);   // logits, blocks[i], query, value[i]
class AttentionModelImpl : public detail::ModelGroup<FeatureModel> {
 public:
  using FeatureModel::forward;
  std::string name() const override { return "AttentionModel"; }

  Features forward(const torch::Tensor& images) override {
    if (members().empty()) fail("AttentionModel: no models were added");
    return chain(members().front().model->forward(images), 1);
  }
  Features forward(const Features& features) override {
    if (members().empty()) fail("AttentionModel: no models were added");
    return chain(members().front().model->forward(features), 1);
  }
  std::vector<torch::Tensor> no_weight_decay_parameters() const override {
    std::vector<torch::Tensor> params;
    for (const auto& m : members())
      for (auto& p : m.model->no_weight_decay_parameters()) params.push_back(p);
    return params;
  }

 protected:
  std::string group_name() const override { return "AttentionModel"; }

 private:
  Features chain(Features current, size_t next) {
    Features merged = current;
    for (size_t i = next; i < members().size(); ++i) {
      current = members()[i].model->forward(current);
      for (const auto& [key, value] : current) merged.set(key, value);
    }
    return merged;
  }
};
TORCH_MODULE(AttentionModel);

}  // namespace distill
