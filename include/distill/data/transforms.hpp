#pragma once
// The reference's image transforms (its transform_ops: DecodeImage, RandCropImage,
// RandFlipImage, ResizeImage, CropImage, NormalizeImage, ToCHWImage; docs/reference.md §5), on
// tensors. Compiled into distill::engine (src/data.cpp); train/recipe.hpp reads them from a
// recipe.
//
// A pipeline takes a decoded uint8 [H, W, 3] RGB image and returns float32 [3, H, W]. Random
// choices come from the generator passed in, which the loader seeds per (seed, epoch, sample),
// so augmentation does not depend on worker threads and a resumed run draws the same crops.

#include <functional>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace distill::data {

using Rng = std::mt19937_64;

/// One step on a float [3, H, W] image.
using Transform = std::function<torch::Tensor(const torch::Tensor&, Rng&)>;

/// How an image is resized. bilinear matches cv2's INTER_LINEAR (half-pixel centres, no
/// antialiasing); bicubic is PyTorch's, which unlike PIL's does not antialias when shrinking.
enum class Interpolation { bilinear, bicubic, nearest };

/// The reference's RandCropImage: a crop of area fraction U[scale] and aspect ratio
/// U[ratio] (one draw; the area is bounded so that the crop fits), resized to `size`.
Transform random_crop(int64_t height, int64_t width, std::pair<double, double> scale = {0.08, 1.0},
                      std::pair<double, double> ratio = {3.0 / 4.0, 4.0 / 3.0},
                      Interpolation interpolation = Interpolation::bilinear);

/// Horizontal flip with probability 1/2 (RandFlipImage, flip_code 1).
Transform random_flip();

/// Resizes the shorter side to `short_side` (ResizeImage resize_short), keeping the aspect.
Transform resize_short(int64_t short_side, Interpolation interpolation = Interpolation::bilinear);

/// Resizes to exactly height x width (ResizeImage size).
Transform resize_to(int64_t height, int64_t width, Interpolation interpolation = Interpolation::bilinear);

/// Centre crop (CropImage). An image smaller than the crop is an error.
Transform center_crop(int64_t height, int64_t width);

/// (x * scale - mean) / std per channel (NormalizeImage).
Transform normalize(double scale, std::vector<double> mean, std::vector<double> std_dev);

/// Reverses the channel order (DecodeImage with to_rgb false: BGR, as cv2 decodes).
Transform to_bgr();

/// One step of a pipeline with, when it has one, its deployment form: a line a program
/// without distill replays with the same libtorch operations (examples/predict.cpp; the
/// vocabulary is in docs/deployment.md): "bgr", "resize_short S MODE", "resize H W MODE",
/// "crop H W", "normalize SCALE M0 M1 M2 S0 S1 S2". An empty line is a step that does nothing;
/// no line (nullopt) a step with no such form (random augmentations, a user's own transform).
struct Step {
  Step(Transform transform, std::optional<std::string> replay = std::nullopt)  // NOLINT: implicit, so a Transform is a Step
      : transform(std::move(transform)), replay(std::move(replay)) {}
  Transform transform;
  std::optional<std::string> replay;
};

/// A list of transforms applied in order to a decoded image.
///
///   distill::data::Pipeline pipeline;
///   pipeline.add("RandCropImage", distill::data::random_crop(224, 224));
///   pipeline.add("RandFlipImage", distill::data::random_flip());
///   torch::Tensor x = pipeline(decoded_rgb_uint8, rng);   // float [3, 224, 224]
class Pipeline {
 public:
  void add(std::string name, Step step) { steps_.emplace_back(std::move(name), std::move(step)); }
  /// uint8 [H, W, 3] RGB -> float [3, H', W'].
  torch::Tensor operator()(const torch::Tensor& rgb, Rng& rng) const;
  size_t size() const { return steps_.size(); }
  /// The deployment form of every step (see Step), no-op steps left out; a step without one
  /// is an error naming it and `where` (the recipe path of the list).
  std::vector<std::string> replay(const std::string& where) const;

 private:
  std::vector<std::pair<std::string, Step>> steps_;
};

}  // namespace distill::data
