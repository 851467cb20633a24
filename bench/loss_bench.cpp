// Forward+backward time of the logit losses on [N, C] float32 logits, next to the floor any
// exact implementation pays: one softmax pass over the student and one over the teacher.
//
//   build/bench/loss_bench --benchmark_filter=256
//
// The intra-op thread count libtorch uses is printed in the context as torch_threads.

#include <benchmark/benchmark.h>

#include "distill/losses.hpp"

namespace F = distill::functional;

namespace {

struct Inputs {
  torch::Tensor student, teacher, target;
};

Inputs make_inputs(const benchmark::State& state) {
  torch::manual_seed(0);
  const int64_t n = state.range(0), c = state.range(1);
  return {torch::randn({n, c}) * 3, torch::randn({n, c}) * 3, torch::randint(0, c, {n})};
}

template <class Loss>
void fwd_bwd(benchmark::State& state, Loss loss) {
  auto in = make_inputs(state);
  auto student = in.student.clone().requires_grad_(true);
  auto teacher = in.teacher.clone().requires_grad_(true);
  for (auto _ : state) {
    auto value = loss(student, teacher, in.target);
    value.backward();
    student.mutable_grad().reset();
    teacher.mutable_grad().reset();
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void floor_two_softmax(benchmark::State& state) {
  auto in = make_inputs(state);
  for (auto _ : state) {
    auto ps = torch::log_softmax(in.student, 1);
    auto pt = torch::softmax(in.teacher, 1);
    benchmark::DoNotOptimize(ps.data_ptr());
    benchmark::DoNotOptimize(pt.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {64, 256, 1024}) b->Args({n, 1000});
  b->Args({1024, 32000});
  b->Unit(benchmark::kMicrosecond);
}

using T = const torch::Tensor&;
BENCHMARK(floor_two_softmax)->Apply(shapes);
BENCHMARK_CAPTURE(fwd_bwd, kd, [](T s, T t, T) { return F::kd_loss(s, t); })->Apply(shapes);
BENCHMARK_CAPTURE(fwd_bwd, dml, [](T s, T t, T) { return F::dml_loss(s, t); })->Apply(shapes);
BENCHMARK_CAPTURE(fwd_bwd, dkd, [](T s, T t, T y) { return F::dkd_loss(s, t, y); })->Apply(shapes);
BENCHMARK_CAPTURE(fwd_bwd, dist, [](T s, T t, T) { return F::dist_loss(s, t); })->Apply(shapes);
BENCHMARK_CAPTURE(fwd_bwd, wsl, [](T s, T t, T y) { return F::wsl_loss(s, t, y); })->Apply(shapes);
BENCHMARK_CAPTURE(fwd_bwd, skd, [](T s, T t, T y) { return F::skd_loss(s, t, y); })->Apply(shapes);
BENCHMARK_CAPTURE(fwd_bwd, ce_smoothed, [](T s, T, T y) {
  return F::ce_loss(s, y, distill::CEOptions().label_smoothing(0.1));
})->Apply(shapes);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("torch_threads", std::to_string(torch::get_num_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
