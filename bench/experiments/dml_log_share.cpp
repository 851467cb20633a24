// How much of DML's row kernel is its logarithm (issue 22): times forward + backward of
// distill::functional::dml_loss at 256 x 1000 float32 (best of 380 calls, one thread) next to
// the two-softmax floor, and the float32 errors against the float64 path. Built once against
// include/ as it is and once against a copy whose dml_rows replaces `log(d, r);` by
// `d = r - 1.0f;` (wrong values: timing only), it shows the cost of the logarithm alone.
// bench/results/dml_log_share.txt has the run and the commands.
#include <chrono>
#include <iostream>
#include "distill/losses/dml.hpp"
int main(int argc, char** argv) {
  torch::manual_seed(0);
  int64_t N = 256, C = 1000;
  auto s0 = torch::randn({N, C}) * 3, t0 = torch::randn({N, C}) * 3;
  auto s = s0.clone().requires_grad_(), t = t0.clone().requires_grad_();
  double best = 1e9;
  for (int rep = 0; rep < 400; ++rep) {
    auto a = std::chrono::steady_clock::now();
    s.mutable_grad() = torch::Tensor(); t.mutable_grad() = torch::Tensor();
    distill::functional::dml_loss(s, t).backward();
    double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count();
    if (rep > 20) best = std::min(best, us);
  }
  double floor = 1e9;
  {
    torch::NoGradGuard no_grad;
    for (int rep = 0; rep < 400; ++rep) {
      auto a = std::chrono::steady_clock::now();
      auto ps = torch::log_softmax(s0, 1);
      auto pt = torch::softmax(t0, 1);
      double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count();
      if (rep > 20) floor = std::min(floor, us);
    }
  }
  std::cout << "floor " << floor << " us; ";
  // reference: float64 path
  auto s64 = s0.to(torch::kDouble).requires_grad_(), t64 = t0.to(torch::kDouble).requires_grad_();
  auto l64 = distill::functional::dml_loss(s64, t64); l64.backward();
  s.mutable_grad() = torch::Tensor(); t.mutable_grad() = torch::Tensor();
  auto l32 = distill::functional::dml_loss(s, t); l32.backward();
  std::cout << "best " << best << " us; loss rel err " << ((l32.to(torch::kDouble) - l64).abs() / l64.abs()).item<double>()
            << " grad_s max err/max " << ((s.grad().to(torch::kDouble) - s64.grad()).abs().max() / s64.grad().abs().max()).item<double>()
            << " grad_t " << ((t.grad().to(torch::kDouble) - t64.grad()).abs().max() / t64.grad().abs().max()).item<double>() << "\n";
}
