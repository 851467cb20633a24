#pragma once
// Makes the shipped recipes (examples/recipes/*.json) runnable on tiny inputs without weight
// files: shared by the composition tests and the consumer program.

#include <string>

#include <nlohmann/json.hpp>

namespace distill_test {

/// Every "pretrained" path becomes false, every "class_num" becomes `classes`, CRD's memory
/// shrinks to 64 samples and 8 negatives, and the
/// [C, H, W] shapes (AFD's t_shapes and s_shapes lists, FitNet's student_shape and
/// teacher_shape) are scaled from 224x224 inputs to `size`.
inline void shrink_recipe(nlohmann::json& node, int64_t classes, int64_t size) {
  if (node.is_object()) {
    for (auto& [key, value] : node.items()) {
      if (key == "pretrained" && value.is_string()) value = false;
      else if (key == "class_num") value = classes;
      else if (key == "n_data") value = 64;
      else if (key == "nce_k") value = 8;
      else if ((key == "t_shapes" || key == "s_shapes") && value.is_array())
        for (auto& shape : value) {
          shape[1] = shape[1].get<int64_t>() * size / 224;
          shape[2] = shape[2].get<int64_t>() * size / 224;
        }
      else if ((key == "student_shape" || key == "teacher_shape") && value.is_array()) {
        value[1] = value[1].get<int64_t>() * size / 224;
        value[2] = value[2].get<int64_t>() * size / 224;
      } else shrink_recipe(value, classes, size);
    }
  } else if (node.is_array()) {
    for (auto& item : node) shrink_recipe(item, classes, size);
  }
}

}  // namespace distill_test
