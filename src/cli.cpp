// The `distill` command (see include/distill/train/cli.hpp): train, eval, infer and export a
// recipe, as the reference's tools/train.py, eval.py, infer.py and export_model.py do, with -c
// and repeated -o.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "distill/train/cli.hpp"

#include "distill/config.hpp"
#include "distill/data.hpp"
#include "distill/data/image_io.hpp"
#include "distill/train/launch.hpp"
#include "distill/train/recipe.hpp"
#include "distill/train/trainer.hpp"

namespace {

using distill::json;

const char* kUsage = R"(usage: distill <command> -c RECIPE.json [-o Key.Path=value ...] [options]

commands:
  train    train the recipe (resume with -o Global.checkpoints=<output_dir>/latest.pt)
  eval     evaluate Arch.infer_model_name on DataLoader.Eval (weights: -o Global.pretrained_model=FILE)
  infer    print the top-k classes of image files (weights: -o Global.pretrained_model=FILE)
  export   write the infer_model_name model alone as a state dict Python's torch.load reads

common options:
  -c, --config FILE    the recipe (JSON, the reference's vocabulary)
  -o KEY=VALUE         override one recipe value, e.g. -o Global.epochs=3; the key must exist
  --threads N          intra-op threads of libtorch (default: libtorch's), per worker
  -h, --help           this text, or the command's with `distill <command> --help`

data parallel (train, eval):
  --nproc N            start N workers on this machine (Gloo on CPU); the recipe's
                       batch_size is per worker
  --nnodes M           machines taking part (default 1); each runs the same command with
  --node-rank K        its index K in 0..M-1 and
  --master ADDR:PORT   the address of machine 0, where rank 0 hosts the rendezvous
  --timeout S          seconds a silent worker is waited for before the others stop (60)
  Workers started by torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set) join without
  these options.
)";

const std::map<std::string, const char*> kCommandHelp{
    {"train", R"(distill train -c RECIPE.json [-o ...]

Trains Arch with Loss.Train, Optimizer and DataLoader.Train for Global.epochs, evaluating on
DataLoader.Eval every Global.eval_interval epochs. Progress goes to stdout; Global.output_dir
receives latest.pt (every epoch), epoch_<k>.pt (every Global.save_interval epochs),
best_model.pt and best_model_student.pt, metrics.jsonl and training.svg.
Resume: -o Global.checkpoints=<output_dir>/latest.pt
)"},
    {"eval", R"(distill eval -c RECIPE.json -o Global.pretrained_model=FILE [-o ...]

Reports top-k accuracy (Metric.Eval topk) and the Loss.Eval terms of the evaluated model on
DataLoader.Eval. FILE is a checkpoint, a whole-model state dict or an exported student.
)"},
    {"infer", R"(distill infer -c RECIPE.json -o Global.pretrained_model=FILE [IMAGE ...] [-o ...]

Prints, for each JPEG image (the arguments, or Infer.infer_imgs: a file or a folder), the
Infer.PostProcess.topk most likely classes with their softmax scores, named by
Infer.PostProcess.class_id_map_file ("id name" lines) when given. Images go through
Infer.transforms.
)"},
    {"export", R"(distill export -c RECIPE.json -o Global.pretrained_model=FILE [--out FILE] [-o ...]

Writes the Arch.infer_model_name model (the student) alone as a state dict; in Python:
model.load_state_dict(torch.load(FILE)). Default: <Global.output_dir>/student.pt.
)"},
};

struct Args {
  std::string command, config, out;
  std::vector<std::string> overrides, positional;
  std::vector<std::string> worker_arguments;  // everything but the launch options
  int threads = 0;
  bool help = false;
  bool launch = false;
  distill::train::LaunchOptions launch_options;
};

bool is_launch_option(const std::string& arg) {
  return arg == "--nproc" || arg == "--nnodes" || arg == "--node-rank" || arg == "--master" || arg == "--timeout";
}

int64_t integer(const std::string& option, const std::string& text, int64_t lo = 0, int64_t hi = INT32_MAX) {
  try {
    size_t used = 0;
    const auto value = std::stoll(text, &used);
    if (used == text.size() && value >= lo && value <= hi) return value;
  } catch (const std::exception&) {
  }
  distill::fail("option ", option, ": expected an integer in [", lo, ", ", hi, "], got '", text, "'");
}

double seconds(const std::string& option, const std::string& text) {
  try {
    size_t used = 0;
    const auto value = std::stod(text, &used);
    if (used == text.size() && value > 0 && value < 1e7) return value;
  } catch (const std::exception&) {
  }
  distill::fail("option ", option, ": expected a positive number of seconds, got '", text, "'");
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) distill::fail("option ", arg, " needs a value");
      ++i;
      if (!is_launch_option(arg)) a.worker_arguments.push_back(argv[i]);
      return argv[i];
    };
    if (is_launch_option(arg)) {
      const auto v = value();
      a.launch = true;
      auto& l = a.launch_options;
      if (arg == "--nproc") l.nproc(integer(arg, v, 1, 4096));
      else if (arg == "--nnodes") l.nnodes(integer(arg, v, 1, 4096));
      else if (arg == "--node-rank") l.node_rank(integer(arg, v, 0, 4095));
      else if (arg == "--timeout") l.timeout(seconds(arg, v));
      else {
        const auto colon = v.rfind(':');
        if (colon == std::string::npos || colon == 0) distill::fail("option --master: expected ADDR:PORT, got '", v, "'");
        l.master_addr(v.substr(0, colon)).master_port(integer(arg, v.substr(colon + 1), 1, 65535));
      }
      continue;
    }
    a.worker_arguments.push_back(arg);
    if (arg == "-h" || arg == "--help") a.help = true;
    else if (arg == "-c" || arg == "--config") a.config = value();
    else if (arg == "-o" || arg == "--override") a.overrides.push_back(value());
    else if (arg == "--out") a.out = value();
    else if (arg == "--threads") a.threads = static_cast<int>(integer(arg, value(), 1, 1024));
    else if (!arg.empty() && arg[0] == '-') distill::fail("unknown option ", arg, " (see distill --help)");
    else if (a.command.empty()) a.command = arg;
    else a.positional.push_back(arg);
  }
  return a;
}

distill::json load_recipe(const Args& a) {
  if (a.config.empty()) distill::fail("distill ", a.command, ": -c RECIPE.json is required");
  auto recipe = distill::config::load_file(a.config);
  for (const auto& o : a.overrides) distill::config::apply_override(recipe, o);
  // eval, infer and export take every weight from Global.pretrained_model; the models' own
  // pretrained files (e.g. the teacher's) are not needed then.
  if (a.command != "train" && recipe.contains("Arch")) distill::config::drop_pretrained(recipe["Arch"]);
  return recipe;
}

/// Global.pretrained_model, which eval, infer and export need.
std::string weights(const distill::json& recipe, const char* command) {
  const auto global = recipe.value("Global", distill::json::object());
  if (!global.contains("pretrained_model") || !global["pretrained_model"].is_string())
    distill::fail("distill ", command, ": give the weights with -o Global.pretrained_model=FILE");
  return global["pretrained_model"].get<std::string>();
}

/// The recipe's model with Global.pretrained_model loaded.
std::shared_ptr<distill::DistillationModelImpl> trained_model(const distill::json& recipe, const char* command) {
  const auto path = weights(recipe, command);
  if (!recipe.is_object() || !recipe.contains("Arch")) distill::fail("distill ", command, ": the recipe has no Arch section");
  auto model = distill::config::build_model(recipe["Arch"]);
  distill::train::load_model_weights(*model, path);
  model->eval();
  return model;
}

int run_infer(const Args& a, const distill::json& recipe) {
  namespace data = distill::data;
  auto model = trained_model(recipe, "infer");
  distill::Reader infer(recipe.contains("Infer") ? recipe["Infer"] : distill::json::object(), "Infer");
  std::vector<std::string> images = a.positional;
  const auto configured = infer.get<std::string>("infer_imgs", "");
  if (images.empty() && !configured.empty()) {
    const auto& path = configured;
    if (std::filesystem::is_directory(path)) {
      for (const auto& entry : std::filesystem::directory_iterator(path))
        if (entry.is_regular_file()) images.push_back(entry.path().string());
      std::sort(images.begin(), images.end());
    } else {
      images.push_back(path);
    }
  }
  if (images.empty()) distill::fail("distill infer: no images (give files or -o Infer.infer_imgs=PATH)");
  const json* transforms = infer.use("transforms");
  const auto pipeline = data::make_pipeline(transforms && !transforms->is_null() ? *transforms : distill::json::array(),
                                            "Infer.transforms");
  int64_t topk = 5;
  std::map<int64_t, std::string> names;
  infer.get<int64_t>("batch_size", 1);
  infer.use("PostProcess");
  if (infer.has("PostProcess")) {
    distill::Reader post(infer.raw("PostProcess"), "Infer.PostProcess");
    post.get<std::string>("name", "Topk");
    topk = post.get<int64_t>("topk", 5);
    if (post.has("class_id_map_file")) {
      const auto file = post.get<std::string>("class_id_map_file");
      std::ifstream in(file);
      if (!in) distill::fail(post.path_of("class_id_map_file"), ": cannot open ", file);
      int64_t id;
      std::string name;
      while (in >> id && std::getline(in >> std::ws, name)) names[id] = name;
    }
    post.done();
  }
  infer.done();
  torch::NoGradGuard no_grad;
  data::Rng rng(0);
  for (const auto& path : images) {
    auto image = pipeline(data::decode_jpeg(data::read_file(path), path), rng);
    auto probs = torch::softmax(model->infer_model()->forward(image.unsqueeze(0))["logits"].to(torch::kFloat), 1)[0];
    auto [scores, ids] = probs.topk(std::min<int64_t>(topk, probs.size(0)));
    std::cout << path << ':';
    for (int64_t i = 0; i < ids.size(0); ++i) {
      const int64_t id = ids[i].item<int64_t>();
      std::cout << ' ' << id << (names.count(id) ? " (" + names[id] + ")" : "") << ' ' << fmt::format("{:.4f}", scores[i].item<double>())
                << (i + 1 < ids.size(0) ? "," : "");
    }
    std::cout << '\n';
  }
  return 0;
}

int run_command(const Args& a) {
  if (a.command.empty() || (a.help && !kCommandHelp.count(a.command))) {
    std::cout << kUsage;
    return a.command.empty() && !a.help ? 2 : 0;
  }
  if (!kCommandHelp.count(a.command)) distill::fail("unknown command '", a.command, "' (train, eval, infer, export)");
  if (a.help) {
    std::cout << kCommandHelp.at(a.command);
    return 0;
  }
  if (a.launch) {
    if (a.command != "train" && a.command != "eval")
      distill::fail("distill ", a.command, ": --nproc, --nnodes, --node-rank, --master and --timeout are for train and eval");
    if (std::getenv("RANK"))
      distill::fail("distill ", a.command, ": RANK is set, so this is already a worker; drop --nproc and the other launch options");
    if (a.launch_options.nproc() * a.launch_options.nnodes() > 1) {
      load_recipe(a);  // a bad recipe or override is reported once, not by every worker
      return distill::train::launch_workers(a.launch_options, a.worker_arguments);
    }
  }
  if (a.threads > 0) torch::set_num_threads(a.threads);
  // A worker joins its peers first, so that even a bad recipe is reported to them.
  if (a.command == "train" || a.command == "eval") distill::train::ProcessGroup::world();
  const auto recipe = load_recipe(a);
  if (a.command == "train") {
    distill::train::Trainer trainer(recipe);
    trainer.train();
    if (trainer.group()) trainer.group()->finish();
    return 0;
  }
  if (a.command == "eval") {
    weights(recipe, "eval");  // the Trainer loads them
    distill::train::Trainer trainer(recipe);
    const auto result = trainer.evaluate();
    if (trainer.writer()) {
      std::cout << "evaluated " << trainer.model().infer_model_name() << " on " << result.samples << " images:";
      for (const auto& [name, value] : distill::train::Trainer::describe(result)) std::cout << ' ' << name << ' ' << fmt::format("{:.4f}", value);
      std::cout << '\n';
    }
    if (trainer.group()) trainer.group()->finish();
    return 0;
  }
  if (a.command == "infer") return run_infer(a, recipe);
  auto model = trained_model(recipe, "export");
  std::string out = a.out;
  if (out.empty()) {
    const auto global = distill::Reader(recipe.value("Global", distill::json::object()), "Global");
    out = global.get<std::string>("output_dir", "./output") + "/student.pt";
  }
  std::filesystem::create_directories(std::filesystem::path(out).parent_path().empty() ? "." : std::filesystem::path(out).parent_path());
  distill::io::save_state_dict(*model->infer_model(), out);
  std::cout << "exported " << model->infer_model_name() << " (" << model->infer_model()->parameters().size()
            << " parameter tensors) to " << out << '\n';
  return 0;
}

// A worker of a data-parallel run tells the others why it stops, and says which rank it is.
int report(const std::string& what) {
  std::string message = what;
  if (auto group = distill::train::ProcessGroup::world_if_joined()) {
    group->report_failure(what);
    if (message.rfind(group->where(), 0) != 0) message = group->where() + ": " + message;
  }
  std::cerr << "distill: " << message << '\n';
  return 1;
}

}  // namespace

namespace distill::cli {

int main(int argc, char** argv) {
  try {
    return run_command(parse(argc, argv));
  } catch (const distill::Error& e) {
    return report(e.what());
  } catch (const c10::Error& e) {  // a check inside libtorch that distill did not make first: a bug to report
    return report(std::string("unexpected error inside libtorch (please report it): ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return report(std::string("unexpected error (please report it): ") + e.what());
  }
}

}  // namespace distill::cli
