#pragma once
// Mixed precision: an autocast scope and dynamic loss scaling with the reference's (Paddle's)
// rules. Autocast's C++ API changed in PyTorch 2.4 (per-device functions); both are handled.

#include <cmath>
#include <vector>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "distill/core/error.hpp"

namespace distill::train {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define DISTILL_AUTOCAST_PER_DEVICE 1
#else
#define DISTILL_AUTOCAST_PER_DEVICE 0
#endif

/// Runs the enclosed forward pass under autocast to `dtype` (float16 or bfloat16) on
/// `device`'s type; does nothing when not enabled. Losses compute in float32 regardless.
class AutocastScope {
 public:
  AutocastScope(bool enabled, torch::Device device, torch::Dtype dtype) : enabled_(enabled), cuda_(device.is_cuda()) {
    if (!enabled_) return;
#if DISTILL_AUTOCAST_PER_DEVICE
    const auto type = cuda_ ? at::kCUDA : at::kCPU;
    previous_ = at::autocast::is_autocast_enabled(type);
    previous_dtype_ = at::autocast::get_autocast_dtype(type);
    at::autocast::set_autocast_dtype(type, dtype);
    at::autocast::set_autocast_enabled(type, true);
#else
    if (cuda_) {
      previous_ = at::autocast::is_enabled();
      previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
      at::autocast::set_autocast_gpu_dtype(dtype);
      at::autocast::set_enabled(true);
    } else {
      previous_ = at::autocast::is_cpu_enabled();
      previous_dtype_ = at::autocast::get_autocast_cpu_dtype();
      at::autocast::set_autocast_cpu_dtype(dtype);
      at::autocast::set_cpu_enabled(true);
    }
#endif
  }
  ~AutocastScope() {
    if (!enabled_) return;
#if DISTILL_AUTOCAST_PER_DEVICE
    const auto type = cuda_ ? at::kCUDA : at::kCPU;
    at::autocast::set_autocast_enabled(type, previous_);
    at::autocast::set_autocast_dtype(type, previous_dtype_);
#else
    if (cuda_) {
      at::autocast::set_enabled(previous_);
      at::autocast::set_autocast_gpu_dtype(previous_dtype_);
    } else {
      at::autocast::set_cpu_enabled(previous_);
      at::autocast::set_autocast_cpu_dtype(previous_dtype_);
    }
#endif
    at::autocast::clear_cache();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_, cuda_, previous_ = false;
  at::ScalarType previous_dtype_ = at::kFloat;
};

/// Dynamic loss scaling with Paddle's defaults (the reference's AMP section): the loss is
/// multiplied by `scale` before backward; before the step, gradients are divided by it and
/// checked. A step with a non-finite gradient is skipped; after 2 such steps the scale halves,
/// after 1000 finite steps in a row it doubles.
class GradScaler {
 public:
  explicit GradScaler(double initial_scale = 128.0, bool dynamic = true) : scale_(initial_scale), dynamic_(dynamic) {
    if (!(initial_scale > 0)) distill::fail("GradScaler: the initial scale must be positive");
  }

  torch::Tensor scale(const torch::Tensor& loss) const { return loss * scale_; }

  /// Unscales the gradients of `params`; returns whether all are finite (then step).
  bool unscale_and_check(const std::vector<torch::Tensor>& params) {
    std::vector<torch::Tensor> finite;
    for (const auto& p : params)
      if (p.grad().defined()) {
        p.mutable_grad().mul_(1.0 / scale_);
        finite.push_back(p.grad().isfinite().all());
      }
    const bool ok = finite.empty() || torch::stack(finite).all().item<bool>();
    update(ok);
    return ok;
  }

  double current_scale() const { return scale_; }
  int64_t good_steps() const { return good_; }
  int64_t bad_steps() const { return bad_; }
  void restore(double scale, int64_t good, int64_t bad) {
    scale_ = scale;
    good_ = good;
    bad_ = bad;
  }

 private:
  void update(bool ok) {
    if (!dynamic_) return;
    if (ok) {
      bad_ = 0;
      if (++good_ == 1000) {
        scale_ *= 2;
        good_ = 0;
      }
    } else {
      good_ = 0;
      if (++bad_ == 2) {
        scale_ = std::max(scale_ * 0.5, 1.0);
        bad_ = 0;
      }
    }
  }

  double scale_;
  bool dynamic_;
  int64_t good_ = 0, bad_ = 0;
};

}  // namespace distill::train
