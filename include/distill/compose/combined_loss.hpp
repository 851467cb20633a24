#pragma once
// CombinedLoss: the weighted sum of the configured loss terms (docs/reference.md §2.0), and
// the parameters an optimizer trains.

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "distill/compose/loss_terms.hpp"
#include "distill/compose/models.hpp"

namespace distill {

/// The epochs (1-based, both ends included) in which a loss term counts: stage-wise training
/// (FitNets' hint stage, then the task) gives its terms consecutive ranges.
struct EpochRange {
  int64_t first = 1, last = std::numeric_limits<int64_t>::max();
  bool contains(int64_t epoch) const { return epoch >= first && epoch <= last; }
};

/// Weighted sum of loss terms. forward() returns every term multiplied by its weight and
/// their sum under "loss".
///
/// Deliberate differences from the reference (quirks 7.1 and 7.2):
/// - one configured loss is weighted and summed like several (the reference ignores the
///   weight of a single loss and optimises only its first entry);
/// - two terms with the same name are an error naming both (the reference lets the later one
///   silently replace the earlier, so it is never optimised).
///
///   distill::CombinedLoss loss;
///   loss->add(distill::GroundTruth<distill::CELoss>(distill::CELoss(), distill::GroundTruthOptions().name("CELoss")));
///   loss->add(distill::Pair<distill::DKDLoss>(distill::DKDLoss(), distill::PairOptions().name("loss_dkd")), 1.0);
///   auto terms = loss->forward(outputs, labels);   // "CELoss_Student", "loss_dkd_...", "loss"
///   terms["loss"].backward();
class CombinedLossImpl : public torch::nn::Module {
 public:
  /// Adds `term` with `weight` (finite and >= 0: a negative weight would ascend its term),
  /// counted in the epochs `epochs` (all by default; see set_epoch).
  void add(std::shared_ptr<LossTerm> term, double weight = 1.0, EpochRange epochs = {}) {
    if (!term) fail("CombinedLoss: the term is null");
    if (!(weight >= 0) || !std::isfinite(weight))
      fail_at(term->origin(), "weight must be a finite number >= 0, got ", weight);
    if (epochs.first < 1 || epochs.last < epochs.first)
      fail_at(term->origin(), "epochs must be [first, last] with 1 <= first <= last, got [", epochs.first, ", ",
              epochs.last, "]");
    register_module("term" + std::to_string(terms_.size()), term);
    terms_.push_back({std::move(term), weight, epochs});
  }
  /// Adds a term given as its module holder: Pair<...>, GroundTruth<...>, AFDTerm, ...
  template <class Holder, class = std::enable_if_t<std::is_base_of_v<LossTerm, typename Holder::ContainedType>>>
  void add(const Holder& term, double weight = 1.0, EpochRange epochs = {}) {
    add(std::static_pointer_cast<LossTerm>(term.ptr()), weight, epochs);
  }

  /// The epoch (1-based) that starts: terms outside their range stop counting, and losses
  /// with a schedule (CTKD) move on. The trainer calls it at the start of every epoch; before
  /// any call every term counts.
  void set_epoch(int64_t epoch) {
    epoch_ = epoch;
    for (auto& weighted : terms_) weighted.term->set_epoch(epoch);
  }
  /// Lets terms that read the models (OFD: the teacher's batch norms) find them; the trainer
  /// calls it once the models are built and loaded.
  void bind(const DistillationModelImpl& model) {
    for (auto& weighted : terms_) with_context(weighted.term->origin(), [&] { weighted.term->bind(model); });
  }
  /// The dataset indices [B] of the next batch's samples, for terms that keep per-sample state
  /// (CRD's memory banks); the trainer calls it before every training batch.
  void set_batch(const torch::Tensor& indices) {
    for (auto& weighted : terms_) weighted.term->set_batch(indices);
  }

  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor& labels) {
    if (terms_.empty()) fail("CombinedLoss: no loss terms were added");
    LossTerms all;
    std::vector<std::pair<std::string, const LossTerm*>> producers;
    torch::Tensor total;
    for (auto& [term, weight, epochs] : terms_) {
      if (epoch_ > 0 && !epochs.contains(epoch_)) continue;
      for (const auto& [name, value] : term->forward(outputs, labels)) {
        if (name == "loss") fail_at(term->origin(), "a term may not be named 'loss' (the total)");
        for (const auto& [other, producer] : producers)
          if (other == name)
            fail_at(term->origin(), "its term '", name, "' is also produced by ", producer->origin(),
                    "; give one of them another 'name'");
        auto weighted = value * weight;
        all.set(name, weighted);
        producers.emplace_back(name, term.get());
        total = total.defined() ? total + weighted : weighted;
      }
    }
    if (!total.defined()) fail("CombinedLoss: no loss term counts at epoch ", epoch_, " (see each term's epochs)");
    all.set("loss", total);
    return all;
  }

  size_t size() const { return terms_.size(); }

  /// Each added term's origin (its recipe path, e.g. "Loss.Train[1].DistillationDKDLoss"),
  /// weight and epochs, in order (distill check prints them).
  struct Entry {
    std::string origin;
    double weight;
    EpochRange epochs;
  };
  std::vector<Entry> entries() const {
    std::vector<Entry> out;
    for (const auto& t : terms_) out.push_back({t.term->origin(), t.weight, t.epochs});
    return out;
  }

 private:
  struct Weighted {
    std::shared_ptr<LossTerm> term;
    double weight;
    EpochRange epochs;
  };
  std::vector<Weighted> terms_;
  int64_t epoch_ = 0;
};
TORCH_MODULE(CombinedLoss);

/// What an optimizer trains, split for weight decay: the model's trainable parameters (frozen
/// models excluded) and the loss modules' parameters (MGD's generator, PEFD's projectors,
/// AFD's p_t / p_s) in `decay`; those a model exempts (no_weight_decay_parameters(), e.g.
/// PP-LCNet's BatchNorm) in `no_decay`. Every tensor appears once.
struct ParameterGroups {
  std::vector<torch::Tensor> decay, no_decay;
};

inline ParameterGroups optimizer_parameters(const DistillationModelImpl& model, const CombinedLossImpl& loss) {
  ParameterGroups groups;
  auto [decay, no_decay] = model.decay_groups();
  groups.decay = std::move(decay);
  groups.no_decay = std::move(no_decay);
  std::unordered_set<const void*> seen;
  for (const auto* list : {&groups.decay, &groups.no_decay})
    for (const auto& p : *list) seen.insert(p.unsafeGetTensorImpl());
  for (const auto& p : loss.parameters())
    if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) groups.decay.push_back(p);
  return groups;
}

}  // namespace distill
