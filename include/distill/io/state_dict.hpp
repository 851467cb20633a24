#pragma once
// State dicts shared with Python: read what torch.save(model.state_dict(), path) wrote (or
// paddle.save, as a .pdparams), write what torch.load reads back into a state dict, and load
// or save any torch::nn::Module.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "distill/io/pickle.hpp"

namespace distill::io {

namespace detail {
/// Writes `size` bytes to `path` so that the file appears atomically: to `path`.tmp, flushed
/// to the disk (fsync), then renamed. On failure `path`.tmp is removed and the error says why.
inline void write_file_atomically(const std::string& path, const char* data, size_t size) {
  const std::string temporary = path + ".tmp";
  auto give_up = [&](const char* what, int error) {
    std::remove(temporary.c_str());
    distill::fail(path, ": cannot ", what, " (via ", temporary, "): ", std::strerror(error),
                  error == ENOSPC ? "; the previous file, if any, is unchanged" : "");
  };
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) distill::fail(path, ": cannot create ", temporary, ": ", std::strerror(errno));
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = n < 0 ? errno : EIO;
      ::close(fd);
      give_up("write the file", error);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    give_up("flush the file to the disk", error);
  }
  if (::close(fd) != 0) give_up("close the file", errno);
  if (std::rename(temporary.c_str(), path.c_str()) != 0) give_up("move the file into place", errno);
}
}  // namespace detail

/// Parameter and buffer tensors by dotted name ("layer1.0.conv1.weight"), in Python's order.
using StateDict = torch::OrderedDict<std::string, torch::Tensor>;

/// Reads a state dict written by Python's torch.save(model.state_dict(), path) (or by
/// write_state_dict), or by Paddle's paddle.save(layer.state_dict(), path) (a .pdparams: its
/// names stay Paddle's; from_paddle maps them onto a module). Tensors come back on the CPU.
///
///   auto weights = distill::io::read_state_dict("resnet34.pth");
inline StateDict read_state_dict(const std::string& path) {
  detail::Unpickler unpickler(path);
  auto root = unpickler.run();
  using K = detail::PyValue::Kind;
  if (root->kind != K::Dict)
    distill::fail(path, ": holds a ", detail::PyValue::kind_name(root->kind),
                          ", not a state dict (a dict of names to tensors)");
  StateDict dict;
  for (const auto& [key, value] : root->entries) {
    if (key->kind != K::String)
      distill::fail(path, ": a state dict key is a ", detail::PyValue::kind_name(key->kind), ", not a str");
    if (unpickler.plain() && key->text == "StructuredToParameterName@@") continue;  // Paddle's internal names
    if (unpickler.plain() && key->text == "UnpackBigParamInfor@@")
      distill::fail(path, ": splits a parameter over 4 GiB into slices (paddle.save with protocol 2 or 3); "
                          "save it with protocol=4");
    if (value->kind != K::Tensor)
      distill::fail(path, ": entry '", key->text, "' holds a ", detail::PyValue::kind_name(value->kind),
                            ", not a tensor; is this a training checkpoint rather than a state dict?");
    if (dict.contains(key->text)) distill::fail(path, ": entry '", key->text, "' appears twice");
    dict.insert(key->text, value->tensor);
  }
  return dict;
}

/// Whether `path` is a plain pickle (what paddle.save writes) rather than a torch.save zip.
inline bool is_pdparams(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return in.good() && in.peek() == 0x80;
}

/// Writes `dict` so that Python's torch.load(path) returns it as a dict of tensors. The file
/// appears atomically: it is written to `path`.tmp, flushed to the disk (fsync) and renamed,
/// so a crash or a full disk never leaves a half-written file under `path`, and an earlier
/// file of that name stays intact until the new one is complete. On failure `path`.tmp is
/// removed and the error says why (e.g. "No space left on device").
inline void write_state_dict(const StateDict& dict, const std::string& path) {
  c10::Dict<std::string, torch::Tensor> out;
  for (const auto& item : dict) out.insert(item.key(), item.value().detach().to(torch::kCPU).contiguous());
  const auto bytes = torch::pickle_save(out);
  detail::write_file_atomically(path, bytes.data(), bytes.size());
}

/// The module's parameters and buffers by name, in the order Python's state_dict() lists them
/// (each module's own parameters, then its own buffers, then its children).
inline StateDict state_dict(const torch::nn::Module& module) {
  StateDict dict;
  auto add_own = [&dict](const std::string& prefix, const torch::nn::Module& m) {
    for (const auto& p : m.named_parameters(/*recurse=*/false)) dict.insert(prefix + p.key(), p.value());
    for (const auto& b : m.named_buffers(/*recurse=*/false)) dict.insert(prefix + b.key(), b.value());
  };
  add_own("", module);
  for (const auto& child : module.named_modules("", /*include_self=*/false)) add_own(child.key() + ".", *child.value());
  return dict;
}

/// `paddle`, a state dict under PaddleClas's names (read from a .pdparams), under `module`'s
/// names: BatchNorm's `_mean` / `_variance` become running_mean / running_var, the weight of
/// every Linear is transposed (Paddle stores it [in, out]), and the BatchNorm batch counters
/// that Paddle does not keep are the module's own. Names are otherwise kept: distill's
/// paddle-layout backbones use the reference's module names.
///
///   auto weights = distill::io::from_paddle(*teacher, distill::io::read_state_dict("ResNet50_vd_ssld.pdparams"));
inline StateDict from_paddle(const torch::nn::Module& module, const StateDict& paddle, const std::string& source = "state dict") {
  std::set<std::string> linear_weights;
  for (const auto& m : module.named_modules("", /*include_self=*/true))
    if (dynamic_cast<const torch::nn::LinearImpl*>(m.value().get()))
      linear_weights.insert(m.key().empty() ? "weight" : m.key() + ".weight");
  auto rename = [](const std::string& name) {
    for (const auto& [from, to] : {std::pair<std::string, std::string>{"_mean", "running_mean"}, {"_variance", "running_var"}})
      if (name == from || (name.size() > from.size() && name.compare(name.size() - from.size() - 1, std::string::npos, "." + from) == 0))
        return name.substr(0, name.size() - from.size()) + to;
    return name;
  };
  StateDict out;
  for (const auto& item : paddle) {
    const std::string name = rename(item.key());
    torch::Tensor value = item.value();
    if (linear_weights.count(name) && value.dim() == 2) value = value.t().contiguous();
    if (out.contains(name)) distill::fail(source, ": entries '", item.key(), "' and another both give '", name, "'");
    out.insert(name, value);
  }
  for (const auto& own : state_dict(module)) {
    const std::string& name = own.key();
    const std::string counter = "num_batches_tracked";
    if (!out.contains(name) && name.size() >= counter.size() &&
        name.compare(name.size() - counter.size(), std::string::npos, counter) == 0)
      out.insert(name, own.value().detach().clone());
  }
  return out;
}

/// Options of load_state_dict. strict (default): any missing, unexpected or mis-shaped key is
/// an error that lists them all. Non-strict: matching tensors are loaded and the rest are
/// reported in the result.
struct LoadOptions {
  TORCH_ARG(bool, strict) = true;
};

/// What load_state_dict did not load.
struct LoadResult {
  std::vector<std::string> missing;     // in the module, not in the file
  std::vector<std::string> unexpected;  // in the file, not in the module
  std::vector<std::string> mismatched;  // in both, with different shapes ("name: file [..] vs module [..]")
  bool complete() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
};

/// Copies the tensors of `dict` into `module`'s parameters and buffers (converting dtype,
/// keeping each tensor's device). `source` names the origin in messages.
inline LoadResult load_state_dict(torch::nn::Module& module, const StateDict& dict,
                                  const LoadOptions& options = {}, const std::string& source = "state dict") {
  LoadResult result;
  auto own = state_dict(module);
  for (const auto& item : own) {
    const auto* value = dict.find(item.key());
    if (value == nullptr) result.missing.push_back(item.key());
    else if (value->sizes() != item.value().sizes())
      result.mismatched.push_back(c10::str(item.key(), ": file ", value->sizes(), " vs module ", item.value().sizes()));
  }
  for (const auto& item : dict)
    if (!own.contains(item.key())) result.unexpected.push_back(item.key());
  if (options.strict() && !result.complete()) {
    auto list = [](const std::vector<std::string>& names) {
      std::string text;
      for (const auto& n : names) text += (text.empty() ? "" : ", ") + n;
      return text.empty() ? std::string("none") : text;
    };
    distill::fail(source, ": does not match the module (", result.missing.size(), " missing, ",
                          result.unexpected.size(), " unexpected, ", result.mismatched.size(),
                          " with another shape). Missing: ", list(result.missing), ". Unexpected: ",
                          list(result.unexpected), ". Shape: ", list(result.mismatched), ".");
  }
  torch::NoGradGuard no_grad;
  for (auto& item : own) {
    const auto* value = dict.find(item.key());
    if (value != nullptr && value->sizes() == item.value().sizes()) item.value().copy_(*value);
  }
  return result;
}

/// The weights file `path` names: `path` itself or, as PaddleClas's `pretrained` names its
/// files without the extension, `path`.pdparams when only that exists.
inline std::string weights_path(const std::string& path) {
  if (!std::ifstream(path).good() && std::ifstream(path + ".pdparams").good()) return path + ".pdparams";
  return path;
}

/// Loads a file written by Python's torch.save(model.state_dict(), path), or a .pdparams
/// written by paddle.save (mapped with from_paddle), into `module`.
///
///   distill::models::ResNet teacher(distill::models::ResNetOptions(34).layout(distill::models::ResNetLayout::torchvision));
///   distill::io::load_state_dict(*teacher, "resnet34-b627a593.pth");
///   distill::models::ResNet vd(distill::models::ResNetOptions(50).vd(true));
///   distill::io::load_state_dict(*vd, "ResNet50_vd_ssld_pretrained.pdparams");
inline LoadResult load_state_dict(torch::nn::Module& module, const std::string& path, const LoadOptions& options = {}) {
  const std::string file = weights_path(path);
  auto dict = read_state_dict(file);
  if (is_pdparams(file)) dict = from_paddle(module, dict, file);
  return load_state_dict(module, dict, options, file);
}

/// Saves `module`'s parameters and buffers so that Python loads them with
/// model.load_state_dict(torch.load(path)).
inline void save_state_dict(const torch::nn::Module& module, const std::string& path) {
  write_state_dict(state_dict(module), path);
}

}  // namespace distill::io
