// The exponential of the fused losses' row kernels (losses/simd.hpp) against what a
// header-only library could use instead, over 2^20 floats in [-100, 90], one thread:
// ATen's exp_ pass (its own AVX2 kernel with SLEEF), at::vec::Vectorized<float>::exp compiled
// with this file's flags (ATen picks its vector code from CPU_CAPABILITY macros that only its
// own kernel files define), and std::exp. Prints ns per element and the worst relative error
// of simd::exp against double-precision exp where the result is a normal float.
//
//   build/bench/simd_exp
#include <ATen/cpu/vec/vec.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "distill/losses/simd.hpp"

namespace simd = distill::detail::simd;

DISTILL_TARGET_AVX2 void simd_avx2(const float* x, float* y, int64_t n) {
  simd::f8 v, r;
  for (int64_t i = 0; i < n; i += simd::kWidth) simd::load(v, x + i), simd::exp(r, v), simd::store(y + i, r);
}
DISTILL_TARGET_AVX2 void simd_log(const float* x, float* y, int64_t n) {
  simd::f8 v, r;
  for (int64_t i = 0; i < n; i += simd::kWidth) simd::load(v, x + i), simd::log(r, v), simd::store(y + i, r);
}
void simd_plain(const float* x, float* y, int64_t n) {
  simd::f8 v, r;
  for (int64_t i = 0; i < n; i += simd::kWidth) simd::load(v, x + i), simd::exp(r, v), simd::store(y + i, r);
}
void aten_vec(const float* x, float* y, int64_t n) {
  using V = at::vec::Vectorized<float>;
  for (int64_t i = 0; i < n; i += V::size()) V::loadu(x + i).exp().store(y + i);
}
void std_exp(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}

template <class F>
double ns_per_element(F&& f, int64_t n) {
  double best = 1e30;
  for (int round = 0; round < 5; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int k = 0; k < 10; ++k) f();
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    best = std::min(best, dt.count() / 10 / static_cast<double>(n) * 1e9);
  }
  return best;
}

int main() {
  torch::set_num_threads(1);
  const int64_t n = int64_t{1} << 20;
  auto x = torch::linspace(-100, 90, n), y = torch::empty_like(x);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  simd_avx2(xp, yp, n);
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double ref = std::exp(static_cast<double>(xp[i]));
    if (xp[i] >= -87.3365f && xp[i] <= 88.3762f) worst = std::max(worst, std::fabs(yp[i] - ref) / ref);
  }
  std::printf("simd::exp worst relative error %.3g (%.2f ulp of 2^-24)\n", worst, worst / 5.9604645e-8);
  // simd::log over 2^20 values spread over every binade, subnormals included.
  auto xs = torch::pow(2.0, torch::linspace(-149, 127, n)).to(torch::kFloat);
  auto ys = torch::empty_like(xs);
  simd_log(xs.data_ptr<float>(), ys.data_ptr<float>(), n);
  double worst_log = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = xs.data_ptr<float>()[i], ref = std::log(v);
    if (v > 0 && std::isfinite(v)) worst_log = std::max(worst_log, std::fabs(ys.data_ptr<float>()[i] - ref) / std::max(std::fabs(ref), 1e-30));
  }
  std::printf("simd::log worst relative error %.3g (%.2f ulp of 2^-24)\n", worst_log, worst_log / 5.9604645e-8);
  std::printf("avx2 available: %s\n", simd::has_avx2() ? "yes" : "no");
  std::printf("ns per element, one thread, best of 5 x 10 passes over %lld floats:\n", static_cast<long long>(n));
  if (simd::has_avx2()) std::printf("  simd::exp, AVX2 + FMA build    %.3f\n", ns_per_element([&] { simd_avx2(xp, yp, n); }, n));
  // The exponential's own throughput, in cache (a row of 4096 floats, as a row kernel sees it):
  // what a loss that needs k exponentials per element cannot beat (issue 22's "real floor").
  // Inputs in [-20, 0], as a softmax's shifted logits mostly are (results far below 1e-38
  // would be subnormal, which costs the multiply a microcode assist).
  if (simd::has_avx2()) {
    const int64_t row = 4096;
    auto shifted = torch::linspace(-20, 0, row);
    const float* sp = shifted.data_ptr<float>();
    std::printf("  simd::exp in cache (4096 floats in [-20, 0]) %.3f\n", ns_per_element([&] {
      for (int64_t i = 0; i < n; i += row) simd_avx2(sp, yp, row);
    }, n));
  }
  std::printf("  simd::exp, plain build          %.3f\n", ns_per_element([&] { simd_plain(xp, yp, n); }, n));
  std::printf("  ATen exp_out pass               %.3f\n", ns_per_element([&] { torch::exp_out(y, x); }, n));
  auto positive = torch::exp(x.clamp(-80, 80));
  if (simd::has_avx2())
    std::printf("  simd::log, AVX2 + FMA build    %.3f\n", ns_per_element([&] { simd_log(positive.data_ptr<float>(), yp, n); }, n));
  std::printf("  ATen log_out pass               %.3f\n", ns_per_element([&] { torch::log_out(y, positive); }, n));
  std::printf("  at::vec::Vectorized<float>::exp %.3f\n", ns_per_element([&] { aten_vec(xp, yp, n); }, n));
  std::printf("  std::exp loop                   %.3f\n", ns_per_element([&] { std_exp(xp, yp, n); }, n));
}
