#pragma once
// A batch loader with worker threads and prefetch. Batches come out in a fixed order that
// depends only on (seed, epoch, rank, world size); each sample's augmentation is seeded by
// (seed, epoch, sample index). So results do not depend on the number of workers, a resumed
// run sees the same batches, and ranks of a data-parallel run read disjoint shards.

#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>
#include <vector>

#include "distill/data/datasets.hpp"

namespace distill::data {

struct Batch {
  torch::Tensor images;  // float [B, C, H, W]
  torch::Tensor labels;  // int64 [B]
};

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
};

namespace detail {
inline uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
}  // namespace detail

/// Loads batches of a dataset for one epoch at a time.
///
///   distill::data::DataLoader loader(dataset, distill::data::LoaderOptions().batch_size(64).shuffle(true));
///   loader.start(epoch);
///   while (auto batch = loader.next()) train_step(batch->images, batch->labels);
class DataLoader {
 public:
  DataLoader(std::shared_ptr<Dataset> dataset, LoaderOptions options)
      : dataset_(std::move(dataset)), options_(std::move(options)) {
    const auto& o = options_;
    if (o.batch_size() < 1 || o.num_workers() < 0 || o.prefetch() < 1 || o.world_size() < 1 || o.rank() < 0 ||
        o.rank() >= o.world_size())
      distill::detail::fail("DataLoader: bad options (batch_size ", o.batch_size(), ", num_workers ", o.num_workers(),
                            ", prefetch ", o.prefetch(), ", rank ", o.rank(), " of ", o.world_size(), ")");
  }
  ~DataLoader() { stop(); }
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  const Dataset& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return options_; }

  /// The dataset indices this rank reads in `epoch`, in order: a permutation drawn from
  /// (seed, epoch) when shuffling, padded by wrapping to a multiple of the world size (unless
  /// pad is off), then
  /// every world_size-th entry starting at rank (so batch k of all ranks together is batch k
  /// of one process with world_size times the batch size).
  std::vector<size_t> order(int64_t epoch) const {
    const size_t n = dataset_->size(), world = static_cast<size_t>(options_.world_size());
    std::vector<size_t> all(n);
    std::iota(all.begin(), all.end(), size_t{0});
    if (options_.shuffle()) {
      Rng rng(detail::mix(options_.seed() ^ detail::mix(static_cast<uint64_t>(epoch) + 1)));
      std::shuffle(all.begin(), all.end(), rng);
    }
    for (size_t i = 0; options_.pad() && n > 0 && all.size() % world != 0; ++i) all.push_back(all[i % n]);
    std::vector<size_t> mine;
    for (size_t i = static_cast<size_t>(options_.rank()); i < all.size(); i += world) mine.push_back(all[i]);
    return mine;
  }

  size_t batches_per_epoch() const {
    const size_t n = dataset_->size(), world = static_cast<size_t>(options_.world_size()),
                 rank = static_cast<size_t>(options_.rank());
    const size_t per_rank = options_.pad() ? (n + world - 1) / world : (n > rank ? (n - rank + world - 1) / world : 0);
    const size_t b = static_cast<size_t>(options_.batch_size());
    return options_.drop_last() ? per_rank / b : (per_rank + b - 1) / b;
  }

  /// Begins `epoch` (stopping an unfinished one).
  void start(int64_t epoch) {
    stop();
    epoch_ = epoch;
    indices_ = order(epoch);
    batches_ = batches_per_epoch();
    next_ = 0;
    stopping_ = false;
    ready_.clear();
    const int64_t workers = std::min<int64_t>(options_.num_workers(), static_cast<int64_t>(batches_));
    if (workers == 0) return;  // load in next() on the calling thread
    for (int64_t w = 0; w < workers; ++w)
      threads_.emplace_back([this, w, workers] {
        for (size_t k = static_cast<size_t>(w); k < batches_; k += static_cast<size_t>(workers)) {
          {
            std::unique_lock<std::mutex> lock(mutex_);
            changed_.wait(lock, [&] { return stopping_ || k < next_ + static_cast<size_t>(options_.prefetch()); });
            if (stopping_) return;
          }
          Slot slot;
          try {
            slot.batch = load(k);
          } catch (...) {
            slot.error = std::current_exception();
          }
          std::lock_guard<std::mutex> lock(mutex_);
          const bool failed = static_cast<bool>(slot.error);
          ready_[k] = std::move(slot);
          changed_.notify_all();
          if (failed) return;
        }
      });
  }

  /// The next batch of the epoch in order, or nothing at its end. A sample that failed to
  /// load raises its error when its batch is due, so errors arrive in order too.
  std::optional<Batch> next() {
    while (next_ < batches_) {
      std::optional<Batch> batch;
      if (threads_.empty()) {
        batch = load(next_);
      } else {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return ready_.count(next_) > 0; });
        Slot slot = std::move(ready_[next_]);
        ready_.erase(next_);
        if (slot.error) {
          lock.unlock();
          stop();
          std::rethrow_exception(slot.error);
        }
        batch = std::move(slot.batch);
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ++next_;
        changed_.notify_all();
      }
      if (batch) return batch;  // a batch whose every sample was skipped is dropped
      if (!options_.drop_empty_batches())
        distill::detail::fail(dataset_->describe(), ": every sample of batch ", next_ - 1, " of rank ", options_.rank(),
                              " failed to load; in data-parallel training all ranks must step together, so the run stops");
    }
    stop();
    return std::nullopt;
  }

 private:
  std::optional<Batch> load(size_t k) {
    const size_t b = static_cast<size_t>(options_.batch_size());
    const size_t begin = k * b, end = std::min(indices_.size(), begin + b);
    std::vector<torch::Tensor> images;
    std::vector<int64_t> labels;
    for (size_t i = begin; i < end; ++i) {
      const size_t index = indices_[i];
      Rng rng(detail::mix(options_.seed() ^ detail::mix((static_cast<uint64_t>(epoch_) << 40) ^ index)));
      if (auto sample = dataset_->get(index, rng)) {
        if (!images.empty() && sample->image.sizes() != images.front().sizes())
          distill::detail::fail(dataset_->describe(), ": images of different sizes in one batch (",
                                images.front().sizes(), " and ", sample->image.sizes(),
                                " for sample ", index, "); add a ResizeImage or CropImage transform");
        images.push_back(sample->image);
        labels.push_back(sample->label);
      }
    }
    if (images.empty()) return std::nullopt;
    return Batch{torch::stack(images), torch::tensor(labels, torch::kLong)};
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      changed_.notify_all();
    }
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

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
