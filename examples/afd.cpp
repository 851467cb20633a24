// AFD (reference 5.3): ResNet18 learns from a frozen ResNet34 through attention over all
// their blocks. Each network is an AttentionModel: the backbone (16 or 8 taps) followed by a
// linear transform that makes queries / keys / values; the teacher's transform is trained
// although its backbone is frozen. Loss: GT-CE + 0.9 KD (T = 4) + 50 AFD. Multi-step lr 0.1,
// batch 64, bicubic resizing, from recipes/afd.json.
//
//   afd --data /data/ILSVRC2012 --teacher resnet34-b627a593.pth

#include "recipe_common.hpp"

namespace {

/// The [C, H, W] of ResNet blocks at `size` x `size` inputs: stage s has 64 << s channels at
/// size / (4 << s).
distill::FeatureShapes block_shapes(const std::vector<int64_t>& depths, int64_t size) {
  distill::FeatureShapes shapes;
  for (size_t s = 0; s < depths.size(); ++s)
    for (int64_t i = 0; i < depths[s]; ++i) {
      const int64_t side = std::max<int64_t>(1, size / (int64_t{4} << s));
      shapes.push_back({int64_t{64} << s, side, side});
    }
  return shapes;
}

std::vector<std::string> block_names(size_t count) {
  std::vector<std::string> names;
  for (size_t i = 0; i < count; ++i) names.push_back("blocks[" + std::to_string(i) + "]");
  return names;
}

}  // namespace

int main(int argc, char** argv) {
  return examples::guarded([&] {
    const auto args = examples::parse(argc, argv, "AFD: ResNet34 -> ResNet18 (attention-based feature distillation)");
    const auto t_shapes = block_shapes({3, 4, 6, 3}, args.image_size), s_shapes = block_shapes({2, 2, 2, 2}, args.image_size);
    const auto t_keys = block_names(t_shapes.size()), s_keys = block_names(s_shapes.size());
    const int64_t qk = 128;

    distill::AttentionModel teacher, student;
    teacher->add("ResNet34", examples::backbone("ResNet34", {{"layout", "torchvision"}, {"return_patterns", t_keys}}, args,
                                                examples::teacher_weights(args)),
                 /*frozen=*/true);
    teacher->add("LinearTransformTeacher", std::make_shared<distill::models::LinearTransformTeacherImpl>(qk, t_shapes, t_keys));
    student->add("ResNet18", examples::backbone("ResNet18", {{"return_patterns", s_keys}}, args));
    student->add("LinearTransformStudent",
                 std::make_shared<distill::models::LinearTransformStudentImpl>(qk, t_shapes, s_shapes, s_keys));
    auto model = std::make_shared<distill::DistillationModelImpl>("Student");
    model->add("Teacher", teacher.ptr());
    model->add("Student", student.ptr());

    auto loss = std::make_shared<distill::CombinedLossImpl>();
    loss->add(examples::ground_truth_ce({"Student"}), 1.0);
    loss->add(std::make_shared<distill::PairImpl<distill::KDLoss>>(
                  distill::KDLoss(distill::KDOptions().temperature(4)),
                  distill::PairOptions().name("loss_kldiv")),
              0.9);
    loss->add(std::make_shared<distill::AFDTermImpl>(distill::AFDLoss(distill::AFDOptions(s_shapes, t_shapes).qk_dim(qk))), 50.0);
    return examples::train(examples::recipe("afd", args), model, loss);
  });
}
