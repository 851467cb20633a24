#pragma once
// A small synthetic image-list dataset the engine tests write themselves: JPEG images of noise
// with a bright square whose quadrant is the class (so a small CNN can learn it), and the
// reference's list files.

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "distill/data/image_io.hpp"

namespace distill_test {

/// Writes `count` size x size JPEGs (class = i % 4) under `dir`/images and the lists
/// `dir`/train_list.txt (all) and `dir`/val_list.txt (every other one). Returns `dir`.
inline std::string write_synthetic_dataset(const std::string& dir, int64_t count = 40, int64_t size = 32,
                                           uint64_t seed = 7) {
  std::filesystem::create_directories(dir + "/images");
  auto generator = torch::make_generator<torch::CPUGeneratorImpl>(seed);
  std::ofstream train(dir + "/train_list.txt"), val(dir + "/val_list.txt");
  for (int64_t i = 0; i < count; ++i) {
    const int64_t label = i % 4;
    auto image = torch::randint(0, 90, {size, size, 3}, generator, torch::kLong);
    const int64_t half = size / 2, y = (label / 2) * half + size / 8, x = (label % 2) * half + size / 8;
    image.slice(0, y, y + size / 4).slice(1, x, x + size / 4).fill_(230);
    const std::string name = "images/" + std::to_string(i) + ".jpg";
    std::ofstream(dir + "/" + name, std::ios::binary) << distill::data::encode_jpeg(image.to(torch::kUInt8));
    train << name << ' ' << label << '\n';
    if (i % 2 == 0) val << name << ' ' << label << '\n';
  }
  return dir;
}

/// A complete recipe over that dataset: a ConvNet teacher (frozen or trainable) and student,
/// GT-CE + DKD (+ MGD on the last stage when `mgd`), random crops and flips, Momentum with
/// cosine decay.
inline nlohmann::json synthetic_recipe(const std::string& data, const std::string& output, int64_t epochs,
                                       bool mgd = true) {
  using nlohmann::json;
  const json norm = {{"NormalizeImage", {{"scale", "1.0/255.0"}, {"mean", {0.5, 0.5, 0.5}}, {"std", {0.5, 0.5, 0.5}}}}};
  json train_ops = json::array({json{{"DecodeImage", {{"to_rgb", true}}}},
                                json{{"RandCropImage", {{"size", 24}, {"scale", {0.6, 1.0}}}}},
                                json{{"RandFlipImage", {{"flip_code", 1}}}}, norm});
  json eval_ops = json::array({json{{"DecodeImage", {{"to_rgb", true}}}}, json{{"ResizeImage", {{"resize_short", 28}}}},
                               json{{"CropImage", {{"size", 24}}}}, norm});
  json losses = json::array({json{{"DistillationGTCELoss", {{"weight", 1.0}, {"model_names", {"Student"}}}}},
                             json{{"DistillationDKDLoss",
                                   {{"weight", 1.0}, {"model_name_pairs", json::array({json::array({"Student", "Teacher"})})}, {"temperature", 2}}}}});
  if (mgd)
    losses.push_back({{"DistillationPairLoss",
                       {{"weight", 0.5}, {"base_loss_name", "MGDLoss"}, {"model_name_pairs", json::array({json::array({"Student", "Teacher"})})},
                        {"s_keys", {"stages[1]"}}, {"t_keys", {"stages[1]"}}, {"name", "loss_mgd"},
                        {"student_channels", 16}, {"teacher_channels", 24}}}});
  auto loader = [&](const char* list, const json& ops, bool shuffle) {
    return json{{"dataset", {{"name", "ImageNetDataset"}, {"image_root", data}, {"cls_label_path", data + "/" + list},
                             {"transform_ops", ops}}},
                {"sampler", {{"name", "DistributedBatchSampler"}, {"batch_size", 8}, {"drop_last", false}, {"shuffle", shuffle}}},
                {"loader", {{"num_workers", 2}}}};
  };
  return json{
      {"Global", {{"output_dir", output}, {"device", "cpu"}, {"seed", 3}, {"epochs", epochs}, {"print_batch_step", 2},
                  {"save_interval", 1}, {"eval_during_train", true}, {"eval_interval", 1}, {"checkpoints", nullptr},
                  {"pretrained_model", nullptr}}},
      {"Arch", {{"name", "DistillationModel"}, {"class_num", 4}, {"infer_model_name", "Student"},
                {"freeze_params_list", {false, false}},
                {"models", {json{{"Teacher", {{"name", "ConvNet"}, {"widths", {12, 24}}, {"return_patterns", {"stages[1]"}}}}},
                            json{{"Student", {{"name", "ConvNet"}, {"widths", {8, 16}}, {"return_patterns", {"stages[1]"}}}}}}}}},
      {"Loss", {{"Train", losses}, {"Eval", json::array({json{{"CELoss", {{"weight", 1.0}}}}})}}},
      {"Optimizer", {{"name", "Momentum"}, {"momentum", 0.9}, {"weight_decay", 1e-4},
                     {"lr", {{"name", "Cosine"}, {"learning_rate", 0.05}, {"warmup_epoch", 1}}}}},
      {"DataLoader", {{"Train", loader("train_list.txt", train_ops, true)}, {"Eval", loader("val_list.txt", eval_ops, false)}}},
      {"Metric", {{"Eval", json::array({json{{"DistillationTopkAcc", {{"model_key", "Student"}, {"topk", {1, 5}}}}}})}}}};
}

}  // namespace distill_test
