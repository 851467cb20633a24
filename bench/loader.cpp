// The ImageNet training input pipeline, timed: JPEG decode, RandCropImage 224 (the reference's
// random resized crop), RandFlipImage, NormalizeImage, as examples/recipes/dkd.json's
// DataLoader.Train reads it, with distill's DataLoader (worker threads). The same pipeline in
// PyTorch is bench/loader.py; bench/e2e.sh runs both, interleaved.
//
//   loader --root DIR --list FILE [--workers 2] [--batch 32] [--epochs 2] [--threads 1]
//
// Prints one line: images_s <images per second over all epochs after the first batch>.
#include <chrono>
#include <cstring>
#include <iostream>
#include <string>

#include "distill/config/file.hpp"
#include "distill/data/loader.hpp"
#include "distill/data/recipe.hpp"

int main(int argc, char** argv) {
  std::string root, list;
  int64_t workers = 2, batch = 32, epochs = 2, threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--root") root = v;
    else if (a == "--list") list = v;
    else if (a == "--workers") workers = std::stoll(v);
    else if (a == "--batch") batch = std::stoll(v);
    else if (a == "--epochs") epochs = std::stoll(v);
    else if (a == "--threads") threads = std::stoll(v);
    else {
      std::cerr << "loader: unknown option " << a << '\n';
      return 2;
    }
  }
  if (root.empty() || list.empty()) {
    std::cerr << "usage: loader --root DIR --list FILE [--workers 2] [--batch 32] [--epochs 2] [--threads 1]\n";
    return 2;
  }
  try {
    torch::set_num_threads(static_cast<int>(threads));
    auto recipe = distill::config::load_file(DISTILL_RECIPE_DIR "/dkd.json");
    auto section = recipe["DataLoader"]["Train"]["dataset"];
    section["image_root"] = root;
    section["cls_label_path"] = list;
    auto dataset = distill::data::make_dataset(section, "DataLoader.Train.dataset");
    distill::data::DataLoader loader(
        dataset, distill::data::LoaderOptions().batch_size(batch).shuffle(true).num_workers(workers).drop_last(true));
    int64_t images = 0;
    std::chrono::steady_clock::time_point since;
    for (int64_t epoch = 1; epoch <= epochs; ++epoch) {
      loader.start(epoch);
      while (auto b = loader.next()) {
        if (epoch == 1 && images == 0 && since.time_since_epoch().count() == 0) {
          since = std::chrono::steady_clock::now();  // the clock starts after the first batch
          continue;
        }
        images += b->images.size(0);
      }
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
    std::cout << "images_s " << static_cast<double>(images) / s << " images " << images << '\n';
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "loader: " << e.what() << '\n';
    return 1;
  }
}
