// UDML (reference 5.1): DML plus an L2 distance between the two networks' "blocks5" feature
// maps ([N, 640, 14, 14] at 224x224), tapped by name. Two PP-LCNet x2.5 from scratch; cosine lr
// 0.4, L2 4e-5, float16 AMP, 100 epochs, from recipes/udml.json.
//
//   udml --data /data/ILSVRC2012

#include "recipe_common.hpp"

int main(int argc, char** argv) {
  return examples::guarded([&] {
    const auto args = examples::parse(argc, argv, "UDML: DML plus feature distance between two PPLCNet_x2_5");
    const nlohmann::json taps = {{"return_patterns", {"blocks3", "blocks4", "blocks5", "blocks6"}}};
    auto model = std::make_shared<distill::DistillationModelImpl>("Student");
    model->add("Teacher", examples::backbone("PPLCNet_x2_5", taps, args));
    model->add("Student", examples::backbone("PPLCNet_x2_5", taps, args));

    auto loss = std::make_shared<distill::CombinedLossImpl>();
    loss->add(examples::ground_truth_ce({"Student", "Teacher"}), 1.0);
    loss->add(std::make_shared<distill::PairImpl<distill::DMLLoss>>(
                  distill::DMLLoss(), distill::PairOptions().name("DMLLoss")),
              1.0);
    loss->add(std::make_shared<distill::PairImpl<distill::DistanceLoss>>(
                  distill::DistanceLoss(distill::DistanceOptions().mode("l2")),
                  distill::PairOptions().key("blocks5").name("loss_l2")),
              1.0);
    return examples::train(examples::recipe("udml", args), model, loss);
  });
}
