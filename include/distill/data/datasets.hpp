#pragma once
// Datasets: the reference's image-list layout (ImageNetDataset) and Fashion-MNIST as Debian
// ships it. A sample is a transformed image and its class index.

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <zlib.h>

#include "distill/data/image_io.hpp"
#include "distill/data/transforms.hpp"

namespace distill::data {

struct Sample {
  torch::Tensor image;  // float [C, H, W]
  int64_t label;
};

/// A dataset of labelled images. get() throws distill::Error naming the file (and list line)
/// of a bad sample; with skip_bad set it returns nothing instead and counts the sample.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  virtual std::string describe() const = 0;
  std::optional<Sample> get(size_t index, Rng& rng) {
    try {
      return load(index, rng);
    } catch (const Error&) {
      if (!skip_bad_) throw;
      ++skipped_;
      return std::nullopt;
    }
  }
  void set_skip_bad(bool skip) { skip_bad_ = skip; }
  /// Samples skipped so far (bad images, with skip_bad).
  int64_t skipped() const { return skipped_; }

 protected:
  virtual Sample load(size_t index, Rng& rng) = 0;

 private:
  bool skip_bad_ = false;
  std::atomic<int64_t> skipped_{0};
};

/// The reference's ImageNetDataset: `image_root` plus a list file of "relative/path label"
/// lines (train_list.txt, val_list.txt). Images are JPEG. A malformed line is an error naming
/// the list file and line when the dataset is built (or, with skip_bad, is skipped and
/// counted); a missing or corrupt image is an error naming the image and its line when it is
/// read.
class ImageListDataset : public Dataset {
 public:
  ImageListDataset(std::string image_root, std::string list_file, Pipeline pipeline, bool skip_bad = false)
      : root_(std::move(image_root)), list_(std::move(list_file)), pipeline_(std::move(pipeline)) {
    set_skip_bad(skip_bad);
    std::ifstream in(list_);
    if (!in) distill::detail::fail(list_, ": cannot open the image list");
    std::string line;
    for (size_t number = 1; std::getline(in, line); ++number) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      std::istringstream fields(line);
      std::string path, label, extra;
      fields >> path >> label;
      char* end = nullptr;
      const long long value = label.empty() ? -1 : std::strtoll(label.c_str(), &end, 10);
      if (label.empty() || *end != '\0' || value < 0 || (fields >> extra)) {
        if (skip_bad) {
          ++bad_lines_;
          continue;
        }
        distill::detail::fail(list_, ":", number, ": expected \"relative/path label\" with a class index >= 0, got \"",
                              line, "\"");
      }
      entries_.push_back({path, value, number});
    }
    if (entries_.empty()) distill::detail::fail(list_, ": the image list has no entries");
  }

  size_t size() const override { return entries_.size(); }
  std::string describe() const override { return list_ + " (" + std::to_string(entries_.size()) + " images)"; }
  /// Lines skipped because they were malformed (with skip_bad).
  int64_t bad_lines() const { return bad_lines_; }
  int64_t max_label() const {
    int64_t m = 0;
    for (const auto& e : entries_) m = std::max(m, e.label);
    return m;
  }

 protected:
  Sample load(size_t index, Rng& rng) override {
    const auto& e = entries_.at(index);
    const std::string file = root_.empty() || e.path.front() == '/' ? e.path : root_ + "/" + e.path;
    const std::string origin = file + " (" + list_ + ":" + std::to_string(e.line) + ")";
    std::string bytes;
    try {
      bytes = read_file(file);
    } catch (const Error&) {
      distill::detail::fail(origin, ": cannot open the image");
    }
    return {pipeline_(decode_jpeg(bytes, origin), rng), e.label};
  }

 private:
  struct Entry {
    std::string path;
    int64_t label;
    size_t line;
  };
  std::string root_, list_;
  Pipeline pipeline_;
  std::vector<Entry> entries_;
  int64_t bad_lines_ = 0;
};

namespace detail {

/// The bytes of a gzip file (or a plain one: zlib reads both).
inline std::string read_gzip(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) distill::detail::fail(path, ": cannot open the file");
  std::string bytes;
  char buffer[1 << 16];
  int n = 0;
  while ((n = gzread(file, buffer, sizeof buffer)) > 0) bytes.append(buffer, static_cast<size_t>(n));
  const bool failed = n < 0;
  gzclose(file);
  if (failed) distill::detail::fail(path, ": corrupt gzip data");
  return bytes;
}

inline uint32_t big_endian(const std::string& bytes, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
  return v;
}

/// An idx file (MNIST format) as a uint8 tensor of its dimensions.
inline torch::Tensor read_idx(const std::string& path, size_t dims) {
  const std::string bytes = read_gzip(path);
  const size_t header = 4 + 4 * dims;
  if (bytes.size() < header || big_endian(bytes, 0) != 0x800u + dims)
    distill::detail::fail(path, ": not an idx file of ", dims, " dimension(s) of unsigned bytes");
  std::vector<int64_t> shape;
  size_t count = 1;
  for (size_t d = 0; d < dims; ++d) {
    shape.push_back(big_endian(bytes, 4 + 4 * d));
    count *= static_cast<size_t>(shape.back());
  }
  if (bytes.size() != header + count)
    distill::detail::fail(path, ": holds ", bytes.size() - header, " data bytes, the header promises ", count);
  auto out = torch::empty(shape, torch::kUInt8);
  std::memcpy(out.data_ptr(), bytes.data() + header, count);
  return out;
}

}  // namespace detail

/// Fashion-MNIST from Debian's dataset-fashion-mnist (gzip idx files): 60000 training and
/// 10000 test images, 28x28 grey, 10 classes. Images are replicated to 3 channels so the
/// same transforms and models serve JPEG datasets and this one. `limit` > 0 keeps the first
/// `limit` images (for quick runs).
class FashionMNIST : public Dataset {
 public:
  static constexpr const char* kDefaultRoot = "/usr/share/datasets/fashion-mnist";

  FashionMNIST(const std::string& root, bool train, Pipeline pipeline, int64_t limit = 0)
      : name_(root + (train ? " (train)" : " (test)")), pipeline_(std::move(pipeline)) {
    const std::string prefix = root + "/" + (train ? "train" : "t10k");
    images_ = detail::read_idx(prefix + "-images-idx3-ubyte.gz", 3);
    labels_ = detail::read_idx(prefix + "-labels-idx1-ubyte.gz", 1).to(torch::kLong);
    if (images_.size(0) != labels_.size(0))
      distill::detail::fail(prefix, ": ", images_.size(0), " images but ", labels_.size(0), " labels");
    if (limit > 0 && limit < images_.size(0)) {
      images_ = images_.slice(0, 0, limit);
      labels_ = labels_.slice(0, 0, limit);
    }
  }

  size_t size() const override { return static_cast<size_t>(images_.size(0)); }
  std::string describe() const override { return "Fashion-MNIST " + name_ + ", " + std::to_string(size()) + " images"; }
  /// uint8 [N, 28, 28] and int64 [N], for direct use.
  const torch::Tensor& images() const { return images_; }
  const torch::Tensor& labels() const { return labels_; }

 protected:
  Sample load(size_t index, Rng& rng) override {
    auto grey = images_[static_cast<int64_t>(index)].unsqueeze(2).expand({-1, -1, 3});
    return {pipeline_(grey, rng), labels_[static_cast<int64_t>(index)].item<int64_t>()};
  }

 private:
  std::string name_;
  Pipeline pipeline_;
  torch::Tensor images_, labels_;
};

/// Builds the `dataset` section of a DataLoader config: {"name": "ImageNetDataset",
/// "image_root", "cls_label_path", "transform_ops", "skip_bad"} or {"name": "FashionMNIST",
/// "root" (default Debian's), "split": "train" | "test", "limit", "transform_ops"}.
inline std::shared_ptr<Dataset> dataset_from_config(const config::json& section, const std::string& path) {
  config::Reader r(section, path);
  const auto name = r.get<std::string>("name");
  static const config::json no_ops = config::json::array();
  const auto pipeline = Pipeline::from_config(r.has("transform_ops") ? r.raw("transform_ops") : no_ops,
                                              r.path_of("transform_ops"));
  std::shared_ptr<Dataset> dataset;
  if (name == "ImageNetDataset") {
    dataset = std::make_shared<ImageListDataset>(r.get<std::string>("image_root", ""), r.get<std::string>("cls_label_path"),
                                                 pipeline, r.get<bool>("skip_bad", false));
  } else if (name == "FashionMNIST") {
    const auto split = r.get<std::string>("split", "train");
    if (split != "train" && split != "test")
      distill::detail::fail(r.path_of("split"), ": expected \"train\" or \"test\", got \"", split, "\"");
    dataset = std::make_shared<FashionMNIST>(r.get<std::string>("root", FashionMNIST::kDefaultRoot), split == "train",
                                             pipeline, r.get<int64_t>("limit", 0));
  } else {
    distill::detail::fail(r.path_of("name"), ": unknown dataset '", name, "'; known: ImageNetDataset, FashionMNIST");
  }
  r.done();
  return dataset;
}

}  // namespace distill::data
