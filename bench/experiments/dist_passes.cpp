// Where DIST's row kernel spends its time (issue 22): the three passes over the rows and the
// per-column / per-row statistics between them, timed inside forward_rows by a copy of
// include/ with dist_passes.patch applied (clock reads around each stage, into g_pass), next to the
// two-softmax floor, forward + backward at N x 1000 float32, one thread, mean of 300 calls
// after 30 warm-up calls. bench/results/dist_passes.txt has the run and the commands.
#include <iostream>

#include "beside_floor.hpp"
#include "distill/losses/dist.hpp"

int main() {
  at::set_num_threads(1);
  for (int64_t N : kRows) {
    const int64_t C = kClasses, reps = kReps;
    auto logits = random_logits(N, C);  // lambdas below capture them: no structured binding in C++17
    auto &s = logits.first, &t = logits.second;
    const auto time = time_beside_floor(s, t, [&] { return distill::functional::dist_loss(s, t); },
                                        [] { for (double& g : distill::g_pass) g = 0; });
    const double total = time.loss_us * reps, floor = time.floor_us * reps;
    auto mean = [&](double x) { return x / reps; };
    std::cout << N << "x" << C << ": floor " << mean(floor) << " us, dist " << mean(total) << " us = "
              << total / floor << " x floor; pass 1 (softmaxes, column sums) " << mean(distill::g_pass[0])
              << ", pass 2 (row and centred column sums) " << mean(distill::g_pass[1]) << ", pass 3 (gradients) "
              << mean(distill::g_pass[2]) << ", statistics between passes " << mean(distill::g_pass[3])
              << ", outside the kernel (autograd, allocation, backward) "
              << mean(total - distill::g_pass[0] - distill::g_pass[1] - distill::g_pass[2] - distill::g_pass[3]) << "\n";
  }
}
