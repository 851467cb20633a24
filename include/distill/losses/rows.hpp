#pragma once
// Building blocks of the fused losses: warm scratch buffers, row-wise softmax pieces, and the
// hand-over of gradients that forward already formed.
//
// The fused losses (KD, CE, DKD, DML, DIST, WSL, SKD, distance) compute their gradients in the
// forward pass with closed forms; backward only scales them by the incoming gradient, in place.
// Their passes are ATen ops, so the same code runs on CPU and CUDA; in float32 on a CPU with
// AVX2, KD, DKD, DML, DIST, WSL, SKD and CE run a vectorised row kernel instead (losses/simd.hpp,
// over_rows below). What they save against eager autograd is passes over [N, C] and, above
// all, fresh [N, C] allocations: on the CPU a fresh buffer of a few MB is memory the kernel
// faults in page by page (glibc hands large blocks back to the system on free), which costs
// more than the arithmetic on it.

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include <torch/torch.h>

#include "distill/core/error.hpp"
#include "distill/losses/simd.hpp"

namespace distill {

namespace detail {

/// On by default; tests and benchmarks turn the vectorised row kernels off to compare them
/// with the ATen-op path (distill::set_row_kernels).
inline bool& row_kernels_flag() {
  static bool on = true;
  return on;
}

/// Per-thread scratch buffers of the fused losses on the CPU, kept warm between calls. Each
/// slot grows to the largest request it has served. Off the CPU (CUDA's caching allocator
/// already reuses memory) a slot is a plain new tensor.
inline std::array<torch::Tensor, 6>& scratch_slots() {
  thread_local std::array<torch::Tensor, 6> slots;
  return slots;
}

/// A contiguous buffer of `sizes` (or shaped like `like`: same dtype and device), contents
/// undefined. A loss uses each slot once per call and never lets it escape: the next call
/// overwrites it.
inline torch::Tensor scratch(size_t slot, torch::IntArrayRef sizes, const torch::TensorOptions& options) {
  if (options.device().type() != torch::kCPU) return torch::empty(sizes, options);
  auto& buffer = scratch_slots().at(slot);
  const int64_t n = c10::multiply_integers(sizes);
  if (!buffer.defined() || buffer.dtype() != options.dtype() || buffer.numel() < n)
    buffer = torch::empty({n}, options);
  return buffer.narrow(0, 0, n).view(sizes);
}
inline torch::Tensor scratch(size_t slot, const torch::Tensor& like) {
  return scratch(slot, like.sizes(), like.options().requires_grad(false));
}

/// The buffer that becomes an input's gradient: a fresh tensor when that gradient is wanted
/// (autograd takes it over), a warm scratch slot otherwise (forward only, e.g. evaluation).
inline torch::Tensor gradient_buffer(bool wanted, size_t slot, const torch::Tensor& like) {
  return wanted ? torch::empty(like.sizes(), like.options().requires_grad(false)) : scratch(slot, like);
}

}  // namespace detail

/// Frees this thread's scratch buffers of the fused losses (they are kept between calls so
/// that a training loop does not fault in fresh memory at every step; at 1024 x 32000 logits
/// that is two to three 131 MB buffers for KD, DKD, WSL and CE, up to six of one row block for
/// DML, DIST and SKD (DIST's row kernel: 7 C floats per stripe, one stripe per 32 rows, at most 16),
/// and two whole ones for DIST when it runs without gradients).
///
///   distill::release_loss_workspace();  // e.g. after training, before a memory-hungry phase
inline void release_loss_workspace() {
  for (auto& buffer : detail::scratch_slots()) buffer = torch::Tensor();
}

/// Turns the vectorised CPU row kernels of the fused losses (float32) on or off; off, those
/// losses run as ATen ops, as they do in float64 and on CUDA. For comparisons: both paths give
/// the same values to float32 rounding.
///
///   distill::set_row_kernels(false);
inline void set_row_kernels(bool on) { detail::row_kernels_flag() = on; }

namespace detail {

/// out = scale * (z - rowmax(z)): logits ready for a stable exp. `scale` > 0. Returns
/// scale * rowmax(z), [N, 1] (so that the log-sum-exp of scale * z is that plus the log of the
/// row sum of exp(out)). The difference comes first: scale * z - scale * max in one fused
/// pass is off by the rounding of scale * max (~1e13 at logits of 1e30 and T = 3, whose exp
/// is inf) unless scale is a power of two.
inline torch::Tensor shift_into(torch::Tensor& out, const torch::Tensor& z, double scale) {
  auto max = z.amax(1, true);
  torch::sub_out(out, z, max);
  if (scale != 1.0) out.mul_(scale), max.mul_(scale);
  return max;
}

/// exp(out) written over `out`, and its row sums [N, 1].
inline torch::Tensor exp_rows(torch::Tensor& out) {
  return out.exp_().sum(1, true);
}

/// out = scale * z in one pass.
inline torch::Tensor& scale_into(torch::Tensor& out, const torch::Tensor& z, double scale) {
  return torch::add_out(out, torch::zeros({}, z.options()), z, scale);
}

/// out = softmax(z) over the rows: one exponential pass (as fast here as ATen's softmax, and
/// it writes into a warm buffer).
inline torch::Tensor& softmax_into(torch::Tensor& out, const torch::Tensor& z) {
  shift_into(out, z, 1.0);
  return out.div_(exp_rows(out));
}

/// grad = p (g - <p, g>) per row (softmax's backward, ATen's fused kernel). `grad` must not
/// share memory with `g` or `p`.
inline torch::Tensor softmax_backward_into(torch::Tensor grad, const torch::Tensor& g, const torch::Tensor& p) {
  return at::_softmax_backward_data_out(grad, g, p, 1, p.scalar_type());
}

/// The column of each row's largest entry, [N, 1] int64. On the CPU: ATen's vectorised row
/// max, then a scan for its first position (ATen 1.13's argmax is a scalar loop, ~10x slower).
/// A row without a largest entry (NaN) gives 0.
inline torch::Tensor row_argmax(const torch::Tensor& x) {
  if (!x.is_cpu() || !x.is_contiguous() || x.dim() != 2) return x.argmax(1, true);
  const int64_t rows = x.size(0), columns = x.size(1);
  auto max = x.amax(1, true);
  auto index = torch::empty({rows, 1}, x.options().dtype(torch::kLong));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "row_argmax", [&] {
    const scalar_t* values = x.data_ptr<scalar_t>();
    const scalar_t* top = max.data_ptr<scalar_t>();
    int64_t* out = index.data_ptr<int64_t>();
    for (int64_t r = 0; r < rows; ++r) {
      const scalar_t* row = values + r * columns;
      int64_t j = 0;
      while (j < columns && !(row[j] == top[r])) ++j;
      out[r] = j < columns ? j : 0;
    }
  });
  return index;
}

/// Row sums of a * b as [N, 1], through `buffer` (overwritten; may be a or b itself).
inline torch::Tensor rowdot(const torch::Tensor& a, const torch::Tensor& b, torch::Tensor buffer) {
  return torch::mul_out(buffer, a, b).sum(1, true);
}

/// Whether the vectorised CPU row kernels take these [N, C] inputs: float32, on the CPU,
/// contiguous, and a CPU with AVX2 and FMA (the float64 path, CUDA and other CPUs keep going
/// through ATen ops: without AVX2 the kernels' exponential is slower than ATen's,
/// bench/results/simd_exp.txt).
inline bool row_kernel_applies(const torch::Tensor& a, const torch::Tensor& b) {
#ifdef DISTILL_SIMD
  auto fits = [](const torch::Tensor& x) {
    return x.is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 2 && x.is_contiguous();
  };
  return row_kernels_flag() && simd::has_avx2() && fits(a) && fits(b) && a.sizes() == b.sizes() && a.size(1) > 0;
#else
  (void)a, (void)b;
  return false;
#endif
}

/// Runs `kernel(begin, end, scratch)` over the rows [0, rows) in parallel (at::parallel_for,
/// blocks of at least 2^15 elements), each thread with `scratch_floats` floats of its own,
/// kept warm between calls. Returns the sum of `losses` (one double per row, written by the
/// kernel) in row order, so the result does not depend on the number of threads.
template <class Kernel>
double over_rows(int64_t rows, int64_t columns, int64_t scratch_floats, std::vector<double>& losses, Kernel&& kernel) {
  losses.assign(static_cast<size_t>(rows), 0.0);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, columns));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scratch;
    if (static_cast<int64_t>(scratch.size()) < scratch_floats) scratch.resize(static_cast<size_t>(scratch_floats));
    kernel(begin, end, scratch.data());
  });
  double total = 0;
  for (double l : losses) total += l;
  return total;
}

/// Tests set this to force row blocks of a given height (0: the default below).
inline int64_t& chunk_rows_override() {
  thread_local int64_t rows = 0;
  return rows;
}

/// Rows per block for the losses that work through [N, C] in row blocks (DML, DIST, SKD): on the
/// CPU blocks of about 2^20 elements, so that their scratch buffers stay small and in cache and
/// the only [N, C] tensors are the gradients; on CUDA one block (every block costs kernel
/// launches there, and the caching allocator already reuses memory).
inline int64_t chunk_rows(const torch::Tensor& like) {
  if (chunk_rows_override() > 0) return chunk_rows_override();
  if (!like.is_cpu()) return std::max<int64_t>(1, like.size(0));
  return std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, like.size(1)));
}

/// Which inputs of a fused loss want a gradient: bit 0 the first, bit 1 the second. Decided
/// before Function::apply (inside forward, grad mode is off).
inline int64_t wanted_gradients(const torch::Tensor& first, const torch::Tensor& second) {
  if (!torch::GradMode::is_enabled()) return 0;
  return (first.requires_grad() ? 1 : 0) | (second.requires_grad() ? 2 : 0);
}

/// Keeps the gradients that forward formed (undefined: none for that input).
inline void keep_gradients(torch::autograd::AutogradContext* ctx, const torch::Tensor& first,
                           const torch::Tensor& second = {}) {
  if (first.defined()) ctx->saved_data["grad0"] = first;
  if (second.defined()) ctx->saved_data["grad1"] = second;
  ctx->saved_data["pending"] = true;
}

/// The row-kernel path of a fused loss: fresh gradients for the wanted inputs (bit 0 `first`,
/// bit 1 `second`), kernel(begin, end, scratch, losses, grad_first, grad_second) over the rows
/// (over_rows, `scratch_floats` floats per thread; a pointer is null where no gradient is
/// wanted), the gradients kept for backward. Returns the sum of the per-row losses.
template <class Kernel>
double run_row_kernel(torch::autograd::AutogradContext* ctx, const torch::Tensor& first, const torch::Tensor& second,
                      int64_t wanted, int64_t scratch_floats, Kernel&& kernel) {
  const auto options = first.options().requires_grad(false);
  torch::Tensor g0, g1;
  if (wanted & 1) g0 = torch::empty(first.sizes(), options);
  if (wanted & 2) g1 = torch::empty(second.sizes(), options);
  float* p0 = g0.defined() ? g0.data_ptr<float>() : nullptr;
  float* p1 = g1.defined() ? g1.data_ptr<float>() : nullptr;
  std::vector<double> losses;
  const double total = over_rows(first.size(0), first.size(1), scratch_floats, losses,
                                 [&](int64_t begin, int64_t end, float* rows) { kernel(begin, end, rows, losses.data(), p0, p1); });
  if (g0.defined() || g1.defined()) keep_gradients(ctx, g0, g1);
  return total;
}

/// Backward of a fused loss: the kept gradients times the incoming (scalar) gradient, scaled
/// in place and handed over, so no new [N, C] tensor is made. A second backward through the
/// same forward (retain_graph) is refused: the gradients are gone.
inline torch::autograd::variable_list hand_over(torch::autograd::AutogradContext* ctx, const torch::Tensor& grad_output,
                                                size_t num_inputs, const char* loss) {
  if (!ctx->saved_data.count("pending"))
    fail(loss, ": backward ran twice through one forward (retain_graph); the fused loss keeps its gradients for "
               "one backward only: compute the loss again");
  ctx->saved_data.erase("pending");
  const bool unit = grad_output.is_cpu() && grad_output.item<double>() == 1.0;
  torch::autograd::variable_list out(num_inputs);
  for (size_t i = 0; i < 2; ++i) {
    const std::string key = "grad" + std::to_string(i);
    if (!ctx->saved_data.count(key)) continue;
    auto grad = ctx->saved_data[key].toTensor();
    ctx->saved_data.erase(key);
    out[i] = unit ? grad : grad.mul_(grad_output);
  }
  return out;
}

/// Base of the fused losses: Derived::forward forms the gradients and calls keep_gradients;
/// this backward hands them over. `Inputs` is the number of forward arguments (tensors and
/// options alike); Derived::kLoss names the loss in errors.
template <class Derived, size_t Inputs>
struct FusedFunction : public torch::autograd::Function<Derived> {
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_output) {
    return hand_over(ctx, grad_output[0], Inputs, Derived::kLoss);
  }
};

}  // namespace detail
}  // namespace distill
