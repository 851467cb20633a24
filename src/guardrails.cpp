// The guardrails (include/distill/train/guardrails.hpp): the silent-failure monitor and
// `distill check`. The trainer's own part (the teacher check, the tripwire, one checked batch)
// is in src/train.cpp, next to the training loop it guards.

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "distill/config/build.hpp"
#include "distill/train/guardrails.hpp"
#include "distill/train/recipe.hpp"
#include "distill/train/teacher_cache.hpp"
#include "distill/train/trainer.hpp"

namespace distill::train {

// ---------------------------------------------------------------- the monitor

std::vector<Alarm> Monitor::step(const std::vector<std::pair<std::string, double>>& terms, double student_spread) {
  std::vector<Alarm> alarms;
  for (const auto& [name, value] : terms) {
    if (name == "loss") continue;  // the total: the ln C check watches it
    auto [it, fresh] = runs_.try_emplace(name, value, 1);
    auto& [last, unchanged] = it->second;
    if (!fresh) unchanged = value == last ? unchanged + 1 : 1;
    last = value;
    if (unchanged >= o_.alarm_steps() && first_time("constant_term", name))
      alarms.push_back({"constant_term", name,
                        value == 0 ? fmt::format("loss term {} has been exactly 0 for {} steps: it teaches nothing (a pair "
                                                 "of a model with itself, taps that match nothing, or a weight of 0?)",
                                                 name, unchanged)
                                   : fmt::format("loss term {} has stayed exactly {} for {} steps: it does not depend on "
                                                 "the training (a detached tensor, a pair of frozen models?)",
                                                 name, value, unchanged)});
  }
  blind_steps_ = student_spread == 0 ? blind_steps_ + 1 : 0;
  if (blind_steps_ >= o_.alarm_steps() && first_time("input_independent", "student"))
    alarms.push_back({"input_independent", "student",
                      fmt::format("the student's logits have been the same for every image of the batch for {} steps: "
                                  "its output does not depend on the input (dead ReLUs after a too large learning rate?)",
                                  blind_steps_)});
  return alarms;
}

std::vector<Alarm> Monitor::epoch_end(int64_t epoch, double mean_loss, int64_t classes) {
  const double chance = std::log(static_cast<double>(classes));
  if (epoch < 1 || classes < 2 || !(std::abs(mean_loss - chance) <= 0.01 * chance) || !first_time("loss_at_chance", "loss"))
    return {};
  return {{"loss_at_chance", "loss",
           fmt::format("the total loss averaged {:.4f} over epoch {}, within 1% of ln {} = {:.4f}: the student still "
                       "predicts every class alike (a learning rate too low or too high, labels that do not fit the "
                       "images, or terms that cancel?)",
                       mean_loss, epoch, classes, chance)}};
}

namespace {
// Two numbers per parameter tensor (sum, sum of squares, in double): a change to any element
// changes them but for a vanishing coincidence.
torch::Tensor fingerprint(const torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> rows;
  for (const auto& p : module.parameters()) {
    auto values = p.detach().to(torch::kDouble);
    rows.push_back(torch::stack({values.sum(), values.square().sum()}));
  }
  return rows.empty() ? torch::zeros({0, 2}, torch::kDouble) : torch::stack(rows).cpu();
}
}  // namespace

void Monitor::watch(const DistillationModelImpl& model) {
  fingerprints_.clear();
  for (const auto& member : model.members())
    if (member.frozen) fingerprints_[member.name] = fingerprint(*member.model);
}

std::vector<Alarm> Monitor::frozen_changed(const DistillationModelImpl& model) {
  std::vector<Alarm> alarms;
  for (const auto& member : model.members()) {
    auto it = fingerprints_.find(member.name);
    if (it == fingerprints_.end() || !member.frozen) continue;
    const auto now = fingerprint(*member.model);
    if (now.sizes() == it->second.sizes() && now.equal(it->second)) continue;
    if (!first_time("frozen_changed", member.name)) continue;
    std::string first = "?";
    const auto named = member.model->named_parameters();
    for (int64_t i = 0; i < now.size(0) && i < it->second.size(0); ++i)
      if (!now[i].equal(it->second[i])) {
        first = named[static_cast<size_t>(i)].key();
        break;
      }
    alarms.push_back({"frozen_changed", member.name,
                      fmt::format("the frozen model {} has changed during training (first changed parameter: {}): "
                                  "something writes to a model that should stay fixed (a loss that updates it in place, "
                                  "weights shared with a trained model?)",
                                  member.name, first)});
  }
  return alarms;
}

torch::Tensor logit_spread(const torch::Tensor& logits) {
  if (logits.dim() != 2 || logits.size(0) < 2) return torch::full({}, -1.0, logits.options().dtype(torch::kFloat));
  auto z = logits.detach().to(torch::kFloat);
  return (z - z[0]).abs().max() / (z.abs().max() + 1e-30);
}

// ---------------------------------------------------------------- distill check

std::string CheckReport::text() const {
  std::string out;
  auto millions = [](int64_t n) { return n >= 100000 ? fmt::format("{:.2f}M", static_cast<double>(n) / 1e6) : std::to_string(n); };
  if (summary.contains("models")) {
    out += "models\n";
    for (const auto& m : summary["models"]) {
      out += fmt::format("  {:<10} {:<24}", m["name"].get<std::string>(), m["architecture"].get<std::string>());
      if (m.contains("parameters"))
        out += fmt::format(" {:>8} parameters, {} trainable", millions(m["parameters"].get<int64_t>()),
                           millions(m["trainable"].get<int64_t>()));
      out += m["frozen"].get<bool>() ? "  frozen" : "";
      const auto weights = m["weights"].get<std::string>();
      out += weights.empty() ? "  weights: none (random initialisation)\n"
                             : m.contains("tensors_loaded") ? fmt::format("  weights: {} ({} tensors)\n", weights, m["tensors_loaded"].get<int64_t>())
                                                            : fmt::format("  from {}\n", weights);
    }
  }
  if (summary.contains("data")) {
    out += "data\n";
    for (const auto& [phase, d] : summary["data"].items())
      out += fmt::format("  {:<6} {}: {} samples, {} batches of {} per epoch\n", phase, d["dataset"].get<std::string>(),
                         d["samples"].get<int64_t>(), d["batches_per_epoch"].get<int64_t>(), d["batch_size"].get<int64_t>());
  }
  if (summary.contains("optimizer")) {
    out += "optimiser groups\n";
    for (const auto& g : summary["optimizer"])
      out += fmt::format("  weight decay {:<8g} {} tensors, {} parameters\n", g["weight_decay"].get<double>(),
                         g["tensors"].get<int64_t>(), millions(g["parameters"].get<int64_t>()));
  }
  if (summary.contains("losses")) {
    out += "loss entries\n";
    for (const auto& l : summary["losses"])
      out += fmt::format("  {:<48} weight {:g}{}\n", l["entry"].get<std::string>(), l["weight"].get<double>(),
                         l.contains("epochs") ? fmt::format(", epochs {} to {}", l["epochs"][0].get<int64_t>(), l["epochs"][1].get<int64_t>()) : "");
  }
  if (summary.contains("teacher_check")) {
    out += "teacher check\n";
    for (const auto& t : summary["teacher_check"])
      out += fmt::format("  {:<10} top-1 {:.4f} on {} evaluation images (untrained below {:.4f})\n", t["model"].get<std::string>(),
                         t["top1"].get<double>(), t["samples"].get<int64_t>(), t["threshold"].get<double>());
  }
  if (summary.contains("taps")) {
    out += fmt::format("taps on one batch of {}\n", summary["batch"]["images"].dump());
    for (const auto& t : summary["taps"]) out += fmt::format("  {:<40} {}\n", t["tap"].get<std::string>(), t["shape"].dump());
  }
  if (summary.contains("terms")) {
    out += "loss terms on that batch (weighted)\n";
    for (const auto& t : summary["terms"])
      out += fmt::format("  {:<40} {:.6g}{}\n", t["term"].get<std::string>(), t["value"].get<double>(),
                         t.contains("reaches") ? fmt::format("  (reaches {} trainable tensors)", t["reaches"].get<int64_t>()) : "");
  }
  for (const auto& w : warnings) out += "warning: " + w + "\n";
  if (ok()) {
    out += "check passed\n";
  } else {
    out += fmt::format("check failed: {} problem{}\n", problems.size(), problems.size() == 1 ? "" : "s");
    for (const auto& p : problems) out += "  - " + p + "\n";
  }
  return out;
}

nlohmann::ordered_json CheckReport::to_json() const {
  nlohmann::ordered_json out{{"ok", ok()}, {"problems", problems}, {"warnings", warnings}};
  for (const auto& [key, value] : summary.items()) out[key] = value;
  return out;
}

namespace {
// build_model stops at its first error: the other models of Arch.models, built one by one,
// may have more.
void more_model_problems(const json& arch, std::vector<std::string>& problems) {
  if (!arch.is_object() || !arch.contains("models") || !arch["models"].is_array()) return;
  config::detail::Context context;
  if (arch.contains("class_num") && arch["class_num"].is_number_integer()) context.class_num = arch["class_num"].get<int64_t>();
  const auto& models = arch["models"];
  for (size_t i = 0; i < models.size(); ++i) {
    try {
      const std::string at = "Arch.models[" + std::to_string(i) + "]";
      const auto entry = config::detail::single_entry(models[i], at);
      config::detail::build_feature_model(*entry.second, at + "." + entry.first, context);
    } catch (const Error& e) {
      if (std::find(problems.begin(), problems.end(), e.what()) == problems.end()) problems.push_back(e.what());
    } catch (const c10::Error&) {
    }
  }
}
}  // namespace

CheckReport check_recipe(const nlohmann::json& recipe, std::ostream& progress) {
  CheckReport report;
  IgnoredKeys ignored;
  // Each part on its own, so that one problem does not hide the next.
  auto part = [&](auto&& body) {
    try {
      body();
      return true;
    } catch (const Error& e) {
      report.problems.push_back(e.what());
    } catch (const c10::Error& e) {
      report.problems.push_back(std::string("unexpected error inside libtorch: ") + e.what_without_backtrace());
    }
    return false;
  };
  if (!recipe.is_object()) {
    report.problems.push_back("recipe: expected an object of sections (Global, Arch, Loss, Optimizer, DataLoader)");
    return report;
  }
  TrainerOptions options;
  part([&] { options = trainer_options(recipe, &report.problems); });
  torch::manual_seed(static_cast<uint64_t>(options.seed()));
  json trained = recipe;
  if (!options.teacher_cache().empty() && options.train_data())
    part([&] {
      auto cache = TeacherCache::open(options.teacher_cache());
      cache->check_recipe(recipe, *options.train_data());
      trained = without_cached_teachers(recipe, *cache);
    });
  std::shared_ptr<DistillationModelImpl> model;
  if (!trained.contains("Arch")) report.problems.push_back("recipe: no Arch section");
  else if (!part([&] { model = config::build_model(trained["Arch"]); }))
    more_model_problems(trained["Arch"], report.problems);
  std::shared_ptr<CombinedLossImpl> loss, eval_loss;
  const json losses = recipe.value("Loss", json());
  if (!losses.is_object() || !losses.contains("Train")) {
    report.problems.push_back("Loss: expected a section with a Train list");
  } else {
    part([&] {
      Reader section(losses, "Loss");
      section.use("Train"), section.use("Eval");
      section.done();
    });
    for (const auto& [phase, built] : {std::pair<const char*, std::shared_ptr<CombinedLossImpl>*>{"Train", &loss}, {"Eval", &eval_loss}}) {
      if (!losses.contains(phase)) continue;
      const auto& list = losses[phase];
      const std::string path = std::string("Loss.") + phase;
      if (!list.is_array() || list.empty()) {
        report.problems.push_back(path + ": expected a non-empty list of losses, got " + Reader::describe(list));
        continue;
      }
      auto combined = std::make_shared<CombinedLossImpl>();
      bool whole = true;
      for (size_t i = 0; i < list.size(); ++i)
        whole = part([&] { config::detail::add_loss_entry(*combined, list[i], path + "[" + std::to_string(i) + "]"); }) && whole;
      if (whole) *built = combined;
    }
  }
  for (const auto& [path, why] : ignored.keys()) report.warnings.push_back(path + " is accepted but not acted on: " + why);
  if (!report.ok()) {
    report.warnings.push_back("no batch was tried: the problems below come first");
    return report;
  }
  part([&] {
    Trainer trainer(options, model, loss, eval_loss, progress);
    trainer.check(report);
  });
  return report;
}

}  // namespace distill::train
