// MGD (reference 5.3): ResNet18 learns from a frozen ResNet34 with ground-truth CE plus masked
// generative distillation on the last stage: a generator (trained with the student) must
// rebuild the teacher's blocks[15] map from the randomly channel-masked student blocks[7].
//
//   mgd --data /data/ILSVRC2012 --teacher resnet34-b627a593.pth

#include "recipe_common.hpp"

int main(int argc, char** argv) {
  return examples::guarded([&] {
    const auto args = examples::parse(argc, argv, "MGD: ResNet34 -> ResNet18 (masked generative distillation)");
    auto model = std::make_shared<distill::DistillationModelImpl>("Student");
    model->add("Teacher",
               examples::backbone("ResNet34", {{"layout", "torchvision"}, {"return_patterns", {"blocks[15]"}}}, args,
                                  examples::teacher_weights(args)),
               /*frozen=*/true);
    model->add("Student", examples::backbone("ResNet18", {{"return_patterns", {"blocks[7]"}}}, args));

    auto loss = std::make_shared<distill::CombinedLossImpl>();
    loss->add(examples::ground_truth_ce({"Student"}), 1.0);
    loss->add(std::make_shared<distill::PairImpl<distill::MGDLoss>>(
                  distill::MGDLoss(distill::MGDOptions(512, 512).alpha_mgd(1.756).lambda_mgd(0.15)),
                  distill::PairOptions().student_keys({"blocks[7]"}).teacher_keys({"blocks[15]"}).name("loss_mgd")),
              1.0);
    return examples::train(examples::recipe("mgd", args), model, loss);
  });
}
