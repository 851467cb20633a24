// Weight interchange with Python: torchvision state dicts load and reproduce torchvision's
// logits; state dicts written here load in Python; bad files are errors. The reference files
// are made at test time by make_model_fixtures.py (CTest fixture "python_models").

#include <cstdlib>
#include <fstream>

#include <catch2/catch.hpp>

#include "distill/io.hpp"
#include "distill/config.hpp"
#include "distill/models.hpp"
#include "expect_error.hpp"

namespace models = distill::models;
namespace io = distill::io;

using distill_test::expect_error;

namespace {

std::string fixture(const std::string& name) { return std::string(DISTILL_TEST_MODELS) + "/" + name; }
std::string scratch(const std::string& name) { return std::string(DISTILL_TEST_SCRATCH) + "/" + name; }


void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

}  // namespace

TEST_CASE("torchvision state dicts load and give torchvision's logits", "[io][python]") {
  for (const auto& [name, arch] : {std::pair{"ResNet18", "resnet18"}, std::pair{"ResNet50", "resnet50"}}) {
    INFO(name);
    auto model = distill::config::create_backbone(name, {{"layout", "torchvision"}});
    auto result = io::load_state_dict(*model, fixture(std::string(arch) + ".pth"));
    CHECK(result.complete());
    auto reference = io::read_state_dict(fixture(std::string(arch) + "_io.pt"));
    model->eval();
    torch::NoGradGuard no_grad;
    auto logits = model->forward(reference["input"])["logits"];
    const auto& expected = reference["logits"];
    const double error = ((logits - expected).abs().max() / expected.abs().max()).item<double>();
    CHECK(error < 1e-5);
  }
}

TEST_CASE("tensors that share a storage keep their views and dtypes", "[io][python]") {
  auto dict = io::read_state_dict(fixture("views.pt"));
  CHECK(dict.keys() == std::vector<std::string>{"whole", "row", "col", "t", "double", "long"});
  auto base = torch::arange(12, torch::kFloat).reshape({3, 4});
  CHECK(torch::equal(dict["whole"], base));
  CHECK(torch::equal(dict["row"], base[1]));
  CHECK(torch::equal(dict["col"], base.select(1, 2)));
  CHECK(torch::equal(dict["t"], base.t()));
  CHECK(dict["double"].scalar_type() == torch::kDouble);
  CHECK(torch::allclose(dict["double"], torch::linspace(0, 1, 5, torch::kDouble)));
  CHECK(torch::equal(dict["long"], torch::arange(4)));
}

TEST_CASE("a state dict saved here loads in Python's torchvision with the same logits", "[io][python]") {
  torch::manual_seed(3);
  auto model = distill::config::create_backbone("ResNet18", {{"layout", "torchvision"}, {"class_num", 10}});
  {
    // Non-trivial BatchNorm statistics, as after training.
    torch::NoGradGuard no_grad;
    for (auto& b : model->named_buffers())
      if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
      else if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0, 0.1);
  }
  model->eval();
  auto input = torch::randn({2, 3, 48, 48});
  torch::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    logits = model->forward(input)["logits"];
  }
  io::save_state_dict(*model, scratch("student.pt"));
  io::StateDict check;
  check.insert("input", input);
  check.insert("logits", logits);
  io::write_state_dict(check, scratch("student_io.pt"));
  const std::string command = std::string(DISTILL_TEST_PYTHON) + " " + DISTILL_TEST_SCRIPTS + "/check_state_dict.py " +
                              scratch("student.pt") + " " + scratch("student_io.pt");
  CHECK(std::system(command.c_str()) == 0);

  // And back: the file distill wrote reads into an identical model.
  auto again = distill::config::create_backbone("ResNet18", {{"layout", "torchvision"}, {"class_num", 10}});
  io::load_state_dict(*again, scratch("student.pt"));
  again->eval();
  torch::NoGradGuard no_grad;
  CHECK(torch::equal(again->forward(input)["logits"], logits));
}

TEST_CASE("the registry loads 'pretrained' weights", "[io][python]") {
  auto model = distill::config::create_backbone("ResNet18", {{"layout", "torchvision"}, {"pretrained", fixture("resnet18.pth")}});
  auto reference = io::read_state_dict(fixture("resnet18.pth"));
  CHECK(torch::equal(model->named_parameters()["layer3.1.conv2.weight"], reference["layer3.1.conv2.weight"]));
}

TEST_CASE("mismatched state dicts are reported together", "[io][errors][python]") {
  auto r34 = distill::config::create_backbone("ResNet34", {{"layout", "torchvision"}});
  expect_error([&] { io::load_state_dict(*r34, fixture("resnet18.pth")); },
               {"resnet18.pth", "96 missing", "0 unexpected", "layer1.2.conv1.weight"});
  auto ten = distill::config::create_backbone("ResNet18", {{"layout", "torchvision"}, {"class_num", 10}});
  expect_error([&] { io::load_state_dict(*ten, fixture("resnet18.pth")); },
               {"2 with another shape", "fc.weight: file [1000, 512] vs module [10, 512]"});
  auto paddle = distill::config::create_backbone("ResNet18");
  expect_error([&] { io::load_state_dict(*paddle, fixture("resnet18.pth")); }, {"missing", "unexpected", "stem.0.conv.weight"});

  // Non-strict: load what matches, report the rest.
  auto before = ten->named_parameters()["fc.weight"].clone();
  auto result = io::load_state_dict(*ten, fixture("resnet18.pth"), io::LoadOptions().strict(false));
  CHECK(result.missing.empty());
  CHECK(result.unexpected.empty());
  CHECK(result.mismatched.size() == 2);
  CHECK(torch::equal(ten->named_parameters()["fc.weight"], before));
  CHECK(torch::equal(ten->named_parameters()["conv1.weight"], io::read_state_dict(fixture("resnet18.pth"))["conv1.weight"]));
}

TEST_CASE("corrupt, foreign and missing files are errors naming the file", "[io][errors][python]") {
  expect_error([] { io::read_state_dict(scratch("does-not-exist.pt")); }, {"does-not-exist.pt", "cannot open"});
  write_bytes(scratch("text.pt"), "this is not a checkpoint\n");
  expect_error([] { io::read_state_dict(scratch("text.pt")); }, {"text.pt", "not a readable"});
  const auto good = read_bytes(fixture("resnet18.pth"));
  write_bytes(scratch("truncated.pt"), good.substr(0, good.size() / 2));
  expect_error([] { io::read_state_dict(scratch("truncated.pt")); }, {"truncated.pt"});
  expect_error([] { io::read_state_dict(fixture("legacy.pt")); }, {"legacy.pt", "_use_new_zipfile_serialization"});
  expect_error([] { io::read_state_dict(fixture("not_a_dict.pt")); }, {"not_a_dict.pt", "list", "not a state dict"});
  expect_error([] { io::read_state_dict(fixture("checkpoint.pt")); }, {"checkpoint.pt", "'epoch'", "int"});
  expect_error([] { distill::config::create_backbone("ResNet18", {{"pretrained", scratch("text.pt")}}, "Arch.models[0].Teacher"); },
               {"Arch.models[0].Teacher", "text.pt"});
}
