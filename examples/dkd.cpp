// DKD (reference 5.3): ResNet18 learns from a frozen ResNet34 with ground-truth CE plus
// decoupled KD (TCKD + NCKD, T = 1, alpha = beta = 1). Data, optimiser (Momentum, multi-step
// 0.2 at epochs 30/60/90, weight decay 1e-4) and 100 epochs come from recipes/dkd.json.
//
//   dkd --data /data/ILSVRC2012 --teacher resnet34-b627a593.pth

#include "recipe_common.hpp"

int main(int argc, char** argv) {
  return examples::guarded([&] {
    const auto args = examples::parse(argc, argv, "DKD: ResNet34 -> ResNet18 (decoupled knowledge distillation)");
    auto model = std::make_shared<distill::DistillationModelImpl>("Student");
    model->add("Teacher", examples::backbone("ResNet34", {{"layout", "torchvision"}}, args, examples::teacher_weights(args)),
               /*frozen=*/true);
    model->add("Student", examples::backbone("ResNet18", {}, args));

    auto loss = std::make_shared<distill::CombinedLossImpl>();
    loss->add(examples::ground_truth_ce({"Student"}), 1.0);
    loss->add(std::make_shared<distill::PairImpl<distill::DKDLoss>>(
                  distill::DKDLoss(distill::DKDOptions().temperature(1).alpha(1).beta(1)),
                  distill::PairOptions().name("loss_dkd")),
              1.0);
    return examples::train(examples::recipe("dkd", args), model, loss);
  });
}
