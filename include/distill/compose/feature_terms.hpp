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

/// Options of OFDTerm: the (student, teacher) models, their pre-ReLU taps
/// ("blocks[15]:pre_relu", paired one to one), and the term's name.
struct OFDTermOptions {
  TORCH_ARG(std::vector<std::string>, model_name_pair) = {"Student", "Teacher"};
  TORCH_ARG(std::vector<std::string>, student_keys);
  TORCH_ARG(std::vector<std::string>, teacher_keys);
  TORCH_ARG(std::string, name) = "loss_ofd";
};

/// OFDLoss over the student's and teacher's tapped pre-ReLU maps, with each teacher map's
/// margin computed (functional::ofd_margin) from the batch norm before that ReLU, read from the
/// teacher backbone when the term is bound. One term, "<name>".
///
///   distill::OFDTerm ofd(distill::OFDLoss(distill::OFDOptions({512}, {512})),
///                        distill::OFDTermOptions().student_keys({"blocks[7]:pre_relu"}).teacher_keys({"blocks[15]:pre_relu"}));
///   combined->add(ofd.ptr(), 1e-4);
///   combined->bind(*model);
class OFDTermImpl : public LossTerm {
 public:
  OFDTermImpl(OFDLoss loss, OFDTermOptions options) : options(std::move(options)) {
    ofd = register_module("ofd", std::move(loss));
    const auto& o = this->options;
    if (o.model_name_pair().size() != 2) fail("OFDTerm: model_name_pair takes two names");
    if (o.student_keys().size() != o.teacher_keys().size() || o.student_keys().size() != ofd->connectors->size())
      fail("OFDTerm: ", o.student_keys().size(), " student keys, ", o.teacher_keys().size(), " teacher keys and ",
           ofd->connectors->size(), " connectors; they pair up one to one");
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
    std::vector<torch::Tensor> students, teachers, margins;
    for (size_t i = 0; i < norms_.size(); ++i) {
      students.push_back(select(outputs, options.model_name_pair()[0], options.student_keys()[i]));
      teachers.push_back(select(outputs, options.model_name_pair()[1], options.teacher_keys()[i]));
      margins.push_back(functional::ofd_margin(norms_[i]->weight, norms_[i]->bias));
    }
    return LossTerms{{options.name(), guarded([&] { return ofd->forward(students, teachers, margins); })}};
  }

  OFDLoss ofd{nullptr};
  OFDTermOptions options;

 private:
  std::vector<std::shared_ptr<torch::nn::BatchNorm2dImpl>> norms_;
};
TORCH_MODULE(OFDTerm);

/// Options of ReviewKDTerm: the (student, teacher) models, their levels' output keys (shallow
/// to deep, paired one to one), and the term's name.
struct ReviewKDTermOptions {
  TORCH_ARG(std::vector<std::string>, model_name_pair) = {"Student", "Teacher"};
  TORCH_ARG(std::vector<std::string>, student_keys);
  TORCH_ARG(std::vector<std::string>, teacher_keys);
  TORCH_ARG(std::string, name) = "loss_reviewkd";
};

/// ReviewKDLoss over the listed levels of the student and the teacher. One term, "<name>".
///
///   distill::ReviewKDTerm review(distill::ReviewKDLoss(distill::ReviewKDOptions({64, 128}, {64, 128})),
///                                distill::ReviewKDTermOptions().student_keys({"blocks[1]", "blocks[3]"})
///                                                              .teacher_keys({"blocks[2]", "blocks[6]"}));
class ReviewKDTermImpl : public LossTerm {
 public:
  ReviewKDTermImpl(ReviewKDLoss loss, ReviewKDTermOptions options) : options(std::move(options)) {
    review = register_module("review", std::move(loss));
    const auto& o = this->options;
    if (o.model_name_pair().size() != 2) fail("ReviewKDTerm: model_name_pair takes two names");
    if (o.student_keys().size() != o.teacher_keys().size() || o.student_keys().size() != review->abfs->size())
      fail("ReviewKDTerm: ", o.student_keys().size(), " student keys, ", o.teacher_keys().size(), " teacher keys and ",
           review->abfs->size(), " levels; they pair up one to one");
  }

  LossTerms forward(const ModelOutputs& outputs, const torch::Tensor&) override {
    std::vector<torch::Tensor> students, teachers;
    for (const auto& key : options.student_keys()) students.push_back(select(outputs, options.model_name_pair()[0], key));
    for (const auto& key : options.teacher_keys()) teachers.push_back(select(outputs, options.model_name_pair()[1], key));
    return LossTerms{{options.name(), guarded([&] { return review->forward(students, teachers); })}};
  }
  void set_epoch(int64_t epoch) override { review->set_epoch(epoch); }

  ReviewKDLoss review{nullptr};
  ReviewKDTermOptions options;
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
  ReviewKDTermOptions options;
  std::vector<int64_t> student_channels, teacher_channels;
  s.field("model_name_pair", options.model_name_pair());
  s.required("s_keys", options.student_keys());
  s.required("t_keys", options.teacher_keys());
  s.required("student_channels", student_channels);
  s.required("teacher_channels", teacher_channels);
  ReviewKDOptions review(student_channels, teacher_channels);
  s.field("warmup_epochs", review.warmup_epochs());
  s.field("name", options.name());
  return std::make_shared<ReviewKDTermImpl>(ReviewKDLoss(review), options);
});
inline const bool ofd_term_registered = register_term("DistillationOFDLoss", [](Schema& s) -> std::shared_ptr<LossTerm> {
  OFDTermOptions options;
  std::vector<int64_t> student_channels, teacher_channels;
  s.field("model_name_pair", options.model_name_pair());
  s.required("s_keys", options.student_keys());
  s.required("t_keys", options.teacher_keys());
  s.required("student_channels", student_channels);
  s.required("teacher_channels", teacher_channels);
  s.field("name", options.name());
  for (const auto& key : options.teacher_keys())
    if (key.find(":pre_relu") == std::string::npos)
      fail_at(s.path_of("t_keys"), "'", key, "' is not a pre-ReLU tap; OFD compares the maps before the ReLU ",
              "(e.g. 'blocks[15]:pre_relu', also in the teacher's return_patterns)");
  return std::make_shared<OFDTermImpl>(OFDLoss(OFDOptions(student_channels, teacher_channels)), options);
});
}  // namespace detail

}  // namespace distill
