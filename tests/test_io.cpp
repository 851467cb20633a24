// Weight interchange with Python: torchvision state dicts load and reproduce torchvision's
// logits; state dicts written here load in Python; bad files are errors. The reference files
// are made at test time by make_model_fixtures.py (CTest fixture "python_models").

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <fstream>

#include <catch2/catch.hpp>

#include "distill/io.hpp"
#include "distill/io/torchscript.hpp"
#include "distill/config.hpp"
#include "distill/models.hpp"
#include "expect_error.hpp"
#include "torch_zip.hpp"

namespace models = distill::models;
namespace io = distill::io;

using distill_test::expect_error;
using distill_test::Pickle;
using distill_test::write_torch_zip;

namespace {

std::string fixture(const std::string& name) { return std::string(DISTILL_TEST_MODELS) + "/" + name; }
std::string scratch_path(const std::string& name) { return std::string(DISTILL_TEST_SCRATCH) + "/" + name; }


void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

/// A built-in backbone with BatchNorm statistics as after training, in eval mode.
std::shared_ptr<distill::Backbone> trained_looking(const std::string& name, const nlohmann::json& options = {{"class_num", 10}},
                                                   uint64_t seed = 11) {
  torch::manual_seed(seed);
  auto model = distill::config::create_backbone(name, options);
  torch::NoGradGuard no_grad;
  for (auto& b : model->named_buffers())
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
    else if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0, 0.1);
  model->eval();
  return model;
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
  // Non-trivial BatchNorm statistics, as after training.
  auto model = trained_looking("ResNet18", {{"layout", "torchvision"}, {"class_num", 10}}, 3);
  auto input = torch::randn({2, 3, 48, 48});
  torch::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    logits = model->forward(input)["logits"];
  }
  io::save_state_dict(*model, scratch_path("student.pt"));
  io::StateDict check;
  check.insert("input", input);
  check.insert("logits", logits);
  io::write_state_dict(check, scratch_path("student_io.pt"));
  const std::string command = std::string(DISTILL_TEST_PYTHON) + " " + DISTILL_TEST_SCRIPTS + "/check_state_dict.py " +
                              scratch_path("student.pt") + " " + scratch_path("student_io.pt");
  CHECK(std::system(command.c_str()) == 0);

  // And back: the file distill wrote reads into an identical model.
  auto again = distill::config::create_backbone("ResNet18", {{"layout", "torchvision"}, {"class_num", 10}});
  io::load_state_dict(*again, scratch_path("student.pt"));
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
  expect_error([] { io::read_state_dict(scratch_path("does-not-exist.pt")); }, {"does-not-exist.pt", "cannot open"});
  write_bytes(scratch_path("text.pt"), "this is not a checkpoint\n");
  expect_error([] { io::read_state_dict(scratch_path("text.pt")); }, {"text.pt", "not a readable"});
  const auto good = read_bytes(fixture("resnet18.pth"));
  write_bytes(scratch_path("truncated.pt"), good.substr(0, good.size() / 2));
  expect_error([] { io::read_state_dict(scratch_path("truncated.pt")); }, {"truncated.pt"});
  expect_error([] { io::read_state_dict(fixture("legacy.pt")); }, {"legacy.pt", "_use_new_zipfile_serialization"});
  expect_error([] { io::read_state_dict(fixture("not_a_dict.pt")); }, {"not_a_dict.pt", "list", "not a state dict"});
  expect_error([] { io::read_state_dict(fixture("checkpoint.pt")); }, {"checkpoint.pt", "'epoch'", "int"});
  expect_error([] { distill::config::create_backbone("ResNet18", {{"pretrained", scratch_path("text.pt")}}, "Arch.models[0].Teacher"); },
               {"Arch.models[0].Teacher", "text.pt"});
}

TEST_CASE(".pdparams written the paddle.save way load strictly into the paddle-layout backbones with the source's logits",
          "[io][paddle][python]") {
  // make_paddle_fixtures.py: PyTorch rebuilds of the reference networks, saved under
  // PaddleClas's names as numpy arrays (BatchNorm _mean/_variance, Linear weights [in, out]),
  // pickled with protocol 2 (PP-LCNet, MobileNetV3 small) or 4 (the others).
  std::vector<std::string> names{"ResNet34", "PPLCNet_x1_0", "MobileNetV3_small_x0_5"};  // pickle protocols 4 and 2
  // The sanitizer run (DISTILL_TEST_SMALL_SHAPES set) reads these three only: the reader's
  // paths are the same for every network, and the 100 M parameters of the other four took
  // 40 s there.
  if (std::getenv("DISTILL_TEST_SMALL_SHAPES") == nullptr)
    names.insert(names.end(), {"ResNet50_vd", "MobileNetV3_large_x1_0", "Res2Net50_vd_26w_4s", "PPHGNet_tiny"});
  for (const auto& name : names) {
    INFO(name);
    auto model = distill::config::create_backbone(name, {{"class_num", 10}});
    CHECK(io::is_pdparams(fixture(name + ".pdparams")));
    CHECK(io::load_state_dict(*model, fixture(name + ".pdparams")).complete());
    auto reference = io::read_state_dict(fixture(name + "_io.pt"));
    model->eval();
    torch::NoGradGuard no_grad;
    const auto logits = model->forward(reference["input"])["logits"];
    const auto& expected = reference["logits"];
    CHECK(((logits - expected).abs().max() / expected.abs().max()).item<double>() < 1e-5);
  }
  // The names stay Paddle's when read; the arrays keep their dtype and layout.
  auto raw = io::read_state_dict(fixture("ResNet34.pdparams"));
  CHECK(raw.contains("stem.0.bn._variance"));
  CHECK_FALSE(raw.contains("StructuredToParameterName@@"));
  CHECK(raw["fc.weight"].sizes() == torch::IntArrayRef({512, 10}));
  CHECK(raw["fc.weight"].scalar_type() == torch::kFloat);
}

TEST_CASE(".pdparams: the reference's extension-less paths, recipes' 'pretrained', and named errors", "[io][paddle][errors][python]") {
  auto model = distill::config::create_backbone("PPLCNet_x1_0", {{"class_num", 10}});
  CHECK(io::load_state_dict(*model, fixture("PPLCNet_x1_0")).complete());  // PaddleClas names files without .pdparams
  auto from_recipe = distill::config::create_backbone(
      "PPLCNet_x1_0", {{"class_num", 10}, {"pretrained", fixture("PPLCNet_x1_0.pdparams")}, {"use_ssld", true}});
  CHECK(torch::equal(from_recipe->named_buffers()["blocks6.1.pw_conv.bn.running_var"],
                     io::read_state_dict(fixture("PPLCNet_x1_0.pdparams"))["blocks6.1.pw_conv.bn._variance"]));
  expect_error([] { distill::config::create_backbone("PPLCNet_x1_0", {{"use_ssld", true}, {"pretrained", true}}); },
               {"pretrained", "use_ssld", ".pdparams"});
  CHECK(distill::config::create_backbone("PPLCNet_x1_0", {{"use_ssld", true}, {"pretrained", false}}));

  // A Linear weight stored [out, in] (not transposed the Paddle way) is a shape error naming it.
  auto small = distill::config::create_backbone("MobileNetV3_small_x0_5", {{"class_num", 10}});
  expect_error([&] { io::load_state_dict(*small, fixture("transposed.pdparams")); },
               {"transposed.pdparams", "1 with another shape", "fc.weight: file [1280, 10] vs module [10, 1280]"});
  // Another network's weights: every unmapped name is listed.
  auto other = distill::config::create_backbone("ResNet18", {{"class_num", 10}});
  expect_error([&] { io::load_state_dict(*other, fixture("ResNet34.pdparams")); },
               {"ResNet34.pdparams", "15 missing", "95 unexpected", "blocks.15.conv1.bn.running_var"});
  // A pickle that would run os.system in Python is refused by name and runs nothing.
  std::remove(fixture("pwned_by_pdparams").c_str());
  expect_error([] { io::read_state_dict(fixture("hostile.pdparams")); }, {"hostile.pdparams", "posix.system"});
  CHECK_FALSE(std::ifstream(fixture("pwned_by_pdparams")).good());
}

TEST_CASE("hostile .pdparams are errors naming the fault", "[io][paddle][errors]") {
  const std::string path = scratch_path("hostile.pdparams");
  // {"w": numpy array of `shape`, dtype `descr` with byte order `order`, holding `data`}
  auto array = [](const std::vector<int64_t>& shape, const std::string& descr, const std::string& order, const std::string& data) {
    Pickle p;
    p.op('}').str("w");
    p.global("numpy.core.multiarray", "_reconstruct").global("numpy", "ndarray").ints({0}).str("b").op('\x87').op('R');
    p.mark().integer(1).ints(shape);
    p.global("numpy", "dtype").str(descr).op('\x89').op('\x88').op('\x87').op('R');
    p.mark().integer(3).str(order).op('N').op('N').op('N').integer(-1).integer(-1).integer(0).op('t').op('b');
    p.op('\x89').op('B');
    for (int i = 0; i < 4; ++i) p.bytes += static_cast<char>((data.size() >> (8 * i)) & 0xFF);
    p.bytes += data;
    return p.op('t').op('b').op('s').stop().bytes;
  };
  const std::string six(24, '\0');
  write_bytes(path, array({2, 3}, "f4", "<", six));
  CHECK(torch::equal(io::read_state_dict(path)["w"], torch::zeros({2, 3})));  // the builder itself is right
  write_bytes(path, array({2, 4}, "f4", "<", six));
  expect_error([&] { io::read_state_dict(path); }, {"hostile.pdparams", "shape [2, 4] and dtype f4 with 24 bytes"});
  write_bytes(path, array({3}, "c16", "<", six));
  expect_error([&] { io::read_state_dict(path); }, {"hostile.pdparams", "numpy dtype 'c16' is not supported"});
  write_bytes(path, array({2, 3}, "f4", ">", six));
  expect_error([&] { io::read_state_dict(path); }, {"hostile.pdparams", "big-endian"});
  write_bytes(path, array({int64_t{1} << 40, int64_t{1} << 40}, "f4", "<", six));
  expect_error([&] { io::read_state_dict(path); }, {"hostile.pdparams", "shape"});
  // A torch storage (a persistent id) has no place outside a torch.save archive.
  Pickle storage;
  storage.op('}').str("w").tensor("0", 12, 0, {12}, {1}).op('s').stop();
  write_bytes(path, storage.bytes);
  expect_error([&] { io::read_state_dict(path); }, {"hostile.pdparams", "persistent id"});
  // A numpy global other than the array's own is refused by name.
  Pickle other;
  other.op('}').str("w").global("numpy", "load").str("x.npy").op('\x85').op('R').op('s').stop();
  write_bytes(path, other.bytes);
  expect_error([&] { io::read_state_dict(path); }, {"hostile.pdparams", "numpy.load"});
}

TEST_CASE("hostile weights files are errors, never a crash, an overread or a silent change", "[io][errors]") {
  const std::string path = scratch_path("hostile.pt");
  const auto twelve = distill_test::float_record(12);
  auto dict_of = [](const Pickle& value) {  // {"w": value}
    Pickle p;
    p.op('}').mark().str("w");
    p.bytes += value.bytes.substr(2);
    return p.op('u').stop().bytes;
  };
  auto tensor = [](int64_t offset, std::vector<int64_t> sizes, std::vector<int64_t> strides) {
    Pickle p;
    p.tensor("0", 12, offset, sizes, strides);
    return p;
  };

  SECTION("a well-formed hand-made file loads (the builder itself is right)") {
    write_torch_zip(path, dict_of(tensor(1, {2, 3}, {4, 1})), {{"0", twelve}});
    auto dict = io::read_state_dict(path);
    CHECK(torch::equal(dict["w"], torch::arange(12, torch::kFloat).as_strided({2, 3}, {4, 1}, 1)));
  }
  SECTION("200,000 nested lists are freed without recursion") {
    Pickle p;
    const int depth = 200000;
    for (int i = 0; i < depth; ++i) p.op(']');
    for (int i = 1; i < depth; ++i) p.op('a');
    write_torch_zip(path, p.stop().bytes);
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "list", "not a state dict"});
  }
  SECTION("a container that contains itself is refused (no cycle, no leak)") {
    Pickle p;
    p.op(']').op('q').op('\0').op('h').op('\0').op('a');
    write_torch_zip(path, p.stop().bytes);
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "contains itself"});
    Pickle q;  // [[]] then appending to the inner list once it is inside the outer one
    q.op(']').op(']').op('q').op('\1').op('a').op('h').op('\1').op(']').op('a');
    write_torch_zip(path, q.stop().bytes);
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "already part of another value"});
  }
  SECTION("tensor views are checked before they are made") {
    write_torch_zip(path, dict_of(tensor(0, {1, 1, 1, 1, 1, 1, 1, 2}, {1})), {{"0", twelve}});
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "sizes and strides differ in length"});
    write_torch_zip(path, dict_of(tensor(0, {3, int64_t{1} << 62}, {1, 1})), {{"0", twelve}});
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "overflow"});
    write_torch_zip(path, dict_of(tensor(0, {3, 2}, {int64_t{1} << 62, 1})), {{"0", twelve}});
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "overflow"});
    write_torch_zip(path, dict_of(tensor(-1, {2}, {1})), {{"0", twelve}});
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "negative storage offset"});
    write_torch_zip(path, dict_of(tensor(11, {2}, {-1})), {{"0", twelve}});
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "negative size or stride"});
    write_torch_zip(path, dict_of(tensor(0, {-1}, {1})), {{"0", twelve}});
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "negative size or stride"});
    write_torch_zip(path, dict_of(tensor(1, {3, 4}, {4, 1})), {{"0", twelve}});
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "does not fit its storage of 12 elements"});
  }
  SECTION("an empty storage record gives an empty tensor") {
    Pickle p;
    p.tensor("0", 0, 0, {0}, {1});
    write_torch_zip(path, dict_of(p), {{"0", ""}});
    CHECK(io::read_state_dict(path)["w"].numel() == 0);
  }
  SECTION("SETITEMS with a key and no value is an error, not a dropped key") {
    Pickle p;
    p.op('}').mark().str("a").integer(1).str("b").op('u');
    write_torch_zip(path, p.stop().bytes);
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "SETITEMS with a key and no value"});
  }
  SECTION("a flipped byte in a record fails its CRC-32 check") {
    write_torch_zip(path, dict_of(tensor(0, {12}, {1})), {{"0", twelve}});
    auto bytes = read_bytes(path);
    const auto at = bytes.find(twelve);
    REQUIRE(at != std::string::npos);
    bytes[at + 17] ^= 0x10;
    write_bytes(path, bytes);
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "data/0", "CRC-32", "damaged"});
    const auto program = dict_of(tensor(0, {12}, {1}));
    write_torch_zip(path, program, {{"0", twelve}});
    bytes = read_bytes(path);
    bytes[bytes.find(program) + program.size() - 3] ^= 0x01;
    write_bytes(path, bytes);
    expect_error([&] { io::read_state_dict(path); }, {"hostile.pt", "data.pkl", "CRC-32"});
  }
}

// ---------------------------------------------------------------- TorchScript export

namespace {

double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs() / (1 + b.abs())).max().item<double>();
}

}  // namespace

TEST_CASE("every backbone exports to TorchScript that runs without distill at other batch sizes, with its names",
          "[io][torchscript][slow]") {
  for (const auto& name : models::backbone_names()) {
    INFO(name);
    auto model = trained_looking(name);
    // 16x16 images (every network reduces them to 1x1): the check is of the graph. trace()'s own
    // check at other batch sizes is left out here: this test makes it, independently.
    auto scripted = io::trace(*model, [&](const torch::Tensor& x) { return model->forward(x); },
                              io::TraceOptions().example_shape({2, 3, 16, 16}).name(name).check_batch_sizes({}));
    // Saved and loaded by libtorch alone (no distill type is involved in the loaded module).
    std::stringstream bytes;
    scripted.save(bytes);
    auto loaded = torch::jit::load(bytes);
    loaded.eval();
    torch::NoGradGuard no_grad;
    for (int64_t batch : {1, 7}) {
      auto x = torch::randn({batch, 3, 16, 16});
      CHECK(relative_difference(loaded.forward({x}).toTensor(), model->forward(x)["logits"]) <= 1e-5);
    }
    const auto expected = io::state_dict(*model);
    const auto names = io::torchscript_state_dict(loaded);
    REQUIRE(names.size() == expected.size());
    bool same = true;
    for (const auto& item : expected) same = same && names.contains(item.key()) && torch::equal(names[item.key()], item.value());
    CHECK(same);
  }
}

TEST_CASE("a TorchScript export with taps returns the logits and every return pattern", "[io][torchscript]") {
  auto model = trained_looking("ResNet18");
  model->set_return_patterns({"blocks[1]", "blocks[3]"});
  auto scripted = io::trace(*model, [&](const torch::Tensor& x) { return model->forward(x); },
                            io::TraceOptions().example_shape({2, 3, 32, 32}).with_taps(true));
  torch::NoGradGuard no_grad;
  auto x = torch::randn({3, 3, 32, 32});
  auto got = scripted.forward({x}).toGenericDict();
  auto expected = model->forward(x);
  REQUIRE(got.size() == 3);
  for (const auto& [name, value] : expected) CHECK(relative_difference(got.at(name).toTensor(), value) <= 1e-5);
}

namespace {
/// Forwards that tracing records wrongly: a batch size read as a number, a branch on it.
struct SizeAsNumberImpl : distill::Backbone {
  SizeAsNumberImpl() { fc = register_module("fc", torch::nn::Linear(3 * 8 * 8, 4)); }
  std::string name() const override { return "SizeAsNumber"; }
  torch::Tensor forward_logits(const torch::Tensor& x) override { return call(fc, x.view({x.size(0), -1})); }
  torch::nn::Linear fc{nullptr};
};
struct BranchOnBatchImpl : distill::Backbone {
  BranchOnBatchImpl() { fc = register_module("fc", torch::nn::Linear(3, 4)); }
  std::string name() const override { return "BranchOnBatch"; }
  torch::Tensor forward_logits(const torch::Tensor& x) override {
    auto pooled = x.mean({2, 3});
    return x.size(0) > 1 ? call(fc, pooled) : call(fc, pooled) * 2;
  }
  torch::nn::Linear fc{nullptr};
};
struct BranchOnDataImpl : distill::Backbone {
  BranchOnDataImpl() { fc = register_module("fc", torch::nn::Linear(3, 4)); }
  std::string name() const override { return "BranchOnData"; }
  torch::Tensor forward_logits(const torch::Tensor& x) override {
    auto pooled = x.mean({2, 3});
    return x.mean().item<double>() > 0 ? call(fc, pooled) : call(fc, pooled) * 2;
  }
  torch::nn::Linear fc{nullptr};
};
}  // namespace

TEST_CASE("a model that tracing cannot record faithfully is refused with the reason", "[io][torchscript][errors]") {
  auto trace = [](distill::Backbone& model) {
    model.eval();
    io::trace(model, [&](const torch::Tensor& x) { return model.forward(x); },
              io::TraceOptions().example_shape({2, 3, 8, 8}).name(model.name()));
  };
  SizeAsNumberImpl size_as_number;
  expect_error([&] { trace(size_as_number); }, {"SizeAsNumber traced at batch 2 fails at batch 1", "view({x.size(0), -1})"});
  BranchOnBatchImpl branch;
  expect_error([&] { trace(branch); }, {"BranchOnBatch traced at batch 2 gives other outputs at batch 1", "branches on the data"});
  BranchOnDataImpl on_data;
  expect_error([&] { trace(on_data); }, {"BranchOnData traced at batch 2 gives other outputs", "branches on the data"});
  branch.train();
  expect_error([&] { io::trace(branch, [&](const torch::Tensor& x) { return branch.forward(x); }); }, {"training mode", "eval()"});
}

TEST_CASE("TorchScript exports load in Python with the same logits and names, and convert to ONNX", "[io][torchscript][python][slow]") {
  const auto folder = scratch_path("torchscript");
  std::filesystem::remove_all(folder);
  std::filesystem::create_directories(folder);
  // One network of each family (the C++ test above covers every registered name).
  const std::vector<std::string> names{"ConvNet", "ResNet18", "ResNet50_vd", "PPLCNet_x0_5", "MobileNetV3_small_x0_35",
                                       "MobileNetV3_large_x1_0"};
  for (const auto& name : names) {
    auto model = trained_looking(name);
    io::save_torchscript(io::trace(*model, [&](const torch::Tensor& x) { return model->forward(x); },
                                   io::TraceOptions().example_shape({2, 3, 32, 32}).name(name)),
                         folder + "/" + name + ".ts.pt", {{"distill/model.json", "{\"model\": \"" + name + "\"}"}});
    io::save_state_dict(*model, folder + "/" + name + ".state.pt");
    io::StateDict check;
    torch::NoGradGuard no_grad;
    for (int64_t batch : {1, 7}) {
      auto x = torch::randn({batch, 3, 32, 32});
      check.insert("input" + std::to_string(batch), x);
      check.insert("logits" + std::to_string(batch), model->forward(x)["logits"]);
    }
    io::write_state_dict(check, folder + "/" + name + ".io.pt");
  }
  const std::string command = std::string(DISTILL_TEST_PYTHON) + " " + DISTILL_TEST_SCRIPTS + "/check_torchscript.py " + folder +
                              " --onnx ResNet18 PPLCNet_x0_5";
  CHECK(std::system(command.c_str()) == 0);
  std::filesystem::remove_all(folder);  // some hundred MB
}

TEST_CASE("TorchScript files: what is one, damaged and foreign files are errors naming the file", "[io][torchscript][errors]") {
  auto model = trained_looking("ConvNet");
  const auto path = scratch_path("convnet.ts.pt");
  io::save_torchscript(io::trace(*model, [&](const torch::Tensor& x) { return model->forward(x); },
                                 io::TraceOptions().example_shape({1, 3, 16, 16})),
                       path, {{"distill/labels.txt", "0 zero\n"}});
  CHECK(io::is_torchscript(path));
  std::map<std::string, std::string> extra{{"distill/labels.txt", ""}, {"distill/absent.txt", ""}};
  auto loaded = io::load_torchscript(path, &extra);
  CHECK(extra["distill/labels.txt"] == "0 zero\n");
  CHECK(extra["distill/absent.txt"].empty());
  CHECK(io::torchscript_state_dict(loaded).size() == io::state_dict(*model).size());

  io::save_state_dict(*model, scratch_path("convnet.state.pt"));
  CHECK_FALSE(io::is_torchscript(scratch_path("convnet.state.pt")));
  expect_error([&] { io::load_torchscript(scratch_path("convnet.state.pt")); }, {"convnet.state.pt", "not a TorchScript export"});
  auto bytes = read_bytes(path);
  auto damaged = bytes;
  damaged[damaged.size() / 2] ^= 0x5A;
  write_bytes(scratch_path("damaged.ts.pt"), damaged);
  expect_error([&] { io::load_torchscript(scratch_path("damaged.ts.pt")); }, {"damaged.ts.pt"});
  write_bytes(scratch_path("truncated.ts.pt"), bytes.substr(0, bytes.size() / 2));
  expect_error([&] { io::load_torchscript(scratch_path("truncated.ts.pt")); }, {"truncated.ts.pt", "not a TorchScript export"});
  expect_error([&] { io::load_torchscript(scratch_path("no such file.pt")); }, {"no such file.pt"});
}
