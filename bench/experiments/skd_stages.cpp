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
  for (int64_t N : {64, 256, 1024}) {
    torch::manual_seed(0);
    const int64_t C = 1000, reps = 300;
    auto s = (torch::randn({N, C}) * 3).requires_grad_(), t = (torch::randn({N, C}) * 3).requires_grad_();
    auto y = torch::randint(0, C, {N});
    const auto time = time_beside_floor(s, t, [&] { return distill::functional::skd_loss(s, t, y); },
                                        [] { for (auto& g : distill::g_stage) g = 0; });
    const double total = time.loss_us * reps, floor = time.floor_us * reps;
    double cycles = 0;
    for (auto g : distill::g_stage) cycles += static_cast<double>(g);
    std::cout << N << "x" << C << ": floor " << floor / reps << " us, skd " << total / reps << " us = " << total / floor
              << " x floor; shares of the row kernel's cycles: row statistics " << distill::g_stage[0] / cycles
              << ", exponentials and loss " << distill::g_stage[1] / cycles << ", teacher gradient "
              << distill::g_stage[2] / cycles << ", student gradient " << distill::g_stage[3] / cycles << "\n";
  }
}
