#pragma once
// CRD: contrastive representation distillation (Tian et al., ICLR 2020; the official
// RepDistiller code, docs/methods.md). Student and teacher features are embedded, and each
// side's embedding is contrasted (NCE with K negatives) against a memory bank of the other
// side's embeddings of the whole training set, updated with momentum.

#include <cmath>

#include "distill/losses/common.hpp"

namespace distill {

/// Options of CRDLoss: the flattened feature sizes of student and teacher, the number of
/// training samples (the memory banks' rows), the embedding size, the negatives per positive,
/// the NCE temperature and the memory momentum (official defaults).
struct CRDOptions {
  CRDOptions(int64_t student_dim, int64_t teacher_dim, int64_t n_data)
      : student_dim_(student_dim), teacher_dim_(teacher_dim), n_data_(n_data) {}
  TORCH_ARG(int64_t, student_dim);
  TORCH_ARG(int64_t, teacher_dim);
  TORCH_ARG(int64_t, n_data);
  TORCH_ARG(int64_t, feat_dim) = 128;
  TORCH_ARG(int64_t, nce_k) = 16384;
  TORCH_ARG(double, nce_t) = 0.07;
  TORCH_ARG(double, nce_m) = 0.5;
};

namespace functional {

/// The NCE loss of CRD's contrast scores x [B, K + 1] (column 0 the positive), with noise
/// probability 1 / n_data: -(sum_b log(x_b0 / (x_b0 + K/n + 1e-7)) + sum_{b,k} log((K/n) / (x_bk + K/n + 1e-7))) / B.
inline torch::Tensor crd_contrast_loss(const torch::Tensor& x, int64_t n_data) {
  constexpr const char* kLoss = "crd_contrast_loss";
  detail::check_rank(kLoss, "x", x, 2, "[B, K + 1]");
  if (x.size(1) < 2) fail(kLoss, ": 'x' needs a positive and at least one negative per row, got ", detail::describe(x));
  const double noise = static_cast<double>(x.size(1) - 1) / static_cast<double>(n_data), eps = 1e-7;
  auto positive = x.select(1, 0), negative = x.narrow(1, 1, x.size(1) - 1);
  auto log_d1 = (positive / (positive + (noise + eps))).log();
  auto log_d0 = (noise / (negative + (noise + eps))).log();
  return -(log_d1.sum() + log_d0.sum()) / static_cast<double>(x.size(0));
}

}  // namespace functional

/// CRD: with v_s = l2normalize(embed_s(f_s)) and v_t = l2normalize(embed_t(f_t)) (Linear
/// heads), and rows idx of the batch and K negatives drawn uniformly from [0, n_data) (or given
/// as `contrast` [B, K + 1] with column 0 = idx):
///   out_s = exp(memory_t[contrast] . v_s / T) / Z_s,  out_t = exp(memory_s[contrast] . v_t / T) / Z_t
///   loss = crd_contrast_loss(out_s) + crd_contrast_loss(out_t)
/// Z_s and Z_t are fixed at the first call to mean(exp(...)) * n_data. Then the memory rows idx
/// become normalize(m * memory + (1 - m) * v) (no gradient). The heads must reach the
/// optimizer; the memories are buffers (in the checkpoint).
///
///   distill::CRDLoss crd(distill::CRDOptions(512, 512, dataset_size));
///   auto loss = crd(student_features, teacher_features, batch.indices);
class CRDLossImpl : public torch::nn::Cloneable<CRDLossImpl> {
 public:
  explicit CRDLossImpl(CRDOptions options) : options(std::move(options)) { reset(); }

  void reset() override {
    constexpr const char* kLoss = "CRDLoss";
    namespace nn = torch::nn;
    const auto& o = options;
    check_size(kLoss, "student_dim", o.student_dim());
    check_size(kLoss, "teacher_dim", o.teacher_dim());
    check_size(kLoss, "n_data", o.n_data());
    check_size(kLoss, "feat_dim", o.feat_dim());
    check_size(kLoss, "nce_k", o.nce_k());
    check_parameters(kLoss, 1.0 * (o.student_dim() + o.teacher_dim() + 2.0 * o.n_data()) * o.feat_dim());
    detail::check_scale(kLoss, "nce_t", o.nce_t());
    if (!(o.nce_m() >= 0 && o.nce_m() <= 1)) fail(kLoss, ": nce_m must be in [0, 1], got ", o.nce_m());
    embed_s = register_module("embed_s", nn::Linear(o.student_dim(), o.feat_dim()));
    embed_t = register_module("embed_t", nn::Linear(o.teacher_dim(), o.feat_dim()));
    const double stdv = 1.0 / std::sqrt(static_cast<double>(o.feat_dim()) / 3.0);
    memory_s = register_buffer("memory_s", torch::rand({o.n_data(), o.feat_dim()}) * (2 * stdv) - stdv);
    memory_t = register_buffer("memory_t", torch::rand({o.n_data(), o.feat_dim()}) * (2 * stdv) - stdv);
    z = register_buffer("z", torch::full({2}, -1.0));
  }

  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& indices,
                        torch::Tensor contrast = {}) {
    constexpr const char* kLoss = "CRDLoss";
    const auto& o = options;
    detail::check_floating(kLoss, "student", student);
    detail::check_same_kind(kLoss, "student", student, "teacher", teacher);
    const int64_t b = student.size(0);
    if (student.dim() < 2 || teacher.size(0) != b || student[0].numel() != o.student_dim() || teacher[0].numel() != o.teacher_dim())
      fail(kLoss, ": expected student [B, ", o.student_dim(), "] and teacher [B, ", o.teacher_dim(),
           "] features (flattened after the batch axis), got ", student.sizes(), " and ", teacher.sizes());
    detail::check_defined(kLoss, "indices", indices);
    if (indices.is_floating_point() || indices.dim() != 1 || indices.size(0) != b)
      fail(kLoss, ": 'indices' must be the batch's [", b, "] integer dataset indices, got ", detail::describe(indices));
    auto idx = indices.to(student.device(), torch::kLong);
    check_rows(idx, "indices");
    if (!contrast.defined()) {
      contrast = torch::randint(0, o.n_data(), {b, o.nce_k() + 1}, idx.options());
      contrast.select(1, 0).copy_(idx);
    } else {
      contrast = contrast.to(student.device(), torch::kLong);
      if (contrast.dim() != 2 || contrast.size(0) != b || contrast.size(1) < 2)
        fail(kLoss, ": 'contrast' must be [", b, ", K + 1] dataset indices, got ", detail::describe(contrast));
      check_rows(contrast, "contrast");
    }
    auto fs = detail::compute(student).reshape({b, -1}), ft = detail::compute(teacher).reshape({b, -1});
    detail::check_parameters_match(kLoss, *this, fs);
    auto vs = detail::safe_normalize(embed_s->forward(fs), 1), vt = detail::safe_normalize(embed_t->forward(ft), 1);
    const int64_t k1 = contrast.size(1), d = o.feat_dim();
    auto scores = [&](const torch::Tensor& memory, const torch::Tensor& v) {
      auto rows = memory.index_select(0, contrast.reshape({-1})).view({b, k1, d}).to(v.scalar_type());
      return torch::exp(torch::bmm(rows, v.view({b, d, 1})).squeeze(2) / o.nce_t());
    };
    auto out_s = scores(memory_t, vs), out_t = scores(memory_s, vt);
    {
      torch::NoGradGuard no_grad;
      const double n = static_cast<double>(o.n_data());
      if (z[0].item<double>() < 0) z[0] = out_s.mean().item<double>() * n;
      if (z[1].item<double>() < 0) z[1] = out_t.mean().item<double>() * n;
    }
    out_s = out_s / z[0].item<double>();
    out_t = out_t / z[1].item<double>();
    {
      torch::NoGradGuard no_grad;
      auto update = [&](torch::Tensor& memory, const torch::Tensor& v) {
        auto rows = memory.index_select(0, idx) * o.nce_m() + v.to(memory.scalar_type()) * (1 - o.nce_m());
        memory.index_copy_(0, idx, rows / rows.norm(2, 1, /*keepdim=*/true));
      };
      update(memory_s, vs);
      update(memory_t, vt);
    }
    return functional::crd_contrast_loss(out_s, o.n_data()) + functional::crd_contrast_loss(out_t, o.n_data());
  }

  void pretty_print(std::ostream& stream) const override {
    stream << "distill::CRDLoss(n_data=" << options.n_data() << ", feat_dim=" << options.feat_dim()
           << ", nce_k=" << options.nce_k() << ")";
  }

  CRDOptions options;
  torch::nn::Linear embed_s{nullptr}, embed_t{nullptr};
  torch::Tensor memory_s, memory_t, z;

 private:
  void check_rows(const torch::Tensor& rows, const char* arg) const {
    auto range = torch::stack({rows.min(), rows.max()}).cpu();
    if (range[0].item<int64_t>() < 0 || range[1].item<int64_t>() >= options.n_data())
      fail("CRDLoss: '", arg, "' holds dataset index ", range[0].item<int64_t>() < 0 ? range[0].item<int64_t>() : range[1].item<int64_t>(),
           " outside [0, ", options.n_data(), "); n_data must be the training set's size");
  }
};
TORCH_MODULE(CRDLoss);

}  // namespace distill
