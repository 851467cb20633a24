// Backbones and feature taps: parameter counts, tap shapes against the reference tables,
// return_stages / stop_after / freeze_before, torchvision equality, the registry.

#include <catch2/catch.hpp>

#include "distill/config.hpp"
#include "distill/models.hpp"
#include "expect_error.hpp"

namespace models = distill::models;
using Shapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

using distill_test::expect_error;

namespace {

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

/// Runs `model` on one input of the given size and checks each named output's shape.
void check_shapes(distill::Backbone& model, int64_t size, const Shapes& expected) {
  torch::NoGradGuard no_grad;
  model.eval();
  auto out = model.forward(torch::randn({1, 3, size, size}));
  REQUIRE(out.size() == expected.size() + 1);
  for (const auto& [name, shape] : expected) {
    INFO(model.name() << " " << name);
    std::vector<int64_t> full{1};
    full.insert(full.end(), shape.begin(), shape.end());
    CHECK(out[name].sizes() == torch::IntArrayRef(full));
  }
}


}  // namespace

TEST_CASE("parameter counts match torchvision and the reference", "[models]") {
  CHECK(parameter_count(*distill::config::create_backbone("ResNet18", {{"layout", "torchvision"}})) == 11689512);
  CHECK(parameter_count(*distill::config::create_backbone("ResNet34", {{"layout", "torchvision"}})) == 21797672);
  CHECK(parameter_count(*distill::config::create_backbone("ResNet50", {{"layout", "torchvision"}})) == 25557032);
  // The reference's ResNet18/34 add a 64->64 projection (conv + BN: 4096 + 128) in stage 1.
  CHECK(parameter_count(*distill::config::create_backbone("ResNet18")) == 11689512 + 4096 + 128);
  CHECK(parameter_count(*distill::config::create_backbone("ResNet50")) == 25557032);
  // docs/reference.md §4.2: 9.018 M trainable parameters for PP-LCNet x2.5.
  CHECK(std::abs(parameter_count(*distill::config::create_backbone("PPLCNet_x2_5")) - 9.018e6) < 1e3);
  // PaddleClas's model tables (paddle.flops counts BatchNorm statistics as parameters):
  // Res2Net200_vd_26w_4s 76.21 M without them and 76.44 M with them, Res2Net50_vd_26w_4s
  // 25.72 M, PPHGNet_tiny 14.75 M and PPHGNet_small 24.38 M with them. PPHGNet_base has no
  // published count (71.58 M parameters here).
  auto with_statistics = [](const torch::nn::Module& m) {
    int64_t n = parameter_count(m);
    for (const auto& b : m.named_buffers())
      if (b.key().find("running_") != std::string::npos) n += b.value().numel();
    return n;
  };
  auto res2net200 = distill::config::create_backbone("Res2Net200_vd_26w_4s");
  CHECK(std::abs(parameter_count(*res2net200) - 76.21e6) < 0.01e6);
  CHECK(std::abs(with_statistics(*res2net200) - 76.44e6) < 0.01e6);
  CHECK(std::abs(parameter_count(*distill::config::create_backbone("Res2Net50_vd_26w_4s")) - 25.72e6) < 0.01e6);
  CHECK(std::abs(with_statistics(*distill::config::create_backbone("PPHGNet_tiny")) - 14.75e6) < 0.01e6);
  CHECK(std::abs(with_statistics(*distill::config::create_backbone("PPHGNet_small")) - 24.38e6) < 0.01e6);
  CHECK(std::abs(parameter_count(*distill::config::create_backbone("PPHGNet_base")) - 71.58e6) < 0.01e6);
}

TEST_CASE("Res2Net200_vd_26w_4s and PPHGNet_base taps have the reference's names and shapes", "[models][taps]") {
  auto res2net = distill::config::create_backbone("Res2Net200_vd_26w_4s", {{"return_stages", true}});
  CHECK(res2net->stage_patterns() == std::vector<std::string>{"bb_0_2", "bb_1_11", "bb_2_47", "bb_3_2"});
  check_shapes(*res2net, 64, {{"bb_0_2", {256, 16, 16}}, {"bb_1_11", {512, 8, 8}}, {"bb_2_47", {1024, 4, 4}},
                              {"bb_3_2", {2048, 2, 2}}});
  // The reference's structured names (its .pdparams keys).
  const auto names = res2net->named_parameters().keys();
  for (const char* name : {"conv1_1._conv.weight", "bb_0_0.res2a_branch2b_3._batch_norm.weight", "bb_2_7.res4b7_branch2b_1._conv.weight",
                           "bb_3_0.short._conv.weight", "bb_1_11.res3l_branch2b_2._conv.weight", "out.weight"})
    CHECK(std::find(names.begin(), names.end(), name) != names.end());
  auto hgnet = distill::config::create_backbone("PPHGNet_base", {{"return_stages", true}});
  check_shapes(*hgnet, 224, {{"stages[0]", {320, 56, 56}}, {"stages[1]", {640, 28, 28}}, {"stages[2]", {960, 14, 14}},
                             {"stages[3]", {1280, 7, 7}}});
  const auto hg_names = hgnet->named_parameters().keys();
  for (const char* name : {"stem.0.conv.weight", "stages.1.downsample.bn.weight", "stages.2.blocks.2.layers.6.conv.weight",
                           "stages.3.blocks.1.aggregation_conv.conv.weight", "stages.3.blocks.1.att.conv.bias", "last_conv.weight"})
    CHECK(std::find(hg_names.begin(), hg_names.end(), name) != hg_names.end());
}

TEST_CASE("ResNet18/34 taps have the reference's shapes at 224x224", "[models][taps]") {
  models::ResNet r18(models::ResNetOptions(18));
  r18->set_return_stages({0, 1, 2, 3});
  check_shapes(*r18, 224, {{"blocks[1]", {64, 56, 56}}, {"blocks[3]", {128, 28, 28}},
                           {"blocks[5]", {256, 14, 14}}, {"blocks[7]", {512, 7, 7}}});
  models::ResNet r34(models::ResNetOptions(34));
  r34->set_return_patterns({"blocks[0]", "blocks[2]", "blocks[3]", "blocks[6]", "blocks[7]", "blocks[12]",
                            "blocks[13]", "blocks[15]", "avg_pool"});
  check_shapes(*r34, 224, {{"blocks[0]", {64, 56, 56}}, {"blocks[2]", {64, 56, 56}}, {"blocks[3]", {128, 28, 28}},
                           {"blocks[6]", {128, 28, 28}}, {"blocks[7]", {256, 14, 14}}, {"blocks[12]", {256, 14, 14}},
                           {"blocks[13]", {512, 7, 7}}, {"blocks[15]", {512, 7, 7}}, {"avg_pool", {512, 1, 1}}});
}

TEST_CASE("PP-LCNet x2.5 and MobileNetV3 stages have the reference's shapes at 224x224", "[models][taps]") {
  auto lcnet = distill::config::create_backbone("PPLCNet_x2_5", {{"return_stages", true}});
  check_shapes(*lcnet, 224, {{"blocks2", {80, 112, 112}}, {"blocks3", {160, 56, 56}}, {"blocks4", {320, 28, 28}},
                             {"blocks5", {640, 14, 14}}, {"blocks6", {1280, 7, 7}}});
  auto large = distill::config::create_backbone("MobileNetV3_large_x1_0", {{"return_stages", true}});
  check_shapes(*large, 224, {{"blocks[0]", {16, 112, 112}}, {"blocks[2]", {24, 56, 56}}, {"blocks[5]", {40, 28, 28}},
                             {"blocks[11]", {112, 14, 14}}, {"blocks[14]", {160, 7, 7}}});
  auto small = distill::config::create_backbone("MobileNetV3_small_x1_0", {{"return_stages", true}});
  check_shapes(*small, 224, {{"blocks[0]", {16, 56, 56}}, {"blocks[2]", {24, 28, 28}}, {"blocks[7]", {48, 14, 14}},
                             {"blocks[10]", {96, 7, 7}}});
}

TEST_CASE("every backbone runs at 32x32 and 64x64 with any class count", "[models]") {
  torch::manual_seed(0);
  for (const auto& name : models::backbone_names()) {
    INFO(name);
    auto model = distill::config::create_backbone(name, {{"class_num", 7}});
    auto logits = model->forward(torch::randn({2, 3, 32, 32}))["logits"];
    CHECK(logits.sizes() == torch::IntArrayRef({2, 7}));
    CHECK(logits.isfinite().all().item<bool>());
  }
  auto r18 = distill::config::create_backbone("ResNet18_vd", {{"class_num", 3}, {"return_stages", true}});
  auto out = r18->forward(torch::randn({2, 3, 64, 64}));
  CHECK(out["blocks[7]"].sizes() == torch::IntArrayRef({2, 512, 2, 2}));
  CHECK(out["logits"].sizes() == torch::IntArrayRef({2, 3}));
}

TEST_CASE("taps equal the layers' outputs, and cost nothing when unset", "[models][taps]") {
  torch::manual_seed(1);
  torch::NoGradGuard no_grad;
  models::ResNet net(models::ResNetOptions(18).class_num(5));
  net->eval();
  auto x = torch::randn({2, 3, 32, 32});
  auto plain = net->forward(x);
  CHECK(plain.keys() == std::vector<std::string>{"logits"});
  net->set_return_patterns({"blocks[3]", "stem", "blocks[3].conv0", "fc"});
  auto tapped = net->forward(x);
  CHECK(tapped.keys() == std::vector<std::string>{"logits", "blocks[3]", "stem", "blocks[3].conv0", "fc"});
  CHECK(torch::equal(tapped["logits"], plain["logits"]));
  CHECK(torch::equal(tapped["fc"], plain["logits"]));
  // Recompute blocks[3] by hand from the stem output.
  auto h = net->max_pool(tapped["stem"]);
  for (size_t i = 0; i <= 3; ++i) h = net->blocks->at<models::detail::PaddleBlockImpl>(i).forward(h);
  CHECK(torch::allclose(h, tapped["blocks[3]"]));
  // Dotted indices are accepted as the same path.
  net->set_return_patterns({"blocks.3"});
  CHECK(torch::equal(net->forward(x)["blocks.3"], tapped["blocks[3]"]));
}

TEST_CASE("the torchvision layout answers to the reference's pattern names", "[models][taps]") {
  torch::NoGradGuard no_grad;
  auto tv = distill::config::create_backbone("ResNet34", {{"layout", "torchvision"}, {"class_num", 4},
                                         {"return_patterns", {"blocks[2]", "blocks[6]", "blocks[12]", "blocks[15]",
                                                              "layer2[3]", "avg_pool"}}});
  tv->eval();
  auto out = tv->forward(torch::randn({1, 3, 64, 64}));
  CHECK(torch::equal(out["blocks[6]"], out["layer2[3]"]));
  CHECK(out["blocks[15]"].sizes() == torch::IntArrayRef({1, 512, 2, 2}));
  CHECK(out["avg_pool"].sizes() == torch::IntArrayRef({1, 512, 1, 1}));
}

TEST_CASE("stop_after truncates the network and freeze_before cuts the gradient", "[models][taps]") {
  torch::manual_seed(2);
  models::ResNet net(models::ResNetOptions(18).class_num(5));
  net->eval();
  auto x = torch::randn({2, 3, 32, 32});
  net->set_return_patterns({"blocks[3]"});
  auto full = net->forward(x);
  net->stop_after("blocks[3]");
  auto cut = net->forward(x);
  CHECK(torch::allclose(cut["logits"], full["blocks[3]"]));  // the later layers act as identity
  net->stop_after("");
  CHECK(torch::allclose(net->forward(x)["logits"], full["logits"]));

  net->set_return_patterns({});
  net->freeze_before("blocks[3]");
  net->forward(x)["logits"].sum().backward();
  for (const auto& p : net->named_parameters()) {
    const bool before = p.key().rfind("stem", 0) == 0 || p.key().rfind("blocks.0.", 0) == 0 ||
                        p.key().rfind("blocks.1.", 0) == 0 || p.key().rfind("blocks.2.", 0) == 0 ||
                        p.key().rfind("blocks.3.", 0) == 0;
    INFO(p.key());
    CHECK(p.value().grad().defined() != before);
  }
}

TEST_CASE("in-place ReLU and residual additions give the out-of-place values and gradients, with and without taps",
          "[models][taps][in_place]") {
  // Two copies of a network (same seed), one computing in place (the default), one not; the
  // same training-mode step on both must agree bitwise: outputs, taps, input and parameter
  // gradients, batch-norm statistics. Version counters show where work was done in place.
  struct Setting {
    std::string label;
    std::function<std::shared_ptr<distill::Backbone>()> make;
    std::vector<std::string> patterns;
    std::string freeze;
    std::map<std::string, bool> in_place;  // tap -> whether its tensor was overwritten in place
  };
  auto resnet = [](models::ResNetLayout layout) {
    return [layout] { return models::ResNet(models::ResNetOptions(18).layout(layout).class_num(5)).ptr(); };
  };
  auto convnet = [] { return models::ConvNet(models::ConvNetOptions({4, 8}).depth(2).class_num(5)).ptr(); };
  const std::vector<Setting> settings{
      {"ResNet18, no taps", resnet(models::ResNetLayout::paddle), {}, "", {}},
      // blocks[1]'s own output is its in-place ReLU; blocks[2] holds a tap inside, so it works
      // out of place; blocks[3]'s pre-ReLU sum must not be overwritten by the ReLU after it.
      {"ResNet18, taps", resnet(models::ResNetLayout::paddle), {"blocks[1]", "blocks[2].conv0", "blocks[2]", "blocks[3]:pre_relu", "blocks[4]"},
       "", {{"blocks[1]", true}, {"blocks[2].conv0", true}, {"blocks[2]", false}, {"blocks[4]", true}}},
      {"ResNet18, freeze_before inside a block", resnet(models::ResNetLayout::paddle), {"blocks[2]", "blocks[3]"},
       "blocks[2].conv1", {{"blocks[2]", false}, {"blocks[3]", true}}},
      {"torchvision ResNet18, taps", resnet(models::ResNetLayout::torchvision), {"layer2[0]", "layer2[1].bn2", "layer2[1]"},
       "", {{"layer2[0]", true}, {"layer2[1].bn2", false}, {"layer2[1]", false}}},
      {"ConvNet, taps", convnet, {"stages[0]", "stages[1]:pre_relu"}, "", {}},
  };
  for (const auto& setting : settings) {
    INFO(setting.label);
    std::vector<distill::Features> outputs;
    std::vector<std::vector<torch::Tensor>> grads;
    std::vector<std::shared_ptr<distill::Backbone>> nets;
    for (bool in_place : {true, false}) {
      torch::manual_seed(5);
      auto net = setting.make();
      net->set_in_place(in_place);
      net->set_return_patterns(setting.patterns);
      if (!setting.freeze.empty()) net->freeze_before(setting.freeze);
      net->train();
      auto x = torch::randn({4, 3, 32, 32}, torch::requires_grad());
      auto out = net->forward(x);
      auto loss = (out["logits"] * torch::randn_like(out["logits"])).sum();
      for (const auto& pattern : setting.patterns) loss = loss + (out[pattern] * torch::randn_like(out[pattern])).sum();
      loss.backward();
      std::vector<torch::Tensor> g{x.grad()};
      for (const auto& p : net->parameters()) g.push_back(p.grad().defined() ? p.grad() : torch::zeros({0}));
      for (const auto& b : net->buffers()) g.push_back(b);
      for (const auto& [pattern, overwritten] : setting.in_place) {
        INFO(pattern << (in_place ? " in place" : " out of place"));
        CHECK((out[pattern]._version() > 0) == (in_place && overwritten));
      }
      outputs.push_back(out);
      grads.push_back(g);
      nets.push_back(net);
    }
    for (const auto& [name, value] : outputs[1]) {
      INFO(name);
      CHECK(torch::equal(outputs[0][name], value));
    }
    REQUIRE(grads[0].size() == grads[1].size());
    for (size_t i = 0; i < grads[0].size(); ++i) {
      INFO("gradient or buffer " << i);
      CHECK(torch::equal(grads[0][i], grads[1][i]));
    }
  }
}

TEST_CASE("a user's network gets taps with a few lines", "[models][taps]") {
  // The README's example.
  struct TinyNetImpl : distill::Backbone {
    TinyNetImpl() {
      body = register_module("body", torch::nn::Sequential(torch::nn::Conv2d(3, 8, 3), torch::nn::ReLU()));
      fc = register_module("fc", torch::nn::Linear(8, 10));
    }
    std::string name() const override { return "TinyNet"; }
    torch::Tensor forward_logits(const torch::Tensor& x) override { return call(fc, run(body, x).mean({2, 3})); }
    torch::nn::Sequential body{nullptr};
    torch::nn::Linear fc{nullptr};
  };
  TinyNetImpl net;
  net.set_return_patterns({"body[0]", "body"});
  auto out = net.forward(torch::randn({2, 3, 8, 8}));
  CHECK(out["body[0]"].sizes() == torch::IntArrayRef({2, 8, 6, 6}));
  CHECK(torch::equal(out["body"], torch::relu(out["body[0]"])));
  CHECK(out["logits"].sizes() == torch::IntArrayRef({2, 10}));
}

TEST_CASE("unknown patterns, names and keys are errors that say what exists", "[models][errors]") {
  expect_error([] { distill::config::create_backbone("ResNet34", {{"return_patterns", {"blocks[16]"}}}, "Arch.models[0].Teacher"); },
               {"Arch.models[0].Teacher", "'blocks[16]' names no layer", "blocks[0..15]", "avg_pool"});
  expect_error([] { distill::config::create_backbone("ResNet34", {{"clas_num", 3}}, "Arch.models[0].Teacher"); },
               {"Arch.models[0].Teacher.clas_num", "unknown key", "class_num"});
  expect_error([] { distill::config::create_backbone("ResNet35", {}, "Arch.models[1].Student"); },
               {"Arch.models[1].Student.name", "unknown backbone 'ResNet35'", "ResNet34"});
  expect_error([] { distill::config::create_backbone("ResNet18", {{"class_num", "ten"}}, "S"); }, {"S.class_num", "an integer", "string"});
  expect_error([] { distill::config::create_backbone("ResNet18", {{"return_stages", 4}}); }, {"return stage 4", "4 stages"});
  expect_error([] { distill::config::create_backbone("ResNet18", {{"return_stages", 1}, {"return_patterns", {"fc"}}}); }, {"not both"});
  expect_error([] { distill::config::create_backbone("ResNet18", {{"layout", "keras"}}); }, {"layout", "keras"});
  expect_error([] { distill::config::create_backbone("ResNet50_vd", {{"layout", "torchvision"}}); }, {"vd"});
  expect_error([] { distill::config::create_backbone("PPLCNet_x1_0", {{"pretrained", true}}); }, {"pretrained", "path"});
  expect_error([] { distill::config::create_backbone("PPLCNet_x1_0", {{"use_ssld", true}, {"pretrained", true}}); }, {"use_ssld"});
  models::ResNet net(models::ResNetOptions(18));
  expect_error([&] { net->stop_after("blocks[9]"); }, {"stop_after", "blocks[9]"});
  expect_error([&] { net->freeze_before("stem[1]"); }, {"freeze_before", "stem[1]"});
  // A user's network whose forward skips call() for a requested layer is told so.
  struct SkipNetImpl : distill::Backbone {
    SkipNetImpl() { fc = register_module("fc", torch::nn::Linear(3, 2)); }
    std::string name() const override { return "SkipNet"; }
    torch::Tensor forward_logits(const torch::Tensor& x) override { return fc(x); }
    torch::nn::Linear fc{nullptr};
  };
  SkipNetImpl skip;
  skip.set_return_patterns({"fc"});
  expect_error([&] { skip.forward(torch::randn({1, 3})); }, {"SkipNet", "'fc'", "call()"});
}

TEST_CASE("sizes beyond the limits are refused before anything is allocated", "[models][errors]") {
  using distill::config::create_backbone;
  expect_error([] { create_backbone("ConvNet", {{"depth", int64_t{1000000000000000000}}}, "Arch.models[1].Student"); },
               {"Arch.models[1].Student", "ConvNet", "depth", "DISTILL_MAX_SIZE"});
  expect_error([] { create_backbone("ConvNet", {{"widths", {1 << 23, 1 << 23}}}, "S"); },
               {"ConvNet", "parameters", "DISTILL_MAX_PARAMETERS"});
  expect_error([] { create_backbone("ConvNet", {{"widths", {0}}}, "S"); }, {"ConvNet", "widths must be >= 1"});
  expect_error([] { create_backbone("ResNet18", {{"class_num", 10000000}}, "T"); }, {"ResNet", "parameters"});
  expect_error([] { create_backbone("PPLCNet_x1_0", {{"class_num", -1}}, "S"); }, {"PPLCNet", "class_num must be >= 1"});
  expect_error([] { create_backbone("MobileNetV3_large_x1_0", {{"class_expand", 1 << 25}}, "S"); }, {"MobileNetV3", "class_expand"});
  expect_error([] { create_backbone("PPHGNet_base", {{"class_expand", 1 << 25}}, "S"); }, {"PPHGNet", "class_expand"});
  expect_error([] { create_backbone("PPHGNet_base", {{"class_expand", 1 << 23}}, "S"); }, {"PPHGNet", "parameters"});
  expect_error([] { create_backbone("Res2Net200_vd_26w_4s", {{"class_num", 0}}, "T"); }, {"Res2Net_vd", "class_num must be >= 1"});
  expect_error([] { distill::MGDLoss(distill::MGDOptions(16, 1 << 20)); }, {"MGDLoss", "parameters"});
  expect_error([] { distill::AFDLoss(distill::AFDOptions({{64, 8, 8}}, {{64, 8, 8}}).qk_dim(0)); }, {"AFDLoss", "qk_dim"});
}
