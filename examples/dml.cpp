// DML (reference 5.1): two PP-LCNet x2.5 trained together from scratch; each learns from the
// labels and from the other (symmetric KL, gradients into both). Cosine lr 0.4, L2 4e-5,
// float16 AMP, 100 epochs, from recipes/dml.json. No teacher weights: both networks learn.
//
//   dml --data /data/ILSVRC2012

#include "recipe_common.hpp"

int main(int argc, char** argv) {
  return examples::guarded([&] {
    const auto args = examples::parse(argc, argv, "DML: two PPLCNet_x2_5 learning from each other");
    auto model = std::make_shared<distill::DistillationModelImpl>("Student");
    model->add("Teacher", examples::backbone("PPLCNet_x2_5", {}, args));  // a peer, not frozen
    model->add("Student", examples::backbone("PPLCNet_x2_5", {}, args));

    auto loss = std::make_shared<distill::CombinedLossImpl>();
    loss->add(examples::ground_truth_ce({"Student", "Teacher"}), 1.0);
    loss->add(std::make_shared<distill::PairImpl<distill::DMLLoss>>(
                  distill::DMLLoss(), distill::PairOptions().name("DMLLoss")),
              1.0);
    return examples::train(examples::recipe("dml", args), model, loss);
  });
}
