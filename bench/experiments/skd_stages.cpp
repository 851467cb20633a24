// Where SKD's row kernel spends its time (issue 22): the stages of each row (row statistics;
// exponentials and loss; the teacher's gradient and its normalisation's backward; the student's),
// read with the CPU's cycle counter by a copy of include/ with skd_stages.patch applied, as
// shares of the cycles spent in the row kernel; next to the whole call and the two-softmax floor,
// forward + backward at N x 1000 float32 with the teacher requiring a gradient (as in loss_bench),
// one thread, mean of 300 calls after 30. bench/results/skd_stages.txt has the run and the commands.
#include <iostream>

#include "beside_floor.hpp"
#include "distill/losses/skd.hpp"

int main() {
  at::set_num_threads(1);
  for (int64_t N : kRows) {
    const int64_t C = kClasses;
    auto logits = random_logits(N, C);  // lambdas below capture them: no structured binding in C++17
    auto &s = logits.first, &t = logits.second;
    auto y = torch::randint(0, C, {N});
    const auto time = time_beside_floor(s, t, [&] { return distill::functional::skd_loss(s, t, y); },
                                        [] { for (auto& g : distill::g_stage) g = 0; });
    double cycles = 0;
    for (auto g : distill::g_stage) cycles += static_cast<double>(g);
    std::cout << N << "x" << C << ": floor " << time.floor_us << " us, skd " << time.loss_us << " us = " << time.loss_us / time.floor_us
              << " x floor; shares of the row kernel's cycles: row statistics " << distill::g_stage[0] / cycles
              << ", exponentials and loss " << distill::g_stage[1] / cycles << ", teacher gradient "
              << distill::g_stage[2] / cycles << ", student gradient " << distill::g_stage[3] / cycles << "\n";
  }
}
