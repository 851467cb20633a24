// predict: runs a model exported by `distill export` (TorchScript) on JPEG images with nothing
// of distill: libtorch's <torch/script.h> and libjpeg-turbo only. This is the program to
// deploy; the export carries what it needs (docs/deployment.md):
//   distill/preprocess.txt   the recipe's Infer.transforms, one step per line
//   distill/postprocess.txt  "topk K"
//   distill/labels.txt       "id name" lines (may be empty)
//
//   predict MODEL.pt IMAGE.jpg [IMAGE.jpg ...] [--topk K]
//
// It prints one JSON line per image, as `distill infer` does:
//   {"class_ids":[...],"scores":[...],"file_name":"...","label_names":[...]}

#include <turbojpeg.h>

#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

/// uint8 [H, W, 3] RGB, decoded as distill decodes (libjpeg-turbo, default flags).
torch::Tensor decode_jpeg(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::unique_ptr<void, int (*)(tjhandle)> decoder(tjInitDecompress(), tjDestroy);
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (!decoder || tjDecompressHeader3(decoder.get(), data, bytes.size(), &width, &height, &subsampling, &colorspace) != 0)
    throw std::runtime_error(path + ": not a JPEG image");
  if (static_cast<int64_t>(width) * height > (int64_t{1} << 26)) throw std::runtime_error(path + ": image too large");
  auto image = torch::empty({height, width, 3}, torch::kUInt8);
  if (tjDecompress2(decoder.get(), data, bytes.size(), image.data_ptr<uint8_t>(), width, 0, height, TJPF_RGB, 0) != 0)
    throw std::runtime_error(path + ": " + tjGetErrorStr2(decoder.get()));
  return image;
}

/// [3, H, W] float resized as distill resizes (bilinear: half-pixel centres, no antialiasing).
torch::Tensor resize(const torch::Tensor& image, int64_t h, int64_t w, const std::string& mode) {
  if (image.size(1) == h && image.size(2) == w) return image;
  auto x = image.unsqueeze(0);
  if (mode == "nearest") return at::upsample_nearest2d(x, {h, w}).squeeze(0);
  if (mode == "bicubic") return at::upsample_bicubic2d(x, {h, w}, false).squeeze(0).clamp(0, 255);
  return at::upsample_bilinear2d(x, {h, w}, false).squeeze(0);
}

/// One line of distill/preprocess.txt applied to a float [3, H, W] image.
torch::Tensor apply_step(const std::string& line, const torch::Tensor& image) {
  std::istringstream in(line);
  std::string step;
  in >> step;
  if (step == "bgr") return image.flip({0});
  if (step == "resize_short") {
    int64_t side;
    std::string mode;
    in >> side >> mode;
    const double percent = static_cast<double>(side) / std::min(image.size(1), image.size(2));
    return resize(image, static_cast<int64_t>(std::round(image.size(1) * percent)),
                  static_cast<int64_t>(std::round(image.size(2) * percent)), mode);
  }
  if (step == "resize") {
    int64_t h, w;
    std::string mode;
    in >> h >> w >> mode;
    return resize(image, h, w, mode);
  }
  if (step == "crop") {
    int64_t h, w;
    in >> h >> w;
    if (image.size(1) < h || image.size(2) < w) throw std::runtime_error("the image is smaller than the crop");
    const int64_t y = (image.size(1) - h) / 2, x = (image.size(2) - w) / 2;
    return image.slice(1, y, y + h).slice(2, x, x + w);
  }
  if (step == "normalize") {
    double scale;
    std::vector<double> mean(3), std_dev(3);
    in >> scale >> mean[0] >> mean[1] >> mean[2] >> std_dev[0] >> std_dev[1] >> std_dev[2];
    auto m = torch::tensor(mean, torch::kFloat).view({-1, 1, 1}), s = torch::tensor(std_dev, torch::kFloat).view({-1, 1, 1});
    return (image * scale - m) / s;
  }
  throw std::runtime_error("unknown preprocessing step '" + line + "'");
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') out += '\\', out += static_cast<char>(c);
    else if (c < 0x20) {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\u%04x", c);
      out += buffer;
    } else out += static_cast<char>(c);
  }
  return out + "\"";
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> images;
  std::string model_path;
  int64_t topk = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--topk" && i + 1 < argc) topk = std::stoll(argv[++i]);
    else if (model_path.empty()) model_path = arg;
    else images.push_back(arg);
  }
  if (model_path.empty() || images.empty()) {
    std::cerr << "usage: predict MODEL.pt IMAGE.jpg [IMAGE.jpg ...] [--topk K]\n";
    return 2;
  }
  torch::jit::ExtraFilesMap extra{{"distill/preprocess.txt", ""}, {"distill/postprocess.txt", ""}, {"distill/labels.txt", ""}};
  torch::jit::Module model;
  try {
    model = torch::jit::load(model_path, torch::Device(torch::kCPU), extra);
  } catch (const c10::Error& e) {
    std::cerr << "predict: " << model_path << ": cannot load (" << e.what_without_backtrace() << ")\n";
    return 1;
  }
  model.eval();
  const auto steps = lines_of(extra["distill/preprocess.txt"]);
  for (const auto& line : lines_of(extra["distill/postprocess.txt"]))
    if (topk == 0 && line.rfind("topk ", 0) == 0) topk = std::stoll(line.substr(5));
  if (topk <= 0) topk = 5;
  std::map<int64_t, std::string> names;
  for (const auto& line : lines_of(extra["distill/labels.txt"])) {
    const auto space = line.find(' ');
    names[std::stoll(line.substr(0, space))] = space == std::string::npos ? "" : line.substr(space + 1);
  }

  torch::NoGradGuard no_grad;
  int failed = 0;
  for (const auto& path : images) {
    try {
      auto image = decode_jpeg(path).permute({2, 0, 1}).to(torch::kFloat);
      for (const auto& step : steps) image = apply_step(step, image);
      auto output = model.forward({image.contiguous().unsqueeze(0)});
      auto logits = output.isTensor() ? output.toTensor() : output.toGenericDict().at("logits").toTensor();
      auto probs = torch::softmax(logits.to(torch::kFloat), 1)[0];
      auto [scores, ids] = probs.topk(std::min<int64_t>(topk, probs.size(0)));
      std::string class_ids, score_list, label_names;
      for (int64_t i = 0; i < ids.size(0); ++i) {
        const int64_t id = ids[i].item<int64_t>();
        const char* comma = i > 0 ? "," : "";
        class_ids += comma + std::to_string(id);
        char score[32];
        std::snprintf(score, sizeof score, "%.5f", scores[i].item<double>());
        score_list += comma + std::string(score);
        if (!names.empty()) label_names += comma + json_string(names.count(id) ? names[id] : "");
      }
      std::cout << "{\"class_ids\":[" << class_ids << "],\"scores\":[" << score_list << "],\"file_name\":" << json_string(path)
                << ",\"label_names\":[" << label_names << "]}\n";
    } catch (const std::exception& e) {
      ++failed;
      std::cerr << "predict: skipped " << e.what() << '\n';
    }
  }
  return failed > 0 ? 1 : 0;
}
