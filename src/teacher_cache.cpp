// Offline teacher knowledge: making a teacher cache and reading it (include/distill/train/teacher_cache.hpp).

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "distill/compose/loss_terms.hpp"
#include "distill/compose/models.hpp"
#include "distill/config/build.hpp"
#include "distill/core/hash.hpp"
#include "distill/data/loader.hpp"
#include "distill/io/state_dict.hpp"
#include "distill/losses/topk.hpp"
#include "distill/train/checkpoint.hpp"
#include "distill/train/distributed.hpp"
#include "distill/train/progress.hpp"
#include "distill/train/recipe.hpp"
#include "distill/train/teacher_cache.hpp"

namespace distill::train {

namespace {

constexpr char kMagic[8] = {'D', 'S', 'T', 'L', 'T', 'C', '0', '1'};
constexpr size_t kHeaderBytes = 64, kFooterBytes = 8;
constexpr const char* kFormat = "distill-teacher-cache";

struct ShardHeader {
  char magic[8];
  uint64_t first, count, views, record_bytes;
};

std::string shard_name(size_t s) { return fmt::format("shard_{:05d}.bin", s); }

size_t value_bytes(const std::string& dtype) { return dtype == "float16" ? 2 : 4; }

size_t record_bytes(int64_t k, size_t teachers, const std::string& dtype) {
  return 8 + teachers * (4 + static_cast<size_t>(k) * (value_bytes(dtype) + 4));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_at(path, "cannot be read");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The frozen models of a recipe's Arch: (position in Arch.models, name, its entry).
struct Frozen {
  size_t position;
  std::string name;
  json entry;
};
std::vector<Frozen> frozen_models(const json& recipe) {
  std::vector<Frozen> out;
  if (!recipe.contains("Arch") || !recipe["Arch"].is_object()) return out;
  const json& arch = recipe["Arch"];
  const json models = arch.value("models", json::array());
  const json freeze = arch.value("freeze_params_list", json());
  for (size_t i = 0; i < models.size(); ++i) {
    if (!freeze.is_array() || i >= freeze.size() || !freeze[i].is_boolean() || !freeze[i].get<bool>()) continue;
    if (!models[i].is_object() || models[i].size() != 1) continue;
    out.push_back({i, models[i].begin().key(), models[i].begin().value()});
  }
  return out;
}

// What identifies a cached model: its Arch entry (without where its weights come from) and the
// contents of the files its weights come from.
json teacher_identity(const json& recipe, const Frozen& teacher) {
  json arch = teacher.entry;
  std::vector<std::string> files;
  if (arch.is_object()) {
    if (arch.contains("pretrained") && arch["pretrained"].is_string()) files.push_back(arch["pretrained"].get<std::string>());
    arch.erase("pretrained");
    if (!arch.contains("class_num") && recipe["Arch"].contains("class_num")) arch["class_num"] = recipe["Arch"]["class_num"];
  }
  const json list = recipe["Arch"].value("pretrained_list", json());
  if (list.is_array() && teacher.position < list.size() && list[teacher.position].is_string())
    files.push_back(list[teacher.position].get<std::string>());
  const json global = recipe.value("Global", json::object());
  if (global.contains("pretrained_model") && global["pretrained_model"].is_string())
    files.push_back(global["pretrained_model"].get<std::string>());
  std::string weights;
  for (const auto& file : files) weights += (weights.empty() ? "" : "+") + distill::detail::hex(distill::detail::hash_string(read_bytes(io::weights_path(file))));
  if (weights.empty()) weights = "initialised from seed " + std::to_string(global.value("seed", 0));
  return {{"name", teacher.name}, {"arch", arch}, {"weights", weights}};
}

json dataset_identity(const data::Dataset& dataset) {
  const auto f = dataset.fingerprint();
  return {{"describe", dataset.describe()}, {"size", dataset.size()}, {"samples", distill::detail::hex(f.samples)},
          {"labels", distill::detail::hex(f.labels)}};
}

json transforms_of(const json& recipe) {
  try {
    return recipe.at("DataLoader").at("Train").at("dataset").value("transform_ops", json());
  } catch (const json::exception&) {
    return json();
  }
}

std::string shorten(const json& value) {
  auto text = value.dump();
  return text.size() > 160 ? text.substr(0, 157) + "..." : text;
}

// The first difference between what a cache was made from and what is asked now, as words.
std::string difference(const json& made, const json& now) {
  if (made.at("transforms") != now.at("transforms"))
    return "the training transforms (DataLoader.Train.dataset.transform_ops) differ: the cache has " +
           shorten(made["transforms"]) + ", the recipe " + shorten(now["transforms"]);
  const auto& a = made.at("dataset");
  const auto& b = now.at("dataset");
  if (a.at("size") != b.at("size"))
    return fmt::format("the training dataset differs: the cache holds {} images, the recipe's {} has {}", a["size"].dump(),
                       b["describe"].get<std::string>(), b["size"].dump());
  if (a.at("samples") != b.at("samples")) return "the training dataset differs (other images or another image list)";
  if (a.at("labels") != b.at("labels")) return "the label list differs (the same images with other labels)";
  const auto& ta = made.at("teachers");
  const auto& tb = now.at("teachers");
  for (const auto& t : ta) {
    const json* match = nullptr;
    for (const auto& u : tb)
      if (u.at("name") == t.at("name")) match = &u;
    if (!match) return "the recipe has no frozen model '" + t["name"].get<std::string>() + "', which the cache holds";
    if ((*match)["arch"] != t["arch"])
      return "teacher '" + t["name"].get<std::string>() + "' has another architecture: the cache has " + shorten(t["arch"]) +
             ", the recipe " + shorten((*match)["arch"]);
    if ((*match)["weights"] != t["weights"])
      return "teacher '" + t["name"].get<std::string>() + "' has other weights (the cache's: " +
             t["weights"].get<std::string>() + ", the recipe's: " + (*match)["weights"].get<std::string>() + ")";
  }
  return "";
}

// A dataset of the views of images [first, first + count): item j is view j % K of image
// first + j / K, augmented with that view's seed.
class ViewDataset : public data::Dataset {
 public:
  ViewDataset(std::shared_ptr<data::Dataset> images, size_t first, size_t count, int64_t views, uint64_t seed)
      : images_(std::move(images)), first_(first), count_(count), views_(views), seed_(seed) {}
  size_t size() const override { return count_ * static_cast<size_t>(views_); }
  std::string describe() const override { return images_->describe(); }
  uint64_t seed_of(size_t j) const { return data::view_seed(seed_, first_ + j / views_, static_cast<int64_t>(j % views_)); }

 protected:
  data::Sample load(size_t j, data::Rng&) override {
    data::Rng rng(seed_of(j));
    auto sample = images_->get(first_ + j / static_cast<size_t>(views_), rng);
    if (!sample)
      fail(images_->describe(), ": image ", first_ + j / views_, " could not be read (", images_->first_skip(),
           "); a teacher cache needs every image: fix or remove it");
    return *sample;
  }

 private:
  std::shared_ptr<data::Dataset> images_;
  size_t first_, count_;
  int64_t views_;
  uint64_t seed_;
};

// The header of shard `s`: images [s * per_shard, ...) of `images`.
ShardHeader shard_header(size_t s, size_t per_shard, size_t images, int64_t views, size_t record) {
  ShardHeader header{};
  std::memcpy(header.magic, kMagic, 8);
  header.first = s * per_shard;
  header.count = std::min(per_shard, images - header.first);
  header.views = static_cast<uint64_t>(views);
  header.record_bytes = record;
  return header;
}

// A complete shard: the expected header and a footer equal to the checksum of the rest.
// Returns the checksum, or nothing (with why) when the bytes are not one.
std::optional<uint64_t> check_shard(const char* bytes, size_t size, const ShardHeader& expected, std::string* why) {
  auto no = [&](const std::string& reason) -> std::optional<uint64_t> {
    if (why) *why = reason;
    return std::nullopt;
  };
  const size_t want = kHeaderBytes + expected.count * expected.views * expected.record_bytes + kFooterBytes;
  if (size != want) return no(fmt::format("it has {} bytes, {} expected (truncated or of another cache)", size, want));
  ShardHeader h;
  std::memcpy(&h, bytes, sizeof h);
  if (std::memcmp(h.magic, kMagic, 8) != 0 || h.first != expected.first || h.count != expected.count ||
      h.views != expected.views || h.record_bytes != expected.record_bytes)
    return no("its header is not this cache's");
  uint64_t footer;
  std::memcpy(&footer, bytes + size - kFooterBytes, 8);
  const uint64_t sum = distill::detail::hash_bytes(bytes, size - kFooterBytes);
  if (sum != footer) return no("its checksum does not match its contents (corrupt)");
  return sum;
}

// check_shard on the file at `path`.
std::optional<uint64_t> complete_shard(const std::string& path, const ShardHeader& expected, std::string* why = nullptr) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    if (why) *why = "it is missing";
    return std::nullopt;
  }
  const auto bytes = read_bytes(path);
  return check_shard(bytes.data(), bytes.size(), expected, why);
}

}  // namespace

// ---------------------------------------------------------------- making a cache

void make_teacher_cache(const json& recipe, const CacheOptions& c, std::ostream& out) {
  if (c.views() < 1 || c.views() > 100000) fail("distill cache: --views must be in [1, 100000], got ", c.views());
  if (c.topk() < 0) fail("distill cache: --topk must be >= 0 (0: every class), got ", c.topk());
  if (c.dtype() != torch::kFloat && c.dtype() != torch::kHalf) fail("distill cache: --dtype must be float32 or float16");
  if (c.out().empty()) fail("distill cache: --out DIR is required");
  if (c.shard_images() < 1) fail("distill cache: shard_images must be >= 1");
  const std::string dtype = c.dtype() == torch::kHalf ? "float16" : "float32";
  auto o = trainer_options(recipe);
  torch::manual_seed(static_cast<uint64_t>(o.seed()));
  const auto frozen = frozen_models(recipe);
  if (frozen.empty())
    fail_at("Arch.freeze_params_list", "no frozen model to cache: a teacher cache holds the outputs of the recipe's frozen teachers");
  auto model = config::build_model(recipe.at("Arch"));
  if (!o.pretrained_model().empty()) load_model_weights(*model, o.pretrained_model());
  auto group = ProcessGroup::world();
  const int64_t rank = group ? group->rank() : 0, world = group ? group->world_size() : 1;
  const bool writer = rank == 0;
  torch::Device device = o.device();
  if (group && device.is_cuda()) device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(group->local_rank()));
  std::vector<std::shared_ptr<FeatureModel>> teachers;
  json identities = json::array();
  for (const auto& t : frozen) {
    auto m = model->model(t.name);
    m->eval();  // a cached teacher is the teacher in evaluation mode (fixed BatchNorm statistics)
    m->to(device);
    if (o.channels_last()) models::to_channels_last(*m);
    teachers.push_back(m);
    identities.push_back(teacher_identity(recipe, t));
  }
  auto dataset = o.train_data();
  const size_t n = dataset->size();
  if (n == 0) fail("DataLoader.Train: ", dataset->describe(), " has no samples");
  const uint64_t seed = static_cast<uint64_t>(o.seed());
  // The class count, from one view of the first image.
  int64_t classes = 0;
  {
    torch::NoGradGuard no_grad;
    ViewDataset probe(dataset, 0, 1, 1, seed);
    data::Rng unused;
    auto sample = probe.get(0, unused);
    for (auto& t : teachers) {
      auto features = t->forward(sample->image.unsqueeze(0).to(device));
      if (!features.contains("logits") || features.at("logits").dim() != 2)
        fail("distill cache: model '", frozen[0].name, "' has no [N, C] 'logits' output to cache");
      const int64_t c_here = features.at("logits").size(1);
      if (classes && c_here != classes) fail("distill cache: the frozen models disagree on the class count (", classes, " and ", c_here, ")");
      classes = c_here;
    }
  }
  const int64_t k = (c.topk() == 0 || c.topk() >= classes) ? classes : c.topk();
  json plan{{"format", kFormat},
            {"version", 1},
            {"views", c.views()},
            {"topk", k},
            {"classes", classes},
            {"dtype", dtype},
            {"seed", seed},
            {"shard_images", c.shard_images()},
            {"record_bytes", record_bytes(k, teachers.size(), dtype)},
            {"teachers", identities},
            {"transforms", transforms_of(recipe)},
            {"dataset", dataset_identity(*dataset)},
            {"recipe", distill::detail::hex(distill::detail::hash_string(recipe.dump()))}};
  const std::string dir = c.out(), manifest_path = dir + "/manifest.json", plan_path = dir + "/cache.partial.json";
  std::filesystem::create_directories(dir);
  auto same_plan = [&](const std::string& path) {
    std::ifstream in(path);
    json old = json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (old.is_discarded() || !old.is_object()) fail_at(path, "is not a teacher cache file; choose another --out");
    old.erase("shards");
    json now = plan, before = old;
    now.erase("recipe"), before.erase("recipe");  // other loss terms do not change the teacher's outputs
    if (before == now) return true;
    std::string why = before.contains("transforms") && before.contains("dataset") && before.contains("teachers")
                          ? difference(before, now) : "";
    if (why.empty()) why = "views, topk, dtype, seed or shard size differ";
    fail_at(path, dir, " holds a teacher cache made differently (", why, "); choose another --out or remove ", dir);
  };
  if (std::filesystem::exists(manifest_path) && same_plan(manifest_path)) {
    if (writer) out << "teacher cache " << dir << " is complete already; nothing to do\n";
    return;
  }
  if (std::filesystem::exists(plan_path)) same_plan(plan_path);
  if (group) group->barrier("checking the cache directory");
  if (writer) {
    std::ofstream(plan_path) << plan.dump(1) << '\n';
    out << fmt::format("teacher cache of {} ({}): {} images x {} views, top-{} of {} classes in {} -> {}\n",
                       frozen.size() == 1 ? frozen[0].name : std::to_string(frozen.size()) + " models", dataset->describe(), n,
                       c.views(), k, classes, dtype, dir)
        << std::flush;
  }
  const size_t per_shard = static_cast<size_t>(c.shard_images());
  const size_t shards = (n + per_shard - 1) / per_shard;
  const size_t rb = record_bytes(k, teachers.size(), dtype);
  const int64_t batch = c.batch_size() > 0 ? c.batch_size() : o.train_loader().batch_size();
  const auto start = std::chrono::steady_clock::now();
  auto last_report = start;
  size_t done_images = 0, kept = 0;
  // A live bar over this worker's views on a terminal; a line every 2 s otherwise.
  const bool terminal = writer && &out == &std::cout && stdout_is_terminal();
  size_t mine = 0;
  for (size_t s = static_cast<size_t>(rank); s < shards; s += static_cast<size_t>(world))
    mine += shard_header(s, per_shard, n, c.views(), rb).count * static_cast<size_t>(c.views());
  ProgressBar bar(out, terminal, "cache", static_cast<int64_t>(mine));
  size_t bar_done = 0;  // views, those of shards kept from an earlier run included
  for (size_t s = static_cast<size_t>(rank); s < shards; s += static_cast<size_t>(world)) {
    const auto header = shard_header(s, per_shard, n, c.views(), rb);
    const size_t first = header.first, count = header.count;
    const std::string path = dir + "/" + shard_name(s);
    if (complete_shard(path, header)) {
      ++kept;
      bar_done += header.count * static_cast<size_t>(c.views());
      continue;
    }
    std::vector<uint8_t> bytes(kHeaderBytes + count * header.views * rb + kFooterBytes, 0);
    std::memcpy(bytes.data(), &header, sizeof header);
    auto views = std::make_shared<ViewDataset>(dataset, first, count, c.views(), seed);
    data::DataLoader loader(views, data::LoaderOptions().batch_size(batch).num_workers(o.train_loader().num_workers()).pad(false));
    loader.start(0);
    torch::NoGradGuard no_grad;
    while (auto b = loader.next()) {
      const int64_t rows = b->images.size(0);
      auto images = b->images.to(device);
      if (o.channels_last()) images = models::to_channels_last(images);
      auto record = torch::empty({rows, static_cast<int64_t>(rb)}, torch::kUInt8);
      std::vector<int64_t> seeds;
      const int64_t* items = b->indices.data_ptr<int64_t>();
      for (int64_t r = 0; r < rows; ++r) seeds.push_back(static_cast<int64_t>(views->seed_of(static_cast<size_t>(items[r]))));
      int64_t offset = 0;
      auto put = [&](const torch::Tensor& field) {
        auto raw = field.contiguous().view(torch::kUInt8).view({rows, -1});
        record.narrow(1, offset, raw.size(1)).copy_(raw);
        offset += raw.size(1);
      };
      put(torch::tensor(seeds, torch::kLong));
      for (auto& t : teachers) {
        auto logits = t->forward(images).at("logits").to(torch::kFloat).cpu();
        auto [values, indices] = logits.topk(k, 1);
        torch::Tensor rest = torch::zeros({rows}, torch::kFloat);
        if (k < classes)  // the logit that puts the classes left out at their exact total mass
          rest = logits.scatter(1, indices, -std::numeric_limits<float>::infinity()).logsumexp(1) -
                 std::log(static_cast<double>(classes - k));
        put(rest);
        put(values.to(c.dtype()));
        put(indices.to(torch::kInt));
      }
      const size_t first_row = static_cast<size_t>(b->indices[0].item<int64_t>());
      std::memcpy(bytes.data() + kHeaderBytes + first_row * rb, record.data_ptr(), static_cast<size_t>(rows) * rb);
      done_images += static_cast<size_t>(rows);
      const auto now = std::chrono::steady_clock::now();
      const double elapsed = std::chrono::duration<double>(now - start).count();
      bar_done += static_cast<size_t>(rows);
      bar.update(static_cast<int64_t>(bar_done), fmt::format("views | {:.0f} views/s", elapsed > 0 ? done_images / elapsed : 0.0));
      if (writer && !terminal && std::chrono::duration<double>(now - last_report).count() > 2.0) {
        const double seconds = std::chrono::duration<double>(now - start).count();
        out << fmt::format("cache: shard {}/{}, {:.0f} views/s{}\n", s + 1, shards, done_images / seconds,
                           world > 1 ? fmt::format(" on rank 0 of {}", world) : "")
            << std::flush;
        last_report = now;
      }
    }
    const uint64_t sum = distill::detail::hash_bytes(bytes.data(), bytes.size() - kFooterBytes);
    std::memcpy(bytes.data() + bytes.size() - kFooterBytes, &sum, 8);
    const std::string temporary = path + ".tmp";
    {
      std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
      file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
      if (!file) fail_at(temporary, "could not be written (disk full?)");
    }
    std::filesystem::rename(temporary, path);  // a shard is there whole or not at all
  }
  bar.finish();
  if (group) group->barrier("waiting for every worker's shards");
  if (!writer) return;
  json list = json::array();
  for (size_t s = 0; s < shards; ++s) {
    const auto header = shard_header(s, per_shard, n, c.views(), rb);
    std::string why;
    const auto sum = complete_shard(dir + "/" + shard_name(s), header, &why);
    if (!sum) fail_at(dir + "/" + shard_name(s), "after making the cache: ", why);
    list.push_back({{"file", shard_name(s)}, {"first", header.first}, {"count", header.count}, {"checksum", distill::detail::hex(*sum)}});
  }
  plan["shards"] = list;
  {
    std::ofstream file(manifest_path + ".tmp");
    file << plan.dump(1) << '\n';
    if (!file) fail_at(manifest_path, "could not be written");
  }
  std::filesystem::rename(manifest_path + ".tmp", manifest_path);
  std::filesystem::remove(plan_path);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  uintmax_t size = 0;
  for (const auto& item : list) size += std::filesystem::file_size(dir + "/" + item["file"].get<std::string>());
  out << fmt::format("teacher cache {} complete: {} shards ({} kept from an earlier run), {:.1f} MB; this run {} views in {:.1f} s ({:.0f} views/s{})\n",
                     dir, shards, kept, static_cast<double>(size) / 1e6, done_images, seconds,
                     seconds > 0 ? done_images / seconds : 0.0, world > 1 ? " on rank 0" : "");
}

// ---------------------------------------------------------------- reading a cache

struct TeacherCache::Impl {
  std::string dir;
  json manifest;
  int64_t views = 0, topk = 0, classes = 0;
  size_t images = 0, per_shard = 0, record = 0;
  torch::Dtype dtype = torch::kFloat;
  std::vector<std::string> teachers;
  struct Shard {
    std::string path;
    const uint8_t* data = nullptr;
    size_t size = 0;
  };
  std::vector<Shard> shards;

  ~Impl() {
    for (auto& s : shards)
      if (s.data) munmap(const_cast<uint8_t*>(s.data), s.size);
  }

  const uint8_t* record_of(size_t index, int64_t view) const {
    if (index >= images) fail_at(dir, "image ", index, " is beyond the cache's ", images, " images");
    if (view < 0 || view >= views) fail_at(dir, "view ", view, " of image ", index, " is not among the cache's ", views, " views");
    const auto& shard = shards[index / per_shard];
    return shard.data + kHeaderBytes + ((index % per_shard) * static_cast<size_t>(views) + static_cast<size_t>(view)) * record;
  }
};

TeacherCache::TeacherCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TeacherCache::~TeacherCache() = default;

std::shared_ptr<TeacherCache> TeacherCache::open(const std::string& dir) {
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  const std::string manifest_path = dir + "/manifest.json";
  if (!std::filesystem::exists(manifest_path)) {
    if (std::filesystem::exists(dir + "/cache.partial.json"))
      fail_at(dir, "this teacher cache is incomplete (an interrupted distill cache): run the same distill cache command again to finish it");
    fail_at(manifest_path, "no teacher cache here (make one with distill cache -c RECIPE --out ", dir, ")");
  }
  {
    std::ifstream in(manifest_path);
    impl->manifest = json::parse(in, nullptr, /*allow_exceptions=*/false);
  }
  const json& m = impl->manifest;
  if (m.is_discarded() || !m.is_object() || m.value("format", "") != kFormat)
    fail_at(manifest_path, "is not a teacher cache manifest");
  if (m.value("version", 0) != 1) fail_at(manifest_path, "has version ", m.value("version", 0), "; this distill reads version 1");
  try {
    impl->views = m.at("views").get<int64_t>();
    impl->topk = m.at("topk").get<int64_t>();
    impl->classes = m.at("classes").get<int64_t>();
    impl->images = m.at("dataset").at("size").get<size_t>();
    impl->per_shard = m.at("shard_images").get<size_t>();
    impl->record = m.at("record_bytes").get<size_t>();
    const auto dtype = m.at("dtype").get<std::string>();
    impl->dtype = dtype == "float16" ? torch::kHalf : torch::kFloat;
    for (const auto& t : m.at("teachers")) impl->teachers.push_back(t.at("name").get<std::string>());
    if (impl->views < 1 || impl->topk < 1 || impl->topk > impl->classes || impl->per_shard < 1 || impl->teachers.empty() ||
        impl->record != record_bytes(impl->topk, impl->teachers.size(), dtype))
      fail_at(manifest_path, "holds inconsistent sizes");
    const auto& list = m.at("shards");
    const size_t expected = (impl->images + impl->per_shard - 1) / impl->per_shard;
    if (list.size() != expected) fail_at(manifest_path, "lists ", list.size(), " shards, ", expected, " expected");
    for (size_t s = 0; s < expected; ++s) {
      const std::string path = dir + "/" + list[s].at("file").get<std::string>();
      const auto header = shard_header(s, impl->per_shard, impl->images, impl->views, impl->record);
      auto refuse = [&](const std::string& why) {
        fail_at(path, "teacher cache shard (the views of images ", header.first, "-", header.first + header.count - 1, "): ", why,
                "; make the cache again with distill cache");
      };
      // Mapped once and checked on the mapping (the checksum reads it into the page cache for training).
      const int fd = ::open(path.c_str(), O_RDONLY);
      if (fd < 0) refuse(errno == ENOENT ? std::string("it is missing") : std::string("it cannot be opened: ") + std::strerror(errno));
      struct stat st;
      fstat(fd, &st);
      const auto size = static_cast<size_t>(st.st_size);
      void* data = size > 0 ? mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
      const int error = errno;
      ::close(fd);
      if (size == 0) refuse("it is empty (truncated)");
      if (data == MAP_FAILED) refuse(std::string("it cannot be mapped: ") + std::strerror(error));
      impl->shards.push_back({path, static_cast<const uint8_t*>(data), size});  // unmapped by ~Impl, also on an error below
      std::string why;
      const auto sum = check_shard(static_cast<const char*>(data), size, header, &why);
      if (!sum) refuse(why);
      if (distill::detail::hex(*sum) != list[s].at("checksum").get<std::string>())
        fail_at(path, "teacher cache shard: its checksum is not the manifest's (a shard of another cache?)");
    }
  } catch (const json::exception& e) {
    fail_at(manifest_path, "is missing a field or has a wrong one (", e.what(), ")");
  }
  return std::shared_ptr<TeacherCache>(new TeacherCache(std::move(impl)));
}

const std::string& TeacherCache::dir() const { return impl_->dir; }
const json& TeacherCache::manifest() const { return impl_->manifest; }
int64_t TeacherCache::views() const { return impl_->views; }
int64_t TeacherCache::topk() const { return impl_->topk; }
int64_t TeacherCache::classes() const { return impl_->classes; }
size_t TeacherCache::images() const { return impl_->images; }
const std::vector<std::string>& TeacherCache::teachers() const { return impl_->teachers; }

uint64_t TeacherCache::seed(size_t index, int64_t view) const {
  uint64_t seed;
  std::memcpy(&seed, impl_->record_of(index, view), 8);
  return seed;
}

Named<torch::Tensor> TeacherCache::lookup(const torch::Tensor& indices, const torch::Tensor& views) const {
  const auto& m = *impl_;
  if (indices.dim() != 1 || views.sizes() != indices.sizes())
    fail_at(m.dir, "lookup needs indices and views of shape [B], got ", indices.sizes(), " and ", views.sizes());
  const int64_t rows = indices.size(0);
  auto index = indices.to(torch::kLong).cpu().contiguous(), view = views.to(torch::kLong).cpu().contiguous();
  auto records = torch::empty({rows, static_cast<int64_t>(m.record)}, torch::kUInt8);
  const int64_t* at_index = index.data_ptr<int64_t>();
  const int64_t* at_view = view.data_ptr<int64_t>();
  uint8_t* to = records.data_ptr<uint8_t>();
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(to + static_cast<size_t>(r) * m.record, m.record_of(static_cast<size_t>(at_index[r]), at_view[r]), m.record);
  Named<torch::Tensor> out;
  int64_t offset = 8;
  auto take = [&](int64_t width, torch::Dtype dtype, int64_t columns) {
    auto field = records.narrow(1, offset, width).contiguous().view(dtype).view({rows, columns});
    offset += width;
    return field;
  };
  const int64_t k = m.topk, vb = m.dtype == torch::kHalf ? 2 : 4;
  for (const auto& name : m.teachers) {
    auto rest = take(4, torch::kFloat, 1).view({rows});
    auto values = take(k * vb, m.dtype, k).to(torch::kFloat);
    auto classes = take(k * 4, torch::kInt, k).to(torch::kLong);
    if (k == m.classes) out.set(name, torch::zeros({rows, k}, torch::kFloat).scatter_(1, classes, values));
    else out.set(name, with_context(m.dir, [&] { return topk_teacher(values, classes, rest, m.classes); }));
  }
  return out;
}

void TeacherCache::check_dataset(const data::Dataset& dataset) const {
  json made{{"transforms", nullptr}, {"dataset", impl_->manifest.at("dataset")}, {"teachers", json::array()}};
  json now{{"transforms", nullptr}, {"dataset", dataset_identity(dataset)}, {"teachers", json::array()}};
  const auto why = difference(made, now);
  if (!why.empty()) fail_at(impl_->dir + "/manifest.json", "stale teacher cache: ", why, "; make it again with distill cache");
}

void TeacherCache::check_recipe(const json& recipe, const data::Dataset& dataset) const {
  json teachers = json::array();
  for (const auto& t : frozen_models(recipe)) teachers.push_back(teacher_identity(recipe, t));
  json now{{"transforms", transforms_of(recipe)}, {"dataset", dataset_identity(dataset)}, {"teachers", teachers}};
  const auto why = difference(impl_->manifest, now);
  if (!why.empty()) fail_at(impl_->dir + "/manifest.json", "stale teacher cache: ", why, "; make it again with distill cache");
}

json without_cached_teachers(const json& recipe, const TeacherCache& cache) {
  json out = recipe;
  const auto frozen = frozen_models(recipe);
  std::set<size_t> drop;
  for (const auto& name : cache.teachers()) {
    bool found = false;
    for (const auto& f : frozen)
      if (f.name == name) drop.insert(f.position), found = true;
    if (!found) fail_at("Arch.models", "the teacher cache ", cache.dir(), " holds model '", name, "', which is not a frozen model here");
  }
  // A term that reads a cached model must need only its logits, in a form the cache holds: each
  // registered loss says which caches it learns from (LossTraits::cached_teacher).
  std::function<bool(const json&, const std::string&)> mentions = [&](const json& j, const std::string& name) {
    if (j.is_string()) return j.get<std::string>() == name;
    if (j.is_array() || j.is_object())
      for (const auto& item : j)
        if (mentions(item, name)) return true;
    return false;
  };
  const bool every_logit = cache.topk() >= cache.classes();
  const json losses = recipe.contains("Loss") && recipe["Loss"].is_object() ? recipe["Loss"].value("Train", json::array()) : json::array();
  for (size_t i = 0; i < losses.size(); ++i) {
    if (!losses[i].is_object() || losses[i].size() != 1) continue;
    const std::string loss = losses[i].begin().key();
    const json& options = losses[i].begin().value();
    const LossSpec* spec = loss_entry(loss).spec;
    if ((loss == "DistillationPairLoss" || loss == "DistillationMultiTeacherLoss") && options.is_object() &&
        options.value("base_loss_name", json()).is_string())
      spec = loss_registry().find(options["base_loss_name"].get<std::string>());
    const auto kind = spec ? spec->traits.cached_teacher : CachedTeacher::none;
    for (const auto& name : cache.teachers()) {
      if (!mentions(options, name)) continue;
      const std::string where = "Loss.Train[" + std::to_string(i) + "]." + loss;
      bool features = false;
      for (const char* key : {"key", "t_key", "t_keys", "teacher_keepkeys"})
        if (options.is_object() && options.contains(key) && !options[key].is_null() && options[key] != "logits" &&
            options[key] != json::array({"logits"}))
          features = true;
      if (features || kind == CachedTeacher::none)
        fail_at(where,
                features ? "needs more of '" + name + "' than its logits (features)"
                         : "is not registered as learning from a cached teacher's logits (LossTraits::cached_teacher)",
                ", and the teacher cache ", cache.dir(), " holds logits only; train this method with the teacher ",
                "itself (remove Global.teacher_cache)");
      if (kind == CachedTeacher::dense && !every_logit)
        fail_at(where, "learns from every logit of '", name, "', and the teacher cache ", cache.dir(),
                " holds the top ", cache.topk(), " of ", cache.classes(),
                " classes; make the cache with distill cache --topk 0, or train ",
                "with the teacher itself (remove Global.teacher_cache)");
    }
  }
  json& arch = out["Arch"];
  for (const char* key : {"models", "freeze_params_list", "pretrained_list"}) {
    if (!arch.contains(key) || !arch[key].is_array()) continue;
    json kept = json::array();
    for (size_t i = 0; i < arch[key].size(); ++i)
      if (!drop.count(i)) kept.push_back(arch[key][i]);
    arch[key] = kept;
  }
  return out;
}

}  // namespace distill::train
