// One training step of a distillation, timed: the student's forward and backward, the frozen
// teacher's forward, CE + KD (T = 4), SGD with momentum; synthetic images made once. The
// same step in PyTorch is bench/train_step.py; bench/e2e.sh runs both, interleaved.
//
//   train_step --net resnet|convnet [--kd] [--batch 32] [--size 224] [--steps 10] [--warmup 2]
//              [--threads 1] [--channels-last] [--out-of-place] [--default-malloc] [--teacher-inference]
//
// Like every distill command, it first tells glibc to keep freed memory
// (distill::train::reuse_freed_memory); --default-malloc leaves glibc as it is.
//
// resnet: ResNet34 -> ResNet18 (torchvision layout), 1000 classes. convnet: the Fashion-MNIST
// demo's ConvNet 16/32/64 x2 -> 16/32/64 x1, 10 classes, 28 x 28. Prints one line:
//   step_s <median wall s per step> cpu_s <main-thread CPU s per step> ...
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "distill/compose.hpp"
#include "distill/losses.hpp"
#include "distill/models.hpp"
#include "distill/train/trainer.hpp"

namespace {

double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string net = "resnet";
  bool kd = false, channels_last = false, in_place = true, keep_memory = true, teacher_inference = false;
  int64_t batch = 32, size = 0, steps = 10, warmup = 2, threads = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--net") net = next();
    else if (a == "--kd") kd = true;
    else if (a == "--channels-last") channels_last = true;
    else if (a == "--out-of-place") in_place = false;
    else if (a == "--teacher-inference") teacher_inference = true;
    else if (a == "--default-malloc") keep_memory = false;
    else if (a == "--batch") batch = std::stoll(next());
    else if (a == "--size") size = std::stoll(next());
    else if (a == "--steps") steps = std::stoll(next());
    else if (a == "--warmup") warmup = std::stoll(next());
    else if (a == "--threads") threads = std::stoll(next());
    else {
      std::cerr << "train_step: unknown argument " << a << "\n";
      return 2;
    }
  }
  if (keep_memory) distill::train::reuse_freed_memory();
  torch::set_num_threads(static_cast<int>(threads));
  torch::manual_seed(0);
  namespace models = distill::models;
  std::shared_ptr<distill::Backbone> student, teacher;
  int64_t classes = 1000;
  if (net == "resnet") {
    student = models::ResNet(models::ResNetOptions(18).layout(models::ResNetLayout::torchvision)).ptr();
    if (kd) teacher = models::ResNet(models::ResNetOptions(34).layout(models::ResNetLayout::torchvision)).ptr();
    if (size == 0) size = 224;
  } else if (net == "convnet") {
    classes = 10;
    student = models::ConvNet(models::ConvNetOptions({16, 32, 64}).depth(1)).ptr();
    if (kd) teacher = models::ConvNet(models::ConvNetOptions({16, 32, 64}).depth(2)).ptr();
    if (size == 0) size = 28;
  } else {
    std::cerr << "train_step: --net resnet or convnet\n";
    return 2;
  }
  distill::DistillationModel model("Student");
  // --teacher-inference: the frozen teacher runs on its own under c10::InferenceMode (no
  // version counters, no view tracking) instead of as a member of the DistillationModel.
  if (teacher && !teacher_inference) model->add("Teacher", teacher, /*frozen=*/true);
  if (teacher && teacher_inference) {
    for (auto& p : teacher->parameters()) p.requires_grad_(false);
    teacher->eval();
  }
  model->add("Student", student);
  model->set_frozen_mode(distill::FrozenMode::eval);
  model->train();
  student->set_in_place(in_place);
  if (teacher) teacher->set_in_place(in_place);
  auto images = torch::randn({batch, 3, size, size});
  auto labels = torch::randint(0, classes, {batch});
  if (channels_last) {
    models::to_channels_last(*model);
    images = models::to_channels_last(images);
  }
  torch::optim::SGD sgd(model->trainable_parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(1e-4));
  distill::KDLoss kd_loss(distill::KDOptions().temperature(4));

  std::vector<double> wall, cpu;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = thread_cpu_seconds();
    sgd.zero_grad();
    auto out = model->forward(images);
    auto loss = torch::nn::functional::cross_entropy(out["Student"]["logits"], labels);
    torch::Tensor teacher_logits;
    if (teacher && teacher_inference) {
      c10::InferenceMode guard;
      teacher_logits = teacher->forward(images)["logits"];
    } else if (teacher) {
      teacher_logits = out["Teacher"]["logits"];
    }
    if (teacher) loss = loss + kd_loss(out["Student"]["logits"], teacher_logits);
    loss.backward();
    sgd.step();
    const double c1 = thread_cpu_seconds();
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    if (s >= warmup) wall.push_back(dt.count()), cpu.push_back(c1 - c0);
  }
  std::cout << "distill net " << net << (kd ? " kd" : " alone") << " batch " << batch << " size " << size << " threads "
            << threads << (channels_last ? " channels_last" : "") << (in_place ? "" : " out_of_place") << (teacher_inference ? " teacher_inference" : "") << (keep_memory ? "" : " default_malloc") << " step_s "
            << median(wall) << " cpu_s " << median(cpu) << " img_s " << static_cast<double>(batch) / median(wall) << "\n";
  return 0;
}
