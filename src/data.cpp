// The data layer of distill::engine: file reading and JPEG (libjpeg-turbo), the reference's
// transforms, the datasets and the threaded loader (see include/distill/data/*.hpp).

#include <turbojpeg.h>
#include <zlib.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "distill/core/hash.hpp"
#include "distill/core/limits.hpp"
#include "distill/data/augment.hpp"
#include "distill/data/image_io.hpp"
#include "distill/data/loader.hpp"
#include "distill/data/recipe.hpp"

namespace distill::data {

// ---------------------------------------------------------------- files and JPEG

/// The whole file as bytes; an error names the file.
std::string read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
    distill::fail(path, ": not a regular file (a directory?)");
  std::ifstream in(path, std::ios::binary);
  if (!in) distill::fail(path, ": cannot open the file");
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  if (in.bad()) distill::fail(path, ": read error");
  return bytes;
}

namespace {
struct TurboHandle {
  tjhandle handle;
  explicit TurboHandle(tjhandle h) : handle(h) {
    if (!handle) distill::fail("libjpeg-turbo: cannot create a handle");
  }
  ~TurboHandle() { tjDestroy(handle); }
  TurboHandle(const TurboHandle&) = delete;
  TurboHandle& operator=(const TurboHandle&) = delete;
};
}  // namespace

/// Decodes JPEG bytes to an RGB image, uint8 [H, W, 3]. `origin` (a file name) is named in
/// errors, e.g. "train/cat.jpg: not a JPEG image (Not a JPEG file: starts with 0x89 0x50)".
torch::Tensor decode_jpeg(const std::string& bytes, const std::string& origin) {
  thread_local TurboHandle decoder(tjInitDecompress());
  auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (bytes.empty() ||
      tjDecompressHeader3(decoder.handle, data, bytes.size(), &width, &height, &subsampling, &colorspace) != 0)
    distill::fail(origin, ": not a JPEG image (", bytes.empty() ? "empty file" : tjGetErrorStr2(decoder.handle), ")");
  if (width <= 0 || height <= 0) distill::fail(origin, ": implausible JPEG size ", width, "x", height);
  // The header's size is checked before the pixels are allocated (a few bytes can declare
  // gigapixels).
  if (static_cast<int64_t>(width) * height > limits().max_image_pixels)
    distill::fail(origin, ": a JPEG of ", width, "x", height, " pixels is beyond the limit of ", limits().max_image_pixels,
                  " pixels (raise it with the environment variable DISTILL_MAX_IMAGE_PIXELS)");
  auto image = torch::empty({height, width, 3}, torch::kUInt8);
  if (tjDecompress2(decoder.handle, data, bytes.size(), image.data_ptr<uint8_t>(), width, 0, height, TJPF_RGB, 0) != 0) {
    // Warnings pass (real datasets hold JPEGs with extraneous bytes that every decoder
    // accepts), except truncation: the missing part would be trained on as flat grey.
    const std::string message = tjGetErrorStr2(decoder.handle);
    if (tjGetErrorCode(decoder.handle) == TJERR_FATAL || message.find("Premature end") != std::string::npos)
      distill::fail(origin, ": corrupt JPEG data (", message, ")");
  }
  return image;
}

/// Encodes an RGB uint8 [H, W, 3] image as JPEG (4:4:4), e.g. to write test data.
std::string encode_jpeg(const torch::Tensor& rgb, int quality) {
  if (rgb.scalar_type() != torch::kUInt8 || rgb.dim() != 3 || rgb.size(2) != 3)
    distill::fail("encode_jpeg: expected a uint8 [H, W, 3] image, got ", rgb.scalar_type(), " ", rgb.sizes());
  thread_local TurboHandle encoder(tjInitCompress());
  auto pixels = rgb.contiguous();
  unsigned char* out = nullptr;
  unsigned long size = 0;
  if (tjCompress2(encoder.handle, pixels.data_ptr<uint8_t>(), static_cast<int>(pixels.size(1)), 0,
                  static_cast<int>(pixels.size(0)), TJPF_RGB, &out, &size, TJSAMP_444, quality, 0) != 0)
    distill::fail("encode_jpeg: ", tjGetErrorStr2(encoder.handle));
  std::string bytes(reinterpret_cast<const char*>(out), size);
  tjFree(out);
  return bytes;
}

// ---------------------------------------------------------------- transforms

namespace {

double uniform(Rng& rng, double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }
int64_t randint(Rng& rng, int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }

/// Resizes [3, H, W] to [3, h, w] (see Interpolation).
torch::Tensor resize(const torch::Tensor& image, int64_t h, int64_t w, Interpolation interpolation) {
  if (image.size(1) == h && image.size(2) == w) return image;
  namespace F = torch::nn::functional;
  auto options = F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w});
  if (interpolation == Interpolation::nearest)
    options.mode(torch::kNearest);
  else if (interpolation == Interpolation::bicubic)
    options.mode(torch::kBicubic).align_corners(false);
  else
    options.mode(torch::kBilinear).align_corners(false);
  auto out = F::interpolate(image.unsqueeze(0), options).squeeze(0);
  return interpolation == Interpolation::bicubic ? out.clamp(0, 255) : out;
}

}  // namespace

Transform random_crop(int64_t height, int64_t width, std::pair<double, double> scale, std::pair<double, double> ratio,
                      Interpolation interpolation) {
  return [=](const torch::Tensor& image, Rng& rng) {
    const double img_h = static_cast<double>(image.size(1)), img_w = static_cast<double>(image.size(2));
    const double aspect = std::sqrt(uniform(rng, ratio.first, ratio.second));
    double w = aspect, h = 1.0 / aspect;
    const double bound = std::min((img_w / img_h) / (w * w), (img_h / img_w) / (h * h));
    const double area = img_w * img_h * uniform(rng, std::min(scale.first, bound), std::min(scale.second, bound));
    const int64_t cw = std::clamp<int64_t>(static_cast<int64_t>(std::sqrt(area) * w), 1, static_cast<int64_t>(img_w));
    const int64_t ch = std::clamp<int64_t>(static_cast<int64_t>(std::sqrt(area) * h), 1, static_cast<int64_t>(img_h));
    const int64_t x = randint(rng, 0, static_cast<int64_t>(img_w) - cw);
    const int64_t y = randint(rng, 0, static_cast<int64_t>(img_h) - ch);
    return resize(image.slice(1, y, y + ch).slice(2, x, x + cw), height, width, interpolation);
  };
}

Transform random_flip() {
  return [](const torch::Tensor& image, Rng& rng) { return randint(rng, 0, 1) == 1 ? image.flip({2}) : image; };
}

Transform resize_short(int64_t short_side, Interpolation interpolation) {
  return [=](const torch::Tensor& image, Rng&) {
    const double percent = static_cast<double>(short_side) / std::min(image.size(1), image.size(2));
    return resize(image, static_cast<int64_t>(std::round(image.size(1) * percent)),
                  static_cast<int64_t>(std::round(image.size(2) * percent)), interpolation);
  };
}

Transform resize_to(int64_t height, int64_t width, Interpolation interpolation) {
  return [=](const torch::Tensor& image, Rng&) { return resize(image, height, width, interpolation); };
}

Transform center_crop(int64_t height, int64_t width) {
  return [=](const torch::Tensor& image, Rng&) {
    if (image.size(1) < height || image.size(2) < width)
      distill::fail("CropImage: the image is ", image.size(2), "x", image.size(1), ", smaller than the ", width, "x",
                    height, " crop");
    const int64_t y = (image.size(1) - height) / 2, x = (image.size(2) - width) / 2;
    return image.slice(1, y, y + height).slice(2, x, x + width);
  };
}

Transform normalize(double scale, std::vector<double> mean, std::vector<double> std_dev) {
  auto m = torch::tensor(mean, torch::kFloat).view({-1, 1, 1}),
       s = torch::tensor(std_dev, torch::kFloat).view({-1, 1, 1});
  return [=](const torch::Tensor& image, Rng&) { return (image * scale - m) / s; };
}

Transform to_bgr() {
  return [](const torch::Tensor& image, Rng&) { return image.flip({0}); };
}

torch::Tensor Pipeline::operator()(const torch::Tensor& rgb, Rng& rng) const {
  auto image = rgb.permute({2, 0, 1}).to(torch::kFloat);
  for (const auto& [name, step] : steps_) image = step.transform(image, rng);
  return image.contiguous();
}

std::vector<std::string> Pipeline::replay(const std::string& where) const {
  std::vector<std::string> lines;
  for (size_t i = 0; i < steps_.size(); ++i) {
    const auto& [name, step] = steps_[i];
    if (!step.replay)
      fail_at(where + "[" + std::to_string(i) + "]." + name, "has no deployment form (only DecodeImage, ResizeImage, ",
              "CropImage, NormalizeImage and ToCHWImage do): an exported model's preprocessing must be replayable ",
              "without distill");
    if (!step.replay->empty()) lines.push_back(*step.replay);
  }
  return lines;
}

// ---------------------------------------------------------------- datasets

ImageListDataset::ImageListDataset(std::string image_root, std::string list_file, Pipeline pipeline, bool skip_bad)
    : root_(std::move(image_root)), list_(std::move(list_file)), pipeline_(std::move(pipeline)) {
  set_skip_bad(skip_bad);
  std::ifstream in(list_);
  if (!in) distill::fail(list_, ": cannot open the image list");
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::istringstream fields(line);
    std::string path, label, extra;
    fields >> path >> label;
    char* end = nullptr;
    const long long value = label.empty() ? -1 : std::strtoll(label.c_str(), &end, 10);
    if (label.empty() || *end != '\0' || value < 0 || (fields >> extra)) {
      if (skip_bad) {
        if (++bad_lines_ <= 10) bad_line_numbers_.push_back(number);
        continue;
      }
      distill::fail(list_, ":", number, ": expected \"relative/path label\" with a class index >= 0, got \"", line,
                    "\"");
    }
    entries_.push_back({path, value, number});
  }
  if (entries_.empty()) distill::fail(list_, ": the image list has no entries");
}

Dataset::Fingerprint ImageListDataset::fingerprint() const {
  Fingerprint f;
  f.samples = f.labels = distill::detail::hash_string(std::to_string(entries_.size()));
  for (const auto& e : entries_) {
    f.samples = distill::detail::hash_string(e.path, f.samples);
    f.labels = distill::detail::hash_string(std::to_string(e.label), f.labels);
  }
  return f;
}

std::string ImageListDataset::build_report() const {
  if (bad_lines_ == 0) return "";
  std::string lines;
  for (size_t n : bad_line_numbers_) lines += (lines.empty() ? "" : ", ") + std::to_string(n);
  return list_ + ": skipped " + std::to_string(bad_lines_) + " malformed line(s) (skip_bad): line(s) " + lines +
         (bad_lines_ > 10 ? ", ..." : "");
}

int64_t ImageListDataset::max_label() const {
  int64_t m = 0;
  for (const auto& e : entries_) m = std::max(m, e.label);
  return m;
}

Sample ImageListDataset::load(size_t index, Rng& rng) {
  const auto& e = entries_.at(index);
  const std::string file = root_.empty() || e.path.front() == '/' ? e.path : root_ + "/" + e.path;
  const std::string origin = file + " (" + list_ + ":" + std::to_string(e.line) + ")";
  std::string bytes;
  try {
    bytes = read_file(file);
  } catch (const Error& e) {
    distill::fail(origin, ": cannot open the image (", e.what(), ")");
  }
  return {pipeline_(decode_jpeg(bytes, origin), rng), e.label};
}

namespace {

/// A gzip file (or a plain one: zlib reads both), read piece by piece.
class GzipFile {
 public:
  explicit GzipFile(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (!file_) distill::fail(path, ": cannot open the file");
  }
  ~GzipFile() { gzclose(file_); }
  GzipFile(const GzipFile&) = delete;
  GzipFile& operator=(const GzipFile&) = delete;

  /// Reads up to `size` bytes into `out`; returns how many there were.
  size_t read(void* out, size_t size) {
    size_t done = 0;
    while (done < size) {
      const auto chunk = static_cast<unsigned>(std::min<size_t>(size - done, 1u << 30));
      const int n = gzread(file_, static_cast<char*>(out) + done, chunk);
      if (n < 0) distill::fail(path_, ": corrupt gzip data");
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }

 private:
  std::string path_;
  gzFile file_;
};

/// An idx file (MNIST format) as a uint8 tensor of its dimensions. The header's sizes are
/// checked (against overflow and limits().max_dataset_bytes) before the data is allocated,
/// and the data is read straight into the tensor: a small gzip that expands to gigabytes
/// is an error after reading at most what the header promised.
torch::Tensor read_idx(const std::string& path, size_t dims) {
  GzipFile file(path);
  unsigned char header[4 + 4 * 3];
  const size_t header_size = 4 + 4 * dims;
  auto big_endian = [&header](size_t at) {
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) v = (v << 8) | header[at + i];
    return v;
  };
  if (file.read(header, header_size) != header_size || big_endian(0) != 0x800u + dims)
    distill::fail(path, ": not an idx file of ", dims, " dimension(s) of unsigned bytes");
  std::vector<int64_t> shape;
  int64_t count = 1;
  for (size_t d = 0; d < dims; ++d) {
    shape.push_back(big_endian(4 + 4 * d));
    if (__builtin_mul_overflow(count, shape.back(), &count) || count > limits().max_dataset_bytes)
      distill::fail(path, ": the header declares ", c10::IntArrayRef(shape), "... = more than ", limits().max_dataset_bytes,
                    " bytes, beyond the limit (raise it with the environment variable DISTILL_MAX_DATASET_BYTES)");
  }
  // Deflate expands at most 1032:1, so a file of n bytes holds at most ~1032 n bytes of data.
  std::error_code ec;
  const auto stored = static_cast<int64_t>(std::filesystem::file_size(path, ec));
  if (!ec && count > stored * 1032 + 1024)
    distill::fail(path, ": the header declares ", count, " data bytes, more than a file of ", stored, " bytes can hold");
  auto out = torch::empty(shape, torch::kUInt8);
  const size_t got = file.read(out.data_ptr(), static_cast<size_t>(count));
  if (got != static_cast<size_t>(count))
    distill::fail(path, ": holds ", got, " data bytes, the header promises ", count);
  char extra = 0;
  if (file.read(&extra, 1) != 0) distill::fail(path, ": holds more data bytes than the header promises (", count, ")");
  return out;
}

}  // namespace

FashionMNIST::FashionMNIST(const std::string& root, bool train, Pipeline pipeline, int64_t limit)
    : name_(root + (train ? " (train)" : " (test)")), pipeline_(std::move(pipeline)) {
  const std::string prefix = root + "/" + (train ? "train" : "t10k");
  images_ = read_idx(prefix + "-images-idx3-ubyte.gz", 3);
  labels_ = read_idx(prefix + "-labels-idx1-ubyte.gz", 1).to(torch::kLong);
  if (images_.size(0) != labels_.size(0))
    distill::fail(prefix, ": ", images_.size(0), " images but ", labels_.size(0), " labels");
  if (limit > 0 && limit < images_.size(0)) {
    images_ = images_.slice(0, 0, limit);
    labels_ = labels_.slice(0, 0, limit);
  }
}

Dataset::Fingerprint FashionMNIST::fingerprint() const {
  return {distill::detail::hash_bytes(images_.data_ptr(), static_cast<size_t>(images_.numel())),
          distill::detail::hash_bytes(labels_.data_ptr(), static_cast<size_t>(labels_.numel()) * sizeof(int64_t))};
}

Sample FashionMNIST::load(size_t index, Rng& rng) {
  auto grey = images_[static_cast<int64_t>(index)].unsqueeze(2).expand({-1, -1, 3});
  return {pipeline_(grey, rng), labels_[static_cast<int64_t>(index)].item<int64_t>()};
}

// ---------------------------------------------------------------- loader

DataLoader::DataLoader(std::shared_ptr<Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(std::move(options)) {
  const auto& o = options_;
  if (o.batch_size() < 1 || o.num_workers() < 0 || o.prefetch() < 1 || o.world_size() < 1 || o.rank() < 0 ||
      o.rank() >= o.world_size() || o.views() < 0)
    distill::fail("DataLoader: bad options (batch_size ", o.batch_size(), ", num_workers ", o.num_workers(),
                  ", prefetch ", o.prefetch(), ", rank ", o.rank(), " of ", o.world_size(), ")");
}

DataLoader::~DataLoader() { stop(); }

std::vector<size_t> DataLoader::order(int64_t epoch) const {
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

size_t DataLoader::batches_per_epoch() const {
  const size_t n = dataset_->size(), world = static_cast<size_t>(options_.world_size()),
               rank = static_cast<size_t>(options_.rank());
  const size_t per_rank = options_.pad() ? (n + world - 1) / world : (n > rank ? (n - rank + world - 1) / world : 0);
  const size_t b = static_cast<size_t>(options_.batch_size());
  return options_.drop_last() ? per_rank / b : (per_rank + b - 1) / b;
}

void DataLoader::start(int64_t epoch) {
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

std::optional<Batch> DataLoader::next() {
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
      distill::fail(dataset_->describe(), ": every sample of batch ", next_ - 1, " of rank ", options_.rank(),
                    " failed to load; in data-parallel training all ranks must step together, so the run stops");
  }
  stop();
  return std::nullopt;
}

std::optional<Batch> DataLoader::load(size_t k) {
  const size_t b = static_cast<size_t>(options_.batch_size());
  const size_t begin = k * b, end = std::min(indices_.size(), begin + b);
  std::vector<torch::Tensor> images;
  std::vector<int64_t> labels, loaded, views;
  const int64_t view_count = options_.views();
  for (size_t i = begin; i < end; ++i) {
    const size_t index = indices_[i];
    int64_t view = -1;
    uint64_t seed = detail::mix(options_.seed() ^ detail::mix((static_cast<uint64_t>(epoch_) << 40) ^ index));
    if (view_count > 0) {
      view = view_of(options_.seed(), epoch_, index, view_count);
      seed = options_.view_seeds() ? options_.view_seeds()(index, view) : view_seed(options_.seed(), index, view);
    }
    Rng rng(seed);
    if (auto sample = dataset_->get(index, rng)) {
      if (!images.empty() && sample->image.sizes() != images.front().sizes())
        distill::fail(dataset_->describe(), ": images of different sizes in one batch (", images.front().sizes(),
                      " and ", sample->image.sizes(), " for sample ", index,
                      "); add a ResizeImage or CropImage transform");
      images.push_back(sample->image);
      labels.push_back(sample->label);
      loaded.push_back(static_cast<int64_t>(index));
      views.push_back(view);
    }
  }
  if (images.empty()) return std::nullopt;
  return Batch{torch::stack(images), torch::tensor(labels, torch::kLong), torch::tensor(loaded, torch::kLong),
               torch::tensor(views, torch::kLong)};
}

void DataLoader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    changed_.notify_all();
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
}


// ---------------------------------------------------------------- recipe: transforms and datasets

namespace {

Interpolation interpolation(const Reader& r) {
  r.get<std::string>("backend", "cv2");  // "cv2" or "pil": both map to the tensor resize
  const auto mode = r.get<std::string>("interpolation", "bilinear");
  if (mode == "bilinear") return Interpolation::bilinear;
  if (mode == "bicubic") return Interpolation::bicubic;
  if (mode == "nearest") return Interpolation::nearest;
  fail_at(r.path_of("interpolation"), "expected bilinear, bicubic or nearest, got '", mode, "'");
}

const char* interpolation_name(Interpolation mode) {
  return mode == Interpolation::bicubic ? "bicubic" : mode == Interpolation::nearest ? "nearest" : "bilinear";
}

/// A number, or a fraction written as a string ("1.0/255.0", as the reference's YAML does).
double number(const Reader& r, const std::string& key, double fallback) {
  const json* v = r.use(key);
  if (!v || v->is_null()) return fallback;
  if (v->is_number()) return v->get<double>();
  if (v->is_string()) {
    const auto text = v->get<std::string>();
    const auto slash = text.find('/');
    try {
      size_t used = 0;
      if (slash == std::string::npos) {
        const double value = std::stod(text, &used);
        if (used == text.size()) return value;
      } else {
        const double a = std::stod(text.substr(0, slash), &used);
        const bool whole_a = used == slash;
        const double b = std::stod(text.substr(slash + 1), &used);
        if (whole_a && used == text.size() - slash - 1 && b != 0) return a / b;
      }
    } catch (const std::exception&) {
    }
  }
  fail_at(r.path_of(key), "expected a number or a fraction like \"1.0/255.0\", got ", Reader::describe(*v));
}

std::pair<int64_t, int64_t> size_of(const Reader& r, const std::string& key) {
  const auto& v = r.raw(key);
  if (v.is_number_integer() && v.get<int64_t>() > 0) return {v.get<int64_t>(), v.get<int64_t>()};
  if (v.is_array() && v.size() == 2 && v[0].is_number_integer() && v[1].is_number_integer() && v[0].get<int64_t>() > 0 &&
      v[1].get<int64_t>() > 0)
    return {v[1].get<int64_t>(), v[0].get<int64_t>()};  // reference order [w, h]
  fail_at(r.path_of(key), "expected a positive size or [width, height], got ", Reader::describe(v));
}

Transform identity() {
  return [](const torch::Tensor& image, Rng&) { return image; };
}

}  // namespace

Registry<TransformReader>& transform_registry() {
  static Registry<TransformReader> registry = [] {
    Registry<TransformReader> r("transform");
    r.add("DecodeImage", [](const Reader& s) {
      if (s.get<bool>("channel_first", false)) fail_at(s.path_of("channel_first"), "only false (HWC decoding) is supported");
      return s.get<bool>("to_rgb", true) ? Step(identity(), "") : Step(to_bgr(), "bgr");
    });
    r.add("RandCropImage", [](const Reader& s) {
      auto [h, w] = size_of(s, "size");
      auto scale = s.get<std::vector<double>>("scale", {0.08, 1.0});
      auto ratio = s.get<std::vector<double>>("ratio", {3.0 / 4.0, 4.0 / 3.0});
      if (scale.size() != 2 || ratio.size() != 2) fail_at(s.path(), "scale and ratio take two numbers");
      return random_crop(h, w, {scale[0], scale[1]}, {ratio[0], ratio[1]}, interpolation(s));
    });
    r.add("RandFlipImage", [](const Reader& s) {
      if (s.get<int64_t>("flip_code", 1) != 1) fail_at(s.path_of("flip_code"), "only 1 (horizontal) is supported");
      return random_flip();
    });
    r.add("ResizeImage", [](const Reader& s) {
      const auto mode = interpolation(s);
      if (s.has("resize_short")) {
        const auto side = s.get<int64_t>("resize_short");
        if (side < 1) fail_at(s.path_of("resize_short"), "must be >= 1, got ", side);
        return Step(resize_short(side, mode), fmt::format("resize_short {} {}", side, interpolation_name(mode)));
      }
      auto [h, w] = size_of(s, "size");
      return Step(resize_to(h, w, mode), fmt::format("resize {} {} {}", h, w, interpolation_name(mode)));
    });
    r.add("CropImage", [](const Reader& s) {
      auto [h, w] = size_of(s, "size");
      return Step(center_crop(h, w), fmt::format("crop {} {}", h, w));
    });
    r.add("NormalizeImage", [](const Reader& s) {
      auto mean = s.get<std::vector<double>>("mean", {0.485, 0.456, 0.406});
      auto std_dev = s.get<std::vector<double>>("std", {0.229, 0.224, 0.225});
      const auto order = s.get<std::string>("order", "");
      if (order != "" && order != "chw" && order != "hwc") fail_at(s.path_of("order"), "expected '', 'chw' or 'hwc'");
      if (mean.size() != 3 || std_dev.size() != 3) fail_at(s.path(), "mean and std take three numbers");
      const double scale = number(s, "scale", 1.0 / 255.0);
      // {:.17g}: the replayed numbers are the very doubles used here.
      return Step(normalize(scale, mean, std_dev), fmt::format("normalize {:.17g} {:.17g} {:.17g} {:.17g} {:.17g} {:.17g} {:.17g}", scale,
                                                               mean[0], mean[1], mean[2], std_dev[0], std_dev[1], std_dev[2]));
    });
    r.add("ToCHWImage", [](const Reader&) { return Step(identity(), ""); });  // images are CHW tensors throughout
    r.add("TimmAutoAugment", [](const Reader& s) {
      RandAugmentOptions options;
      const auto mode = s.get<std::string>("interpolation", "bicubic");
      // The reference: "random" picks bilinear or bicubic per operation; any other name but
      // bicubic is bilinear (PIL's transforms have no other filter).
      options.interpolation = mode == "bicubic" ? AugmentInterpolation::bicubic
                              : mode == "random" ? AugmentInterpolation::random : AugmentInterpolation::bilinear;
      const auto mean = s.get<std::vector<double>>("mean", {0.485, 0.456, 0.406});
      if (mean.size() != 3) fail_at(s.path_of("mean"), "takes three numbers");
      for (size_t c = 0; c < 3; ++c)  // round(255 * mean) as Python rounds (half to even)
        options.fill[c] = static_cast<uint8_t>(std::clamp(std::nearbyint(255.0 * mean[c]), 0.0, 255.0));
      s.use("img_size");  // sets only the absolute translations, which RandAugment does not use
      return Step(rand_augment(parse_rand_augment(s.get<std::string>("config_str", "rand-m9-mstd0.5-inc1"),
                                                   s.path_of("config_str"), options)));
    });
    return r;
  }();
  return registry;
}

Registry<DatasetReader>& dataset_registry() {
  static Registry<DatasetReader> registry = [] {
    Registry<DatasetReader> r("dataset");
    r.add("ImageNetDataset", [](const Reader& s, Pipeline pipeline) -> std::shared_ptr<Dataset> {
      return std::make_shared<ImageListDataset>(s.get<std::string>("image_root", ""), s.get<std::string>("cls_label_path"),
                                                std::move(pipeline), s.get<bool>("skip_bad", false));
    });
    r.add("FashionMNIST", [](const Reader& s, Pipeline pipeline) -> std::shared_ptr<Dataset> {
      const auto split = s.get<std::string>("split", "train");
      if (split != "train" && split != "test") fail_at(s.path_of("split"), "expected \"train\" or \"test\", got \"", split, "\"");
      const auto limit = s.get<int64_t>("limit", 0);
      if (limit < 0) fail_at(s.path_of("limit"), "must be >= 0 (0: all images), got ", limit);
      return std::make_shared<FashionMNIST>(s.get<std::string>("root", FashionMNIST::kDefaultRoot), split == "train",
                                            std::move(pipeline), limit);
    });
    return r;
  }();
  return registry;
}

Pipeline make_pipeline(const json& ops, const std::string& path) {
  Pipeline pipeline;
  if (!ops.is_array()) fail_at(path, "expected a list of transforms");
  for (size_t i = 0; i < ops.size(); ++i) {
    const std::string at = path + "[" + std::to_string(i) + "]";
    if (!ops[i].is_object() || ops[i].size() != 1)
      fail_at(at, "expected an object with one key (the transform), got ", Reader::describe(ops[i]));
    const std::string name = ops[i].begin().key();
    const auto& value = ops[i].begin().value();
    Reader r(value.is_null() ? json::object() : value, at + "." + name);
    pipeline.add(name, transform_registry().at(name, at)(r));
    r.done();
  }
  return pipeline;
}

std::shared_ptr<Dataset> make_dataset(const json& section, const std::string& path) {
  Reader r(section, path);
  const auto name = r.get<std::string>("name");
  const auto& reader = dataset_registry().at(name, r.path_of("name"));
  const json* ops = r.use("transform_ops");
  auto pipeline = make_pipeline(ops && !ops->is_null() ? *ops : json::array(), r.path_of("transform_ops"));
  auto dataset = reader(r, std::move(pipeline));
  r.done();
  return dataset;
}

}  // namespace distill::data
