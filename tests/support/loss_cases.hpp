#pragma once
// Reference cases for the losses (tests/reference/losses.json, written by
// make_loss_fixtures.py from the published formulas): decoding, running a case through
// distill, and comparing value and gradients. Shared by the Catch2 suite and by the consumer
// program that builds against the installed package.

#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "distill/core/reader.hpp"
#include "distill/losses.hpp"

namespace distill_test {

using json = nlohmann::json;
using Tensors = std::map<std::string, torch::Tensor>;

inline json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return json::parse(in);
}

#ifdef DISTILL_TEST_DATA
/// The cases of losses.json (the test suite's copy; bench/loss_parity reads a path it is given).
inline const json& fixture_cases() {
  static const auto data = load_json(DISTILL_TEST_DATA "/losses.json");
  return data.at("cases");
}
#endif

inline torch::Tensor decode(const json& j, torch::Dtype floating = torch::kDouble) {
  auto shape = j.at("shape").get<std::vector<int64_t>>();
  if (j.at("dtype") == "int64")
    return torch::tensor(j.at("data").get<std::vector<int64_t>>(), torch::kLong).reshape(shape);
  return torch::tensor(j.at("data").get<std::vector<double>>(), torch::kDouble)
      .reshape(shape)
      .to(floating);
}

/// One reference case made runnable: `evaluate(inputs)` computes the loss through distill from
/// the given inputs (so finite differences can perturb them); parameters live in `module`.
struct LossCase {
  std::string id, loss;
  Tensors inputs;           // float leaves, keyed as in the fixture
  torch::Tensor target;     // undefined when the case has none
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor(const Tensors&)> evaluate;
  double expected_value = 0;
  Tensors expected_grads;   // input names, and "param:<name>" for module parameters
};

inline void load_parameters(torch::nn::Module& module, const json& params, torch::Dtype dtype) {
  module.to(dtype);
  torch::NoGradGuard no_grad;
  auto named = module.named_parameters();
  for (const auto& [name, value] : params.items()) {
    auto* p = named.find(name);
    if (p == nullptr) throw std::runtime_error("fixture parameter " + name + " not in module");
    p->copy_(decode(value, dtype));
  }
}

inline std::vector<torch::Tensor> numbered(const Tensors& in, const std::string& prefix) {
  std::vector<torch::Tensor> out;
  for (size_t i = 0; in.count(prefix + std::to_string(i)); ++i) out.push_back(in.at(prefix + std::to_string(i)));
  return out;
}

/// Builds the case in `dtype` (float64 for exact parity, float32 for a looser check) on
/// `device` (inputs, target and loss module; expected values stay on the CPU).
inline LossCase make_case(const json& spec, torch::Dtype dtype = torch::kDouble, torch::Device device = torch::kCPU) {
  namespace F = distill::functional;
  LossCase c;
  c.id = spec.at("id");
  c.loss = spec.at("loss");
  const json& o = spec.at("options");
  for (const auto& [name, value] : spec.at("inputs").items()) c.inputs[name] = decode(value, dtype).to(device);
  if (spec.contains("target")) c.target = decode(spec.at("target")).to(device);
  c.expected_value = spec.at("value");
  for (const auto& [name, value] : spec.at("grads").items()) c.expected_grads[name] = decode(value, dtype);
  const torch::Tensor target = c.target;
  const std::string& loss = c.loss;

  if (loss == "kd") {
    auto opt = distill::KDOptions().temperature(o.at("temperature")).standardize(o.value("standardize", false));
    c.evaluate = [=](const Tensors& in) { return F::kd_loss(in.at("student"), in.at("teacher"), opt); };
  } else if (loss == "ce") {
    auto opt = distill::CEOptions().label_smoothing(o.at("label_smoothing"));
    c.evaluate = [=](const Tensors& in) {
      return F::ce_loss(in.at("logits"), in.count("teacher") ? in.at("teacher") : target, opt);
    };
  } else if (loss == "dml") {
    // The fixture spells DML's options as recipes do: read them through the loss's own schema.
    distill::DMLOptions opt;
    distill::JsonSchema schema(o, "dml fixture options");
    describe(schema, opt);
    schema.done();
    c.evaluate = [=](const Tensors& in) { return F::dml_loss(in.at("student"), in.at("teacher"), opt); };
  } else if (loss == "distance") {
    distill::DistanceOptions opt;
    distill::JsonSchema schema(o, "distance fixture options");
    describe(schema, opt);
    schema.done();
    c.evaluate = [=](const Tensors& in) { return F::distance_loss(in.at("student"), in.at("teacher"), opt); };
  } else if (loss == "dkd") {
    auto opt = distill::DKDOptions()
                   .temperature(o.at("temperature"))
                   .alpha(o.at("alpha"))
                   .beta(o.at("beta"))
                   .use_target_as_gt(o.at("use_target_as_gt"))
                   .standardize(o.value("standardize", false));
    c.evaluate = [=](const Tensors& in) { return F::dkd_loss(in.at("student"), in.at("teacher"), target, opt); };
  } else if (loss == "dist") {
    auto opt = distill::DISTOptions().beta(o.at("beta")).gamma(o.at("gamma")).tau(o.value("tau", 1.0)).standardize(
        o.value("standardize", false));
    c.evaluate = [=](const Tensors& in) { return F::dist_loss(in.at("student"), in.at("teacher"), opt); };
  } else if (loss == "wsl") {
    auto opt = distill::WSLOptions().temperature(o.at("temperature")).standardize(o.value("standardize", false));
    c.evaluate = [=](const Tensors& in) { return F::wsl_loss(in.at("student"), in.at("teacher"), target, opt); };
  } else if (loss == "skd") {
    auto opt = distill::SKDOptions().temperature(o.at("temperature")).multiplier(o.at("multiplier")).alpha(o.at("alpha"));
    c.evaluate = [=](const Tensors& in) { return F::skd_loss(in.at("student"), in.at("teacher"), target, opt); };
  } else if (loss == "rkd_angle") {
    c.evaluate = [](const Tensors& in) { return F::rkd_angle_loss(in.at("student"), in.at("teacher")); };
  } else if (loss == "rkd_distance") {
    auto opt = distill::RKDOptions().exclude_diagonal(o.value("exclude_diagonal", false));
    c.evaluate = [=](const Tensors& in) { return F::rkd_distance_loss(in.at("student"), in.at("teacher"), opt); };
  } else if (loss == "mgd") {
    auto mgd = std::make_shared<distill::MGDLossImpl>(
        distill::MGDOptions(o.at("student_channels"), o.at("teacher_channels"))
            .alpha_mgd(o.at("alpha_mgd"))
            .lambda_mgd(o.at("lambda_mgd")));
    load_parameters(*mgd, spec.at("params"), dtype);
    const bool seeded = spec.contains("seed");
    const uint64_t seed = seeded ? spec.at("seed").get<uint64_t>() : 0;
    c.module = mgd;
    // The mask comes from the global generator; reseeding makes every evaluation use the
    // mask the fixture drew with the same seed.
    c.evaluate = [=](const Tensors& in) {
      if (seeded) torch::manual_seed(seed);
      return mgd->forward(in.at("student"), in.at("teacher"));
    };
  } else if (loss == "pefd") {
    auto pefd = std::make_shared<distill::PEFDLossImpl>(
        distill::PEFDOptions(o.at("student_channels"), o.at("teacher_channels"))
            .num_projectors(o.at("num_projectors"))
            .mode(o.at("mode") == "gap" ? distill::PEFDMode::gap : distill::PEFDMode::flatten));
    load_parameters(*pefd, spec.at("params"), dtype);
    c.module = pefd;
    c.evaluate = [=](const Tensors& in) { return pefd->forward(in.at("student"), in.at("teacher")); };
  } else if (loss == "afd") {
    auto afd = std::make_shared<distill::AFDLossImpl>(
        distill::AFDOptions(o.at("student_shapes"), o.at("teacher_shapes")).qk_dim(o.at("qk_dim")));
    load_parameters(*afd, spec.at("params"), dtype);
    c.module = afd;
    c.evaluate = [=](const Tensors& in) {
      return afd->forward(in.at("bilinear_key"), numbered(in, "student_values."), in.at("query"),
                          numbered(in, "teacher_values."));
    };
  } else if (loss == "nkd") {
    auto opt = distill::NKDOptions().temperature(o.at("temperature")).gamma(o.at("gamma"));
    c.evaluate = [=](const Tensors& in) { return F::nkd_loss(in.at("student"), in.at("teacher"), target, opt); };
  } else if (loss == "ctkd") {
    auto ctkd = std::make_shared<distill::CTKDLossImpl>(distill::CTKDOptions()
                                                            .t_start(o.at("t_start"))
                                                            .t_end(o.at("t_end"))
                                                            .lambda_max(o.at("lambda_max"))
                                                            .lambda_min(o.at("lambda_min"))
                                                            .lambda_epochs(o.at("lambda_epochs"))
                                                            .standardize(o.at("standardize")));
    load_parameters(*ctkd, spec.at("params"), dtype);
    ctkd->set_epoch(o.at("epoch"));
    c.module = ctkd;
    c.evaluate = [=](const Tensors& in) { return ctkd->forward(in.at("student"), in.at("teacher")); };
  } else if (loss == "ensemble_kd") {
    const std::vector<double> weights = o.at("teacher_weights");
    const double t = o.at("temperature");
    c.evaluate = [=](const Tensors& in) {
      return F::kd_loss(in.at("student"), F::ensemble_logits(numbered(in, "teachers."), weights, t),
                        distill::KDOptions().temperature(t));
    };
  } else if (loss == "fitnet") {
    auto fitnet = std::make_shared<distill::FitNetLossImpl>(
        distill::FitNetOptions(o.at("student_shape"), o.at("teacher_shape")).relu(o.at("relu")));
    load_parameters(*fitnet, spec.at("params"), dtype);
    c.module = fitnet;
    c.evaluate = [=](const Tensors& in) { return fitnet->forward(in.at("student"), in.at("teacher")); };
  } else if (loss == "ofd") {
    auto ofd = std::make_shared<distill::OFDLossImpl>(distill::OFDOptions(o.at("student_channels"), o.at("teacher_channels")));
    load_parameters(*ofd, spec.at("params"), dtype);
    std::vector<torch::Tensor> margins;
    for (const auto& m : o.at("margins")) margins.push_back(torch::tensor(m.get<std::vector<double>>(), torch::kDouble).to(dtype).to(device));
    c.module = ofd;
    c.evaluate = [=](const Tensors& in) { return ofd->forward(numbered(in, "students."), numbered(in, "teachers."), margins); };
  } else if (loss == "reviewkd") {
    auto review = std::make_shared<distill::ReviewKDLossImpl>(
        distill::ReviewKDOptions(o.at("student_channels"), o.at("teacher_channels")));
    load_parameters(*review, spec.at("params"), dtype);
    c.module = review;
    c.evaluate = [=](const Tensors& in) { return review->forward(numbered(in, "students."), numbered(in, "teachers.")); };
  } else if (loss == "crd") {
    auto crd = std::make_shared<distill::CRDLossImpl>(distill::CRDOptions(o.at("student_dim"), o.at("teacher_dim"), o.at("n_data"))
                                                          .feat_dim(o.at("feat_dim"))
                                                          .nce_k(o.at("nce_k"))
                                                          .nce_t(o.at("nce_t"))
                                                          .nce_m(o.at("nce_m")));
    load_parameters(*crd, spec.at("params"), dtype);
    const auto indices = decode(spec.at("indices")).to(device), contrast = decode(spec.at("contrast")).to(device);
    Tensors before;
    for (const auto& [name, value] : spec.at("buffers").items()) before[name] = decode(value, dtype).to(device);
    c.module = crd;
    // Every evaluation starts from the fixture's memories (the loss updates them), so that it
    // is a function of its inputs.
    c.evaluate = [=](const Tensors& in) {
      {
        torch::NoGradGuard no_grad;
        crd->memory_s.copy_(before.at("memory_s"));
        crd->memory_t.copy_(before.at("memory_t"));
        crd->z.copy_(before.at("z"));
      }
      return crd->forward(in.at("student"), in.at("teacher"), indices, contrast);
    };
  } else if (loss == "at") {
    auto opt = distill::ATOptions().p(o.at("p"));
    c.evaluate = [=](const Tensors& in) { return F::at_loss(in.at("student"), in.at("teacher"), opt); };
  } else {
    throw std::runtime_error("unknown loss in fixture: " + loss);
  }
  if (c.module) c.module->to(device);
  return c;
}

/// Largest |a - b| relative to the largest |expected|; an all-zero expectation must be met
/// exactly (e.g. no gradient into a teacher).
inline double relative_error(const torch::Tensor& got, const torch::Tensor& expected) {
  const auto g = got.defined() ? got.to(torch::kCPU, torch::kDouble) : torch::zeros_like(expected, torch::kDouble);
  const auto e = expected.to(torch::kDouble);
  const double diff = (g - e).abs().max().item<double>();
  const double scale = e.abs().max().item<double>();
  if (scale == 0) return diff == 0 ? 0 : INFINITY;
  return diff / scale;
}

/// The tolerance a case is held to in `dtype` when others are held to `rtol`: CTKD's
/// temperature gradient is a small difference of T-derivatives, and python3-torch's own float32
/// run of the same formula is 7.6e-4 (relative) from float64 on the fixture's inputs.
inline double tolerance(const LossCase& c, torch::Dtype dtype, double rtol) {
  return dtype == torch::kFloat && c.loss == "ctkd" ? 2e-3 : rtol;
}

/// Runs the case and returns one line per value or gradient that misses `rtol`.
inline std::vector<std::string> check_parity(LossCase& c, double rtol) {
  std::vector<std::string> failures;
  Tensors leaves;
  for (auto& [name, t] : c.inputs) leaves[name] = t.detach().requires_grad_(true);
  if (c.module)
    for (auto& p : c.module->named_parameters()) {
      p.value().mutable_grad() = torch::Tensor();
      leaves["param:" + p.key()] = p.value();
    }
  auto value = c.evaluate(leaves);
  value.backward();
  const double v = value.item<double>();
  if (!(std::abs(v - c.expected_value) <= rtol * std::abs(c.expected_value)))
    failures.push_back(c.id + ": value " + std::to_string(v) + " expected " + std::to_string(c.expected_value));
  for (const auto& [name, expected] : c.expected_grads) {
    const double err = relative_error(leaves.at(name).grad(), expected);
    if (!(err <= rtol))
      failures.push_back(c.id + ": gradient of " + name + " off by " + std::to_string(err) + " (relative)");
  }
  return failures;
}

}  // namespace distill_test
