#pragma once
// Loss terms over named model outputs: Pair<Base> (student/teacher pairs) and
// GroundTruth<Base> (models against labels) turn any base loss into a distillation loss, as
// the reference's Distillation*Loss wrappers do (section 2.1).

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "distill/core/features.hpp"
#include "distill/losses.hpp"

namespace distill {

/// Named scalar losses ("loss_kldiv_Student_Teacher" -> value).
using LossTerms = Named<torch::Tensor>;

/// One configured loss: from every model's outputs and the labels, one or more named scalars.
class LossTerm : public torch::nn::Module {
 public:
  virtual LossTerms forward(const ModelOutputs& outputs, const torch::Tensor& labels) = 0;

  /// Where the term was configured (e.g. "Loss.Train[1].DistillationKLDivLoss"); messages
  /// about missing models or keys name it.
  void set_origin(std::string origin) { origin_ = std::move(origin); }
  const std::string& origin() const { return origin_; }

 protected:
  /// outputs[model][key], or an error naming this term and what the outputs hold.
  const torch::Tensor& select(const ModelOutputs& outputs, const std::string& model, const std::string& key) const {
    if (!outputs.contains(model))
      detail::fail(origin_, ": no model '", model, "' among the model outputs ", outputs.describe_keys());
    const auto& features = outputs.at(model);
    if (!features.contains(key))
      detail::fail(origin_, ": model '", model, "' has no output '", key, "'; it has ", features.describe_keys(),
                   " (add the layer to its return_patterns?)");
    return features.at(key);
  }
  /// The list entries key[0], key[1], ... of a model's outputs (AFD's "value").
  std::vector<torch::Tensor> select_list(const ModelOutputs& outputs, const std::string& model,
                                         const std::string& key) const {
    std::vector<torch::Tensor> items;
    const auto& features = outputs.contains(model) ? outputs.at(model) : Features{};
    while (features.contains(key + "[" + std::to_string(items.size()) + "]"))
      items.push_back(features.at(key + "[" + std::to_string(items.size()) + "]"));
    if (items.empty()) items.push_back(select(outputs, model, key + "[0]"));  // reports what is missing
    return items;
  }

 private:
  std::string origin_ = "loss";
};

namespace detail {
/// Whether a loss module's forward takes the labels as a third argument (DKD, WSL, SKD).
template <class Impl, class = void>
struct takes_labels : std::false_type {};
template <class Impl>
struct takes_labels<Impl, std::void_t<decltype(std::declval<Impl&>().forward(
                              std::declval<torch::Tensor>(), std::declval<torch::Tensor>(), std::declval<torch::Tensor>()))>>
    : std::true_type {};

/// The reference wrappers' optional activation on both inputs: "" (none), "softmax" (last
/// axis) or "sigmoid".
inline torch::Tensor activate(const torch::Tensor& x, const std::string& act) {
  if (act == "softmax") return torch::softmax(x, -1);
  if (act == "sigmoid") return torch::sigmoid(x);
  return x;
}
}  // namespace detail

/// Options of Pair: which (student-like, teacher-like) model pairs, which outputs of each
/// ("logits" by default; several keys give one term per key pair), an optional activation,
/// and the name that prefixes the terms.
struct PairOptions {
  using Pairs = std::vector<std::pair<std::string, std::string>>;
  explicit PairOptions(Pairs model_name_pairs = {{"Student", "Teacher"}})
      : model_name_pairs_(std::move(model_name_pairs)) {}
  /// The same output key on both sides (the reference's `key`).
  PairOptions& key(const std::string& k) {
    student_keys_ = teacher_keys_ = {k};
    return *this;
  }
  TORCH_ARG(Pairs, model_name_pairs);
  TORCH_ARG(std::vector<std::string>, student_keys) = {"logits"};
  TORCH_ARG(std::vector<std::string>, teacher_keys) = {"logits"};
  TORCH_ARG(std::string, act) = "";
  TORCH_ARG(std::string, name) = "loss";
};

/// Applies a base loss (a module holder such as distill::KDLoss or distill::MGDLoss) to each
/// (A, B) pair of models: base(outputs[A][key], outputs[B][key]), plus the labels when the
/// base takes them (DKD, WSL, SKD). Terms are named "<name>_<A>_<B>", with "_<key>" appended
/// for outputs other than logits (so that two feature terms never share a name).
///
///   distill::Pair<distill::KDLoss> kd(distill::KDLoss(distill::KDOptions().temperature(4)),
///                                     distill::PairOptions().name("loss_kldiv"));
///   distill::LossTerms terms = kd(outputs, labels);   // "loss_kldiv_Student_Teacher"
template <class Base>
class PairImpl : public LossTerm {
 public:
  PairImpl(Base base, PairOptions options) : options(std::move(options)) {
    this->base = register_module("base", std::move(base));
    if (this->options.model_name_pairs().empty()) detail::fail(origin(), ": model_name_pairs is empty");
    if (this->options.student_keys().size() != this->options.teacher_keys().size() ||
        this->options.student_keys().empty())
      detail::fail(origin(), ": ", this->options.student_keys().size(), " student keys but ",
                   this->options.teacher_keys().size(), " teacher keys; they pair up one to one");
    detail::check_choice("Pair", "act", this->options.act(), {"", "softmax", "sigmoid"});
  }

  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor& labels) override {
    LossTerms terms;
    const auto& o = options;
    for (const auto& [a, b] : o.model_name_pairs())
      for (size_t k = 0; k < o.student_keys().size(); ++k) {
        const auto& sk = o.student_keys()[k];
        const auto& tk = o.teacher_keys()[k];
        auto s = detail::activate(select(outputs, a, sk), o.act());
        auto t = detail::activate(select(outputs, b, tk), o.act());
        std::string name = o.name() + "_" + a + "_" + b;
        if (sk != "logits" || tk != "logits") name += "_" + sk + (tk == sk ? "" : "_" + tk);
        terms.set(name, apply(s, t, labels));
      }
    return terms;
  }

  Base base{nullptr};
  PairOptions options;

 private:
  torch::Tensor apply(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& labels) {
    try {
      if constexpr (detail::takes_labels<typename Base::ContainedType>::value) return base(s, t, labels);
      else return base(s, t);
    } catch (const Error& e) {
      detail::fail(origin(), ": ", e.what());
    }
  }
};

/// Module holder of PairImpl<Base>.
template <class Base>
class Pair : public torch::nn::ModuleHolder<PairImpl<Base>> {
 public:
  using torch::nn::ModuleHolder<PairImpl<Base>>::ModuleHolder;
};

/// Options of GroundTruth: the models to train against the labels, which of their outputs.
struct GroundTruthOptions {
  explicit GroundTruthOptions(std::vector<std::string> model_names = {"Student"})
      : model_names_(std::move(model_names)) {}
  TORCH_ARG(std::vector<std::string>, model_names);
  TORCH_ARG(std::string, key) = "logits";
  TORCH_ARG(std::string, name) = "loss";
};

/// Applies a base loss to each model's output and the labels: base(outputs[M][key], labels),
/// named "<name>_<M>" (the reference's DistillationGTCELoss gives "CELoss_Student").
///
///   distill::GroundTruth<distill::CELoss> ce(distill::CELoss(),
///                                            distill::GroundTruthOptions({"Student"}).name("CELoss"));
template <class Base>
class GroundTruthImpl : public LossTerm {
 public:
  GroundTruthImpl(Base base, GroundTruthOptions options) : options(std::move(options)) {
    this->base = register_module("base", std::move(base));
    if (this->options.model_names().empty()) detail::fail(origin(), ": model_names is empty");
  }

  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor& labels) override {
    LossTerms terms;
    for (const auto& m : options.model_names()) {
      const auto& x = select(outputs, m, options.key());
      try {
        terms.set(options.name() + "_" + m, base(x, labels));
      } catch (const Error& e) {
        detail::fail(origin(), ": ", e.what());
      }
    }
    return terms;
  }

  Base base{nullptr};
  GroundTruthOptions options;
};

/// Module holder of GroundTruthImpl<Base>.
template <class Base>
class GroundTruth : public torch::nn::ModuleHolder<GroundTruthImpl<Base>> {
 public:
  using torch::nn::ModuleHolder<GroundTruthImpl<Base>>::ModuleHolder;
};

/// AFDLoss over the outputs of the AFD transforms (the reference's AFDLoss entry): the
/// student's "bilinear_key" and "value[u]", the teacher's "query" and "value[i]". One term,
/// "<name>" ("loss_afd").
class AFDTermImpl : public LossTerm {
 public:
  AFDTermImpl(AFDLoss loss, std::pair<std::string, std::string> model_name_pair = {"Student", "Teacher"},
              std::string name = "loss_afd")
      : models_(std::move(model_name_pair)), name_(std::move(name)) {
    afd = register_module("afd", std::move(loss));
  }
  /// Output names: student {key, values}, teacher {query, values}.
  void set_keys(std::pair<std::string, std::string> student, std::pair<std::string, std::string> teacher) {
    student_keys_ = std::move(student);
    teacher_keys_ = std::move(teacher);
  }

  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor&) override {
    const auto& [s, t] = models_;
    auto key = select(outputs, s, student_keys_.first);
    auto query = select(outputs, t, teacher_keys_.first);
    try {
      return LossTerms{{name_, afd->forward(key, select_list(outputs, s, student_keys_.second), query,
                                            select_list(outputs, t, teacher_keys_.second))}};
    } catch (const Error& e) {
      detail::fail(origin(), ": ", e.what());
    }
  }

  AFDLoss afd{nullptr};

 private:
  std::pair<std::string, std::string> models_;
  std::string name_;
  std::pair<std::string, std::string> student_keys_{"bilinear_key", "value"}, teacher_keys_{"query", "value"};
};
TORCH_MODULE(AFDTerm);

/// Several terms as one (e.g. the reference's DistillationRKDLoss: an angle and a distance
/// term per pair). Their names must differ.
class TermGroupImpl : public LossTerm {
 public:
  void add(std::shared_ptr<LossTerm> term) {
    register_module("term" + std::to_string(terms_.size()), term);
    terms_.push_back(std::move(term));
  }
  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor& labels) override {
    LossTerms all;
    for (auto& term : terms_)
      for (const auto& [name, value] : term->forward(outputs, labels)) {
        if (all.contains(name)) detail::fail(origin(), ": two of its terms are named '", name, "'");
        all.set(name, value);
      }
    return all;
  }

 private:
  std::vector<std::shared_ptr<LossTerm>> terms_;
};
TORCH_MODULE(TermGroup);

}  // namespace distill
