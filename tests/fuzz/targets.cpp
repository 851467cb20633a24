// The fuzz targets (see targets.hpp). Every input goes through the public entry points a user
// or an attacker reaches: read_state_dict on a file, the recipe builders and the trainer's
// recipe reader, the JPEG decoder and the Fashion-MNIST reader.

#include "targets.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <torch/torch.h>

#include "distill/config.hpp"
#include "distill/data.hpp"
#include "distill/io.hpp"
#include "distill/train/recipe.hpp"
#include "synthetic.hpp"
#include "torch_zip.hpp"

namespace distill_fuzz {
namespace {

using json = nlohmann::json;

/// A scratch folder of this process (inputs become files there).
const std::string& scratch() {
  static const std::string dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("distill_fuzz." + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    // Small limits: a mutated size is refused quickly instead of building a large network.
    ::setenv("DISTILL_MAX_PARAMETERS", "20000000", 0);
    ::setenv("DISTILL_MAX_IMAGE_PIXELS", "4000000", 0);
    ::setenv("DISTILL_MAX_SIZE", "100000", 0);
    return d.string();
  }();
  return dir;
}

std::string write(const std::string& name, const std::string& bytes) {
  const auto path = scratch() + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  return path;
}

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

/// Runs `body`; a distill::Error is an expected outcome, anything else a finding.
template <class Body>
bool guarded(const char* target, const std::string& input, Body&& body) {
  try {
    body();
    if (std::getenv("DISTILL_FUZZ_VERBOSE")) std::cerr << "ok\n";
    return true;
  } catch (const distill::Error& e) {
    if (std::getenv("DISTILL_FUZZ_VERBOSE")) std::cerr << "error: " << e.what() << '\n';
    return false;
  } catch (const std::exception& e) {
    const auto saved = write(std::string("finding-") + target + ".bin", input);
    std::cerr << "\nFINDING in " << target << " at run " << current_run()
              << ": an exception other than distill::Error escaped: " << e.what() << "\n(input saved to " << saved << ")\n";
    std::abort();
  }
}

// ------------------------------------------------------------------ state dicts

const std::string& storage_record() {
  static const std::string record = distill_test::float_record(256);
  return record;
}

/// A small real state dict as torch.save bytes (write_state_dict, which Python reads too).
std::string small_state_dict_file() {
  torch::manual_seed(0);
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3)), torch::nn::BatchNorm2d(4),
                            torch::nn::Linear(4, 2));
  const auto path = scratch() + "/seed.pt";
  distill::io::save_state_dict(*net, path);
  return read(path);
}

std::vector<std::string> pickle_seeds() {
  using distill_test::Pickle;
  std::vector<std::string> seeds;
  Pickle dict;
  dict.op('}').mark().str("w").tensor("0", 12, 1, {2, 3}, {4, 1}).str("b").tensor("0", 12, 0, {12}, {1}).op('u').stop();
  seeds.push_back(dict.bytes);
  Pickle ordered;
  ordered.global("collections", "OrderedDict").op(')').op('R').op('q').op('\0').mark().str("x").tensor("0", 12, 0, {3, 4}, {1, 3});
  ordered.op('u').stop();
  seeds.push_back(ordered.bytes);
  // An OrderedDict with a state (BUILD) of nested containers and scalars, as Module.state_dict()
  // pickles its _metadata.
  Pickle state;
  state.global("collections", "OrderedDict").op(')').op('R').mark().str("w").tensor("1", 12, 0, {12}, {1}).op('u');
  state.op('}').mark().str("_metadata").op(']').op('q').op('\1').mark().integer(7).op('G');
  state.bytes += std::string("\x3f\xf0\0\0\0\0\0\0", 8);
  state.op('N').op('\x88').op('e').op('h').op('\1').op('\x86').op('u').op('b').stop();
  seeds.push_back(state.bytes);
  // The pickle program of a real state dict.
  const auto file = small_state_dict_file();
  caffe2::serialize::PyTorchStreamReader reader(scratch() + "/seed.pt");
  auto [data, size] = reader.getRecord("data.pkl");
  seeds.emplace_back(static_cast<const char*>(data.get()), size);
  return seeds;
}

bool run_pickle(const std::string& input) {
  return guarded("pickle", input, [&] {
    // The input is the pickle program; the records it may name ("0" .. "9") exist.
    const auto path = scratch() + "/pickle.pt";
    std::map<std::string, std::string> records;
    for (char key = '0'; key <= '9'; ++key) records[std::string(1, key)] = storage_record();
    distill_test::write_torch_zip(path, input, records);
    auto dict = distill::io::read_state_dict(path);
    for (const auto& item : dict) (void)item.value().sum().item<double>();  // every view is readable
  });
}

bool run_weights(const std::string& input) {
  return guarded("weights", input, [&] {
    const auto path = write("weights.pt", input);
    auto dict = distill::io::read_state_dict(path);
    for (const auto& item : dict) (void)item.value().sum().item<double>();
    torch::nn::Linear probe(4, 2);
    distill::io::load_state_dict(*probe, dict, distill::io::LoadOptions().strict(false), path);
  });
}

// ------------------------------------------------------------------ recipes

const std::string& list_file() {
  static const std::string path = write("list.txt", "a.jpg 0\nb.jpg 1\n");
  return path;
}

std::vector<std::string> recipe_seeds() {
  std::vector<std::string> seeds;
  auto synthetic = distill_test::synthetic_recipe(scratch(), scratch() + "/out", 1);
  for (auto phase : {"Train", "Eval"}) synthetic["DataLoader"][phase]["dataset"]["cls_label_path"] = list_file();
  seeds.push_back(synthetic.dump());
  auto afd = synthetic;
  afd["Arch"]["models"][0]["Teacher"]["return_patterns"] = {"stages[0]", "stages[1]"};
  afd["Arch"]["models"][1]["Student"]["return_patterns"] = {"stages[0]", "stages[1]"};
  afd["Loss"]["Train"] = json::parse(R"([{"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Student"]}},
      {"DistillationKLDivLoss": {"weight": 1.0, "temperature": 4, "model_name_pairs": [["Student", "Teacher"]]}},
      {"DistillationDISTLoss": {"weight": 1.0, "name": "loss_DIST", "beta": 1.0, "gamma": 2.0, "model_name_pairs": [["Student", "Teacher"]]}},
      {"DistillationRKDLoss": {"weight": 1.0, "key": "logits", "model_name_pairs": [["Student", "Teacher"]]}},
      {"DistillationSKDLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]]}},
      {"DistillationWSLLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]]}},
      {"DistillationDMLLoss": {"weight": 1.0, "act": "softmax", "model_name_pairs": [["Student", "Teacher"]]}}])");
  afd["Optimizer"] = json::parse(R"({"name": "AdamW", "weight_decay": 0.05, "lr": {"name": "Piecewise", "decay_epochs": [1, 2], "values": [0.1, 0.01, 0.001]}})");
  seeds.push_back(afd.dump());
  return seeds;
}

bool run_recipe(const std::string& input) {
  return guarded("recipe", input, [&] {
    std::istringstream in(input);
    auto recipe = distill::config::parse_json(in, "fuzz.json");
    if (!recipe.is_object()) distill::fail("fuzz.json: not an object");
    if (recipe.contains("Arch")) {
      distill::config::drop_pretrained(recipe["Arch"]);
      auto model = distill::config::build_model(recipe["Arch"]);
      if (recipe.contains("Loss") && recipe["Loss"].is_object() && recipe["Loss"].contains("Train")) {
        auto loss = distill::config::build_loss(recipe["Loss"]["Train"]);
        auto images = torch::randn({2, 3, 24, 24});
        auto outputs = distill::with_context("forward", [&] { return model->forward(images); });
        auto terms = loss->forward(outputs, torch::tensor({0, 1}));
        for (const auto& [name, value] : terms) (void)value.item<double>();
      }
    }
    distill::train::trainer_options(recipe);
  });
}

/// Structure-aware mutation: one value somewhere in the recipe becomes an interesting one.
bool mutate_recipe(std::string& input, std::mt19937_64& rng) {
  auto recipe = json::parse(input, nullptr, /*allow_exceptions=*/false);
  if (recipe.is_discarded()) return false;
  std::vector<json*> nodes{&recipe};
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i]->is_structured())
      for (auto& child : *nodes[i]) nodes.push_back(&child);
  json& node = *nodes[rng() % nodes.size()];
  static const std::vector<json> values = {
      -1, 0, 1, 2, 3, 7, 1000000, int64_t{1} << 31, int64_t{1} << 40, int64_t{1000000000000000000}, -1e300, 1e300, 0.5, -0.5,
      1e-300, "", "x", "Student", "Teacher", "logits", "stages[0]", "stages[9]", "features", "ConvNet", "ResNet18",
      "DKDLoss", "softmax", "sigmoid", "mean", "sum", "none", "L2", nullptr, true, false, json::array(), json::object(),
      json::array({1, 2}), json::array({"Student"}), json::array({json::array({"Student", "Student"})}),
      json::array({16, 0}), json::array({3, 8, 8}), json::object({{"weight", 1.0}})};
  switch (rng() % 5) {
    case 0:
    case 1: node = values[rng() % values.size()]; break;
    case 2:  // drop a key or an element
      if (node.is_object() && !node.empty()) {
        auto it = node.begin();
        std::advance(it, static_cast<long>(rng() % node.size()));
        node.erase(it);
      } else if (node.is_array() && !node.empty()) {
        node.erase(node.begin() + static_cast<long>(rng() % node.size()));
      }
      break;
    case 3:  // duplicate an element
      if (node.is_array() && !node.empty()) node.push_back(node[rng() % node.size()]);
      break;
    default:  // swap in another node's value
      node = json(*nodes[rng() % nodes.size()]);
  }
  input = recipe.dump();
  return true;
}

// ------------------------------------------------------------------ images and datasets

std::vector<std::string> jpeg_seeds() {
  torch::manual_seed(1);
  return {distill::data::encode_jpeg(torch::randint(0, 256, {8, 8, 3}, torch::kLong).to(torch::kUInt8), 90),
          distill::data::encode_jpeg(torch::full({17, 5, 3}, 200, torch::kUInt8), 50),
          distill::data::encode_jpeg(torch::randint(0, 256, {16, 24, 3}, torch::kLong).to(torch::kUInt8), 10)};
}

bool run_jpeg(const std::string& input) {
  return guarded("jpeg", input, [&] {
    auto image = distill::data::decode_jpeg(input, "fuzz.jpg");
    (void)image.sum().item<int64_t>();
  });
}

std::string idx(uint32_t magic, std::vector<uint32_t> dims, size_t data_bytes) {
  std::string out;
  dims.insert(dims.begin(), magic);
  for (uint32_t v : dims)
    for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((v >> s) & 0xFF);
  for (size_t i = 0; i < data_bytes; ++i) out += static_cast<char>(i % 10);
  return out;
}

/// An idx pair as one input: 4 bytes of the images file's length, the images file, the labels file.
std::string idx_pair(const std::string& images, const std::string& labels) {
  std::string out;
  for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((images.size() >> s) & 0xFF);
  return out + images + labels;
}

std::vector<std::string> idx_seeds() {
  return {idx_pair(idx(0x803, {2, 3, 3}, 18), idx(0x801, {2}, 2)), idx_pair(idx(0x803, {1, 28, 28}, 784), idx(0x801, {1}, 1))};
}

bool run_idx(const std::string& input) {
  return guarded("idx", input, [&] {
    size_t split = 0;
    for (size_t i = 0; i < 4 && i < input.size(); ++i) split = (split << 8) | static_cast<unsigned char>(input[i]);
    const std::string rest = input.size() > 4 ? input.substr(4) : "";
    split = std::min(split, rest.size());
    const auto dir = scratch() + "/idx";
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/train-images-idx3-ubyte.gz", std::ios::binary | std::ios::trunc) << rest.substr(0, split);
    std::ofstream(dir + "/train-labels-idx1-ubyte.gz", std::ios::binary | std::ios::trunc) << rest.substr(split);
    distill::data::FashionMNIST dataset(dir, true, {});
    distill::data::Rng rng(0);
    for (size_t i = 0; i < dataset.size(); ++i) (void)dataset.get(i, rng);
  });
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"pickle", "the pickle program of a torch.save file (io::read_state_dict)", run_pickle, pickle_seeds, nullptr},
      {"weights", "a whole torch.save file: zip, CRCs, records, pickle (io::read_state_dict)", run_weights,
       [] { return std::vector<std::string>{small_state_dict_file()}; }, nullptr},
      {"recipe", "a JSON recipe: config::build_model, build_loss, one forward, train::trainer_options", run_recipe,
       recipe_seeds, mutate_recipe},
      {"jpeg", "JPEG bytes (data::decode_jpeg)", run_jpeg, jpeg_seeds, nullptr},
      {"idx", "a Fashion-MNIST images/labels pair (data::FashionMNIST)", run_idx, idx_seeds, nullptr},
  };
  return all;
}

const Target& target(const std::string& name) {
  for (const auto& t : targets())
    if (t.name == name) return t;
  std::cerr << "unknown fuzz target '" << name << "'\n";
  std::exit(2);
}

void mutate_bytes(std::string& input, const std::vector<std::string>& corpus, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng() % n); };
  static const std::vector<uint64_t> interesting = {0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffff, 0xffffffff,
                                                    0x8000000000000000ull, ~0ull};
  switch (rng() % 8) {
    case 0:
      if (!input.empty()) input[pick(input.size())] ^= static_cast<char>(1u << (rng() % 8));
      break;
    case 1:
      if (!input.empty()) input[pick(input.size())] = static_cast<char>(rng());
      break;
    case 2: {  // an interesting little- or big-endian integer
      if (input.empty()) break;
      const uint64_t v = interesting[pick(interesting.size())];
      const size_t width = size_t{1} << (rng() % 4), at = pick(input.size());
      const bool big = rng() % 2;
      for (size_t i = 0; i < width && at + i < input.size(); ++i)
        input[at + i] = static_cast<char>((v >> (8 * (big ? width - 1 - i : i))) & 0xFF);
      break;
    }
    case 3:
      input.insert(pick(input.size() + 1), std::string(1 + pick(16), static_cast<char>(rng())));
      break;
    case 4:
      if (!input.empty()) {
        const size_t at = pick(input.size());
        input.erase(at, 1 + pick(std::min<size_t>(64, input.size() - at)));
      }
      break;
    case 5:
      if (!input.empty()) {  // copy a range elsewhere
        const size_t from = pick(input.size()), n = 1 + pick(std::min<size_t>(64, input.size() - from));
        input.insert(pick(input.size() + 1), input.substr(from, n));
      }
      break;
    case 6:
      input.resize(pick(input.size() + 1));  // truncate
      break;
    default: {  // splice with another corpus entry
      const auto& other = corpus[pick(corpus.size())];
      const size_t cut = pick(input.size() + 1), from = pick(other.size() + 1);
      input = input.substr(0, cut) + other.substr(from);
    }
  }
  if (input.size() > (1u << 20)) input.resize(1u << 20);
}

}  // namespace distill_fuzz
