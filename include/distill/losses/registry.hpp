#pragma once
// Losses by name, for recipes. Each loss header registers its module under the reference's
// name with one call, next to the function that describes its keys (distill::Schema):
//
//   inline void describe(distill::Schema& s, KDOptions& o) { s.field("temperature", o.temperature()); }
//   inline const bool kd_registered = distill::register_loss<KDLoss>("KLDivLoss", {.term_name = "loss_kldiv"});
//
// A registered loss "X" is then usable from a recipe as "DistillationX" (a Pair over model
// outputs) and, with ground_truth, as "DistillationGTX"; see config::build_loss. Needs only
// libtorch.

#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <torch/torch.h>

#include "distill/core/registry.hpp"
#include "distill/core/schema.hpp"

namespace distill {

namespace detail {
/// Whether a loss module's forward takes the labels as a third argument (DKD, WSL, SKD).
template <class Impl, class = void>
struct takes_labels : std::false_type {};
template <class Impl>
struct takes_labels<Impl, std::void_t<decltype(std::declval<Impl&>().forward(
                              std::declval<torch::Tensor>(), std::declval<torch::Tensor>(), std::declval<torch::Tensor>()))>>
    : std::true_type {};

/// T itself, in a context where a template argument is not deduced (so that a lambda can be
/// passed for a std::function of the options deduced from another argument).
template <class T>
struct same {
  using type = T;
};
template <class T>
using same_t = typename same<T>::type;

/// Whether a loss module follows a schedule by epoch (CTKD): it has set_epoch(int64_t).
template <class Impl, class = void>
struct has_epoch : std::false_type {};
template <class Impl>
struct has_epoch<Impl, std::void_t<decltype(std::declval<Impl&>().set_epoch(int64_t{}))>> : std::true_type {};
}  // namespace detail

/// A loss module of any type behind one call, loss(a, b, labels): what a recipe builds.
/// Losses whose forward takes two tensors ignore the labels.
///
///   distill::AnyLoss loss(distill::KDLoss(distill::KDOptions().temperature(4)));
///   auto value = loss(student_logits, teacher_logits, labels);
class AnyLoss {
 public:
  AnyLoss() = default;
  template <class Holder>
  explicit AnyLoss(Holder loss) : module_(loss.ptr()), labels_(detail::takes_labels<typename Holder::ContainedType>::value) {
    call_ = [loss](const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& labels) mutable {
      if constexpr (detail::takes_labels<typename Holder::ContainedType>::value) return loss->forward(a, b, labels);
      else return loss->forward(a, b);
    };
    if constexpr (detail::has_epoch<typename Holder::ContainedType>::value)
      epoch_ = [loss](int64_t epoch) mutable { loss->set_epoch(epoch); };
  }

  torch::Tensor operator()(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& labels = {}) const {
    if (!call_) fail("AnyLoss: empty (no loss was given)");
    return call_(a, b, labels);
  }
  /// Whether the loss reads the labels (DKD, WSL, SKD; CE reads its second argument as them).
  bool takes_labels() const { return labels_; }
  /// The module, to register as a child (its parameters reach the optimiser).
  const std::shared_ptr<torch::nn::Module>& ptr() const { return module_; }
  bool is_empty() const { return !module_; }
  /// Tells a loss with a schedule (CTKD) the current epoch (1-based); others ignore it.
  void set_epoch(int64_t epoch) const {
    if (epoch_) epoch_(epoch);
  }

 private:
  std::shared_ptr<torch::nn::Module> module_;
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&)> call_;
  std::function<void(int64_t)> epoch_;
  bool labels_ = false;
};

/// What a teacher cache (docs/teacher-cache.md) can stand in for, for a loss whose teacher
/// input is a cached model's logits.
enum class CachedTeacher {
  /// Not from a cache (the default, e.g. for a user's own loss): the loss may read more of the
  /// teacher than the softmax of its logits.
  none,
  /// From a cache of every logit (`distill cache --topk 0`): the loss reads the teacher's logits
  /// only up to a constant per row, which the stored logits give exactly.
  dense,
  /// From any cache: the loss also takes the top-k teacher of losses/topk.hpp.
  topk,
};

/// How the recipe wrappers of a registered loss behave.
struct LossTraits {
  /// Prefix of the terms "Distillation<Name>" makes ("<term_name>_<A>_<B>"); empty: the
  /// registered name.
  std::string term_name;
  /// Used as "<Name>" on its own, and as "DistillationGT<Name>", it compares models' outputs
  /// with the labels (the reference's CELoss); otherwise "<Name>" on its own is a pair of
  /// Student and Teacher.
  bool ground_truth = false;
  /// "Distillation<Name>" accepts `act` (softmax or sigmoid applied to both inputs first), as
  /// the reference's DistillationDistanceLoss does.
  bool wrapper_act = false;
  /// Which teacher caches the loss learns from (CachedTeacher); Trainer refuses the others.
  CachedTeacher cached_teacher = CachedTeacher::none;

  /// Chaining setter for cached_teacher: `LossTraits{"loss_nkd"}.from_cache(CachedTeacher::dense)`.
  LossTraits& from_cache(CachedTeacher kind) {
    cached_teacher = kind;
    return *this;
  }
};

/// A registered loss: what build_loss needs to make it from a recipe entry.
struct LossSpec {
  /// Builds the loss from the entry's keys; also returns the wrapper's term name (which may
  /// depend on the options, e.g. "loss_l2").
  std::function<std::pair<AnyLoss, std::string>(Schema&)> make;
  LossTraits traits;
  /// Losses that soften their teacher (KD, DKD, DIST, WSL, NKD): the temperature an entry's
  /// keys give, at which a multi-teacher entry averages the teachers' soft targets. Empty for
  /// the others.
  std::function<double(Schema&)> temperature;
};

/// Every registered loss, by name.
inline Registry<LossSpec>& loss_registry() {
  static Registry<LossSpec> registry("loss");
  return registry;
}

/// Registers loss module `Holder` (e.g. distill::KDLoss) under `name`. Its options are read
/// by `describe(Schema&, Options&)`, found next to the options (argument-dependent lookup),
/// starting from `defaults`; `term_name` may compute the wrapper's term name from the options;
/// `temperature` reads the temperature at which the loss softens its teacher (see LossSpec).
/// Returns true, so that a header can register at static initialisation.
///
///   inline const bool registered = distill::register_loss<MyLoss>("MyLoss", MyOptions());
template <class Holder, class Options>
bool register_loss(const std::string& name, Options defaults, LossTraits traits = {},
                   detail::same_t<std::function<std::string(const Options&)>> term_name = nullptr,
                   detail::same_t<std::function<double(const Options&)>> temperature = nullptr) {
  if (traits.term_name.empty()) traits.term_name = name;
  const std::string fixed = traits.term_name;
  LossSpec spec;
  spec.traits = traits;
  spec.make = [defaults, term_name, fixed](Schema& s) {
    Options options = defaults;
    describe(s, options);
    return std::pair<AnyLoss, std::string>(AnyLoss(Holder(options)), term_name ? term_name(options) : fixed);
  };
  if (temperature)
    spec.temperature = [defaults, temperature](Schema& s) {
      Options options = defaults;
      describe(s, options);
      return temperature(options);
    };
  return loss_registry().add(name, std::move(spec));
}

}  // namespace distill
