// The main job: distillation on the Fashion-MNIST that Debian ships. For each seed it trains a
// ConvNet teacher, then a small ConvNet student without a teacher (the baseline) and with each
// method (by default KD, DML, DKD, DIST, MGD; --methods all adds NKD, CTKD, KD with logit
// standardisation, a two-teacher ensemble, FitNets, AT, OFD, ReviewKD and CRD), all from
// examples/recipes/fashion_mnist/*.json, and prints the students' test top-1 and the time of
// each run. Results go to <output>/results.json and a chart to <output>/results.svg. The
// two-teacher ensemble trains a second teacher (teacher2.json) per seed.
//
// The logit methods with a frozen teacher (KD, DKD, DIST) learn from a teacher cache
// (docs/teacher-cache.md): after the teacher is trained, its logits on K views of every
// training image are stored once (--cache-views K, default 2: the recipes' only augmentation is
// a flip, so two views are all there are), and those runs never build or run the teacher.
// --cache-views 0 runs the teacher online as the recipes do.
//
//   fashion_mnist_demo [--seeds 0,1,2] [--epochs 3] [--train-limit 30000] [--threads 2]
//                      [--methods baseline,kd,dml,dkd,dist,mgd | all] [--cache-views 2] [--output output/fashion_mnist_demo]

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "distill/config/file.hpp"
#include "distill/train/progress.hpp"
#include "distill/train/teacher_cache.hpp"
#include "distill/train/trainer.hpp"

namespace {

struct Options {
  std::vector<int64_t> seeds{0};
  int64_t epochs = 3, train_limit = 30000, test_limit = 0, threads = 2, workers = 1, cache_views = 2;
  std::vector<std::string> methods{"baseline", "kd", "dml", "dkd", "dist", "mgd"};
  std::string output = "output/fashion_mnist_demo";
  bool teacher_check = true;
};

/// Every method the demo has a recipe for (--methods all).
const std::vector<std::string> all_methods{"baseline", "kd",     "dml", "dkd", "dist",     "mgd", "nkd",
                                           "ctkd",     "kd_std", "multi_teacher", "fitnet", "at", "ofd", "reviewkd", "crd"};

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');)
    if (!part.empty()) parts.push_back(part);
  return parts;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) distill::fail("option ", arg, " needs a value");
      return argv[++i];
    };
    if (arg == "--seeds") {
      o.seeds.clear();
      for (const auto& s : split(value())) o.seeds.push_back(std::stoll(s));
    } else if (arg == "--epochs") o.epochs = std::stoll(value());
    else if (arg == "--train-limit") o.train_limit = std::stoll(value());
    else if (arg == "--test-limit") o.test_limit = std::stoll(value());
    else if (arg == "--threads") o.threads = std::stoll(value());
    else if (arg == "--workers") o.workers = std::stoll(value());
    else if (arg == "--methods") {
      o.methods = split(value());
      if (o.methods == std::vector<std::string>{"all"}) o.methods = all_methods;
    }
    else if (arg == "--cache-views") o.cache_views = std::stoll(value());
    else if (arg == "--output") o.output = value();
    else if (arg == "--no-teacher-check") o.teacher_check = false;
    else if (arg == "-h" || arg == "--help") {
      std::cout << "usage: fashion_mnist_demo [--seeds 0,1,2] [--epochs 3] [--train-limit 30000] [--test-limit 0 (all)]\n"
                   "                          [--threads 2] [--workers 1] [--methods baseline,kd,dml,dkd,dist,mgd | all]\n"
                   "                          [--cache-views 2 (0: teacher online)] [--output DIR]\n"
                   "                          [--no-teacher-check (smoke runs, whose teacher is barely trained)]\n";
      std::exit(0);
    } else distill::fail("unknown option ", arg, " (see --help)");
  }
  if (o.seeds.empty() || o.epochs < 1 || o.methods.empty() || o.cache_views < 0)
    distill::fail("need seeds, epochs >= 1, methods and cache views >= 0");
  for (const auto& m : o.methods)
    if (std::find(all_methods.begin(), all_methods.end(), m) == all_methods.end())
      distill::fail("unknown method '", m, "'; the demo has ", fmt::format("{}", fmt::join(all_methods, ", ")), " (or all)");
  return o;
}

struct Run {
  double top1 = 0, seconds = 0;
};

/// A demo recipe with the demo's settings.
nlohmann::json demo_recipe(const std::string& recipe_name, int64_t seed, const Options& o, const std::string& dir,
                           const std::string& teacher, const std::string& teacher2 = "") {
  auto recipe = distill::config::load_file(std::string(DISTILL_RECIPE_DIR) + "/fashion_mnist/" + recipe_name + ".json");
  auto set = [&](const std::string& assignment) { distill::config::apply_override(recipe, assignment); };
  set("Global.seed=" + std::to_string(seed));
  set("Global.epochs=" + std::to_string(o.epochs));
  set("Global.eval_interval=" + std::to_string(o.epochs));  // evaluate once, at the end
  set("Global.save_interval=" + std::to_string(o.epochs));
  set("Global.print_batch_step=100");
  set("Global.output_dir=\"" + dir + "\"");
  set("DataLoader.Train.dataset.limit=" + std::to_string(o.train_limit));
  set("DataLoader.Eval.dataset.limit=" + std::to_string(o.test_limit));
  set("DataLoader.Train.loader.num_workers=" + std::to_string(o.workers));
  set("DataLoader.Eval.loader.num_workers=" + std::to_string(o.workers));
  if (!o.teacher_check) set("Global.teacher_check=false");
  if (!teacher.empty()) set("Arch.models[0].Teacher.pretrained=\"" + teacher + "\"");
  if (!teacher2.empty()) set("Arch.models[1].Teacher2.pretrained=\"" + teacher2 + "\"");
  return recipe;
}

/// Trains one recipe with the demo's settings (from the teacher cache `cache` when given);
/// returns the final test top-1 and the time.
Run train(const std::string& recipe_name, int64_t seed, const Options& o, const std::string& dir,
          const std::string& teacher = "", const std::string& cache = "", const std::string& teacher2 = "") {
  auto recipe = demo_recipe(recipe_name, seed, o, dir, teacher, teacher2);
  if (!cache.empty()) recipe["Global"]["teacher_cache"] = cache;
  std::cout << "\n== " << recipe_name << " (seed " << seed << (cache.empty() ? "" : ", teacher cache") << ")\n" << std::flush;
  const auto start = std::chrono::steady_clock::now();
  distill::train::Trainer trainer(recipe);
  const auto state = trainer.train();
  return {state.best_top1, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
}

struct Summary {
  double mean = 0, spread = 0, seconds = 0;
};

Summary summarise(const std::vector<Run>& runs) {
  Summary s;
  for (const auto& r : runs) {
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

void write_chart(const std::string& path, const std::vector<std::pair<std::string, Summary>>& rows, size_t seeds) {
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

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto o = parse(argc, argv);
    torch::set_num_threads(static_cast<int>(o.threads));
    std::map<std::string, std::vector<Run>> runs;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t seed : o.seeds) {
      const std::string dir = o.output + "/seed" + std::to_string(seed);
      runs["teacher"].push_back(train("teacher", seed, o, dir + "/teacher"));
      const std::string teacher = dir + "/teacher/best_model_student.pt";
      std::string teacher2;
      if (std::find(o.methods.begin(), o.methods.end(), "multi_teacher") != o.methods.end()) {
        runs["teacher2"].push_back(train("teacher2", seed, o, dir + "/teacher2"));
        teacher2 = dir + "/teacher2/best_model_student.pt";
      }
      auto cached = [&](const std::string& method) { return o.cache_views > 0 && (method == "kd" || method == "dkd" || method == "dist"); };
      std::string cache;
      for (const auto& method : o.methods)
        if (cached(method) && cache.empty()) {
          // One cache of the teacher for every logit method (their recipes share transforms and teacher).
          cache = dir + "/teacher_cache";
          std::filesystem::remove_all(cache);
          std::cout << "\n== teacher cache (seed " << seed << ")\n" << std::flush;
          const auto start = std::chrono::steady_clock::now();
          distill::train::make_teacher_cache(demo_recipe(method, seed, o, dir + "/" + method, teacher),
                                             distill::train::CacheOptions().views(o.cache_views).topk(0).out(cache), std::cout);
          runs["cache"].push_back({NAN, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
        }
      for (const auto& method : o.methods)
        runs[method].push_back(train(method, seed, o, dir + "/" + method, method == "baseline" || method == "dml" ? "" : teacher,
                                     cached(method) ? cache : "", method == "multi_teacher" ? teacher2 : ""));
    }
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    std::vector<std::pair<std::string, Summary>> rows{{"teacher", summarise(runs["teacher"])}};
    if (runs.count("teacher2")) rows.emplace_back("teacher2", summarise(runs["teacher2"]));
    for (const auto& m : o.methods) rows.emplace_back(m, summarise(runs[m]));
    const double baseline = runs.count("baseline") ? summarise(runs["baseline"]).mean : NAN;
    std::cout << "\nFashion-MNIST, " << o.epochs << " epochs on " << o.train_limit << " training images, "
              << (o.test_limit > 0 ? std::to_string(o.test_limit) : std::string("10000")) << " test images; "
              << o.seeds.size() << " seed(s); " << torch::get_num_threads() << " intra-op thread(s)\n\n";
    std::cout << fmt::format("{:<14} {:>16} {:>12} {:>12}\n", "model", "top-1 %", "vs baseline", "time / run");
    nlohmann::json results{{"epochs", o.epochs}, {"train_limit", o.train_limit}, {"test_limit", o.test_limit}, {"seeds", o.seeds},
                           {"threads", torch::get_num_threads()}, {"total_seconds", total}, {"methods", nlohmann::json::object()}};
    if (runs.count("cache")) {
      const auto s = summarise(runs["cache"]);
      std::cout << fmt::format("{:<14} {:>16} {:>12} {:>11.0f}s\n", "cache", "", "", s.seconds);
      results["teacher_cache"] = {{"views", o.cache_views}, {"seconds", s.seconds},
                                  {"methods", "kd, dkd and dist train from it"}};
    }
    for (const auto& [name, s] : rows) {
      const std::string top1 = o.seeds.size() > 1 ? fmt::format("{:.2f} +- {:.2f}", 100 * s.mean, 100 * s.spread)
                                                  : fmt::format("{:.2f}", 100 * s.mean);
      const std::string delta = name == "teacher" || name == "teacher2" || name == "baseline" || std::isnan(baseline)
                                    ? "" : fmt::format("{:+.2f}", 100 * (s.mean - baseline));
      std::cout << fmt::format("{:<14} {:>16} {:>12} {:>11.0f}s\n", name, top1, delta, s.seconds);
      std::vector<double> per_seed;
      for (const auto& r : runs[name]) per_seed.push_back(r.top1);
      results["methods"][name] = {{"top1", per_seed}, {"mean", s.mean}, {"std", s.spread}, {"seconds", s.seconds}};
    }
    std::cout << fmt::format("\ntotal {}; results in {}/results.json and results.svg\n", distill::train::format_duration(total),
                             o.output);
    std::ofstream(o.output + "/results.json") << results.dump(2) << '\n';
    write_chart(o.output + "/results.svg", rows, o.seeds.size());
    return 0;
  } catch (const distill::Error& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 1;
  }
}
