// The main job: distillation on the Fashion-MNIST that Debian ships, all 60000 training images.
//
// 1. The teacher (examples/recipes/fashion_mnist/teacher.json) is trained once and reused: the
//    demo takes it from --teacher DIR (default output/fashion_mnist/teacher, where
//    `distill train -c examples/recipes/fashion_mnist/teacher.json` writes it) when DIR holds a
//    finished training, and trains it there itself otherwise.
// 2. Its logits on K views of every training image go into a teacher cache (docs/teacher-cache.md)
//    kept next to it (DIR/cache), also made once; KD, DKD and DIST train from it and never run
//    the teacher.
// 3. For each seed, a small ConvNet student is trained alone (the baseline) and with each method
//    (default: KD, DKD, DIST and DML; --methods all adds MGD, NKD, CTKD, KD with logit
//    standardisation, a two-teacher ensemble, FitNets, AT, OFD, ReviewKD and CRD), from the
//    recipes in examples/recipes/fashion_mnist/. The runs go --jobs at a time, each in a process
//    of its own (this program again, with --train) with --threads intra-op threads: small
//    convolutions use two single-threaded processes better than one process with two threads,
//    and separate processes keep every run deterministic for its seed.
// 4. The table of test top-1 (mean +- std over the seeds) and times goes to the terminal and,
//    with the chart and the raw numbers, to <report>/results.md, results.svg and results.json.
//
//   fashion_mnist_demo [--seeds 0] [--epochs 5] [--methods baseline,kd,dkd,dist,dml | all]
//                      [--jobs 2] [--threads 1] [--teacher output/fashion_mnist/teacher]
//                      [--report DIR] [--output output/fashion_mnist_demo] ...   (--help lists all)

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "distill/config/file.hpp"
#include "distill/train/progress.hpp"
#include "distill/train/teacher_cache.hpp"
#include "distill/train/trainer.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

struct Options {
  std::vector<int64_t> seeds{0};
  int64_t epochs = 5, train_limit = 0, test_limit = 0, teacher_epochs = 0, cache_views = 2;
  int64_t jobs = 2, threads = 1, workers = 1;
  std::vector<std::string> methods{"baseline", "kd", "dkd", "dist", "dml"};
  std::string teacher = "output/fashion_mnist/teacher", output = "output/fashion_mnist_demo", report;
  bool teacher_check = true;
  std::string command_line;  // as given, for the report
};

/// Every method the demo has a recipe for (--methods all).
const std::vector<std::string> all_methods{"baseline", "kd",     "dkd", "dist", "dml",      "mgd", "nkd",
                                           "ctkd",     "kd_std", "multi_teacher", "fitnet", "at", "ofd", "reviewkd", "crd"};
/// The methods that learn from the teacher cache, by the names results.md gives them: logit
/// losses against the frozen teacher (the cache holds every logit, so NKD and CTKD may too).
const std::map<std::string, std::string> cached_methods{{"kd", "KD"},   {"dkd", "DKD"},   {"dist", "DIST"},
                                                        {"nkd", "NKD"}, {"ctkd", "CTKD"}, {"kd_std", "KD on z-scores"}};
bool cached(const std::string& method) { return cached_methods.count(method) > 0; }

/// A run's rough cost in student trainings, so that the runs start longest first: DML trains
/// two students; the methods with the teacher online run it as well.
int cost(const std::string& method, const Options& o) {
  if (method == "dml") return 2;
  if (method == "baseline" || (cached(method) && o.cache_views > 0)) return 1;
  return 3;
}

const char* kUsage =
    "usage: fashion_mnist_demo [options]\n"
    "  --seeds 0,1,2          seeds of the student runs (default 0)\n"
    "  --epochs N             student epochs (default 5)\n"
    "  --methods LIST | all   default baseline,kd,dkd,dist,dml\n"
    "  --jobs J               student runs at a time, one process each (default 2)\n"
    "  --threads N            intra-op threads per run (default 1; the teacher uses jobs x threads)\n"
    "  --teacher DIR          the teacher's training folder: reused when it holds a finished\n"
    "                         training, trained there otherwise (default output/fashion_mnist/teacher)\n"
    "  --teacher-epochs N     when the teacher is trained here: its epochs (default teacher.json's)\n"
    "  --cache-views K        views per image in the teacher cache (default 2; 0: every method runs the teacher)\n"
    "  --train-limit N        first N training images only (default 0: all 60000)\n"
    "  --test-limit N         first N test images only (default 0: all 10000)\n"
    "  --workers N            loader threads per run (default 1)\n"
    "  --output DIR           the runs' folders (default output/fashion_mnist_demo)\n"
    "  --report DIR           where results.md, results.json and results.svg go (default: --output)\n"
    "  --no-teacher-check     skip the teacher check (smoke runs with a barely trained teacher)\n";

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');)
    if (!part.empty()) parts.push_back(part);
  return parts;
}

int64_t number(const std::string& option, const std::string& text) {
  try {
    size_t used = 0;
    const int64_t value = std::stoll(text, &used);
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  distill::fail("option ", option, ": expected a whole number, got '", text, "'");
}

Options parse(int argc, char** argv) {
  Options o;
  o.command_line = "build/examples/fashion_mnist_demo";
  for (int i = 1; i < argc; ++i) o.command_line += std::string(" ") + argv[i];
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) distill::fail("option ", arg, " needs a value");
      return argv[++i];
    };
    if (arg == "--seeds") {
      o.seeds.clear();
      for (const auto& s : split(value())) o.seeds.push_back(number(arg, s));
    } else if (arg == "--epochs") o.epochs = number(arg, value());
    else if (arg == "--train-limit") o.train_limit = number(arg, value());
    else if (arg == "--test-limit") o.test_limit = number(arg, value());
    else if (arg == "--teacher-epochs") o.teacher_epochs = number(arg, value());
    else if (arg == "--jobs") o.jobs = number(arg, value());
    else if (arg == "--threads") o.threads = number(arg, value());
    else if (arg == "--workers") o.workers = number(arg, value());
    else if (arg == "--cache-views") o.cache_views = number(arg, value());
    else if (arg == "--methods") {
      o.methods = split(value());
      if (o.methods == std::vector<std::string>{"all"}) o.methods = all_methods;
    } else if (arg == "--teacher") o.teacher = value();
    else if (arg == "--output") o.output = value();
    else if (arg == "--report") o.report = value();
    else if (arg == "--no-teacher-check") o.teacher_check = false;
    else if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else distill::fail("unknown option ", arg, " (see --help)");
  }
  if (o.seeds.empty() || o.methods.empty()) distill::fail("need at least one seed and one method");
  if (o.epochs < 1 || o.jobs < 1 || o.threads < 1 || o.workers < 0 || o.cache_views < 0 || o.teacher_epochs < 0 ||
      o.train_limit < 0 || o.test_limit < 0)
    distill::fail("need --epochs, --jobs and --threads >= 1 and the other numbers >= 0");
  for (const auto& m : o.methods)
    if (std::find(all_methods.begin(), all_methods.end(), m) == all_methods.end())
      distill::fail("unknown method '", m, "'; the demo has ", fmt::format("{}", fmt::join(all_methods, ", ")), " (or all)");
  if (o.report.empty()) o.report = o.output;
  return o;
}

/// A recipe of examples/recipes/fashion_mnist with the demo's data and loader settings.
nlohmann::json demo_recipe(const std::string& name, const Options& o, const std::string& dir) {
  auto recipe = distill::config::load_file(std::string(DISTILL_RECIPE_DIR) + "/fashion_mnist/" + name + ".json");
  auto set = [&](const std::string& assignment) { distill::config::apply_override(recipe, assignment); };
  set("Global.output_dir=\"" + dir + "\"");
  set("Global.print_batch_step=100");
  set("DataLoader.Train.dataset.limit=" + std::to_string(o.train_limit));
  set("DataLoader.Eval.dataset.limit=" + std::to_string(o.test_limit));
  set("DataLoader.Train.loader.num_workers=" + std::to_string(o.workers));
  set("DataLoader.Eval.loader.num_workers=" + std::to_string(o.workers));
  if (!o.teacher_check) set("Global.teacher_check=false");
  return recipe;
}

/// `epochs` epochs with one evaluation and one checkpoint, at the end: the weights kept are the
/// last epoch's, not picked on the test set.
void train_for(nlohmann::json& recipe, int64_t epochs) {
  for (const char* key : {"epochs", "eval_interval", "save_interval"})
    distill::config::apply_override(recipe, std::string("Global.") + key + "=" + std::to_string(epochs));
}

/// A student recipe: the demo's epochs and seed, evaluated once at the end, the teacher(s)
/// taken from the teacher folder.
nlohmann::json student_recipe(const std::string& method, int64_t seed, const Options& o, const std::string& dir) {
  auto recipe = demo_recipe(method, o, dir);
  auto set = [&](const std::string& assignment) { distill::config::apply_override(recipe, assignment); };
  set("Global.seed=" + std::to_string(seed));
  train_for(recipe, o.epochs);
  auto& models = recipe["Arch"]["models"];
  for (auto& entry : models)
    for (auto& [name, model] : entry.items()) {
      if (name == "Teacher" && model.contains("pretrained")) model["pretrained"] = o.teacher + "/best_model_student.pt";
      if (name == "Teacher2") model["pretrained"] = o.output + "/teacher2/best_model_student.pt";
    }
  return recipe;
}

/// The "summary" record a finished training leaves in DIR/metrics.jsonl (null if none).
nlohmann::json finished_training(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  nlohmann::json summary;
  for (std::string line; std::getline(in, line);) {
    auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_object() && record.value("type", "") == "summary") summary = record;
  }
  if (!fs::exists(dir + "/best_model_student.pt")) return nullptr;
  return summary;
}

struct Run {
  std::string method;
  int64_t seed = 0;
  std::string dir;
  double top1 = NAN, seconds = NAN;
};

/// Trains `recipe_name` in this process (the teacher, the second teacher) unless `dir` holds a
/// finished training already; returns its test top-1 (of the weights kept) and training time.
Run train_here(const std::string& recipe_name, const std::string& dir, const Options& o, bool& trained) {
  Run run{recipe_name, 0, dir};
  auto summary = finished_training(dir);
  trained = summary.is_null();
  if (trained) {
    auto recipe = demo_recipe(recipe_name, o, dir);
    train_for(recipe, o.teacher_epochs > 0 ? o.teacher_epochs : recipe["Global"]["epochs"].get<int64_t>());
    // An unfinished training is started again; a folder that holds something else is left alone.
    if (fs::exists(dir) && !fs::is_empty(dir) && !fs::exists(dir + "/metrics.jsonl"))
      distill::fail(dir, " holds files but no training (no metrics.jsonl); choose another folder for the ", recipe_name);
    fs::remove_all(dir);
    std::cout << "\n== " << recipe_name << ": trained once into " << dir << " (later runs reuse it)\n" << std::flush;
    distill::train::Trainer(recipe).train();
    summary = finished_training(dir);
    if (summary.is_null()) distill::fail(recipe_name, ": the training in ", dir, " left no summary");
  } else {
    std::cout << "\n== " << recipe_name << ": reusing the finished training in " << dir << " (remove it to train again)\n";
  }
  run.top1 = summary.value("best_top1", NAN);
  run.seconds = summary.value("seconds", NAN);
  return run;
}

/// Student runs, `jobs` at a time, each a process of its own running this program with
/// --train; its output goes to <run dir>/train.log.
class Runner {
 public:
  explicit Runner(const Options& o) : o_(o) {}

  void add(Run run) { queue_.push_back(std::move(run)); }

  std::vector<Run> run_all() {
    std::stable_sort(queue_.begin(), queue_.end(),
                     [&](const Run& a, const Run& b) { return cost(a.method, o_) > cost(b.method, o_); });
    const size_t total = queue_.size();
    std::vector<Run> done;
    std::map<pid_t, std::pair<Run, Clock::time_point>> running;
    std::string failed;
    while (!queue_.empty() || !running.empty()) {
      while (failed.empty() && !queue_.empty() && running.size() < static_cast<size_t>(o_.jobs)) {
        Run run = queue_.front();
        queue_.pop_front();
        running.emplace(start(run), std::make_pair(run, Clock::now()));
      }
      if (running.empty()) break;
      int status = 0;
      const pid_t pid = waitpid(-1, &status, 0);
      if (pid < 0) distill::fail("waiting for a training process: ", std::strerror(errno));
      auto it = running.find(pid);
      if (it == running.end()) continue;
      auto [run, started] = it->second;
      running.erase(it);
      const double wall = seconds_since(started);
      const auto summary = finished_training(run.dir);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || summary.is_null()) {
        failed += fmt::format("{} (seed {}) failed; its output: {}/train.log\n", run.method, run.seed, run.dir);
        continue;
      }
      run.top1 = summary.value("last_top1", NAN);
      run.seconds = wall;
      done.push_back(run);
      std::cout << fmt::format("[{}/{}] {:<14} seed {}  top-1 {:.2f} %  {:.0f} s\n", done.size(), total, run.method, run.seed,
                               100 * run.top1, run.seconds)
                << std::flush;
    }
    if (!failed.empty()) distill::fail(failed, "(the runs that finished are in ", o_.output, ")");
    return done;
  }

 private:
  pid_t start(const Run& run) {
    const std::string recipe = run.dir + "/recipe.json", log = run.dir + "/train.log";
    std::vector<std::string> args{"/proc/self/exe", "--train", recipe, "--threads", std::to_string(o_.threads)};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&files, 1, 2);
    pid_t pid = 0;
    const int error = posix_spawn(&pid, argv[0], &files, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&files);
    if (error != 0) distill::fail("could not start a training process for ", run.dir, ": ", std::strerror(error));
    return pid;
  }

  const Options& o_;
  std::deque<Run> queue_;
};

struct Summary {
  double mean = NAN, spread = 0, seconds = NAN;
  std::vector<double> top1;
};

Summary summarise(const std::vector<Run>& runs) {
  Summary s;
  if (runs.empty()) return s;
  s.mean = s.seconds = 0;
  for (const auto& r : runs) {
    s.top1.push_back(r.top1);
    s.mean += r.top1 / runs.size();
    s.seconds += r.seconds / runs.size();
  }
  if (runs.size() > 1) {
    double var = 0;
    for (const auto& r : runs) var += (r.top1 - s.mean) * (r.top1 - s.mean) / (runs.size() - 1);
    s.spread = std::sqrt(var);
  }
  return s;
}

using Rows = std::vector<std::pair<std::string, Summary>>;

void write_chart(const std::string& path, const Rows& rows, size_t seeds) {
  double lo = 1, hi = 0;
  for (const auto& [name, s] : rows) lo = std::min(lo, s.mean - s.spread), hi = std::max(hi, s.mean + s.spread);
  lo = std::floor(lo * 100 - 1) / 100, hi = std::ceil(hi * 100 + 0.5) / 100;
  const int width = 120 + 90 * static_cast<int>(rows.size()), height = 320, top = 40, bottom = 260;
  std::ofstream svg(path);
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
      << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='" << width / 2 << "' y='20' text-anchor='middle' font-size='14'>Fashion-MNIST test top-1 (%), mean"
      << (seeds > 1 ? " +- std over " + std::to_string(seeds) + " seeds" : "") << "</text>\n";
  auto y = [&](double v) { return bottom - (v - lo) / (hi - lo) * (bottom - top); };
  for (int t = 0; t <= 4; ++t) {
    const double v = lo + (hi - lo) * t / 4;
    svg << "<line x1='70' x2='" << width - 20 << "' y1='" << y(v) << "' y2='" << y(v) << "' stroke='#ddd'/>"
        << "<text x='64' y='" << y(v) + 4 << "' text-anchor='end'>" << std::fixed << std::setprecision(1) << v * 100
        << "</text>\n";
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& [name, s] = rows[i];
    const double x = 90 + 90.0 * i;
    const char* colour = name == "teacher" || name == "teacher2" ? "#999" : name == "baseline" ? "#d62728" : "#1f77b4";
    svg << "<rect x='" << x << "' y='" << y(s.mean) << "' width='50' height='" << bottom - y(s.mean) << "' fill='" << colour
        << "'/>\n";
    if (s.spread > 0)
      svg << "<line x1='" << x + 25 << "' x2='" << x + 25 << "' y1='" << y(s.mean - s.spread) << "' y2='"
          << y(s.mean + s.spread) << "' stroke='black' stroke-width='2'/>\n";
    svg << "<text x='" << x + 25 << "' y='" << bottom + 16 << "' text-anchor='middle'>" << name << "</text>\n"
        << "<text x='" << x + 25 << "' y='" << y(s.mean) - 6 << "' text-anchor='middle'>" << std::setprecision(2)
        << s.mean * 100 << "</text>\n";
  }
  svg << "</svg>\n";
}

/// A short description of a ConvNet entry of a recipe ("ConvNet 16/32/64, 2 units per stage").
std::string describe_model(const nlohmann::json& recipe, const std::string& name) {
  for (const auto& entry : recipe["Arch"]["models"])
    if (entry.contains(name)) {
      const auto& m = entry[name];
      std::vector<int64_t> widths = m.value("widths", std::vector<int64_t>{});
      return fmt::format("{} {}, {} unit(s) per stage", m.value("name", "?"), fmt::join(widths, "/"), m.value("depth", 1));
    }
  return "?";
}

std::string machine() {
  std::ifstream in("/proc/cpuinfo");
  std::string model = "unknown CPU";
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  return fmt::format("{} x {}", std::thread::hardware_concurrency(), model);
}

/// results.md's line on the teacher cache: which of the run's methods learnt from it.
std::string cache_line(const Options& o) {
  std::vector<std::string> names;
  for (const auto& method : o.methods)
    if (cached(method)) names.push_back(cached_methods.at(method));
  if (names.empty() || o.cache_views == 0) return "";
  std::string list = names.back();
  if (names.size() > 1) list = fmt::format("{} and {}", fmt::join(names.begin(), names.end() - 1, ", "), names.back());
  return fmt::format("- Teacher cache: {} learn{} from the teacher's stored logits on {} views of every training\n  image "
                     "(docs/teacher-cache.md), made once next to the teacher; {} never run{} the teacher.\n",
                     list, names.size() > 1 ? "" : "s", o.cache_views, names.size() > 1 ? "they" : "it",
                     names.size() > 1 ? "" : "s");
}

/// docs/results.md's content: everything in it comes from this run's options and numbers.
void write_markdown(const std::string& path, const Options& o, const Rows& rows, const nlohmann::json& results) {
  const auto teacher_recipe = demo_recipe("teacher", o, o.teacher), student = demo_recipe("baseline", o, "");
  const auto& m = results["methods"];
  const double baseline = m.contains("baseline") ? m["baseline"]["mean"].get<double>() : NAN;
  const double baseline_std = m.contains("baseline") ? m["baseline"]["std"].get<double>() : NAN;
  const double teacher = m["teacher"]["mean"].get<double>();
  std::ofstream md(path);
  md << "# Results: distillation on Fashion-MNIST\n\n"
     << "Written by the main job (`examples/fashion_mnist_demo`); regenerate this file, `results.json` and\n"
     << "`results.svg` with:\n\n```sh\n"
     << "tools/deps.sh && cmake -S . -B build -G Ninja && cmake --build build -j2 --target fashion_mnist_demo\n"
     << o.command_line << "\n```\n\n"
     << "## Setting\n\n"
     << "- Data: Fashion-MNIST from Debian's `dataset-fashion-mnist`, "
     << (o.train_limit > 0 ? fmt::format("the first {} training images", o.train_limit) : std::string("all 60000 training images"))
     << " (random horizontal flips), evaluation on "
     << (o.test_limit > 0 ? fmt::format("the first {} test images", o.test_limit) : std::string("all 10000 test images")) << ".\n"
     << "- Teacher: " << describe_model(teacher_recipe, "Teacher") << ", "
     << teacher_recipe["Global"]["epochs"].get<int64_t>() << " epochs of cross-entropy (`examples/recipes/fashion_mnist/teacher.json`),\n"
     << "  trained once (`distill train -c examples/recipes/fashion_mnist/teacher.json`, or by the demo's first run)\n"
     << "  and reused by every student and seed.\n"
     << "- Student: " << describe_model(student, "Student") << "; every student run: " << o.epochs
     << " epochs, batch 128, Momentum 0.9,\n  weight decay 5e-4, cosine learning rate from 0.1, seed "
     << fmt::format("{}", fmt::join(o.seeds, ", ")) << " for weights, order and flips; the test top-1 is the last epoch's (the only evaluation).\n"
     << "- Methods (settings in `examples/recipes/fashion_mnist/`, the same for every seed): baseline (CE only);\n"
     << "  KD (CE + KL at T = 4); DKD (CE + DKD, T = 4, alpha = 1, beta = 8, the DKD paper's small-dataset\n"
     << "  setting, with mdistiller's linear warm-up of the DKD term over the first epochs); DIST (CE + 2 x DIST);\n"
     << "  DML (two students, CE on both + their mutual KL, no teacher; its own baseline is the student alone).\n"
     << cache_line(o)
     << fmt::format("- Machine: {}; {} run(s) at a time with {} intra-op thread(s) each, {} loader thread(s) per run;\n"
                    "  libtorch {}. Whole run: {}{}.\n",
                    machine(), o.jobs, o.threads, o.workers, TORCH_VERSION,
                    distill::train::format_duration(results["total_seconds"].get<double>()),
                    results["teacher_trained"].get<bool>() ? " (the teacher and its cache included)"
                                                           : " (teacher and cache reused from an earlier run)")
     << "\n## Test top-1\n\n"
     << "| model | top-1 % (mean +- std over " << o.seeds.size() << " seed(s)) | per seed | vs baseline | time per run |\n"
     << "|---|---|---|---|---|\n";
  for (const auto& [name, s] : rows) {
    const bool is_teacher = name == "teacher" || name == "teacher2";
    std::vector<double> percent;
    for (double v : s.top1) percent.push_back(100 * v);
    md << fmt::format("| {} | {:.2f}{} | {} | {} | {:.0f} s |\n", name, 100 * s.mean,
                      is_teacher || o.seeds.size() < 2 ? "" : fmt::format(" +- {:.2f}", 100 * s.spread),
                      is_teacher ? "(one teacher)" : fmt::format("{:.2f}", fmt::join(percent, ", ")),
                      is_teacher || name == "baseline" || std::isnan(baseline) ? "" : fmt::format("{:+.2f}", 100 * (s.mean - baseline)),
                      s.seconds);
  }
  if (results.contains("teacher_cache"))
    md << (results["teacher_cache"]["made"].get<bool>()
               ? fmt::format("\nThe teacher cache took {:.0f} s to make. ", results["teacher_cache"]["seconds"].get<double>())
               : std::string("\nThe teacher cache was made by an earlier run and reused. "))
       << "The teacher's time is that of its training"
       << (results["teacher_trained"].get<bool>() ? " in this run.\n" : ", in the run that trained it.\n");
  md << "\n![Fashion-MNIST top-1 per method](results.svg)\n\n";
  if (!std::isnan(baseline)) {
    md << "## Against the goals\n\n"
       << "A method counts as better than the baseline when its mean exceeds the baseline's by more than twice\n"
       << "the larger of the two standard deviations over the seeds.\n\n";
    std::string best;
    double best_mean = -1;
    bool dml_behind = false;
    for (const auto& [name, s] : rows) {
      if (name == "teacher" || name == "teacher2" || name == "baseline") continue;
      const double margin = 2 * std::max(baseline_std, s.spread);
      if (name == "dml") dml_behind = !(s.mean - baseline > margin);
      md << fmt::format("- {}: {:+.2f} points against a margin of {:.2f}: {}\n", name, 100 * (s.mean - baseline), 100 * margin,
                        o.seeds.size() < 2 ? "one seed, no margin to judge by"
                                           : s.mean - baseline > margin ? "better" : "NOT measurably better");
      if (s.mean > best_mean) best_mean = s.mean, best = name;
    }
    if (!best.empty())
      md << fmt::format("- The best student ({}, {:.2f} %) closes {:.0f} % of the teacher-student gap ({:.2f} -> {:.2f}).\n",
                        best, 100 * best_mean, 100 * (best_mean - baseline) / (teacher - baseline), 100 * baseline, 100 * teacher);
    if (dml_behind && results.contains("dml_terms"))
      md << fmt::format(
          "\nWhy DML does not beat the baseline here: it has no teacher; its two students start from scratch and\n"
          "teach each other. At the end of their training the mutual term (symmetric KL) is {:.3f} against a\n"
          "cross-entropy of {:.3f} per student (means over the seeds, last logged steps): the two peers predict\n"
          "nearly the same distributions, so the term carries little the labels do not. The reference's gain\n"
          "(+1.75 top-1) comes from 100-epoch ImageNet training of two ResNets, not from a {}-epoch schedule.\n",
          results["dml_terms"]["mutual"].get<double>(), results["dml_terms"]["cross_entropy"].get<double>(), o.epochs);
  }
  md << "\nRaw numbers: [results.json](results.json). A run is deterministic for a given seed, thread count,\n"
     << "machine and commit; another thread count or machine changes floating-point rounding and with it the\n"
     << "numbers by a few tenths. `docs/results-notes.md` keeps the results of earlier settings.\n";
}

}  // namespace

int main(int argc, char** argv) {
  distill::train::reuse_freed_memory();
  try {
    if (argc == 5 && std::string(argv[1]) == "--train" && std::string(argv[3]) == "--threads") {  // one student run
      torch::set_num_threads(static_cast<int>(number("--threads", argv[4])));
      distill::train::Trainer(distill::config::load_file(argv[2])).train();
      return 0;
    }
    const auto o = parse(argc, argv);
    torch::set_num_threads(static_cast<int>(o.jobs * o.threads));
    const auto start = Clock::now();
    std::map<std::string, std::vector<Run>> runs;
    bool teacher_trained = false;
    runs["teacher"].push_back(train_here("teacher", o.teacher, o, teacher_trained));
    const bool ensemble = std::find(o.methods.begin(), o.methods.end(), "multi_teacher") != o.methods.end();
    if (ensemble) {
      bool unused = false;
      runs["teacher2"].push_back(train_here("teacher2", o.output + "/teacher2", o, unused));
    }
    // One cache for every logit method and seed: the cache's views are its own (fixed) and the
    // recipes share transforms and teacher; a student's seed still orders its batches.
    std::string cache;
    bool cache_made = false;
    for (const auto& method : o.methods)
      if (o.cache_views > 0 && cached(method) && cache.empty()) {
        cache = o.teacher + "/cache";
        if (teacher_trained) fs::remove_all(cache);
        std::cout << "\n== teacher cache in " << cache << "\n" << std::flush;
        const auto made = Clock::now();
        const auto recipe = student_recipe(method, 0, o, o.output + "/cache_recipe");
        const auto options = distill::train::CacheOptions().views(o.cache_views).topk(0).out(cache);
        cache_made = !fs::exists(cache + "/manifest.json");
        try {
          distill::train::make_teacher_cache(recipe, options, std::cout);
        } catch (const distill::Error& e) {  // made from another teacher or data: make it again
          std::cout << "the cache there does not fit (" << e.what() << "); making it again\n";
          fs::remove_all(cache);
          cache_made = true;
          distill::train::make_teacher_cache(recipe, options, std::cout);
        }
        runs["cache"].push_back({"cache", 0, cache, NAN, seconds_since(made)});
      }
    torch::set_num_threads(static_cast<int>(o.threads));
    std::cout << fmt::format("\n== {} student runs, {} at a time, {} thread(s) each; each run's output in its folder's train.log\n",
                             o.seeds.size() * o.methods.size(), o.jobs, o.threads)
              << std::flush;
    Runner runner(o);
    for (int64_t seed : o.seeds)
      for (const auto& method : o.methods) {
        const std::string dir = o.output + "/seed" + std::to_string(seed) + "/" + method;
        fs::remove_all(dir);
        fs::create_directories(dir);
        auto recipe = student_recipe(method, seed, o, dir);
        if (o.cache_views > 0 && cached(method)) recipe["Global"]["teacher_cache"] = cache;
        std::ofstream(dir + "/recipe.json") << recipe.dump(2) << '\n';
        runner.add({method, seed, dir});
      }
    for (auto& run : runner.run_all()) runs[run.method].push_back(run);
    const double total = seconds_since(start);

    Rows rows{{"teacher", summarise(runs["teacher"])}};
    if (ensemble) rows.emplace_back("teacher2", summarise(runs["teacher2"]));
    for (const auto& m : o.methods) rows.emplace_back(m, summarise(runs[m]));
    const double baseline = runs.count("baseline") ? summarise(runs["baseline"]).mean : NAN;
    std::cout << fmt::format("\nFashion-MNIST, students {} epochs on {} training images, {} test images; {} seed(s); {} x {} thread(s)\n\n",
                             o.epochs, o.train_limit > 0 ? std::to_string(o.train_limit) : std::string("60000"),
                             o.test_limit > 0 ? std::to_string(o.test_limit) : std::string("10000"), o.seeds.size(), o.jobs,
                             o.threads);
    std::cout << fmt::format("{:<14} {:>16} {:>12} {:>12}\n", "model", "top-1 %", "vs baseline", "time / run");
    nlohmann::json results{{"epochs", o.epochs}, {"train_limit", o.train_limit}, {"test_limit", o.test_limit},
                           {"seeds", o.seeds}, {"jobs", o.jobs}, {"threads", o.threads}, {"total_seconds", total},
                           {"teacher_trained", teacher_trained}, {"command", o.command_line},
                           {"methods", nlohmann::json::object()}};
    if (runs.count("cache")) {
      const auto s = summarise(runs["cache"]);
      std::cout << (cache_made ? fmt::format("{:<14} {:>16} {:>12} {:>11.0f}s\n", "cache", "", "", s.seconds)
                               : fmt::format("{:<14} {:>16} {:>12} {:>12}\n", "cache", "", "", "reused"));
      results["teacher_cache"] = {{"views", o.cache_views}, {"made", cache_made}, {"seconds", cache_made ? s.seconds : NAN},
                                  {"methods", "kd, dkd and dist train from it"}};
    }
    for (const auto& [name, s] : rows) {
      const std::string top1 = o.seeds.size() > 1 && name != "teacher" && name != "teacher2"
                                   ? fmt::format("{:.2f} +- {:.2f}", 100 * s.mean, 100 * s.spread)
                                   : fmt::format("{:.2f}", 100 * s.mean);
      const std::string delta = name == "teacher" || name == "teacher2" || name == "baseline" || std::isnan(baseline)
                                    ? "" : fmt::format("{:+.2f}", 100 * (s.mean - baseline));
      std::cout << fmt::format("{:<14} {:>16} {:>12} {:>11.0f}s\n", name, top1, delta, s.seconds);
      results["methods"][name] = {{"top1", s.top1}, {"mean", s.mean}, {"std", s.spread}, {"seconds", s.seconds}};
    }
    // DML's terms at the end of its training: the last logged step of each run.
    if (runs.count("dml")) {
      double mutual = 0, ce = 0;
      for (const auto& run : runs["dml"]) {
        nlohmann::json last;
        std::ifstream in(run.dir + "/metrics.jsonl");
        for (std::string line; std::getline(in, line);) {
          auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
          if (record.is_object() && record.value("type", "") == "train") last = record;
        }
        for (const auto& [key, value] : last.items()) {
          if (key.rfind("DMLLoss", 0) == 0) mutual += value.get<double>() / runs["dml"].size();
          if (key.rfind("CELoss", 0) == 0) ce += value.get<double>() / (2.0 * runs["dml"].size());  // two students
        }
      }
      results["dml_terms"] = {{"mutual", mutual}, {"cross_entropy", ce}};
    }
    fs::create_directories(o.report);
    std::ofstream(o.report + "/results.json") << results.dump(2) << '\n';
    write_chart(o.report + "/results.svg", rows, o.seeds.size());
    write_markdown(o.report + "/results.md", o, rows, results);
    std::cout << fmt::format("\ntotal {}; results in {}/results.md, results.json and results.svg\n",
                             distill::train::format_duration(total), o.report);
    return 0;
  } catch (const distill::Error& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 1;
  }
}
