#pragma once
// Shared by the experiments here: forward + backward of a loss, mean over `reps` calls after
// `warm` warm-up calls, each call followed by the two-softmax floor on the same inputs (timed
// in the same loop, so both see the same cache and clock). `reset` runs once, after the warm-up
// (it zeroes an instrumented kernel's counters).
#include <chrono>
#include <functional>
#include <utility>

#include <torch/torch.h>

/// The experiments' sizes: N x 1000 logits for N in kRows, timed over kReps calls.
constexpr int64_t kRows[] = {64, 256, 1024}, kClasses = 1000, kReps = 300;

/// Student and teacher logits [n, c], the same in every experiment: seed 0, standard normal
/// times 3, both requiring a gradient (the teacher's, as in loss_bench).
inline std::pair<torch::Tensor, torch::Tensor> random_logits(int64_t n, int64_t c) {
  torch::manual_seed(0);
  auto student = (torch::randn({n, c}) * 3).requires_grad_();
  auto teacher = (torch::randn({n, c}) * 3).requires_grad_();
  return {student, teacher};
}

struct BesideFloor {
  double loss_us = 0, floor_us = 0;  // means per call
};

inline BesideFloor time_beside_floor(torch::Tensor& student, torch::Tensor& teacher,
                                     const std::function<torch::Tensor()>& loss, const std::function<void()>& reset,
                                     int warm = 30, int reps = kReps) {
  auto now = [] { return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count(); };
  BesideFloor out;
  for (int rep = 0; rep < warm + reps; ++rep) {
    if (rep == warm) reset();
    student.mutable_grad() = torch::Tensor(), teacher.mutable_grad() = torch::Tensor();
    const double a = now();
    loss().backward();
    const double b = now();
    {
      torch::NoGradGuard no_grad;
      auto ps = torch::log_softmax(student, 1);
      auto pt = torch::softmax(teacher, 1);
    }
    const double c = now();
    if (rep >= warm) out.loss_us += b - a, out.floor_us += c - b;
  }
  out.loss_us /= reps, out.floor_us /= reps;
  return out;
}
