// What the seven recipe programs share (see recipe_program.hpp): their command line, and the
// recipe JSON (examples/recipes/<name>.json) that supplies data, optimiser and schedule.

#include "recipe_program.hpp"

#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "distill/config/file.hpp"
#include "distill/train/launch.hpp"
#include "distill/train/trainer.hpp"
#include "methods.hpp"

namespace examples {
namespace {

struct Args {
  std::string data, teacher, output, device;
  int64_t epochs = 0, batch_size = 0, image_size = 224, classes = 1000, workers = -1, threads = 0;
  bool amp = true;
  std::vector<std::string> overrides;
};

void usage(const char* program, const char* summary) {
  std::cout << summary << "\n\nusage: " << program << R"( --data DIR [--teacher FILE] [options]

  --data DIR         ImageNet layout: DIR/train_list.txt, DIR/val_list.txt ("relative/path label"), images below DIR
  --teacher FILE     teacher weights: a PaddleClas .pdparams, or a state dict (torch.save; a
                     torchvision one for the ResNet34 teachers)
  --epochs N         override the recipe's epochs
  --batch-size N     override the training batch size (per process)
  --image-size N     train/eval crop size (default 224; the resize is scaled by 256/224)
  --classes N        number of classes (default 1000)
  --device cpu|gpu   default: the recipe's (gpu)
  --workers N        data loader threads
  --threads N        libtorch intra-op threads
  --no-amp           train in float32 (AMP needs CUDA)
  --output DIR       checkpoints and logs (default: the recipe's output_dir)
  --nproc N          data parallel: N worker processes on this machine (batch size per worker);
                     across machines start each with the torchrun environment (see the README)
  -o KEY=VALUE       any other recipe value, e.g. -o Global.save_interval=10
)";
}

/// An integer option in [lo, 2^31).
int64_t integer(const std::string& option, const std::string& text, int64_t lo) {
  try {
    size_t used = 0;
    const auto value = std::stoll(text, &used);
    if (used == text.size() && value >= lo && value <= INT32_MAX) return value;
  } catch (const std::exception&) {
  }
  distill::fail("option ", option, ": expected an integer >= ", lo, ", got '", text, "'");
}

Args parse(int argc, char** argv, const char* summary) {
  Args a;
  int64_t nproc = 1;
  std::vector<std::string> worker_arguments;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--nproc" && i + 1 < argc) {
      nproc = integer(arg, argv[++i], 1);
      continue;
    }
    worker_arguments.push_back(arg);
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) distill::fail("option ", arg, " needs a value");
      worker_arguments.push_back(argv[++i]);
      return argv[i];
    };
    if (arg == "-h" || arg == "--help") {
      usage(argv[0], summary);
      std::exit(0);
    } else if (arg == "--data") a.data = value();
    else if (arg == "--teacher") a.teacher = value();
    else if (arg == "--output") a.output = value();
    else if (arg == "--device") a.device = value();
    else if (arg == "--epochs") a.epochs = integer(arg, value(), 1);
    else if (arg == "--batch-size") a.batch_size = integer(arg, value(), 1);
    else if (arg == "--image-size") a.image_size = integer(arg, value(), 8);
    else if (arg == "--classes") a.classes = integer(arg, value(), 1);
    else if (arg == "--workers") a.workers = integer(arg, value(), 0);
    else if (arg == "--threads") a.threads = static_cast<int>(integer(arg, value(), 1));
    else if (arg == "--no-amp") a.amp = false;
    else if (arg == "-o") a.overrides.push_back(value());
    else distill::fail("unknown option ", arg, " (see --help)");
  }
  if (a.data.empty()) distill::fail("--data DIR is required (see --help)");
  if (nproc > 1) {
    if (std::getenv("RANK")) distill::fail("--nproc: RANK is set, so this is already a worker");
    std::exit(distill::train::launch_workers(distill::train::LaunchOptions().nproc(nproc), worker_arguments));
  }
  if (a.threads > 0) torch::set_num_threads(a.threads);
  return a;
}

/// The recipe `name` with the command line applied: data paths, sizes, epochs, device.
nlohmann::json recipe(const std::string& name, const Args& a) {
  auto r = distill::config::load_file(std::string(DISTILL_RECIPE_DIR) + "/" + name + ".json");
  const int64_t resize = static_cast<int64_t>(std::lround(a.image_size * 256.0 / 224.0));
  for (const char* phase : {"Train", "Eval"}) {
    auto& dataset = r["DataLoader"][phase]["dataset"];
    dataset["image_root"] = a.data;
    dataset["cls_label_path"] = a.data + (std::string(phase) == "Train" ? "/train_list.txt" : "/val_list.txt");
    for (auto& op : dataset["transform_ops"]) {
      for (const char* crop : {"RandCropImage", "CropImage"})
        if (op.contains(crop)) op[crop]["size"] = a.image_size;
      if (op.contains("ResizeImage")) op["ResizeImage"]["resize_short"] = resize;
    }
    if (a.workers >= 0) r["DataLoader"][phase]["loader"]["num_workers"] = a.workers;
  }
  if (a.batch_size > 0) r["DataLoader"]["Train"]["sampler"]["batch_size"] = a.batch_size;
  if (a.batch_size > 0) r["DataLoader"]["Eval"]["sampler"]["batch_size"] = a.batch_size;
  if (a.epochs > 0) r["Global"]["epochs"] = a.epochs;
  if (!a.device.empty()) r["Global"]["device"] = a.device;
  if (!a.output.empty()) r["Global"]["output_dir"] = a.output;
  if (!a.amp && r.contains("AMP")) r["AMP"]["use_amp"] = false;
  for (const auto& o : a.overrides) distill::config::apply_override(r, o);
  return r;
}

/// The teacher's weights file, or a warning that the teacher stays untrained (smoke tests).
std::string teacher_weights(const Args& a) {
  if (a.teacher.empty())
    std::cerr << "warning: no --teacher given; the teacher is untrained, which is only useful to test the pipeline\n";
  return a.teacher;
}

/// Trains a method on the recipe's data, optimiser and schedule.
int train(const nlohmann::json& recipe, const Method& method) {
  distill::train::Trainer trainer(recipe, method.model, method.loss);
  trainer.train();
  if (trainer.group()) trainer.group()->finish();
  return 0;
}

/// Runs `body`, turning a distill::Error into a message and exit code 1.
template <class Body>
int guarded(Body&& body) {
  try {
    return body();
  } catch (const distill::Error& e) {
    // A data-parallel worker tells the others why it stops
    if (auto group = distill::train::ProcessGroup::world_if_joined()) group->report_failure(e.what());
    std::cerr << "error: " << e.what() << '\n';
    return 1;
  }
}

}  // namespace

/// A recipe program: the command line, the recipe `name` with it applied, the method of
/// examples/methods.hpp, and training.
/// `frozen_teacher`: the method has a pretrained teacher (not DML's peers).
int run(int argc, char** argv, const char* name, const char* summary, bool frozen_teacher) {
  distill::train::reuse_freed_memory();
  return guarded([&] {
    const auto args = parse(argc, argv, summary);
    const Settings settings{args.image_size, args.classes, frozen_teacher ? teacher_weights(args) : ""};
    auto r = recipe(name, args);
    // An untrained teacher (warned about above) would fail the teacher check by design.
    if (frozen_teacher && settings.teacher.empty()) r["Global"]["teacher_check"] = false;
    return train(r, method(name, settings));
  });
}

}  // namespace examples
