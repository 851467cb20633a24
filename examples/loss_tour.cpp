// A tour of the distill losses on a synthetic task that needs no data files.
//
// A wide teacher MLP learns a 10-class problem (three Gaussian clusters per class in 32
// dimensions, 10% label noise) from 16384 samples; then a narrow student that sees only 2048
// of them is trained with the ground-truth CE plus each distillation loss in turn, from the
// same initial weights and the same batches. The table shows clean-test accuracy and time
// per method. Loss weights follow the reference recipes where they have one.
//
//   loss_tour [--steps N] [--seed S]

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "distill/losses.hpp"

namespace F = distill::functional;
namespace nn = torch::nn;

namespace {

constexpr int64_t kClasses = 10, kDim = 32;

/// Logits plus the hidden features, so feature losses (RKD, PEFD) have something to match.
struct MlpImpl : nn::Cloneable<MlpImpl> {
  explicit MlpImpl(int64_t hidden) : hidden(hidden) { reset(); }
  void reset() override {
    body = register_module("body", nn::Linear(kDim, hidden));
    head = register_module("head", nn::Linear(hidden, kClasses));
  }
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x) {
    auto h = torch::relu(body(x));
    return {head(h), h};
  }
  int64_t hidden;
  nn::Linear body{nullptr}, head{nullptr};
};
TORCH_MODULE(Mlp);

struct Data {
  torch::Tensor x, y;
};

/// Every class is a mixture of three Gaussian clusters (so the problem is not linear);
/// `label_noise` of the labels are replaced by random ones.
Data make_data(const torch::Tensor& centres, int64_t n, double label_noise) {
  auto cluster = torch::randint(0, centres.size(0), {n});
  auto x = centres.index_select(0, cluster) + 1.5 * torch::randn({n, kDim});
  auto y = cluster.remainder(kClasses);
  auto flip = torch::rand({n}) < label_noise;
  return {x, torch::where(flip, torch::randint(0, kClasses, {n}), y)};
}

double accuracy(Mlp& model, const Data& d) {
  torch::NoGradGuard no_grad;
  return model->forward(d.x).first.argmax(1).eq(d.y).to(torch::kDouble).mean().item<double>();
}

/// Distillation term from (student logits, teacher logits, student hidden, teacher hidden, labels).
using Term = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                         const torch::Tensor&, const torch::Tensor&)>;

}  // namespace

int main(int argc, char** argv) {
  int64_t steps = 1000, seed = 0;
  for (int i = 1; i < argc; i += 2) {
    const bool has_value = i + 1 < argc;
    if (has_value && !std::strcmp(argv[i], "--steps")) steps = std::stoll(argv[i + 1]);
    else if (has_value && !std::strcmp(argv[i], "--seed")) seed = std::stoll(argv[i + 1]);
    else { std::fprintf(stderr, "usage: loss_tour [--steps N] [--seed S]\n"); return 2; }
  }
  torch::manual_seed(seed);
  const auto centres = torch::randn({3 * kClasses, kDim});
  // The usual distillation setting: the teacher was trained on much more data than the
  // student sees (8x here); the student's own labels are noisy and few.
  const Data teacher_data = make_data(centres, 16384, 0.1), student_data = make_data(centres, 2048, 0.1);
  const Data test = make_data(centres, 4096, 0.0);
  const int64_t batch = 64;
  auto batch_at = [&](const Data& data, int64_t step) {
    auto idx = torch::randint(0, data.x.size(0), {batch},
                              torch::make_generator<torch::CPUGeneratorImpl>(seed * 100003 + step));
    return Data{data.x.index_select(0, idx), data.y.index_select(0, idx)};
  };

  Mlp teacher(256);
  {
    torch::optim::SGD opt(teacher->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    for (int64_t step = 0; step < 4 * steps; ++step) {
      auto b = batch_at(teacher_data, step);
      auto loss = F::ce_loss(teacher->forward(b.x).first, b.y);
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
  }
  teacher->eval();
  std::printf("teacher (hidden 256): test top-1 %.2f%%\n\n", 100 * accuracy(teacher, test));

  const int64_t student_hidden = 16;
  Mlp init(student_hidden);
  distill::PEFDLoss pefd(distill::PEFDOptions(student_hidden, 256).num_projectors(2));
  distill::CTKDLoss ctkd;
  const std::vector<std::pair<std::string, Term>> methods = {
      {"CE only (baseline)", nullptr},
      {"KD T=4", [](auto& s, auto& t, auto&, auto&, auto&) { return F::kd_loss(s, t); }},
      {"soft CE (SSLD)", [](auto& s, auto& t, auto&, auto&, auto&) { return F::ce_loss(s, t); }},
      {"DML", [](auto& s, auto& t, auto&, auto&, auto&) { return F::dml_loss(s, t); }},
      {"DKD T=1 a=1 b=1", [](auto& s, auto& t, auto&, auto&, auto& y) { return F::dkd_loss(s, t, y); }},
      {"DIST x2", [](auto& s, auto& t, auto&, auto&, auto&) { return 2 * F::dist_loss(s, t); }},
      {"WSL x2.5", [](auto& s, auto& t, auto&, auto&, auto& y) { return 2.5 * F::wsl_loss(s, t, y); }},
      {"SKD (replaces CE)", [](auto& s, auto& t, auto&, auto&, auto& y) { return F::skd_loss(s, t, y); }},
      {"RKD distance on hidden", [](auto&, auto&, auto& hs, auto& ht, auto&) {
         return F::rkd_distance_loss(hs, ht); }},
      {"PEFD x2 on hidden", [&pefd](auto&, auto&, auto& hs, auto& ht, auto&) { return 2 * pefd(hs, ht); }},
      // docs/methods.md (the feature methods need maps, which this MLP does not have).
      {"NKD", [](auto& s, auto& t, auto&, auto&, auto& y) { return F::nkd_loss(s, t, y); }},
      {"KD T=2 standardized x9", [](auto& s, auto& t, auto&, auto&, auto&) {
         return 9 * F::kd_loss(s, t, distill::KDOptions().temperature(2).standardize(true)); }},
      {"CTKD", [&ctkd](auto& s, auto& t, auto&, auto&, auto&) { return ctkd(s, t); }},
  };

  std::printf("%-24s %10s %10s %12s\n", ("student (hidden " + std::to_string(student_hidden) + ")").c_str(),
              "top-1 %", "time ms", "final loss");
  for (const auto& [name, term] : methods) {
    auto student = std::dynamic_pointer_cast<MlpImpl>(init->clone());
    Mlp model(student);
    auto params = model->parameters();
    if (name.rfind("PEFD", 0) == 0) for (auto& p : pefd->parameters()) params.push_back(p);
    if (name == "CTKD") for (auto& p : ctkd->parameters()) params.push_back(p);
    torch::optim::SGD opt(params, torch::optim::SGDOptions(0.05).momentum(0.9));
    const bool replaces_ce = name.rfind("SKD", 0) == 0;  // SKD contains its own CE term
    const auto start = std::chrono::steady_clock::now();
    double last = 0;
    for (int64_t step = 0; step < steps; ++step) {
      auto b = batch_at(student_data, step);
      auto [logits, hidden] = model->forward(b.x);
      torch::Tensor t_logits, t_hidden;
      {
        torch::NoGradGuard no_grad;
        std::tie(t_logits, t_hidden) = teacher->forward(b.x);
      }
      torch::Tensor loss = replaces_ce ? torch::zeros({}) : F::ce_loss(logits, b.y);
      if (term) loss = loss + term(logits, t_logits, hidden, t_hidden, b.y);
      opt.zero_grad();
      loss.backward();
      opt.step();
      last = loss.item<double>();
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("%-24s %10.2f %10.0f %12.4f\n", name.c_str(), 100 * accuracy(model, test), ms, last);
  }
  std::printf("\n%lld steps of batch %lld, %d intra-op thread(s), seed %lld.\n", static_cast<long long>(steps),
              static_cast<long long>(batch), torch::get_num_threads(), static_cast<long long>(seed));
  return 0;
}
