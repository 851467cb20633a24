#pragma once
// Reading files, and JPEG decoding / encoding with libjpeg-turbo. Compiled into
// distill::engine (src/data.cpp).

#include <string>

#include <torch/torch.h>

namespace distill::data {

/// The whole file as bytes; an error names the file.
std::string read_file(const std::string& path);

/// Decodes JPEG bytes to an RGB image, uint8 [H, W, 3]. `origin` (a file name) is named in
/// errors, e.g. "train/cat.jpg: not a JPEG image (Not a JPEG file: starts with 0x89 0x50)".
torch::Tensor decode_jpeg(const std::string& bytes, const std::string& origin);

/// Encodes an RGB uint8 [H, W, 3] image as JPEG (4:4:4), e.g. to write test data.
std::string encode_jpeg(const torch::Tensor& rgb, int quality = 95);

}  // namespace distill::data
