#pragma once
// RandAugment as timm builds it and the reference's TimmAutoAugment uses it
// ("rand-m7-mstd0.5-inc1"; docs/reference.md §5.4), with each image operation computed as
// PIL computes it on 8-bit images. Compiled into distill::engine (src/augment.cpp).

#include <array>
#include <string>
#include <vector>

#include "distill/data/transforms.hpp"

namespace distill::data {

/// The operations RandAugment chooses from (timm's names). The "...Increasing" variants are
/// the same operations whose strength grows with the magnitude.
enum class AugmentOp {
  AutoContrast, Equalize, Invert, Rotate, Posterize, Solarize, SolarizeAdd, Color, Contrast, Brightness, Sharpness,
  ShearX, ShearY, TranslateXRel, TranslateYRel
};

/// Interpolation of the geometric operations, as PIL's Image.transform does it: bilinear, or
/// bicubic (PIL's cubic convolution with a = -1, not its resize filter), or a random one of
/// the two per operation (the reference's "random").
enum class AugmentInterpolation { bilinear, bicubic, random };

/// Options of rand_augment: what the reference's config_str "rand-m7-mstd0.5-inc1" and its
/// keys say. Each of `num_layers` operations (drawn uniformly with replacement, or by
/// `weights` without replacement) is applied with probability 1/2 at a magnitude drawn from
/// N(magnitude, magnitude_std) clipped to [0, 10].
struct RandAugmentOptions {
  double magnitude = 10;
  int64_t num_layers = 2;
  double magnitude_std = 0;
  bool increasing = false;                // "inc1": the ops whose strength grows with the magnitude
  std::vector<double> weights;            // "w0": timm's choice weights; empty: uniform
  AugmentInterpolation interpolation = AugmentInterpolation::bicubic;
  std::array<uint8_t, 3> fill{124, 116, 104};  // round(255 * ImageNet mean), as the reference
  double translate_pct = 0.45;

  /// The ops in timm's order for these options (_RAND_TRANSFORMS or _RAND_INCREASING_TRANSFORMS).
  std::vector<AugmentOp> ops() const;
};

/// Parses the reference's config_str ("rand-m9-n2-mstd0.5-inc1-w0") into `options`; anything
/// else (AutoAugment "auto-...", AugMix "augmix-...", an unknown section) is an error naming
/// `where`.
RandAugmentOptions parse_rand_augment(const std::string& config, const std::string& where,
                                      RandAugmentOptions options = {});

/// RandAugment on a float [3, H, W] image with values in [0, 255] (rounded to 8 bits first, as
/// PIL holds images). Draws from the pipeline's generator: the same distributions as timm,
/// not Python's random stream.
///
///   pipeline.add("TimmAutoAugment", distill::data::rand_augment(distill::data::parse_rand_augment("rand-m7-mstd0.5-inc1", "aug")));
Transform rand_augment(RandAugmentOptions options);

/// One operation on a uint8 [3, H, W] image with its argument as timm's level functions give
/// it (degrees, shear factor, translation as a fraction, enhancement factor, bits, threshold
/// or addend; ignored by AutoContrast, Equalize, Invert). For tests and for programs that
/// build their own policies.
torch::Tensor apply_augment_op(AugmentOp op, const torch::Tensor& image, double argument,
                               AugmentInterpolation interpolation = AugmentInterpolation::bicubic,
                               std::array<uint8_t, 3> fill = {124, 116, 104});

/// timm's name of `op` ("SolarizeAdd").
const char* augment_op_name(AugmentOp op);

}  // namespace distill::data
