// The `distill` command (see include/distill/train/cli.hpp): train, eval, infer and export a
// recipe, as the reference's tools/train.py, eval.py, infer.py and export_model.py do, with -c
// and repeated -o.

#include <algorithm>
#include <cctype>
#include <cmath>
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
#include "distill/io/torchscript.hpp"
#include "distill/train/guardrails.hpp"
#include "distill/train/launch.hpp"
#include "distill/train/teacher_cache.hpp"
#include "distill/train/recipe.hpp"
#include "distill/train/trainer.hpp"
#include "distill/train/yaml.hpp"

namespace {

using distill::json;

const char* kUsage = R"(usage: distill <command> -c RECIPE.json [-o Key.Path=value ...] [options]

commands:
  train    train the recipe (resume with -o Global.checkpoints=<output_dir>/latest.pt)
  eval     evaluate Arch.infer_model_name on DataLoader.Eval (weights: -o Global.pretrained_model=FILE)
  infer    print the top-k classes of image files (weights: -o Global.pretrained_model=FILE)
  export   write the infer_model_name model as TorchScript (runs without distill) or a state dict
  cache    run the frozen teachers once over K augmented views of every training image and
           store their top-k logits; train then with -o Global.teacher_cache=DIR
  check    build everything a training run would and try one batch; list every problem

common options:
  -c, --config FILE    the recipe (JSON, or PaddleClas's YAML as it is; the reference's vocabulary)
  -o KEY=VALUE         override one recipe value, e.g. -o Global.epochs=3; the sections on the
                       way must exist (a new last key must be one the recipe knows); list
                       elements as models[0] or models.0; values as JSON or as PaddleClas
                       writes them (True, None, ['a', 'b'])
  --threads N          intra-op threads of libtorch (default: libtorch's), per worker
  -h, --help           this text, or the command's with `distill <command> --help`

data parallel (train, eval, cache):
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
DataLoader.Eval. FILE is a checkpoint, a whole-model state dict, an exported student
(best_model_student.pt) or a TorchScript export.
)"},
    {"infer", R"(distill infer -c RECIPE.json -o Global.pretrained_model=FILE [IMAGE|FOLDER ...] [--format json|text] [-o ...]

Prints, for each JPEG image (the arguments, or Infer.infer_imgs; a folder stands for the
.jpg/.jpeg files under it, sorted), the Infer.PostProcess.topk most likely classes with their
softmax scores, named by Infer.PostProcess.class_id_map_file ("id name" lines) when given, as
the reference prints them: one JSON object per image and line,
  {"class_ids": [...], "scores": [...], "file_name": "...", "label_names": [...]}
(--format text: "file: id (name) score, ..."). Images go through Infer.transforms, in batches
of Infer.batch_size. An image that cannot be read is reported on stderr by name and the rest
go on; the exit status is then 1. FILE may also be a TorchScript export.
)"},
    {"cache", R"(distill cache -c RECIPE.json --out DIR [--views K] [--topk k] [--dtype float32|float16] [--shard-images N] [-o ...]

Runs the recipe's frozen models (Arch.freeze_params_list; in evaluation mode) once over K
augmented views (default 10) of every image of DataLoader.Train, each view drawn with the
recipe's training transforms and recorded by its augmentation seed, and stores each model's
top-k logits (default 10; 0 keeps every class, which makes training from the cache exact) in
DIR: shard_<s>.bin files of N images each (default 2048) and manifest.json (what the cache was
made from: transforms, teacher architectures and weight hashes, dataset and label hashes).
An interrupted run continues where it stopped (complete shards are kept). With --nproc each
worker makes every W-th shard. Then train without the teacher:
  distill train -c RECIPE.json -o Global.teacher_cache=DIR
A cache that does not match the recipe (transforms, teachers, weights, dataset, labels) is
refused, naming what differs. See docs/teacher-cache.md.
)"},
    {"check", R"(distill check -c RECIPE.json [-o ...] [--json]

Builds everything `distill train` would (models and their weights, taps, loss terms, optimiser
groups, data loaders), runs the teacher check (each frozen model's top-1 on up to
Global.teacher_check_batches evaluation batches; untrained below twice chance), and runs one
forward and backward on one training batch: no optimiser step, no checkpoint, no file written.
Prints each model (parameters, trainable or frozen, weights file and tensors loaded), the data
(samples, batches per epoch), the optimiser groups, each tap's shape and each loss term's value
with the number of trainable tensors it reaches. Problems: any recipe error (every section and
loss entry is read on its own, so all are listed), an untrained-looking teacher, a term that is
not finite, exactly 0, or reaches no trainable parameter, a non-finite gradient, a student whose
logits do not depend on the input. Exit status 0 when there is none, 1 otherwise.
--json prints the same as one JSON object {"ok", "problems", "warnings", "models", ...}.
)"},
    {"export", R"(distill export -c RECIPE.json -o Global.pretrained_model=FILE [--out FILE] [--format torchscript|state_dict] [--with-taps] [-o ...]

Writes the Arch.infer_model_name model (the student) alone.
  torchscript (default): traced at Global.image_shape (default [3, 224, 224]) into a TorchScript
    module that runs without distill: torch.jit.load(FILE) in Python, torch::jit::load(FILE)
    in C++ (examples/predict.cpp). Its state_dict() has the model's names; the archive holds
    Infer.transforms and the class names for a predictor. --with-taps: forward returns a dict
    of "logits" and the model's return_patterns. Default FILE: <Global.output_dir>/inference.pt.
  state_dict: the parameters and buffers, for model.load_state_dict(torch.load(FILE)).
    Default FILE: <Global.output_dir>/student.pt.
)"},
};

struct Args {
  std::string command, config, out, format;
  distill::train::CacheOptions cache;  // its defaults are CacheOptions's
  bool cache_options = false;          // whether any of them was given
  bool with_taps = false;
  bool json_output = false;  // check --json
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
    else if (arg == "--format") a.format = value();
    else if (arg == "--with-taps") a.with_taps = true;
    else if (arg == "--json") a.json_output = true;
    else if (arg == "--views") a.cache.views(integer(arg, value(), 1, 100000)), a.cache_options = true;
    else if (arg == "--topk") a.cache.topk(integer(arg, value(), 0, INT32_MAX)), a.cache_options = true;
    else if (arg == "--shard-images") a.cache.shard_images(integer(arg, value(), 1, INT32_MAX)), a.cache_options = true;
    else if (arg == "--dtype") {
      const auto dtype = value();
      if (dtype != "float32" && dtype != "float16") distill::fail("option --dtype: expected float32 or float16, got '", dtype, "'");
      a.cache.dtype(dtype == "float16" ? torch::kHalf : torch::kFloat), a.cache_options = true;
    }
    else if (arg == "--threads") a.threads = static_cast<int>(integer(arg, value(), 1, 1024));
    else if (!arg.empty() && arg[0] == '-') distill::fail("unknown option ", arg, " (see distill --help)");
    else if (a.command.empty()) a.command = arg;
    else a.positional.push_back(arg);
  }
  return a;
}

/// Where each value of a YAML recipe is (recipe path -> line), for error messages.
struct RecipeLines {
  std::string file;
  std::map<std::string, int> lines;
};
RecipeLines recipe_lines;

distill::json load_recipe(const Args& a) {
  if (a.config.empty()) distill::fail("distill ", a.command, ": -c RECIPE.json is required");
  recipe_lines.file = a.config;
  auto recipe = distill::train::load_recipe_file(a.config, &recipe_lines.lines);
  for (const auto& o : a.overrides) distill::config::apply_override(recipe, o);
  // eval, infer and export take every weight from Global.pretrained_model; the models' own
  // pretrained files (e.g. the teacher's) are not needed then.
  if (a.command != "train" && a.command != "cache" && a.command != "check" && recipe.contains("Arch"))
    distill::config::drop_pretrained(recipe["Arch"]);
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

/// What Infer says: the preprocessing, the batch size and the top-k with its class names.
struct InferSettings {
  distill::data::Pipeline pipeline;
  std::vector<std::string> images;  // Infer.infer_imgs, expanded
  std::string infer_imgs;
  int64_t batch_size = 1, topk = 5;
  std::map<int64_t, std::string> names;
};

bool is_jpeg_name(const std::filesystem::path& path) {
  auto extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(), [](unsigned char c) { return std::tolower(c); });
  return extension == ".jpg" || extension == ".jpeg";
}

/// A file stands for itself; a folder for the JPEG files under it (recursively, sorted), as
/// the reference's infer_imgs does (it also lists .png and .bmp, which distill cannot decode).
std::vector<std::string> expand_images(const std::string& path) {
  if (!std::filesystem::is_directory(path)) return {path};
  std::vector<std::string> images;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(path))
    if (entry.is_regular_file() && is_jpeg_name(entry.path())) images.push_back(entry.path().string());
  std::sort(images.begin(), images.end());
  if (images.empty()) distill::fail(path, ": no .jpg or .jpeg file in this folder");
  return images;
}

InferSettings infer_settings(const distill::json& recipe) {
  InferSettings s;
  distill::Reader infer(recipe.contains("Infer") ? recipe["Infer"] : distill::json::object(), "Infer");
  s.infer_imgs = infer.get<std::string>("infer_imgs", "");
  const distill::json* transforms = infer.use("transforms");
  s.pipeline = distill::data::make_pipeline(transforms && !transforms->is_null() ? *transforms : distill::json::array(),
                                            "Infer.transforms");
  s.batch_size = infer.get<int64_t>("batch_size", 1);
  if (s.batch_size < 1 || s.batch_size > 4096)
    distill::fail_at(infer.path_of("batch_size"), "expected an integer in [1, 4096], got ", s.batch_size);
  infer.use("PostProcess");
  if (infer.has("PostProcess")) {
    distill::Reader post(infer.raw("PostProcess"), "Infer.PostProcess");
    post.get<std::string>("name", "Topk");
    s.topk = post.get<int64_t>("topk", 5);
    if (s.topk < 1) distill::fail_at(post.path_of("topk"), "must be >= 1, got ", s.topk);
    if (post.has("class_id_map_file")) {
      const auto file = post.get<std::string>("class_id_map_file");
      std::ifstream in(file);
      if (!in) distill::fail(post.path_of("class_id_map_file"), ": cannot open ", file);
      int64_t id;
      std::string name;
      while (in >> id && std::getline(in >> std::ws, name)) s.names[id] = name;
    }
    post.done();
  }
  infer.done();
  return s;
}

/// One image's result as the reference prints it.
std::string describe_result(const std::string& file, const torch::Tensor& probs, const InferSettings& s, bool json_lines) {
  auto [scores, ids] = probs.topk(std::min<int64_t>(s.topk, probs.size(0)));
  nlohmann::ordered_json out{{"class_ids", nlohmann::ordered_json::array()}, {"scores", nlohmann::ordered_json::array()},
                             {"file_name", file}, {"label_names", nlohmann::ordered_json::array()}};
  std::string text = file + ':';
  for (int64_t i = 0; i < ids.size(0); ++i) {
    const int64_t id = ids[i].item<int64_t>();
    const double score = scores[i].item<double>();
    const auto name = s.names.count(id) ? s.names.at(id) : std::string();
    out["class_ids"].push_back(id);
    out["scores"].push_back(std::round(score * 1e5) / 1e5);  // the reference rounds to 5 decimals
    if (!s.names.empty()) out["label_names"].push_back(name);
    text += fmt::format(" {}{} {:.4f}{}", id, name.empty() ? "" : " (" + name + ")", score, i + 1 < ids.size(0) ? "," : "");
  }
  return json_lines ? out.dump() : text;
}

int run_infer(const Args& a, const distill::json& recipe) {
  namespace data = distill::data;
  const std::string format = a.format.empty() ? "json" : a.format;
  if (format != "json" && format != "text") distill::fail("option --format: expected json or text for infer, got '", format, "'");
  auto settings = infer_settings(recipe);
  std::vector<std::string> images;
  for (const auto& path : a.positional.empty() && !settings.infer_imgs.empty() ? std::vector<std::string>{settings.infer_imgs}
                                                                                : a.positional)
    for (auto& image : expand_images(path)) images.push_back(std::move(image));
  if (images.empty()) distill::fail("distill infer: no images (give files or folders, or -o Infer.infer_imgs=PATH)");
  auto model = trained_model(recipe, "infer");
  torch::NoGradGuard no_grad;
  data::Rng rng(0);
  size_t failed = 0;
  std::vector<std::pair<std::string, torch::Tensor>> batch;
  auto flush = [&] {
    if (batch.empty()) return;
    // Images of one size run together; others (no resize in Infer.transforms) one by one.
    bool same = true;
    for (const auto& item : batch) same = same && item.second.sizes() == batch.front().second.sizes();
    std::vector<torch::Tensor> probs;
    auto run = [&](const torch::Tensor& x) {
      return torch::softmax(model->infer_model()->forward(x)["logits"].to(torch::kFloat), 1);
    };
    if (same) {
      std::vector<torch::Tensor> inputs;
      for (const auto& item : batch) inputs.push_back(item.second);
      auto p = run(torch::stack(inputs));
      for (int64_t i = 0; i < p.size(0); ++i) probs.push_back(p[i]);
    } else {
      for (const auto& item : batch) probs.push_back(run(item.second.unsqueeze(0))[0]);
    }
    for (size_t i = 0; i < batch.size(); ++i) std::cout << describe_result(batch[i].first, probs[i], settings, format == "json") << '\n';
    std::cout.flush();
    batch.clear();
  };
  for (const auto& path : images) {
    try {
      batch.emplace_back(path, settings.pipeline(data::decode_jpeg(data::read_file(path), path), rng));
    } catch (const distill::Error& e) {
      ++failed;
      std::cerr << "distill infer: skipped " << e.what() << '\n';
      continue;
    }
    if (static_cast<int64_t>(batch.size()) == settings.batch_size) flush();
  }
  flush();
  if (failed > 0) {
    std::cerr << "distill infer: " << failed << " of " << images.size() << " images could not be read\n";
    return 1;
  }
  return 0;
}

/// A name usable in a TorchScript class name.
std::string identifier(std::string name) {
  for (auto& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name.empty() || std::isdigit(static_cast<unsigned char>(name[0])) ? "M" + name : name;
}

int run_export(const Args& a, const distill::json& recipe) {
  const std::string format = a.format.empty() ? "torchscript" : a.format;
  if (format != "torchscript" && format != "state_dict")
    distill::fail("option --format: expected torchscript or state_dict for export, got '", format, "'");
  if (a.with_taps && format != "torchscript") distill::fail("option --with-taps: only for --format torchscript");
  const auto global = recipe.value("Global", distill::json::object());
  const auto traced = distill::io::TraceOptions().example_shape();  // the default [C, H, W] is the tracer's
  std::vector<int64_t> shape(traced.begin() + 1, traced.end());
  if (global.contains("image_shape") && !global["image_shape"].is_null()) {
    const auto& v = global["image_shape"];
    if (!v.is_array() || v.size() != 3 || !std::all_of(v.begin(), v.end(), [](const distill::json& x) {
          return x.is_number_integer() && x.get<int64_t>() >= 1 && x.get<int64_t>() <= 65536;
        }))
      distill::fail_at("Global.image_shape", "expected [C, H, W] (positive integers), got ", v.dump());
    shape = v.get<std::vector<int64_t>>();
  }
  const auto settings = format == "torchscript" ? infer_settings(recipe) : InferSettings{};
  const auto preprocess = format == "torchscript" ? settings.pipeline.replay("Infer.transforms") : std::vector<std::string>{};
  auto model = trained_model(recipe, "export");
  std::string out = a.out;
  if (out.empty())
    out = distill::Reader(global, "Global").get<std::string>("output_dir", "./output") +
          (format == "torchscript" ? "/inference.pt" : "/student.pt");
  std::filesystem::create_directories(std::filesystem::path(out).parent_path().empty() ? "." : std::filesystem::path(out).parent_path());
  auto student = model->infer_model();
  if (format == "state_dict") {
    distill::io::save_state_dict(*student, out);
    std::cout << "exported " << model->infer_model_name() << " (" << student->parameters().size()
              << " parameter tensors) as a state dict to " << out << '\n';
    return 0;
  }
  auto scripted = distill::io::trace(*student, [&](const torch::Tensor& x) { return student->forward(x); },
                                     distill::io::TraceOptions()
                                         .example_shape({2, shape[0], shape[1], shape[2]})
                                         .with_taps(a.with_taps)
                                         .name(identifier(model->infer_model_name())));
  std::string preprocess_text, labels_text;
  for (const auto& line : preprocess) preprocess_text += line + '\n';
  for (const auto& [id, name] : settings.names) labels_text += std::to_string(id) + ' ' + name + '\n';
  const auto outputs = student->forward(torch::zeros({1, shape[0], shape[1], shape[2]})).keys();
  nlohmann::ordered_json info{{"format", "distill-torchscript"}, {"version", 1}, {"model", model->infer_model_name()},
                              {"architecture", student->name()}, {"input_shape", shape},
                              {"outputs", a.with_taps ? outputs : std::vector<std::string>{"logits"}}, {"topk", settings.topk}};
  distill::io::save_torchscript(scripted, out,
                                {{"distill/model.json", info.dump(2) + '\n'},
                                 {"distill/preprocess.txt", preprocess_text},
                                 {"distill/postprocess.txt", "topk " + std::to_string(settings.topk) + '\n'},
                                 {"distill/labels.txt", labels_text}});
  std::cout << "exported " << model->infer_model_name() << " (" << student->name() << ") as TorchScript to " << out
            << "; run it with torch.jit.load or examples/predict\n";
  return 0;
}

std::string yaml_line(std::string path);

/// distill check: the report on stdout (text or --json); exit status 1 when there are problems.
int run_check(const Args& a, const distill::json& recipe) {
  std::ostream silent(nullptr);
  auto report = distill::train::check_recipe(recipe, a.json_output ? silent : std::cout);
  // A problem that starts with a recipe path gets its line in a YAML recipe.
  for (auto& problem : report.problems) problem += yaml_line(problem.substr(0, problem.find(':')));
  if (a.json_output) std::cout << report.to_json().dump(1) << '\n';
  else std::cout << "distill check " << a.config << '\n' << report.text();
  return report.ok() ? 0 : 1;
}

int run_command(const Args& a) {
  if (a.command.empty() || (a.help && !kCommandHelp.count(a.command))) {
    std::cout << kUsage;
    return a.command.empty() && !a.help ? 2 : 0;
  }
  if (!kCommandHelp.count(a.command)) distill::fail("unknown command '", a.command, "' (train, eval, infer, export, cache, check)");
  if (a.help) {
    std::cout << kCommandHelp.at(a.command);
    return 0;
  }
  if (a.launch) {
    if (a.command != "train" && a.command != "eval" && a.command != "cache")
      distill::fail("distill ", a.command, ": --nproc, --nnodes, --node-rank, --master and --timeout are for train, eval and cache");
    if (std::getenv("RANK"))
      distill::fail("distill ", a.command, ": RANK is set, so this is already a worker; drop --nproc and the other launch options");
    if (a.launch_options.nproc() * a.launch_options.nnodes() > 1) {
      load_recipe(a);  // a bad recipe or override is reported once, not by every worker
      return distill::train::launch_workers(a.launch_options, a.worker_arguments);
    }
  }
  if (a.with_taps && a.command != "export") distill::fail("option --with-taps: only for distill export");
  if (a.json_output && a.command != "check") distill::fail("option --json: only for distill check");
  if (!a.format.empty() && a.command != "export" && a.command != "infer")
    distill::fail("option --format: only for distill export and distill infer");
  if (a.threads > 0) torch::set_num_threads(a.threads);
  // A worker joins its peers first, so that even a bad recipe is reported to them.
  const bool cache = a.command == "cache";
  if (!cache && a.cache_options) distill::fail("options --views, --topk, --dtype and --shard-images: only for distill cache");
  if (a.command == "train" || a.command == "eval" || cache) distill::train::ProcessGroup::world();
  const auto recipe = load_recipe(a);
  if (cache) {
    auto options = a.cache;
    distill::train::make_teacher_cache(recipe, options.out(a.out), std::cout);
    if (auto group = distill::train::ProcessGroup::world_if_joined()) group->finish();
    return 0;
  }
  if (a.command == "train") {
    distill::train::Trainer trainer(recipe);
    trainer.train();
    if (trainer.group()) trainer.group()->finish();
    return 0;
  }
  if (a.command == "check") return run_check(a, recipe);
  if (a.command == "eval") {
    weights(recipe, "eval");  // the Trainer loads them
    distill::train::Trainer trainer(recipe);
    // Teachers are compared with the student only when the weights file gave them weights (a
    // whole-model checkpoint); an exported student alone leaves them untrained.
    bool teachers_loaded = true;
    for (const auto& member : trainer.model().members())
      if (member.frozen && member.name != trainer.model().infer_model_name())
        teachers_loaded = teachers_loaded && !member.model->weights_file().empty();
    const auto result = trainer.evaluate(teachers_loaded);
    if (trainer.writer()) {
      std::cout << "evaluated " << trainer.model().infer_model_name() << " on " << result.samples << " images:";
      for (const auto& [name, value] : distill::train::Trainer::describe(result)) std::cout << ' ' << name << ' ' << fmt::format("{:.4f}", value);
      std::cout << '\n';
    }
    if (trainer.group()) trainer.group()->finish();
    return 0;
  }
  if (a.command == "infer") return run_infer(a, recipe);
  return run_export(a, recipe);
}

/// " (recipe.yaml line 12)" for an error about a recipe path of a YAML recipe (or the nearest
/// enclosing path there is: a missing key is reported at its parent).
std::string yaml_line(std::string path) {
  while (!path.empty()) {
    if (auto it = recipe_lines.lines.find(path); it != recipe_lines.lines.end())
      return " (" + recipe_lines.file + " line " + std::to_string(it->second) + ")";
    const auto cut = path.find_last_of(".[");
    path = cut == std::string::npos ? "" : path.substr(0, cut);
  }
  return "";
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
  train::reuse_freed_memory();
  try {
    return run_command(parse(argc, argv));
  } catch (const distill::Error& e) {
    return report(e.what() + yaml_line(e.context()));
  } catch (const c10::Error& e) {  // a check inside libtorch that distill did not make first: a bug to report
    return report(std::string("unexpected error inside libtorch (please report it): ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return report(std::string("unexpected error (please report it): ") + e.what());
  }
}

}  // namespace distill::cli
