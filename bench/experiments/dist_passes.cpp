// Where DIST's row kernel spends its time (issue 22): the three passes over the rows and the
// per-column / per-row statistics between them, timed inside forward_rows by a copy of
// include/ with dist_passes.patch applied (clock reads around each stage, into g_pass), next to the
// two-softmax floor, forward + backward at N x 1000 float32, one thread, mean of 300 calls
// after 30 warm-up calls. bench/results/dist_passes.txt has the run and the commands.
#include <chrono>
#include <iostream>
#include "distill/losses/dist.hpp"
double now() { return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
int main() {
  at::set_num_threads(1);
  for (int64_t N : {64, 256, 1024}) {
    torch::manual_seed(0);
    const int64_t C = 1000;
    auto s = (torch::randn({N, C}) * 3).requires_grad_(), t = (torch::randn({N, C}) * 3).requires_grad_();
    const int warm = 30, reps = 300;
    double total = 0, floor = 0;
    for (int rep = 0; rep < warm + reps; ++rep) {
      if (rep == warm) for (double& g : distill::g_pass) g = 0;
      s.mutable_grad() = torch::Tensor(), t.mutable_grad() = torch::Tensor();
      double a = now();
      distill::functional::dist_loss(s, t).backward();
      double b = now();
      {
        torch::NoGradGuard no_grad;
        auto ps = torch::log_softmax(s, 1);
        auto pt = torch::softmax(t, 1);
      }
      double c = now();
      if (rep >= warm) total += b - a, floor += c - b;
    }
    auto mean = [&](double x) { return x / reps; };
    std::cout << N << "x" << C << ": floor " << mean(floor) << " us, dist " << mean(total) << " us = "
              << total / floor << " x floor; pass 1 (softmaxes, column sums) " << mean(distill::g_pass[0])
              << ", pass 2 (row and centred column sums) " << mean(distill::g_pass[1]) << ", pass 3 (gradients) "
              << mean(distill::g_pass[2]) << ", statistics between passes " << mean(distill::g_pass[3])
              << ", outside the kernel (autograd, allocation, backward) "
              << mean(total - distill::g_pass[0] - distill::g_pass[1] - distill::g_pass[2] - distill::g_pass[3]) << "\n";
  }
}
