#pragma once
// Datasets: the reference's image-list layout (ImageNetDataset) and Fashion-MNIST as Debian
// ships it. A sample is a transformed image and its class index. Compiled into
// distill::engine (src/data.cpp).

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "distill/core/error.hpp"
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
    } catch (const Error& e) {
      if (!skip_bad_) throw;
      if (skipped_++ == 0) {
        std::lock_guard<std::mutex> lock(first_skip_mutex_);
        first_skip_ = e.what();
      }
      return std::nullopt;
    }
  }
  void set_skip_bad(bool skip) { skip_bad_ = skip; }
  /// Samples skipped so far (bad images, with skip_bad).
  int64_t skipped() const { return skipped_; }
  /// The error of the first skipped sample ("" if none).
  std::string first_skip() const {
    std::lock_guard<std::mutex> lock(first_skip_mutex_);
    return first_skip_;
  }
  /// What was skipped while the dataset was built (with skip_bad), for the user ("" if nothing).
  virtual std::string build_report() const { return ""; }

  /// Hashes of the samples (their list or contents) and of the labels, in order: how a
  /// teacher cache tells that it was made from this dataset. 0: unknown (a dataset that does
  /// not say; then only its size is compared).
  struct Fingerprint {
    uint64_t samples = 0, labels = 0;
  };
  virtual Fingerprint fingerprint() const { return {}; }

 protected:
  virtual Sample load(size_t index, Rng& rng) = 0;

 private:
  bool skip_bad_ = false;
  std::atomic<int64_t> skipped_{0};
  mutable std::mutex first_skip_mutex_;
  std::string first_skip_;
};

/// The reference's ImageNetDataset: `image_root` plus a list file of "relative/path label"
/// lines (train_list.txt, val_list.txt). Images are JPEG. A malformed line is an error naming
/// the list file and line when the dataset is built (or, with skip_bad, is skipped and
/// counted); a missing or corrupt image is an error naming the image and its line when it is
/// read.
class ImageListDataset : public Dataset {
 public:
  ImageListDataset(std::string image_root, std::string list_file, Pipeline pipeline, bool skip_bad = false);

  size_t size() const override { return entries_.size(); }
  std::string describe() const override { return list_ + " (" + std::to_string(entries_.size()) + " images)"; }
  /// Lines skipped because they were malformed (with skip_bad), and the first numbers of them.
  int64_t bad_lines() const { return bad_lines_; }
  const std::vector<size_t>& bad_line_numbers() const { return bad_line_numbers_; }
  std::string build_report() const override;
  Fingerprint fingerprint() const override;
  int64_t max_label() const;

 protected:
  Sample load(size_t index, Rng& rng) override;

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
  std::vector<size_t> bad_line_numbers_;  // the first 10
};

/// Fashion-MNIST from Debian's dataset-fashion-mnist (gzip idx files): 60000 training and
/// 10000 test images, 28x28 grey, 10 classes. Images are replicated to 3 channels so the
/// same transforms and models serve JPEG datasets and this one. `limit` > 0 keeps the first
/// `limit` images (for quick runs).
class FashionMNIST : public Dataset {
 public:
  static constexpr const char* kDefaultRoot = "/usr/share/datasets/fashion-mnist";

  FashionMNIST(const std::string& root, bool train, Pipeline pipeline, int64_t limit = 0);

  size_t size() const override { return static_cast<size_t>(images_.size(0)); }
  std::string describe() const override { return "Fashion-MNIST " + name_ + ", " + std::to_string(size()) + " images"; }
  /// uint8 [N, 28, 28] and int64 [N], for direct use.
  const torch::Tensor& images() const { return images_; }
  const torch::Tensor& labels() const { return labels_; }
  Fingerprint fingerprint() const override;

 protected:
  Sample load(size_t index, Rng& rng) override;

 private:
  std::string name_;
  Pipeline pipeline_;
  torch::Tensor images_, labels_;
};

}  // namespace distill::data
