// Forward and forward+backward time of every loss, next to the floor of the logit losses: one
// softmax pass over the student and one over the teacher, which any exact implementation needs.
//
//   build/bench/loss_bench                                  # all, one intra-op thread
//   build/bench/loss_bench --benchmark_filter=/256/ --threads=2
//   build/bench/loss_bench --peak-memory=kd                 # peak RSS of one fwd+bwd at 1024x32000
//   build/bench/loss_bench --block-rows=64                  # DML, DIST, SKD in row blocks of 64
//   build/bench/loss_bench --no-row-kernels                 # float32 through ATen ops, as before the row kernels
//   build/bench/loss_bench --benchmark_filter=^op/          # single ATen passes the losses are made of
//
// CUDA cases (cuda/...) run when libtorch sees a GPU.

#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <string>

#include <benchmark/benchmark.h>

#include "distill/losses.hpp"

namespace F = distill::functional;

namespace {

using T = const torch::Tensor&;
using LogitLoss = torch::Tensor (*)(T, T, T);

// Which losses send a gradient into the teacher (as distill's losses do).
const std::map<std::string, std::pair<LogitLoss, bool>>& logit_losses() {
  static const std::map<std::string, std::pair<LogitLoss, bool>> losses{
      {"kd", {[](T s, T t, T) { return F::kd_loss(s, t); }, false}},
      {"dml", {[](T s, T t, T) { return F::dml_loss(s, t); }, true}},
      {"dkd", {[](T s, T t, T y) { return F::dkd_loss(s, t, y); }, false}},
      {"dist", {[](T s, T t, T) { return F::dist_loss(s, t); }, true}},
      {"wsl", {[](T s, T t, T y) { return F::wsl_loss(s, t, y); }, true}},
      {"skd", {[](T s, T t, T y) { return F::skd_loss(s, t, y); }, true}},
      {"ce_smoothed", {[](T s, T, T y) { return F::ce_loss(s, y, distill::CEOptions().label_smoothing(0.1)); }, false}},
      {"ce_soft", {[](T s, T t, T) { return F::ce_loss(s, t); }, false}},
      // docs/methods.md: NKD, KD on z-scores, KD against a two-teacher ensemble, CTKD.
      {"nkd", {[](T s, T t, T y) { return F::nkd_loss(s, t, y); }, false}},
      {"kd_standardize", {[](T s, T t, T) { return F::kd_loss(s, t, distill::KDOptions().standardize(true)); }, false}},
      {"kd_ensemble2", {[](T s, T t, T) {
                          return F::kd_loss(s, F::ensemble_logits({t, t.flip(1)}, {}, 4.0), distill::KDOptions().temperature(4));
                        }, false}},
      {"ctkd", {[](T s, T t, T) {
                  static distill::CTKDLoss ctkd;
                  ctkd->to(s.device());
                  return ctkd(s, t);
                }, false}},
      {"ce_torch", {[](T s, T, T y) {
                      return torch::nn::functional::cross_entropy(
                          s, y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(0.1));
                    }, false}},
  };
  return losses;
}

struct Inputs {
  torch::Tensor student, teacher, target;
};

Inputs make_inputs(int64_t n, int64_t c, torch::Device device, bool teacher_grad) {
  torch::manual_seed(0);
  auto options = torch::TensorOptions().device(device);
  return {torch::randn({n, c}, options).mul_(3).requires_grad_(true),
          torch::randn({n, c}, options).mul_(3).requires_grad_(teacher_grad), torch::randint(0, c, {n}, options.dtype(torch::kLong))};
}

void sync(torch::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

void logit(benchmark::State& state, const std::string& loss, bool backward, torch::Device device) {
  const auto& [fn, teacher_grad] = logit_losses().at(loss);
  auto in = make_inputs(state.range(0), state.range(1), device, teacher_grad);
  for (auto _ : state) {
    if (backward) {
      fn(in.student, in.teacher, in.target).backward();
      in.student.mutable_grad().reset();
      if (teacher_grad) in.teacher.mutable_grad().reset();
    } else {
      torch::NoGradGuard no_grad;
      benchmark::DoNotOptimize(fn(in.student, in.teacher, in.target).data_ptr());
    }
    sync(device);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void floor_two_softmax(benchmark::State& state, torch::Device device) {
  auto in = make_inputs(state.range(0), state.range(1), device, false);
  torch::NoGradGuard no_grad;
  for (auto _ : state) {
    auto ps = torch::log_softmax(in.student, 1);
    auto pt = torch::softmax(in.teacher, 1);
    benchmark::DoNotOptimize(ps.data_ptr());
    benchmark::DoNotOptimize(pt.data_ptr());
    sync(device);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

/// One ATen pass over [N, C] into a warm buffer: what the fused losses are built from, so that
/// their cost can be read as a count of passes (e.g. op/exp_, op/log_ against op/mul).
void aten_pass(benchmark::State& state, const std::string& op, torch::Device device) {
  auto in = make_inputs(state.range(0), state.range(1), device, false);
  torch::NoGradGuard no_grad;
  auto z = in.student, p = torch::softmax(z, 1), out = torch::empty_like(z), column = z.amax(1, true);
  auto mean = z.mean(1, true), rstd = z.var(1, false, true).add_(1e-7).rsqrt_();
  std::map<std::string, std::function<void()>> ops{
      {"mul", [&] { torch::mul_out(out, z, p); }},
      {"sub_column", [&] { torch::sub_out(out, z, column); }},
      {"row_sum", [&] { benchmark::DoNotOptimize(z.sum(1, true).data_ptr()); }},
      {"exp_", [&] { out.copy_(z).exp_(); }},
      {"log_", [&] { out.copy_(p).log_(); }},
      {"copy", [&] { out.copy_(z); }},
      {"softmax_backward", [&] { at::_softmax_backward_data_out(out, z, p, 1, p.scalar_type()); }},
      {"layer_norm_backward", [&] {
         benchmark::DoNotOptimize(std::get<0>(at::native_layer_norm_backward(p, z, {z.size(1)}, mean, rstd, {}, {},
                                                                              {true, false, false})).data_ptr());
       }},
  };
  const auto& run = ops.at(op);
  for (auto _ : state) {
    run();
    sync(device);
  }
}

/// The four ResNet18/34 stage shapes [C, H, W] at 224 x 224 input.
const std::vector<std::vector<int64_t>> kStages{{64, 56, 56}, {128, 28, 28}, {256, 14, 14}, {512, 7, 7}};

/// The methods of docs/methods.md over several taps, at batch 16 (the ABF convolutions of
/// ReviewKD at 56 x 56 make batch 64 a 10-second step here): AT and OFD on the four stages,
/// ReviewKD on the four stages and the pooled feature, FitNets on the stage-2 hint, CRD on the
/// pooled features with 16384 negatives from a memory of 100000 samples.
void multi_tap(benchmark::State& state, const std::string& loss, torch::Device device) {
  torch::manual_seed(0);
  const int64_t n = 16;
  auto options = torch::TensorOptions().device(device);
  std::vector<torch::Tensor> s, t, margins;
  std::vector<int64_t> channels;
  for (const auto& shape : kStages) {
    s.push_back(torch::randn({n, shape[0], shape[1], shape[2]}, options).requires_grad_());
    t.push_back(torch::randn({n, shape[0], shape[1], shape[2]}, options));
    margins.push_back(-torch::rand({shape[0]}, options));
    channels.push_back(shape[0]);
  }
  std::function<torch::Tensor()> step;
  distill::OFDLoss ofd(distill::OFDOptions(channels, channels));
  auto levels = channels;
  levels.push_back(512);
  distill::ReviewKDLoss review(distill::ReviewKDOptions(levels, levels));
  distill::FitNetLoss fitnet(distill::FitNetOptions(kStages[1], kStages[1]));
  distill::CRDLoss crd(distill::CRDOptions(512, 512, 100000));
  auto pooled_s = torch::randn({n, 512, 1, 1}, options).requires_grad_(), pooled_t = torch::randn({n, 512, 1, 1}, options);
  auto indices = torch::randint(0, 100000, {n}, options.dtype(torch::kLong));
  if (loss == "at") {
    step = [&] {
      torch::Tensor total = torch::zeros({}, options);
      for (size_t i = 0; i < s.size(); ++i) total = total + F::at_loss(s[i], t[i]);
      return total;
    };
  } else if (loss == "ofd") {
    ofd->to(device);
    step = [&] { return ofd(s, t, margins); };
  } else if (loss == "reviewkd") {
    review->to(device);
    auto sl = s, tl = t;
    sl.push_back(pooled_s), tl.push_back(pooled_t);
    step = [&, sl, tl] { return review(sl, tl); };
  } else if (loss == "fitnet") {
    fitnet->to(device);
    step = [&] { return fitnet(s[1], t[1]); };
  } else {
    crd->to(device);
    step = [&] { return crd(pooled_s, pooled_t, indices); };
  }
  for (auto _ : state) {
    step().backward();
    sync(device);
  }
}

/// Feature losses at the recipes' shapes: distance and MGD on [64, 512, 7, 7], AFD with the
/// ResNet34 -> ResNet18 recipe's 16 teacher / 8 student features.
void features(benchmark::State& state, const std::string& loss, torch::Device device) {
  torch::manual_seed(0);
  auto options = torch::TensorOptions().device(device);
  std::function<torch::Tensor()> step;
  torch::Tensor s = torch::randn({64, 512, 7, 7}, options).requires_grad_(), t = torch::randn({64, 512, 7, 7}, options);
  distill::MGDLoss mgd(distill::MGDOptions(512, 512));
  distill::FeatureShapes ts, ss;
  for (int i = 0; i < 16; ++i) ts.push_back(i < 3 ? std::vector<int64_t>{64, 56, 56} : i < 7 ? std::vector<int64_t>{128, 28, 28}
                                            : i < 13 ? std::vector<int64_t>{256, 14, 14} : std::vector<int64_t>{512, 7, 7});
  for (int i = 0; i < 8; ++i) ss.push_back(ts[i < 2 ? 0 : i < 4 ? 3 : i < 6 ? 7 : 13]);
  distill::AFDLoss afd(distill::AFDOptions(ss, ts).qk_dim(128));
  std::vector<torch::Tensor> sv, tv;
  torch::Tensor key, query;
  if (loss == "mgd") {
    mgd->to(device);
    step = [&] { return mgd(s, t); };
  } else if (loss == "afd") {
    afd->to(device);
    const int64_t n = 64;
    key = torch::randn({n, 8, 16, 128}, options).requires_grad_();
    query = torch::randn({n, 16, 128}, options).requires_grad_();
    for (const auto& shape : afd->groups.unique) sv.push_back(torch::randn({n, 8, shape[1] * shape[2]}, options).requires_grad_());
    for (const auto& shape : ts) tv.push_back(torch::randn({n, shape[1] * shape[2]}, options));
    step = [&] { return afd->forward(key, sv, query, tv); };
  } else {
    step = [&] { return F::distance_loss(s, t); };
  }
  for (auto _ : state) {
    step().backward();
    sync(device);
  }
}

void register_all() {
  std::vector<torch::Device> devices{torch::kCPU};
  if (torch::cuda::is_available()) devices.emplace_back(torch::kCUDA, 0);
  for (const auto& device : devices) {
    const std::string prefix = device.is_cuda() ? "cuda/" : "";
    auto shapes = [](benchmark::internal::Benchmark* b) {
      for (int64_t n : {64, 256, 1024}) b->Args({n, 1000});
      b->Args({1024, 32000});
      b->Unit(benchmark::kMicrosecond)->UseRealTime();
    };
    benchmark::RegisterBenchmark((prefix + "floor_two_softmax").c_str(), floor_two_softmax, device)->Apply(shapes);
    for (const auto& [name, unused] : logit_losses()) {
      benchmark::RegisterBenchmark((prefix + "fwd_bwd/" + name).c_str(), logit, name, true, device)->Apply(shapes);
      benchmark::RegisterBenchmark((prefix + "fwd/" + name).c_str(), logit, name, false, device)->Apply(shapes);
    }
    for (const char* op : {"copy", "mul", "sub_column", "row_sum", "exp_", "log_", "softmax_backward", "layer_norm_backward"})
      benchmark::RegisterBenchmark((prefix + "op/" + op).c_str(), aten_pass, std::string(op), device)
          ->Args({256, 1000})
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    for (const char* name : {"distance_l2", "mgd", "afd"})
      benchmark::RegisterBenchmark((prefix + "fwd_bwd/" + name).c_str(), features, std::string(name), device)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    for (const char* name : {"at", "ofd", "reviewkd", "fitnet", "crd"})
      benchmark::RegisterBenchmark((prefix + "fwd_bwd/" + name + "/16").c_str(), multi_tap, std::string(name), device)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
  }
}

/// A field of /proc/self/status in KiB: VmRSS (resident now) or VmHWM (the peak of this
/// process image; getrusage's ru_maxrss would carry a parent's peak across exec).
int64_t status_kb(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  return -1;
}

/// One forward+backward at 1024 x 32000 in this fresh process: the peak resident memory beyond
/// the inputs, in units of one [N, C] float32 tensor (the gradients count).
int peak_memory(const std::string& loss) {
  const auto& [fn, teacher_grad] = logit_losses().at(loss);
  auto in = make_inputs(1024, 32000, torch::kCPU, teacher_grad);
  const int64_t base = status_kb("VmRSS");
  fn(in.student, in.teacher, in.target).backward();
  const double tensor_kb = 1024.0 * 32000 * 4 / 1024;
  std::cout << loss << " peak memory beyond the inputs (in [N, C] float tensors): " << (status_kb("VmHWM") - base) / tensor_kb
            << '\n';
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) threads = std::atoi(argv[i] + 10);
    // Forces the row-block height of the losses that work in blocks (0: their default).
    if (std::strncmp(argv[i], "--block-rows=", 13) == 0) distill::detail::chunk_rows_override() = std::atoi(argv[i] + 13);
    if (std::strcmp(argv[i], "--no-row-kernels") == 0) distill::set_row_kernels(false);
    if (std::strncmp(argv[i], "--peak-memory=", 14) == 0) {
      torch::set_num_threads(threads);
      return peak_memory(argv[i] + 14);
    }
  }
  torch::set_num_threads(threads);
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("torch_threads", std::to_string(torch::get_num_threads()));
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
