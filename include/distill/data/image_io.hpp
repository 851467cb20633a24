#pragma once
// Reading files and JPEG decoding / encoding with libjpeg-turbo. Link distill::engine.

#include <fstream>
#include <memory>
#include <string>

#include <torch/torch.h>
#include <turbojpeg.h>

#include "distill/core/error.hpp"

namespace distill::data {

/// The whole file as bytes; an error names the file.
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) distill::detail::fail(path, ": cannot open the file");
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  if (in.bad()) distill::detail::fail(path, ": read error");
  return bytes;
}

namespace detail {
struct TurboHandle {
  tjhandle handle;
  explicit TurboHandle(tjhandle h) : handle(h) {
    if (!handle) distill::detail::fail("libjpeg-turbo: cannot create a handle");
  }
  ~TurboHandle() { tjDestroy(handle); }
  TurboHandle(const TurboHandle&) = delete;
  TurboHandle& operator=(const TurboHandle&) = delete;
};
}  // namespace detail

/// Decodes JPEG bytes to an RGB image, uint8 [H, W, 3]. `origin` (a file name) is named in
/// errors, e.g. "train/cat.jpg: not a JPEG image (Not a JPEG file: starts with 0x89 0x50)".
inline torch::Tensor decode_jpeg(const std::string& bytes, const std::string& origin) {
  thread_local detail::TurboHandle decoder(tjInitDecompress());
  auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (bytes.empty() || tjDecompressHeader3(decoder.handle, data, bytes.size(), &width, &height, &subsampling, &colorspace) != 0)
    distill::detail::fail(origin, ": not a JPEG image (", bytes.empty() ? "empty file" : tjGetErrorStr2(decoder.handle), ")");
  if (width <= 0 || height <= 0 || static_cast<int64_t>(width) * height > (int64_t{1} << 28))
    distill::detail::fail(origin, ": implausible JPEG size ", width, "x", height);
  auto image = torch::empty({height, width, 3}, torch::kUInt8);
  if (tjDecompress2(decoder.handle, data, bytes.size(), image.data_ptr<uint8_t>(), width, 0, height, TJPF_RGB, 0) != 0 &&
      tjGetErrorCode(decoder.handle) == TJERR_FATAL)
    distill::detail::fail(origin, ": corrupt JPEG data (", tjGetErrorStr2(decoder.handle), ")");
  return image;
}

/// Encodes an RGB uint8 [H, W, 3] image as JPEG (4:4:4), e.g. to write test data.
inline std::string encode_jpeg(const torch::Tensor& rgb, int quality = 95) {
  if (rgb.scalar_type() != torch::kUInt8 || rgb.dim() != 3 || rgb.size(2) != 3)
    distill::detail::fail("encode_jpeg: expected a uint8 [H, W, 3] image, got ", rgb.scalar_type(), " ", rgb.sizes());
  thread_local detail::TurboHandle encoder(tjInitCompress());
  auto pixels = rgb.contiguous();
  unsigned char* out = nullptr;
  unsigned long size = 0;
  if (tjCompress2(encoder.handle, pixels.data_ptr<uint8_t>(), static_cast<int>(pixels.size(1)), 0,
                  static_cast<int>(pixels.size(0)), TJPF_RGB, &out, &size, TJSAMP_444, quality, 0) != 0)
    distill::detail::fail("encode_jpeg: ", tjGetErrorStr2(encoder.handle));
  std::string bytes(reinterpret_cast<const char*>(out), size);
  tjFree(out);
  return bytes;
}

}  // namespace distill::data
