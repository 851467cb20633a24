#pragma once
// A batch loader with worker threads and prefetch. Batches come out in a fixed order that
// depends only on (seed, epoch, rank, world size); each sample's augmentation is seeded by
// (seed, epoch, sample index). So results do not depend on the number of workers, a resumed
// run sees the same batches, and ranks of a data-parallel run read disjoint shards. Compiled
// into distill::engine (src/data.cpp).

#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "distill/data/datasets.hpp"

namespace distill::data {

struct Batch {
  torch::Tensor images;   // float [B, C, H, W]
  torch::Tensor labels;   // int64 [B]
  torch::Tensor indices;  // int64 [B]: each sample's dataset index
  torch::Tensor views;    // int64 [B]: each sample's view (LoaderOptions::views), -1 without views
};

/// The augmentation seed of view `view` of sample `index` (see LoaderOptions::views).
using ViewSeeds = std::function<uint64_t(size_t index, int64_t view)>;

/// Options of DataLoader; batch_size is per rank.
struct LoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 64;
  TORCH_ARG(bool, shuffle) = false;
  TORCH_ARG(bool, drop_last) = false;
  TORCH_ARG(int64_t, num_workers) = 2;
  TORCH_ARG(int64_t, prefetch) = 4;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(int64_t, rank) = 0;
  TORCH_ARG(int64_t, world_size) = 1;
  /// Pad the order by wrapping so every rank reads as many samples (training: the ranks step
  /// together); without padding every sample is read exactly once (evaluation).
  TORCH_ARG(bool, pad) = true;
  /// Drop a batch whose every sample failed to load (skip_bad). Data-parallel training turns
  /// this off: a rank that dropped a batch would stop stepping with the others, so such a
  /// batch is an error there.
  TORCH_ARG(bool, drop_empty_batches) = true;
  /// K > 0: every sample has K fixed augmentations ("views"), and each epoch shows it one of
  /// them, chosen by (seed, epoch, index) (view_of). View v of sample i is augmented with the
  /// generator seeded by view_seeds(i, v), by default view_seed(seed, i, v): the seeds a
  /// teacher cache recorded (train/teacher_cache.hpp) replay exactly the views it saw.
  TORCH_ARG(int64_t, views) = 0;
  TORCH_ARG(ViewSeeds, view_seeds);
};

namespace detail {
/// splitmix64's finaliser: seeds derived from (seed, epoch, index) without correlation.
inline uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace detail

/// The default augmentation seed of view `view` of sample `index` (LoaderOptions::views).
inline uint64_t view_seed(uint64_t seed, size_t index, int64_t view) {
  return detail::mix(seed ^ detail::mix(0x76696577ULL ^ detail::mix((static_cast<uint64_t>(index) << 20) ^ static_cast<uint64_t>(view))));
}

/// The view that sample `index` shows in `epoch` among `views`.
inline int64_t view_of(uint64_t seed, int64_t epoch, size_t index, int64_t views) {
  const uint64_t x = detail::mix(seed ^ detail::mix((static_cast<uint64_t>(epoch) << 40) ^ detail::mix(index ^ 0x6f66ULL)));
  return static_cast<int64_t>(x % static_cast<uint64_t>(views));
}

/// Loads batches of a dataset for one epoch at a time.
///
///   distill::data::DataLoader loader(dataset, distill::data::LoaderOptions().batch_size(64).shuffle(true));
///   loader.start(epoch);
///   while (auto batch = loader.next()) train_step(batch->images, batch->labels);
class DataLoader {
 public:
  DataLoader(std::shared_ptr<Dataset> dataset, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  const Dataset& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return options_; }

  /// The dataset indices this rank reads in `epoch`, in order: a permutation drawn from
  /// (seed, epoch) when shuffling, padded by wrapping to a multiple of the world size (unless
  /// pad is off), then every world_size-th entry starting at rank (so batch k of all ranks
  /// together is batch k of one process with world_size times the batch size).
  std::vector<size_t> order(int64_t epoch) const;
  size_t batches_per_epoch() const;

  /// Begins `epoch` (stopping an unfinished one).
  void start(int64_t epoch);
  /// The next batch of the epoch in order, or nothing at its end. A sample that failed to
  /// load raises its error when its batch is due, so errors arrive in order too.
  std::optional<Batch> next();

 private:
  std::optional<Batch> load(size_t k);
  void stop();

  std::shared_ptr<Dataset> dataset_;
  LoaderOptions options_;
  int64_t epoch_ = 0;
  std::vector<size_t> indices_;
  size_t batches_ = 0, next_ = 0;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable changed_;
  struct Slot {
    std::optional<Batch> batch;
    std::exception_ptr error;
  };
  std::map<size_t, Slot> ready_;
  bool stopping_ = false;
};

}  // namespace distill::data
