// DIST (reference 5.3): ResNet18 learns from a frozen ResNet34 with ground-truth CE plus twice
// the DIST loss (inter- and intra-class Pearson correlation of the predictions). Piecewise lr
// 0.1 / 0.01 / 0.001 / 0.0001 at epochs 30/60/90, batch 64, from recipes/dist.json.
//
//   dist --data /data/ILSVRC2012 --teacher resnet34-b627a593.pth

#include "recipe_common.hpp"

int main(int argc, char** argv) {
  return examples::guarded([&] {
    const auto args = examples::parse(argc, argv, "DIST: ResNet34 -> ResNet18 (correlation-based distillation)");
    auto model = std::make_shared<distill::DistillationModelImpl>("Student");
    model->add("Teacher", examples::backbone("ResNet34", {{"layout", "torchvision"}}, args, examples::teacher_weights(args)),
               /*frozen=*/true);
    model->add("Student", examples::backbone("ResNet18", {}, args));

    auto loss = std::make_shared<distill::CombinedLossImpl>();
    loss->add(examples::ground_truth_ce({"Student"}), 1.0);
    loss->add(std::make_shared<distill::PairImpl<distill::DISTLoss>>(
                  distill::DISTLoss(distill::DISTOptions().beta(1).gamma(1)),
                  distill::PairOptions().name("loss_dist")),
              2.0);
    return examples::train(examples::recipe("dist", args), model, loss);
  });
}
