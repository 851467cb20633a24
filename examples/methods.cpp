// The seven published recipes built in C++ (see methods.hpp).

#include "methods.hpp"

#include "distill/config.hpp"
#include "distill/distill.hpp"

namespace examples {

namespace pieces {
/// A backbone with the recipe's class count, the given recipe keys, and `weights` if set.
std::shared_ptr<distill::Backbone> backbone(const std::string& name, const Settings& s, nlohmann::json keys = {},
                                                   const std::string& weights = "") {
  if (keys.is_null()) keys = nlohmann::json::object();
  keys["class_num"] = s.classes;
  if (!weights.empty()) keys["pretrained"] = weights;
  return distill::config::create_backbone(name, keys);
}

/// The recipes' ResNet34 teacher: in torchvision's layout, so torchvision's weights load, or
/// in the reference's when the weights are PaddleClas's (a .pdparams).
std::shared_ptr<distill::Backbone> resnet34_teacher(const Settings& s, nlohmann::json keys = {}) {
  if (keys.is_null()) keys = nlohmann::json::object();
  keys["layout"] = !s.teacher.empty() && distill::io::is_pdparams(distill::io::weights_path(s.teacher)) ? "paddle" : "torchvision";
  return backbone("ResNet34", s, keys, s.teacher);
}

/// Ground-truth cross-entropy on the given models: the reference's DistillationGTCELoss.
distill::GroundTruth<distill::CELoss> ground_truth_ce(std::vector<std::string> models) {
  return distill::GroundTruth<distill::CELoss>(distill::CELoss(), distill::GroundTruthOptions(std::move(models)).name("CELoss"));
}

Method student_teacher(std::shared_ptr<distill::FeatureModel> teacher, bool frozen,
                              std::shared_ptr<distill::FeatureModel> student) {
  Method m{distill::DistillationModel("Student").ptr(), distill::CombinedLoss().ptr()};
  m.model->add("Teacher", std::move(teacher), frozen);
  m.model->add("Student", std::move(student));
  return m;
}

/// The block names "blocks[0]" .. "blocks[count - 1]".
std::vector<std::string> blocks(size_t count) {
  std::vector<std::string> names;
  for (size_t i = 0; i < count; ++i) names.push_back("blocks[" + std::to_string(i) + "]");
  return names;
}

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
}  // namespace pieces

/// SSLD (docs/reference.md §5.1): PPLCNet_x2_5 learns from a frozen ResNet50_vd with DML only, no labels.
Method ssld(const Settings& s) {
  auto m = pieces::student_teacher(pieces::backbone("ResNet50_vd", s, {}, s.teacher), /*frozen=*/true,
                                   pieces::backbone("PPLCNet_x2_5", s));
  m.loss->add(distill::Pair<distill::DMLLoss>(distill::DMLLoss(), distill::PairOptions().name("DMLLoss")));
  return m;
}

/// DML (docs/reference.md §5.1): two PPLCNet_x2_5 peers, each with ground truth, learning from each other.
Method dml(const Settings& s) {
  auto m = pieces::student_teacher(pieces::backbone("PPLCNet_x2_5", s), /*frozen=*/false, pieces::backbone("PPLCNet_x2_5", s));
  m.loss->add(pieces::ground_truth_ce({"Student", "Teacher"}));
  m.loss->add(distill::Pair<distill::DMLLoss>(distill::DMLLoss(), distill::PairOptions().name("DMLLoss")));
  return m;
}

/// UDML (docs/reference.md §5.1): DML plus an l2 distance between the peers' "blocks5" maps.
Method udml(const Settings& s) {
  const nlohmann::json taps = {{"return_patterns", {"blocks3", "blocks4", "blocks5", "blocks6"}}};
  auto m = pieces::student_teacher(pieces::backbone("PPLCNet_x2_5", s, taps), /*frozen=*/false,
                                   pieces::backbone("PPLCNet_x2_5", s, taps));
  m.loss->add(pieces::ground_truth_ce({"Student", "Teacher"}));
  m.loss->add(distill::Pair<distill::DMLLoss>(distill::DMLLoss(), distill::PairOptions().name("DMLLoss")));
  m.loss->add(distill::Pair<distill::DistanceLoss>(distill::DistanceLoss(distill::DistanceOptions().mode(distill::DistanceMode::l2)),
                                                   distill::PairOptions().key("blocks5").name("loss_l2")));
  return m;
}

/// AFD (docs/reference.md §5.3): ResNet18 learns from a frozen ResNet34 through attention over all their
/// blocks. Each network is an AttentionModel: the backbone (16 or 8 taps) followed by a linear
/// transform making queries / keys / values; the teacher's transform is trained although its
/// backbone is frozen. Loss: GT-CE + 0.9 KD (T = 4) + 50 AFD.
Method afd(const Settings& s) {
  const auto t_shapes = pieces::block_shapes({3, 4, 6, 3}, s.image_size), s_shapes = pieces::block_shapes({2, 2, 2, 2}, s.image_size);
  const auto t_keys = pieces::blocks(t_shapes.size()), s_keys = pieces::blocks(s_shapes.size());
  const int64_t qk = 128;
  distill::AttentionModel teacher, student;
  teacher->add("ResNet34", pieces::resnet34_teacher(s, {{"return_patterns", t_keys}}), /*frozen=*/true);
  teacher->add("LinearTransformTeacher", std::make_shared<distill::models::LinearTransformTeacherImpl>(qk, t_shapes, t_keys));
  student->add("ResNet18", pieces::backbone("ResNet18", s, {{"return_patterns", s_keys}}));
  student->add("LinearTransformStudent",
               std::make_shared<distill::models::LinearTransformStudentImpl>(qk, t_shapes, s_shapes, s_keys));
  auto m = pieces::student_teacher(teacher.ptr(), /*frozen=*/false, student.ptr());
  m.loss->add(pieces::ground_truth_ce({"Student"}));
  m.loss->add(distill::Pair<distill::KDLoss>(distill::KDLoss(distill::KDOptions().temperature(4)),
                                             distill::PairOptions().name("loss_kldiv")),
              0.9);
  m.loss->add(distill::AFDTerm(distill::AFDLoss(distill::AFDOptions(s_shapes, t_shapes).qk_dim(qk))), 50.0);
  return m;
}

/// DKD (docs/reference.md §5.3): ResNet18 from a frozen ResNet34, GT-CE plus decoupled KD (T = 1,
/// alpha = beta = 1).
Method dkd(const Settings& s) {
  auto m = pieces::student_teacher(pieces::resnet34_teacher(s), /*frozen=*/true, pieces::backbone("ResNet18", s));
  m.loss->add(pieces::ground_truth_ce({"Student"}));
  m.loss->add(distill::Pair<distill::DKDLoss>(distill::DKDLoss(distill::DKDOptions().temperature(1).alpha(1).beta(1)),
                                              distill::PairOptions().name("loss_dkd")));
  return m;
}

/// DIST (docs/reference.md §5.3): ResNet18 from a frozen ResNet34, GT-CE plus 2 x DIST (beta = gamma = 1).
Method dist(const Settings& s) {
  auto m = pieces::student_teacher(pieces::resnet34_teacher(s), /*frozen=*/true, pieces::backbone("ResNet18", s));
  m.loss->add(pieces::ground_truth_ce({"Student"}));
  m.loss->add(distill::Pair<distill::DISTLoss>(distill::DISTLoss(distill::DISTOptions().beta(1).gamma(1)),
                                               distill::PairOptions().name("loss_dist")),
              2.0);
  return m;
}

/// MGD (docs/reference.md §5.3): ResNet18 from a frozen ResNet34, GT-CE plus masked generation of the
/// teacher's last stage (blocks[15], 512 channels) from the student's (blocks[7]). Both tap
/// every stage, as the reference's recipe does.
Method mgd(const Settings& s) {
  auto m = pieces::student_teacher(
      pieces::resnet34_teacher(s, {{"return_patterns", {"blocks[2]", "blocks[6]", "blocks[12]", "blocks[15]"}}}),
      /*frozen=*/true, pieces::backbone("ResNet18", s, {{"return_patterns", {"blocks[1]", "blocks[3]", "blocks[5]", "blocks[7]"}}}));
  m.loss->add(pieces::ground_truth_ce({"Student"}));
  m.loss->add(distill::Pair<distill::MGDLoss>(
      distill::MGDLoss(distill::MGDOptions(512, 512).alpha_mgd(1.756).lambda_mgd(0.15)),
      distill::PairOptions().student_keys({"blocks[7]"}).teacher_keys({"blocks[15]"}).name("loss_mgd")));
  return m;
}

/// Every method by recipe name.
Method method(const std::string& name, const Settings& s) {
  if (name == "ssld") return ssld(s);
  if (name == "dml") return dml(s);
  if (name == "udml") return udml(s);
  if (name == "afd") return afd(s);
  if (name == "dkd") return dkd(s);
  if (name == "dist") return dist(s);
  if (name == "mgd") return mgd(s);
  distill::fail("examples::method: unknown recipe '", name, "'");
}

}  // namespace examples
