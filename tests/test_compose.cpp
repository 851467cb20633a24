// Composition: the seven recipes from JSON (forward, backward, loss keys), freezing and
// mutual learning under an optimizer step, wrappers, CombinedLoss, and config errors with
// their JSON paths.

#include <catch2/catch.hpp>

#include "distill/compose.hpp"
#include "distill/config.hpp"
#include "expect_error.hpp"
#include "recipes.hpp"

using distill_test::expect_error;
using json = nlohmann::json;
namespace config = distill::config;

namespace {

json recipe(const std::string& name) {
  auto r = config::load_file(std::string(DISTILL_RECIPES) + "/" + name + ".json");
  distill_test::shrink_recipe(r, 10, 64);
  return r;
}

struct Built {
  std::shared_ptr<distill::DistillationModelImpl> model;
  std::shared_ptr<distill::CombinedLossImpl> loss;
};

Built build(const json& r) {
  Built b{config::build_model(r["Arch"]), config::build_loss(r["Loss"]["Train"])};
  b.loss->bind(*b.model);  // as the trainer does (OFD reads the teacher's batch norms)
  return b;
}

std::vector<torch::Tensor> snapshot(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> copy;
  for (const auto& p : params) copy.push_back(p.detach().clone());
  return copy;
}

bool unchanged(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& before) {
  for (size_t i = 0; i < params.size(); ++i)
    if (!torch::equal(params[i], before[i])) return false;
  return true;
}

bool all_changed(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& before) {
  for (size_t i = 0; i < params.size(); ++i)
    if (torch::equal(params[i], before[i])) return false;
  return true;
}

/// One SGD step on the recipe's loss; returns the loss terms.
distill::LossTerms step(Built& b, torch::optim::Optimizer& optimizer) {
  auto images = torch::randn({4, 3, 64, 64});
  auto labels = torch::randint(0, 10, {4, 1});
  b.loss->set_batch(torch::arange(4));  // CRD's memory rows
  auto terms = b.loss->forward(b.model->forward(images), labels);
  optimizer.zero_grad();
  terms["loss"].backward();
  optimizer.step();
  return terms;
}

torch::optim::SGD sgd(const Built& b) {
  auto groups = distill::optimizer_parameters(*b.model, *b.loss);
  std::vector<torch::Tensor> all = groups.decay;
  all.insert(all.end(), groups.no_decay.begin(), groups.no_decay.end());
  return torch::optim::SGD(all, torch::optim::SGDOptions(0.1));
}

}  // namespace

TEST_CASE("the recipes build from JSON, run forward and backward, and name their terms", "[compose][recipes]") {
  const std::map<std::string, std::vector<std::string>> expected{
      {"ssld", {"DMLLoss_Student_Teacher", "loss"}},
      {"dml", {"CELoss_Student", "CELoss_Teacher", "DMLLoss_Student_Teacher", "loss"}},
      {"udml", {"CELoss_Student", "CELoss_Teacher", "DMLLoss_Student_Teacher", "loss_l2_Student_Teacher_blocks5", "loss"}},
      {"afd", {"CELoss_Student", "loss_kldiv_Student_Teacher", "loss_afd", "loss"}},
      {"dkd", {"CELoss_Student", "loss_dkd_Student_Teacher", "loss"}},
      {"dist", {"CELoss_Student", "loss_dist_Student_Teacher", "loss"}},
      {"mgd", {"CELoss_Student", "loss_mgd_Student_Teacher_blocks[7]_blocks[15]", "loss"}},
      // The methods of docs/methods.md.
      {"nkd", {"CELoss_Student", "loss_nkd_Student_Teacher", "loss"}},
      {"ctkd", {"CELoss_Student", "loss_ctkd_Student_Teacher", "loss"}},
      {"kd_standardize", {"CELoss_Student", "loss_kldiv_Student_Teacher", "loss"}},
      {"multi_teacher", {"CELoss_Student", "loss_kldiv_Student_ensemble", "loss"}},
      {"fitnet", {"CELoss_Student", "loss_fitnet_Student_Teacher_blocks[3]_blocks[6]", "loss"}},
      {"ofd", {"CELoss_Student", "loss_ofd", "loss"}},
      {"reviewkd", {"CELoss_Student", "loss_reviewkd", "loss"}},
      {"crd", {"CELoss_Student", "loss_crd", "loss"}},
      {"at",
       {"CELoss_Student", "loss_at_Student_Teacher_blocks[1]_blocks[2]", "loss_at_Student_Teacher_blocks[3]_blocks[6]",
        "loss_at_Student_Teacher_blocks[5]_blocks[12]", "loss_at_Student_Teacher_blocks[7]_blocks[15]", "loss"}}};
  torch::manual_seed(0);
  for (const auto& [name, keys] : expected) {
    INFO(name);
    auto b = build(recipe(name));
    b.model->train();
    b.loss->set_batch(torch::tensor({5, 9}));  // CRD's memory rows
    auto terms = b.loss->forward(b.model->forward(torch::randn({2, 3, 64, 64})), torch::randint(0, 10, {2, 1}));
    CHECK(terms.keys() == keys);
    torch::Tensor sum = torch::zeros({});
    for (const auto& [k, v] : terms)
      if (k != "loss") sum = sum + v;
    CHECK(terms["loss"].item<double>() == Approx(sum.item<double>()));
    CHECK(std::isfinite(terms["loss"].item<double>()));
    terms["loss"].backward();
    for (const auto& p : b.model->infer_model()->parameters()) CHECK(p.grad().defined());
  }
}

TEST_CASE("a frozen teacher stays fixed while the student and the loss modules learn", "[compose][recipes]") {
  torch::manual_seed(1);
  for (const char* name : {"mgd", "afd", "fitnet", "ctkd", "ofd", "reviewkd", "crd"}) {
    INFO(name);
    auto b = build(recipe(name));
    b.model->train();
    // The AFD teacher is an AttentionModel whose backbone is frozen and whose transform is not.
    auto teacher = b.model->model("Teacher");
    std::vector<torch::Tensor> frozen, trainable;
    for (const auto& p : teacher->parameters()) (p.requires_grad() ? trainable : frozen).push_back(p);
    REQUIRE(!frozen.empty());
    auto student = b.model->model("Student")->parameters();
    // FitNet's connector bias feeds a batch norm, so its gradient is zero by construction.
    std::vector<torch::Tensor> loss_params;
    for (const auto& p : b.loss->named_parameters())
      if (p.key().find("conv.bias") == std::string::npos) loss_params.push_back(p.value());
    REQUIRE(!loss_params.empty());  // MGD's generator, AFD's p_t and p_s, FitNet's connector, CTKD's temperature
    auto frozen0 = snapshot(frozen), student0 = snapshot(student), loss0 = snapshot(loss_params),
         trainable0 = snapshot(trainable);
    auto optimizer = sgd(b);
    step(b, optimizer);
    CHECK(unchanged(frozen, frozen0));
    for (const auto& p : frozen) CHECK(!p.grad().defined());
    CHECK(!unchanged(student, student0));
    CHECK(all_changed(loss_params, loss0));
    if (std::string(name) == "afd") CHECK(all_changed(trainable, trainable0));  // LinearTransformTeacher
  }
}

TEST_CASE("DML trains both models", "[compose][recipes]") {
  torch::manual_seed(2);
  auto b = build(recipe("dml"));
  b.model->train();
  auto teacher = b.model->model("Teacher")->parameters(), student = b.model->model("Student")->parameters();
  auto teacher0 = snapshot(teacher), student0 = snapshot(student);
  auto optimizer = sgd(b);
  step(b, optimizer);
  CHECK(!unchanged(teacher, teacher0));
  CHECK(!unchanged(student, student0));
  // The DML term alone sends gradient into both networks (mutual learning).
  optimizer.zero_grad();
  auto outputs = b.model->forward(torch::randn({2, 3, 64, 64}));
  distill::Pair<distill::DMLLoss> dml(distill::DMLLoss(), distill::PairOptions().name("DMLLoss"));
  dml(outputs, torch::Tensor())["DMLLoss_Student_Teacher"].backward();
  CHECK(b.model->model("Teacher")->named_parameters()["fc.weight"].grad().abs().sum().item<double>() > 0);
  CHECK(b.model->model("Student")->named_parameters()["fc.weight"].grad().abs().sum().item<double>() > 0);
}

TEST_CASE("frozen models follow the frozen_mode", "[compose]") {
  torch::manual_seed(3);
  for (const std::string mode : {"train", "eval"}) {
    INFO(mode);
    auto r = recipe("dkd");
    r["Arch"]["frozen_mode"] = mode;
    auto b = build(r);
    b.model->train();
    auto teacher = b.model->model("Teacher");
    CHECK(teacher->is_training() == (mode == "train"));
    CHECK(b.model->model("Student")->is_training());
    const auto stats0 = teacher->named_buffers()["bn1.running_mean"].clone();
    b.model->forward(torch::randn({2, 3, 64, 64}));
    // The reference's train mode updates a frozen teacher's BatchNorm statistics.
    CHECK(torch::equal(teacher->named_buffers()["bn1.running_mean"], stats0) == (mode == "eval"));
  }
}

TEST_CASE("optimizer parameters: frozen excluded, BatchNorm exempt where the reference exempts it", "[compose]") {
  auto b = build(recipe("ssld"));  // frozen ResNet50_vd teacher, PP-LCNet student
  auto groups = distill::optimizer_parameters(*b.model, *b.loss);
  int64_t student_total = 0, grouped = 0, bn = 0;
  for (const auto& p : b.model->model("Student")->parameters()) student_total += p.numel();
  for (const auto* list : {&groups.decay, &groups.no_decay})
    for (const auto& p : *list) grouped += p.numel();
  for (const auto& p : groups.no_decay) bn += p.numel();
  CHECK(grouped == student_total);  // the teacher contributes nothing
  for (const auto& m : b.model->model("Student")->modules(false))
    if (auto* norm = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) bn -= 2 * norm->weight.numel();
  CHECK(bn == 0);
  // A ResNet student decays everything, and the MGD generator joins the decay group.
  auto mgd = build(recipe("mgd"));
  auto g = distill::optimizer_parameters(*mgd.model, *mgd.loss);
  CHECK(g.no_decay.empty());
  CHECK(g.decay.size() == mgd.model->model("Student")->parameters().size() + mgd.loss->parameters().size());
}

TEST_CASE("Pair, GroundTruth and AttentionModel compose from C++", "[compose]") {
  torch::manual_seed(4);
  auto s = torch::randn({3, 5}), t = torch::randn({3, 5});
  auto y = torch::tensor({1, 0, 4}, torch::kLong);
  distill::ModelOutputs outputs{{"Student", {{"logits", s}, {"f", s * 2}}}, {"Teacher", {{"logits", t}, {"f", t * 2}}}};
  distill::Pair<distill::KDLoss> kd(distill::KDLoss(distill::KDOptions().temperature(2)),
                                    distill::PairOptions().name("loss_kldiv"));
  auto terms = kd(outputs, y);
  CHECK(terms.keys() == std::vector<std::string>{"loss_kldiv_Student_Teacher"});
  CHECK(terms["loss_kldiv_Student_Teacher"].item<double>() ==
        distill::functional::kd_loss(s, t, distill::KDOptions().temperature(2)).item<double>());
  distill::Pair<distill::DKDLoss> dkd(distill::DKDLoss(), distill::PairOptions().key("f").name("dkd"));
  CHECK(dkd(outputs, y)["dkd_Student_Teacher_f"].item<double>() ==
        distill::functional::dkd_loss(s * 2, t * 2, y).item<double>());  // labels reach DKD
  distill::Pair<distill::DistanceLoss> l1(distill::DistanceLoss(distill::DistanceOptions().mode(distill::DistanceMode::l1)),
                                          distill::PairOptions().act(distill::Act::softmax).name("l1"));
  CHECK(l1(outputs, y)["l1_Student_Teacher"].item<double>() ==
        Approx((torch::softmax(s, -1) - torch::softmax(t, -1)).abs().mean().item<double>()));
  distill::GroundTruth<distill::CELoss> ce(distill::CELoss(), distill::GroundTruthOptions({"Student", "Teacher"}).name("CELoss"));
  auto gt = ce(outputs, y);
  CHECK(gt.keys() == std::vector<std::string>{"CELoss_Student", "CELoss_Teacher"});
  CHECK(gt["CELoss_Teacher"].item<double>() == distill::functional::ce_loss(t, y).item<double>());

  distill::CombinedLoss combined;
  combined->add(kd.ptr(), 0.5);
  combined->add(ce.ptr(), 2.0);
  auto all = combined->forward(outputs, y);
  CHECK(all["loss"].item<double>() ==
        Approx(0.5 * terms["loss_kldiv_Student_Teacher"].item<double>() +
               2.0 * (gt["CELoss_Student"].item<double>() + gt["CELoss_Teacher"].item<double>())));
  // A single term is weighted too (the reference would ignore its weight).
  distill::CombinedLoss single;
  single->add(kd.ptr(), 0.25);
  CHECK(single->forward(outputs, y)["loss"].item<double>() == Approx(0.25 * terms["loss_kldiv_Student_Teacher"].item<double>()));

  // An AttentionModel merges the chained outputs.
  auto chain = config::build_model(recipe("afd")["Arch"])->model("Teacher");
  chain->eval();
  auto merged = chain->forward(torch::randn({2, 3, 64, 64}));
  CHECK(merged.keys().size() == 1 + 16 + 1 + 16);
  CHECK(merged["query"].sizes() == torch::IntArrayRef({2, 16, 128}));
  CHECK(merged["value[15]"].sizes() == torch::IntArrayRef({2, 4}));
}

TEST_CASE("config errors name their JSON path", "[compose][errors]") {
  auto edit = [](const std::string& name, const std::string& assignment) {
    auto r = recipe(name);
    config::apply_override(r, assignment);
    return r;
  };
  expect_error([&] { config::build_model(edit("dkd", "Arch.models[1].Student.name=ResNet19")["Arch"]); },
               {"Arch.models[1].Student.name", "unknown backbone 'ResNet19'"});
  expect_error([&] { config::build_model(edit("dkd", "Arch.models[0].Teacher.class_num=\"ten\"")["Arch"]); },
               {"Arch.models[0].Teacher.class_num", "expected an integer", "string"});
  expect_error([&] { config::build_model(edit("dkd", "Arch.freeze_params_list=[true]")["Arch"]); },
               {"Arch.freeze_params_list", "2 booleans", "one per model"});
  expect_error([&] { config::build_model(edit("dkd", "Arch.infer_model_name=Pupil")["Arch"]); },
               {"Arch.infer_model_name", "'Pupil'", "'Student'"});
  expect_error([&] { config::build_model(edit("dkd", "Arch.name=AttentionModel")["Arch"]); },
               {"Arch.name", "DistillationModel"});
  expect_error([&] { config::build_model(edit("mgd", "Arch.models[0].Teacher.return_patterns=[\"blocks[99]\"]")["Arch"]); },
               {"Arch.models[0].Teacher", "blocks[99]", "names no layer"});
  expect_error([&] { config::build_model(edit("afd", "Arch.models[1].Student.models[1].LinearTransformStudent.qk_dim=\"x\"")["Arch"]); },
               {"Arch.models[1].Student.models[1].LinearTransformStudent.qk_dim", "an integer"});

  // Without model_name_pairs a pair wrapper compares Student with Teacher (the reference's
  // wrappers default to no pairs, so no terms at all).
  auto dkd = recipe("dkd");
  dkd["Loss"]["Train"][1]["DistillationDKDLoss"].erase("model_name_pairs");
  auto defaulted = std::dynamic_pointer_cast<distill::PairImpl<distill::AnyLoss>>(
      config::build_loss(dkd["Loss"]["Train"])->named_children()["term1"]);
  REQUIRE(defaulted);
  CHECK(defaulted->options.model_name_pairs() == distill::PairOptions::Pairs{{"Student", "Teacher"}});
  // Options that are enumerations in C++ are checked at the recipe's edge, by name.
  expect_error([&] { config::build_loss(json::parse(R"([{"DistillationDistanceLoss": {"weight": 1, "mode": "l3"}}])")); },
               {"Loss.Train[0].DistillationDistanceLoss.mode", "unknown value 'l3'", "'smooth_l1'"});
  expect_error([&] { config::build_loss(json::parse(R"([{"DistillationDMLLoss": {"weight": 1, "act": "relu"}}])")); },
               {"Loss.Train[0].DistillationDMLLoss.act", "unknown value 'relu'", "'softmax'"});
  expect_error([&] {
    config::build_loss(json::parse(R"([{"DistillationPEFDLoss": {"weight": 1, "student_channel": 8, "teacher_channel": 8, "mode": "max"}}])"));
  }, {"Loss.Train[0].DistillationPEFDLoss.mode", "unknown value 'max'", "'gap'"});
  expect_error([&] { config::build_loss(json::parse(R"([{"DistillationMGDLoss": {"weight": 1, "student_channels": 8}}])")); },
               {"Loss.Train[0].DistillationMGDLoss.teacher_channels", "missing"});
  expect_error([&] { config::build_loss(json::parse(R"([{"DistillationKLDivLoss": {"weight": -1}}])")); },
               {"Loss.Train[0].DistillationKLDivLoss", "weight", ">= 0"});
  expect_error([&] { config::build_loss(json::parse(R"([{"DistillationKLDivLoss": {"weight": 1, "act": "softmax"}}])")); },
               {"Loss.Train[0].DistillationKLDivLoss.act", "unknown key"});
  dkd = recipe("dkd");
  dkd["Loss"]["Train"][1]["DistillationDKDLoss"].erase("weight");
  expect_error([&] { config::build_loss(dkd["Loss"]["Train"]); }, {"Loss.Train[1].DistillationDKDLoss.weight", "missing"});
  dkd = recipe("dkd");
  dkd["Loss"]["Train"][1]["DistillationDKDLoss"]["temprature"] = 2;
  expect_error([&] { config::build_loss(dkd["Loss"]["Train"]); },
               {"Loss.Train[1].DistillationDKDLoss.temprature", "unknown key", "temperature"});
  expect_error([&] { config::build_loss(json::parse(R"([{"DistillationKDLoss": {"weight": 1}}])")); },
               {"Loss.Train[0].DistillationKDLoss", "unknown loss", "DistillationKLDivLoss"});
  expect_error([&] { config::build_loss(json::parse(R"([{"DistillationDKDLoss": {"weight": 1, "model_name_pairs": [["Student"]]}}])")); },
               {"Loss.Train[0].DistillationDKDLoss.model_name_pairs[0]", "pair"});
  expect_error([&] { config::build_loss(json::parse(R"([{"DistillationDKDLoss": {"weight": 1, "model_name_pairs": [["S", "T"]], "temperature": -1}}])")); },
               {"Loss.Train[0].DistillationDKDLoss", "temperature"});
  expect_error([&] {
    config::build_loss(json::parse(R"([{"DistillationPairLoss": {"weight": 1, "model_name_pairs": [["S", "T"]], "base_loss_name": "FooLoss"}}])"));
  }, {"Loss.Train[0].DistillationPairLoss.base_loss_name", "FooLoss", "MGDLoss"});

  // Keys no model output has, and models that do not exist: reported at the first forward.
  auto udml = edit("udml", "Loss.Train[2].DistillationDistanceLoss.key=blocks7");
  auto b = build(udml);
  auto outputs = b.model->forward(torch::randn({2, 3, 64, 64}));
  auto labels = torch::randint(0, 10, {2});
  expect_error([&] { b.loss->forward(outputs, labels); },
               {"Loss.Train[2].DistillationDistanceLoss", "model 'Student' has no output 'blocks7'", "'blocks5'"});
  auto wrong_model = edit("udml", "Loss.Train[1].DistillationDMLLoss.model_name_pairs=[[\"Student\", \"Teachr\"]]");
  expect_error([&] { config::build_loss(wrong_model["Loss"]["Train"])->forward(outputs, labels); },
               {"Loss.Train[1].DistillationDMLLoss", "no model 'Teachr'", "'Teacher'"});

  // Two terms with one name: an error naming both entries (the reference overwrites one).
  auto twice = recipe("udml");
  twice["Loss"]["Train"].push_back(twice["Loss"]["Train"][2]);
  expect_error([&] { config::build_loss(twice["Loss"]["Train"])->forward(outputs, labels); },
               {"Loss.Train[3].DistillationDistanceLoss", "'loss_l2_Student_Teacher_blocks5'", "Loss.Train[2]"});

  // Overrides name existing sections; the last key may be new (as in PaddleClas), and a
  // mistyped one is then an unknown key where the recipe is read.
  auto r = recipe("dkd");
  expect_error([&] { config::apply_override(r, "Arch.modles[1].Student.class_num=3"); }, {"Arch", "no key 'modles'", "models"});
  auto typo = recipe("dkd");
  config::apply_override(typo, "Arch.models[1].Student.clas_num=3");
  expect_error([&] { config::build_model(typo["Arch"]); }, {"Arch.models[1].Student.clas_num", "unknown key", "class_num"});
  expect_error([&] { config::apply_override(r, "Arch.models[2].Student.class_num=3"); }, {"Arch.models", "no element [2]"});
  expect_error([&] { config::apply_override(r, "Arch.models"); }, {"Dotted.Key=value"});
  config::apply_override(r, "Arch.models[1].Student.class_num=3");
  CHECK(r["Arch"]["models"][1]["Student"]["class_num"] == 3);
  config::apply_override(r, "Arch.models[0].Teacher.pretrained=weights/x.pth");
  CHECK(r["Arch"]["models"][0]["Teacher"]["pretrained"] == "weights/x.pth");
  // PaddleClas's spelling: list indices as path elements, values as Python or YAML literals.
  config::apply_override(r, "Arch.models.0.Teacher.pretrained=weights/y.pdparams");
  CHECK(r["Arch"]["models"][0]["Teacher"]["pretrained"] == "weights/y.pdparams");
  config::apply_override(r, "Arch.freeze_params_list=[True, False]");
  CHECK(r["Arch"]["freeze_params_list"] == json::parse("[true, false]"));
  config::apply_override(r, "Arch.models.1.Student.class_num=None");
  CHECK(r["Arch"]["models"][1]["Student"]["class_num"].is_null());
  config::apply_override(r, "Arch.models.1.Student.class_num=~");
  CHECK(r["Arch"]["models"][1]["Student"]["class_num"].is_null());
  config::apply_override(r, "Arch.models.1.Student.class_num=['a', \"b's\", 'c\"d']");
  CHECK(r["Arch"]["models"][1]["Student"]["class_num"] == json::parse(R"(["a", "b's", "c\"d"])"));
  config::apply_override(r, "Arch.models.1.Student.class_num=1e-4");
  CHECK(r["Arch"]["models"][1]["Student"]["class_num"] == 1e-4);
  config::apply_override(r, "Arch.models.1.Student.class_num=1.0/255.0");
  CHECK(r["Arch"]["models"][1]["Student"]["class_num"] == "1.0/255.0");
  config::apply_override(r, "Arch.models.1.Student.class_num=Truely");
  CHECK(r["Arch"]["models"][1]["Student"]["class_num"] == "Truely");
  expect_error([&] { config::apply_override(r, "Arch.models.2.Student.class_num=3"); }, {"Arch.models", "no element [2]", "it has 2"});
  expect_error([&] { config::load_file(std::string(DISTILL_RECIPES) + "/missing.json"); }, {"missing.json", "cannot open"});
}

// A loss and a backbone defined here, outside include/, each registered with one call.
namespace user {

/// A ground-truth loss: a hinge on the margin between the target logit and the best other one.
struct MarginOptions {
  TORCH_ARG(double, margin) = 1.0;
};
void describe(distill::Schema& s, MarginOptions& o) { s.field("margin", o.margin()); }
struct MarginLossImpl : torch::nn::Module {
  explicit MarginLossImpl(MarginOptions options = {}) : options(options) {}
  torch::Tensor forward(const torch::Tensor& logits, const torch::Tensor& labels) {
    auto target = logits.gather(1, labels.reshape({-1, 1}).to(torch::kLong));
    auto others = logits.scatter(1, labels.reshape({-1, 1}).to(torch::kLong), -1e9).amax(1, true);
    return (options.margin() - target + others).clamp_min(0).mean();
  }
  MarginOptions options;
};
TORCH_MODULE(MarginLoss);

struct WideNetOptions {
  TORCH_ARG(int64_t, width) = 4;
};
void describe(distill::Schema& s, WideNetOptions& o) { s.field("width", o.width()); }
struct WideNetImpl : distill::Backbone {
  explicit WideNetImpl(WideNetOptions o) {
    stem = register_module("stem", torch::nn::Conv2d(3, o.width(), 3));
    fc = register_module("fc", torch::nn::Linear(o.width(), 10));
  }
  std::string name() const override { return "WideNet"; }
  torch::Tensor forward_logits(const torch::Tensor& x) override { return call(fc, call(stem, x).mean({2, 3})); }
  torch::nn::Conv2d stem{nullptr};
  torch::nn::Linear fc{nullptr};
};

}  // namespace user

TEST_CASE("a loss and a backbone registered from outside the library work in recipes", "[compose][extension]") {
  distill::register_loss<user::MarginLoss>("MarginLoss", user::MarginOptions(), distill::LossTraits{"margin", /*ground_truth=*/true});
  distill::models::register_backbone<user::WideNetImpl>("WideNet", user::WideNetOptions());
  auto model = config::build_model(json::parse(R"({"name": "DistillationModel", "models": [
      {"Teacher": {"name": "WideNet", "width": 6, "return_patterns": ["stem"]}}, {"Student": {"name": "WideNet"}}]})"));
  CHECK(model->model("Teacher")->named_parameters()["stem.weight"].size(0) == 6);
  CHECK(model->model("Student")->named_parameters()["stem.weight"].size(0) == 4);
  auto loss = config::build_loss(json::parse(R"([
      {"MarginLoss": {"weight": 1.0, "margin": 2.0}},
      {"DistillationGTMarginLoss": {"weight": 0.5, "model_names": ["Teacher"], "name": "hinge"}}])"));
  auto outputs = model->forward(torch::randn({3, 3, 8, 8}));
  CHECK(outputs["Teacher"].keys() == std::vector<std::string>{"logits", "stem"});
  auto labels = torch::tensor({1, 4, 7});
  auto terms = loss->forward(outputs, labels.reshape({-1, 1}));
  CHECK(terms.keys() == std::vector<std::string>{"margin_Student", "hinge_Teacher", "loss"});
  // Directly (ground truth on Student, margin 2) and through the ground-truth wrapper (weight 0.5).
  // A pair loss is shown by the README's extension example (DistillationCosineLoss).
  user::MarginLoss direct(user::MarginOptions().margin(2.0));
  CHECK(terms["margin_Student"].item<double>() == Approx(direct(outputs["Student"]["logits"], labels).item<double>()));
  user::MarginLoss unit;
  CHECK(terms["hinge_Teacher"].item<double>() == Approx(0.5 * unit(outputs["Teacher"]["logits"], labels).item<double>()));
  // Unknown keys of the user's loss and backbone are refused with their paths.
  expect_error([] { config::build_loss(json::parse(R"([{"MarginLoss": {"weight": 1.0, "margn": 2.0}}])")); },
               {"Loss.Train[0].MarginLoss.margn", "unknown key", "margin"});
  expect_error([] { config::create_backbone("WideNet", {{"widht", 3}}, "Arch.models[0].Student"); },
               {"Arch.models[0].Student.widht", "unknown key", "width"});
}

// ---------------------------------------------------------------- methods of docs/methods.md

namespace {
json entries(const std::string& text) { return json::parse(text); }
}  // namespace

TEST_CASE("multi-teacher: the ensemble is the averaged soft targets, for KD, DKD and DIST", "[compose][methods]") {
  namespace F = distill::functional;
  torch::manual_seed(5);
  auto s = torch::randn({6, 7}, torch::kDouble), t0 = 3 * torch::randn({6, 7}, torch::kDouble),
       t1 = 3 * torch::randn({6, 7}, torch::kDouble);
  auto y = torch::randint(0, 7, {6}, torch::kLong);
  distill::ModelOutputs outputs{{"Student", {{"logits", s}}}, {"T0", {{"logits", t0}}}, {"T1", {{"logits", t1}}}};
  // The ensemble's softmax at T is the weighted mean of the teachers' softmaxes at T.
  auto z = F::ensemble_logits({t0, t1}, {3, 1}, 2.0);
  CHECK(torch::allclose(torch::softmax(z / 2.0, 1), 0.75 * torch::softmax(t0 / 2.0, 1) + 0.25 * torch::softmax(t1 / 2.0, 1),
                        1e-12, 1e-12));
  // A top-k teacher (a teacher cache) joins the ensemble as its dense smoothed logits: at k = C,
  // the teacher itself.
  auto [values, indices] = t1.topk(7);
  CHECK(torch::allclose(F::ensemble_logits({t0, distill::topk_teacher(values, indices, {}, 7)}, {3, 1}, 2.0), z, 1e-12, 1e-12));
  // A weight of zero leaves the other teacher alone: the loss equals the single-teacher loss.
  auto built = config::build_loss(entries(R"([
      {"DistillationMultiTeacherLoss": {"weight": 1.0, "base_loss_name": "DKDLoss", "teachers": ["T0", "T1"],
                                        "teacher_weights": [1.0, 0.0], "temperature": 4.0, "beta": 8.0}},
      {"DistillationMultiTeacherLoss": {"weight": 1.0, "base_loss_name": "DISTLoss", "teachers": ["T0", "T1"],
                                        "tau": 2.0, "name": "loss_dist"}},
      {"DistillationMultiTeacherLoss": {"weight": 1.0, "base_loss_name": "KLDivLoss", "teachers": ["T0", "T1"],
                                        "temperature": 3.0}}])"));
  auto terms = built->forward(outputs, y);
  CHECK(terms.keys() == std::vector<std::string>{"loss_dkd_Student_ensemble", "loss_dist_Student_ensemble",
                                                 "loss_kldiv_Student_ensemble", "loss"});
  CHECK(terms["loss_dkd_Student_ensemble"].item<double>() ==
        Approx(F::dkd_loss(s, t0, y, distill::DKDOptions().temperature(4).beta(8)).item<double>()).epsilon(1e-12));
  // DIST averages at its tau; KD at its temperature (equal weights by default).
  CHECK(terms["loss_dist_Student_ensemble"].item<double>() ==
        Approx(F::dist_loss(s, F::ensemble_logits({t0, t1}, {}, 2.0), distill::DISTOptions().tau(2)).item<double>()));
  auto p = 0.5 * torch::softmax(t0 / 3.0, 1) + 0.5 * torch::softmax(t1 / 3.0, 1);
  auto expected_kd = 9.0 / 6 * (p * (p.log() - torch::log_softmax(s / 3.0, 1))).sum();
  CHECK(terms["loss_kldiv_Student_ensemble"].item<double>() == Approx(expected_kd.item<double>()).epsilon(1e-12));
  // Errors name the entry.
  expect_error([] { config::build_loss(entries(R"([{"DistillationMultiTeacherLoss": {"weight": 1.0, "base_loss_name": "MGDLoss",
                     "teachers": ["T0", "T1"], "student_channels": 1, "teacher_channels": 1}}])")); },
               {"Loss.Train[0].DistillationMultiTeacherLoss.base_loss_name", "does not soften a teacher"});
  expect_error([] { config::build_loss(entries(R"([{"DistillationMultiTeacherLoss": {"weight": 1.0, "base_loss_name": "KLDivLoss",
                     "teachers": ["T0"]}}])")); },
               {"Loss.Train[0].DistillationMultiTeacherLoss", "at least two teachers"});
  expect_error([] { config::build_loss(entries(R"([{"DistillationMultiTeacherLoss": {"weight": 1.0, "base_loss_name": "KLDivLoss",
                     "teachers": ["T0", "T1"], "teacher_weights": [1.0]}}])")); },
               {"1 teacher_weights for 2 teachers"});
  auto missing = config::build_loss(entries(R"([{"DistillationMultiTeacherLoss": {"weight": 1.0, "base_loss_name": "KLDivLoss",
                     "teachers": ["T0", "T2"]}}])"));
  expect_error([&] { missing->forward(outputs, y); }, {"no model 'T2'"});
  expect_error([&] { F::ensemble_logits({t0, t1.narrow(1, 0, 6)}); }, {"ensemble_logits", "teachers[1]", "[6, 6]"});
  expect_error([&] { F::ensemble_logits({t0, t1}, {-1, 1}); }, {"ensemble_logits", "teacher weight"});
}

TEST_CASE("CTKD: the temperature ascends the distillation loss, as strongly as the epoch's lambda", "[compose][methods]") {
  torch::manual_seed(6);
  auto s = torch::randn({8, 10}), t = 2 * torch::randn({8, 10});
  distill::CTKDOptions o;
  distill::CTKDLoss ctkd(o);
  CHECK(ctkd->lambda == Approx(distill::ctkd_lambda(o, 1)));
  CHECK(distill::ctkd_lambda(o, 0) == 0.0);      // lambda_max
  CHECK(distill::ctkd_lambda(o, 5) == Approx(-1.0));  // lambda_min after lambda_epochs
  CHECK(distill::ctkd_lambda(o, 50) == Approx(-1.0));
  auto grad_at = [&](int64_t epoch) {
    ctkd->set_epoch(epoch);
    ctkd->zero_grad();
    ctkd(s, t).backward();
    return ctkd->theta.grad().item<double>();
  };
  const double g3 = grad_at(3), g5 = grad_at(5);
  CHECK(g3 / g5 == Approx(distill::ctkd_lambda(o, 3) / distill::ctkd_lambda(o, 5)));
  // A descent step on theta raises the loss (the reversed gradient); without reversal it would fall.
  const double before = ctkd(s, t).item<double>();
  {
    torch::NoGradGuard no_grad;
    ctkd->theta -= 0.5 * ctkd->theta.grad();
  }
  CHECK(ctkd(s, t).item<double>() > before);
  expect_error([] { distill::CTKDLoss(distill::CTKDOptions().lambda_epochs(0)); }, {"CTKDLoss", "lambda_epochs"});
  expect_error([&] { ctkd(s.to(torch::kDouble), t.to(torch::kDouble)); }, {"CTKDLoss", "move the loss"});
}

TEST_CASE("DKD's warm-up scales the loss by min(epoch / warmup_epochs, 1), through a recipe too", "[compose][methods]") {
  torch::manual_seed(8);
  auto s = torch::randn({6, 10}), t = 3 * torch::randn({6, 10});
  auto y = torch::tensor({0, 1, 2, 3, 4, 5}, torch::kLong);
  const auto o = distill::DKDOptions().temperature(4).beta(8);
  const double full = distill::functional::dkd_loss(s, t, y, o).item<double>();
  distill::DKDLoss dkd(distill::DKDOptions(o).warmup_epochs(4));
  CHECK(dkd(s, t, y).item<double>() == Approx(full));  // before any set_epoch: no scaling
  dkd->set_epoch(1);
  CHECK(dkd(s, t, y).item<double>() == Approx(full / 4));
  dkd->set_epoch(3);
  CHECK(dkd(s, t, y).item<double>() == Approx(full * 3 / 4));
  dkd->set_epoch(9);
  CHECK(dkd(s, t, y).item<double>() == Approx(full));
  distill::DKDLoss plain(o);  // the reference's: no warm-up
  plain->set_epoch(1);
  CHECK(plain(s, t, y).item<double>() == Approx(full));
  auto loss = config::build_loss(entries(R"([{"DistillationDKDLoss": {"weight": 1.0, "temperature": 4, "beta": 8,
                                                                      "warmup_epochs": 2}}])"));
  distill::ModelOutputs outputs{{"Student", {{"logits", s}}}, {"Teacher", {{"logits", t}}}};
  loss->set_epoch(1);
  CHECK(loss->forward(outputs, y)["loss"].item<double>() == Approx(full / 2));
  loss->set_epoch(2);
  CHECK(loss->forward(outputs, y)["loss"].item<double>() == Approx(full));
  expect_error([] { distill::DKDLoss(distill::DKDOptions().warmup_epochs(-1)); }, {"dkd_loss", "warmup_epochs"});
}

TEST_CASE("loss entries count in their epochs, and the epoch reaches CTKD through a recipe", "[compose][methods]") {
  torch::manual_seed(7);
  auto loss = config::build_loss(entries(R"([
      {"DistillationGTCELoss": {"weight": 1.0, "epochs": [3, 4]}},
      {"DistillationATLoss": {"weight": 1.0, "key": "f", "epochs": [1, 2]}},
      {"DistillationCTKDLoss": {"weight": 1.0, "lambda_epochs": 4}}])"));
  distill::ModelOutputs outputs{{"Student", {{"logits", torch::randn({2, 5})}, {"f", torch::randn({2, 3, 4, 4})}}},
                                {"Teacher", {{"logits", torch::randn({2, 5})}, {"f", torch::randn({2, 6, 4, 4})}}}};
  auto y = torch::tensor({1, 2}, torch::kLong);
  // Before set_epoch every term counts.
  CHECK(loss->forward(outputs, y).keys().size() == 4);
  loss->set_epoch(2);
  CHECK(loss->forward(outputs, y).keys() ==
        std::vector<std::string>{"loss_at_Student_Teacher_f", "loss_ctkd_Student_Teacher", "loss"});
  loss->set_epoch(4);
  CHECK(loss->forward(outputs, y).keys() == std::vector<std::string>{"CELoss_Student", "loss_ctkd_Student_Teacher", "loss"});
  const distill::CTKDLossImpl* ctkd = nullptr;
  for (const auto& m : loss->modules())
    if (auto* found = dynamic_cast<const distill::CTKDLossImpl*>(m.get())) ctkd = found;
  REQUIRE(ctkd != nullptr);
  CHECK(ctkd->lambda == Approx(distill::ctkd_lambda(distill::CTKDOptions().lambda_epochs(4), 4)));
  auto only_ce = config::build_loss(entries(R"([{"DistillationGTCELoss": {"weight": 1.0, "epochs": [1, 2]}}])"));
  only_ce->set_epoch(3);
  expect_error([&] { only_ce->forward(outputs, y); }, {"no loss term counts at epoch 3"});
  expect_error([] { config::build_loss(entries(R"([{"DistillationGTCELoss": {"weight": 1.0, "epochs": [2]}}])")); },
               {"Loss.Train[0].DistillationGTCELoss.epochs", "[first, last]"});
  expect_error([] { config::build_loss(entries(R"([{"DistillationGTCELoss": {"weight": 1.0, "epochs": [3, 2]}}])")); },
               {"Loss.Train[0].DistillationGTCELoss", "1 <= first <= last"});
}

TEST_CASE("pre-ReLU taps: a block's sum before its last ReLU, and the batch norm before it", "[compose][methods]") {
  namespace models = distill::models;
  torch::manual_seed(8);
  auto images = torch::randn({2, 3, 64, 64});
  auto module_named = [](const torch::nn::Module& net, const std::string& name) {
    for (const auto& item : net.named_modules())
      if (item.key() == name) return item.value().get();
    return static_cast<torch::nn::Module*>(nullptr);
  };
  for (auto layout : {models::ResNetLayout::paddle, models::ResNetLayout::torchvision}) {
    models::ResNet net(models::ResNetOptions(18).layout(layout).class_num(10));
    net->eval();
    net->set_return_patterns({"blocks[3]", "blocks[3]:pre_relu", "blocks[7]:pre_relu"});
    auto out = net->forward(images);
    const auto& pre = out["blocks[3]:pre_relu"];
    CHECK(torch::equal(torch::relu(pre), out["blocks[3]"]));  // the input of the block's last ReLU
    CHECK((pre < 0).any().item<bool>());                     // and not its output
    CHECK(out["blocks[7]:pre_relu"].sizes() == torch::IntArrayRef({2, 512, 2, 2}));
    const bool paddle = layout == models::ResNetLayout::paddle;
    CHECK(net->norm_before_relu("blocks[3]:pre_relu").get() == module_named(*net, paddle ? "blocks.3.conv1.bn" : "layer2.1.bn2"));
  }
  models::ConvNet conv(models::ConvNetOptions({4, 8}).depth(2));
  conv->eval();
  conv->set_return_patterns({"stages[1]", "stages[1]:pre_relu"});
  auto out = conv->forward(torch::randn({2, 3, 16, 16}));
  CHECK(torch::equal(torch::relu(out["stages[1]:pre_relu"]), out["stages[1]"]));
  CHECK(conv->norm_before_relu("stages[1]:pre_relu").get() == module_named(*conv, "stages.1.1.bn"));
  // Taps the network cannot give are errors that say what it can.
  models::ResNet net(models::ResNetOptions(18));
  expect_error([&] { net->set_return_patterns({"stem:pre_relu"}); }, {"ResNet18", "must name a residual block"});
  expect_error([&] { net->set_return_patterns({"blocks[99]:pre_relu"}); }, {"ResNet18", "'blocks[99]' names no layer"});
  auto mobile = distill::models::MobileNetV3(distill::models::MobileNetV3Options(distill::models::MobileNetV3Size::small));
  expect_error([&] { mobile->set_return_patterns({"blocks[0]:pre_relu"}); }, {"has no pre-ReLU taps"});
}

TEST_CASE("OFD from a recipe: margins from the teacher's batch norms, partial L2 through the connectors", "[compose][methods]") {
  namespace F = distill::functional;
  torch::manual_seed(9);
  auto b = build(recipe("ofd"));
  b.model->train();
  auto images = torch::randn({2, 3, 64, 64});
  auto outputs = b.model->forward(images);
  auto terms = b.loss->forward(outputs, torch::randint(0, 10, {2, 1}));
  // The same value by hand: each pair through its connector, the teacher's margin from its norm.
  auto teacher = std::dynamic_pointer_cast<distill::Backbone>(b.model->model("Teacher"));
  const std::vector<std::string> s_keys{"blocks[1]", "blocks[3]", "blocks[5]", "blocks[7]"},
      t_keys{"blocks[2]", "blocks[6]", "blocks[12]", "blocks[15]"};
  distill::OFDLossImpl* ofd = nullptr;
  for (const auto& m : b.loss->modules())
    if (auto* found = dynamic_cast<distill::OFDLossImpl*>(m.get())) ofd = found;
  REQUIRE(ofd != nullptr);
  torch::Tensor expected = torch::zeros({});
  for (size_t i = 0; i < 4; ++i) {
    auto norm = teacher->norm_before_relu(t_keys[i] + ":pre_relu");
    auto margin = F::ofd_margin(norm->weight, norm->bias);
    auto s = ofd->connectors[i]->as<torch::nn::SequentialImpl>()->forward(outputs["Student"][s_keys[i] + ":pre_relu"]);
    expected = expected + F::ofd_loss(s, outputs["Teacher"][t_keys[i] + ":pre_relu"], margin) / std::pow(2.0, 3.0 - i);
  }
  CHECK(terms["loss_ofd"].item<double>() == Approx(1e-4 * expected.item<double>()).epsilon(1e-5));
  // Unbound, and with taps after the ReLU, the term says what is missing.
  auto unbound = config::build_loss(recipe("ofd")["Loss"]["Train"]);
  expect_error([&] { unbound->forward(outputs, torch::randint(0, 10, {2, 1})); }, {"Loss.Train[1].DistillationOFDLoss", "not bound"});
  auto r = recipe("ofd");
  r["Loss"]["Train"][1]["DistillationOFDLoss"]["t_keys"] = {"blocks[2]", "blocks[6]", "blocks[12]", "blocks[15]"};
  expect_error([&] { config::build_loss(r["Loss"]["Train"]); }, {"t_keys", "not a pre-ReLU tap"});
}

TEST_CASE("CRD from a recipe takes the batch's dataset indices and names what is missing", "[compose][methods]") {
  torch::manual_seed(10);
  auto b = build(recipe("crd"));
  b.model->train();
  auto outputs = b.model->forward(torch::randn({3, 3, 64, 64}));
  auto labels = torch::randint(0, 10, {3, 1});
  expect_error([&] { b.loss->forward(outputs, labels); }, {"Loss.Train[1].DistillationCRDLoss", "dataset indices"});
  const distill::CRDLossImpl* crd = nullptr;
  for (const auto& m : b.loss->modules())
    if (auto* found = dynamic_cast<const distill::CRDLossImpl*>(m.get())) crd = found;
  REQUIRE(crd != nullptr);
  auto before = crd->memory_s.clone();
  b.loss->set_batch(torch::tensor({4, 7, 63}));
  auto terms = b.loss->forward(outputs, labels);
  CHECK(std::isfinite(terms["loss_crd"].item<double>()));
  // Only the batch's rows of the memory move, to unit length.
  auto moved = (crd->memory_s != before).any(1);
  CHECK(moved.nonzero().view(-1).equal(torch::tensor({4, 7, 63})));
  CHECK(torch::allclose(crd->memory_s.index_select(0, torch::tensor({4, 7, 63})).norm(2, 1), torch::ones({3})));
  b.loss->set_batch(torch::tensor({4, 7, 64}));
  expect_error([&] { b.loss->forward(outputs, labels); }, {"CRDLoss", "dataset index 64", "[0, 64)", "n_data"});
}
