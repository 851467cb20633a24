#pragma once
// TorchScript export: a model built in C++ traced into a torch::jit::Module, which Python's
// torch.jit.load and C++'s torch::jit::load run without distill (docs/deployment.md).
//
// PyTorch can serialise a C++ frontend module only as tensors. Tracing records the operations
// one forward pass runs; the module's parameters and buffers are mirrored, under the same
// names, onto a torch::jit::Module, so the recorded graph reads them as attributes and the
// exported module's state_dict() has the keys and tensors of distill's state dict.
//
// Tracing records one path through the code: a forward that branches on the data, or turns a
// size into a plain number (x.view({x.size(0), -1})), gives a graph that is wrong for other
// inputs. trace() therefore runs the traced module and the model on inputs of other batch
// sizes (1 and 3 by default) and on the example input negated and scaled, and refuses the
// export when they differ.

#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "distill/core/error.hpp"
#include "distill/core/features.hpp"
#include "distill/io/state_dict.hpp"

namespace distill::io {

/// How trace() records a model.
struct TraceOptions {
  /// The example input's shape [N, C, H, W]; the export runs on any N (and on the H, W the
  /// network accepts).
  TORCH_ARG(std::vector<int64_t>, example_shape) = std::vector<int64_t>({2, 3, 224, 224});
  /// Also return the feature taps: forward then returns a Dict[str, Tensor] ("logits" and
  /// each return pattern) instead of the logits tensor.
  TORCH_ARG(bool, with_taps) = false;
  /// Batch sizes on which the traced module must agree with the model (none: no check).
  TORCH_ARG(std::vector<int64_t>, check_batch_sizes) = std::vector<int64_t>({1, 3});
  /// Largest allowed |traced - model| / (1 + |model|) on those checks.
  TORCH_ARG(double, tolerance) = 1e-5;
  /// The class name of the exported module ("__torch__.distill.<name>").
  TORCH_ARG(std::string, name) = "Model";
};

namespace detail {
/// A torch::jit::Module holding `module`'s own parameters and buffers (the same tensors) and,
/// recursively, its children under their names.
inline torch::jit::Module mirror_module(const torch::nn::Module& module, const std::string& type_name,
                                        const std::shared_ptr<torch::jit::CompilationUnit>& unit) {
  torch::jit::Module out(c10::QualifiedName(type_name), unit, /*shouldMangle=*/true);
  for (const auto& p : module.named_parameters(/*recurse=*/false)) out.register_parameter(p.key(), p.value(), /*is_buffer=*/false);
  for (const auto& b : module.named_buffers(/*recurse=*/false)) out.register_buffer(b.key(), b.value());
  for (const auto& child : module.named_children())
    out.register_module(child.key(), mirror_module(*child.value(), type_name + "_" + child.key(), unit));
  return out;
}

/// The model's output as the exported forward returns it: the logits, or every feature.
inline c10::IValue script_output(const Features& features, bool with_taps) {
  if (!with_taps) return features.at("logits");
  c10::Dict<std::string, torch::Tensor> out;
  for (const auto& [name, value] : features) out.insert(name, value);
  return out;
}

/// The largest |a - b| / (1 + |b|) over the outputs; throws when their structure differs.
inline double output_difference(const c10::IValue& traced, const c10::IValue& model) {
  auto differ = [](const torch::Tensor& a, const torch::Tensor& b) {
    if (a.sizes() != b.sizes()) return std::numeric_limits<double>::infinity();
    auto d = (a.to(torch::kDouble) - b.to(torch::kDouble)).abs() / (1 + b.to(torch::kDouble).abs());
    return d.numel() == 0 ? 0.0 : d.max().item<double>();
  };
  if (model.isTensor()) return traced.isTensor() ? differ(traced.toTensor(), model.toTensor()) : std::numeric_limits<double>::infinity();
  const auto expected = model.toGenericDict();
  if (!traced.isGenericDict() || traced.toGenericDict().size() != expected.size()) return std::numeric_limits<double>::infinity();
  double worst = 0;
  const auto got = traced.toGenericDict();
  for (const auto& item : expected) {
    if (!got.contains(item.key())) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, differ(got.at(item.key()).toTensor(), item.value().toTensor()));
  }
  return worst;
}
}  // namespace detail

/// Traces `forward` (the model's forward pass, Features in and out as distill's models give
/// them) of `module` (the model, in eval mode) into a TorchScript module whose parameters and
/// buffers are the model's, by name. The traced module is checked against the model on other
/// batch sizes (TraceOptions::check_batch_sizes); a difference is an error that says why.
///
///   student->eval();
///   auto scripted = distill::io::trace(*student, [&](const torch::Tensor& x) { return student->forward(x); },
///                                      distill::io::TraceOptions().example_shape({1, 3, 224, 224}).name("ResNet18"));
///   distill::io::save_torchscript(scripted, "student.ts");
inline torch::jit::Module trace(torch::nn::Module& module, const std::function<Features(const torch::Tensor&)>& forward,
                                const TraceOptions& options = {}) {
  const auto& shape = options.example_shape();
  if (shape.size() != 4 || std::any_of(shape.begin(), shape.end(), [](int64_t s) { return s < 1; }))
    fail("trace: example_shape must be [N, C, H, W] with positive sizes, got ", torch::IntArrayRef(shape));
  if (module.is_training()) fail("trace: ", options.name(), " is in training mode; call eval() first (the export is for inference)");
  auto unit = std::make_shared<torch::jit::CompilationUnit>();
  auto scripted = detail::mirror_module(module, "__torch__.distill." + options.name(), unit);

  const auto parameter = [&]() -> torch::Tensor {
    for (const auto& p : module.parameters()) return p;
    for (const auto& b : module.buffers()) return b;
    return {};
  }();
  const auto tensor_options = parameter.defined() ? parameter.options().requires_grad(false) : torch::TensorOptions();
  // Inputs from a generator of its own: tracing leaves the caller's random stream alone.
  auto generator = at::detail::createCPUGenerator(/*seed_val=*/20261130);
  auto random_input = [&](const std::vector<int64_t>& sizes) {
    return torch::randn(sizes, generator, torch::TensorOptions().dtype(tensor_options.dtype())).to(tensor_options.device());
  };
  auto example = random_input(shape);
  std::shared_ptr<torch::jit::tracer::TracingState> state;
  try {
    state = torch::jit::tracer::trace(
                {example},
                [&](torch::jit::Stack inputs) -> torch::jit::Stack {
                  return {detail::script_output(forward(inputs.at(0).toTensor()), options.with_taps())};
                },
                [](const torch::autograd::Variable&) { return std::string(); }, /*strict=*/!options.with_taps(),
                /*force_outplace=*/false, &scripted)
                .first;
  } catch (const distill::Error&) {
    torch::jit::tracer::abandon();
    throw;
  } catch (const c10::Error& e) {
    torch::jit::tracer::abandon();
    fail("trace: ", options.name(), " cannot be traced: ", e.what_without_backtrace());
  }
  auto type = scripted.type();
  auto method = unit->create_function(c10::QualifiedName(*type->name(), "forward"), state->graph);
  type->addMethod(method);

  // One path was recorded: it must hold for other inputs too: other batch sizes, and the
  // example negated and scaled (which flips or moves what a branch on the values tests).
  std::vector<torch::Tensor> checks;
  for (int64_t batch : options.check_batch_sizes()) {
    auto input_shape = shape;
    input_shape[0] = batch;
    checks.push_back(random_input(input_shape));
  }
  if (!options.check_batch_sizes().empty()) checks.insert(checks.end(), {-example, example * 4});
  for (const auto& x : checks) {
    const int64_t batch = x.size(0);
    torch::NoGradGuard no_grad;
    const auto expected = detail::script_output(forward(x), options.with_taps());
    c10::IValue got;
    try {
      got = scripted.forward({x});
    } catch (const std::exception& e) {  // c10::Error, or the interpreter's JITException
      const std::string what = e.what();
      const auto last = what.rfind("RuntimeError: ");
      fail("trace: ", options.name(), " traced at batch ", shape[0], " fails at batch ", batch, " (its forward ",
           "reads a size as a plain number, e.g. view({x.size(0), -1}); use flatten(1) or reshape({-1, ...})): ",
           detail::first_line(last == std::string::npos ? what : what.substr(last + 14)));
    }
    const double difference = detail::output_difference(got, expected);
    if (!(difference <= options.tolerance()))
      fail("trace: ", options.name(), " traced at batch ", shape[0], " gives other outputs at batch ", batch,
           batch == shape[0] ? " (the example input negated or scaled)" : "", " (largest relative difference ", difference,
           "): its forward branches on the data or on sizes, and tracing records one path; export a model whose forward "
           "runs the same operations for every input");
  }
  return scripted;
}

/// Writes `scripted` to `path` (atomically, as write_state_dict), with `extra_files` stored
/// in the archive's extra/ folder (torch.jit.load(path, _extra_files=...) reads them back).
inline void save_torchscript(const torch::jit::Module& scripted, const std::string& path,
                             const std::map<std::string, std::string>& extra_files = {}) {
  torch::jit::ExtraFilesMap extra(extra_files.begin(), extra_files.end());
  std::ostringstream bytes;
  scripted.save(bytes, extra);
  const auto text = bytes.str();
  detail::write_file_atomically(path, text.data(), text.size());
}

/// Whether `path` is a TorchScript archive (a zip with a code/ folder), rather than a pickled
/// state dict or checkpoint (a zip without one) or anything else.
inline bool is_torchscript(const std::string& path) {
  try {
    for (const auto& record : detail::read_zip_crcs(path))
      if (record.first.rfind("code/", 0) == 0) return true;
  } catch (const distill::Error&) {
  }
  return false;
}

/// A TorchScript export loaded on the CPU for inference, every record checked against its
/// CRC-32 first; `extra_files` names the archive's extra files to read (absent ones come back
/// empty). A file that is not a loadable export is an error naming it.
///
///   std::map<std::string, std::string> extra{{"distill/preprocess.txt", ""}};
///   auto student = distill::io::load_torchscript("student.ts", &extra);
inline torch::jit::Module load_torchscript(const std::string& path, std::map<std::string, std::string>* extra_files = nullptr) {
  if (!is_torchscript(path)) fail(path, ": not a TorchScript export (distill export --format torchscript writes one)");
  detail::verify_zip(path);
  torch::jit::ExtraFilesMap extra;
  if (extra_files)
    for (const auto& item : *extra_files) extra[item.first] = "";
  try {
    auto module = torch::jit::load(path, torch::Device(torch::kCPU), extra);
    module.eval();
    if (extra_files)
      for (auto& item : *extra_files) item.second = extra[item.first];
    return module;
  } catch (const c10::Error& e) {
    fail(path, ": a damaged TorchScript export (", e.what_without_backtrace(), ")");
  }
}

/// The parameters and buffers of a TorchScript module by dotted name: for an export of
/// trace(), the state dict of the model it was traced from.
inline StateDict torchscript_state_dict(const torch::jit::Module& scripted) {
  StateDict dict;
  for (const auto& p : scripted.named_parameters(/*recurse=*/true)) dict.insert(p.name, p.value);
  for (const auto& b : scripted.named_buffers(/*recurse=*/true)) dict.insert(b.name, b.value);
  return dict;
}

}  // namespace distill::io
