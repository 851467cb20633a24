#pragma once
// Loss terms over named model outputs: Pair<Base> (student/teacher pairs) and
// GroundTruth<Base> (models against labels) turn any base loss into a distillation loss, as
// the reference's Distillation*Loss wrappers do (docs/reference.md §2.1). Also the terms that
// are not a wrapper around one loss (AFD, RKD's pair of terms), and how a recipe entry's name
// becomes a term (make_term).

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "distill/compose/fwd.hpp"
#include "distill/core/features.hpp"
#include "distill/losses.hpp"

namespace distill {

/// Named scalar losses ("loss_kldiv_Student_Teacher" -> value).
using LossTerms = Named<torch::Tensor>;

/// One configured loss: from every model's outputs and the labels, one or more named scalars.
class LossTerm : public torch::nn::Module {
 public:
  virtual LossTerms forward(const ModelOutputs& outputs, const torch::Tensor& labels) = 0;
  /// Called at the start of every epoch (1-based) for losses with a schedule (CTKD).
  virtual void set_epoch(int64_t) {}
  /// Called once the models exist, for terms that read them (OFD's teacher batch norms).
  virtual void bind(const DistillationModelImpl&) {}
  /// Called before every training batch with its samples' dataset indices (CRD's memory).
  virtual void set_batch(const torch::Tensor&) {}

  /// Where the term was configured (e.g. "Loss.Train[1].DistillationKLDivLoss"); messages
  /// about missing models or keys name it.
  void set_origin(std::string origin) { origin_ = std::move(origin); }
  const std::string& origin() const { return origin_; }

 protected:
  /// outputs[model][key], or an error naming this term and what the outputs hold.
  const torch::Tensor& select(const ModelOutputs& outputs, const std::string& model, const std::string& key) const {
    if (!outputs.contains(model))
      fail_at(origin_, "no model '", model, "' among the model outputs ", outputs.describe_keys());
    const auto& features = outputs.at(model);
    if (!features.contains(key))
      fail_at(origin_, "model '", model, "' has no output '", key, "'; it has ", features.describe_keys(),
              " (add the layer to its return_patterns?)");
    return features.at(key);
  }
  /// outputs[model][key] for each key, in order.
  std::vector<torch::Tensor> select_all(const ModelOutputs& outputs, const std::string& model,
                                        const std::vector<std::string>& keys) const {
    std::vector<torch::Tensor> items;
    for (const auto& key : keys) items.push_back(select(outputs, model, key));
    return items;
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
  /// Runs `body`, naming this term in any error it raises.
  template <class Body>
  decltype(auto) guarded(Body&& body) const {
    return with_context(origin_, std::forward<Body>(body));
  }

 private:
  std::string origin_ = "loss";
};

namespace detail {
/// A base loss (a module holder such as KDLoss, or an AnyLoss) applied to (a, b) and, when
/// it reads them, the labels.
template <class Base>
torch::Tensor call_pair(Base& base, const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& labels) {
  if constexpr (std::is_same_v<Base, AnyLoss>) return base(a, b, labels);
  else if constexpr (takes_labels<typename Base::ContainedType>::value) return base(a, b, labels);
  else return base(a, b);
}
/// A base loss applied to a model's output and the labels.
/// Passes the epoch to a base loss that has a schedule.
template <class Base>
void set_base_epoch(Base& base, int64_t epoch) {
  if constexpr (std::is_same_v<Base, AnyLoss>) base.set_epoch(epoch);
  else if constexpr (has_epoch<typename Base::ContainedType>::value) base->set_epoch(epoch);
}
template <class Base>
torch::Tensor call_ground_truth(Base& base, const torch::Tensor& x, const torch::Tensor& labels) {
  if constexpr (std::is_same_v<Base, AnyLoss>) return base(x, labels);
  else return base(x, labels);
}
}  // namespace detail

/// Options of Pair: which (student-like, teacher-like) model pairs, which outputs of each
/// ("logits" by default; several keys give one term per key pair), an activation applied to
/// both first, and the name that prefixes the terms.
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
  TORCH_ARG(Act, act) = Act::none;
  TORCH_ARG(std::string, name) = "loss";
};

/// Recipe keys of a pair wrapper: model_name_pairs (default [["Student", "Teacher"]]), the
/// outputs as `key` (both sides) or s_key / t_key (also spelled s_keys / t_keys and
/// student_keepkeys / teacher_keepkeys; a string or a list, null meaning "logits"), name, and
/// act when `with_act` (the reference's DistillationDistanceLoss).
inline void describe(Schema& s, PairOptions& o, bool with_act = false) {
  std::vector<std::vector<std::string>> pairs;
  for (const auto& [a, b] : o.model_name_pairs()) pairs.push_back({a, b});
  s.field("model_name_pairs", pairs);
  if (pairs.empty()) fail_at(s.path_of("model_name_pairs"), "expected a non-empty list of [student, teacher] pairs");
  PairOptions::Pairs read;
  for (size_t i = 0; i < pairs.size(); ++i) {
    if (pairs[i].size() != 2)
      fail_at(s.path_of("model_name_pairs") + "[" + std::to_string(i) + "]", "expected a pair of model names, got ",
              pairs[i].size(), " names");
    read.emplace_back(pairs[i][0], pairs[i][1]);
  }
  o.model_name_pairs(read);
  // Each side's keys under one of its spellings.
  auto side = [&](std::initializer_list<const char*> spellings, std::vector<std::string>& keys) {
    const char* given = nullptr;
    for (const char* key : spellings) {
      std::vector<std::string> value;
      s.names(key, value, "logits");
      if (value.empty()) continue;
      if (given) fail_at(s.path(), "give '", given, "' or '", key, "', not both");
      given = key;
      keys = value;
    }
    return given != nullptr;
  };
  std::vector<std::string> both, student, teacher;
  const bool has_both = side({"key"}, both);
  const bool has_s = side({"s_key", "s_keys", "student_keepkeys"}, student);
  const bool has_t = side({"t_key", "t_keys", "teacher_keepkeys"}, teacher);
  if (has_both && (has_s || has_t)) fail_at(s.path(), "give 'key' or s_key/t_key, not both");
  if (has_s != has_t) fail_at(s.path(), "s_key and t_key must be given together");
  if (has_both) o.student_keys(both).teacher_keys(both);
  if (has_s) {
    if (student.size() != teacher.size())
      fail_at(s.path(), student.size(), " student keys but ", teacher.size(), " teacher keys; they pair up one to one");
    o.student_keys(student).teacher_keys(teacher);
  }
  s.field("name", o.name());
  if (with_act) describe_act(s, "act", o.act());
}

/// Applies a base loss (a module holder such as distill::KDLoss or distill::MGDLoss, or an
/// AnyLoss) to each (A, B) pair of models: base(outputs[A][key], outputs[B][key]), plus the
/// labels when the base takes them (DKD, WSL, SKD). Terms are named "<name>_<A>_<B>", with
/// "_<key>" appended for outputs other than logits (so that two feature terms never share a
/// name).
///
///   distill::Pair<distill::KDLoss> kd(distill::KDLoss(distill::KDOptions().temperature(4)),
///                                     distill::PairOptions().name("loss_kldiv"));
///   distill::LossTerms terms = kd(outputs, labels);   // "loss_kldiv_Student_Teacher"
template <class Base>
class PairImpl : public LossTerm {
 public:
  PairImpl(Base base, PairOptions options) : base(std::move(base)), options(std::move(options)) {
    register_module("base", this->base.ptr());
    if (this->options.model_name_pairs().empty()) fail("Pair: model_name_pairs is empty");
    if (this->options.student_keys().size() != this->options.teacher_keys().size() ||
        this->options.student_keys().empty())
      fail("Pair: ", this->options.student_keys().size(), " student keys but ", this->options.teacher_keys().size(),
           " teacher keys; they pair up one to one");
  }

  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor& labels) override {
    LossTerms terms;
    const auto& o = options;
    for (const auto& [a, b] : o.model_name_pairs())
      for (size_t k = 0; k < o.student_keys().size(); ++k) {
        const auto& sk = o.student_keys()[k];
        const auto& tk = o.teacher_keys()[k];
        auto s = activate(select(outputs, a, sk), o.act());
        auto t = activate(select(outputs, b, tk), o.act());
        std::string name = o.name() + "_" + a + "_" + b;
        if (sk != "logits" || tk != "logits") name += "_" + sk + (tk == sk ? "" : "_" + tk);
        terms.set(name, guarded([&] { return detail::call_pair(base, s, t, labels); }));
      }
    return terms;
  }
  void set_epoch(int64_t epoch) override { detail::set_base_epoch(base, epoch); }

  Base base;
  PairOptions options;
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

/// Recipe keys of a ground-truth wrapper: model_names (default ["Student"]), key (one output;
/// null: "logits"), name.
inline void describe(Schema& s, GroundTruthOptions& o) {
  s.field("model_names", o.model_names());
  if (o.model_names().empty()) fail_at(s.path_of("model_names"), "expected a non-empty list of model names");
  std::vector<std::string> key{o.key()};
  s.names("key", key, "logits");
  if (key.size() != 1) fail_at(s.path_of("key"), "a ground-truth loss takes one output key, got ", key.size());
  o.key(key.front());
  s.field("name", o.name());
}

/// Applies a base loss to each model's output and the labels: base(outputs[M][key], labels),
/// named "<name>_<M>" (the reference's DistillationGTCELoss gives "CELoss_Student").
///
///   distill::GroundTruth<distill::CELoss> ce(distill::CELoss(),
///                                            distill::GroundTruthOptions({"Student"}).name("CELoss"));
template <class Base>
class GroundTruthImpl : public LossTerm {
 public:
  GroundTruthImpl(Base base, GroundTruthOptions options) : base(std::move(base)), options(std::move(options)) {
    register_module("base", this->base.ptr());
    if (this->options.model_names().empty()) fail("GroundTruth: model_names is empty");
  }

  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor& labels) override {
    LossTerms terms;
    for (const auto& m : options.model_names()) {
      const auto& x = select(outputs, m, options.key());
      terms.set(options.name() + "_" + m, guarded([&] { return detail::call_ground_truth(base, x, labels); }));
    }
    return terms;
  }

  Base base;
  GroundTruthOptions options;
};

/// Module holder of GroundTruthImpl<Base>.
template <class Base>
class GroundTruth : public torch::nn::ModuleHolder<GroundTruthImpl<Base>> {
 public:
  using torch::nn::ModuleHolder<GroundTruthImpl<Base>>::ModuleHolder;
};

/// Options of AFDTerm: the (student, teacher) models and the names of their outputs.
struct AFDTermOptions {
  TORCH_ARG(std::vector<std::string>, model_name_pair) = {"Student", "Teacher"};
  /// Student outputs: the bilinear keys and the values (value[0], value[1], ...).
  TORCH_ARG(std::vector<std::string>, student_keys) = {"bilinear_key", "value"};
  /// Teacher outputs: the queries and the values.
  TORCH_ARG(std::vector<std::string>, teacher_keys) = {"query", "value"};
  TORCH_ARG(std::string, name) = "loss_afd";
};

/// AFDLoss over the outputs of the AFD transforms (the reference's AFDLoss entry): the
/// student's "bilinear_key" and "value[u]", the teacher's "query" and "value[i]". One term,
/// "<name>" ("loss_afd").
class AFDTermImpl : public LossTerm {
 public:
  explicit AFDTermImpl(AFDLoss loss, AFDTermOptions options = {}) : options(std::move(options)) {
    afd = register_module("afd", std::move(loss));
    for (const auto* list : {&this->options.model_name_pair(), &this->options.student_keys(), &this->options.teacher_keys()})
      if (list->size() != 2) fail("AFDTerm: model_name_pair, student_keys and teacher_keys each take two names");
  }

  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor&) override {
    const auto& s = options.model_name_pair()[0];
    const auto& t = options.model_name_pair()[1];
    auto key = select(outputs, s, options.student_keys()[0]);
    auto query = select(outputs, t, options.teacher_keys()[0]);
    auto student_values = select_list(outputs, s, options.student_keys()[1]);
    auto teacher_values = select_list(outputs, t, options.teacher_keys()[1]);
    return LossTerms{{options.name(), guarded([&] { return afd->forward(key, student_values, query, teacher_values); })}};
  }

  AFDLoss afd{nullptr};
  AFDTermOptions options;
};
TORCH_MODULE(AFDTerm);

/// Options of MultiTeacher: the student, the teachers and their weights (empty: equal), which
/// output of each, the temperature at which soft targets are averaged, the term's name.
struct MultiTeacherOptions {
  explicit MultiTeacherOptions(std::vector<std::string> teachers = {}) : teachers_(std::move(teachers)) {}
  TORCH_ARG(std::vector<std::string>, teachers);
  TORCH_ARG(std::vector<double>, teacher_weights);
  TORCH_ARG(std::string, student) = "Student";
  TORCH_ARG(std::string, key) = "logits";
  TORCH_ARG(double, temperature) = 1.0;
  TORCH_ARG(std::string, name) = "loss";
};

/// A logit loss against several frozen teachers at once: base(student, ensemble, labels) with
/// the ensemble of functional::ensemble_logits (their soft targets averaged at `temperature`,
/// which should be the base loss's own). One term, "<name>_<student>_ensemble".
///
///   distill::MultiTeacher kd(distill::AnyLoss(distill::KDLoss(distill::KDOptions().temperature(4))),
///                            distill::MultiTeacherOptions({"Teacher0", "Teacher1"}).temperature(4).name("loss_kldiv"));
class MultiTeacherImpl : public LossTerm {
 public:
  MultiTeacherImpl(AnyLoss base, MultiTeacherOptions options) : base(std::move(base)), options(std::move(options)) {
    register_module("base", this->base.ptr());
    const auto& o = this->options;
    if (o.teachers().size() < 2) fail("MultiTeacher: needs at least two teachers, got ", o.teachers().size());
    if (!o.teacher_weights().empty() && o.teacher_weights().size() != o.teachers().size())
      fail("MultiTeacher: ", o.teacher_weights().size(), " teacher_weights for ", o.teachers().size(), " teachers");
    double total = 0;
    for (double w : o.teacher_weights()) detail::check_weight("MultiTeacher", "a teacher weight", w), total += w;
    if (!o.teacher_weights().empty() && !(total > 0)) fail("MultiTeacher: the teacher weights sum to 0");
  }

  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor& labels) override {
    const auto& o = options;
    const auto& student = select(outputs, o.student(), o.key());
    std::vector<torch::Tensor> teachers;
    for (const auto& t : o.teachers()) teachers.push_back(select(outputs, t, o.key()));
    return LossTerms{{o.name() + "_" + o.student() + "_ensemble", guarded([&] {
                        return base(student, functional::ensemble_logits(teachers, o.teacher_weights(), o.temperature()), labels);
                      })}};
  }
  void set_epoch(int64_t epoch) override { base.set_epoch(epoch); }

  AnyLoss base;
  MultiTeacherOptions options;
};
TORCH_MODULE(MultiTeacher);

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
        if (all.contains(name)) fail_at(origin(), "two of its terms are named '", name, "'");
        all.set(name, value);
      }
    return all;
  }
  void set_epoch(int64_t epoch) override {
    for (auto& term : terms_) term->set_epoch(epoch);
  }
  void bind(const DistillationModelImpl& model) override {
    for (auto& term : terms_) term->bind(model);
  }
  void set_batch(const torch::Tensor& indices) override {
    for (auto& term : terms_) term->set_batch(indices);
  }

 private:
  std::vector<std::shared_ptr<LossTerm>> terms_;
};
TORCH_MODULE(TermGroup);

// ------------------------------------------------------------------ recipe entries by name

/// Makes a term from a recipe entry's keys.
using TermFactory = std::function<std::shared_ptr<LossTerm>(Schema&)>;

/// Recipe entries that are not "<X>", "DistillationX" or "DistillationGTX" over a registered
/// loss X: AFDLoss, DistillationRKDLoss, DistillationPairLoss, and any registered with
/// register_term.
inline Registry<TermFactory>& term_registry() {
  static Registry<TermFactory> registry("loss entry");
  return registry;
}

/// Makes `name` a recipe entry of its own (for terms that are not one loss over model pairs).
inline bool register_term(const std::string& name, TermFactory factory) {
  return term_registry().add(name, std::move(factory));
}

namespace detail {
inline std::shared_ptr<LossTerm> pair_term(const LossSpec& spec, Schema& s, const std::string& default_name = "") {
  auto [loss, term_name] = spec.make(s);
  PairOptions options;
  options.name(default_name.empty() ? term_name : default_name);
  describe(s, options, spec.traits.wrapper_act);
  return std::make_shared<PairImpl<AnyLoss>>(std::move(loss), std::move(options));
}

inline std::shared_ptr<LossTerm> ground_truth_term(const LossSpec& spec, Schema& s) {
  auto [loss, term_name] = spec.make(s);
  GroundTruthOptions options;
  options.name(term_name);
  describe(s, options);
  return std::make_shared<GroundTruthImpl<AnyLoss>>(std::move(loss), std::move(options));
}

/// Every entry name make_term accepts, for messages.
inline std::string describe_entries() {
  std::string text = term_registry().describe();
  for (const auto& name : loss_registry().names()) {
    text += ", " + name + ", Distillation" + name;
    if (loss_registry().find(name)->traits.ground_truth) text += ", DistillationGT" + name;
  }
  return text;
}
}  // namespace detail

/// A recipe entry over a registered loss: the loss, and whether the entry compares outputs with
/// the labels (a GroundTruth) or models with each other (a Pair).
struct LossEntry {
  const LossSpec* spec = nullptr;  ///< nullptr: not an entry over a registered loss
  bool ground_truth = false;
};

/// The registered loss X of entry `name`: "DistillationX" (a Pair), "DistillationGTX" (a
/// GroundTruth, losses registered with ground_truth), or "X" alone (a GroundTruth on "Student"
/// for ground_truth losses, else a Pair of "Student" and "Teacher"). The entries of
/// term_registry() are not over one registered loss: {nullptr}.
inline LossEntry loss_entry(const std::string& name) {
  if (term_registry().find(name)) return {};
  const std::string gt = "DistillationGT", pair = "Distillation";
  if (name.compare(0, gt.size(), gt) == 0)
    if (const auto* spec = loss_registry().find(name.substr(gt.size())); spec && spec->traits.ground_truth)
      return {spec, true};
  if (name.compare(0, pair.size(), pair) == 0)
    if (const auto* spec = loss_registry().find(name.substr(pair.size()))) return {spec, false};
  if (const auto* spec = loss_registry().find(name)) return {spec, spec->traits.ground_truth};
  return {};
}

/// The term a recipe entry `name` describes, its keys read from `s`: a registered term
/// (AFDLoss, DistillationRKDLoss, DistillationPairLoss, ...), or an entry over a registered
/// loss (loss_entry).
///
///   distill::JsonSchema s(entry, "Loss.Train[0].DistillationDKDLoss");
///   auto term = distill::make_term("DistillationDKDLoss", s);
///   s.done();
inline std::shared_ptr<LossTerm> make_term(const std::string& name, Schema& s) {
  if (const auto* factory = term_registry().find(name)) return (*factory)(s);
  const auto entry = loss_entry(name);
  if (!entry.spec) fail_at(s.path(), "unknown loss '", name, "'; known losses are ", detail::describe_entries());
  return entry.ground_truth ? detail::ground_truth_term(*entry.spec, s) : detail::pair_term(*entry.spec, s);
}

namespace detail {
inline const bool terms_registered =
    register_term("DistillationPairLoss",
                  [](Schema& s) {
                    std::string base;
                    s.required("base_loss_name", base);
                    const auto& spec = loss_registry().at(base, s.path_of("base_loss_name"));
                    return pair_term(spec, s, "loss");  // the reference's default name here
                  }) &&
    register_term("DistillationRKDLoss",
                  [](Schema& s) -> std::shared_ptr<LossTerm> {
                    if (s.has("target_size"))
                      fail_at(s.path_of("target_size"), "pooling to a target size is not supported; use null");
                    s.ignore("target_size", "null: no pooling before the relations");
                    if (s.has("name"))
                      fail_at(s.path_of("name"), "DistillationRKDLoss names its terms loss_angle_... and loss_dist_...");
                    PairOptions options;
                    describe(s, options);
                    RKDOptions rkd;
                    describe(s, rkd);
                    auto group = std::make_shared<TermGroupImpl>();
                    group->add(std::make_shared<PairImpl<RKDAngleLoss>>(RKDAngleLoss(), PairOptions(options).name("loss_angle")));
                    group->add(std::make_shared<PairImpl<RKDDistanceLoss>>(RKDDistanceLoss(rkd), PairOptions(options).name("loss_dist")));
                    return group;
                  }) &&
    register_term("DistillationMultiTeacherLoss",
                  [](Schema& s) -> std::shared_ptr<LossTerm> {
                    std::string base;
                    s.required("base_loss_name", base);
                    const auto& spec = loss_registry().at(base, s.path_of("base_loss_name"));
                    if (!spec.temperature)
                      fail_at(s.path_of("base_loss_name"), "'", base, "' does not soften a teacher; a multi-teacher ",
                              "entry takes a logit loss (KLDivLoss, DKDLoss, DISTLoss, WSLLoss, NKDLoss)");
                    auto [loss, term_name] = spec.make(s);
                    MultiTeacherOptions options;
                    s.required("teachers", options.teachers());
                    s.field("teacher_weights", options.teacher_weights());
                    s.field("student", options.student());
                    s.field("key", options.key());
                    options.name(term_name).temperature(spec.temperature(s));
                    s.field("name", options.name());
                    return std::make_shared<MultiTeacherImpl>(std::move(loss), options);
                  }) &&
    register_term("AFDLoss", [](Schema& s) -> std::shared_ptr<LossTerm> {
      FeatureShapes s_shapes, t_shapes;
      s.required("s_shapes", s_shapes);
      s.required("t_shapes", t_shapes);
      AFDOptions afd(s_shapes, t_shapes);
      s.field("qk_dim", afd.qk_dim());
      AFDTermOptions options;
      s.field("model_name_pair", options.model_name_pair());
      s.field("student_keys", options.student_keys());
      s.field("teacher_keys", options.teacher_keys());
      s.field("name", options.name());
      return std::make_shared<AFDTermImpl>(AFDLoss(afd), options);
    });
}  // namespace detail

}  // namespace distill
