#pragma once
// The reference's image transforms (transform_ops: DecodeImage, RandCropImage, RandFlipImage,
// ResizeImage, CropImage, NormalizeImage, ToCHWImage; reference section 5), on tensors.
//
// A pipeline takes a decoded uint8 [H, W, 3] RGB image and returns float32 [3, H, W]. Random
// choices come from the generator passed in, which the loader seeds per (seed, epoch, sample),
// so augmentation does not depend on worker threads and a resumed run draws the same crops.

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "distill/config/reader.hpp"

namespace distill::data {

using Rng = std::mt19937_64;

/// One step on a float [3, H, W] image.
using Transform = std::function<torch::Tensor(const torch::Tensor&, Rng&)>;

namespace detail {

inline double uniform(Rng& rng, double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }
inline int64_t randint(Rng& rng, int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }

/// Resizes [3, H, W] to [3, h, w]. "bilinear" matches cv2's INTER_LINEAR (half-pixel centres,
/// no antialiasing); "bicubic" is PyTorch's bicubic, which unlike PIL's does not antialias
/// when shrinking.
inline torch::Tensor resize(const torch::Tensor& image, int64_t h, int64_t w, const std::string& interpolation) {
  if (image.size(1) == h && image.size(2) == w) return image;
  namespace F = torch::nn::functional;
  auto options = F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w});
  if (interpolation == "nearest") options.mode(torch::kNearest);
  else if (interpolation == "bicubic") options.mode(torch::kBicubic).align_corners(false);
  else options.mode(torch::kBilinear).align_corners(false);
  auto out = F::interpolate(image.unsqueeze(0), options).squeeze(0);
  return interpolation == "bicubic" ? out.clamp(0, 255) : out;
}

inline std::string interpolation(const config::Reader& r) {
  r.get<std::string>("backend", "cv2");  // "cv2" or "pil": both map to the tensor resize above
  const auto mode = r.get<std::string>("interpolation", "bilinear");
  if (mode != "bilinear" && mode != "bicubic" && mode != "nearest")
    distill::detail::fail(r.path_of("interpolation"), ": expected bilinear, bicubic or nearest, got '", mode, "'");
  return mode;
}

/// A number, or a fraction written as a string ("1.0/255.0", as the reference's YAML does).
inline double number(const config::Reader& r, const std::string& key, double fallback) {
  if (!r.has(key)) return fallback;
  const auto& v = r.raw(key);
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const auto text = v.get<std::string>();
    const auto slash = text.find('/');
    try {
      if (slash == std::string::npos) return std::stod(text);
      return std::stod(text.substr(0, slash)) / std::stod(text.substr(slash + 1));
    } catch (const std::exception&) {
    }
  }
  distill::detail::fail(r.path_of(key), ": expected a number or a fraction like \"1.0/255.0\", got ",
                        config::Reader::describe(v));
}

inline std::pair<int64_t, int64_t> size_of(const config::Reader& r, const std::string& key) {
  const auto& v = r.raw(key);
  if (v.is_number_integer() && v.get<int64_t>() > 0) return {v.get<int64_t>(), v.get<int64_t>()};
  if (v.is_array() && v.size() == 2 && v[0].is_number_integer() && v[1].is_number_integer() && v[0].get<int64_t>() > 0 &&
      v[1].get<int64_t>() > 0)
    return {v[1].get<int64_t>(), v[0].get<int64_t>()};  // reference order [w, h]
  distill::detail::fail(r.path_of(key), ": expected a positive size or [width, height], got ", config::Reader::describe(v));
}

}  // namespace detail

/// The reference's RandCropImage: a crop of area fraction U[scale] and aspect ratio
/// U[ratio] (one draw; the area is bounded so that the crop fits), resized to `size`.
inline Transform random_crop(int64_t height, int64_t width, std::pair<double, double> scale = {0.08, 1.0},
                             std::pair<double, double> ratio = {3.0 / 4.0, 4.0 / 3.0},
                             std::string interpolation = "bilinear") {
  return [=](const torch::Tensor& image, Rng& rng) {
    const double img_h = static_cast<double>(image.size(1)), img_w = static_cast<double>(image.size(2));
    const double aspect = std::sqrt(detail::uniform(rng, ratio.first, ratio.second));
    double w = aspect, h = 1.0 / aspect;
    const double bound = std::min((img_w / img_h) / (w * w), (img_h / img_w) / (h * h));
    const double area = img_w * img_h * detail::uniform(rng, std::min(scale.first, bound), std::min(scale.second, bound));
    const int64_t cw = std::clamp<int64_t>(static_cast<int64_t>(std::sqrt(area) * w), 1, static_cast<int64_t>(img_w));
    const int64_t ch = std::clamp<int64_t>(static_cast<int64_t>(std::sqrt(area) * h), 1, static_cast<int64_t>(img_h));
    const int64_t x = detail::randint(rng, 0, static_cast<int64_t>(img_w) - cw);
    const int64_t y = detail::randint(rng, 0, static_cast<int64_t>(img_h) - ch);
    return detail::resize(image.slice(1, y, y + ch).slice(2, x, x + cw), height, width, interpolation);
  };
}

/// Horizontal flip with probability 1/2 (RandFlipImage, flip_code 1).
inline Transform random_flip() {
  return [](const torch::Tensor& image, Rng& rng) {
    return detail::randint(rng, 0, 1) == 1 ? image.flip({2}) : image;
  };
}

/// Resizes the shorter side to `short_side` (ResizeImage resize_short), keeping the aspect.
inline Transform resize_short(int64_t short_side, std::string interpolation = "bilinear") {
  return [=](const torch::Tensor& image, Rng&) {
    const double percent = static_cast<double>(short_side) / std::min(image.size(1), image.size(2));
    return detail::resize(image, static_cast<int64_t>(std::round(image.size(1) * percent)),
                          static_cast<int64_t>(std::round(image.size(2) * percent)), interpolation);
  };
}

/// Resizes to exactly height x width (ResizeImage size).
inline Transform resize_to(int64_t height, int64_t width, std::string interpolation = "bilinear") {
  return [=](const torch::Tensor& image, Rng&) { return detail::resize(image, height, width, interpolation); };
}

/// Centre crop (CropImage). An image smaller than the crop is an error.
inline Transform center_crop(int64_t height, int64_t width) {
  return [=](const torch::Tensor& image, Rng&) {
    if (image.size(1) < height || image.size(2) < width)
      distill::detail::fail("CropImage: the image is ", image.size(2), "x", image.size(1), ", smaller than the ", width,
                            "x", height, " crop");
    const int64_t y = (image.size(1) - height) / 2, x = (image.size(2) - width) / 2;
    return image.slice(1, y, y + height).slice(2, x, x + width);
  };
}

/// (x * scale - mean) / std per channel (NormalizeImage).
inline Transform normalize(double scale, std::vector<double> mean, std::vector<double> std_dev) {
  auto m = torch::tensor(mean, torch::kFloat).view({-1, 1, 1}), s = torch::tensor(std_dev, torch::kFloat).view({-1, 1, 1});
  return [=](const torch::Tensor& image, Rng&) { return (image * scale - m) / s; };
}

/// A list of transforms applied in order to a decoded image.
///
///   auto pipeline = distill::data::Pipeline::from_config(recipe["DataLoader"]["Train"]["dataset"]["transform_ops"],
///                                                        "DataLoader.Train.dataset.transform_ops");
///   torch::Tensor x = pipeline(decoded_rgb_uint8, rng);   // float [3, 224, 224]
class Pipeline {
 public:
  void add(std::string name, Transform t) { steps_.emplace_back(std::move(name), std::move(t)); }

  /// uint8 [H, W, 3] RGB -> float [3, H', W'].
  torch::Tensor operator()(const torch::Tensor& rgb, Rng& rng) const {
    auto image = rgb.permute({2, 0, 1}).to(torch::kFloat);
    if (bgr_) image = image.flip({0});
    for (const auto& [name, step] : steps_) image = step(image, rng);
    return image.contiguous();
  }

  /// The reference's transform_ops list (one {Name: {options}} entry per step).
  static Pipeline from_config(const config::json& ops, const std::string& path) {
    Pipeline pipeline;
    if (!ops.is_array()) distill::detail::fail(path, ": expected a list of transforms");
    for (size_t i = 0; i < ops.size(); ++i) {
      const std::string at = path + "[" + std::to_string(i) + "]";
      if (!ops[i].is_object() || ops[i].size() != 1)
        distill::detail::fail(at, ": expected an object with one key (the transform), got ", config::Reader::describe(ops[i]));
      const std::string name = ops[i].begin().key();
      static const config::json empty = config::json::object();
      const auto& value = ops[i].begin().value();
      config::Reader r(value.is_null() ? empty : value, at + "." + name);
      if (name == "DecodeImage") {
        pipeline.bgr_ = !r.get<bool>("to_rgb", true);
        if (r.get<bool>("channel_first", false))
          distill::detail::fail(r.path_of("channel_first"), ": only false (HWC decoding) is supported");
      } else if (name == "RandCropImage") {
        auto [h, w] = detail::size_of(r, "size");
        auto scale = r.get<std::vector<double>>("scale", {0.08, 1.0});
        auto ratio = r.get<std::vector<double>>("ratio", {3.0 / 4.0, 4.0 / 3.0});
        if (scale.size() != 2 || ratio.size() != 2) distill::detail::fail(r.path(), ": scale and ratio take two numbers");
        pipeline.add(name, random_crop(h, w, {scale[0], scale[1]}, {ratio[0], ratio[1]}, detail::interpolation(r)));
      } else if (name == "RandFlipImage") {
        if (r.get<int64_t>("flip_code", 1) != 1)
          distill::detail::fail(r.path_of("flip_code"), ": only 1 (horizontal) is supported");
        pipeline.add(name, random_flip());
      } else if (name == "ResizeImage") {
        if (r.has("resize_short")) {
          pipeline.add(name, resize_short(r.get<int64_t>("resize_short"), detail::interpolation(r)));
        } else {
          auto [h, w] = detail::size_of(r, "size");
          pipeline.add(name, resize_to(h, w, detail::interpolation(r)));
        }
      } else if (name == "CropImage") {
        auto [h, w] = detail::size_of(r, "size");
        pipeline.add(name, center_crop(h, w));
      } else if (name == "NormalizeImage") {
        auto mean = r.get<std::vector<double>>("mean", {0.485, 0.456, 0.406});
        auto std_dev = r.get<std::vector<double>>("std", {0.229, 0.224, 0.225});
        const auto order = r.get<std::string>("order", "");
        if (order != "" && order != "chw" && order != "hwc")
          distill::detail::fail(r.path_of("order"), ": expected '', 'chw' or 'hwc'");
        if (mean.size() != 3 || std_dev.size() != 3) distill::detail::fail(r.path(), ": mean and std take three numbers");
        pipeline.add(name, normalize(detail::number(r, "scale", 1.0 / 255.0), mean, std_dev));
      } else if (name == "ToCHWImage") {
        // Images are CHW tensors throughout.
      } else {
        distill::detail::fail(at, ": unknown transform '", name,
                              "'; known: DecodeImage, RandCropImage, RandFlipImage, ResizeImage, CropImage, "
                              "NormalizeImage, ToCHWImage");
      }
      r.done();
    }
    return pipeline;
  }

 private:
  std::vector<std::pair<std::string, Transform>> steps_;
  bool bgr_ = false;
};

}  // namespace distill::data
