#pragma once
// The seven published recipes as C++: each function builds one method's models, taps and loss
// terms with distill's types (examples/methods.cpp), as examples/recipes/<name>.json states
// them in its Arch and Loss.Train (tests/test_recipes.cpp checks that both give the same
// models, taps, term names and loss values). The recipe programs (examples/<name>.cpp) train
// what these return.

#include <memory>
#include <string>
#include <vector>

#include "distill/compose/fwd.hpp"

namespace examples {

/// What the methods depend on: input size, classes, and the teacher's weights (empty: an
/// untrained teacher, which only tests the pipeline).
struct Settings {
  int64_t image_size = 224;
  int64_t classes = 1000;
  std::string teacher;
};

/// A method: the composed model and the training loss.
struct Method {
  std::shared_ptr<distill::DistillationModelImpl> model;
  std::shared_ptr<distill::CombinedLossImpl> loss;
};

/// SSLD (docs/reference.md §5.1): PPLCNet_x2_5 learns from a frozen ResNet50_vd with DML only, no labels.
Method ssld(const Settings& s);
/// DML (§5.1): two PPLCNet_x2_5 peers, each with ground truth, learning from each other.
Method dml(const Settings& s);
/// UDML (§5.1): DML plus an l2 distance between the peers' "blocks5" maps.
Method udml(const Settings& s);
/// AFD (§5.3): ResNet18 from a frozen ResNet34 through attention over all their blocks; each
/// network is an AttentionModel of its backbone and a linear transform; GT-CE + 0.9 KD (T = 4)
/// + 50 AFD.
Method afd(const Settings& s);
/// DKD (§5.3): ResNet18 from a frozen ResNet34, GT-CE plus decoupled KD (T = 1, alpha = beta = 1).
Method dkd(const Settings& s);
/// DIST (§5.3): ResNet18 from a frozen ResNet34, GT-CE plus 2 x DIST (beta = gamma = 1).
Method dist(const Settings& s);
/// MGD (§5.3): ResNet18 from a frozen ResNet34, GT-CE plus masked generation of the teacher's
/// last stage from the student's.
Method mgd(const Settings& s);
/// Every method by recipe name.
Method method(const std::string& name, const Settings& s);

}  // namespace examples
