#pragma once
// Shared by the experiments here: forward + backward of a loss, mean over `reps` calls after
// `warm` warm-up calls, each call followed by the two-softmax floor on the same inputs (timed
// in the same loop, so both see the same cache and clock). `reset` runs once, after the warm-up
// (it zeroes an instrumented kernel's counters).
#include <chrono>
#include <functional>

#include <torch/torch.h>

struct BesideFloor {
  double loss_us = 0, floor_us = 0;  // means per call
};

inline BesideFloor time_beside_floor(torch::Tensor& student, torch::Tensor& teacher,
                                     const std::function<torch::Tensor()>& loss, const std::function<void()>& reset,
                                     int warm = 30, int reps = 300) {
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
