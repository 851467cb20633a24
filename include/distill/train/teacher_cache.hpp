#pragma once
// Offline teacher knowledge (docs/teacher-cache.md): the frozen teachers of a recipe run once
// over K augmented views of every training image, their top-k logits stored; training then
// replays those views and reads the stored logits instead of running a teacher (FKD, Shen and
// Xing, ECCV 2022). Compiled into distill::engine (src/teacher_cache.cpp).
//
// On disk, DIR holds manifest.json and shard_<s>.bin files. A shard holds the views of a
// contiguous range of images: a 64-byte header, one record per (image, view), and an 8-byte
// checksum of everything before it. A record is the view's augmentation seed (uint64; it
// determines every draw of the recipe's transforms: crop box, scale, flip, RandAugment's
// operations), then per teacher its rest logit (float32), its top-k logits (float32 or
// float16) and their classes (int32).

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "distill/core/features.hpp"
#include "distill/data/datasets.hpp"

namespace distill::train {

/// Options of make_teacher_cache (`distill cache`).
struct CacheOptions {
  /// Augmented views per image (K).
  TORCH_ARG(int64_t, views) = 10;
  /// Logits kept per view (k); 0 or the class count keeps all (then training is exact).
  TORCH_ARG(int64_t, topk) = 10;
  /// How the kept logits are stored: torch::kFloat or torch::kHalf.
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat;
  /// The cache directory.
  TORCH_ARG(std::string, out);
  /// Images per shard file (the unit of resumption and of work between workers).
  TORCH_ARG(int64_t, shard_images) = 2048;
  /// Teacher batch size; 0: the recipe's training batch size.
  TORCH_ARG(int64_t, batch_size) = 0;
};

/// Runs the frozen models of `recipe` (freeze_params_list) once over `views` augmented views
/// of every training image, with the recipe's training transforms and Global.seed, and writes
/// their top-k logits to options.out. Shards already complete in options.out (an interrupted
/// run) are kept. Data parallel (WORLD_SIZE > 1): rank r makes shards r, r + W, ...; rank 0
/// writes the manifest when all are done. Progress and images/s go to `out`.
///
///   distill::train::make_teacher_cache(recipe, distill::train::CacheOptions().views(4).topk(10).out("cache/kd"));
void make_teacher_cache(const nlohmann::json& recipe, const CacheOptions& options, std::ostream& out);

/// A teacher cache opened for training (memory-mapped shards, each checked against the
/// manifest's checksum when opened).
///
///   auto cache = distill::train::TeacherCache::open("cache/kd");
///   auto outputs = model->forward(images);
///   for (auto& [name, logits] : cache->lookup(batch.indices, batch.views)) outputs.set(name, {{"logits", logits}});
class TeacherCache {
 public:
  static std::shared_ptr<TeacherCache> open(const std::string& dir);
  ~TeacherCache();
  TeacherCache(const TeacherCache&) = delete;
  TeacherCache& operator=(const TeacherCache&) = delete;

  const std::string& dir() const;
  const nlohmann::json& manifest() const;
  int64_t views() const;
  int64_t topk() const;
  int64_t classes() const;
  size_t images() const;
  /// The cached models' names (e.g. "Teacher").
  const std::vector<std::string>& teachers() const;

  /// The augmentation seed of view `view` of image `index`.
  uint64_t seed(size_t index, int64_t view) const;
  /// Each cached model's logits for the images `indices` [B] shown as views `views` [B]: a
  /// dense [B, C] float32 tensor when the cache keeps all classes, else a top-k teacher
  /// (distill::topk_teacher).
  Named<torch::Tensor> lookup(const torch::Tensor& indices, const torch::Tensor& views) const;

  /// Refuses a cache made from another dataset (size, sample list, labels), naming what differs.
  void check_dataset(const data::Dataset& dataset) const;
  /// Refuses a cache made for another recipe: different training transforms, teacher
  /// architectures or teacher weights, or dataset; the error names what differs.
  void check_recipe(const nlohmann::json& recipe, const data::Dataset& dataset) const;

  struct Impl;

 private:
  explicit TeacherCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// `recipe` with the models `cache` holds removed from Arch (models, freeze_params_list,
/// pretrained_list), so that the teacher is never built or loaded. Loss.Train terms that need
/// more of a cached model than its logits (features: MGD, AFD, PEFD, a feature distance) are
/// refused, naming the term.
nlohmann::json without_cached_teachers(const nlohmann::json& recipe, const TeacherCache& cache);

}  // namespace distill::train
