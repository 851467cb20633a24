#pragma once
// Several teachers as one: their soft targets averaged (docs/methods.md, multi-teacher). The
// ensemble is given to a logit loss as logits, so KD, DKD, DIST, WSL and NKD take it as they
// take one teacher.

#include <cmath>
#include <vector>

#include "distill/losses/common.hpp"
#include "distill/losses/topk.hpp"

namespace distill::functional {

/// Logits whose softmax at `temperature` is the weighted mean of the teachers' softmaxes at
/// that temperature:
///   z = T log sum_i w_i softmax(z_i / T),   w = weights / sum(weights)
/// (empty `weights`: equal). A loss that softens its teacher at the same T (KD's
/// temperature, DIST's tau) then learns exactly the averaged soft targets. Teachers are [N, C]
/// logits of one shape, or top-k teachers (losses/topk.hpp, made dense here: a row shift
/// changes no softmax). No gradient reaches the teachers.
///
///   auto teacher = distill::functional::ensemble_logits({t1_logits, t2_logits}, {2, 1}, 4.0);
///   auto loss = distill::functional::kd_loss(student_logits, teacher, distill::KDOptions().temperature(4));
inline torch::Tensor ensemble_logits(const std::vector<torch::Tensor>& teachers, const std::vector<double>& weights = {},
                                     double temperature = 1.0) {
  constexpr const char* kWhat = "ensemble_logits";
  detail::check_scale(kWhat, "temperature", temperature);
  if (teachers.empty()) fail(kWhat, ": no teachers");
  if (!weights.empty() && weights.size() != teachers.size())
    fail(kWhat, ": ", weights.size(), " weights for ", teachers.size(), " teachers");
  double total = 0;
  for (double w : weights) {
    detail::check_weight(kWhat, "a teacher weight", w);
    total += w;
  }
  if (!weights.empty() && !(total > 0)) fail(kWhat, ": the teacher weights sum to 0");
  std::vector<torch::Tensor> terms;
  torch::Tensor first;
  for (size_t i = 0; i < teachers.size(); ++i) {
    auto z = teachers[i].is_sparse() ? teachers[i].to_dense() : teachers[i];
    const auto arg = concat("teachers[", i, "]");
    detail::check_logits(kWhat, arg, z);
    if (first.defined()) detail::check_same(kWhat, "teachers[0]", first, arg, z);
    else first = z;
    const double w = weights.empty() ? 1.0 / static_cast<double>(teachers.size()) : weights[i] / total;
    if (w > 0) terms.push_back(torch::log_softmax(detail::compute(z).detach() / temperature, 1) + std::log(w));
  }
  return torch::logsumexp(torch::stack(terms), 0) * temperature;
}

}  // namespace distill::functional
