#pragma once
// Loss terms over several taps of a student and a teacher at once, or that need more than the
// outputs: OFD (its margins come from the batch norms before the teacher's pre-ReLU taps, bound
// with CombinedLoss::bind), ReviewKD, and CRD (the batch's dataset indices, CombinedLoss::set_batch).

#include <memory>
#include <string>
#include <vector>

#include "distill/compose/backbone.hpp"
#include "distill/compose/loss_terms.hpp"
#include "distill/compose/models.hpp"
#include "distill/losses/crd.hpp"
#include "distill/losses/ofd.hpp"
#include "distill/losses/reviewkd.hpp"

namespace distill {

/// Options of a term over several tap pairs of one student and one teacher (OFD, ReviewKD): the
/// (student, teacher) models, their taps paired one to one, and the term's name.
struct TapPairsOptions {
  explicit TapPairsOptions(std::string name) : name_(std::move(name)) {}
  TORCH_ARG(std::vector<std::string>, model_name_pair) = {"Student", "Teacher"};
  TORCH_ARG(std::vector<std::string>, student_keys);
  TORCH_ARG(std::vector<std::string>, teacher_keys);
  TORCH_ARG(std::string, name);
};

/// Recipe keys of TapPairsOptions: model_name_pair, s_keys and t_keys (required), name.
inline void describe(Schema& s, TapPairsOptions& o) {
  s.field("model_name_pair", o.model_name_pair());
  s.required("s_keys", o.student_keys());
  s.required("t_keys", o.teacher_keys());
  s.field("name", o.name());
}

namespace detail {
/// Two model names, and as many student and teacher keys as the loss has pairs (`what`).
inline void check_tap_pairs(const char* term, const TapPairsOptions& o, size_t pairs, const char* what) {
  if (o.model_name_pair().size() != 2) fail(term, ": model_name_pair takes two names");
  if (o.student_keys().size() != pairs || o.teacher_keys().size() != pairs)
    fail(term, ": ", o.student_keys().size(), " student keys, ", o.teacher_keys().size(), " teacher keys and ", pairs, " ",
         what, "; they pair up one to one");
}
}  // namespace detail

/// OFDLoss over the student's and teacher's tapped pre-ReLU maps, with each teacher map's
/// margin computed (functional::ofd_margin) from the batch norm before that ReLU, read from the
/// teacher backbone when the term is bound. One term, "<name>".
///
///   distill::OFDTerm ofd(distill::OFDLoss(distill::OFDOptions({512}, {512})),
///                        distill::TapPairsOptions("loss_ofd").student_keys({"blocks[7]:pre_relu"})
///                                                            .teacher_keys({"blocks[15]:pre_relu"}));
///   combined->add(ofd.ptr(), 1e-4);
///   combined->bind(*model);
class OFDTermImpl : public LossTerm {
 public:
  OFDTermImpl(OFDLoss loss, TapPairsOptions options) : options(std::move(options)) {
    ofd = register_module("ofd", std::move(loss));
    detail::check_tap_pairs("OFDTerm", this->options, ofd->connectors->size(), "connectors");
  }

  void bind(const DistillationModelImpl& model) override {
    const auto& teacher = options.model_name_pair()[1];
    auto* backbone = dynamic_cast<const Backbone*>(model.model(teacher).get());
    if (!backbone)
      fail("OFD reads the margins from the teacher backbone's batch norms; '", teacher, "' is a ", model.model(teacher)->name(),
           ", not a backbone");
    norms_.clear();
    for (const auto& key : options.teacher_keys()) norms_.push_back(backbone->norm_before_relu(key));
  }

  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor&) override {
    if (norms_.size() != options.teacher_keys().size())
      fail_at(origin(), "OFD's margins come from the teacher's batch norms, and the term was not bound to the models ",
              "(CombinedLoss::bind; the trainer does it)");
    auto students = select_all(outputs, options.model_name_pair()[0], options.student_keys());
    auto teachers = select_all(outputs, options.model_name_pair()[1], options.teacher_keys());
    std::vector<torch::Tensor> margins;
    for (const auto& norm : norms_) margins.push_back(functional::ofd_margin(norm->weight, norm->bias));
    return LossTerms{{options.name(), guarded([&] { return ofd->forward(students, teachers, margins); })}};
  }

  OFDLoss ofd{nullptr};
  TapPairsOptions options;

 private:
  std::vector<std::shared_ptr<torch::nn::BatchNorm2dImpl>> norms_;
};
TORCH_MODULE(OFDTerm);

/// ReviewKDLoss over the listed levels of the student and the teacher. One term, "<name>".
///
///   distill::ReviewKDTerm review(distill::ReviewKDLoss(distill::ReviewKDOptions({64, 128}, {64, 128})),
///                                distill::TapPairsOptions("loss_reviewkd").student_keys({"blocks[1]", "blocks[3]"})
///                                                                         .teacher_keys({"blocks[2]", "blocks[6]"}));
class ReviewKDTermImpl : public LossTerm {
 public:
  ReviewKDTermImpl(ReviewKDLoss loss, TapPairsOptions options) : options(std::move(options)) {
    review = register_module("review", std::move(loss));
    detail::check_tap_pairs("ReviewKDTerm", this->options, review->abfs->size(), "levels");
  }

  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor&) override {
    auto students = select_all(outputs, options.model_name_pair()[0], options.student_keys());
    auto teachers = select_all(outputs, options.model_name_pair()[1], options.teacher_keys());
    return LossTerms{{options.name(), guarded([&] { return review->forward(students, teachers); })}};
  }
  void set_epoch(int64_t epoch) override { review->set_epoch(epoch); }

  ReviewKDLoss review{nullptr};
  TapPairsOptions options;
};
TORCH_MODULE(ReviewKDTerm);

/// Options of CRDTerm: the (student, teacher) models, their feature keys, the term's name.
struct CRDTermOptions {
  TORCH_ARG(std::vector<std::string>, model_name_pair) = {"Student", "Teacher"};
  TORCH_ARG(std::string, student_key) = "avg_pool";
  TORCH_ARG(std::string, teacher_key) = "avg_pool";
  TORCH_ARG(std::string, name) = "loss_crd";
};

/// CRDLoss over one feature of the student and the teacher, with the batch's dataset indices
/// given by set_batch (the trainer does it). One term, "<name>".
///
///   distill::CRDTerm crd(distill::CRDLoss(distill::CRDOptions(512, 512, dataset_size)), distill::CRDTermOptions());
///   combined->set_batch(batch.indices);
class CRDTermImpl : public LossTerm {
 public:
  CRDTermImpl(CRDLoss loss, CRDTermOptions options) : options(std::move(options)) {
    crd = register_module("crd", std::move(loss));
    if (this->options.model_name_pair().size() != 2) fail("CRDTerm: model_name_pair takes two names");
  }
  void set_batch(const torch::Tensor& indices) override { indices_ = indices; }

  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor&) override {
    if (!indices_.defined())
      fail_at(origin(), "CRD needs the dataset indices of the batch's samples (CombinedLoss::set_batch; the trainer does it)");
    const auto& s = select(outputs, options.model_name_pair()[0], options.student_key());
    const auto& t = select(outputs, options.model_name_pair()[1], options.teacher_key());
    return LossTerms{{options.name(), guarded([&] { return crd->forward(s, t, indices_); })}};
  }

  CRDLoss crd{nullptr};
  CRDTermOptions options;

 private:
  torch::Tensor indices_;
};
TORCH_MODULE(CRDTerm);

namespace detail {
inline const bool crd_term_registered = register_term("DistillationCRDLoss", [](Schema& s) -> std::shared_ptr<LossTerm> {
  CRDTermOptions options;
  int64_t student_dim = 0, teacher_dim = 0, n_data = 0;
  s.field("model_name_pair", options.model_name_pair());
  s.field("s_key", options.student_key());
  s.field("t_key", options.teacher_key());
  s.required("student_dim", student_dim);
  s.required("teacher_dim", teacher_dim);
  s.required("n_data", n_data);
  CRDOptions crd(student_dim, teacher_dim, n_data);
  s.field("feat_dim", crd.feat_dim());
  s.field("nce_k", crd.nce_k());
  s.field("nce_t", crd.nce_t());
  s.field("nce_m", crd.nce_m());
  s.field("name", options.name());
  return std::make_shared<CRDTermImpl>(CRDLoss(crd), options);
});
inline const bool review_term_registered = register_term("DistillationReviewKDLoss", [](Schema& s) -> std::shared_ptr<LossTerm> {
  TapPairsOptions options("loss_reviewkd");
  describe(s, options);
  std::vector<int64_t> student_channels, teacher_channels;
  s.required("student_channels", student_channels);
  s.required("teacher_channels", teacher_channels);
  ReviewKDOptions review(student_channels, teacher_channels);
  s.field("warmup_epochs", review.warmup_epochs());
  return std::make_shared<ReviewKDTermImpl>(ReviewKDLoss(review), options);
});
inline const bool ofd_term_registered = register_term("DistillationOFDLoss", [](Schema& s) -> std::shared_ptr<LossTerm> {
  TapPairsOptions options("loss_ofd");
  describe(s, options);
  std::vector<int64_t> student_channels, teacher_channels;
  s.required("student_channels", student_channels);
  s.required("teacher_channels", teacher_channels);
  for (const auto& key : options.teacher_keys())
    if (key.find(":pre_relu") == std::string::npos)
      fail_at(s.path_of("t_keys"), "'", key, "' is not a pre-ReLU tap; OFD compares the maps before the ReLU ",
              "(e.g. 'blocks[15]:pre_relu', also in the teacher's return_patterns)");
  return std::make_shared<OFDTermImpl>(OFDLoss(OFDOptions(student_channels, teacher_channels)), options);
});
}  // namespace detail

}  // namespace distill
