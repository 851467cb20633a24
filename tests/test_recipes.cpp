// One source of truth for the recipe programs: each method built in C++ (examples/methods.hpp,
// what examples/<name>.cpp trains) has the same models, frozen parts, parameters, taps, loss
// terms and loss value on one batch as the same method built from examples/recipes/<name>.json.

#include <catch2/catch.hpp>

#include "distill/config.hpp"
#include "methods.hpp"
#include "recipes.hpp"

namespace config = distill::config;

namespace {

struct Parts {
  std::shared_ptr<distill::DistillationModelImpl> model;
  std::shared_ptr<distill::CombinedLossImpl> loss;
};

/// The loss terms of one batch, with every random draw (MGD's masks, dropout) from seed 7.
distill::LossTerms terms_of(Parts& b, const torch::Tensor& images, const torch::Tensor& labels) {
  torch::manual_seed(7);
  b.model->train();
  return b.loss->forward(b.model->forward(images), labels);
}

std::vector<std::pair<std::string, std::vector<int64_t>>> shapes(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (const auto& item : distill::io::state_dict(module)) out.emplace_back(item.key(), item.value().sizes().vec());
  return out;
}

}  // namespace

TEST_CASE("each recipe program builds what its JSON recipe states", "[recipes]") {
  for (const char* name : {"ssld", "dml", "udml", "afd", "dkd", "dist", "mgd"}) {
    INFO("recipe " << name);
    auto recipe = config::load_file(std::string(DISTILL_RECIPES) + "/" + name + ".json");
    distill_test::shrink_recipe(recipe, /*classes=*/10, /*size=*/64);
    Parts json_built{config::build_model(recipe["Arch"]), config::build_loss(recipe["Loss"]["Train"])};
    auto method = examples::method(name, examples::Settings{64, 10, ""});
    Parts cpp_built{method.model, method.loss};

    // Models: names, frozen parts, every parameter and buffer with its shape.
    REQUIRE(cpp_built.model->model_names() == json_built.model->model_names());
    for (size_t i = 0; i < json_built.model->members().size(); ++i)
      CHECK(cpp_built.model->members()[i].frozen == json_built.model->members()[i].frozen);
    CHECK(shapes(*cpp_built.model) == shapes(*json_built.model));
    CHECK(shapes(*cpp_built.loss) == shapes(*json_built.loss));
    std::vector<bool> trained_cpp, trained_json;
    for (const auto& p : cpp_built.model->parameters()) trained_cpp.push_back(p.requires_grad());
    for (const auto& p : json_built.model->parameters()) trained_json.push_back(p.requires_grad());
    CHECK(trained_cpp == trained_json);

    // Same weights, same batch: same taps, term names and values.
    distill::io::load_state_dict(*cpp_built.model, distill::io::state_dict(*json_built.model));
    distill::io::load_state_dict(*cpp_built.loss, distill::io::state_dict(*json_built.loss));
    torch::manual_seed(3);
    auto images = torch::randn({2, 3, 64, 64}), labels = torch::randint(0, 10, {2, 1});
    torch::manual_seed(7);
    json_built.model->train();
    auto json_outputs = json_built.model->forward(images);
    torch::manual_seed(7);
    cpp_built.model->train();
    auto cpp_outputs = cpp_built.model->forward(images);
    for (const auto& model : json_built.model->model_names())
      CHECK(cpp_outputs[model].keys() == json_outputs[model].keys());
    auto json_terms = terms_of(json_built, images, labels), cpp_terms = terms_of(cpp_built, images, labels);
    REQUIRE(cpp_terms.keys() == json_terms.keys());
    for (const auto& [term, value] : json_terms) {
      INFO("term " << term);
      CHECK(cpp_terms[term].item<double>() == Approx(value.item<double>()).epsilon(1e-6));
    }
  }
}
