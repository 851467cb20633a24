// The guardrails: each triggered by a run made to fail that way (an untrained teacher, a pair
// whose loss is identically zero, a learning rate that diverges, a frozen model altered by a
// simulated bug, a student blind to its input), the agreement metrics against an independent
// computation, and `distill check` on every shipped recipe and on a broken one.

#include <cmath>
#include <filesystem>
#include <memory>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>

#include "distill/config.hpp"
#include "distill/data.hpp"
#include "distill/data/recipe.hpp"
#include "distill/io.hpp"
#include "distill/train/guardrails.hpp"
#include "distill/train/trainer.hpp"
#include "expect_error.hpp"
#include "recipes.hpp"
#include "scratch.hpp"

using distill_test::expect_error;
using distill_test::read_jsonl;
using json = nlohmann::json;
namespace train = distill::train;

namespace {

/// The synthetic recipe (GT-CE and DKD) with a frozen, untrained teacher, no teacher check, a
/// report every step, writing to a fresh scratch folder `name`.
json frozen_teacher_recipe(const std::string& name) {
  const auto out = distill_test::scratch(name);
  std::filesystem::remove_all(out);
  auto recipe = distill_test::synthetic_recipe(distill_test::dataset_dir(), out, 1, /*mgd=*/false);
  recipe["Arch"]["freeze_params_list"] = {true, false};
  recipe["Global"]["print_batch_step"] = 1;
  recipe["Global"]["teacher_check"] = false;
  return recipe;
}

/// The records of one type in a run's metrics log.
std::vector<json> records(const std::string& out, const std::string& type) {
  std::vector<json> found;
  for (const auto& r : read_jsonl(out + "/metrics.jsonl"))
    if (r.value("type", "") == type) found.push_back(r);
  return found;
}

std::string run(const json& recipe) {
  std::ostringstream log;
  train::Trainer trainer(recipe, log);
  trainer.train();
  return log.str();
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("the teacher check stops a run whose frozen teacher is untrained and names its weights", "[engine][guardrails][teacher_check]") {
  // Fashion-MNIST's KD recipe with its teacher left random: about 10% top-1, below twice chance.
  const auto out = distill_test::scratch("guard_teacher");
  std::filesystem::remove_all(out);
  auto recipe = distill::config::load_file(std::string(DISTILL_RECIPES) + "/fashion_mnist/kd.json");
  distill_test::shrink_recipe(recipe, 10, 224);  // no weights file
  recipe["DataLoader"]["Train"]["dataset"]["limit"] = 128;
  recipe["DataLoader"]["Eval"]["dataset"]["limit"] = 1000;
  recipe["Global"]["output_dir"] = out;
  recipe["Global"]["teacher_check_batches"] = 1;  // 500 images
  expect_error([&] { run(recipe); },
               {"teacher check", "frozen model 'Teacher'", "on 500 evaluation images, below 0.2000 (twice chance for 10 classes)",
                "looks untrained", "none were loaded", "Global.teacher_check=false"});
  auto checks = records(out, "teacher_check");
  REQUIRE(checks.size() == 1);
  CHECK(checks[0]["model"] == "Teacher");
  CHECK_FALSE(checks[0]["passed"].get<bool>());
  CHECK(checks[0]["samples"] == 500);
  CHECK(checks[0]["threshold"] == Approx(0.2));
  CHECK_FALSE(std::filesystem::exists(out + "/latest.pt"));  // stopped before the first step

  // The same teacher saved to a file: the error names the file and the tensors it gave.
  auto built = distill::config::build_model(recipe["Arch"]);
  distill::io::save_state_dict(*built->model("Teacher"), out + "_teacher.pt");
  recipe["Arch"]["models"][0]["Teacher"]["pretrained"] = out + "_teacher.pt";
  expect_error([&] { run(recipe); }, {("Its weights: " + out + "_teacher.pt (38 tensors)").c_str()});

  // A threshold it passes: the run goes on and the check is logged.
  recipe["Global"]["teacher_check_min_top1"] = 0.01;
  recipe["Global"]["epochs"] = 1;
  auto log = run(recipe);
  CHECK(contains(log, "teacher check: Teacher top-1"));
  checks = records(out, "teacher_check");
  REQUIRE(checks.size() == 1);
  CHECK(checks[0]["passed"].get<bool>());
  CHECK(checks[0]["threshold"] == Approx(0.01));
  // Skipped on request.
  recipe["Global"]["teacher_check"] = false;
  CHECK(contains(run(recipe), "teacher check skipped (Global.teacher_check is false)"));
}

TEST_CASE("evaluation reports each teacher's top-1, its agreement with the student and KL(teacher || student)",
          "[engine][guardrails]") {
  auto recipe = frozen_teacher_recipe("guard_agreement");
  const std::string out = recipe["Global"]["output_dir"];
  train::Trainer trainer(recipe, std::cout);
  const auto result = trainer.evaluate();
  REQUIRE(result.teachers.size() == 1);
  const auto& t = result.teachers[0];
  CHECK(t.model == "Teacher");
  CHECK(t.compared);

  // Independently: every evaluation image through both models, KL from torch::kl_div.
  auto& model = trainer.model();
  model.eval();
  auto no_grad = std::make_unique<torch::NoGradGuard>();
  auto eval = distill::data::make_dataset(recipe["DataLoader"]["Eval"]["dataset"], "Eval");
  distill::data::DataLoader loader(eval, distill::data::LoaderOptions().batch_size(20).shuffle(false).num_workers(0));
  loader.start(0);
  auto batch = loader.next();
  REQUIRE(batch->images.size(0) == 20);
  auto teacher = model.model("Teacher")->forward(batch->images)["logits"];
  auto student = model.model("Student")->forward(batch->images)["logits"];
  const double top1 = teacher.argmax(1).eq(batch->labels).to(torch::kDouble).mean().item<double>();
  const double agree = teacher.argmax(1).eq(student.argmax(1)).to(torch::kDouble).mean().item<double>();
  const double kl = torch::kl_div(torch::log_softmax(student, 1), torch::log_softmax(teacher, 1), at::Reduction::Sum,
                                  /*log_target=*/true).item<double>() / 20.0;
  CHECK(t.top1 == Approx(top1));
  CHECK(t.agreement == Approx(agree));
  CHECK(t.kl == Approx(kl).epsilon(1e-5));
  CHECK(kl > 0);
  const auto described = train::Trainer::describe(result);
  auto has = [&](const std::string& name) {
    return std::any_of(described.begin(), described.end(), [&](const auto& m) { return m.first == name; });
  };
  CHECK((has("top1_Teacher") && has("agree_Teacher") && has("kl_Teacher")));
  no_grad.reset();

  // Logged per epoch and drawn.
  run(recipe);
  const auto evals = records(out, "eval");
  REQUIRE(evals.size() == 1);
  CHECK(evals[0].contains("agree_Teacher"));
  CHECK(evals[0].contains("kl_Teacher"));
  std::ifstream svg(out + "/training.svg");
  const std::string drawing((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
  CHECK(contains(drawing, "agreement with Teacher"));
  CHECK(contains(drawing, "KL(teacher || student)"));
  const auto summary = records(out, "summary");
  REQUIRE(summary.size() == 1);
  CHECK(summary[0]["teachers"][0]["model"] == "Teacher");
  CHECK(summary[0]["teachers"][0].contains("agreement"));
}

TEST_CASE("a pair whose loss is identically zero raises an alarm, and stops the run with strict_alarms",
          "[engine][guardrails]") {
  const auto out = distill_test::scratch("guard_zero");
  std::filesystem::remove_all(out);
  auto recipe = distill_test::synthetic_recipe(distill_test::dataset_dir(), out, 1, /*mgd=*/false);
  recipe["Loss"]["Train"].push_back({{"DistillationDistanceLoss",
                                      {{"weight", 1.0}, {"model_name_pairs", json::array({json::array({"Student", "Student"})})}}}});
  recipe["Global"]["alarm_steps"] = 3;
  const auto log = run(recipe);
  CHECK(contains(log, "warning: loss term"));
  CHECK(contains(log, "has been exactly 0 for 3 steps"));
  const auto alarms = records(out, "alarm");
  REQUIRE(alarms.size() == 1);  // once, not at every step after the third
  CHECK(alarms[0]["alarm"] == "constant_term");
  CHECK(contains(alarms[0]["subject"].get<std::string>(), "Student_Student"));
  CHECK(alarms[0]["step"] == 3);

  recipe["Global"]["strict_alarms"] = true;
  expect_error([&] { run(recipe); }, {"exactly 0 for 3 steps", "Global.strict_alarms"});

  // distill check sees it on the first batch: the term is 0 and reaches nothing.
  recipe["Global"]["strict_alarms"] = false;
  std::ostringstream quiet;
  const auto report = train::check_recipe(recipe, quiet);
  CHECK_FALSE(report.ok());
  REQUIRE(report.problems.size() == 2);
  CHECK(contains(report.problems[0], "is exactly 0 on the first batch"));
  CHECK(contains(report.problems[1], "reaches no trainable parameter"));
}

TEST_CASE("a learning rate that diverges trips the non-finite wire: nan_batch.pt, or skipped steps",
          "[engine][guardrails]") {
  const auto out = distill_test::scratch("guard_nan");
  std::filesystem::remove_all(out);
  auto recipe = distill_test::synthetic_recipe(distill_test::dataset_dir(), out, 2, /*mgd=*/false);
  // A sane first epoch, then 1e30.
  recipe["Optimizer"]["lr"] = {{"name", "Piecewise"}, {"decay_epochs", {1}}, {"values", {0.01, 1e30}}};
  recipe["Global"]["print_batch_step"] = 100;
  expect_error([&] { run(recipe); }, {"training stopped", "is not finite", "at epoch 2", (out + "/nan_batch.pt").c_str(),
                                      ("the last good checkpoint is " + out + "/latest.pt").c_str(), "skip_step"});
  const auto dict = distill::io::read_state_dict(out + "/nan_batch.pt");
  CHECK(dict["images"].sizes() == std::vector<int64_t>{8, 3, 24, 24});
  CHECK(dict["labels"].sizes() == std::vector<int64_t>{8});
  CHECK(dict["outputs.Student.logits"].sizes() == std::vector<int64_t>{8, 4});
  CHECK(dict["outputs.Teacher.logits"].sizes() == std::vector<int64_t>{8, 4});
  CHECK(dict["meta.epoch"].item<double>() == 2);
  CHECK_FALSE(std::isfinite(dict["terms.loss"].item<double>()));
  auto bytes = dict["last_checkpoint"].to(torch::kLong).contiguous();
  CHECK(std::string(bytes.data_ptr<int64_t>(), bytes.data_ptr<int64_t>() + bytes.numel()) == out + "/latest.pt");

  // skip_step: the run ends; every step of epoch 2 is skipped, counted and logged, and the
  // weights stay those of epoch 1.
  std::filesystem::remove_all(out);
  recipe["Global"]["on_nonfinite"] = "skip_step";
  const auto log = run(recipe);
  const auto skipped = records(out, "skipped_step");
  // 40 images in batches of 8: epoch 2's first step is still finite (and takes the huge
  // step), its other four are not.
  CHECK(skipped.size() == 4);
  for (const auto& r : skipped) CHECK(r["epoch"] == 2);
  CHECK(contains(log, "skipped 4 optimiser steps with a non-finite loss term or gradient"));
  CHECK(records(out, "summary").at(0)["skipped_steps"] == 4);
  // No non-finite value reached the weights.
  for (const auto& item : distill::io::read_state_dict(out + "/epoch_2.pt"))
    if (item.key().rfind("model.Student.", 0) == 0 && item.value().is_floating_point()) {
      INFO(item.key());
      CHECK(item.value().isfinite().all().item<bool>());
    }
  recipe["Global"]["on_nonfinite"] = "ignore";
  expect_error([&] { run(recipe); }, {"Global.on_nonfinite", "\"stop\" or \"skip_step\"", "ignore"});
}

TEST_CASE("a frozen model altered by a bug is reported; a student blind to its input and a loss at ln C too",
          "[engine][guardrails]") {
  auto recipe = frozen_teacher_recipe("guard_frozen");
  const std::string out = recipe["Global"]["output_dir"];
  auto model = distill::config::build_model(recipe["Arch"]);
  auto loss = distill::config::build_loss(recipe["Loss"]["Train"]);
  // The simulated bug: a term that nudges the teacher's first weight in place at every step.
  struct Meddler : distill::LossTerm {
    torch::Tensor weight;
    distill::LossTerms forward(const distill::ModelOutputs& outputs, const torch::Tensor&) override {
      torch::NoGradGuard no_grad;
      weight.add_(1e-3);
      distill::LossTerms terms;
      terms.set("meddler", outputs.at("Student").at("logits").square().mean() * 1e-6);
      return terms;
    }
  };
  auto meddler = std::make_shared<Meddler>();
  meddler->weight = model->model("Teacher")->parameters()[0];
  meddler->set_origin("test meddler");
  loss->add(meddler, 1.0);
  const std::string first = model->model("Teacher")->named_parameters()[0].key();
  std::ostringstream log;
  {
    train::Trainer trainer(recipe, model, loss, log);
    trainer.train();
  }
  CHECK(contains(log.str(), "warning: the frozen model Teacher has changed during training (first changed parameter: " + first));
  auto alarms = records(out, "alarm");
  REQUIRE(alarms.size() == 1);
  CHECK(alarms[0]["alarm"] == "frozen_changed");
  CHECK(alarms[0]["step"] == 1);  // seen at the first report

  // A student whose every parameter is 0 (and stays so: learning rate 0) gives the same logits
  // for every image, and its CE stays at ln 4.
  std::filesystem::remove_all(out);
  auto blind = distill_test::synthetic_recipe(distill_test::dataset_dir(), out, 1, /*mgd=*/false);
  blind["Loss"]["Train"] = json::array({json{{"DistillationGTCELoss", {{"weight", 1.0}, {"model_names", {"Student"}}}}}});
  blind["Optimizer"]["lr"] = {{"name", "Constant"}, {"learning_rate", 0.0}};
  blind["Global"]["alarm_steps"] = 2;
  std::ostringstream blind_log;
  auto student = distill::config::build_model(blind["Arch"]);
  for (auto& p : student->model("Student")->parameters()) {
    torch::NoGradGuard no_grad;
    p.zero_();
  }
  {
    train::Trainer trainer(blind, student, distill::config::build_loss(blind["Loss"]["Train"]), blind_log);
    trainer.train();
  }
  alarms = records(out, "alarm");
  std::set<std::string> kinds;
  for (const auto& a : alarms) kinds.insert(a["alarm"].get<std::string>());
  // (Its CE term is then constant too.)
  CHECK(kinds == std::set<std::string>{"constant_term", "input_independent", "loss_at_chance"});
  CHECK(contains(blind_log.str(), "does not depend on the input"));
  CHECK(contains(blind_log.str(), "within 1% of ln 4"));
}

TEST_CASE("the monitor: constant terms, blind students and ln C, each alarm once", "[engine][guardrails]") {
  train::Monitor monitor(train::GuardrailOptions().alarm_steps(3));
  auto terms = [](double kd) { return std::vector<std::pair<std::string, double>>{{"kd", kd}, {"loss", 1.0}}; };
  CHECK(monitor.step(terms(0.5), 0.1).empty());
  CHECK(monitor.step(terms(0.5), 0.1).empty());
  CHECK(monitor.step(terms(0.4), 0.1).empty());  // changed: the run starts again
  CHECK(monitor.step(terms(0.4), 0.1).empty());
  auto alarms = monitor.step(terms(0.4), 0.0);
  REQUIRE(alarms.size() == 1);
  CHECK(alarms[0].kind == "constant_term");
  CHECK(alarms[0].subject == "kd");
  CHECK(contains(alarms[0].message, "stayed exactly 0.4 for 3 steps"));
  CHECK(monitor.step(terms(0.4), 0.0).empty());  // once
  alarms = monitor.step(terms(0.3), 0.0);
  REQUIRE(alarms.size() == 1);
  CHECK(alarms[0].kind == "input_independent");
  CHECK(monitor.step(terms(0.2), -1.0).empty());  // not measured (a batch of one): the count restarts
  // ln 10 = 2.3026: 2.30 is within 1%, 2.2 is not.
  CHECK(monitor.epoch_end(1, 2.2, 10).empty());
  REQUIRE(monitor.epoch_end(1, 2.30, 10).size() == 1);
  CHECK(monitor.epoch_end(2, 2.30, 10).empty());
  // The spread of a batch's logits.
  CHECK(train::logit_spread(torch::ones({4, 3})).item<double>() == 0);
  CHECK(train::logit_spread(torch::tensor({{1.0, 2.0}, {1.0, 4.0}})).item<double>() == Approx(0.5));
  CHECK(train::logit_spread(torch::ones({1, 3})).item<double>() == -1);
}

TEST_CASE("distill check passes on every shipped recipe and lists every problem of a broken one", "[engine][guardrails][check]") {
  const auto& data = distill_test::dataset_dir();
  std::vector<std::string> files;
  for (const auto* dir : {"", "/fashion_mnist"})
    for (const auto& entry : std::filesystem::directory_iterator(std::string(DISTILL_RECIPES) + dir))
      if (entry.path().extension() == ".json" && entry.path().filename() != "labels.json") files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 30);
  for (const auto& file : files) {
    INFO(file);
    auto recipe = distill::config::load_file(file);
    const bool fashion = recipe["DataLoader"]["Train"]["dataset"]["name"] == "FashionMNIST";
    // No weight files, 4 classes, the synthetic images at 64 pixels (Fashion-MNIST's own
    // 28-pixel images, 64 of them), batches of 4, on the CPU.
    distill_test::shrink_recipe(recipe, fashion ? 10 : 4, fashion ? 224 : 64);  // 224: shapes for 28 pixels kept
    for (const char* phase : {"Train", "Eval"}) {
      auto& loader = recipe["DataLoader"][phase];
      auto& dataset = loader["dataset"];
      if (fashion) {
        dataset["limit"] = 64;
      } else {
        dataset["image_root"] = data;
        dataset["cls_label_path"] = data + (std::string(phase) == "Train" ? "/train_list.txt" : "/val_list.txt");
        for (auto& op : dataset["transform_ops"]) {
          for (const char* crop : {"RandCropImage", "CropImage"})
            if (op.contains(crop)) op[crop]["size"] = 64;
          if (op.contains("ResizeImage")) op["ResizeImage"]["resize_short"] = 73;
        }
      }
      loader["sampler"]["batch_size"] = 4;
      loader["loader"]["num_workers"] = 0;
    }
    recipe["Global"]["device"] = "cpu";
    recipe["Global"]["teacher_check"] = false;  // untrained teachers here, by design
    if (recipe.contains("AMP")) recipe["AMP"]["use_amp"] = false;
    std::ostringstream quiet;
    const auto report = train::check_recipe(recipe, quiet);
    INFO(report.text());
    CHECK(report.ok());
    CHECK(report.summary["terms"].size() >= 2);
    CHECK(report.summary["taps"].size() >= 1);
  }

  // A recipe broken in five places: all five are listed, no batch is tried.
  auto broken = distill_test::synthetic_recipe(data, distill_test::scratch("guard_check"), 1);
  broken["Global"]["epochs"] = 0;
  broken["Optimizer"]["name"] = "Adamax";
  broken["Arch"]["models"][1]["Student"]["name"] = "ResNet7";
  broken["Loss"]["Train"][1]["DistillationDKDLoss"]["temprature"] = 2;
  broken["Loss"]["Train"][2]["DistillationPairLoss"]["base_loss_name"] = "NoSuchLoss";
  broken["DataLoader"]["Eval"]["dataset"]["cls_label_path"] = data + "/missing.txt";
  std::ostringstream quiet;
  const auto report = train::check_recipe(broken, quiet);
  INFO(report.text());
  CHECK_FALSE(report.ok());
  const std::vector<std::string> expected{"Global.epochs", "Optimizer.name", "missing.txt: cannot open the image list",
                                          "Arch.models[1].Student.name", "Loss.Train[1].DistillationDKDLoss.temprature",
                                          "Loss.Train[2].DistillationPairLoss.base_loss_name"};
  REQUIRE(report.problems.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) CHECK(contains(report.problems[i], expected[i]));
  CHECK_FALSE(report.summary.contains("terms"));
  const auto as_json = report.to_json();
  CHECK(as_json["ok"] == false);
  CHECK(as_json["problems"].size() == expected.size());
}
