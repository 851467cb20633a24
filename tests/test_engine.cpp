// The training engine: data (JPEG, transforms, image lists, Fashion-MNIST, loader),
// schedules and optimiser, the trainer (one epoch, overfitting, resume, export, evaluation)
// and mixed precision pieces, on a synthetic dataset the tests write.

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "distill/data.hpp"
#include "distill/io.hpp"
#include "distill/config.hpp"
#include "distill/train/progress.hpp"
#include "distill/train/recipe.hpp"
#include "distill/train/teacher_cache.hpp"
#include "distill/train/trainer.hpp"
#include "distill/train/yaml.hpp"
#include "expect_error.hpp"
#include "scratch.hpp"
#include "synthetic.hpp"

using distill_test::expect_error;
using json = nlohmann::json;
namespace data = distill::data;
namespace train = distill::train;

namespace {

using distill_test::dataset_dir;
using distill_test::read_jsonl;
using distill_test::scratch;

/// Everything a run leaves in its parameters and buffers.
distill::io::StateDict all_state(train::Trainer& t) {
  distill::io::StateDict all;
  for (const auto& item : distill::io::state_dict(t.model())) all.insert("model." + item.key(), item.value());
  for (const auto& item : distill::io::state_dict(t.loss())) all.insert("loss." + item.key(), item.value());
  return all;
}

std::string quiet_run(json recipe) {
  std::ostringstream out;
  train::Trainer trainer(recipe, out);
  trainer.train();
  return out.str();
}

}  // namespace

TEST_CASE("JPEG round trip, and decoding errors name the file", "[engine][data]") {
  auto image = (torch::rand({20, 30, 3}) * 255).to(torch::kUInt8);
  auto back = data::decode_jpeg(data::encode_jpeg(image, 100), "memory");
  CHECK(back.sizes() == torch::IntArrayRef({20, 30, 3}));
  CHECK((back.to(torch::kFloat) - image.to(torch::kFloat)).abs().mean().item<double>() < 4.0);
  expect_error([] { data::decode_jpeg("\x89PNG not a jpeg", "photo.png"); }, {"photo.png", "not a JPEG"});
  expect_error([] { data::decode_jpeg("", "empty.jpg"); }, {"empty.jpg", "empty file"});
  auto bytes = data::encode_jpeg(image);
  expect_error([&] { data::decode_jpeg(bytes.substr(0, 40), "cut.jpg"); }, {"cut.jpg"});
  expect_error([] { data::read_file("/no/such/file.jpg"); }, {"/no/such/file.jpg", "cannot open"});
}

TEST_CASE("RandAugment's operations equal PIL's, pixel for pixel", "[engine][data][augment][python]") {
  // A 29x37 image with gradients, edges and noise, in [20, 220] so that AutoContrast has work.
  torch::manual_seed(5);
  auto ys = torch::arange(29, torch::kFloat).view({1, 29, 1}), xs = torch::arange(37, torch::kFloat).view({1, 1, 37});
  auto base = torch::stack({(xs * 5 + ys).squeeze(0).expand({29, 37}), (ys * 6).squeeze(0).expand({29, 37}),
                            ((xs - 18).abs() * 9).squeeze(0).expand({29, 37})});
  auto image = (base + torch::randint(0, 40, {3, 29, 37})).clamp(20, 220).to(torch::kUInt8);
  using Op = data::AugmentOp;
  using I = data::AugmentInterpolation;
  struct Case {
    Op op;
    double argument;
    I interpolation;
  };
  std::vector<Case> cases{{Op::AutoContrast, 0, I::bicubic}, {Op::Equalize, 0, I::bicubic}, {Op::Invert, 0, I::bicubic}};
  for (double bits : {0, 2, 4}) cases.push_back({Op::Posterize, bits, I::bicubic});
  for (double threshold : {77, 128, 256}) cases.push_back({Op::Solarize, threshold, I::bicubic});
  cases.push_back({Op::SolarizeAdd, 77, I::bicubic});
  for (Op op : {Op::Color, Op::Contrast, Op::Brightness, Op::Sharpness})
    for (double factor : {0.37, 1.0, 1.63}) cases.push_back({op, factor, I::bicubic});
  for (I mode : {I::bicubic, I::bilinear}) {
    for (double degrees : {17.5, -30.0, 0.7}) cases.push_back({Op::Rotate, degrees, mode});
    for (double shear : {0.21, -0.3}) cases.push_back({Op::ShearX, shear, mode}), cases.push_back({Op::ShearY, shear, mode});
    for (double shift : {0.315, -0.2}) cases.push_back({Op::TranslateXRel, shift, mode}), cases.push_back({Op::TranslateYRel, shift, mode});
  }
  distill::io::StateDict out;
  out.insert("image", image);
  for (const auto& c : cases) {
    const auto key = fmt::format("{}|{}|{}", data::augment_op_name(c.op), c.argument, c.interpolation == I::bicubic ? "bicubic" : "bilinear");
    out.insert(key, data::apply_augment_op(c.op, image, c.argument, c.interpolation));
  }
  const auto file = scratch("augment_cases.pt");
  distill::io::write_state_dict(out, file);
  const std::string command = std::string(DISTILL_TEST_PYTHON) + " " + DISTILL_TEST_SCRIPTS + "/check_augment.py " + file;
  CHECK(std::system(command.c_str()) == 0);
}

TEST_CASE("Global.pretrained_model takes a PaddleClas DistillationModel .pdparams", "[engine][paddle][python]") {
  auto model = distill::config::build_model(json::parse(R"({"name": "DistillationModel", "infer_model_name": "Student",
      "models": [{"Teacher": {"name": "MobileNetV3_small_x0_5", "class_num": 10}},
                 {"Student": {"name": "MobileNetV3_small_x0_5", "class_num": 10}}]})"));
  const std::string path = std::string(DISTILL_TEST_MODELS) + "/distillation";
  train::load_model_weights(*model, path);  // named without the extension, as PaddleClas does
  const auto file = distill::io::read_state_dict(path + ".pdparams");
  CHECK(torch::equal(model->named_buffers()["Teacher.blocks.3.expand_conv.bn.running_var"],
                     file["Teacher.blocks.3.expand_conv.bn._variance"]));
  CHECK(torch::equal(model->named_parameters()["Student.fc.weight"], file["Student.fc.weight"].t()));
  CHECK_FALSE(torch::equal(model->named_parameters()["Teacher.fc.weight"], model->named_parameters()["Student.fc.weight"]));
}

TEST_CASE("TimmAutoAugment: the reference's config strings, the op choice and its errors", "[engine][data][augment]") {
  auto o = data::parse_rand_augment("rand-m7-mstd0.5-inc1", "T");
  CHECK(o.magnitude == 7);
  CHECK(o.magnitude_std == 0.5);
  CHECK(o.increasing);
  CHECK(o.num_layers == 2);
  CHECK(o.weights.empty());
  auto w = data::parse_rand_augment("rand-n3-w0", "T");
  CHECK(w.num_layers == 3);
  CHECK(w.magnitude == 10);
  REQUIRE(w.weights.size() == 15);
  CHECK(w.weights[3] == 0.3);  // Rotate
  expect_error([] { data::parse_rand_augment("augmix-m5-w4-d2", "X.config_str"); }, {"X.config_str", "only RandAugment"});
  expect_error([] { data::parse_rand_augment("rand-m9-q2", "X.config_str"); }, {"X.config_str", "unknown RandAugment section 'q'"});
  expect_error([] { data::parse_rand_augment("rand-m9-w1", "X.config_str"); }, {"w0"});

  // In a recipe, as the PPHGNet_base config writes it; a [3, 32, 32] float image stays one.
  auto pipeline = data::make_pipeline(json::parse(R"([{"TimmAutoAugment": {"config_str": "rand-m7-mstd0.5-inc1",
      "interpolation": "bicubic", "img_size": 224}}])"), "T");
  data::Rng rng(3);
  auto image = (torch::rand({32, 32, 3}) * 255).to(torch::kUInt8);
  int changed = 0;
  for (int i = 0; i < 200; ++i) {
    auto y = pipeline(image, rng);
    REQUIRE(y.sizes() == torch::IntArrayRef({3, 32, 32}));
    CHECK(torch::equal(y, y.round()));  // 8-bit values, as PIL holds them
    changed += !torch::equal(y, image.permute({2, 0, 1}).to(torch::kFloat));
  }
  // Two ops, each applied with probability 1/2: the image is left as it is 1/4 of the time
  // (a bit more: some ops at some magnitudes change nothing).
  CHECK(changed > 110);
  CHECK(changed < 180);
  expect_error([] { data::make_pipeline(json::parse(R"([{"TimmAutoAugment": {"config_str": "auto-mstd0.5"}}])"), "T"); },
               {"T[0].TimmAutoAugment.config_str", "only RandAugment"});
}

TEST_CASE("transforms follow the reference's definitions", "[engine][data]") {
  data::Rng rng(1);
  auto image = torch::arange(3 * 40 * 60, torch::kFloat).reshape({3, 40, 60});
  CHECK(data::random_crop(24, 24)(image, rng).sizes() == torch::IntArrayRef({3, 24, 24}));
  CHECK(data::resize_short(20)(image, rng).sizes() == torch::IntArrayRef({3, 20, 30}));
  auto crop = data::center_crop(10, 20)(image, rng);
  CHECK(torch::equal(crop, image.slice(1, 15, 25).slice(2, 20, 40)));
  // Flips happen about half the time and mirror the width.
  int flipped = 0;
  for (int i = 0; i < 200; ++i) flipped += torch::equal(data::random_flip()(image, rng), image.flip({2}));
  CHECK(flipped > 70);
  CHECK(flipped < 130);
  auto norm = data::normalize(1.0 / 255, {0.5, 0.5, 0.5}, {0.25, 0.25, 0.25})(torch::full({3, 2, 2}, 255.0), rng);
  CHECK(norm.allclose(torch::full({3, 2, 2}, 2.0)));
  // The same generator state draws the same crop.
  data::Rng a(9), b(9);
  CHECK(torch::equal(data::random_crop(16, 16)(image, a), data::random_crop(16, 16)(image, b)));
  // From the reference's vocabulary, with errors that name the path.
  auto pipeline = data::make_pipeline(
      json::parse(R"([{"DecodeImage": {"to_rgb": true, "channel_first": false}}, {"ResizeImage": {"resize_short": 32}},
                      {"CropImage": {"size": 24}}, {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.485, 0.456, 0.406],
                      "std": [0.229, 0.224, 0.225], "order": ""}}, {"ToCHWImage": null}])"),
      "Infer.transforms");
  auto out = pipeline(torch::full({48, 64, 3}, 128, torch::kUInt8), rng);
  CHECK(out.sizes() == torch::IntArrayRef({3, 24, 24}));
  CHECK(out[0][0][0].item<double>() == Approx((128.0 / 255 - 0.485) / 0.229).epsilon(1e-5));
  expect_error([] { data::make_pipeline(json::parse(R"([{"RandomErasing": {}}])"), "T"); },
               {"T[0]", "unknown transform 'RandomErasing'"});
  expect_error([] { data::make_pipeline(json::parse(R"([{"CropImage": {"size": -3}}])"), "T"); }, {"T[0].CropImage.size"});
  expect_error([] { data::make_pipeline(json::parse(R"([{"NormalizeImage": {"scale": "one"}}])"), "T"); },
               {"T[0].NormalizeImage.scale", "fraction"});
}

TEST_CASE("bad list lines and missing or corrupt images are errors naming file and line", "[engine][data]") {
  const auto& dir = dataset_dir();
  data::Pipeline plain;
  {
    std::ofstream(scratch("bad_list.txt")) << "images/0.jpg 0\nimages/1.jpg\nimages/2.jpg two\n";
    expect_error([&] { data::ImageListDataset(dir, scratch("bad_list.txt"), plain); },
                 {"bad_list.txt:2", "relative/path label", "images/1.jpg"});
    data::ImageListDataset skipping(dir, scratch("bad_list.txt"), plain, /*skip_bad=*/true);
    CHECK(skipping.size() == 1);
    CHECK(skipping.bad_lines() == 2);
  }
  std::ofstream(scratch("corrupt.jpg"), std::ios::binary) << "not really a jpeg";
  std::ofstream(scratch("list_with_bad_images.txt"))
      << "images/0.jpg 0\n" << "images/missing.jpg 1\n" << scratch("corrupt.jpg") << " 2\n";
  data::ImageListDataset images("", scratch("list_with_bad_images.txt"), plain);
  data::Rng rng(0);
  expect_error([&] { images.get(1, rng); }, {"images/missing.jpg", "list_with_bad_images.txt:2", "cannot open"});
  expect_error([&] { images.get(2, rng); }, {"corrupt.jpg", "list_with_bad_images.txt:3", "not a JPEG"});
  expect_error([&] { data::ImageListDataset(dir, scratch("no_list.txt"), plain); }, {"no_list.txt", "cannot open"});
  // With skip_bad the loader drops them and counts them.
  std::ofstream(scratch("mixed.txt")) << "images/0.jpg 0\nimages/missing.jpg 1\n" << scratch("corrupt.jpg") << " 2\nimages/3.jpg 3\n";
  auto pipeline = data::make_pipeline(json::parse(R"([{"ResizeImage": {"size": 16}}])"), "T");
  auto skipping = std::make_shared<data::ImageListDataset>(dir, scratch("mixed.txt"), pipeline, true);
  data::DataLoader loader(skipping, data::LoaderOptions().batch_size(4).num_workers(2));
  loader.start(0);
  auto batch = loader.next();
  REQUIRE(batch);
  CHECK(batch->labels.size(0) == 2);
  CHECK(skipping->skipped() == 2);
  // Without it, the worker's error reaches the caller.
  auto strict = std::make_shared<data::ImageListDataset>(dir, scratch("mixed.txt"), pipeline, false);
  data::DataLoader failing(strict, data::LoaderOptions().batch_size(2).num_workers(2));
  failing.start(0);
  expect_error([&] { while (failing.next()) {} }, {"images/missing.jpg", "mixed.txt:2"});
}

TEST_CASE("the loader's order depends only on seed, epoch and rank", "[engine][data]") {
  auto pipeline = data::make_pipeline(json::parse(R"([{"RandCropImage": {"size": 16}}, {"RandFlipImage": {}}])"), "T");
  auto dataset = std::make_shared<data::ImageListDataset>(dataset_dir(), dataset_dir() + "/train_list.txt", pipeline);
  auto run = [&](int64_t workers, int64_t rank, int64_t world, int64_t batch, int64_t epoch) {
    data::DataLoader loader(dataset, data::LoaderOptions().batch_size(batch).shuffle(true).seed(5).num_workers(workers)
                                         .rank(rank).world_size(world));
    std::vector<data::Batch> batches;
    loader.start(epoch);
    while (auto b = loader.next()) batches.push_back(*b);
    return batches;
  };
  auto serial = run(0, 0, 1, 8, 1), threaded = run(3, 0, 1, 8, 1);
  REQUIRE(serial.size() == 5);
  for (size_t i = 0; i < serial.size(); ++i) {
    CHECK(torch::equal(serial[i].images, threaded[i].images));
    CHECK(torch::equal(serial[i].labels, threaded[i].labels));
  }
  // Another epoch, another order.
  CHECK(!torch::equal(run(0, 0, 1, 8, 2)[0].images, serial[0].images));
  // Two ranks with half the batch read disjoint halves of each global batch.
  auto r0 = run(2, 0, 2, 4, 1), r1 = run(2, 1, 2, 4, 1);
  REQUIRE(r0.size() == serial.size());
  for (size_t i = 0; i < serial.size(); ++i) {
    auto together = torch::cat({r0[i].images, r1[i].images});
    for (int64_t j = 0; j < serial[i].images.size(0); ++j) {
      bool found = false;
      for (int64_t k = 0; k < together.size(0) && !found; ++k) found = torch::equal(together[k], serial[i].images[j]);
      CHECK(found);
    }
  }
  data::DataLoader dropping(dataset, data::LoaderOptions().batch_size(16).drop_last(true));
  CHECK(dropping.batches_per_epoch() == 2);
}

TEST_CASE("Fashion-MNIST loads from Debian's package", "[engine][data]") {
  data::FashionMNIST test(data::FashionMNIST::kDefaultRoot, false, data::Pipeline());
  CHECK(test.size() == 10000);
  CHECK(test.labels().max().item<int64_t>() == 9);
  data::Rng rng(0);
  auto sample = test.get(0, rng);
  REQUIRE(sample);
  CHECK(sample->image.sizes() == torch::IntArrayRef({3, 28, 28}));
  CHECK(sample->label == 9);  // the first test image is an ankle boot
  data::FashionMNIST small(data::FashionMNIST::kDefaultRoot, true, data::Pipeline(), 100);
  CHECK(small.size() == 100);
  expect_error([] { data::FashionMNIST("/no/fashion", true, data::Pipeline()); }, {"/no/fashion/train-images-idx3-ubyte.gz"});
}

TEST_CASE("learning-rate schedules and the optimiser follow the reference", "[engine][train]") {
  auto cosine = train::make_schedule(json::parse(R"({"name": "Cosine", "learning_rate": 0.4, "warmup_epoch": 5})"),
                                               "lr", 100, 10);
  CHECK(cosine(0) == 0.0);
  CHECK(cosine(25) == Approx(0.2));  // halfway through the warm-up
  CHECK(cosine(50) == Approx(0.4));
  CHECK(cosine(50 + 475) == Approx(0.2));  // halfway through the cosine
  CHECK(cosine(1000) == Approx(0.0).margin(1e-12));
  auto piecewise = train::make_schedule(
      json::parse(R"({"name": "Piecewise", "learning_rate": 0.1, "decay_epochs": [30, 60, 90], "values": [0.1, 0.01, 0.001, 0.0001]})"),
      "lr", 100, 10);
  CHECK(piecewise(299) == 0.1);
  CHECK(piecewise(300) == 0.01);
  CHECK(piecewise(950) == 0.0001);
  auto multistep = train::make_schedule(
      json::parse(R"({"name": "MultiStepDecay", "learning_rate": 0.2, "milestones": [30, 60, 90], "step_each_epoch": 1, "gamma": 0.1})"),
      "lr", 100, 10);
  CHECK(multistep(599) == Approx(0.02));
  CHECK(multistep(600) == Approx(0.002));
  expect_error([] { train::make_schedule(json::parse(R"({"name": "Step", "learning_rate": 1})"), "Optimizer.lr", 1, 1); },
               {"Optimizer.lr.name", "unknown schedule 'Step'"});
  expect_error([] {
    train::make_schedule(json::parse(R"({"name": "Piecewise", "learning_rate": 1, "decay_epochs": [1], "values": [1]})"),
                                   "Optimizer.lr", 1, 1);
  }, {"Optimizer.lr.values", "one value more"});

  // Momentum with coupled L2 decay; the no_decay group gets none.
  auto w = torch::tensor({1.0f, -2.0f}).requires_grad_(), b = torch::tensor({0.5f}).requires_grad_();
  distill::ParameterGroups groups{{w}, {b}};
  auto optimizer = train::make_optimizer(json::parse(R"({"name": "Momentum", "momentum": 0.9, "regularizer": {"name": "L2", "coeff": 0.1}, "lr": {}})"),
                                         "Optimizer", groups);
  train::set_learning_rate(*optimizer, 0.5);
  for (int step = 0; step < 2; ++step) {
    optimizer->zero_grad();
    ((w * w).sum() + 3 * b.sum()).backward();
    optimizer->step();
  }
  // Step 1: v = 2w + 0.1w = 2.1w -> w1 = w (1 - 1.05) = -0.05 w. Step 2: v = 0.9 * 2.1w + 2.1 w1.
  auto w0 = torch::tensor({1.0f, -2.0f});
  auto w1 = w0 * (1 - 0.5 * 2.1);
  auto w2 = w1 - 0.5 * (0.9 * 2.1 * w0 + 2.1 * w1);
  CHECK(w.allclose(w2));
  CHECK(b.item<float>() == Approx(0.5 - 0.5 * 3 - 0.5 * (0.9 * 3 + 3)));
  expect_error([&] { train::make_optimizer(json::parse(R"({"name": "Adam", "lr": {}})"), "Optimizer", groups); },
               {"Optimizer.name", "unknown optimizer 'Adam'", "Momentum", "AdamW"});
  expect_error([&] { train::make_optimizer(json::parse(R"({"name": "Momentum", "momentum": -1, "lr": {}})"), "Optimizer", groups); },
               {"Optimizer", "momentum"});
  expect_error([&] { train::make_optimizer(json::parse(R"({"name": "Momentum", "weight_decay": -1e-4, "lr": {}})"), "Optimizer", groups); },
               {"Optimizer", "weight decay", ">= 0"});
  expect_error([&] { train::make_optimizer(json::parse(R"({"name": "Momentum", "nesterov": true, "lr": {}})"), "Optimizer", groups); },
               {"Optimizer.nesterov", "unknown key"});

  // AdamW: decoupled decay w <- w (1 - lr wd), then Adam's step, which after one step of a
  // constant gradient is lr g / (|g| + eps); the no_decay group gets no decay.
  auto v = torch::tensor({1.0, -2.0}, torch::kDouble).requires_grad_(), c = torch::tensor({0.5}, torch::kDouble).requires_grad_();
  distill::ParameterGroups adam_groups{{v}, {c}};
  auto adamw = train::make_optimizer(json::parse(R"({"name": "AdamW", "weight_decay": 0.1, "lr": {}})"), "Optimizer", adam_groups);
  train::set_learning_rate(*adamw, 0.5);
  adamw->zero_grad();
  ((v * v).sum() + 3 * c.sum()).backward();
  adamw->step();
  auto g = torch::tensor({2.0, -4.0}, torch::kDouble);
  auto expected = torch::tensor({1.0, -2.0}, torch::kDouble) * (1 - 0.5 * 0.1) - 0.5 * g / (g.abs() + 1e-8);
  CHECK(v.allclose(expected, 1e-12, 1e-12));
  CHECK(c.item<double>() == Approx(0.5 - 0.5 * 3 / (3 + 1e-8)));
  // Its state (moments and step count) is plain tensors and restores into a fresh optimiser.
  auto state = train::optimizer_state(*adamw);
  CHECK(state.contains("0.0.exp_avg"));
  CHECK(state.contains("0.0.step"));
  auto v2 = v.detach().clone().requires_grad_(), c2 = c.detach().clone().requires_grad_();
  distill::ParameterGroups copy_groups{{v2}, {c2}};
  auto restored = train::make_optimizer(json::parse(R"({"name": "AdamW", "weight_decay": 0.1, "lr": {}})"), "Optimizer", copy_groups);
  train::load_optimizer_state(*restored, state, "test");
  for (auto* o : {adamw.get(), restored.get()}) train::set_learning_rate(*o, 0.5), o->zero_grad();
  ((v * v).sum() + 3 * c.sum()).backward();
  ((v2 * v2).sum() + 3 * c2.sum()).backward();
  adamw->step();
  restored->step();
  CHECK(torch::equal(v, v2));
  CHECK(torch::equal(c, c2));
}

TEST_CASE("top-k accuracy on a hand-made case", "[engine][train]") {
  auto logits = torch::tensor({{1.0, 3.0, 2.0}, {3.0, 1.0, 2.0}, {1.0, 2.0, 3.0}});
  auto labels = torch::tensor({1, 2, 0}, torch::kLong);
  CHECK(train::topk_correct(logits, labels, {1, 2, 5}) == std::vector<int64_t>{1, 2, 3});
}

TEST_CASE("one epoch of training writes checkpoints, metrics and a plot", "[engine][train]") {
  const auto out = scratch("one_epoch");
  std::filesystem::remove_all(out);
  const auto log = quiet_run(distill_test::synthetic_recipe(dataset_dir(), out, 1));
  for (const char* file : {"latest.pt", "epoch_1.pt", "best_model.pt", "best_model_student.pt", "metrics.jsonl", "training.svg"})
    CHECK(std::filesystem::exists(out + "/" + file));
  // One write of the model per epoch: epoch_1.pt and latest.pt are links to that epoch's best_model.pt.
  CHECK(std::filesystem::equivalent(out + "/epoch_1.pt", out + "/best_model.pt"));
  CHECK(std::filesystem::equivalent(out + "/latest.pt", out + "/best_model.pt"));
  CHECK(std::filesystem::hard_link_count(out + "/latest.pt") == 3);
  CHECK(log.find("epoch 1/1 step 5/5") != std::string::npos);
  CHECK(log.find("loss_mgd_Student_Teacher_stages[1]") != std::string::npos);
  CHECK(log.find("img/s") != std::string::npos);
  CHECK(log.find("ETA") != std::string::npos);
  auto records = read_jsonl(out + "/metrics.jsonl");
  REQUIRE(records.size() >= 2);
  CHECK(records.front()["type"] == "train");
  CHECK(records.front().contains("loss_dkd_Student_Teacher"));
  REQUIRE(records.back()["type"] == "summary");  // the last record; the evaluation before it
  CHECK(records.back()["best_top1"] == records[records.size() - 2]["top1"]);
  CHECK(records[records.size() - 2]["type"] == "eval");
  std::ifstream svg(out + "/training.svg");
  std::string text((std::istreambuf_iterator<char>(svg)), {});
  CHECK(text.find("<svg") != std::string::npos);
  CHECK(text.find("polyline") != std::string::npos);
}

TEST_CASE("a fixed small batch is overfitted", "[engine][train]") {
  // Eight images, no augmentation, one batch per epoch: the loss must collapse.
  std::ofstream(scratch("eight.txt")) << [] {
    std::string lines;
    for (int i = 0; i < 8; ++i) lines += "images/" + std::to_string(i) + ".jpg " + std::to_string(i % 4) + "\n";
    return lines;
  }();
  auto recipe = distill_test::synthetic_recipe(dataset_dir(), scratch("overfit"), 150, /*mgd=*/false);
  recipe["Loss"]["Train"] = json::parse(R"([{"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Student"]}}])");
  recipe["Arch"]["models"] = json::parse(R"([{"Student": {"name": "ConvNet", "widths": [16, 32]}}])");
  recipe["Arch"]["freeze_params_list"] = {false};
  for (const char* phase : {"Train", "Eval"}) {
    auto& loader = recipe["DataLoader"][phase];
    loader["dataset"]["cls_label_path"] = scratch("eight.txt");
    loader["dataset"]["transform_ops"] = json::parse(R"([{"DecodeImage": {"to_rgb": true}}, {"NormalizeImage": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}])");
    loader["sampler"]["batch_size"] = 8;
  }
  recipe["Optimizer"]["lr"] = json::parse(R"({"name": "Constant", "learning_rate": 0.1})");
  recipe["Optimizer"]["weight_decay"] = 0.0;
  recipe["Global"]["print_batch_step"] = 1;
  recipe["Global"]["eval_interval"] = 50;
  std::filesystem::remove_all(scratch("overfit"));
  quiet_run(recipe);
  auto records = read_jsonl(scratch("overfit") + "/metrics.jsonl");
  double first = -1, last = -1, top1 = -1;
  for (const auto& r : records) {
    if (r["type"] == "train") {
      if (first < 0) first = r["loss"];
      last = r["loss"];
    } else if (r["type"] == "eval") {
      top1 = r["top1"];
    }
  }
  INFO("loss " << first << " -> " << last);
  CHECK(last < first / 20);
  CHECK(top1 == 1.0);
}

TEST_CASE("stopping after epoch 1 and resuming equals an uninterrupted run", "[engine][train]") {
  for (const auto& dir : {scratch("straight"), scratch("resumed")}) std::filesystem::remove_all(dir);
  auto straight = distill_test::synthetic_recipe(dataset_dir(), scratch("straight"), 2);
  std::ostringstream log_a;
  train::Trainer a(straight, log_a);
  a.train();

  auto first = distill_test::synthetic_recipe(dataset_dir(), scratch("resumed"), 1);
  quiet_run(first);  // "stops" after epoch 1
  auto second = distill_test::synthetic_recipe(dataset_dir(), scratch("resumed"), 2);
  second["Global"]["checkpoints"] = scratch("resumed") + "/latest.pt";
  std::ostringstream log_b;
  train::Trainer b(second, log_b);
  b.train();
  CHECK(log_b.str().find("resumed from") != std::string::npos);

  auto sa = all_state(a), sb = all_state(b);
  REQUIRE(sa.size() == sb.size());
  for (const auto& item : sa) {
    INFO(item.key());
    CHECK(torch::equal(item.value(), sb[item.key()]));
  }
}

TEST_CASE("channels-last training equals the default order to rounding, and resumes exactly", "[engine][train]") {
  // The synthetic recipe has convolutions in the models and in the loss (MGD's generator).
  for (const auto& dir : {scratch("nchw"), scratch("nhwc"), scratch("nhwc_resumed")}) std::filesystem::remove_all(dir);
  auto recipe = [&](const std::string& dir, int64_t epochs, bool channels_last) {
    auto r = distill_test::synthetic_recipe(dataset_dir(), scratch(dir), epochs);
    r["Global"]["channels_last"] = channels_last;
    return r;
  };
  std::ostringstream log;
  train::Trainer nchw(recipe("nchw", 2, false), log);  // each built just before it trains: the
  nchw.train();                                        // constructor seeds the generator MGD draws from
  train::Trainer nhwc(recipe("nhwc", 2, true), log);
  nhwc.train();
  int64_t channels_last = 0;
  for (const auto& p : nhwc.model().parameters())
    if (p.dim() == 4) {
      CHECK(p.is_contiguous(torch::MemoryFormat::ChannelsLast));
      CHECK_FALSE(p.is_contiguous());
      ++channels_last;
    }
  CHECK(channels_last >= 4);
  auto a = all_state(nchw), b = all_state(nhwc);
  REQUIRE(a.size() == b.size());
  for (const auto& item : a) {
    INFO(item.key());
    CHECK(torch::allclose(item.value(), b[item.key()], 1e-3, 1e-4));
  }
  quiet_run(recipe("nhwc_resumed", 1, true));
  auto second = recipe("nhwc_resumed", 2, true);
  second["Global"]["checkpoints"] = scratch("nhwc_resumed") + "/latest.pt";
  train::Trainer resumed(second, log);
  resumed.train();
  auto c = all_state(resumed);
  for (const auto& item : b) {
    INFO(item.key());
    CHECK(torch::equal(item.value(), c[item.key()]));
  }
}

TEST_CASE("a checkpoint is data: an optimiser state stored as a TorchScript archive is refused, never run", "[engine][python]") {
  // hostile_optimizer.bin (make_model_fixtures.py) writes pwned.pt next to itself when
  // torch::jit::load or InputArchive::load_from reads it, as checkpoints once stored the optimiser.
  const std::string models = DISTILL_TEST_MODELS, pwned = models + "/pwned.pt";
  const auto out = scratch("hostile");
  std::filesystem::remove_all(out);
  std::filesystem::remove(pwned);
  quiet_run(distill_test::synthetic_recipe(dataset_dir(), out, 1));
  auto dict = distill::io::read_state_dict(out + "/latest.pt");
  std::ifstream in(models + "/hostile_optimizer.bin", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  REQUIRE(bytes.size() > 100);
  auto archive = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(archive.data_ptr(), bytes.data(), bytes.size());
  dict.insert("optimizer", archive);
  distill::io::write_state_dict(dict, out + "/hostile.pt");
  auto resume = distill_test::synthetic_recipe(dataset_dir(), out, 2);
  resume["Global"]["checkpoints"] = out + "/hostile.pt";
  expect_error([&] { quiet_run(resume); }, {"hostile.pt", "TorchScript archive", "pretrained_model"});
  CHECK(!std::filesystem::exists(pwned));

  // The optimiser state itself is plain tensors: one momentum buffer per trained parameter.
  auto written = distill::io::read_state_dict(out + "/latest.pt");
  int64_t buffers = 0;
  for (const auto& item : written)
    if (item.key().rfind("optimizer.", 0) == 0) {
      CHECK(item.key().find(".momentum_buffer") != std::string::npos);
      ++buffers;
    }
  CHECK(buffers > 4);
  // An entry for a parameter this run does not have is refused by name.
  written.insert("optimizer.0.9999.momentum_buffer", torch::zeros({1}));
  distill::io::write_state_dict(written, out + "/extra.pt");
  resume["Global"]["checkpoints"] = out + "/extra.pt";
  expect_error([&] { quiet_run(resume); }, {"extra.pt", "optimizer.0.9999.momentum_buffer"});
}

TEST_CASE("the exported student loads back and evaluation counts what it should", "[engine][train]") {
  auto recipe = distill_test::synthetic_recipe(dataset_dir(), scratch("export"), 1);
  std::ostringstream log;
  train::Trainer trainer(recipe, log);
  trainer.export_student(scratch("export/student.pt"));
  auto student = distill::config::create_backbone("ConvNet", {{"widths", {8, 16}}, {"class_num", 4}, {"pretrained", scratch("export/student.pt")}});
  student->eval();
  trainer.model().eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({3, 3, 24, 24});
  CHECK(torch::equal(student->forward(x)["logits"], trainer.model().infer_model()->forward(x)["logits"]));

  // A student that always answers class 2: accuracy is the share of class 2 in val_list.txt
  // (indices 0, 2, ..., 38: labels 0 and 2 alternate, so exactly one half).
  auto params = trainer.model().model("Student")->named_parameters();
  params["fc.weight"].zero_();
  params["fc.bias"].copy_(torch::tensor({0.0, 0.0, 5.0, 0.0}));
  auto result = trainer.evaluate();
  CHECK(result.samples == 20);
  CHECK(result.top1() == Approx(0.5));
  CHECK(result.topk.back().first == 5);
  CHECK(result.topk.back().second == Approx(1.0));  // only 4 classes
  REQUIRE(!result.loss_terms.empty());
  CHECK(result.loss_terms.front().first == "CELoss_Student");
  const double expected_ce = -std::log(std::exp(0.0) / (3 + std::exp(5.0))) * 0.5 - std::log(std::exp(5.0) / (3 + std::exp(5.0))) * 0.5;
  CHECK(result.loss_terms.front().second == Approx(expected_ce).epsilon(1e-5));
}

TEST_CASE("mixed precision: bfloat16 autocast on the CPU and the loss scaler", "[engine][train]") {
  auto recipe = distill_test::synthetic_recipe(dataset_dir(), scratch("bf16"), 1);
  recipe["AMP"] = json::parse(R"({"use_amp": true, "dtype": "bfloat16", "level": "O1", "scale_loss": 128.0, "use_dynamic_loss_scaling": true})");
  std::filesystem::remove_all(scratch("bf16"));
  quiet_run(recipe);
  auto records = read_jsonl(scratch("bf16") + "/metrics.jsonl");
  REQUIRE(!records.empty());
  CHECK(std::isfinite(records.front()["loss"].get<double>()));
  // float16 needs CUDA.
  recipe["AMP"]["dtype"] = "float16";
  expect_error([&] { train::Trainer t(recipe); }, {"AMP", "CUDA", "bfloat16"});

  train::GradScaler scaler(128.0);
  auto p = torch::ones({2}).requires_grad_();
  p.mutable_grad() = torch::tensor({256.0f, 128.0f});
  CHECK(scaler.unscale_and_check({p}));
  CHECK(p.grad().allclose(torch::tensor({2.0f, 1.0f})));
  for (int i = 0; i < 2; ++i) {
    p.mutable_grad() = torch::tensor({INFINITY, 1.0f});
    CHECK(!scaler.unscale_and_check({p}));
  }
  CHECK(scaler.current_scale() == 64.0);
  for (int i = 0; i < 1000; ++i) {
    p.mutable_grad() = torch::ones({2});
    scaler.unscale_and_check({p});
  }
  CHECK(scaler.current_scale() == 128.0);
}

TEST_CASE("bad engine configs are errors with their paths", "[engine][errors]") {
  auto recipe = distill_test::synthetic_recipe(dataset_dir(), scratch("bad"), 1);
  auto with = [&](const std::string& assignment) {
    auto r = recipe;
    distill::config::apply_override(r, assignment);
    return r;
  };
  expect_error([&] { train::Trainer t(with("Global.device=\"gpu\"")); }, {"Global.device", "CUDA"});
  expect_error([&] { train::Trainer t(with("Global.epochs=0")); }, {"Global.epochs"});
  expect_error([&] { train::Trainer t(with("DataLoader.Train.dataset.name=\"ImageNet\"")); },
               {"DataLoader.Train.dataset.name", "unknown dataset"});
  expect_error([&] { train::Trainer t(with("DataLoader.Train.sampler.batch_size=\"8\"")); },
               {"DataLoader.Train.sampler.batch_size", "an integer"});
  expect_error([&] { train::Trainer t(with("Optimizer.lr.name=\"Linear\"")); }, {"Optimizer.lr.name"});
  auto extra = recipe;
  extra["Global"]["epoch"] = 3;
  expect_error([&] { train::Trainer t(extra); }, {"Global.epoch", "unknown key", "epochs"});
  auto resume = with("Global.checkpoints=\"" + scratch("nothing.pt") + "\"");
  expect_error([&] { train::Trainer t(resume, std::cout); t.train(); }, {"nothing.pt"});
}

TEST_CASE("damaged checkpoints and full disks are errors that name the file and keep the old one", "[engine][errors]") {
  const auto out = scratch("damaged");
  std::filesystem::remove_all(out);
  quiet_run(distill_test::synthetic_recipe(dataset_dir(), out, 1));
  const auto good = distill::io::read_state_dict(out + "/latest.pt");
  auto resume_from = [&](const std::string& key, const torch::Tensor& value) {
    auto dict = good;
    dict[key] = value;
    distill::io::write_state_dict(dict, out + "/bad.pt");
    auto recipe = distill_test::synthetic_recipe(dataset_dir(), out, 2);
    recipe["Global"]["checkpoints"] = out + "/bad.pt";
    std::ostringstream log;
    train::Trainer t(recipe, log);
    t.train();
  };
  auto scalar = [](double v) { return torch::tensor(v, torch::kDouble); };
  expect_error([&] { resume_from("meta.epoch", scalar(NAN)); }, {"bad.pt", "meta.epoch", "nan", "damaged"});
  expect_error([&] { resume_from("meta.epoch", scalar(1e300)); }, {"bad.pt", "meta.epoch", "outside"});
  expect_error([&] { resume_from("meta.epoch", scalar(-3)); }, {"bad.pt", "meta.epoch", "outside"});
  expect_error([&] { resume_from("meta.step", scalar(2.5)); }, {"bad.pt", "meta.step", "not a whole number"});
  expect_error([&] { resume_from("meta.epoch", torch::zeros({2}, torch::kDouble)); }, {"bad.pt", "meta.epoch", "one floating-point number"});
  expect_error([&] { resume_from("rng.cpu", torch::zeros({3}, torch::kFloat)); }, {"bad.pt", "rng.cpu", "not a generator state"});

  // A full disk (/dev/full answers every write with ENOSPC): the error says so, the earlier
  // file is untouched and no partial file stays behind.
  const auto path = out + "/latest.pt";
  std::filesystem::create_symlink("/dev/full", path + ".tmp");
  expect_error([&] { distill::io::write_state_dict(good, path); }, {"latest.pt", "No space left on device", "unchanged"});
  CHECK(!std::filesystem::exists(std::filesystem::symlink_status(path + ".tmp")));
  CHECK(torch::equal(distill::io::read_state_dict(path)["model.Student.fc.weight"], good["model.Student.fc.weight"]));
  train::Progress metrics(std::cout, false, "/dev/full");
  expect_error([&] { metrics.evaluation(1, {{"top1", 0.5}}, true); }, {"/dev/full", "metrics log", "No space left"});
}

TEST_CASE("data that declares more than it holds is refused before the allocation", "[engine][data][errors]") {
  // A JPEG whose header declares 16384x16384 pixels (its data would be a few hundred bytes).
  auto jpeg = data::encode_jpeg(torch::full({16, 16, 3}, 128, torch::kUInt8));
  const auto sof = jpeg.find("\xFF\xC0", 0, 2);
  REQUIRE(sof != std::string::npos);
  for (size_t at : {sof + 5, sof + 7}) jpeg[at] = '\x40', jpeg[at + 1] = '\x00';  // 0x4000 = 16384
  expect_error([&] { data::decode_jpeg(jpeg, "bomb.jpg"); }, {"bomb.jpg", "16384x16384", "DISTILL_MAX_IMAGE_PIXELS"});
  // A truncated JPEG is an error, not an image whose missing part is grey.
  auto noisy = data::encode_jpeg(torch::randint(0, 256, {64, 64, 3}, torch::kLong).to(torch::kUInt8));
  expect_error([&] { data::decode_jpeg(noisy.substr(0, noisy.size() / 2), "cut.jpg"); }, {"cut.jpg", "corrupt JPEG data"});

  // idx files (read through zlib, which takes plain files too).
  const auto dir = scratch("idx");
  std::filesystem::create_directories(dir);
  auto idx = [](uint32_t magic, std::vector<uint32_t> dims, size_t data_bytes) {
    std::string out;
    for (uint32_t v : [&] { dims.insert(dims.begin(), magic); return dims; }())
      for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((v >> s) & 0xFF);
    return out + std::string(data_bytes, '\x01');
  };
  auto write = [&](const std::string& images, const std::string& labels) {
    std::ofstream(dir + "/train-images-idx3-ubyte.gz", std::ios::binary) << images;
    std::ofstream(dir + "/train-labels-idx1-ubyte.gz", std::ios::binary) << labels;
  };
  write(idx(0x803, {2, 2, 2}, 8), idx(0x801, {2}, 2));
  CHECK(data::FashionMNIST(dir, true, {}).size() == 2);  // the hand-made files are right
  write(idx(0x803, {2, 2, 2}, 8 + 100000), idx(0x801, {2}, 2));
  expect_error([&] { data::FashionMNIST(dir, true, {}); }, {"train-images-idx3-ubyte.gz", "more data bytes than the header promises"});
  write(idx(0x803, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, 8), idx(0x801, {2}, 2));
  expect_error([&] { data::FashionMNIST(dir, true, {}); }, {"train-images-idx3-ubyte.gz", "declares", "beyond"});
  write(idx(0x803, {2, 2, 2}, 8), idx(0x801, {0x7FFFFFFF}, 2));  // 2 GiB of labels promised in 10 bytes
  expect_error([&] { data::FashionMNIST(dir, true, {}); }, {"train-labels-idx1-ubyte.gz", "declares", "more than"});
}

TEST_CASE("silent data problems are reported: skipped lines, out-of-range labels, no batches", "[engine][data][errors]") {
  const auto& dir = dataset_dir();
  std::ofstream(scratch("report_list.txt")) << "images/0.jpg 0\nimages/1.jpg\nimages/2.jpg two\nimages/ 1\nimages/3.jpg 3\n";
  auto pipeline = data::make_pipeline(json::parse(R"([{"ResizeImage": {"size": 16}}])"), "T");
  auto skipping = std::make_shared<data::ImageListDataset>(dir, scratch("report_list.txt"), pipeline, true);
  CHECK(skipping->build_report().find("skipped 2 malformed line(s) (skip_bad): line(s) 2, 3") != std::string::npos);
  // An image path that is a directory is a bad sample like any other (skippable).
  data::DataLoader loader(skipping, data::LoaderOptions().batch_size(3).num_workers(1));
  loader.start(0);
  auto batch = loader.next();
  REQUIRE(batch);
  CHECK(batch->labels.size(0) == 2);
  CHECK(skipping->skipped() == 1);
  CHECK(skipping->first_skip().find("not a regular file") != std::string::npos);

  // Evaluation without Loss.Eval still refuses labels outside the model's classes.
  std::ofstream(scratch("label9.txt")) << "images/0.jpg 0\nimages/1.jpg 9\n";
  auto recipe = distill_test::synthetic_recipe(dir, scratch("label9"), 1);
  recipe.erase("Loss");
  recipe["Loss"] = {{"Train", json::parse(R"([{"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Student"]}}])")}};
  recipe["DataLoader"]["Eval"]["dataset"]["cls_label_path"] = scratch("label9.txt");
  {
    std::ostringstream log;
    train::Trainer t(recipe, log);
    expect_error([&] { t.evaluate(); }, {"evaluation", "class index 9", "outside [0, 4)"});
  }
  // A training set that makes no batch is an error, not a run that "completes".
  recipe["DataLoader"]["Train"]["dataset"]["cls_label_path"] = scratch("label9.txt");
  recipe["DataLoader"]["Train"]["sampler"]["drop_last"] = true;
  expect_error([&] { std::ostringstream log; train::Trainer t(recipe, log); }, {"DataLoader.Train", "no batch of 8", "drop_last"});
}

TEST_CASE("hostile recipes: directories, deep nesting and numbers beyond float are errors with their place", "[engine][errors]") {
  expect_error([] { distill::config::load_file(scratch("")); }, {"is a directory"});
  std::ofstream(scratch("deep.json")) << std::string(100000, '[') << std::string(100000, ']');
  expect_error([] { distill::config::load_file(scratch("deep.json")); }, {"deep.json", "nested deeper than 100"});
  std::ofstream(scratch("huge.json")) << R"({"a": 1e309})";
  expect_error([] { distill::config::load_file(scratch("huge.json")); }, {"huge.json", "not valid JSON"});
  json r = {{"a", 1}};
  expect_error([&] { distill::config::apply_override(r, "a=" + std::string(200, '[') + std::string(200, ']')); },
               {"override", "nested deeper than 100"});

  auto recipe = distill_test::synthetic_recipe(dataset_dir(), scratch("huge"), 1);
  auto with = [&](const std::string& assignment) {
    auto copy = recipe;
    distill::config::apply_override(copy, assignment);
    return copy;
  };
  expect_error([&] { train::Trainer t(with("Optimizer.lr.learning_rate=1e300")); }, {"Optimizer.lr", "learning_rate", "float32"});
  auto beta = recipe;
  beta["Loss"]["Train"][1]["DistillationDKDLoss"]["beta"] = 1e300;
  expect_error([&] { train::Trainer t(beta); }, {"beta", "float32"});
  expect_error([&] { train::Trainer t(with("Optimizer.momentum=-1")); }, {"Optimizer", "momentum"});
}

TEST_CASE("PaddleClas-style YAML recipes read as PyYAML reads them, with the line of every value", "[engine][yaml]") {
  if (!train::yaml_available()) return;  // an engine built without yaml-cpp says so (tested below)
  std::map<std::string, int> lines;
  const auto path = std::string(DISTILL_TEST_DATA) + "/yaml/dkd_style.yaml";
  const auto r = train::load_yaml(path, &lines);
  // Anchors and aliases, Python-style booleans, null and empty values, numbers and strings.
  CHECK(r["Arch"]["models"][0]["Teacher"]["class_num"] == 10);
  CHECK(r["Arch"]["models"][1]["Student"]["class_num"] == 10);
  CHECK(r["Arch"]["freeze_params_list"] == json::parse("[true, false]"));
  CHECK(r["Global"]["checkpoints"].is_null());
  CHECK(r["Global"]["pretrained_model"].is_null());
  CHECK(r["Global"]["use_visualdl"] == false);
  CHECK(r["Optimizer"]["weight_decay"] == 1e-4);
  CHECK(r["Optimizer"]["lr"]["warmup_epoch"] == 5);
  CHECK(r["Optimizer"]["lr"]["learning_rate"] == 0.2);
  CHECK(r["Infer"]["transforms"][3]["NormalizeImage"]["scale"] == "1.0/255.0");
  CHECK(r["Infer"]["transforms"][3]["NormalizeImage"]["order"] == "");
  CHECK(r["Infer"]["transforms"][4]["ToCHWImage"].is_null());
  CHECK(r["Infer"]["PostProcess"]["class_id_map_file"] == "0");  // quoted: a string
  CHECK(r["Merged"]["derived"] == json::parse(R"({"a": 1, "b": 3})"));
  CHECK(lines.at("Loss.Train[1].DistillationDKDLoss.beta") == 45);
  CHECK(lines.at("Arch.models[0].Teacher.name") == 27);

  // The recipe builds: models, losses and (with a dataset of its own) the engine's options.
  auto model = distill::config::build_model(r["Arch"]);
  CHECK(model->infer_model_name() == "Student");
  auto loss = distill::config::build_loss(r["Loss"]["Train"]);
  CHECK(loss->size() == 2);

  // Bad YAML names the file and line; a key twice is an error too.
  const auto bad = std::string(DISTILL_TEST_SCRATCH) + "/bad.yaml";
  std::ofstream(bad) << "Global:\n  epochs: 1\n  output_dir: [a, b\n";
  expect_error([&] { train::load_yaml(bad); }, {"bad.yaml:", "not valid YAML"});
  std::ofstream(bad) << "Global:\n  epochs: 1\n  epochs: 2\n";
  expect_error([&] { train::load_yaml(bad); }, {"bad.yaml:3", "Global.epochs", "twice"});
  std::ofstream(bad) << "- just\n- a list\n";
  expect_error([&] { train::load_yaml(bad); }, {"bad.yaml", "mapping of sections"});
  expect_error([&] { train::load_recipe_file(std::string(DISTILL_TEST_SCRATCH) + "/missing.yaml"); }, {"missing.yaml", "cannot open"});
}

// ---------------------------------------------------------------- teacher cache

namespace {

/// The synthetic recipe with a frozen teacher in evaluation mode (as a cache records it), the
/// labels' CE and `loss` between student and teacher, no MGD.
json cache_recipe(const std::string& out, int64_t epochs, const json& loss) {
  auto recipe = distill_test::synthetic_recipe(dataset_dir(), out, epochs, /*mgd=*/false);
  recipe["Arch"]["freeze_params_list"] = {true, false};
  recipe["Arch"]["frozen_mode"] = "eval";
  recipe["Global"]["teacher_check"] = false;  // the teacher is untrained: these tests are about the cache
  recipe["Loss"]["Train"] = json::array({json{{"DistillationGTCELoss", {{"weight", 1.0}, {"model_names", {"Student"}}}}}, loss});
  return recipe;
}

json pair_loss(const std::string& name, json options = json::object()) {
  options["weight"] = 1.0;
  options["model_name_pairs"] = json::array({json::array({"Student", "Teacher"})});
  return json{{name, options}};
}

std::string make_cache(const json& recipe, const std::string& dir, int64_t views, int64_t topk, int64_t shard_images = 16) {
  std::ostringstream out;
  train::make_teacher_cache(recipe, train::CacheOptions().views(views).topk(topk).shard_images(shard_images).out(dir), out);
  return out.str();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("the loader's views: one of K per epoch, chosen by seed, epoch and index, each with its own seed", "[engine][data][cache]") {
  // Every view appears, the choice is reproducible, and the sample's augmentation follows the view's seed.
  std::set<int64_t> seen;
  for (int64_t epoch = 1; epoch <= 40; ++epoch) {
    const auto v = data::view_of(5, epoch, 17, 4);
    CHECK(v == data::view_of(5, epoch, 17, 4));
    CHECK((v >= 0 && v < 4));
    seen.insert(v);
  }
  CHECK(seen.size() == 4);
  CHECK(data::view_seed(5, 17, 0) != data::view_seed(5, 17, 1));
  CHECK(data::view_seed(5, 17, 0) != data::view_seed(5, 18, 0));
  auto dataset = data::make_dataset(distill_test::synthetic_recipe(dataset_dir(), scratch("views"), 1)["DataLoader"]["Train"]["dataset"],
                                    "dataset");
  std::vector<std::pair<size_t, int64_t>> asked;
  data::DataLoader loader(dataset, data::LoaderOptions().batch_size(8).shuffle(true).seed(5).views(3).num_workers(0).view_seeds(
                                       [&](size_t index, int64_t view) {
                                         asked.emplace_back(index, view);
                                         return data::view_seed(99, index, view);
                                       }));
  loader.start(2);
  auto batch = loader.next();
  REQUIRE(batch);
  REQUIRE(asked.size() == 8);
  for (int64_t r = 0; r < 8; ++r) {
    const auto index = static_cast<size_t>(batch->indices[r].item<int64_t>());
    CHECK(batch->views[r].item<int64_t>() == data::view_of(5, 2, index, 3));
    CHECK(asked[static_cast<size_t>(r)] == std::make_pair(index, batch->views[r].item<int64_t>()));
    data::Rng rng(data::view_seed(99, index, batch->views[r].item<int64_t>()));
    CHECK(torch::equal(batch->images[r], dataset->get(index, rng)->image));
  }
}

TEST_CASE("a teacher cache at k = C replays the online teacher exactly: KD, DKD, DIST, NKD and CTKD",
          "[engine][train][cache]") {
  for (const auto& loss : {pair_loss("DistillationKLDivLoss", {{"temperature", 4}}),
                           pair_loss("DistillationDKDLoss", {{"temperature", 4}, {"beta", 8}}),
                           pair_loss("DistillationDISTLoss"), pair_loss("DistillationNKDLoss", {{"gamma", 1.5}}),
                           pair_loss("DistillationCTKDLoss", {{"lambda_epochs", 2}})}) {
    const std::string name = loss.begin().key();
    INFO(name);
    const auto dir = scratch("cache_exact/" + name);
    std::filesystem::remove_all(dir);
    auto recipe = cache_recipe(dir + "/online", 2, loss);
    const auto log = make_cache(recipe, dir + "/cache", 3, 0);
    CHECK(log.find("top-4 of 4 classes") != std::string::npos);
    recipe["Global"]["replay_views"] = 3;
    std::ostringstream quiet;
    train::Trainer online(recipe, quiet);
    online.train();
    recipe["Global"].erase("replay_views");
    recipe["Global"]["teacher_cache"] = dir + "/cache";
    recipe["Global"]["output_dir"] = dir + "/cached";
    train::Trainer cached(recipe, quiet);
    CHECK(cached.model().model_names() == std::vector<std::string>{"Student"});  // the teacher is never built
    cached.train();
    auto a = distill::io::state_dict(*online.model().infer_model()), b = distill::io::state_dict(*cached.model().infer_model());
    REQUIRE(a.size() == b.size());
    for (const auto& item : a) {
      INFO(item.key());
      CHECK(torch::allclose(item.value(), b[item.key()], 1e-5, 1e-6));
    }
  }
}

TEST_CASE("training from a top-k cache (k < C) needs no teacher, and its KD term is the sparse one", "[engine][train][cache]") {
  const auto dir = scratch("cache_topk");
  std::filesystem::remove_all(dir);
  auto recipe = cache_recipe(dir + "/run", 1, pair_loss("DistillationKLDivLoss", {{"temperature", 4}}));
  make_cache(recipe, dir + "/cache", 2, 2);
  auto cache = train::TeacherCache::open(dir + "/cache");
  CHECK(cache->topk() == 2);
  CHECK(cache->views() == 2);
  CHECK(cache->teachers() == std::vector<std::string>{"Teacher"});
  // The stored logits are the teacher's on that view: its top 2, and the rest logit.
  torch::manual_seed(3);  // Global.seed, as make_teacher_cache seeded it
  auto full = distill::config::build_model(recipe["Arch"]);
  auto teacher = full->model("Teacher");
  teacher->eval();
  auto dataset = train::trainer_options(recipe).train_data();
  data::Rng rng(cache->seed(5, 1));
  auto image = dataset->get(5, rng)->image.unsqueeze(0);
  auto logits = teacher->forward(image)["logits"];
  auto stored = cache->lookup(torch::tensor({5}, torch::kLong), torch::tensor({1}, torch::kLong)).at("Teacher");
  REQUIRE(distill::is_topk_teacher(stored));
  auto [values, indices] = logits.topk(2);
  auto rest = logits.scatter(1, indices, -INFINITY).logsumexp(1) - std::log(2.0);
  auto expected = torch::zeros({1, 4}).scatter(1, indices, values - rest.unsqueeze(1));
  CHECK(torch::allclose(stored.to_dense(), expected, 1e-5, 1e-5));
  recipe["Global"]["teacher_cache"] = dir + "/cache";
  const auto log = quiet_run(recipe);
  CHECK(log.find("loss_kldiv_Student_Teacher") != std::string::npos);
  CHECK(log.find("teacher Teacher from the cache") != std::string::npos);
  // Global.pretrained_model may be a whole-model file with the teacher in it: its Teacher.* entries are left out.
  {
    torch::manual_seed(11);
    auto whole = distill::config::build_model(recipe["Arch"]);
    distill::io::save_state_dict(*whole, dir + "/whole.pt");
    auto from_whole = recipe;
    from_whole.erase("AMP");
    from_whole["Global"]["pretrained_model"] = dir + "/whole.pt";
    // The teacher's weights come from that file now: the cache made without it is stale, one made with it fits.
    expect_error([&] { train::Trainer t(from_whole, std::cout); }, {"stale teacher cache", "other weights"});
    make_cache(from_whole, dir + "/whole_cache", 2, 2);
    from_whole["Global"]["teacher_cache"] = dir + "/whole_cache";
    train::Trainer trainer(from_whole, std::cout);
    auto loaded = distill::io::state_dict(*trainer.model().infer_model());
    auto expected = distill::io::state_dict(*whole->model("Student"));
    REQUIRE(loaded.size() == expected.size());
    for (const auto& item : expected) CHECK(torch::equal(item.value(), loaded[item.key()]));
  }
  // Under bfloat16 autocast the stored logits (dense at k = C, top-k below) follow the student's dtype.
  make_cache(recipe, dir + "/all", 2, 0);
  recipe["AMP"] = json::parse(R"({"use_amp": true, "dtype": "bfloat16", "level": "O1"})");
  for (const char* cache_dir : {"/cache", "/all"}) {
    INFO(cache_dir);
    recipe["Global"]["teacher_cache"] = dir + cache_dir;
    recipe["Global"]["output_dir"] = dir + "/bf16";
    std::filesystem::remove_all(dir + "/bf16");
    quiet_run(recipe);
    auto records = read_jsonl(dir + "/bf16/metrics.jsonl");
    REQUIRE(!records.empty());
    CHECK(std::isfinite(records.front()["loss_kldiv_Student_Teacher"].get<double>()));
  }
}

TEST_CASE("a multi-teacher entry learns from a cache of both teachers", "[engine][train][cache]") {
  const auto dir = scratch("cache_multi");
  std::filesystem::remove_all(dir);
  auto recipe = cache_recipe(dir + "/run", 1,
                             {{"DistillationMultiTeacherLoss",
                               {{"weight", 1.0}, {"base_loss_name", "KLDivLoss"}, {"teachers", {"Teacher", "Teacher2"}}}}});
  recipe["Arch"]["models"].push_back({{"Teacher2", recipe["Arch"]["models"][0]["Teacher"]}});
  recipe["Arch"]["freeze_params_list"] = {true, false, true};
  make_cache(recipe, dir + "/cache", 2, 2);
  CHECK(train::TeacherCache::open(dir + "/cache")->teachers() == std::vector<std::string>{"Teacher", "Teacher2"});
  recipe["Global"]["teacher_cache"] = dir + "/cache";
  const auto log = quiet_run(recipe);
  CHECK(log.find("teachers Teacher, Teacher2 from the cache") != std::string::npos);  // neither built nor run
  CHECK(log.find("loss_kldiv_Student_ensemble") != std::string::npos);
}

TEST_CASE("an interrupted cache is finished by running it again, keeping its complete shards", "[engine][cache]") {
  const auto dir = scratch("cache_resume");
  std::filesystem::remove_all(dir);
  auto recipe = cache_recipe(dir + "/run", 1, pair_loss("DistillationKLDivLoss"));
  make_cache(recipe, dir + "/whole", 2, 3, /*shard_images=*/8);  // 40 images: 5 shards
  // What a run killed during shard 3 leaves: shards 0-2 (shard 1 lost), a partial write, no manifest.
  std::filesystem::create_directories(dir + "/cut");
  auto manifest = json::parse(read_file(dir + "/whole/manifest.json"));
  for (const char* shard : {"shard_00000.bin", "shard_00002.bin"})
    std::filesystem::copy_file(dir + "/whole/" + shard, dir + "/cut/" + shard);
  std::ofstream(dir + "/cut/shard_00003.bin.tmp") << "half a shard";
  manifest.erase("shards");
  std::ofstream(dir + "/cut/cache.partial.json") << manifest.dump();
  expect_error([&] { train::TeacherCache::open(dir + "/cut"); }, {"incomplete", "run the same distill cache command again"});
  const auto log = make_cache(recipe, dir + "/cut", 2, 3, 8);
  CHECK(log.find("(2 kept from an earlier run)") != std::string::npos);
  for (const auto& entry : std::filesystem::directory_iterator(dir + "/whole")) {
    INFO(entry.path().filename());
    CHECK(read_file(entry.path()) == read_file(dir + "/cut/" + entry.path().filename().string()));
  }
  CHECK(!std::filesystem::exists(dir + "/cut/cache.partial.json"));
  // Another configuration into the same directory is refused.
  expect_error([&] { make_cache(recipe, dir + "/cut", 3, 3, 8); }, {"made differently", "remove"});
}

TEST_CASE("a cache that does not fit is refused, naming the file and what differs", "[engine][cache][errors]") {
  const auto dir = scratch("cache_refusals");
  std::filesystem::remove_all(dir);
  auto recipe = cache_recipe(dir + "/run", 1, pair_loss("DistillationKLDivLoss"));
  // Teacher weights from a file, so that other weights can be told apart.
  std::filesystem::create_directories(dir);
  torch::manual_seed(1);
  auto weights = distill::config::build_model(recipe["Arch"]);
  distill::io::save_state_dict(*weights->model("Teacher"), dir + "/teacher.pt");
  recipe["Arch"]["models"][0]["Teacher"]["pretrained"] = dir + "/teacher.pt";
  make_cache(recipe, dir + "/cache", 2, 2);
  recipe["Global"]["teacher_cache"] = dir + "/cache";
  quiet_run(recipe);  // fits

  auto refused = [&](const json& changed, const char* what) {
    expect_error([&] { train::Trainer t(changed, std::cout); }, {"manifest.json", "stale teacher cache", what});
  };
  auto other = recipe;
  other["DataLoader"]["Train"]["dataset"]["transform_ops"].erase(2);  // no flip
  refused(other, "training transforms");
  other = recipe;
  other["Arch"]["models"][0]["Teacher"]["widths"] = {12, 20};
  refused(other, "teacher 'Teacher' has another architecture");
  other = recipe;
  torch::manual_seed(2);
  other["Arch"]["models"][0]["Teacher"].erase("pretrained");
  distill::io::save_state_dict(*distill::config::build_model(other["Arch"])->model("Teacher"), dir + "/teacher2.pt");
  other["Arch"]["models"][0]["Teacher"]["pretrained"] = dir + "/teacher2.pt";
  refused(other, "other weights");
  std::ofstream(dir + "/fewer.txt") << read_file(dataset_dir() + "/val_list.txt");
  other = recipe;
  other["DataLoader"]["Train"]["dataset"]["cls_label_path"] = dir + "/fewer.txt";
  refused(other, "the cache holds 40 images");
  {  // the same images with one label changed
    auto lines = read_file(dataset_dir() + "/train_list.txt");
    lines[lines.find(' ') + 1] = lines[lines.find(' ') + 1] == '0' ? '1' : '0';
    std::ofstream(dir + "/relabelled.txt") << lines;
  }
  other = recipe;
  other["DataLoader"]["Train"]["dataset"]["cls_label_path"] = dir + "/relabelled.txt";
  refused(other, "label list differs");

  // Methods that need the teacher's features.
  other = recipe;
  other["Loss"]["Train"].push_back({{"DistillationPairLoss",
                                     {{"weight", 0.5}, {"base_loss_name", "MGDLoss"},
                                      {"model_name_pairs", json::array({json::array({"Student", "Teacher"})})},
                                      {"s_keys", {"stages[1]"}}, {"t_keys", {"stages[1]"}}, {"student_channels", 16},
                                      {"teacher_channels", 24}}}});
  expect_error([&] { train::Trainer t(other, std::cout); }, {"Loss.Train[2].DistillationPairLoss", "features", "logits only"});
  other = recipe;
  other["Loss"]["Train"].push_back(pair_loss("DistillationDistanceLoss"));
  expect_error([&] { train::Trainer t(other, std::cout); },
               {"Loss.Train[2].DistillationDistanceLoss", "LossTraits::cached_teacher", "logits only"});
  // NKD learns from every logit: not from this top-2 cache of 4 classes; from a cache of every logit it does.
  other = recipe;
  other["Loss"]["Train"][1] = pair_loss("DistillationNKDLoss");
  expect_error([&] { train::Trainer t(other, std::cout); },
               {"Loss.Train[1].DistillationNKDLoss", "every logit of 'Teacher'", "top 2 of 4", "--topk 0"});
  other["Loss"]["Train"][1] = {{"DistillationPairLoss",
                                {{"weight", 1.0}, {"base_loss_name", "NKDLoss"},
                                 {"model_name_pairs", json::array({json::array({"Student", "Teacher"})})}}}};
  expect_error([&] { train::Trainer t(other, std::cout); }, {"Loss.Train[1].DistillationPairLoss", "top 2 of 4"});
  make_cache(recipe, dir + "/every_logit", 2, 0);
  other["Global"]["teacher_cache"] = dir + "/every_logit";
  other["Global"]["output_dir"] = dir + "/nkd";
  quiet_run(other);

  // Damaged caches: a corrupt shard, a missing one, no manifest.
  const auto shard = dir + "/cache/shard_00001.bin";
  const auto good = read_file(shard);
  auto bad = good;
  bad[100] = static_cast<char>(bad[100] ^ 1);
  std::ofstream(shard, std::ios::binary | std::ios::trunc) << bad;
  expect_error([&] { train::Trainer t(recipe, std::cout); }, {"shard_00001.bin", "checksum", "corrupt"});
  std::filesystem::remove(shard);
  expect_error([&] { train::Trainer t(recipe, std::cout); }, {"shard_00001.bin", "missing", "images 16-31"});
  std::ofstream(shard, std::ios::binary) << good;
  std::filesystem::remove(dir + "/cache/manifest.json");
  expect_error([&] { train::Trainer t(recipe, std::cout); }, {"manifest.json", "no teacher cache here"});
  // No frozen model to cache; a cache beside replay_views.
  other = recipe;
  other["Arch"]["freeze_params_list"] = {false, false};
  expect_error([&] { make_cache(other, dir + "/none", 2, 2); }, {"Arch.freeze_params_list", "no frozen model"});
  other = recipe;
  other["Global"]["replay_views"] = 2;
  expect_error([&] { train::trainer_options(other); }, {"Global.replay_views", "not both"});
}

TEST_CASE("training with the new methods: epochs ranges, CTKD's schedule, OFD's binding and CRD's indices reach the losses",
          "[engine][train][methods]") {
  const auto out = scratch("methods");
  std::filesystem::remove_all(out);
  auto recipe = distill_test::synthetic_recipe(dataset_dir(), out, 2);
  recipe["Arch"]["freeze_params_list"] = {true, false};
  for (int i : {0, 1}) {
    auto& model = recipe["Arch"]["models"][i];
    model[i == 0 ? "Teacher" : "Student"]["return_patterns"] = {"stages[1]", "stages[1]:pre_relu", "avg_pool"};
  }
  const json pair = json::array({json::array({"Student", "Teacher"})});
  recipe["Loss"]["Train"] = json::array(
      {json{{"DistillationGTCELoss", {{"weight", 1.0}, {"epochs", {2, 2}}}}},
       json{{"DistillationATLoss", {{"weight", 10.0}, {"key", "stages[1]"}, {"epochs", {1, 1}}}}},
       json{{"DistillationCTKDLoss", {{"weight", 1.0}, {"lambda_epochs", 3}}}},
       json{{"DistillationOFDLoss", {{"weight", 1e-3}, {"s_keys", {"stages[1]:pre_relu"}}, {"t_keys", {"stages[1]:pre_relu"}},
                                     {"student_channels", {16}}, {"teacher_channels", {24}}}}},
       json{{"DistillationCRDLoss", {{"weight", 0.5}, {"student_dim", 16}, {"teacher_dim", 24}, {"n_data", 40}, {"feat_dim", 8},
                                     {"nce_k", 16}}}}});
  std::ostringstream log;
  train::Trainer trainer(recipe, log);
  trainer.train();
  // Epoch 1 trains AT and not CE; epoch 2 the other way round.
  int seen = 0;
  for (const auto& record : read_jsonl(out + "/metrics.jsonl")) {
    if (record["type"] != "train") continue;
    const bool first = record["epoch"] == 1;
    CHECK(record.contains("loss_at_Student_Teacher_stages[1]") == first);
    CHECK(record.contains("CELoss_Student") == !first);
    CHECK(record.contains("loss_ofd"));
    CHECK(record.contains("loss_crd"));
    ++seen;
  }
  CHECK(seen >= 2);
  const distill::CTKDLossImpl* ctkd = nullptr;
  const distill::CRDLossImpl* crd = nullptr;
  for (const auto& m : trainer.loss().modules()) {
    if (auto* found = dynamic_cast<const distill::CTKDLossImpl*>(m.get())) ctkd = found;
    if (auto* found = dynamic_cast<const distill::CRDLossImpl*>(m.get())) crd = found;
  }
  REQUIRE(ctkd != nullptr);
  REQUIRE(crd != nullptr);
  CHECK(ctkd->lambda == Approx(distill::ctkd_lambda(distill::CTKDOptions().lambda_epochs(3), 2)));
  CHECK(ctkd->theta.item<double>() != 1.0);  // the temperature was trained
  CHECK(crd->z.min().item<double>() > 0);     // normalisers fixed at the first batch
  // The trained loss parts are in the checkpoint.
  auto saved = distill::io::read_state_dict(out + "/latest.pt");
  CHECK(saved.contains("loss.term2.base.global_t"));
  CHECK(saved.contains("loss.term4.crd.memory_s"));
}
