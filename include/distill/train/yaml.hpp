#pragma once
// PaddleClas's YAML configs, read into the JSON recipes the rest of distill takes. Compiled
// into distill::engine (src/yaml.cpp) when yaml-cpp is found (Debian's libyaml-cpp-dev).

#include <map>
#include <string>

#include "distill/core/reader.hpp"

namespace distill::train {

/// A YAML recipe as JSON, read as PaddleClas reads it (PyYAML's safe loader): anchors and
/// aliases (`&class_num 1000` ... `*class_num`) and merge keys (`<<: *base`) resolved; plain
/// scalars typed by YAML 1.1's rules as PyYAML applies them (True/False/yes/no/on/off,
/// null/Null/~ and an empty value, integers, floats) except that `1e-4` is a number (PyYAML
/// keeps it a string); quoted scalars stay strings, so is `1.0/255.0`. `lines`, when given,
/// receives the line of every value by its recipe path ("Loss.Train[1].DistillationDMLLoss"),
/// for error messages. A syntax error names the file and line.
///
///   std::map<std::string, int> lines;
///   auto recipe = distill::train::load_yaml("ResNet34_resnet18.yaml", &lines);
json load_yaml(const std::string& path, std::map<std::string, int>* lines = nullptr);

/// Whether this engine was built with yaml-cpp (load_yaml fails otherwise).
bool yaml_available();

/// A recipe file: YAML (.yaml, .yml) or JSON.
json load_recipe_file(const std::string& path, std::map<std::string, int>* lines = nullptr);

}  // namespace distill::train
