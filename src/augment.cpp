// RandAugment (timm, the reference's TimmAutoAugment) with PIL's 8-bit image operations.
// Each operation follows the PIL code path the reference runs (ImageOps, ImageEnhance,
// Image.transform), including its integer rounding, so that an image augmented here equals
// PIL's pixel for pixel (tests/reference/check_augment.py).

#include "distill/data/augment.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <regex>

#include "distill/core/error.hpp"

namespace distill::data {

namespace {

constexpr double kMaxLevel = 10.0;

// A per-channel lookup table [3, 256] applied to a uint8 [3, H, W] image.
torch::Tensor apply_lut(const torch::Tensor& image, const torch::Tensor& lut) {
  const auto flat = image.reshape({3, -1}).to(torch::kLong);
  return lut.to(torch::kUInt8).gather(1, flat).view_as(image);
}

torch::Tensor same_lut(const std::vector<int64_t>& values) {
  return torch::tensor(values, torch::kLong).unsqueeze(0).expand({3, 256}).contiguous();
}

// Histograms [3, 256] of a uint8 [3, H, W] image.
std::vector<std::array<int64_t, 256>> histograms(const torch::Tensor& image) {
  std::vector<std::array<int64_t, 256>> h(3);
  const auto c = image.contiguous();
  const uint8_t* p = c.data_ptr<uint8_t>();
  const int64_t n = c.size(1) * c.size(2);
  for (int64_t ch = 0; ch < 3; ++ch) {
    h[ch].fill(0);
    for (int64_t i = 0; i < n; ++i) ++h[ch][p[ch * n + i]];
  }
  return h;
}

// ImageOps.autocontrast(cutoff=0): each channel stretched from [lo, hi] to [0, 255].
torch::Tensor autocontrast(const torch::Tensor& image) {
  const auto h = histograms(image);
  std::vector<int64_t> lut;
  for (const auto& hist : h) {
    int64_t lo = 0, hi = 255;
    while (lo < 256 && hist[lo] == 0) ++lo;
    while (hi >= 0 && hist[hi] == 0) --hi;
    if (hi <= lo) {
      for (int64_t i = 0; i < 256; ++i) lut.push_back(i);
      continue;
    }
    const double scale = 255.0 / static_cast<double>(hi - lo), offset = -static_cast<double>(lo) * scale;
    for (int64_t i = 0; i < 256; ++i)
      lut.push_back(std::clamp<int64_t>(static_cast<int64_t>(static_cast<double>(i) * scale + offset), 0, 255));  // int(): toward zero
  }
  return apply_lut(image, torch::tensor(lut, torch::kLong).view({3, 256}));
}

// ImageOps.equalize: PIL's cumulative-histogram table per channel.
torch::Tensor equalize(const torch::Tensor& image) {
  const auto h = histograms(image);
  std::vector<int64_t> lut;
  for (const auto& hist : h) {
    std::vector<int64_t> used;
    for (int64_t v : hist)
      if (v) used.push_back(v);
    int64_t step = 0;
    if (used.size() > 1) {
      int64_t total = 0;
      for (int64_t v : used) total += v;
      step = (total - used.back()) / 256;
    }
    if (step == 0) {
      for (int64_t i = 0; i < 256; ++i) lut.push_back(i);
      continue;
    }
    int64_t n = step / 2;
    for (int64_t i = 0; i < 256; ++i) {
      lut.push_back(std::min<int64_t>(n / step, 255));
      n += hist[i];
    }
  }
  return apply_lut(image, torch::tensor(lut, torch::kLong).view({3, 256}));
}

torch::Tensor posterize(const torch::Tensor& image, int64_t bits) {
  if (bits >= 8) return image;
  const int64_t mask = ~((int64_t{1} << (8 - std::max<int64_t>(bits, 0))) - 1);
  std::vector<int64_t> lut;
  for (int64_t i = 0; i < 256; ++i) lut.push_back(i & mask & 255);
  return apply_lut(image, same_lut(lut));
}

torch::Tensor solarize(const torch::Tensor& image, int64_t threshold) {
  std::vector<int64_t> lut;
  for (int64_t i = 0; i < 256; ++i) lut.push_back(i < threshold ? i : 255 - i);
  return apply_lut(image, same_lut(lut));
}

torch::Tensor solarize_add(const torch::Tensor& image, int64_t add, int64_t threshold = 128) {
  std::vector<int64_t> lut;
  for (int64_t i = 0; i < 256; ++i) lut.push_back(i < threshold ? std::min<int64_t>(255, i + add) : i);
  return apply_lut(image, same_lut(lut));
}

// PIL's RGB -> L: (19595 R + 38470 G + 7471 B + 0x8000) >> 16, as int64 [H, W].
torch::Tensor luma(const torch::Tensor& image) {
  const auto x = image.to(torch::kLong);
  return (x[0] * 19595 + x[1] * 38470 + x[2] * 7471 + 0x8000).floor_divide(65536);
}

// Image.blend(degenerate, image, factor): degenerate + factor * (image - degenerate) in single
// precision, truncated (and clipped when extrapolating).
torch::Tensor blend(const torch::Tensor& degenerate, const torch::Tensor& image, double factor) {
  const auto alpha = static_cast<float>(factor);
  const auto in1 = degenerate.to(torch::kInt).to(torch::kFloat), in2 = image.to(torch::kInt).to(torch::kFloat);
  const auto out = in1 + (in2 - in1) * alpha;
  return out.clamp(0, 255).trunc().to(torch::kUInt8);
}

// ImageFilter.SMOOTH (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1, divided by 13 in single precision,
// rounded to the nearest value), borders copied.
torch::Tensor smooth(const torch::Tensor& image) {
  const int64_t h = image.size(1), w = image.size(2);
  if (h < 3 || w < 3) return image;
  const float k1 = 1.0f / 13.0f, k5 = 5.0f / 13.0f;
  const auto x = image.to(torch::kFloat);
  auto row = [&](int64_t dy, float centre) {  // one kernel row over the interior, PIL's order
    const auto r = x.slice(1, 1 + dy, h - 1 + dy);
    return (r.slice(2, 0, w - 2) * k1 + r.slice(2, 1, w - 1) * centre) + r.slice(2, 2, w) * k1;
  };
  const auto ss = ((torch::zeros({3, h - 2, w - 2}) + row(1, k1)) + row(0, k5)) + row(-1, k1);
  auto out = image.clone();
  out.slice(1, 1, h - 1).slice(2, 1, w - 1).copy_((ss.clamp(0, 255) + 0.5f).trunc().to(torch::kUInt8));  // PIL rounds here
  return out;
}

torch::Tensor enhance(AugmentOp op, const torch::Tensor& image, double factor) {
  switch (op) {
    case AugmentOp::Color: return blend(luma(image).to(torch::kUInt8).unsqueeze(0).expand_as(image), image, factor);
    case AugmentOp::Contrast: {
      const auto l = luma(image);
      const int64_t mean = static_cast<int64_t>(l.to(torch::kDouble).mean().item<double>() + 0.5);
      return blend(torch::full_like(image, mean), image, factor);
    }
    case AugmentOp::Brightness: return blend(torch::zeros_like(image), image, factor);
    default: return blend(smooth(image), image, factor);
  }
}

// Image.transform(size, AFFINE, (a, b, c, d, e, f), resample, fillcolor): the output pixel
// (x, y) samples the input at (a (x + .5) + b (y + .5) + c, d (x + .5) + e (y + .5) + f);
// outside [0, W) x [0, H) it takes the fill colour, inside the taps are clamped to the image.
torch::Tensor affine(const torch::Tensor& image, const std::array<double, 6>& m, bool bicubic, const std::array<uint8_t, 3>& fill) {
  const int64_t h = image.size(1), w = image.size(2);
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  const auto xs = (torch::arange(w, opts) + 0.5).view({1, w}), ys = (torch::arange(h, opts) + 0.5).view({h, 1});
  const auto xin = xs * m[0] + ys * m[1] + m[2], yin = xs * m[3] + ys * m[4] + m[5];
  const auto inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h);
  const auto fx = xin - 0.5, fy = yin - 0.5;
  const auto x0 = fx.floor(), y0 = fy.floor();
  const auto dx = fx - x0, dy = fy - y0;
  const auto src = image.to(torch::kDouble).reshape({3, -1});
  // Value of input pixel (x0 + i, y0 + j), clamped, for every output pixel: [3, H, W].
  auto tap = [&](int64_t i, int64_t j) {
    const auto xi = (x0 + i).clamp(0, w - 1).to(torch::kLong), yj = (y0 + j).clamp(0, h - 1).to(torch::kLong);
    const auto index = (yj * w + xi).reshape({1, -1}).expand({3, -1});
    return src.gather(1, index).view({3, h, w});
  };
  torch::Tensor v;
  if (bicubic) {
    // PIL's BICUBIC(v1..v4, d): v2 + d (-v1 + v3 + d (2 (v1 - v2) + v3 - v4 + d (-v1 + v2 - v3 + v4))).
    auto cubic = [](const torch::Tensor& v1, const torch::Tensor& v2, const torch::Tensor& v3, const torch::Tensor& v4,
                    const torch::Tensor& d) {
      return v2 + d * ((-v1 + v3) + d * ((2 * (v1 - v2) + v3 - v4) + d * (-v1 + v2 - v3 + v4)));
    };
    std::array<torch::Tensor, 4> rows;
    for (int64_t j = 0; j < 4; ++j) rows[j] = cubic(tap(-1, j - 1), tap(0, j - 1), tap(1, j - 1), tap(2, j - 1), dx);
    v = cubic(rows[0], rows[1], rows[2], rows[3], dy);
  } else {
    const auto top = tap(0, 0) + (tap(1, 0) - tap(0, 0)) * dx, bottom = tap(0, 1) + (tap(1, 1) - tap(0, 1)) * dx;
    v = top + (bottom - top) * dy;
  }
  const auto pixels = v.clamp(0, 255).trunc().to(torch::kUInt8);
  const auto background = torch::tensor({fill[0], fill[1], fill[2]}, torch::kUInt8).view({3, 1, 1}).expand_as(pixels);
  return torch::where(inside.unsqueeze(0), pixels, background);
}

// Image.rotate(degrees, resample, fillcolor): about the centre (w / 2, h / 2), as PIL builds
// the matrix (rounded to 15 decimals).
torch::Tensor rotate(const torch::Tensor& image, double degrees, bool bicubic, const std::array<uint8_t, 3>& fill) {
  double angle = std::fmod(degrees, 360.0);
  if (angle < 0) angle += 360.0;
  if (angle == 0) return image;
  if (angle == 180) return image.flip({1, 2});
  const double w = static_cast<double>(image.size(2)), h = static_cast<double>(image.size(1));
  if ((angle == 90 || angle == 270) && w == h) return angle == 90 ? image.transpose(1, 2).flip({1}) : image.transpose(1, 2).flip({2});
  const double radians = -angle * M_PI / 180.0;
  auto round15 = [](double v) {  // Python's round(v, 15): the double nearest the rounded decimal
    char text[64];
    std::snprintf(text, sizeof text, "%.15f", v);
    return std::strtod(text, nullptr);
  };
  std::array<double, 6> m{round15(std::cos(radians)), round15(std::sin(radians)), 0.0,
                          round15(-std::sin(radians)), round15(std::cos(radians)), 0.0};
  const double cx = w / 2.0, cy = h / 2.0;
  m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
  m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
  return affine(image, m, bicubic, fill);
}

bool coin(Rng& rng) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng) > 0.5; }

// timm's level functions: the operation's argument at `magnitude` (0..10).
double level_argument(AugmentOp op, bool increasing, double magnitude, double translate_pct, Rng& rng) {
  const double level = magnitude / kMaxLevel;
  auto negate = [&](double v) { return coin(rng) ? -v : v; };
  switch (op) {
    case AugmentOp::Rotate: return negate(level * 30.0);
    case AugmentOp::Posterize: {
      const int64_t bits = static_cast<int64_t>(level * 4);
      return static_cast<double>(increasing ? 4 - bits : bits);
    }
    case AugmentOp::Solarize: {
      const int64_t threshold = static_cast<int64_t>(level * 256);
      return static_cast<double>(increasing ? 256 - threshold : threshold);
    }
    case AugmentOp::SolarizeAdd: return static_cast<double>(static_cast<int64_t>(level * 110));
    case AugmentOp::Color:
    case AugmentOp::Contrast:
    case AugmentOp::Brightness:
    case AugmentOp::Sharpness: return increasing ? 1.0 + negate(level * 0.9) : level * 1.8 + 0.1;
    case AugmentOp::ShearX:
    case AugmentOp::ShearY: return negate(level * 0.3);
    case AugmentOp::TranslateXRel:
    case AugmentOp::TranslateYRel: return negate(level * translate_pct);
    default: return 0;
  }
}

// timm's _RAND_CHOICE_WEIGHTS_0, by op.
double choice_weight(AugmentOp op) {
  switch (op) {
    case AugmentOp::Rotate: return 0.3;
    case AugmentOp::ShearX: case AugmentOp::ShearY: return 0.2;
    case AugmentOp::TranslateXRel: case AugmentOp::TranslateYRel: return 0.1;
    case AugmentOp::Color: case AugmentOp::Sharpness: case AugmentOp::AutoContrast: return 0.025;
    case AugmentOp::Posterize: case AugmentOp::Invert: return 0;
    default: return 0.005;
  }
}

}  // namespace

const char* augment_op_name(AugmentOp op) {
  static const char* names[] = {"AutoContrast", "Equalize", "Invert",     "Rotate", "Posterize",
                                "Solarize",     "SolarizeAdd", "Color",   "Contrast", "Brightness",
                                "Sharpness",    "ShearX",   "ShearY",     "TranslateXRel", "TranslateYRel"};
  return names[static_cast<int>(op)];
}

std::vector<AugmentOp> RandAugmentOptions::ops() const {
  using O = AugmentOp;
  // timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS hold the same operations in this
  // order (with the "Increasing" level functions in the latter).
  return {O::AutoContrast, O::Equalize, O::Invert, O::Rotate, O::Posterize, O::Solarize, O::SolarizeAdd, O::Color,
          O::Contrast, O::Brightness, O::Sharpness, O::ShearX, O::ShearY, O::TranslateXRel, O::TranslateYRel};
}

RandAugmentOptions parse_rand_augment(const std::string& config, const std::string& where, RandAugmentOptions options) {
  static const std::regex section("([a-z]+)([0-9][0-9.]*)");
  size_t start = 0;
  bool first = true;
  while (start <= config.size()) {
    const size_t end = std::min(config.find('-', start), config.size());
    const std::string part = config.substr(start, end - start);
    start = end + 1;
    if (first) {
      if (part != "rand")
        fail_at(where, "'", config, "': only RandAugment (\"rand-...\") is supported, not AutoAugment or AugMix");
      first = false;
      continue;
    }
    std::smatch m;
    if (!std::regex_match(part, m, section)) fail_at(where, "'", config, "': cannot read the section '", part, "'");
    const std::string key = m[1];
    const double value = std::stod(m[2]);
    if (key == "m") options.magnitude = static_cast<double>(static_cast<int64_t>(value));
    else if (key == "n") options.num_layers = static_cast<int64_t>(value);
    else if (key == "mstd") options.magnitude_std = value;
    else if (key == "inc") options.increasing = value != 0;
    else if (key == "w") {
      if (value != 0) fail_at(where, "'", config, "': only the weight set w0 exists");
      options.weights.clear();
      for (AugmentOp op : options.ops()) options.weights.push_back(choice_weight(op));
    } else {
      fail_at(where, "'", config, "': unknown RandAugment section '", key, "' (known: m, n, mstd, inc, w)");
    }
  }
  if (options.num_layers < 0 || options.num_layers > 64) fail_at(where, "'", config, "': n must be in 0..64");
  if (!options.weights.empty() && options.num_layers > static_cast<int64_t>(options.ops().size()))
    fail_at(where, "'", config, "': with weights, ops are drawn without replacement; n is at most ", options.ops().size());
  return options;
}

torch::Tensor apply_augment_op(AugmentOp op, const torch::Tensor& image, double argument, AugmentInterpolation interpolation,
                               std::array<uint8_t, 3> fill) {
  if (image.scalar_type() != torch::kUInt8 || image.dim() != 3 || image.size(0) != 3)
    distill::fail("apply_augment_op: expected a uint8 [3, H, W] image, got ", image.scalar_type(), " ", image.sizes());
  const bool bicubic = interpolation != AugmentInterpolation::bilinear;
  const double w = static_cast<double>(image.size(2)), h = static_cast<double>(image.size(1));
  switch (op) {
    case AugmentOp::AutoContrast: return autocontrast(image);
    case AugmentOp::Equalize: return equalize(image);
    case AugmentOp::Invert: return 255 - image;
    case AugmentOp::Rotate: return rotate(image, argument, bicubic, fill);
    case AugmentOp::Posterize: return posterize(image, static_cast<int64_t>(argument));
    case AugmentOp::Solarize: return solarize(image, static_cast<int64_t>(argument));
    case AugmentOp::SolarizeAdd: return solarize_add(image, static_cast<int64_t>(argument));
    case AugmentOp::ShearX: return affine(image, {1, argument, 0, 0, 1, 0}, bicubic, fill);
    case AugmentOp::ShearY: return affine(image, {1, 0, 0, argument, 1, 0}, bicubic, fill);
    case AugmentOp::TranslateXRel: return affine(image, {1, 0, argument * w, 0, 1, 0}, bicubic, fill);
    case AugmentOp::TranslateYRel: return affine(image, {1, 0, 0, 0, 1, argument * h}, bicubic, fill);
    default: return enhance(op, image, argument);
  }
}

Transform rand_augment(RandAugmentOptions options) {
  const auto ops = options.ops();
  if (!options.weights.empty() && options.weights.size() != ops.size())
    distill::fail("rand_augment: ", options.weights.size(), " weights for ", ops.size(), " operations");
  return [options, ops](const torch::Tensor& input, Rng& rng) {
    auto image = input.round().clamp(0, 255).to(torch::kUInt8);
    std::vector<size_t> chosen;
    if (options.weights.empty()) {
      std::uniform_int_distribution<size_t> pick(0, ops.size() - 1);
      for (int64_t i = 0; i < options.num_layers; ++i) chosen.push_back(pick(rng));
    } else {  // without replacement, in proportion to the weights left
      auto weights = options.weights;
      for (int64_t i = 0; i < options.num_layers; ++i) {
        std::discrete_distribution<size_t> pick(weights.begin(), weights.end());
        chosen.push_back(pick(rng));
        weights[chosen.back()] = 0;
      }
    }
    for (size_t index : chosen) {
      const AugmentOp op = ops[index];
      if (std::uniform_real_distribution<double>(0.0, 1.0)(rng) > 0.5) continue;  // prob 0.5
      double magnitude = options.magnitude;
      if (options.magnitude_std > 0) magnitude = std::normal_distribution<double>(magnitude, options.magnitude_std)(rng);
      magnitude = std::clamp(magnitude, 0.0, kMaxLevel);
      const double argument = level_argument(op, options.increasing, magnitude, options.translate_pct, rng);
      const auto mode = options.interpolation == AugmentInterpolation::random
                            ? (coin(rng) ? AugmentInterpolation::bicubic : AugmentInterpolation::bilinear)
                            : options.interpolation;
      image = apply_augment_op(op, image, argument, mode, options.fill);
    }
    return image.to(torch::kFloat);
  };
}

}  // namespace distill::data
